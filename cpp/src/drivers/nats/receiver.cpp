// The nats:// subscribers: core NATS (a plain or queue-group subscription,
// no acks; replies to requests go out here) and JetStream (a pull consumer
// fed by pull requests this driver sends itself). nats_driver.cpp says how
// the driver works.

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "drivers/nats/connection.hpp"

namespace omnibus::detail::nats {
namespace {

// ---------------------------------------------------------------- core receiver

class CoreReceiver final : public Receiver, public std::enable_shared_from_this<CoreReceiver> {
 public:
  // A core subscriber publishes nothing but replies to requests, each awaited
  // by its requester: they go out at once (send_asap).
  explicit CoreReceiver(Settings s) : s_(std::move(s)), conn_(s_, "subscriber", /*send_asap=*/true) {
    natsSubscription* raw = nullptr;
    natsStatus st = s_.group.empty()
                        ? natsConnection_SubscribeSync(&raw, conn_.get(), s_.subject.c_str())
                        : natsConnection_QueueSubscribeSync(&raw, conn_.get(), s_.subject.c_str(), s_.group.c_str());
    if (st != NATS_OK) throw nats_error(st, context());
    sub_.reset(raw);
    st = natsSubscription_SetPendingLimits(sub_.get(), static_cast<int>(s_.pending_limit), -1);
    if (st != NATS_OK) throw nats_error(st, context() + ": pending_limit");
    // The SUB is registered at the server once its PONG is back: nothing
    // published after open returns is missed.
    st = natsConnection_FlushTimeout(conn_.get(), s_.connect_timeout.count());
    if (st != NATS_OK) throw nats_error(st, context() + ": the server did not confirm the subscription");
    // A subscription this user may not make is answered with an -ERR before that PONG, and
    // would deliver nothing, ever.
    const std::string denied = conn_.permission_violation("Subscription to \"" + s_.subject + "\"");
    if (!denied.empty())
      throw Error(ErrorCode::Unavailable, context() + ": the server refused: " + denied +
                                              " (this user lacks the permission)", NATS_NOT_PERMITTED, false);
  }
  ~CoreReceiver() override { close(); }

  std::vector<MessagePtr> receive_batch(std::size_t max, std::chrono::milliseconds timeout) override {
    std::vector<MessagePtr> out;
    if (closed_) throw Error(ErrorCode::Closed, "NATS subscriber for " + s_.url + " is closed");
    auto self = shared_from_this();
    while (out.size() < max) {
      natsMsg* raw = nullptr;
      const std::int64_t wait = out.empty() ? std::max<std::int64_t>(timeout.count(), 1) : 0;
      natsStatus st = natsSubscription_NextMsg(&raw, sub_.get(), wait);
      if (st == NATS_TIMEOUT) break;
      if (st == NATS_SLOW_CONSUMER) {
        // cnats dropped messages past pending_limit (at-most-once): go on.
        dropped_reported_ = true;
        continue;
      }
      if (st != NATS_OK) {
        if (closed_) throw Error(ErrorCode::Closed, "NATS subscriber for " + s_.url + " is closed");
        throw nats_error(st, context() + " (connection " + conn_.state() + ")");
      }
      NatsPtr<natsMsg> msg(raw);
      OutMessage data = to_out(msg.get());
      if (data.timestamp_ms == 0) data.timestamp_ms = now_ms();
      const auto id = next_id_++;
      const char* reply = natsMsg_GetReply(msg.get());
      out.push_back(std::make_shared<Message>(std::move(data), natsMsg_GetSubject(msg.get()), 1, self, id,
                                              reply ? std::string(reply) : std::string()));
    }
    return out;
  }

  void reply(const Message& msg, const OutMessage& r) override {
    const std::string what = "NATS reply to " + printable(msg.reply_to()) + " for a request on " +
                             printable(msg.topic()) + " (" + s_.url + ")";
    std::lock_guard lock(reply_mu_);  // close() waits for it: the connection stays valid
    if (closed_) throw Error(ErrorCode::Closed, "NATS subscriber for " + s_.url + " is closed; it cannot reply");
    HeaderFields h = encode_headers(r, s_.send_timestamp);
    const auto max = conn_.max_payload();
    if (max > 0 && r.payload->size() + h.bytes > static_cast<std::size_t>(max))
      throw Error(ErrorCode::ResourceExhausted,
                  what + ": reply of " + std::to_string(r.payload->size() + h.bytes) +
                      " bytes exceeds the server's max_payload of " + std::to_string(max) + " bytes",
                  NATS_MAX_PAYLOAD, false);
    natsStatus st;
    if (h.fields.empty()) {
      st = natsConnection_Publish(conn_.get(), msg.reply_to().c_str(), r.payload->data(),
                                  static_cast<int>(r.payload->size()));
    } else {
      auto m = make_msg(msg.reply_to(), r, h, what);
      st = natsConnection_PublishMsg(conn_.get(), m.get());
    }
    if (st != NATS_OK) throw nats_error(st, what + " (connection " + conn_.state() + ")");
  }

  // Core NATS has no acknowledgement: nothing to tell the server.
  void ack(const std::vector<std::uint64_t>&) override {
    if (closed_) throw Error(ErrorCode::Closed, "NATS subscriber for " + s_.url + " is closed");
  }

  void nack(const std::vector<std::uint64_t>&) override {
    throw Error(ErrorCode::Unsupported,
                "core NATS has no negative acknowledgement and no redelivery (at-most-once): nack cannot redeliver "
                "(capabilities().nack is false); use JetStream (?stream=NAME) for ack/nack");
  }

  std::optional<bool> connected() const override { return conn_.connected(); }
  Capabilities capabilities() const override {
    return nats_capabilities(s_, static_cast<std::size_t>(std::max<std::int64_t>(conn_.max_payload(), 0)));
  }

  void close() override {
    if (closed_.exchange(true)) return;
    std::lock_guard lock(reply_mu_);
    conn_.unsubscribe(sub_);
    conn_.close();
  }

 private:
  std::string context() const {
    return "NATS subscribe to " + printable(s_.subject) + (s_.group.empty() ? "" : " in queue group " + printable(s_.group)) +
           " at " + s_.where + " (" + s_.url + ")";
  }

  const Settings s_;
  Connection conn_;
  NatsPtr<natsSubscription> sub_;
  std::atomic<bool> closed_{false};
  std::uint64_t next_id_ = 1;  // fetch thread only
  bool dropped_reported_ = false;
  std::mutex reply_mu_;  // a reply being sent vs close()
};

// ---------------------------------------------------------------- JetStream receiver

class JsReceiver final : public Receiver, public std::enable_shared_from_this<JsReceiver> {
 public:
  // Pull requests are sent by this driver on a core subscription of its own
  // inbox, not with natsSubscription_Fetch: cnats 3.4.1 (Debian 12) _fetch
  // first takes the messages already queued on the pull subscription, lowers
  // the request's batch by that count, then loops until its count equals the
  // lowered batch; with more than half a batch queued (late deliveries of
  // earlier requests, as after a broker SIGKILL) it writes past its array
  // (heap-buffer-overflow; fixed upstream in nats-io/nats.c PR #749, 3.8.3).
  // Here messages of any request, late or not, land in one queue that is
  // read one message at a time, and each request has its own reply subject
  // <inbox>.<n>, so a late status reply of an old request is told apart from
  // the one of the request being waited for.
  explicit JsReceiver(Settings s) : s_(std::move(s)), conn_(s_, "JetStream subscriber") {
    js_ = make_js(conn_, s_);
    try {
      ensure_stream(js_.get(), s_, "NATS " + conn_.context(), false);
    } catch (const Error& e) {
      conn_.rethrow_explained(e);
    }
    consumer_ = s_.consumer();
    if (consumer_.empty()) {
      ephemeral_ = create_ephemeral();
      consumer_ = ephemeral_;
    } else {
      ensure_durable(consumer_);
    }
    next_subject_ = "$JS.API.CONSUMER.MSG.NEXT." + s_.stream + "." + consumer_;
    natsInbox* inbox = nullptr;
    natsStatus st = natsInbox_Create(&inbox);
    if (st != NATS_OK) throw nats_error(st, context() + ": cannot create an inbox");
    inbox_ = std::string(inbox) + ".";
    natsInbox_Destroy(inbox);
    natsSubscription* raw = nullptr;
    st = natsConnection_SubscribeSync(&raw, conn_.get(), (inbox_ + "*").c_str());
    if (st != NATS_OK) throw nats_error(st, context() + ": cannot subscribe to its inbox");
    sub_.reset(raw);
    // What arrives is bounded by the consumer's max_ack_pending, not here:
    // a message dropped locally would only come back after ack_wait.
    st = natsSubscription_SetPendingLimits(sub_.get(), -1, -1);
    if (st != NATS_OK) throw nats_error(st, context() + ": pending limits");
    st = natsConnection_FlushTimeout(conn_.get(), s_.connect_timeout.count());
    if (st != NATS_OK) throw nats_error(st, context() + ": the server did not confirm the inbox subscription");
  }
  ~JsReceiver() override { close(); }

  // Takes what is queued; then asks, without waiting, for what the consumer
  // has now; only when that gave nothing, waits for one message with a
  // request that expires before `timeout` does.
  std::vector<MessagePtr> receive_batch(std::size_t max, std::chrono::milliseconds timeout) override {
    if (closed_) throw Error(ErrorCode::Closed, "NATS JetStream subscriber for " + s_.url + " is closed");
    const std::size_t batch = std::min<std::size_t>(std::max<std::size_t>(max, 1), 10000);
    const auto deadline = SteadyClock::now() + timeout;
    std::vector<MessagePtr> out;
    take(out, batch, 0, SteadyClock::now());
    if (out.size() < batch && conn_.connected()) {
      const std::uint64_t id = pull(batch - out.size(), std::chrono::milliseconds(0));
      if (id) take(out, batch, id, deadline);
    }
    if (out.empty() && SteadyClock::now() < deadline && conn_.connected()) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now());
      const std::uint64_t id = left.count() > 0 ? pull(1, left) : 0;
      if (id) take(out, 1, id, deadline);
    }
    if (out.empty() && !closed_ && SteadyClock::now() < deadline) {
      // Disconnected, or JetStream not answering (restarting): wait, bounded, and let the caller come back.
      std::unique_lock lock(conn_.sink().mu);
      conn_.sink().cv.wait_until(lock, deadline);
    }
    if (closed_) throw Error(ErrorCode::Closed, "NATS JetStream subscriber for " + s_.url + " is closed");
    return out;
  }

  void ack(const std::vector<std::uint64_t>& ids) override { settle(ids, "+ACK"); }

  void nack(const std::vector<std::uint64_t>& ids) override { settle(ids, "-NAK"); }

  std::optional<bool> connected() const override { return conn_.connected(); }
  Capabilities capabilities() const override {
    return nats_capabilities(s_, static_cast<std::size_t>(std::max<std::int64_t>(conn_.max_payload(), 0)));
  }

  // NAKs every unacked message (so the group gets it again at once), those
  // delivered into the inbox and not yet taken included, then drops the
  // inbox subscription and deletes an ephemeral consumer (a durable stays).
  void close() override {
    std::unordered_map<std::uint64_t, Pending> left;
    {
      std::lock_guard lock(mu_);
      if (closed_) return;
      closed_ = true;
      left.swap(pending_);
    }
    std::vector<std::string> queued;
    for (natsMsg* raw = nullptr; sub_ && natsSubscription_NextMsg(&raw, sub_.get(), 0) == NATS_OK; raw = nullptr) {
      NatsPtr<natsMsg> msg(raw);
      const char* reply = natsMsg_GetReply(msg.get());
      if (!status_of(msg.get()) && reply && *reply) queued.emplace_back(reply);
    }
    // Drop the inbox before the NAKs: while it has interest, a NAKed message
    // could be redelivered into a pull request still open at the server, to
    // nobody, until ack_wait. unsubscribe() also waits for the UNSUB's round trip.
    conn_.unsubscribe(sub_, std::chrono::milliseconds(2000));
    if (conn_.get()) {
      for (auto& [id, p] : left) natsConnection_PublishString(conn_.get(), p.reply.c_str(), "-NAK");
      for (auto& reply : queued) natsConnection_PublishString(conn_.get(), reply.c_str(), "-NAK");
      natsConnection_FlushTimeout(conn_.get(), 2000);
    }
    if (!ephemeral_.empty() && js_ && conn_.connected()) {
      jsOptions jo;
      jsOptions_Init(&jo);
      jo.Wait = std::min<std::int64_t>(s_.request_timeout_ms, 2000);
      js_DeleteConsumer(js_.get(), s_.stream.c_str(), ephemeral_.c_str(), &jo, nullptr);
    }
    js_.reset();
    conn_.close();
  }

 private:
  struct Pending {
    std::string reply;  // the ack subject
    bool last_attempt;  // NumDelivered == max_deliver: a nack terminates
  };

  void configure(jsConsumerConfig& c) const {
    jsConsumerConfig_Init(&c);
    c.AckPolicy = js_AckExplicit;
    c.AckWait = s_.ack_wait_ms * 1000000;
    c.MaxDeliver = s_.max_deliver;
    c.MaxAckPending = s_.max_ack_pending;
    const std::string& d = s_.deliver;
    const bool durable = !s_.consumer().empty();
    if (d == "all" || (d.empty() && durable)) c.DeliverPolicy = js_DeliverAll;
    else if (d == "last") c.DeliverPolicy = js_DeliverLast;
    else c.DeliverPolicy = js_DeliverNew;
  }

  // Creates the durable consumer when missing; updates the settings given
  // explicitly when it exists with others.
  void ensure_durable(const std::string& name) {
    const std::string what = context() + ": durable consumer '" + name + "'";
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = s_.request_timeout_ms;
    for (int attempt = 0; attempt < 2; ++attempt) {
      jsConsumerInfo* raw = nullptr;
      jsErrCode jerr = static_cast<jsErrCode>(0);
      natsStatus st = js_GetConsumerInfo(&raw, js_.get(), s_.stream.c_str(), name.c_str(), &jo, &jerr);
      NatsPtr<jsConsumerInfo> info(raw);
      if (st == NATS_OK && info && info->Config) {
        jsConsumerConfig cfg = *info->Config;  // strings stay owned by `info`
        bool change = false;
        if (s_.ack_wait_given && cfg.AckWait != s_.ack_wait_ms * 1000000) {
          cfg.AckWait = s_.ack_wait_ms * 1000000;
          change = true;
        }
        if (s_.max_deliver_given && cfg.MaxDeliver != s_.max_deliver) {
          cfg.MaxDeliver = s_.max_deliver;
          change = true;
        }
        if (s_.max_ack_pending_given && cfg.MaxAckPending != s_.max_ack_pending) {
          cfg.MaxAckPending = s_.max_ack_pending;
          change = true;
        }
        if (change) {
          jsConsumerInfo* updated = nullptr;
          st = js_UpdateConsumer(&updated, js_.get(), s_.stream.c_str(), &cfg, &jo, &jerr);
          NatsPtr<jsConsumerInfo> keep(updated);
          if (st != NATS_OK) throw nats_error(st, what + ": cannot update it", jerr);
        }
        return;
      }
      if (!(jerr == JSConsumerNotFoundErr || st == NATS_NOT_FOUND)) throw nats_error(st, what, jerr);
      jsConsumerConfig cfg;
      configure(cfg);
      cfg.Durable = name.c_str();
      cfg.FilterSubject = s_.subject.c_str();
      jsConsumerInfo* created = nullptr;
      jerr = static_cast<jsErrCode>(0);
      st = js_AddConsumer(&created, js_.get(), s_.stream.c_str(), &cfg, &jo, &jerr);
      NatsPtr<jsConsumerInfo> keep(created);
      if (st == NATS_OK) return;
      if (jerr != JSConsumerNameExistErr && jerr != JSConsumerExistingActiveErr)
        throw nats_error(st, what + ": cannot create it", jerr);
      // Another member created it meanwhile: look again.
    }
  }

  // Creates the ephemeral pull consumer; its server-chosen name.
  std::string create_ephemeral() {
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = s_.request_timeout_ms;
    jsConsumerConfig cfg;
    configure(cfg);
    cfg.FilterSubject = s_.subject.c_str();
    cfg.InactiveThreshold = s_.inactive_threshold_ms * 1000000;
    jsConsumerInfo* raw = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    natsStatus st = js_AddConsumer(&raw, js_.get(), s_.stream.c_str(), &cfg, &jo, &jerr);
    NatsPtr<jsConsumerInfo> info(raw);
    if (st != NATS_OK) throw nats_error(st, context() + ": cannot create the ephemeral consumer", jerr);
    if (!info || !info->Name) throw Error(ErrorCode::Internal, context() + ": the server named no ephemeral consumer");
    return info->Name;
  }

  // Sends a pull request for `batch` messages: no_wait when `wait` is zero
  // (the server answers at once with what it has, then 404 when short),
  // otherwise one that expires a little before `wait` so that its 408 comes
  // back while we still wait for it. The request's id; 0 when it could not be
  // sent (the caller waits out its slice; the next one tries again).
  std::uint64_t pull(std::size_t batch, std::chrono::milliseconds wait) {
    const std::uint64_t id = ++request_id_;
    std::string body = "{\"batch\":" + std::to_string(batch);
    if (wait.count() > 0) {
      std::int64_t ns = wait.count() * 1000000;
      if (ns >= 20000000) ns -= 10000000;
      body += ",\"expires\":" + std::to_string(ns);
    } else {
      body += ",\"no_wait\":true";
    }
    body += "}";
    const std::string reply = inbox_ + std::to_string(id);
    natsStatus st = natsConnection_PublishRequest(conn_.get(), next_subject_.c_str(), reply.c_str(), body.data(),
                                                  static_cast<int>(body.size()));
    if (st != NATS_OK) {
      conn_.sink().note(nats_error(st, "pull request").what());
      return 0;
    }
    return id;
  }

  // The status code of a status message (no payload, a Status header) sent
  // to our inbox; 0 for a message of the stream.
  int status_of(natsMsg* msg) const {
    if (natsMsg_GetDataLength(msg) > 0) return 0;
    const char* subject = natsMsg_GetSubject(msg);
    if (!subject || std::strncmp(subject, inbox_.data(), inbox_.size()) != 0) return 0;
    const char* status = nullptr;
    if (natsMsgHeader_Get(msg, "Status", &status) != NATS_OK || !status) return 0;
    return std::atoi(status);
  }

  // Appends messages from the inbox until `out` holds `batch`, until the
  // status reply of request `id` ends it (0: take only what is queued), or
  // until `deadline`. Status replies of other requests are late and ignored.
  void take(std::vector<MessagePtr>& out, std::size_t batch, std::uint64_t id, SteadyClock::time_point deadline) {
    std::shared_ptr<JsReceiver> self;
    const std::string end = id ? inbox_ + std::to_string(id) : std::string();
    while (out.size() < batch) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now());
      natsMsg* raw = nullptr;
      natsStatus st = natsSubscription_NextMsg(&raw, sub_.get(), id ? std::max<std::int64_t>(left.count(), 1) : 0);
      if (st == NATS_TIMEOUT) return;
      if (st != NATS_OK) {
        if (closed_) return;
        if (!transient(st)) throw nats_error(st, context() + ": receive failed (connection " + conn_.state() + ")");
        conn_.sink().note(nats_error(st, "receive").what());
        return;
      }
      NatsPtr<natsMsg> msg(raw);
      if (const int code = status_of(msg.get())) {
        if (end.empty() || end != natsMsg_GetSubject(msg.get())) continue;
        // 404 no messages, 408 expired: the request is over. 409 (consumer
        // deleted, leadership change, server shutdown, too many waiting
        // requests) and 503 (JetStream not answering): over too, and noted.
        if (code != 404 && code != 408) {
          const char* desc = nullptr;
          natsMsgHeader_Get(msg.get(), "Description", &desc);
          conn_.sink().note("pull request ended by the server: " + std::to_string(code) + (desc ? std::string(" ") + desc : ""));
        }
        return;
      }
      if (!self) self = shared_from_this();
      OutMessage data = to_out(msg.get());
      std::uint32_t attempt = 1;
      jsMsgMetaData* raw_meta = nullptr;
      if (natsMsg_GetMetaData(&raw_meta, msg.get()) == NATS_OK) {
        NatsPtr<jsMsgMetaData> meta(raw_meta);
        attempt = static_cast<std::uint32_t>(std::max<std::uint64_t>(meta->NumDelivered, 1));
        if (data.timestamp_ms == 0) data.timestamp_ms = meta->Timestamp / 1000000;
      }
      if (data.timestamp_ms == 0) data.timestamp_ms = now_ms();
      const auto mid = next_id_++;
      const char* reply = natsMsg_GetReply(msg.get());
      {
        std::lock_guard lock(mu_);
        pending_.emplace(mid, Pending{reply ? reply : "", s_.max_deliver > 0 && attempt >= s_.max_deliver});
      }
      out.push_back(std::make_shared<Message>(std::move(data), natsMsg_GetSubject(msg.get()), attempt, self, mid));
    }
  }

  // Failures that a reconnect or a JetStream restart cure.
  bool transient(natsStatus st) const {
    switch (st) {
      case NATS_OK:
      case NATS_TIMEOUT:
      case NATS_NOT_FOUND:  // nothing to fetch
      case NATS_NO_RESPONDERS:
      case NATS_CONNECTION_DISCONNECTED:
      case NATS_IO_ERROR:
      case NATS_STALE_CONNECTION:
      case NATS_NOT_YET_CONNECTED:
      case NATS_MISSED_HEARTBEAT:
      // A status from the server ending the pull request (409 Server
      // Shutdown, Leadership Change, ...): the next request goes on.
      case NATS_ERR:
        return true;
      default:
        return natsConnection_Status(conn_.get()) == NATS_CONN_STATUS_RECONNECTING;
    }
  }

  void settle(const std::vector<std::uint64_t>& ids, const char* verb) {
    std::vector<Pending> todo;
    todo.reserve(ids.size());
    {
      std::lock_guard lock(mu_);
      if (closed_) throw Error(ErrorCode::Closed, "NATS JetStream subscriber for " + s_.url + " is closed");
      for (auto id : ids) {
        auto it = pending_.find(id);
        if (it == pending_.end()) continue;
        todo.push_back(std::move(it->second));
        pending_.erase(it);
      }
    }
    const bool nak = verb[0] == '-';
    for (const auto& p : todo) {
      if (p.reply.empty()) continue;
      const char* v = nak && p.last_attempt ? "+TERM" : verb;
      natsStatus st = natsConnection_PublishString(conn_.get(), p.reply.c_str(), v);
      // A full reconnect buffer, or the connection dropping under the write
      // (broker killed), loses the ack: the message comes back after
      // ack_wait, as at-least-once allows. Throwing would fail an auto-acking
      // receive over a redelivery the broker takes care of.
      if (st != NATS_OK && st != NATS_INSUFFICIENT_BUFFER && !transient(st))
        throw nats_error(st, context() + ": cannot send " + v + " (connection " + conn_.state() + ")");
      if (st != NATS_OK) conn_.sink().note(nats_error(st, std::string("lost ") + v).what());
    }
  }

  std::string context() const {
    const std::string consumer = s_.consumer();
    return "NATS JetStream subscribe to " + printable(s_.subject) + " (stream '" + s_.stream + "', " +
           (consumer.empty() ? std::string("ephemeral consumer") : "durable consumer '" + consumer + "'") + ") at " +
           s_.where + " (" + s_.url + ")";
  }

  const Settings s_;
  Connection conn_;
  NatsPtr<jsCtx> js_;
  NatsPtr<natsSubscription> sub_;  // the inbox, <inbox_>*
  std::string consumer_;           // the consumer pulled from
  std::string ephemeral_;          // the ephemeral consumer's name, deleted on close
  std::string inbox_;              // "_INBOX.<nuid>."; request n replies to inbox_ + n
  std::string next_subject_;       // $JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>
  std::mutex mu_;
  std::unordered_map<std::uint64_t, Pending> pending_;
  std::atomic<bool> closed_{false};
  std::uint64_t next_id_ = 1;     // fetch thread only
  std::uint64_t request_id_ = 0;  // fetch thread only
};

}  // namespace

std::shared_ptr<Receiver> make_core_receiver(Settings s) { return std::make_shared<CoreReceiver>(std::move(s)); }
std::shared_ptr<Receiver> make_js_receiver(Settings s) { return std::make_shared<JsReceiver>(std::move(s)); }

}  // namespace omnibus::detail::nats
