#include "core/backoff.hpp"

#include <algorithm>

namespace omnibus::detail {

std::chrono::milliseconds backoff_ceiling(std::chrono::milliseconds min, std::chrono::milliseconds max,
                                          unsigned attempt) {
  const auto lo = std::max<std::chrono::milliseconds::rep>(min.count(), 0);
  const auto hi = std::max(lo, max.count());
  auto ceiling = lo;
  // Doubling stops at the cap, so neither the shift nor the product overflows.
  for (unsigned i = 0; i < attempt && ceiling < hi; ++i) ceiling = ceiling == 0 ? 1 : ceiling * 2;
  return std::chrono::milliseconds(std::min(ceiling, hi));
}

std::chrono::milliseconds backoff_delay(std::chrono::milliseconds min, std::chrono::milliseconds max,
                                        unsigned attempt, std::minstd_rand& rng) {
  const auto lo = std::max<std::chrono::milliseconds::rep>(min.count(), 0);
  const auto hi = backoff_ceiling(min, max, attempt).count();
  std::uniform_int_distribution<std::chrono::milliseconds::rep> draw(lo, hi);
  return std::chrono::milliseconds(draw(rng));
}

Backoff::Backoff(std::chrono::milliseconds min, std::chrono::milliseconds max, std::uint32_t seed)
    : min_(min), max_(max), rng_(seed ? seed : std::random_device{}()) {}

std::chrono::milliseconds Backoff::next() {
  const auto wait = backoff_delay(min_, max_, attempt_, rng_);
  if (attempt_ < 64) ++attempt_;
  return wait;
}

}  // namespace omnibus::detail
