// gcppubsub:// receiving (sender.hpp): StreamingPull streams into a bounded
// buffer, a lease thread that extends the ack deadline of the messages the
// application holds, ack = Acknowledge, nack = ModifyAckDeadline 0.
//
// Flow control: max_outstanding_messages / max_outstanding_bytes go to the
// server in the stream's first request (Pub/Sub stops sending at those), and
// a stream thread also stops reading while this receiver holds that many
// (buffered or handed out, not yet acked), so that a server that ignores them
// (the fake does) is held back by gRPC's own flow control.
//
// Ack deadline: the server's per-message deadline is the stream's
// (ack_deadline_ms rounded up to whole seconds, 10 at least, 600 at most, as
// Pub/Sub requires); the lease thread extends it while the application holds
// a message, until the message is ack_deadline_ms old: then it is given up
// (ModifyAckDeadline 0) and redelivered. A receiver that dies unannounced
// leaves its messages to the server's deadline.
//
// Delivery attempts: Pub/Sub counts them only on subscriptions with a
// dead-letter policy; elsewhere this receiver counts the deliveries it saw of
// each message it has not yet seen acked (so a nacked message comes back as
// attempt 2 here, but as attempt 1 to another group member).

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>

#include "core/backoff.hpp"
#include "drivers/gcp/envelope.hpp"
#include "drivers/gcp/sender.hpp"

namespace omnibus::detail::gcp {

namespace {

using std::chrono::milliseconds;

constexpr std::size_t kMaxCounted = 100000;  // message ids whose deliveries a receiver counts

std::string random_hex(std::size_t n) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < n; ++i) out.push_back(digits[rng() % 16]);
  return out;
}

class PubSubReceiver : public Receiver, public std::enable_shared_from_this<PubSubReceiver> {
 public:
  PubSubReceiver(std::shared_ptr<Client> c, std::string sub_path, bool own, const OptionValues& o)
      : c_(std::move(c)),
        sub_path_(std::move(sub_path)),
        own_(own),
        url_(c_->loc.url),
        topic_name_(c_->loc.topic.empty() ? c_->loc.subscription : c_->loc.topic),
        ack_deadline_(o.get_int("ack_deadline_ms")),
        stream_deadline_s_(stream_deadline_seconds(o.get_int("ack_deadline_ms"))),
        max_messages_(static_cast<std::size_t>(o.get_int("max_outstanding_messages"))),
        max_bytes_(static_cast<std::size_t>(o.get_int("max_outstanding_bytes"))),
        streams_n_(static_cast<std::size_t>(o.get_int("streams"))),
        unary_(o.get_string("pull") == "unary"),
        client_id_("omnibus-" + random_hex(16)) {}

  static int stream_deadline_seconds(std::int64_t ms) {
    return static_cast<int>(std::clamp<std::int64_t>((ms + 999) / 1000, 10, 600));
  }

  ~PubSubReceiver() override { close(); }

  // Started once the receiver is owned by a shared_ptr (messages hold one).
  void start() {
    for (std::size_t i = 0; i < streams_n_; ++i)
      threads_.emplace_back([this] { unary_ ? pull_loop() : stream_loop(); });
    threads_.emplace_back([this] { lease_loop(); });
  }

  std::vector<MessagePtr> receive_batch(std::size_t max, milliseconds timeout) override {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return !buffer_.empty() || closed_ || fatal_; });
    if (closed_) throw Error(ErrorCode::Closed, "gcppubsub:// receiver for " + url_ + " is closed");
    if (buffer_.empty() && fatal_) throw *fatal_;
    std::vector<MessagePtr> out;
    while (!buffer_.empty() && out.size() < max) {
      out.push_back(std::move(buffer_.front()));
      buffer_.pop_front();
    }
    return out;
  }

  void ack(const std::vector<std::uint64_t>& ids) override { settle(ids, true); }
  void nack(const std::vector<std::uint64_t>& ids) override { settle(ids, false); }

  Capabilities capabilities() const override { return pubsub_capabilities(kMaxMessageBytes); }
  std::optional<bool> connected() const override { return connected_.load(); }

  void close() override {
    {
      std::lock_guard lock(mu_);
      if (closed_) return;
      closed_ = true;
      for (auto* ctx : streams_) ctx->TryCancel();
      cv_.notify_all();
      room_cv_.notify_all();
    }
    for (auto& t : threads_)
      if (t.joinable()) t.join();
    // Unacked messages go back at once instead of after their deadline.
    std::vector<std::string> ack_ids;
    {
      std::lock_guard lock(mu_);
      for (auto& [_, h] : held_) ack_ids.push_back(std::move(h.ack_id));
      held_.clear();
      buffer_.clear();  // they hold this receiver
    }
    try {
      modify(*c_, ack_ids, 0);
    } catch (const Error&) {
      // Best effort: the server redelivers them after their deadline anyway.
    }
    if (own_) delete_subscription(*c_, sub_path_);
    // The channel (its connection) goes now: the object may live on (Python).
    std::lock_guard lock(mu_);
    c_.reset();
  }

 private:
  struct Held {
    std::string ack_id;
    std::string message_id;
    std::size_t bytes = 0;
    Clock::time_point received;
    Clock::time_point lease_until;  // the server's deadline as last set
  };

  void stream_loop() {
    detail::Backoff backoff(milliseconds(100), milliseconds(10000));
    for (;;) {
      grpc::ClientContext ctx;
      {
        std::lock_guard lock(mu_);
        if (closed_) return;
        streams_.push_back(&ctx);
      }
      auto stream = c_->subscriber->StreamingPull(&ctx);
      v1::StreamingPullRequest first;
      first.set_subscription(sub_path_);
      first.set_stream_ack_deadline_seconds(stream_deadline_s_);
      // The same id on every stream of this receiver and after a reconnect:
      // Pub/Sub then keeps its ordering keys on this receiver.
      first.set_client_id(client_id_);
      first.set_max_outstanding_messages(static_cast<std::int64_t>(max_messages_));
      first.set_max_outstanding_bytes(static_cast<std::int64_t>(max_bytes_));
      bool got_any = false;
      if (stream->Write(first)) {
        v1::StreamingPullResponse resp;
        while (wait_for_room() && stream->Read(&resp)) {
          if (!got_any) {
            got_any = true;
            connected_ = true;
            backoff.reset();
          }
          deliver(*resp.mutable_received_messages());
        }
      }
      stream->WritesDone();
      grpc::Status s = stream->Finish();
      {
        std::lock_guard lock(mu_);
        streams_.erase(std::find(streams_.begin(), streams_.end(), &ctx));
        if (closed_) return;
      }
      Error err = to_error(s, "gcppubsub:// StreamingPull from " + sub_path_);
      if (!s.ok() && !err.retryable()) {
        // The subscription was deleted, the credentials revoked: nothing to wait for.
        std::lock_guard lock(mu_);
        fatal_.emplace(err);
        cv_.notify_all();
        return;
      }
      // Pub/Sub ends streams now and then (OK or UNAVAILABLE): open another,
      // after a jittered wait when the stream brought nothing.
      if (!s.ok()) connected_ = false;
      std::unique_lock lock(mu_);
      room_cv_.wait_for(lock, got_any ? milliseconds(0) : backoff.next(), [&] { return closed_; });
    }
  }

  // Flow control: false once closed.
  bool wait_for_room() {
    std::unique_lock lock(mu_);
    room_cv_.wait(lock, [&] { return closed_ || (held_.size() < max_messages_ && held_bytes_ < max_bytes_); });
    return !closed_;
  }

  // pull=unary: Pull RPCs of up to the room left (1,000 at most), one at a
  // time per thread. Without messages the server holds a Pull a while.
  void pull_loop() {
    detail::Backoff backoff(milliseconds(100), milliseconds(10000));
    for (;;) {
      std::size_t room;
      {
        std::unique_lock lock(mu_);
        room_cv_.wait(lock, [&] { return closed_ || (held_.size() < max_messages_ && held_bytes_ < max_bytes_); });
        if (closed_) return;
        room = std::min<std::size_t>(max_messages_ - held_.size(), 1000);
      }
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::max(c_->timeout, milliseconds(30000)));
      {
        std::lock_guard lock(mu_);
        if (closed_) return;
        streams_.push_back(&ctx);
      }
      v1::PullRequest req;
      req.set_subscription(sub_path_);
      req.set_max_messages(static_cast<std::int32_t>(room));
      v1::PullResponse resp;
      grpc::Status s = c_->subscriber->Pull(&ctx, req, &resp);
      bool closing;
      {
        std::lock_guard lock(mu_);
        streams_.erase(std::find(streams_.begin(), streams_.end(), &ctx));
        closing = closed_;
      }
      if (closing) {
        // Taken on the server, never handed out: back at once (best effort).
        std::vector<std::string> ids;
        for (const auto& rm : resp.received_messages()) ids.push_back(rm.ack_id());
        try {
          modify(*c_, ids, 0);
        } catch (const Error&) {
        }
        return;
      }
      if (s.ok() || s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
        connected_ = true;
        backoff.reset();
        deliver(*resp.mutable_received_messages());
        continue;
      }
      Error err = to_error(s, "gcppubsub:// Pull from " + sub_path_);
      if (!err.retryable()) {
        std::lock_guard lock(mu_);
        fatal_.emplace(err);
        cv_.notify_all();
        return;
      }
      connected_ = false;
      std::unique_lock lock(mu_);
      room_cv_.wait_for(lock, backoff.next(), [&] { return closed_; });
    }
  }

  void deliver(google::protobuf::RepeatedPtrField<v1::ReceivedMessage>& received) {
    auto self = weak_from_this().lock();
    if (!self) return;  // being destroyed without close(): nobody receives any more
    const auto now = Clock::now();
    std::vector<MessagePtr> got;
    std::vector<std::pair<std::uint64_t, Held>> held;
    got.reserve(static_cast<std::size_t>(received.size()));
    for (auto& rm : received) {
      v1::PubsubMessage* pm = rm.mutable_message();
      Attributes attrs;
      attrs.reserve(static_cast<std::size_t>(pm->attributes_size()));
      for (const auto& [name, value] : pm->attributes()) attrs.emplace_back(name, value);
      Decoded d = decode(pm->ordering_key(), std::move(attrs));
      OutMessage data;
      const std::size_t bytes = pm->data().size();
      data.payload = make_bytes(std::move(*pm->mutable_data()));
      data.key = std::move(d.key);
      data.headers = std::move(d.headers);
      const auto& t = pm->publish_time();
      data.timestamp_ms = t.seconds() * 1000 + t.nanos() / 1000000;
      if (data.timestamp_ms == 0) data.timestamp_ms = now_ms();
      std::uint32_t attempt = rm.delivery_attempt() > 0 ? static_cast<std::uint32_t>(rm.delivery_attempt()) : 0;
      const std::uint64_t id = next_id_++;
      Held h{std::move(*rm.mutable_ack_id()), pm->message_id(), bytes, now,
             now + std::chrono::seconds(stream_deadline_s_)};
      {
        std::lock_guard lock(mu_);
        // Messages nacked here and acked by another group member are never
        // forgotten one by one: a bound, past which the counts start again.
        if (attempts_.size() >= kMaxCounted) attempts_.clear();
        std::uint32_t& seen = attempts_[h.message_id];
        ++seen;
        if (attempt == 0) attempt = seen;
      }
      held.emplace_back(id, std::move(h));
      got.push_back(std::make_shared<Message>(std::move(data), topic_name_, attempt, self, id));
    }
    std::lock_guard lock(mu_);
    for (auto& [id, h] : held) {
      held_bytes_ += h.bytes;
      held_.emplace(id, std::move(h));
    }
    for (auto& g : got) buffer_.push_back(std::move(g));
    cv_.notify_all();
  }

  // Extends the leases of held messages that near their server deadline, and
  // gives up those older than ack_deadline_ms (they are redelivered).
  void lease_loop() {
    const auto tick = milliseconds(std::clamp<std::int64_t>(ack_deadline_.count() / 4, 20, 1000));
    const auto margin = std::chrono::seconds(stream_deadline_s_) / 2;
    for (;;) {
      std::vector<std::string> extend, expire;
      {
        std::unique_lock lock(mu_);
        room_cv_.wait_for(lock, tick, [&] { return closed_; });
        if (closed_) return;
        const auto now = Clock::now();
        for (auto it = held_.begin(); it != held_.end();) {
          Held& h = it->second;
          if (now - h.received >= ack_deadline_) {
            expire.push_back(std::move(h.ack_id));
            forget(it++);
            continue;
          }
          if (h.lease_until - now < margin) {
            extend.push_back(h.ack_id);
            h.lease_until = now + std::chrono::seconds(stream_deadline_s_);
          }
          ++it;
        }
        if (!expire.empty()) room_cv_.notify_all();
      }
      try {
        modify(*c_, expire, 0);
        modify(*c_, extend, stream_deadline_s_);
      } catch (const Error&) {
        // The server redelivers what it could not be told about: at-least-once holds.
      }
    }
  }

  // Takes a held message out (lock held); its delivery count stays for a redelivery.
  void forget(std::unordered_map<std::uint64_t, Held>::iterator it) {
    held_bytes_ -= it->second.bytes;
    held_.erase(it);
  }

  void settle(const std::vector<std::uint64_t>& ids, bool ack) {
    std::vector<std::string> ack_ids;
    std::shared_ptr<Client> c;  // close() may release c_ meanwhile
    {
      std::lock_guard lock(mu_);
      if (closed_)
        throw Error(ErrorCode::Closed, "gcppubsub:// subscriber of " + url_ +
                                           " is closed; its unacked messages were returned for redelivery");
      for (auto id : ids) {
        auto it = held_.find(id);
        if (it == held_.end()) continue;  // unknown, settled already, or given up at its deadline
        if (ack) attempts_.erase(it->second.message_id);
        ack_ids.push_back(std::move(it->second.ack_id));
        forget(it);
      }
      room_cv_.notify_all();
      c = c_;
    }
    if (ack) acknowledge(*c, ack_ids);
    else modify(*c, ack_ids, 0);
  }

  void acknowledge(const Client& c, const std::vector<std::string>& ack_ids) {
    for (std::size_t i = 0; i < ack_ids.size(); i += kMaxAckIds) {
      v1::AcknowledgeRequest req;
      req.set_subscription(sub_path_);
      for (std::size_t j = i; j < std::min(ack_ids.size(), i + kMaxAckIds); ++j) req.add_ack_ids(ack_ids[j]);
      google::protobuf::Empty out;
      check(c.subscriber->Acknowledge(c.context().get(), req, &out), "gcppubsub:// Acknowledge on " + sub_path_);
    }
  }

  void modify(const Client& c, const std::vector<std::string>& ack_ids, int seconds) {
    for (std::size_t i = 0; i < ack_ids.size(); i += kMaxAckIds) {
      v1::ModifyAckDeadlineRequest req;
      req.set_subscription(sub_path_);
      req.set_ack_deadline_seconds(seconds);
      for (std::size_t j = i; j < std::min(ack_ids.size(), i + kMaxAckIds); ++j) req.add_ack_ids(ack_ids[j]);
      google::protobuf::Empty out;
      check(c.subscriber->ModifyAckDeadline(c.context().get(), req, &out),
            "gcppubsub:// ModifyAckDeadline on " + sub_path_);
    }
  }

  std::shared_ptr<Client> c_;  // reset by close(); settle() copies it under mu_
  const std::string sub_path_;
  const bool own_;  // created for this receiver: deleted on close
  const std::string url_;
  const std::string topic_name_;
  const milliseconds ack_deadline_;
  const int stream_deadline_s_;
  const std::size_t max_messages_;
  const std::size_t max_bytes_;
  const std::size_t streams_n_;
  const bool unary_;  // pull=unary: Pull RPCs instead of StreamingPull
  const std::string client_id_;
  std::vector<std::thread> threads_;
  std::atomic<bool> connected_{true};
  std::atomic<std::uint64_t> next_id_{1};

  std::mutex mu_;  // guards what follows
  std::condition_variable cv_;       // buffer_ got messages, or closed/fatal
  std::condition_variable room_cv_;  // held_ shrank, or closed
  std::deque<MessagePtr> buffer_;
  std::unordered_map<std::uint64_t, Held> held_;  // unsettled, buffered or handed out
  std::size_t held_bytes_ = 0;
  std::unordered_map<std::string, std::uint32_t> attempts_;  // message id -> deliveries seen, until acked
  std::vector<grpc::ClientContext*> streams_;                 // open streams, to cancel on close
  std::optional<Error> fatal_;
  bool closed_ = false;
};

}  // namespace

std::shared_ptr<Receiver> make_pubsub_receiver(std::shared_ptr<Client> c, const OptionValues& o,
                                               const ReceiverSettings&) {
  const std::string group = o.get_string("group");
  const bool create = o.get_bool("create");
  const int deadline_s = PubSubReceiver::stream_deadline_seconds(o.get_int("ack_deadline_ms"));
  const bool ordering = o.get_bool("ordering");
  std::string path;
  bool own = false;
  if (!c->loc.subscription.empty()) {
    if (!group.empty() && group != c->loc.subscription)
      throw Error(ErrorCode::InvalidArgument, "gcppubsub:// " + c->loc.url + " names subscription " +
                                                  c->loc.subscription + " and group=" + group +
                                                  ": give one (a subscription URL's subscription is its group)");
    path = c->loc.subscription_path(c->loc.subscription);
    ensure_subscription(*c, path, deadline_s, ordering, false);
  } else {
    ensure_topic(*c, create);
    if (!group.empty()) {
      // Subscription names are per project, groups per topic (as a Kafka
      // group on two topics is two independent positions): TOPIC-GROUP.
      path = c->loc.subscription_path(c->loc.topic + "-" + group);
      ensure_subscription(*c, path, deadline_s, ordering, create);
    } else {
      path = c->loc.subscription_path("omnibus-" + c->loc.topic.substr(0, 160) + "-" + random_hex(16));
      ensure_subscription(*c, path, deadline_s, ordering, true);
      own = true;
    }
  }
  auto r = std::make_shared<PubSubReceiver>(std::move(c), std::move(path), own, o);
  r->start();
  return r;
}

std::vector<OptionSpec> receiver_option_specs() {
  auto o = common_options();
  o.push_back({"group", OptionType::String, "",
               "the subscription TOPIC-GROUP on the URL's topic, shared by every subscriber of the group (created "
               "when missing, with create=true, and kept); empty: a subscription of this subscriber's own, "
               "deleted when it closes. A subscription URL names its subscription itself"});
  o.push_back({"ack_deadline_ms", OptionType::Int, "60000",
               "an unacked message is redelivered after this long: the lease is extended until then, then "
               "given up (the server's own deadline is this rounded to whole seconds, 10 to 600)",
               {}, 1, 86400000});
  o.push_back({"max_outstanding_messages", OptionType::Int, "1000",
               "flow control: messages received and not yet acked (StreamingPull's limit, also kept here)", {}, 1,
               1000000});
  o.push_back({"max_outstanding_bytes", OptionType::Int, "104857600",
               "flow control: payload bytes received and not yet acked", {}, 1024, INT64_MAX});
  o.push_back({"streams", OptionType::Int, "1",
               "StreamingPull streams of this subscriber (with pull=unary: Pull RPCs in flight at once)", {}, 1, 16});
  o.push_back({"pull", OptionType::Choice, "streaming",
               "streaming: StreamingPull, messages pushed as they come; unary: Pull RPCs of up to 1,000 messages "
               "(fewer messages in flight; faster against the fake, which pushes one message per response)",
               {"streaming", "unary"}});
  o.push_back({"ordering", OptionType::Bool, "true",
               "create subscriptions with message ordering (each ordering key, the message key, in publish "
               "order); an existing subscription keeps its own setting"});
  return o;
}

}  // namespace omnibus::detail::gcp
