#pragma once
// Shared pieces of the pybind11 module: interruptible waits, timeouts, codecs.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "omnibus/codec.hpp"
#include "omnibus/error.hpp"
#include "omnibus/message.hpp"
#include "omnibus/url.hpp"

namespace py = pybind11;

namespace omnibus::bind {

using Clock = std::chrono::steady_clock;

// repr() of a Publisher or Subscriber: `url` is the engine's redacted text
// (password masked), the driver is its scheme, then the connection state.
inline std::string endpoint_repr(const char* kind, const std::string& url, const std::string& codec, bool closed,
                                 std::optional<bool> connected) {
  const auto sep = url.find("://");
  const std::string driver = sep == std::string::npos ? std::string("?") : url.substr(0, sep);
  const char* state = closed ? "closed" : !connected ? "connection state unknown" : *connected ? "connected" : "reconnecting";
  return std::string("<omnibus.") + kind + " " + driver + " " + py::repr(py::str(url)).cast<std::string>() +
         " codec=" + codec + " " + state + ">";
}

// Python timeouts are seconds (float) or None for "wait forever".
std::optional<Clock::duration> to_timeout(std::optional<double> seconds, const char* what);

// Runs `step(slice)` with the GIL released until it returns true or the
// deadline passes, waking every 100 ms to run Python signal handlers, so that
// Ctrl-C interrupts any wait. Returns false on timeout; throws
// py::error_already_set when a signal handler raised (KeyboardInterrupt).
// `step` must not touch Python objects.
template <class Step>
bool wait_interruptible(std::optional<Clock::duration> timeout, Step&& step) {
  constexpr auto kSlice = std::chrono::milliseconds(100);
  const auto deadline = timeout ? Clock::now() + *timeout : Clock::time_point::max();
  for (;;) {
    auto now = Clock::now();
    auto slice = deadline == Clock::time_point::max() ? Clock::duration(kSlice)
                                                      : std::min<Clock::duration>(kSlice, deadline - now);
    if (slice < Clock::duration::zero()) slice = Clock::duration::zero();
    bool done;
    {
      py::gil_scoped_release release;
      done = step(slice);
    }
    if (done) return true;
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    if (Clock::now() >= deadline) return false;
  }
}

// A Python object shared with engine threads: whichever thread drops the last
// reference releases it with the GIL held (or leaks it once the interpreter
// is gone, rather than crash at exit).
std::shared_ptr<py::object> share_with_threads(py::object obj);

// Python exception object for an omnibus::Error (the class matching its code,
// with .native_code and .retryable set).
py::object make_exception(const Error& e);

// A parsed URL as a dict: scheme, user, password (None without userinfo),
// hosts [(host, port)], path, query. Needs the GIL.
py::dict url_to_dict(const Url& u);
// Raises `e` as its Python class; never returns.
[[noreturn]] void raise(const Error& e);
[[noreturn]] void raise_object(py::object exc);
// The code of an omnibus exception instance (a subclass counts as its base:
// a BrokerError is Unavailable), nullopt for any other exception. Needs the GIL.
std::optional<ErrorCode> error_code_of(py::handle exc);

// A codec as the bindings use it: a built-in C++ codec (with fast paths for
// raw and text) or a Python object with encode(value) -> bytes and
// decode(bytes) -> value. Calls need the GIL.
class __attribute__((visibility("hidden"))) BoundCodec {
 public:
  static std::shared_ptr<BoundCodec> from_python(py::handle codec);
  ~BoundCodec();

  const std::string& name() const { return name_; }
  // Encodes message `index` of a batch; raises TypeError for a value the codec
  // cannot take at all, CodecError (naming the index) when encoding fails.
  std::string encode(py::handle value, std::size_t index) const;
  py::object decode(const Message& msg) const;

 private:
  enum class Kind { Raw, Text, Native, Python };
  Kind kind_ = Kind::Raw;
  std::string name_;
  std::shared_ptr<const Codec> native_;
  py::object py_;
};

// Bytes-like or str (UTF-8) to std::string, for keys and header values.
std::string to_bytes(py::handle v, const char* what);

// Python value tree <-> Value, for the json and msgpack codecs.
Value to_value(py::handle obj, bool allow_binary, int depth = 0);
py::object from_value(const Value& v);

}  // namespace omnibus::bind
