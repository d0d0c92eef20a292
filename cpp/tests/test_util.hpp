#pragma once
// Shared helpers for the unit tests: polling instead of sleeping, message
// builders, and fakes for the driver boundary (Sender, Receiver, Driver) so
// that the portable layer can be tested without a broker.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "omnibus/driver.hpp"
#include "omnibus/error.hpp"
#include "omnibus/message.hpp"
#include "omnibus/publisher.hpp"
#include "omnibus/subscriber.hpp"

namespace omnibus::test {

using namespace std::chrono_literals;

// How long a test waits for something that should happen. Generous on
// purpose: tests never pass or fail on timing, only on what they observe.
inline constexpr std::chrono::seconds kPatience{10};

// Polls `pred` until it holds or `deadline` passes; returns its last value.
template <class Pred>
bool wait_until(Clock::time_point deadline, Pred&& pred) {
  for (;;) {
    if (pred()) return true;
    if (Clock::now() >= deadline) return pred();
    std::this_thread::sleep_for(1ms);
  }
}

template <class Pred>
bool eventually(Pred&& pred) {
  return wait_until(Clock::now() + kPatience, std::forward<Pred>(pred));
}

// ------------------------------------------------------------ assertions

inline ::testing::AssertionResult has_substr(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << part << "' not found in: " << text;
}

inline ::testing::AssertionResult lacks_substr(const std::string& text, const std::string& part) {
  if (text.find(part) == std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << part << "' unexpectedly found in: " << text;
}

// The omnibus::Error `fn` throws, or nullopt when it throws none.
template <class Fn>
std::optional<Error> error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e;
  }
  return std::nullopt;
}

// ------------------------------------------------------------ messages

inline OutMessage out(std::string payload, std::optional<std::string> key = std::nullopt, Headers headers = {}) {
  OutMessage m;
  m.payload = make_bytes(std::move(payload));
  m.key = std::move(key);
  m.headers = std::move(headers);
  return m;
}

inline std::vector<OutMessage> outs(std::initializer_list<std::string> payloads) {
  std::vector<OutMessage> v;
  for (const auto& p : payloads) v.push_back(out(p));
  return v;
}

// "prefix0", "prefix1", ...
inline std::vector<OutMessage> numbered(const std::string& prefix, std::size_t n) {
  std::vector<OutMessage> v;
  for (std::size_t i = 0; i < n; ++i) v.push_back(out(prefix + std::to_string(i)));
  return v;
}

inline std::vector<std::string> payloads_of(const std::vector<MessagePtr>& msgs) {
  std::vector<std::string> v;
  for (const auto& m : msgs) v.push_back(m->payload());
  return v;
}

// A mem:// URL whose topic belongs to the running test only: the broker is
// process-wide and outlives each test when the binary runs all of them.
inline std::string unique_topic_url(const std::string& suffix = "") {
  static std::atomic<int> counter{0};
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "no-test";
  return "mem://" + name + "/" + std::to_string(counter++) + suffix;
}

// Receives from `sub` until `n` messages arrived or patience ran out.
inline std::vector<MessagePtr> receive_n(Subscriber& sub, std::size_t n) {
  std::vector<MessagePtr> got;
  wait_until(Clock::now() + kPatience, [&] {
    auto batch = sub.receive_batch(n - got.size(), 20ms);
    got.insert(got.end(), batch.begin(), batch.end());
    return got.size() >= n;
  });
  return got;
}

// Receives from `sub` until a message with payload `last` arrived (included).
inline std::vector<MessagePtr> receive_through(Subscriber& sub, const std::string& last) {
  std::vector<MessagePtr> got;
  wait_until(Clock::now() + kPatience, [&] {
    for (auto& m : sub.receive_batch(100, 20ms)) {
      got.push_back(m);
      if (m->payload() == last) return true;
    }
    return false;
  });
  return got;
}

// Receives from several subscribers until `n` messages arrived in total;
// result[i] holds what subs[i] got, in its order.
inline std::vector<std::vector<MessagePtr>> receive_n_from(const std::vector<Subscriber*>& subs, std::size_t n) {
  std::vector<std::vector<MessagePtr>> got(subs.size());
  std::size_t total = 0;
  wait_until(Clock::now() + kPatience, [&] {
    for (std::size_t i = 0; i < subs.size(); ++i) {
      auto batch = subs[i]->receive_batch(1000, 5ms);
      total += batch.size();
      got[i].insert(got[i].end(), batch.begin(), batch.end());
    }
    return total >= n;
  });
  return got;
}

// ------------------------------------------------------------ FakeSender

// Records every batch; can fail chosen messages, throw from send_batch, hold
// results back (messages stay in flight until release_all()) or block inside
// send_batch until unblock().
class FakeSender : public Sender {
 public:
  void fail_payload(const std::string& payload, ErrorCode code, const std::string& message = "injected failure") {
    std::lock_guard lock(mu_);
    failures_.insert_or_assign(payload, Error(code, message + " of " + payload));
  }
  // Messages fail as configured by fail_payload() no more.
  void clear_failures() {
    std::lock_guard lock(mu_);
    failures_.clear();
  }
  void throw_on_send(std::optional<Error> e) {
    std::lock_guard lock(mu_);
    throw_ = std::move(e);
  }
  void throw_non_omnibus_on_send(bool on) {
    std::lock_guard lock(mu_);
    throw_std_ = on;
  }
  // After the real results, reports index 0 again and an index past the
  // batch, as a buggy driver might.
  void misreport(bool on) {
    std::lock_guard lock(mu_);
    misreport_ = on;
  }
  void hold_results() {
    std::lock_guard lock(mu_);
    hold_ = true;
  }
  // Stops holding and reports every held result (failures as configured).
  void release_all() {
    std::vector<Held> held;
    {
      std::lock_guard lock(mu_);
      hold_ = false;
      held.swap(held_);
    }
    for (auto& h : held) report(h.fn, h.results);
  }
  void block_sends() {
    std::lock_guard lock(mu_);
    block_ = true;
  }
  void unblock() {
    std::lock_guard lock(mu_);
    block_ = false;
    cv_.notify_all();
  }
  bool blocked_in_send() const {
    std::lock_guard lock(mu_);
    return blocked_in_send_;
  }

  std::vector<std::vector<std::string>> batches() const {
    std::lock_guard lock(mu_);
    return batches_;
  }
  std::vector<std::size_t> batch_sizes() const {
    std::lock_guard lock(mu_);
    std::vector<std::size_t> v;
    for (const auto& b : batches_) v.push_back(b.size());
    return v;
  }
  std::size_t batch_count() const {
    std::lock_guard lock(mu_);
    return batches_.size();
  }
  std::size_t held_batches() const {
    std::lock_guard lock(mu_);
    return held_.size();
  }
  int close_calls() const {
    std::lock_guard lock(mu_);
    return close_calls_;
  }
  std::vector<std::int64_t> timestamps() const {
    std::lock_guard lock(mu_);
    return timestamps_;
  }

  void send_batch(const std::vector<OutMessage>& batch, const SendResultFn& on_result) override {
    std::vector<std::optional<Error>> results;
    bool duplicate_reports;
    {
      std::unique_lock lock(mu_);
      duplicate_reports = misreport_;
      EXPECT_FALSE(closed_) << "send_batch after close";
      std::vector<std::string> payloads;
      for (const auto& m : batch) {
        payloads.push_back(*m.payload);
        timestamps_.push_back(m.timestamp_ms);
        auto it = failures_.find(*m.payload);
        results.push_back(it == failures_.end() ? std::nullopt : std::optional<Error>(it->second));
      }
      batches_.push_back(std::move(payloads));
      if (block_) {
        blocked_in_send_ = true;
        cv_.wait(lock, [&] { return !block_; });
        blocked_in_send_ = false;
      }
      if (throw_) throw *throw_;
      if (throw_std_) throw std::runtime_error("socket exploded");
      if (hold_) {
        // The publisher's callback is a temporary: keep a copy, as an
        // asynchronous driver must.
        held_.push_back(Held{on_result, std::move(results)});
        return;
      }
    }
    report(on_result, results);
    if (duplicate_reports) {
      Error bogus(ErrorCode::Internal, "duplicate report");
      on_result(0, &bogus);
      on_result(batch.size() + 5, &bogus);
    }
  }

  Capabilities capabilities() const override {
    Capabilities c;
    c.delivery_guarantee = "at-least-once";
    c.headers = true;
    return c;
  }

  void close() override {
    std::vector<Held> held;
    {
      std::lock_guard lock(mu_);
      closed_ = true;
      close_calls_++;
      held.swap(held_);
    }
    Error closed(ErrorCode::Closed, "fake sender closed with the message in flight");
    for (auto& h : held) {
      for (std::size_t i = 0; i < h.results.size(); ++i) h.fn(i, &closed);
    }
  }

 private:
  struct Held {
    SendResultFn fn;
    std::vector<std::optional<Error>> results;
  };
  static void report(const SendResultFn& fn, const std::vector<std::optional<Error>>& results) {
    for (std::size_t i = 0; i < results.size(); ++i) fn(i, results[i] ? &*results[i] : nullptr);
  }

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Error> failures_;
  std::optional<Error> throw_;
  bool throw_std_ = false;
  bool misreport_ = false;
  bool hold_ = false;
  bool block_ = false;
  bool blocked_in_send_ = false;
  bool closed_ = false;
  int close_calls_ = 0;
  std::vector<Held> held_;
  std::vector<std::vector<std::string>> batches_;
  std::vector<std::int64_t> timestamps_;
};

// ------------------------------------------------------------ FakeReceiver

// Hands out the payloads offered to it, records ack/nack calls, and can fail
// the fetch once it ran dry.
class FakeReceiver : public Receiver, public std::enable_shared_from_this<FakeReceiver> {
 public:
  explicit FakeReceiver(bool can_nack = true) : can_nack_(can_nack) {}

  void offer(const std::vector<std::string>& payloads) {
    std::lock_guard lock(mu_);
    for (const auto& p : payloads) available_.push_back(p);
    cv_.notify_all();
  }
  void fail_when_empty(Error e) {
    std::lock_guard lock(mu_);
    fail_ = std::move(e);
    cv_.notify_all();
  }
  std::size_t handed_out() const {
    std::lock_guard lock(mu_);
    return handed_out_;
  }
  std::vector<std::vector<std::uint64_t>> ack_calls() const {
    std::lock_guard lock(mu_);
    return ack_calls_;
  }
  std::vector<std::vector<std::uint64_t>> nack_calls() const {
    std::lock_guard lock(mu_);
    return nack_calls_;
  }
  int close_calls() const {
    std::lock_guard lock(mu_);
    return close_calls_;
  }

  std::vector<MessagePtr> receive_batch(std::size_t max, std::chrono::milliseconds timeout) override {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return closed_ || !available_.empty() || fail_; });
    if (closed_) throw Error(ErrorCode::Closed, "fake receiver is closed");
    std::vector<MessagePtr> got;
    if (available_.empty()) {
      if (fail_) throw *fail_;
      return got;
    }
    auto self = shared_from_this();
    while (got.size() < max && !available_.empty()) {
      OutMessage m;
      m.payload = make_bytes(available_.front());
      available_.pop_front();
      got.push_back(std::make_shared<Message>(std::move(m), "fake-topic", 1, self, next_id_++));
    }
    handed_out_ += got.size();
    return got;
  }

  void ack(const std::vector<std::uint64_t>& ids) override {
    std::lock_guard lock(mu_);
    ack_calls_.push_back(ids);
  }

  void nack(const std::vector<std::uint64_t>& ids) override {
    std::lock_guard lock(mu_);
    if (!can_nack_) throw Error(ErrorCode::Unsupported, "fake receiver cannot nack");
    nack_calls_.push_back(ids);
  }

  Capabilities capabilities() const override {
    Capabilities c;
    c.delivery_guarantee = "at-least-once";
    c.nack = can_nack_;
    return c;
  }

  void close() override {
    std::lock_guard lock(mu_);
    closed_ = true;
    close_calls_++;
    cv_.notify_all();
  }

 private:
  const bool can_nack_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> available_;
  std::optional<Error> fail_;
  std::size_t handed_out_ = 0;
  std::uint64_t next_id_ = 100;
  bool closed_ = false;
  int close_calls_ = 0;
  std::vector<std::vector<std::uint64_t>> ack_calls_;
  std::vector<std::vector<std::uint64_t>> nack_calls_;
};

// ------------------------------------------------------------ FakeDriver

// A driver under a throwaway scheme that records what open_* was given.
class FakeDriver : public Driver {
 public:
  explicit FakeDriver(std::string scheme) : scheme_(std::move(scheme)) {}

  std::string scheme() const override { return scheme_; }
  std::string description() const override { return "fake driver for tests"; }
  std::vector<OptionSpec> sender_options() const override {
    return {{"token", OptionType::String, "", "a driver-specific sender option"}};
  }
  std::vector<OptionSpec> receiver_options() const override {
    return {{"queue", OptionType::String, "default", "a driver-specific receiver option"}};
  }
  std::shared_ptr<Sender> open_sender(const Url& url, const OptionValues& options) override {
    std::lock_guard lock(mu_);
    last_url = url;
    last_options = options;
    last_sender = std::make_shared<FakeSender>();
    return last_sender;
  }
  std::shared_ptr<Receiver> open_receiver(const Url& url, const OptionValues& options,
                                          const ReceiverSettings& settings) override {
    std::lock_guard lock(mu_);
    last_url = url;
    last_options = options;
    last_settings = settings;
    last_receiver = std::make_shared<FakeReceiver>();
    return last_receiver;
  }

  std::mutex mu_;
  std::optional<Url> last_url;
  std::optional<OptionValues> last_options;
  std::optional<ReceiverSettings> last_settings;
  std::shared_ptr<FakeSender> last_sender;
  std::shared_ptr<FakeReceiver> last_receiver;

 private:
  std::string scheme_;
};

// Registers a driver for one test; the registry is process-wide.
class ScopedDriver {
 public:
  explicit ScopedDriver(std::shared_ptr<Driver> driver) : scheme_(driver->scheme()) {
    DriverRegistry::instance().add(std::move(driver));
  }
  ~ScopedDriver() { DriverRegistry::instance().remove(scheme_); }
  ScopedDriver(const ScopedDriver&) = delete;
  ScopedDriver& operator=(const ScopedDriver&) = delete;

 private:
  std::string scheme_;
};

}  // namespace omnibus::test
