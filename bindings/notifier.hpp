#pragma once
// omnibus._core.Notifier: wakes an asyncio event loop from engine threads
// without the GIL and without a thread per wait. Engine threads post a token
// and write an eventfd; the loop watches the fd (loop.add_reader) and drains
// the tokens.
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "common.hpp"

namespace omnibus::bind {

class Notifier {
 public:
  // Throws Internal when the kernel refuses an eventfd (fd limit reached).
  Notifier();
  ~Notifier();  // close()
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;
  // Queues `token` and makes the fd readable. Thread-safe, non-blocking,
  // never throws; a no-op after close().
  void post(std::uint64_t token) noexcept;
  // The tokens posted since the last drain, in order; clears the fd.
  std::vector<std::uint64_t> drain();
  // -1 after close().
  int fd() const;
  // Closes the fd; later posts are dropped. Idempotent, thread-safe.
  void close();

 private:
  mutable std::mutex mu_;
  int fd_ = -1;
  bool signalled_ = false;  // the fd was written since the last drain
  std::vector<std::uint64_t> tokens_;
};

}  // namespace omnibus::bind
