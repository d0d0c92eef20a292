// The nats:// publishers: core NATS (a PING per batch confirms it; requests
// go out here too) and JetStream (a PubAck per message). nats_driver.cpp says
// how the driver works.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <random>
#include <unordered_map>

#include "drivers/nats/connection.hpp"
#include "drivers/nats/request.hpp"

namespace omnibus::detail::nats {
namespace {

using namespace std::chrono_literals;

// ---------------------------------------------------------------- core sender

class CoreSender final : public Sender {
 public:
  explicit CoreSender(Settings s) : s_(std::move(s)), conn_(s_, "publisher") {
    max_payload_ = static_cast<std::size_t>(std::max<std::int64_t>(conn_.max_payload(), 0));
  }
  ~CoreSender() override { close(); }

  void send_batch(const std::vector<OutMessage>& batch, const SendResultFn& on_result) override {
    std::vector<std::size_t> written;
    written.reserve(batch.size());
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const OutMessage& m = batch[i];
      if (closed_) {
        Error err(ErrorCode::Closed, "NATS publisher for " + s_.url + " is closed");
        on_result(i, &err);
        continue;
      }
      natsStatus st;
      HeaderFields h = encode_headers(m, s_.send_timestamp);
      if (auto err = too_big(m, h)) {
        on_result(i, &*err);
        continue;
      }
      if (h.fields.empty()) {
        st = natsConnection_Publish(conn_.get(), s_.subject.c_str(), m.payload->data(), static_cast<int>(m.payload->size()));
      } else {
        try {
          auto msg = make_msg(s_.subject, m, h, context());
          st = natsConnection_PublishMsg(conn_.get(), msg.get());
        } catch (const Error& e) {
          on_result(i, &e);
          continue;
        }
      }
      if (st != NATS_OK) {
        Error err = publish_error(st);
        on_result(i, &err);
        continue;
      }
      written.push_back(i);
    }
    if (written.empty()) return;
    if (!s_.flush) {
      for (auto i : written) on_result(i, nullptr);
      return;
    }
    // One PING per batch: its PONG says the server has read every message before it.
    natsStatus st = confirm();
    // The server answers a publish this user may not make with an -ERR before the PONG, and
    // drops the message: fail it rather than report a delivery that did not happen.
    const std::string denied = st == NATS_OK ? conn_.permission_violation("Publish to \"" + s_.subject + "\"") : "";
    if (!denied.empty()) {
      Error err(ErrorCode::Unavailable, context() + ": the server refused: " + denied +
                                            " (this user lacks the permission; the message was dropped)",
                NATS_NOT_PERMITTED, false);
      for (auto i : written) on_result(i, &err);
    } else if (st == NATS_OK) {
      for (auto i : written) on_result(i, nullptr);
    } else {
      Error base = nats_error(st, context());
      Error err(base.code(),
                std::string(base.what()) + "; the server did not confirm this message within ack_timeout_ms=" +
                    std::to_string(s_.ack_timeout_ms) + " (it may or may not have been delivered; connection " +
                    conn_.state() + ")",
                base.native_code(), base.retryable());
      for (auto i : written) on_result(i, &err);
    }
  }

  std::optional<bool> connected() const override { return conn_.connected(); }
  Capabilities capabilities() const override { return nats_capabilities(s_, max_payload_ - overhead()); }

  std::unique_ptr<PendingReply> request(const OutMessage& m, bool more) override {
    const std::string what = "NATS request to " + printable(s_.subject) + " at " + s_.where + " (" + s_.url + ")";
    if (closed_) throw Error(ErrorCode::Closed, "NATS publisher for " + s_.url + " is closed");
    HeaderFields h = encode_headers(m, s_.send_timestamp);
    if (auto err = too_big(m, h)) throw *err;
    auto mux = reply_mux();
    std::uint64_t token;
    {
      std::lock_guard lock(mux->mu);
      token = mux->next_token++;
      mux->slots.emplace(token, ReplyMux::Slot{});
    }
    // Registered before the publish, so that no reply can come first; the
    // handle unregisters it whatever happens below.
    auto pending = std::make_unique<NatsPendingReply>(mux, token, what);
    const std::string reply = mux->prefix + std::to_string(token);
    auto msg = make_msg(s_.subject, m, h, what, reply.c_str());
    // A request with more to follow goes on the buffered connection, whose
    // flusher writes the whole batch at once; the last (or only) one goes out
    // at once on the send_asap connection, and with it no request waits long.
    natsStatus st = natsConnection_PublishMsg(more ? conn_.get() : rpc_conn(), msg.get());
    if (st != NATS_OK) throw publish_error(st);
    return pending;
  }

  void close() override {
    if (closed_.exchange(true)) return;
    {
      std::lock_guard lock(mux_mu_);
      if (mux_) {
        std::lock_guard mux_lock(mux_->mu);
        mux_->closed = true;  // waiting requests fail with Closed
        mux_->cv.notify_all();
        for (auto& [_, slot] : mux_->slots)
          if (auto ready = std::move(slot.ready)) ready();
      }
      if (rpc_) rpc_->unsubscribe(reply_sub_);  // the inbox is on the request connection
      reply_sub_.reset();
      if (mux_key_) ReplyMuxes::instance().remove(mux_key_);
      if (rpc_) rpc_->close();
    }
    conn_.close();  // flushes what is buffered first
  }

 private:
  // Waits for the PONG of a PING sent now, for at most ack_timeout_ms, riding
  // out a reconnect (cnats sends the PING with the buffered messages after it).
  natsStatus confirm() {
    const auto deadline = SteadyClock::now() + std::chrono::milliseconds(s_.ack_timeout_ms);
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now()).count();
      if (left <= 0) return NATS_TIMEOUT;
      natsStatus st = natsConnection_FlushTimeout(conn_.get(), left);
      if (st == NATS_OK || st == NATS_TIMEOUT || closed_) return st;
      if (natsConnection_Status(conn_.get()) == NATS_CONN_STATUS_CLOSED) return st;
      // Disconnected: wait for the reconnect (or the deadline), then PING again.
      std::unique_lock lock(conn_.sink().mu);
      conn_.sink().cv.wait_until(lock, std::min(deadline, SteadyClock::now() + 100ms));
    }
  }

  std::size_t overhead() const {
    return s_.send_timestamp ? kHeaderLineBytes + 2 + kTimestampHeader.size() + 2 + 13 + 2 : 0;
  }

  std::optional<Error> too_big(const OutMessage& m, const HeaderFields& h) const {
    const std::size_t total = m.payload->size() + h.bytes;
    if (max_payload_ && total > max_payload_)
      return Error(ErrorCode::ResourceExhausted,
                   "message of " + std::to_string(m.payload->size()) + " payload bytes" +
                       (h.bytes ? " + " + std::to_string(h.bytes) + " header bytes" : std::string()) +
                       " exceeds the server's max_payload of " + std::to_string(max_payload_) + " bytes (" + context() +
                       ")",
                   NATS_MAX_PAYLOAD, false);
    return std::nullopt;
  }

  Error publish_error(natsStatus st) const {
    Error e = nats_error(st, context() + " (connection " + conn_.state() + ")");
    if (st == NATS_INSUFFICIENT_BUFFER)
      return Error(ErrorCode::Unavailable,
                   std::string(e.what()) + ": disconnected and the reconnect buffer (reconnect_buffer_bytes) is full",
                   st, true);
    return e;
  }

  std::string context() const { return "NATS publish to " + printable(s_.subject) + " at " + s_.where + " (" + s_.url + ")"; }

  // The reply inbox and its subscription, made on the first request. The SUB
  // goes out before that request's PUB on the same connection, so the server
  // knows it before any reply can be routed.
  std::shared_ptr<ReplyMux> reply_mux() {
    std::lock_guard lock(mux_mu_);
    if (mux_) return mux_;
    natsInbox* raw_inbox = nullptr;
    natsStatus st = natsInbox_Create(&raw_inbox);
    if (st != NATS_OK) throw nats_error(st, context() + ": reply inbox");
    auto mux = std::make_shared<ReplyMux>();
    mux->prefix = std::string(raw_inbox) + ".";
    natsInbox_Destroy(raw_inbox);
    void* key = ReplyMuxes::instance().add(mux);
    // Requests and their replies get a connection of their own that writes
    // each request at once (send_asap): on the publishing connection cnats'
    // flusher thread sleeps 1 ms before each write, which was most of a
    // loopback round trip; publish batches keep that connection's buffering.
    try {
      rpc_ = std::make_unique<Connection>(s_, "requester", /*send_asap=*/true);
    } catch (...) {
      ReplyMuxes::instance().remove(key);
      throw;
    }
    natsSubscription* raw = nullptr;
    st = natsConnection_Subscribe(&raw, rpc_->get(), (mux->prefix + "*").c_str(), on_reply, key);
    if (st != NATS_OK) {
      ReplyMuxes::instance().remove(key);
      const std::string state = rpc_->state();
      rpc_->close();
      rpc_.reset();
      throw nats_error(st, context() + ": cannot subscribe to the reply inbox (connection " + state + ")");
    }
    reply_sub_.reset(raw);
    natsSubscription_SetPendingLimits(reply_sub_.get(), -1, -1);  // replies are few and each is awaited
    mux_key_ = key;
    mux_ = std::move(mux);
    return mux_;
  }

  const Settings s_;
  Connection conn_;
  std::size_t max_payload_ = 0;
  std::atomic<bool> closed_{false};
  std::mutex mux_mu_;  // guards the three below
  std::shared_ptr<ReplyMux> mux_;
  NatsPtr<natsSubscription> reply_sub_;
  void* mux_key_ = nullptr;
  std::unique_ptr<Connection> rpc_;  // requests and replies (send_asap), opened by the first request

  // The connection requests go out on; reply_mux() opened it.
  natsConnection* rpc_conn() {
    std::lock_guard lock(mux_mu_);
    return rpc_->get();
  }
};

// ---------------------------------------------------------------- JetStream sender

// In-flight JetStream publishes, completed by cnats' PubAck handler. Owns no
// cnats handle.
struct PubSink {
  struct Slot {
    std::shared_ptr<SendResultFn> fn;
    std::size_t index;
  };
  std::mutex mu;
  std::condition_variable space;
  std::unordered_map<natsMsg*, Slot> inflight;
  bool closed = false;
  std::string context;

  void complete(natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae) {
    Slot slot;
    {
      std::lock_guard lock(mu);
      auto it = inflight.find(msg);
      if (it == inflight.end()) return;
      slot = std::move(it->second);
      inflight.erase(it);
    }
    space.notify_one();
    if (pa || !pae) {
      (*slot.fn)(slot.index, nullptr);
      return;
    }
    Error base = nats_error(pae->Err, context, pae->ErrCode);
    std::string text = base.what();
    if (pae->ErrText && *pae->ErrText) text += " [" + std::string(pae->ErrText) + "]";
    if (pae->Err == NATS_TIMEOUT) text += "; no PubAck within ack_timeout_ms (the message may or may not be stored)";
    Error err(base.code(), text, base.native_code(), base.retryable());
    (*slot.fn)(slot.index, &err);
  }
};

using PubSinks = Registry<PubSink>;

void on_pub_ack(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure) {
  if (auto sink = PubSinks::instance().find(closure)) sink->complete(msg, pa, pae);
  natsMsg_Destroy(msg);  // ours again, as cnats documents
}

std::string random_id() {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard lock(mu);
  static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
  std::string id;
  for (int i = 0; i < 16; ++i) id += digits[rng() % 36];
  return id;
}

class JsSender final : public Sender {
 public:
  explicit JsSender(Settings s) : s_(std::move(s)), conn_(s_, "JetStream publisher") {
    sink_ = std::make_shared<PubSink>();
    sink_->context = context();
    key_ = PubSinks::instance().add(sink_);
    try {
      jsOptions jo;
      jsOptions_Init(&jo);
      jo.PublishAsync.AckHandler = on_pub_ack;
      jo.PublishAsync.AckHandlerClosure = key_;
      js_ = make_js(conn_, s_, &jo);
      try {
        stream_max_ = ensure_stream(js_.get(), s_, "NATS " + conn_.context(), true);
      } catch (const Error& e) {
        conn_.rethrow_explained(e);
      }
    } catch (...) {
      PubSinks::instance().remove(key_);
      throw;
    }
    max_payload_ = static_cast<std::size_t>(std::max<std::int64_t>(conn_.max_payload(), 0));
    if (stream_max_ && (max_payload_ == 0 || stream_max_ < max_payload_)) max_payload_ = stream_max_;
    if (s_.msg_id) id_prefix_ = random_id() + "-";
  }
  ~JsSender() override { close(); }

  void send_batch(const std::vector<OutMessage>& batch, const SendResultFn& on_result) override {
    auto fn = std::make_shared<SendResultFn>(on_result);
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const OutMessage& m = batch[i];
      HeaderFields h = encode_headers(m, s_.send_timestamp);
      std::string msg_id;
      if (s_.msg_id) {
        msg_id = id_prefix_ + std::to_string(++seq_);
        if (h.bytes == 0) h.bytes = kHeaderLineBytes + 2;
        h.bytes += 11 + 2 + msg_id.size() + 2;  // Nats-Msg-Id: ...
      }
      if (auto err = too_big(m, h)) {
        on_result(i, &*err);
        continue;
      }
      NatsPtr<natsMsg> msg;
      try {
        msg = make_msg(s_.subject, m, h, context());
      } catch (const Error& e) {
        on_result(i, &e);
        continue;
      }
      natsMsg* key = msg.get();
      {
        std::unique_lock lock(sink_->mu);
        // Bounded in flight: cnats times each one out after ack_timeout_ms, so this wait ends.
        sink_->space.wait(lock, [&] { return sink_->closed || sink_->inflight.size() < s_.max_inflight; });
        if (sink_->closed) {
          lock.unlock();
          Error err(ErrorCode::Closed, "NATS JetStream publisher for " + s_.url + " is closed");
          for (std::size_t j = i; j < batch.size(); ++j) on_result(j, &err);
          return;
        }
        sink_->inflight.emplace(key, PubSink::Slot{fn, i});
      }
      jsPubOptions po;
      jsPubOptions_Init(&po);
      po.MaxWait = s_.ack_timeout_ms;
      if (!msg_id.empty()) po.MsgId = msg_id.c_str();
      natsMsg* raw = msg.release();
      natsStatus st = js_PublishMsgAsync(js_.get(), &raw, &po);
      if (st != NATS_OK) {
        bool ours;
        {
          std::lock_guard lock(sink_->mu);
          ours = sink_->inflight.erase(key) > 0;
        }
        sink_->space.notify_one();
        if (raw) natsMsg_Destroy(raw);  // still ours: cnats did not take it
        if (ours) {
          Error err = nats_error(st, context() + " (connection " + conn_.state() + ")");
          on_result(i, &err);
        }
      }
    }
  }

  std::optional<bool> connected() const override { return conn_.connected(); }
  Capabilities capabilities() const override {
    std::size_t overhead = 0;
    if (s_.send_timestamp || s_.msg_id) overhead += kHeaderLineBytes + 2;
    if (s_.send_timestamp) overhead += kTimestampHeader.size() + 2 + 13 + 2;
    if (s_.msg_id) overhead += 11 + 2 + id_prefix_.size() + 20 + 2;
    return nats_capabilities(s_, max_payload_ > overhead ? max_payload_ - overhead : 1);
  }

  void close() override {
    std::vector<PubSink::Slot> dropped;
    {
      std::lock_guard lock(sink_->mu);
      if (sink_->closed) return;
      sink_->closed = true;
      for (auto& [msg, slot] : sink_->inflight) dropped.push_back(std::move(slot));
      sink_->inflight.clear();
    }
    sink_->space.notify_all();
    if (!dropped.empty()) {
      Error err(ErrorCode::Closed, "NATS JetStream publisher for " + s_.url +
                                       " was closed before the stream acknowledged this message (it may or may not "
                                       "be stored)");
      for (auto& slot : dropped) (*slot.fn)(slot.index, &err);
    }
    js_.reset();  // destroys the messages cnats still had pending
    conn_.close();
    PubSinks::instance().remove(key_);
  }

 private:
  std::optional<Error> too_big(const OutMessage& m, const HeaderFields& h) const {
    const std::size_t total = m.payload->size() + h.bytes;
    if (max_payload_ && total > max_payload_)
      return Error(ErrorCode::ResourceExhausted,
                   "message of " + std::to_string(m.payload->size()) + " payload bytes" +
                       (h.bytes ? " + " + std::to_string(h.bytes) + " header bytes" : std::string()) + " exceeds " +
                       (stream_max_ && stream_max_ == max_payload_ ? "the stream's max_msg_size"
                                                                    : "the server's max_payload") +
                       " of " + std::to_string(max_payload_) + " bytes (" + context() + ")",
                   NATS_MAX_PAYLOAD, false);
    return std::nullopt;
  }

  std::string context() const {
    return "NATS JetStream publish to " + printable(s_.subject) + " (stream '" + s_.stream + "') at " + s_.where + " (" +
           s_.url + ")";
  }

  const Settings s_;
  Connection conn_;
  std::shared_ptr<PubSink> sink_;
  void* key_ = nullptr;
  NatsPtr<jsCtx> js_;
  std::size_t stream_max_ = 0;
  std::size_t max_payload_ = 0;
  std::string id_prefix_;
  std::uint64_t seq_ = 0;
};

}  // namespace

std::shared_ptr<Sender> make_core_sender(Settings s) { return std::make_shared<CoreSender>(std::move(s)); }
std::shared_ptr<Sender> make_js_sender(Settings s) { return std::make_shared<JsSender>(std::move(s)); }

}  // namespace omnibus::detail::nats
