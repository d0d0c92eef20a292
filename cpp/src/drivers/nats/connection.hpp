#pragma once
// One NATS connection and what cnats' callbacks tell about it; the JetStream
// context on it and the stream both roles bind to; the four roles the driver
// opens (nats_driver.cpp says how the driver works).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "drivers/nats/common.hpp"

namespace omnibus::detail::nats {

// What cnats' connection callbacks update. Owns no cnats handle.
struct ConnSink {
  std::int64_t wait_min_ms = 100, wait_max_ms = 5000;  // immutable after registration
  std::atomic<std::uint64_t> disconnects{0}, reconnects{0};
  std::mutex mu;
  std::condition_variable cv;  // notified on every state change
  std::string last_error;

  void note(std::string text) {
    {
      std::lock_guard lock(mu);
      if (!text.empty()) last_error = std::move(text);
    }
    cv.notify_all();
  }
  std::string error() {
    std::lock_guard lock(mu);
    return last_error;
  }
};

// A connection to the server pool, connected when constructed: throws
// nats_error's mapping of why it could not connect (with what to check when
// the login or TLS failed), InvalidArgument for an option cnats refuses (a
// file that does not load). cnats reconnects it by itself.
class Connection {
 public:
  // send_asap: every publish is written at once instead of by cnats' flusher
  // thread (one write per message: for connections whose publishes are
  // latency-bound replies, not throughput-bound batches).
  Connection(const Settings& s, const std::string& role, bool send_asap = false);

  ~Connection() { close(); }

  // Flushes what is buffered (bounded), closes and destroys the connection.
  // Idempotent. Callbacks that cnats still runs find no sink.
  void close();

  natsConnection* get() const { return nc_.get(); }
  ConnSink& sink() { return *sink_; }

  // Unsubscribes `sub`, waits (at most `timeout`) for a PING's PONG, then destroys it; no-op on
  // null. Why the round trip: cnats up to 3.5 (Debian 12 ships 3.4.1) looks a message's
  // subscription up and locks it without holding a reference in between, so destroying one while
  // the read loop handles a message for it frees memory the read loop is about to lock (a crash
  // in natsConn_processMsg; nats-io/nats.c #637, fixed by PR #638). The read loop handles messages
  // in order, so once the PONG that follows the UNSUB is in, none is in flight for `sub`.
  // Blocks up to `timeout`; never throws.
  void unsubscribe(NatsPtr<natsSubscription>& sub, std::chrono::milliseconds timeout = std::chrono::milliseconds(1000));
  bool connected() const { return nc_ && natsConnection_Status(nc_.get()) == NATS_CONN_STATUS_CONNECTED; }
  std::int64_t max_payload() const { return nc_ ? natsConnection_GetMaxPayload(nc_.get()) : 0; }

  // "connected", "reconnecting (3 disconnects, last error: ...)", for messages.
  std::string state() const;

  // The server's text of the last permissions violation on this connection that contains
  // `fragment` ("Publish to \"a.b\""; empty: any), or "". The server reports one with an -ERR
  // that cnats keeps as the connection's last error; a publish or subscribe it denies otherwise
  // looks like success (core NATS) or a timeout (JetStream's API). Thread-safe.
  std::string permission_violation(const std::string& fragment = "") const;

  // Throws `e`, or, when the server reported a permissions violation, Unavailable (not
  // retryable) with e's text and the server's.
  [[noreturn]] void rethrow_explained(const Error& e) const;
  const std::string& context() const { return context_; }

 private:
  // Setting an option fails only on what the user gave (a file that does not
  // load, a malformed key): InvalidArgument, with cnats' reason.
  void check(natsStatus st, const std::string& what);

  std::string role_;
  std::string context_;
  std::shared_ptr<ConnSink> sink_;
  void* key_ = nullptr;
  NatsPtr<natsConnection> nc_;
};

// A JetStream context on `conn`, its API requests bounded by
// request_timeout_ms; `extra` carries the publisher's PubAck handler.
NatsPtr<jsCtx> make_js(Connection& conn, const Settings& s, jsOptions* extra = nullptr);
// Binds to stream s.stream, creating it when missing. Returns the stream's
// max_msg_size (0: none). For a publisher, checks that it captures the subject.
std::size_t ensure_stream(jsCtx* js, const Settings& s, const std::string& context, bool publisher);

// The roles (sender.cpp, receiver.cpp): each connects, and binds or
// subscribes, before it returns; throws what Connection, ensure_stream and
// nats_error throw.
std::shared_ptr<Sender> make_core_sender(Settings s);
std::shared_ptr<Sender> make_js_sender(Settings s);
std::shared_ptr<Receiver> make_core_receiver(Settings s);
std::shared_ptr<Receiver> make_js_receiver(Settings s);

}  // namespace omnibus::detail::nats
