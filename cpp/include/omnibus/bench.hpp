#pragma once
// Measuring pieces for the protocol comparison (omnibus.bench): a log-linear
// latency histogram and a recorder of benchmark deliveries. They live in C++
// so that the per-message work of a measurement (stamping, parsing, binning,
// loss and duplicate bookkeeping) costs nanoseconds and crosses the Python
// boundary once per batch, not once per message.
//
// A benchmark payload starts with a 16-byte little-endian header: the
// message's sequence number (u64) and its intended send time (i64,
// nanoseconds of CLOCK_MONOTONIC, the clock of Python's time.monotonic_ns()).
// Latency is measured from the intended send time, not from the moment the
// publisher got round to it, so a publisher that falls behind its schedule
// shows up as latency (no coordinated omission).

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace omnibus::bench {

constexpr std::size_t kHeaderBytes = 16;

// CLOCK_MONOTONIC in nanoseconds. Thread-safe, does not block.
std::int64_t monotonic_ns() noexcept;

// Values in [0, 2^63) nanoseconds, binned log-linearly: each power of two is
// split into 128 linear sub-buckets, so a reported percentile is within 1/128
// (0.8 %) of the true value; values below 128 ns are exact. Not thread-safe:
// guard it, or give each thread its own and merge().
class LatencyHistogram {
 public:
  LatencyHistogram();
  void record(std::int64_t ns, std::uint64_t count = 1) noexcept;  // negative values count as 0
  void merge(const LatencyHistogram& other) noexcept;
  void reset() noexcept;
  std::uint64_t count() const noexcept { return count_; }
  std::int64_t min() const noexcept { return count_ ? min_ : 0; }
  std::int64_t max() const noexcept { return count_ ? max_ : 0; }
  double mean() const noexcept { return count_ ? sum_ / double(count_) : 0.0; }
  // The smallest recorded value v such that at least `p` percent of the values
  // are <= v, reported as its bucket's upper edge (clamped to max()); 0 when
  // empty. Throws std::invalid_argument unless 0 <= p <= 100.
  std::int64_t percentile(double p) const;

 private:
  static constexpr int kSubBits = 7;  // 128 sub-buckets per power of two
  static std::size_t index_of(std::int64_t v) noexcept;
  static std::int64_t upper_edge(std::size_t index) noexcept;
  std::vector<std::uint64_t> buckets_;
  std::uint64_t count_ = 0;
  std::int64_t min_ = 0, max_ = 0;
  double sum_ = 0;
};

// Fills `out` with a payload of `size` bytes (at least kHeaderBytes) carrying
// `seq` and `send_ns` in its header; the rest is a fixed filler. Thread-safe.
void stamp(std::string& out, std::size_t size, std::uint64_t seq, std::int64_t send_ns);

// The receiving side of one measurement: for each payload, its latency (now
// minus intended send time) into a histogram, and its sequence number into a
// seen-set, so that loss and duplicates are counted, never assumed.
// Thread-safe (one mutex; record() is called once per batch).
class DeliveryRecorder {
 public:
  explicit DeliveryRecorder(std::uint64_t expected);
  // Records payloads received at `now_ns`. A payload shorter than the header
  // or with a sequence number >= expected counts as `foreign` (not ours).
  void record(const std::vector<std::string_view>& payloads, std::int64_t now_ns);

  std::uint64_t expected() const { return expected_; }
  std::uint64_t received() const;    // every payload recorded, duplicates included
  std::uint64_t unique() const;      // distinct sequence numbers seen
  std::uint64_t duplicates() const;  // received - unique - foreign
  std::uint64_t foreign() const;
  std::uint64_t missing() const { return expected_ - unique(); }
  std::int64_t first_ns() const;     // receive time of the first / last record() with payloads
  std::int64_t last_ns() const;
  LatencyHistogram histogram() const;  // a copy

 private:
  mutable std::mutex mu_;
  std::uint64_t expected_;
  std::vector<std::uint8_t> seen_;
  std::uint64_t received_ = 0, unique_ = 0, foreign_ = 0;
  std::int64_t first_ns_ = 0, last_ns_ = 0;
  LatencyHistogram hist_;
};

}  // namespace omnibus::bench
