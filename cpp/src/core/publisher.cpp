#include "omnibus/publisher.hpp"

#include <algorithm>
#include <cstdio>

#include "core/backoff.hpp"
#include "core/open.hpp"

namespace omnibus {

// ---------------------------------------------------------------- DeliveryTracker

DeliveryTracker::DeliveryTracker(std::size_t size) : size_(size), remaining_(size) {}

bool DeliveryTracker::wait_for(Clock::duration timeout) const {
  if (done()) return true;
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return done(); });
}

std::vector<std::pair<std::size_t, Error>> DeliveryTracker::failures() const {
  std::lock_guard lock(mu_);
  auto out = failures_;
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  return out;
}

void DeliveryTracker::on_done(std::function<void()> fn) {
  {
    std::lock_guard lock(mu_);
    if (!done()) {
      callbacks_.push_back(std::move(fn));
      return;
    }
  }
  fn();
}

void DeliveryTracker::complete(std::size_t index, const Error* error) {
  if (error) {
    // Failures are rare: take the lock for them only.
    std::lock_guard lock(mu_);
    failures_.emplace_back(index, *error);
  }
  finish_one();
}

void DeliveryTracker::finish_one() {
  if (remaining_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  std::vector<std::function<void()>> callbacks;
  {
    std::lock_guard lock(mu_);
    callbacks.swap(callbacks_);
    cv_.notify_all();
  }
  for (auto& fn : callbacks) fn();
}

void DeliveryTracker::fail_rest(std::size_t from, const Error& error) {
  for (std::size_t i = from; i < size_; ++i) complete(i, &error);
}

// ---------------------------------------------------------------- Publisher

struct Publisher::InFlight {
  std::vector<OutMessage> msgs;
  std::vector<std::pair<std::shared_ptr<DeliveryTracker>, std::size_t>> targets;
  std::vector<Clock::time_point> queued_at;  // per message: its publish time
  std::vector<std::uint32_t> attempts;       // per message: failed sends before this one
  std::unique_ptr<std::atomic<bool>[]> reported;
  std::atomic<std::size_t> remaining{0};
  std::atomic<std::size_t> failed{0};
  std::atomic<std::size_t> resent{0};  // reported as failed retryably and queued again
};

namespace {
// The backoff between resends of messages that failed retryably.
constexpr std::chrono::milliseconds kResendMin{100};
constexpr std::chrono::milliseconds kResendMax{5000};
}  // namespace

std::vector<OptionSpec> Publisher::portable_options() {
  return {
      {"batch_messages", OptionType::Int, "1000", "most messages the engine hands to the driver in one batch", {}, 1},
      {"batch_bytes", OptionType::Int, "1048576", "most payload+key+header bytes in one batch (a larger message goes alone)", {}, 1},
      {"batch_linger_ms", OptionType::Float, "0.1", "how long a batch may wait to fill up (a full batch goes at once); 0 sends as soon as the driver is free, at the cost of many tiny batches under load", {}, 0, 60000},
      {"max_pending", OptionType::Int, "100000", "bound on messages queued or in flight; publish blocks when it is reached (keep it >= batch_messages: a full queue still waits out batch_linger_ms)", {}, 1},
      {"block_timeout_ms", OptionType::Int, "10000", "how long publish blocks on a full queue before raising ResourceExhausted", {}, 0},
      {"delivery_timeout_ms", OptionType::Int, "30000", "a message whose send fails because the broker is away (Unavailable) is sent again, with backoff, until this long after publish; then it fails (kafka://: also librdkafka's message.timeout.ms)", {}, 1},
  };
}

std::shared_ptr<Publisher> Publisher::open(const std::string& url_text,
                                           const std::vector<std::pair<std::string, std::string>>& extra) {
  auto [url, driver, options] = detail::open_url(url_text, extra, detail::Role::Publisher);

  PublisherConfig config;
  config.batch_messages = static_cast<std::size_t>(options.get_int("batch_messages"));
  config.batch_bytes = static_cast<std::size_t>(options.get_int("batch_bytes"));
  config.linger = std::chrono::microseconds(static_cast<std::int64_t>(options.get_float("batch_linger_ms") * 1000));
  config.max_pending = static_cast<std::size_t>(options.get_int("max_pending"));
  config.block_timeout = std::chrono::milliseconds(options.get_int("block_timeout_ms"));
  config.delivery_timeout = std::chrono::milliseconds(options.get_int("delivery_timeout_ms"));
  auto sender = driver->open_sender(url, options);
  return std::make_shared<Publisher>(std::move(sender), config, url.text);
}

Publisher::Publisher(std::shared_ptr<Sender> sender, PublisherConfig config, std::string url_text)
    : sender_(std::move(sender)), config_(config), url_(std::move(url_text)) {
  thread_ = std::thread([this] { run(); });
}

Publisher::~Publisher() {
  try {
    close(config_.block_timeout);
  } catch (...) {
    // A destructor must not throw; close() already failed every message it
    // could not deliver, so their delivery results carry the reason.
  }
}

bool Publisher::closed() const {
  std::lock_guard lock(mu_);
  return closed_;
}

PublisherStats Publisher::stats() const {
  std::lock_guard lock(mu_);
  auto s = stats_;
  s.messages_delivered = delivered_.load(std::memory_order_relaxed);
  s.pending = pending_;
  return s;
}

std::size_t Publisher::enqueue(std::vector<OutMessage>& msgs, std::size_t start,
                               const std::shared_ptr<DeliveryTracker>& tracker,
                               std::size_t tracker_offset, Clock::duration wait) {
  const auto now = Clock::now();
  const auto deadline = now + wait;
  const auto stamp = now_ms();
  std::unique_lock lock(mu_);
  std::size_t done = 0;
  while (start + done < msgs.size()) {
    if (closed_) {
      // Report what this call did enqueue; the caller sees the shortfall and
      // fails the rest. Throwing here would hide the part already queued.
      if (done > 0) break;
      throw Error(ErrorCode::Closed, "publisher for " + url_ + " is closed");
    }
    if (pending_ >= config_.max_pending) {
      if (!space_cv_.wait_until(lock, deadline, [&] { return pending_ < config_.max_pending || closed_; }))
        break;
      continue;
    }
    std::size_t take = std::min(config_.max_pending - pending_, msgs.size() - start - done);
    if (queue_.empty()) first_queued_at_ = Clock::now();
    for (std::size_t i = 0; i < take; ++i) {
      std::size_t at = start + done + i;
      auto& m = msgs[at];
      if (m.timestamp_ms == 0) m.timestamp_ms = stamp;
      const auto bytes = m.size_bytes();
      queued_bytes_ += bytes;
      queue_.push_back(Pending{std::move(m), tracker, at - start + tracker_offset, bytes, now});
    }
    pending_ += take;
    done += take;
    // One wake-up per idle period, not per message: while the sender thread
    // is on its way, later messages join the batch it is about to take.
    if ((sender_idle_ && !wake_pending_) || (lingering_ && batch_ready_locked())) {
      wake_pending_ = true;
      work_cv_.notify_one();
    }
  }
  return done;
}

std::shared_ptr<DeliveryTracker> Publisher::publish(std::vector<OutMessage> msgs) {
  auto tracker = std::make_shared<DeliveryTracker>(msgs.size());
  std::size_t n = enqueue(msgs, 0, tracker, 0, config_.block_timeout);
  if (n < msgs.size() && closed()) {
    Error err(ErrorCode::Closed, "publisher for " + url_ + " was closed while publishing; messages " +
                                     std::to_string(n) + ".." + std::to_string(msgs.size() - 1) + " were not enqueued");
    tracker->fail_rest(n, err);
    throw err;
  }
  if (n < msgs.size()) {
    Error err(ErrorCode::ResourceExhausted,
              "publish queue of " + url_ + " stayed full (max_pending=" + std::to_string(config_.max_pending) +
                  ") for block_timeout_ms=" + std::to_string(config_.block_timeout.count()) + "; messages " +
                  std::to_string(n) + ".." + std::to_string(msgs.size() - 1) + " were not enqueued");
    tracker->fail_rest(n, err);
    throw err;
  }
  return tracker;
}

std::unique_ptr<PendingReply> Publisher::send_request(OutMessage msg, bool more) {
  if (!sender_->capabilities().request_reply)
    throw Error(ErrorCode::Unsupported,
                "request-reply is not supported by " + url_ +
                    " (capabilities()['request_reply'] is False): it needs nats:// core (without stream=) or mem://");
  if (!msg.payload) throw Error(ErrorCode::InvalidArgument, "request to " + url_ + " has no payload");
  if (msg.timestamp_ms == 0) msg.timestamp_ms = now_ms();
  {
    std::lock_guard lock(mu_);
    if (closed_) throw Error(ErrorCode::Closed, "publisher for " + url_ + " is closed");
    requests_sending_++;
  }
  // close() must not release the connection while a request is being sent on
  // it; the wait for the reply needs no connection (the handle owns its state).
  struct Done {
    Publisher& p;
    ~Done() {
      std::lock_guard lock(p.mu_);
      if (--p.requests_sending_ == 0) p.space_cv_.notify_all();
    }
  } done{*this};
  return sender_->request(msg, more);
}

Error Publisher::request_timeout(Clock::duration waited) const {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(waited).count();
  char secs[32];
  std::snprintf(secs, sizeof secs, "%.3g", static_cast<double>(ms) / 1000.0);
  return Error(ErrorCode::Timeout, "no reply to the request on " + url_ + " within the timeout of " + secs +
                                       " s (no subscriber replied in time; a later reply is dropped)");
}

MessagePtr Publisher::request(OutMessage msg, Clock::duration timeout) {
  auto pending = send_request(std::move(msg));
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(std::max(timeout, Clock::duration::zero()));
  if (auto reply = pending->wait(ms)) return reply;
  throw request_timeout(timeout);
}

bool Publisher::batch_ready_locked() const {
  // Linger is honoured even when the pending queue is full (max_pending below
  // batch_messages): blocked producers then wait out the linger. The option
  // docs say so; the defaults (100000 pending, 1000 per batch) never do it.
  return queue_.size() >= config_.batch_messages || queued_bytes_ >= config_.batch_bytes || flushers_ > 0 ||
         closed_ || stopping_ || config_.linger.count() == 0;
}

void Publisher::run() {
  std::unique_lock lock(mu_);
  for (;;) {
    sender_idle_ = true;
    // A wake-up sent during the linger (below) was consumed there: without
    // this reset the flag would stay set while the thread sleeps here, and no
    // later enqueue would wake it (messages queued, nothing sent, no error).
    wake_pending_ = false;
    // Resends go first, once their backoff is over, and hold new messages
    // back meanwhile, so that a broker outage does not reorder the stream.
    for (;;) {
      if (stopping_) break;
      if (resend_.empty() ? !queue_.empty() : resend_.front().not_before <= Clock::now()) break;
      if (resend_.empty()) work_cv_.wait(lock);
      else work_cv_.wait_until(lock, resend_.front().not_before);
    }
    sender_idle_ = false;
    wake_pending_ = false;
    if (queue_.empty() && resend_.empty()) break;  // stopping with nothing left
    const bool resending = !resend_.empty();
    if (!resending && !batch_ready_locked()) {
      lingering_ = true;  // enqueue wakes us when the batch fills up meanwhile
      work_cv_.wait_until(lock, first_queued_at_ + config_.linger, [&] { return batch_ready_locked(); });
      lingering_ = false;
    }
    auto batch = std::make_shared<InFlight>();
    std::deque<Pending>& from = resending ? resend_ : queue_;
    const auto most = std::min(from.size(), config_.batch_messages);
    batch->msgs.reserve(most);
    batch->targets.reserve(most);
    batch->queued_at.reserve(most);
    batch->attempts.reserve(most);
    std::size_t bytes = 0;
    while (!from.empty() && batch->msgs.size() < config_.batch_messages) {
      auto size = from.front().bytes;
      if (!batch->msgs.empty() && bytes + size > config_.batch_bytes) break;
      bytes += size;
      auto& p = from.front();
      batch->msgs.push_back(std::move(p.msg));
      batch->targets.emplace_back(std::move(p.tracker), p.index);
      batch->queued_at.push_back(p.queued_at);
      batch->attempts.push_back(p.attempts);
      from.pop_front();
    }
    if (resending) stats_.messages_resent += batch->msgs.size();
    else queued_bytes_ -= bytes;
    if (!queue_.empty()) first_queued_at_ = Clock::now();
    const auto n = batch->msgs.size();
    batch->remaining.store(n);
    batch->reported.reset(new std::atomic<bool>[n]);
    for (std::size_t i = 0; i < n; ++i) batch->reported[i].store(false, std::memory_order_relaxed);
    in_flight_.push_back(batch);
    stats_.batches_sent++;
    stats_.messages_sent += n;
    stats_.largest_batch = std::max(stats_.largest_batch, n);
    lock.unlock();
    InFlight* raw = batch.get();
    try {
      sender_->send_batch(raw->msgs, [this, raw](std::size_t i, const Error* e) { on_result(*raw, i, e); });
    } catch (const Error& e) {
      for (std::size_t i = 0; i < n; ++i) on_result(*raw, i, &e);
    } catch (const std::exception& e) {
      Error err(ErrorCode::Internal, std::string("driver send_batch failed: ") + e.what());
      for (std::size_t i = 0; i < n; ++i) on_result(*raw, i, &err);
    }
    batch.reset();
    lock.lock();
  }
}

void Publisher::on_result(InFlight& batch, std::size_t i, const Error* error) {
  if (i >= batch.msgs.size() || batch.reported[i].exchange(true)) return;  // a driver bug must not double count
  auto& [tracker, index] = batch.targets[i];
  if (!error) {
    if (resend_attempt_.load(std::memory_order_relaxed) != 0) resend_attempt_.store(0, std::memory_order_relaxed);
  } else if (error->code() == ErrorCode::Unavailable && error->retryable()) {
    const auto now = Clock::now();
    std::unique_lock lock(mu_);
    if (!stopping_ && now < batch.queued_at[i] + config_.delivery_timeout) {
      // Sent again later (the driver must not hold on to the batch after its
      // last result, so the message is copied; its payload is shared).
      const auto wait = detail::backoff_delay(kResendMin, kResendMax, resend_attempt_.fetch_add(1), rng_);
      resend_.push_back(Pending{batch.msgs[i], tracker, index, batch.msgs[i].size_bytes(), batch.queued_at[i],
                                batch.attempts[i] + 1, now + wait, *error});
      batch.resent.fetch_add(1, std::memory_order_relaxed);
      work_cv_.notify_one();
      lock.unlock();
      finish_in_flight(batch);
      return;
    }
    lock.unlock();
    if (batch.attempts[i] > 0) {
      // Out of time: say how long and how often it was tried.
      Error late(ErrorCode::Unavailable,
                 std::string(error->what()) + " (sent " + std::to_string(batch.attempts[i] + 1) +
                     " times; not delivered within delivery_timeout_ms=" +
                     std::to_string(config_.delivery_timeout.count()) + " of " + url_ + ")",
                 error->native_code(), true);
      record_failure(batch, i, late);
      finish_in_flight(batch);
      return;
    }
  }
  if (error) {
    record_failure(batch, i, *error);
  } else {
    // Counted before the future resolves: whoever waited on it then sees it in stats().
    delivered_.fetch_add(1, std::memory_order_relaxed);
    tracker->complete(index, nullptr);
  }
  finish_in_flight(batch);
}

void Publisher::record_failure(InFlight& batch, std::size_t i, const Error& error) {
  auto& [tracker, index] = batch.targets[i];
  batch.failed.fetch_add(1, std::memory_order_relaxed);
  {
    // Counted before the future resolves, as delivered messages are.
    std::lock_guard lock(mu_);
    stats_.messages_failed++;
    if (closed_) close_failures_.push_back(Undelivered{batch.msgs[i], error});
  }
  tracker->complete(index, &error);  // outside the lock: callbacks may call back in
}

void Publisher::finish_in_flight(InFlight& batch) {
  if (batch.remaining.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  std::lock_guard lock(mu_);
  const auto resent = batch.resent.load(std::memory_order_relaxed);
  pending_ -= batch.msgs.size() - resent;  // resent messages stay pending
  auto it = std::find_if(in_flight_.begin(), in_flight_.end(), [&](const auto& p) { return p.get() == &batch; });
  if (it != in_flight_.end()) in_flight_.erase(it);  // may destroy `batch`: touch nothing after
  space_cv_.notify_all();
}

bool Publisher::flush(Clock::duration timeout) {
  std::unique_lock lock(mu_);
  flushers_++;
  work_cv_.notify_one();
  bool ok = space_cv_.wait_for(lock, timeout, [&] { return pending_ == 0; });
  flushers_--;
  return ok;
}

std::vector<Undelivered> Publisher::close(Clock::duration timeout) {
  std::vector<Pending> dropped;
  {
    std::unique_lock lock(mu_);
    if (closed_) return {};
    closed_ = true;
    work_cv_.notify_all();
    space_cv_.notify_all();  // blocked publishers get Closed
    bool drained = space_cv_.wait_for(lock, timeout, [&] { return pending_ == 0; });
    if (!drained) {
      pending_ -= queue_.size() + resend_.size();
      dropped.assign(std::make_move_iterator(resend_.begin()), std::make_move_iterator(resend_.end()));
      dropped.insert(dropped.end(), std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.end()));
      queue_.clear();
      resend_.clear();
      queued_bytes_ = 0;
    }
    stopping_ = true;
    stats_.messages_failed += dropped.size();  // before their futures fail, as on_result counts
    work_cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  {
    // Requests being sent (not those waiting for a reply) end first: sends are brief.
    std::unique_lock lock(mu_);
    space_cv_.wait(lock, [&] { return requests_sending_ == 0; });
  }
  // Fails whatever the driver still holds (and the requests waiting for a
  // reply, with Closed); on_result records those.
  sender_->close();

  std::vector<Undelivered> out;
  Error err(ErrorCode::Closed, "publisher for " + url_ + " was closed before this message was sent");
  for (auto& p : dropped) {
    if (p.last_error) {
      // It waited to be sent again: the broker was away, not the publisher slow.
      Error away(ErrorCode::Unavailable,
                 "publisher for " + url_ + " was closed while this message waited to be sent again after: " +
                     p.last_error->what(),
                 p.last_error->native_code(), true);
      p.tracker->complete(p.index, &away);
      out.push_back(Undelivered{std::move(p.msg), away});
      continue;
    }
    p.tracker->complete(p.index, &err);  // outside the lock: callbacks may call back in
    out.push_back(Undelivered{std::move(p.msg), err});
  }
  std::lock_guard lock(mu_);
  for (auto& u : close_failures_) out.push_back(std::move(u));
  close_failures_.clear();
  return out;
}

}  // namespace omnibus
