#include "omnibus/bench.hpp"

#include <time.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace omnibus::bench {

namespace {
constexpr std::size_t kSub = std::size_t(1) << 7;
// Values below kSub are exact (bucket = value); above, 63 - 7 + 1 powers of two.
constexpr std::size_t kBuckets = kSub + (63 - 7) * kSub;

void put_u64(char* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = char((v >> (8 * i)) & 0xff);
}
std::uint64_t get_u64(const char* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | std::uint8_t(p[i]);
  return v;
}
}  // namespace

std::int64_t monotonic_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

LatencyHistogram::LatencyHistogram() : buckets_(kBuckets, 0) {}

std::size_t LatencyHistogram::index_of(std::int64_t v) noexcept {
  if (v < std::int64_t(kSub)) return std::size_t(v);
  const int msb = 63 - __builtin_clzll(std::uint64_t(v));  // >= 7
  const int shift = msb - kSubBits;
  const std::size_t sub = std::size_t(std::uint64_t(v) >> shift) - kSub;  // 0..127
  return kSub + std::size_t(shift) * kSub + sub;
}

std::int64_t LatencyHistogram::upper_edge(std::size_t index) noexcept {
  if (index < kSub) return std::int64_t(index);
  const std::size_t shift = (index - kSub) / kSub;
  const std::size_t sub = (index - kSub) % kSub;
  const std::uint64_t low = std::uint64_t(kSub + sub) << shift;
  return std::int64_t(low + ((std::uint64_t(1) << shift) - 1));
}

void LatencyHistogram::record(std::int64_t ns, std::uint64_t count) noexcept {
  if (count == 0) return;
  if (ns < 0) ns = 0;
  buckets_[index_of(ns)] += count;
  if (count_ == 0 || ns < min_) min_ = ns;
  if (count_ == 0 || ns > max_) max_ = ns;
  count_ += count;
  sum_ += double(ns) * double(count);
}

void LatencyHistogram::merge(const LatencyHistogram& o) noexcept {
  if (o.count_ == 0) return;
  for (std::size_t i = 0; i < kBuckets; ++i) buckets_[i] += o.buckets_[i];
  min_ = count_ ? std::min(min_, o.min_) : o.min_;
  max_ = count_ ? std::max(max_, o.max_) : o.max_;
  count_ += o.count_;
  sum_ += o.sum_;
}

void LatencyHistogram::reset() noexcept {
  std::fill(buckets_.begin(), buckets_.end(), 0);
  count_ = 0;
  min_ = max_ = 0;
  sum_ = 0;
}

std::int64_t LatencyHistogram::percentile(double p) const {
  if (!(p >= 0 && p <= 100)) throw std::invalid_argument("percentile must be between 0 and 100");
  if (count_ == 0) return 0;
  // Rank of the wanted value, 1-based; p = 0 asks for the smallest.
  auto rank = std::uint64_t(p / 100.0 * double(count_) + 0.5);
  rank = std::clamp<std::uint64_t>(rank, 1, count_);
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < kBuckets; ++i) {
    seen += buckets_[i];
    if (seen >= rank) return std::clamp(upper_edge(i), min_, max_);
  }
  return max_;
}

void stamp(std::string& out, std::size_t size, std::uint64_t seq, std::int64_t send_ns) {
  out.assign(std::max(size, kHeaderBytes), 'x');
  put_u64(out.data(), seq);
  put_u64(out.data() + 8, std::uint64_t(send_ns));
}

DeliveryRecorder::DeliveryRecorder(std::uint64_t expected) : expected_(expected), seen_(expected, 0) {}

void DeliveryRecorder::record(const std::vector<std::string_view>& payloads, std::int64_t now_ns) {
  if (payloads.empty()) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (received_ == 0) first_ns_ = now_ns;
  last_ns_ = now_ns;
  for (auto p : payloads) {
    ++received_;
    if (p.size() < kHeaderBytes) {
      ++foreign_;
      continue;
    }
    const std::uint64_t seq = get_u64(p.data());
    if (seq >= expected_) {
      ++foreign_;
      continue;
    }
    if (!seen_[seq]) {
      seen_[seq] = 1;
      ++unique_;
    }
    hist_.record(now_ns - std::int64_t(get_u64(p.data() + 8)));
  }
}

std::uint64_t DeliveryRecorder::received() const { std::lock_guard<std::mutex> l(mu_); return received_; }
std::uint64_t DeliveryRecorder::unique() const { std::lock_guard<std::mutex> l(mu_); return unique_; }
std::uint64_t DeliveryRecorder::foreign() const { std::lock_guard<std::mutex> l(mu_); return foreign_; }
std::uint64_t DeliveryRecorder::duplicates() const {
  std::lock_guard<std::mutex> l(mu_);
  return received_ - unique_ - foreign_;
}
std::int64_t DeliveryRecorder::first_ns() const { std::lock_guard<std::mutex> l(mu_); return first_ns_; }
std::int64_t DeliveryRecorder::last_ns() const { std::lock_guard<std::mutex> l(mu_); return last_ns_; }
LatencyHistogram DeliveryRecorder::histogram() const { std::lock_guard<std::mutex> l(mu_); return hist_; }

}  // namespace omnibus::bench
