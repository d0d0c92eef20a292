#pragma once
// The portable publisher: batching by count, bytes and linger time, a bounded
// pending queue with back-pressure, per-message delivery results, flush and a
// close that flushes or reports exactly what it could not deliver.

#include <chrono>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "omnibus/driver.hpp"
#include "omnibus/error.hpp"
#include "omnibus/message.hpp"

namespace omnibus {

// Delivery results of one publish call (1 message) or publish_many call (n).
// Completed by the driver's callbacks on any thread; waited on by the user.
// Thread-safe.
class DeliveryTracker {
 public:
  explicit DeliveryTracker(std::size_t size);

  std::size_t size() const noexcept { return size_; }
  bool done() const noexcept { return remaining_.load(std::memory_order_acquire) == 0; }
  // Blocks up to `timeout`; true when every message has a result.
  bool wait_for(Clock::duration timeout) const;
  // (index, error) for every failed message, sorted by index.
  std::vector<std::pair<std::size_t, Error>> failures() const;
  // Runs `fn` once all results are in: at once (on this thread) when they
  // already are, else on the thread that reports the last result.
  void on_done(std::function<void()> fn);

  // For the publisher and drivers: report message `index` (nullptr = delivered).
  void complete(std::size_t index, const Error* error);
  // Marks messages [from, size) as never enqueued, failing them with `error`.
  void fail_rest(std::size_t from, const Error& error);

 private:
  void finish_one();
  std::size_t size_;
  std::atomic<std::size_t> remaining_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::vector<std::pair<std::size_t, Error>> failures_;
  std::vector<std::function<void()>> callbacks_;
};

struct PublisherConfig {
  std::size_t batch_messages = 1000;
  std::size_t batch_bytes = 1 << 20;
  std::chrono::microseconds linger{100};
  std::size_t max_pending = 100000;  // queued + in flight at the driver
  std::chrono::milliseconds block_timeout{10000};
  // A message whose send failed with a retryable Unavailable (broker away,
  // connection lost) is sent again, after a jittered backoff, until this long
  // after it was published; then it fails. The same rule for every driver.
  std::chrono::milliseconds delivery_timeout{30000};
};

struct PublisherStats {
  std::uint64_t batches_sent = 0;
  std::uint64_t messages_sent = 0;       // handed to the driver
  std::uint64_t messages_delivered = 0;  // confirmed by the driver
  std::uint64_t messages_failed = 0;
  std::uint64_t messages_resent = 0;     // sends repeated after a retryable failure
  std::size_t pending = 0;
  std::size_t largest_batch = 0;
};

// One message close() could not deliver, with the reason.
struct Undelivered {
  OutMessage message;
  Error error;
};

class Publisher {
 public:
  // Options every publisher accepts, whatever the driver.
  static std::vector<OptionSpec> portable_options();

  // Parses the URL, validates options (URL query, then `extra`), opens the
  // driver's sender and starts the sender thread. Blocks for the driver's
  // connect. Throws InvalidArgument, Unsupported, Unavailable.
  static std::shared_ptr<Publisher> open(
      const std::string& url,
      const std::vector<std::pair<std::string, std::string>>& extra = {});
  // For tests: run on an already opened sender.
  Publisher(std::shared_ptr<Sender> sender, PublisherConfig config, std::string url_text);
  ~Publisher();  // close() with block_timeout, errors swallowed
  Publisher(const Publisher&) = delete;
  Publisher& operator=(const Publisher&) = delete;

  // Enqueues msgs[start..], blocking up to `wait` while the pending queue is
  // full. Message msgs[i] is tracked as tracker index i + tracker_offset - start.
  // Returns the number enqueued (< msgs.size() - start only on timeout).
  // Throws Closed after close(). Thread-safe; payloads are moved from `msgs`.
  std::size_t enqueue(std::vector<OutMessage>& msgs, std::size_t start,
                      const std::shared_ptr<DeliveryTracker>& tracker, std::size_t tracker_offset,
                      Clock::duration wait);
  // Convenience: enqueue all, blocking up to config().block_timeout, throwing
  // ResourceExhausted (and failing the unsent ones in the tracker) on timeout.
  std::shared_ptr<DeliveryTracker> publish(std::vector<OutMessage> msgs);

  // Request-reply (capabilities().request_reply: nats:// core, mem://): sends
  // `msg` to the publisher's subject with a reply address of its own and
  // blocks up to `timeout` for the first reply, which it returns (its topic()
  // is the reply address; it has no receiver, so ack() is a no-op). Bypasses
  // the batch queue and its back-pressure: it neither waits behind queued
  // publishes nor counts in max_pending, so a request may overtake messages
  // published before it. Thread-safe, concurrently with publishing, flush and
  // other requests. Throws Timeout naming the URL and the timeout when no
  // reply came, Timeout at once when the broker says nothing subscribes to the
  // subject (no responders), Unsupported where the protocol has no
  // request-reply, Closed after close() (a request waiting when close() runs
  // fails with Closed), ResourceExhausted for a message above the size limit.
  MessagePtr request(OutMessage msg, Clock::duration timeout);
  // The sending half of request(), for callers that wait in slices (Python,
  // to stay interruptible): sends and returns the handle to wait on. Throws
  // like request() except for the Timeout of the wait.
  // `more`: another request follows at once (see Sender::request).
  std::unique_ptr<PendingReply> send_request(OutMessage msg, bool more = false);
  // The Timeout error request() throws when no reply came within `waited`.
  Error request_timeout(Clock::duration waited) const;

  // Sends everything queued now, ignoring linger; blocks up to `timeout` until
  // nothing is pending. Returns false on timeout. Thread-safe.
  bool flush(Clock::duration timeout);
  // Stops accepting messages, flushes up to `timeout`, then fails whatever is
  // left with Closed and returns it (empty when all was delivered).
  // Idempotent: a second call returns an empty list. Thread-safe.
  std::vector<Undelivered> close(Clock::duration timeout);
  bool closed() const;

  Capabilities capabilities() const { return sender_->capabilities(); }
  // The driver's view of its connection (Sender::connected()): true, false
  // while it reconnects, nullopt when the driver cannot tell.
  // Thread-safe, non-blocking.
  std::optional<bool> connected() const { return sender_->connected(); }
  const PublisherConfig& config() const noexcept { return config_; }
  PublisherStats stats() const;
  const std::string& url() const noexcept { return url_; }

 private:
  struct Pending {
    OutMessage msg;
    std::shared_ptr<DeliveryTracker> tracker;
    std::size_t index;
    std::size_t bytes;  // msg.size_bytes(), computed once
    Clock::time_point queued_at;  // publish time: the delivery timeout counts from it
    std::uint32_t attempts = 0;   // sends that failed and were repeated
    Clock::time_point not_before{};  // a resend waits its backoff
    std::optional<Error> last_error;  // why the last send failed (resends)
  };
  struct InFlight;
  void run();
  bool batch_ready_locked() const;
  void on_result(InFlight& batch, std::size_t i, const Error* error);
  void record_failure(InFlight& batch, std::size_t i, const Error& error);
  void finish_in_flight(InFlight& batch);  // one result of `batch` is settled

  std::shared_ptr<Sender> sender_;
  PublisherConfig config_;
  std::string url_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;   // sender thread: work arrived / flush / stop
  std::condition_variable space_cv_;  // producers and flushers: pending went down
  std::deque<Pending> queue_;
  std::deque<Pending> resend_;  // failed retryably, sent again before queue_ (order kept)
  std::atomic<unsigned> resend_attempt_{0};  // backoff step; a success resets it
  std::minstd_rand rng_{std::random_device{}()};  // backoff jitter, under mu_
  std::size_t queued_bytes_ = 0;
  std::size_t pending_ = 0;  // queued + in flight
  std::size_t flushers_ = 0;
  std::size_t requests_sending_ = 0;  // in Sender::request; close() waits for them
  bool closed_ = false;
  bool stopping_ = false;
  bool sender_idle_ = false;   // the sender thread waits for work
  bool wake_pending_ = false;  // it was signalled and has not woken yet
  bool lingering_ = false;     // it waits for a batch to fill (linger)
  std::vector<std::shared_ptr<InFlight>> in_flight_;
  std::vector<Undelivered> close_failures_;  // failed after close() began
  PublisherStats stats_;
  // Per message, lock-free: counted before each future resolves (stats() adds it).
  std::atomic<std::uint64_t> delivered_{0};
  Clock::time_point first_queued_at_{};
  std::thread thread_;
};

}  // namespace omnibus
