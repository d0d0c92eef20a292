#include "omnibus/subscriber.hpp"

#include <algorithm>

#include "core/open.hpp"
#include "omnibus/error.hpp"

namespace omnibus {

std::vector<OptionSpec> Subscriber::portable_options() {
  return {
      {"prefetch", OptionType::Int, "1000", "messages fetched ahead of receive() into the local buffer", {}, 1},
      {"auto_ack", OptionType::Bool, "true",
       "ack each message when it is handed to the application (at-most-once processing); "
       "false: call ack()/nack() yourself (at-least-once)"},
  };
}

std::shared_ptr<Subscriber> Subscriber::open(const std::string& url_text,
                                             const std::vector<std::pair<std::string, std::string>>& extra) {
  auto [url, driver, options] = detail::open_url(url_text, extra, detail::Role::Subscriber);
  SubscriberConfig config;
  config.prefetch = static_cast<std::size_t>(options.get_int("prefetch"));
  config.auto_ack = options.get_bool("auto_ack");
  ReceiverSettings settings;
  settings.manual_ack = !config.auto_ack;
  auto receiver = driver->open_receiver(url, options, settings);
  return std::make_shared<Subscriber>(std::move(receiver), config, url.text);
}

Subscriber::Subscriber(std::shared_ptr<Receiver> receiver, SubscriberConfig config, std::string url_text)
    : receiver_(std::move(receiver)), config_(config), url_(std::move(url_text)) {
  direct_ = receiver_->fetches_ahead();
  last_receive_ = Clock::now();
  thread_ = std::thread([this] { direct_ ? serve_while_idle() : run(); });
}

Subscriber::~Subscriber() {
  try {
    close();
  } catch (...) {
    // A destructor must not throw (std::terminate): a receiver whose close
    // failed (connection already gone) leaves its unacked messages to the
    // broker's own redelivery.
  }
}

bool Subscriber::closed() const {
  std::lock_guard lock(mu_);
  return closed_;
}

std::size_t Subscriber::buffered() const {
  std::lock_guard lock(mu_);
  if (direct_) return closed_ ? 0 : buffer_.size() + receiver_->buffered();
  return buffer_.size();
}

void Subscriber::run() {
  for (;;) {
    std::size_t room;
    {
      std::unique_lock lock(mu_);
      space_cv_.wait(lock, [&] { return closed_ || buffer_.size() < config_.prefetch; });
      if (closed_) return;
      room = config_.prefetch - buffer_.size();
    }
    std::vector<MessagePtr> got;
    try {
      // Short slices so that close() is noticed within 100 ms.
      got = receiver_->receive_batch(room, std::chrono::milliseconds(100));
    } catch (...) {
      std::lock_guard lock(mu_);
      if (!closed_) fetch_error_ = std::current_exception();
      data_cv_.notify_all();
      if (on_data_) on_data_();
      return;
    }
    if (got.empty()) continue;
    std::lock_guard lock(mu_);
    for (auto& m : got) buffer_.push_back(std::move(m));
    data_cv_.notify_all();
    if (on_data_) on_data_();
  }
}

bool Subscriber::on_data(std::function<void()> fn) {
  if (direct_) return false;
  std::lock_guard lock(mu_);
  on_data_ = std::move(fn);
  if (on_data_ && (!buffer_.empty() || closed_ || fetch_error_)) on_data_();
  return true;
}

// A receiver that fetches ahead must still be served while the application
// is busy elsewhere: a Kafka group cannot rebalance (another member cannot
// join) until each member polls. After kIdle without a receive, this thread
// takes the application's turn and fetches into buffer_ (up to prefetch),
// which receive_direct() hands out first. While the application keeps
// receiving, it does nothing.
namespace {
constexpr auto kIdle = std::chrono::milliseconds(50);
}

void Subscriber::serve_while_idle() {
  for (;;) {
    std::size_t room;
    {
      std::unique_lock lock(mu_);
      space_cv_.wait_for(lock, kIdle, [&] { return closed_; });
      if (closed_) return;
      if (fetch_error_ || buffer_.size() >= config_.prefetch || Clock::now() - last_receive_ < kIdle) continue;
      room = config_.prefetch - buffer_.size();
    }
    std::unique_lock turn(direct_mu_, std::try_to_lock);
    if (!turn) continue;  // the application is receiving
    std::vector<MessagePtr> got;
    try {
      if (closed()) return;
      got = receiver_->receive_batch(room, std::chrono::duration_cast<std::chrono::milliseconds>(kIdle));
    } catch (...) {
      std::lock_guard lock(mu_);
      if (!closed_) fetch_error_ = std::current_exception();
      continue;
    }
    std::lock_guard lock(mu_);
    for (auto& m : got) buffer_.push_back(std::move(m));
  }
}

// The receiver is called in slices of at most 100 ms, so that close() (which
// waits for direct_mu_) is never held up longer than that.
std::vector<MessagePtr> Subscriber::receive_direct(std::size_t max, Clock::duration timeout) {
  const auto deadline = Clock::now() + timeout;
  std::unique_lock turn(direct_mu_, std::defer_lock);
  if (!turn.try_lock_until(deadline)) {
    if (closed()) throw Error(ErrorCode::Closed, "subscriber for " + url_ + " is closed");
    return {};
  }
  struct Stamp {  // receiving: serve_while_idle() stays out of the way
    Subscriber& s;
    Stamp(Subscriber& s) : s(s) { touch(); }
    ~Stamp() { touch(); }
    void touch() {
      std::lock_guard lock(s.mu_);
      s.last_receive_ = Clock::now();
    }
  } stamp{*this};
  {
    std::lock_guard lock(mu_);  // what serve_while_idle() fetched comes first
    if (closed_) throw Error(ErrorCode::Closed, "subscriber for " + url_ + " is closed");
    if (!buffer_.empty()) {
      std::vector<MessagePtr> out;
      const std::size_t n = std::min(max, buffer_.size());
      out.reserve(n);
      for (std::size_t i = 0; i < n; ++i) {
        out.push_back(std::move(buffer_.front()));
        buffer_.pop_front();
      }
      return out;
    }
    if (fetch_error_) std::rethrow_exception(fetch_error_);
  }
  for (;;) {
    if (closed()) throw Error(ErrorCode::Closed, "subscriber for " + url_ + " is closed");
    const auto left = std::max(Clock::duration::zero(), deadline - Clock::now());
    const auto slice = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::min<Clock::duration>(left, std::chrono::milliseconds(100)));
    auto got = receiver_->receive_batch(max, slice);
    if (!got.empty() || Clock::now() >= deadline) return got;
  }
}

std::vector<MessagePtr> Subscriber::receive_batch(std::size_t max, Clock::duration timeout) {
  std::vector<MessagePtr> out;
  if (direct_) {
    out = receive_direct(max, timeout);
    if (config_.auto_ack) auto_ack(out);
    return out;
  }
  {
    std::unique_lock lock(mu_);
    data_cv_.wait_for(lock, timeout, [&] { return !buffer_.empty() || closed_ || fetch_error_; });
    if (closed_) throw Error(ErrorCode::Closed, "subscriber for " + url_ + " is closed");
    if (buffer_.empty()) {
      if (fetch_error_) std::rethrow_exception(fetch_error_);
      return out;
    }
    std::size_t n = std::min(max, buffer_.size());
    out.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      out.push_back(std::move(buffer_.front()));
      buffer_.pop_front();
    }
    space_cv_.notify_one();
  }
  if (config_.auto_ack) auto_ack(out);
  return out;
}

namespace {
using ByReceiver = std::vector<std::pair<std::shared_ptr<Receiver>, std::vector<std::uint64_t>>>;

enum class Mark { No, Settled, AutoAcked };

// Groups the unsettled messages by receiver so that each gets one call. A
// batch nearly always comes from one receiver: a linear scan beats a map.

ByReceiver group_unsettled(const std::vector<MessagePtr>& msgs, Mark mark) {
  ByReceiver by;
  for (const auto& m : msgs) {
    if (!m || !m->receiver()) continue;
    const bool taken = mark == Mark::No          ? !m->settled()
                       : mark == Mark::Settled ? m->mark_settled()
                                               : m->mark_auto_acked();
    if (!taken) continue;
    auto it = std::find_if(by.begin(), by.end(), [&](const auto& slot) { return slot.first == m->receiver(); });
    if (it == by.end()) {
      by.emplace_back(m->receiver(), std::vector<std::uint64_t>{});
      by.back().second.reserve(msgs.size());
      it = by.end() - 1;
    }
    it->second.push_back(m->ack_id());
  }
  return by;
}
}  // namespace

void Subscriber::ack(const std::vector<MessagePtr>& msgs) {
  for (auto& [receiver, ids] : group_unsettled(msgs, Mark::Settled)) receiver->ack(ids);
}

// Marked as auto-acked, not merely settled, so that a later nack() says why
// it cannot redeliver instead of doing nothing.
void Subscriber::auto_ack(const std::vector<MessagePtr>& msgs) {
  for (auto& [receiver, ids] : group_unsettled(msgs, Mark::AutoAcked)) receiver->ack(ids);
}

void Subscriber::nack(const std::vector<MessagePtr>& msgs) {
  // Before anything is settled: an auto-acked message in the batch fails the
  // whole call, as a receiver that cannot nack does.
  for (const auto& m : msgs)
    if (m) m->check_nackable();
  auto by = group_unsettled(msgs, Mark::No);
  for (auto& [receiver, _] : by) {
    if (!receiver->capabilities().nack)
      throw Error(ErrorCode::Unsupported,
                  "nack is not supported by this protocol/configuration (capabilities().nack is False); "
                  "ack the message or let the subscriber close to return it");
  }
  for (const auto& m : msgs) {
    if (m) m->mark_settled();
  }
  for (auto& [receiver, ids] : by) receiver->nack(ids);
}

void Subscriber::close() {
  {
    std::lock_guard lock(mu_);
    if (closed_) return;
    closed_ = true;
    data_cv_.notify_all();
    space_cv_.notify_all();
    if (on_data_) on_data_();
  }
  if (thread_.joinable()) thread_.join();
  std::lock_guard turn(direct_mu_);  // a receive_batch in progress returns within its slice
  receiver_->close();  // unacked and buffered messages go back to the broker
  std::lock_guard lock(mu_);
  buffer_.clear();
}

}  // namespace omnibus
