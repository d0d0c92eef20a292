// omnibus._core.Notifier (see notifier.hpp)
#include "notifier.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace omnibus::bind {

Notifier::Notifier() {
  fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd_ < 0)
    throw Error(ErrorCode::Internal, std::string("cannot create the eventfd that wakes the asyncio loop: ") +
                                         std::strerror(errno));
}

Notifier::~Notifier() { close(); }

void Notifier::post(std::uint64_t token) noexcept {
  std::lock_guard lock(mu_);
  if (fd_ < 0) return;
  tokens_.push_back(token);
  if (signalled_) return;  // one write per drain: the loop reads them all at once
  signalled_ = true;
  const std::uint64_t one = 1;
  // Cannot fail short of a counter overflow, impossible with one write per drain.
  [[maybe_unused]] auto n = ::write(fd_, &one, sizeof one);
}

std::vector<std::uint64_t> Notifier::drain() {
  std::lock_guard lock(mu_);
  if (fd_ >= 0 && signalled_) {
    std::uint64_t count;
    [[maybe_unused]] auto n = ::read(fd_, &count, sizeof count);
    signalled_ = false;
  }
  std::vector<std::uint64_t> out;
  out.swap(tokens_);
  return out;
}

int Notifier::fd() const {
  std::lock_guard lock(mu_);
  return fd_;
}

void Notifier::close() {
  std::lock_guard lock(mu_);
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  tokens_.clear();
}

void export_notifier(py::module_& m) {
  py::class_<Notifier, std::shared_ptr<Notifier>>(m, "Notifier",
                                                  "Wakes an asyncio loop from engine threads (omnibus.aio uses it): "
                                                  "watch fd with loop.add_reader, then drain() the posted tokens.")
      .def(py::init<>())
      .def_property_readonly("fd", &Notifier::fd, "The eventfd to watch; -1 after close().")
      .def("drain", &Notifier::drain, "The tokens posted since the last drain, in order; clears the fd.")
      .def("post", &Notifier::post, py::arg("token"), "Queue a token and make the fd readable (for tests).")
      .def("close", &Notifier::close, "Close the fd; later posts are dropped. Idempotent.");
}

}  // namespace omnibus::bind
