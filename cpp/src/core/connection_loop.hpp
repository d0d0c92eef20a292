#pragma once
// The reconnect life cycle of a driver that runs its own I/O on one thread:
// connect and set up (declare, consume), serve turn after turn until the
// connection is lost, back off (core/backoff.hpp, jittered), again, until
// stopped. The driver supplies the steps and its rule for what was in flight
// (resend or fail, in `lost`); the loop owns their order, the backoff and the
// up/down state that `connected()` reports. Drivers whose native library
// reconnects by itself (cnats, librdkafka) do not use it.

#include <atomic>
#include <chrono>
#include <functional>

#include "core/backoff.hpp"
#include "omnibus/error.hpp"

namespace omnibus::detail {

class ConnectionLoop {
 public:
  struct Steps {
    // Whether to stop; checked before every step. Required.
    std::function<bool()> stopping;
    // Connect and set up. Throws Error when it cannot: the loop calls
    // `failed`, backs off and tries again. Required.
    std::function<void()> connect;
    // One bounded turn of I/O (at most ~100 ms, so a stop is seen promptly).
    // Throws Error when the connection is lost. Required.
    std::function<void()> serve;
    // An attempt to connect failed with `e` (drop what it half set up).
    std::function<void(const Error& e)> failed;
    // The connection was lost with `e`: drop it and settle what was in
    // flight by the driver's rule. Required.
    std::function<void(const Error& e)> lost;
    // Before each attempt to connect (e.g. fail what waited too long).
    std::function<void()> before_attempt;
    // Waits up to the given time or until woken; `stopping` must be true
    // after the wake-up of a stop. Required.
    std::function<void(std::chrono::milliseconds)> wait;
  };

  // `connected`: the driver connected before starting the loop (open()
  // connects once on the caller's thread so that its errors reach the caller).
  ConnectionLoop(std::chrono::milliseconds min, std::chrono::milliseconds max, bool connected);

  // Runs the steps on the calling thread until `stopping()`; returns with the
  // connection as it is (the driver's shutdown closes it). Errors thrown by
  // the steps other than omnibus::Error propagate.
  void run(const Steps& steps);

  // Whether the loop is connected now. Thread-safe, non-blocking.
  bool up() const { return up_.load(std::memory_order_relaxed); }

 private:
  Backoff backoff_;
  std::atomic<bool> up_;
};

}  // namespace omnibus::detail
