#pragma once
// The one wait-before-retry of the engine: exponential backoff with full
// jitter above a floor. Retry n (0-based) waits a uniformly drawn time in
// [min, min(max, min * 2^n)]: the ceiling doubles per failed attempt up to
// `max`, and the draw spreads clients that lost the same broker at the same
// moment, so they do not all come back in step (the thundering herd that plain
// doubling produces). The floor keeps a client from hammering a broker that
// refuses at once. Reset on success.

#include <chrono>
#include <cstdint>
#include <random>

namespace omnibus::detail {

// The wait before retry `attempt` (0-based), drawn from `rng`. `max` below
// `min` is treated as `min`. Thread-safe as far as `rng` is (use one per
// thread); does not block.
std::chrono::milliseconds backoff_delay(std::chrono::milliseconds min, std::chrono::milliseconds max,
                                        unsigned attempt, std::minstd_rand& rng);

// The upper bound of that draw: min(max, min * 2^attempt), without overflow.
std::chrono::milliseconds backoff_ceiling(std::chrono::milliseconds min, std::chrono::milliseconds max,
                                          unsigned attempt);

// A retry loop's state. Not thread-safe: one per loop. Does not block; the
// caller waits the returned time in whatever way lets it stop promptly.
class Backoff {
 public:
  // `seed` 0 draws one from std::random_device (tests pass a fixed seed).
  Backoff(std::chrono::milliseconds min, std::chrono::milliseconds max, std::uint32_t seed = 0);

  // The wait before the next attempt; each call raises the ceiling.
  std::chrono::milliseconds next();
  // After a success: the next failure waits from the floor again.
  void reset() { attempt_ = 0; }
  unsigned attempts() const { return attempt_; }

 private:
  std::chrono::milliseconds min_, max_;
  unsigned attempt_ = 0;
  std::minstd_rand rng_;
};

}  // namespace omnibus::detail
