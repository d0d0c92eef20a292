#include "core/backoff.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

namespace omnibus::detail {
namespace {

using std::chrono::milliseconds;

TEST(Backoff, CeilingDoublesFromTheFloorUpToTheCap) {
  std::vector<long long> got;
  for (unsigned n = 0; n < 8; ++n) got.push_back(backoff_ceiling(milliseconds(100), milliseconds(5000), n).count());
  EXPECT_EQ(got, (std::vector<long long>{100, 200, 400, 800, 1600, 3200, 5000, 5000}));
  // Far past the cap: no overflow, still the cap.
  EXPECT_EQ(backoff_ceiling(milliseconds(100), milliseconds(5000), 1000).count(), 5000);
  // A cap below the floor is the floor; a zero floor still grows.
  EXPECT_EQ(backoff_ceiling(milliseconds(300), milliseconds(10), 5).count(), 300);
  EXPECT_EQ(backoff_ceiling(milliseconds(0), milliseconds(8), 4).count(), 8);
}

// Full jitter: every draw lies in [floor, ceiling], and the draws cover that
// range evenly (each quarter gets 25% +- 2% of 40,000 draws), which is what
// spreads reconnecting clients apart.
TEST(Backoff, DrawsAreUniformBetweenFloorAndCeiling) {
  std::minstd_rand rng(42);
  const unsigned attempt = 4;  // ceiling 1600 ms
  std::vector<int> quarters(4, 0);
  const int draws = 40000;
  for (int i = 0; i < draws; ++i) {
    const auto d = backoff_delay(milliseconds(100), milliseconds(5000), attempt, rng).count();
    ASSERT_GE(d, 100);
    ASSERT_LE(d, 1600);
    ++quarters[std::min<long long>(3, (d - 100) * 4 / 1501)];
  }
  for (int q : quarters) {
    EXPECT_GT(q, draws * 23 / 100);
    EXPECT_LT(q, draws * 27 / 100);
  }
}

TEST(Backoff, GrowsPerFailureAndResetsOnSuccess) {
  Backoff b(milliseconds(10), milliseconds(1000), 7);
  std::chrono::milliseconds::rep highest = 0;
  for (int i = 0; i < 12; ++i) {
    const auto ceiling = backoff_ceiling(milliseconds(10), milliseconds(1000), b.attempts()).count();
    const auto d = b.next().count();
    EXPECT_GE(d, 10);
    EXPECT_LE(d, ceiling);
    highest = std::max(highest, d);
  }
  EXPECT_EQ(b.attempts(), 12u);
  EXPECT_GT(highest, 500);  // late draws reach near the cap (p of failing ~ 0.5^5)
  b.reset();
  EXPECT_EQ(b.attempts(), 0u);
  EXPECT_EQ(b.next().count(), 10);  // ceiling == floor on the first retry
}

TEST(Backoff, SameSeedSameWaitsDifferentSeedsDiffer) {
  Backoff a(milliseconds(100), milliseconds(30000), 1), b(milliseconds(100), milliseconds(30000), 1),
      c(milliseconds(100), milliseconds(30000), 2);
  std::vector<long long> wa, wb, wc;
  for (int i = 0; i < 10; ++i) {
    wa.push_back(a.next().count());
    wb.push_back(b.next().count());
    wc.push_back(c.next().count());
  }
  EXPECT_EQ(wa, wb);
  EXPECT_NE(wa, wc);
}

}  // namespace
}  // namespace omnibus::detail
