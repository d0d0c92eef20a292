#pragma once
// The portable subscriber: a prefetch buffer filled by a fetch thread (or,
// for a receiver that fetches ahead itself, receive_batch on the caller's
// thread), receive with timeout, batch receive, manual or automatic ack, nack.

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "omnibus/driver.hpp"
#include "omnibus/message.hpp"

namespace omnibus {

struct SubscriberConfig {
  std::size_t prefetch = 1000;
  bool auto_ack = true;  // settle on hand-over to the application
};

class Subscriber {
 public:
  static std::vector<OptionSpec> portable_options();

  // Parses the URL, validates options, opens the driver's receiver and starts
  // the fetch thread. Blocks for the connect. Throws like Publisher::open.
  static std::shared_ptr<Subscriber> open(
      const std::string& url,
      const std::vector<std::pair<std::string, std::string>>& extra = {});
  Subscriber(std::shared_ptr<Receiver> receiver, SubscriberConfig config, std::string url_text);
  ~Subscriber();  // close()
  Subscriber(const Subscriber&) = delete;
  Subscriber& operator=(const Subscriber&) = delete;

  // Blocks up to `timeout` for at least one message, returns up to `max`.
  // Empty on timeout. Throws Closed after close(), or the driver's error when
  // the fetch thread failed. Thread-safe.
  std::vector<MessagePtr> receive_batch(std::size_t max, Clock::duration timeout);

  // Batch ack/nack: one driver call per receiver. Thread-safe. ack() skips
  // settled messages (auto-acked ones included). nack() throws before
  // settling anything when a message was auto-acked (InvalidArgument, see
  // Message::check_nackable) or a receiver cannot nack (Unsupported).
  static void ack(const std::vector<MessagePtr>& msgs);
  static void nack(const std::vector<MessagePtr>& msgs);
  // Answers a request (Message::reply): sends `reply` to msg.reply_to(). The
  // caller encodes it (in Python, with the subscriber's codec). Thread-safe;
  // may block briefly on a network driver. Throws like Message::reply.
  static void reply(const Message& msg, OutMessage reply) { msg.reply(std::move(reply)); }

  // Calls `fn` (nullptr: no more) each time the fetch thread buffers messages
  // or fails, and on close(), so that an event loop waits on its own poller
  // instead of on a thread per receive (fn writes an eventfd, say). fn runs
  // under this subscriber's lock: it must be short, must not block and must
  // not call back into the subscriber; once this returns, a replaced fn is no
  // longer running. Returns false, and keeps nothing, for a receiver that
  // fetches ahead on the caller's thread (Kafka): there, only a receive
  // fetches, so the caller must wait in receive_batch. Thread-safe.
  bool on_data(std::function<void()> fn);
  // Stops fetching; unacked and buffered messages go back to the broker.
  // Idempotent, thread-safe; joins the fetch thread.
  void close();
  bool closed() const;

  Capabilities capabilities() const { return receiver_->capabilities(); }
  // As Publisher::connected(). Thread-safe, non-blocking.
  std::optional<bool> connected() const { return receiver_->connected(); }
  const SubscriberConfig& config() const noexcept { return config_; }
  std::size_t buffered() const;
  const std::string& url() const noexcept { return url_; }

 private:
  void run();
  void serve_while_idle();
  std::vector<MessagePtr> receive_direct(std::size_t max, Clock::duration timeout);
  static void auto_ack(const std::vector<MessagePtr>& msgs);

  std::shared_ptr<Receiver> receiver_;
  SubscriberConfig config_;
  std::string url_;
  mutable std::mutex mu_;
  std::condition_variable data_cv_;
  std::condition_variable space_cv_;
  std::deque<MessagePtr> buffer_;
  bool closed_ = false;
  std::function<void()> on_data_;  // guarded by mu_
  std::exception_ptr fetch_error_;
  std::thread thread_;
  // receiver_->fetches_ahead(): callers take turns calling the receiver under
  // direct_mu_ (which close() takes before closing it); thread_ only serves
  // the receiver while nobody has received for a while (serve_while_idle).
  bool direct_ = false;
  std::timed_mutex direct_mu_;
  Clock::time_point last_receive_{};  // guarded by mu_
};

}  // namespace omnibus
