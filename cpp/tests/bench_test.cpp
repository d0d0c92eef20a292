#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "omnibus/bench.hpp"

namespace omnibus::bench {
namespace {

TEST(LatencyHistogram, SmallValuesAreExact) {
  LatencyHistogram h;
  for (int v = 1; v <= 100; ++v) h.record(v);
  EXPECT_EQ(h.count(), 100u);
  EXPECT_EQ(h.min(), 1);
  EXPECT_EQ(h.max(), 100);
  EXPECT_EQ(h.percentile(50), 50);
  EXPECT_EQ(h.percentile(99), 99);
  EXPECT_EQ(h.percentile(100), 100);
  EXPECT_EQ(h.percentile(0), 1);
  EXPECT_DOUBLE_EQ(h.mean(), 50.5);
}

TEST(LatencyHistogram, LargeValuesWithinOnePartIn128) {
  LatencyHistogram h;
  for (std::int64_t v = 1000; v <= 1'000'000'000; v = v * 3 / 2) {
    h.reset();
    h.record(v);
    const auto got = h.percentile(50);
    EXPECT_GE(got, v);  // upper edge of the bucket, clamped to max
    EXPECT_LE(got, v);  // a single value: clamped to max == v
  }
  h.reset();
  for (int i = 1; i <= 1000; ++i) h.record(std::int64_t(i) * 1'000'000);  // 1..1000 ms
  const auto p99 = h.percentile(99);
  EXPECT_GE(p99, 990'000'000);
  EXPECT_LE(p99, 990'000'000 + 990'000'000 / 128);
  EXPECT_LE(h.percentile(50), h.percentile(90));
  EXPECT_LE(h.percentile(90), h.percentile(99.9));
  EXPECT_LE(h.percentile(99.9), h.max());
}

TEST(LatencyHistogram, NegativeCountsAsZeroAndMergeAdds) {
  LatencyHistogram a, b;
  a.record(-5);
  b.record(1'000'000, 3);
  a.merge(b);
  EXPECT_EQ(a.count(), 4u);
  EXPECT_EQ(a.min(), 0);
  EXPECT_EQ(a.max(), 1'000'000);
  EXPECT_THROW(a.percentile(101), std::invalid_argument);
}

TEST(DeliveryRecorder, CountsLossDuplicatesAndForeignPayloads) {
  DeliveryRecorder r(5);
  std::vector<std::string> p(4);
  stamp(p[0], 100, 0, 1000);
  stamp(p[1], 16, 3, 2000);
  stamp(p[2], 100, 3, 2000);  // duplicate of seq 3
  stamp(p[3], 100, 9, 0);     // not of this run
  std::vector<std::string_view> views(p.begin(), p.end());
  views.emplace_back("short");
  r.record(views, 5000);
  EXPECT_EQ(r.received(), 5u);
  EXPECT_EQ(r.unique(), 2u);
  EXPECT_EQ(r.duplicates(), 1u);
  EXPECT_EQ(r.foreign(), 2u);
  EXPECT_EQ(r.missing(), 3u);
  auto h = r.histogram();
  EXPECT_EQ(h.count(), 3u);
  EXPECT_EQ(h.min(), 3000);
  EXPECT_EQ(h.max(), 4000);
}

}  // namespace
}  // namespace omnibus::bench
