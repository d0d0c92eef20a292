#pragma once
// One MQTT client connection and its session (3.1.1 or 5.0) over TCP on
// Boost.Asio, written from the specifications: CONNECT/CONNACK, keepalive
// PINGREQ with a dead-connection timeout, packet identifiers, the QoS 1 and
// QoS 2 exchanges on both sides, an in-flight window (MQTT 5 Receive Maximum
// honoured both ways), batched writes and reconnection with the engine's
// backoff (core/backoff.hpp).
//
// Threads: one io_context thread per Session runs all protocol work; every
// public method may be called from any thread and only posts work to it.
// Callbacks (on_message, publish/subscribe completions, on_state) run on that
// thread: they must not block, must not throw, and must not call close().
//
// Writes: publish() appends to a queue; the io thread encodes everything
// queued into one buffer and writes it with one write, so a burst of
// publishes costs one system call, not one each. Reads parse every packet
// that arrived in one read.
//
// Reconnect: when the connection breaks (read or write error, keepalive
// timeout, the broker's DISCONNECT), the session connects again after
// backoff_delay() with clean start off, so the broker keeps the session; then
// it resends, in their original order, every QoS 1/2 PUBLISH not yet
// acknowledged (with DUP set) and every PUBREL not yet completed, as MQTT
// requires (5.0 §4.4, 3.1.1 §4.4). When the broker did not keep the session
// (CONNACK session present 0) the subscriptions are made again and the
// unacknowledged PUBLISHes are sent again as they are (the broker has no
// state left to duplicate them against).
//
// Inbound QoS > 0 (auto_ack false): the message is handed over with a token;
// the acknowledgement leaves only when ack(token) is called: PUBACK for QoS 1,
// and for QoS 2 PUBREC (then PUBCOMP when the broker's PUBREL arrives). The
// broker holds every unacknowledged message for the session, and sends it
// again after a reconnect, to this process or, after it died, to the next one
// with the same client id and a kept session: at-least-once. Acks may come in
// any order; each is sent when it is given (MQTT lets a receiver acknowledge
// in any order; Mosquitto and the spec only order the *sender's* resends).
// With auto_ack true the acknowledgement leaves as soon as on_message returns.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "drivers/mqtt/packets.hpp"

namespace omnibus::detail::mqtt {

struct SessionOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 1883;
  // When not empty, replaces host and port: brokers tried in order, one per
  // connection attempt, starting over after the last.
  std::vector<std::pair<std::string, std::uint16_t>> failover;
  Version version = Version::V5;
  std::string client_id;           // empty: the broker assigns one (MQTT 5) or 3.1.1 needs clean start
  bool clean_start = true;         // for the first connection only; reconnects keep the session
  std::uint32_t session_expiry_s = 0;  // MQTT 5 Session Expiry Interval
  std::uint16_t keep_alive_s = 30;     // 0: no keepalive
  std::optional<std::string> username;
  std::optional<std::string> password;
  std::optional<Will> will;
  // Inbound window: at most this many unacknowledged QoS > 0 messages from the
  // broker (MQTT 5 Receive Maximum; 3.1.1 brokers have their own setting).
  std::uint16_t receive_maximum = 1000;
  // Outbound window: at most this many of our QoS > 0 PUBLISHes unacknowledged
  // (lowered further to the broker's Receive Maximum).
  std::uint16_t max_inflight = 1000;
  std::uint32_t max_packet_size = kMaxVarInt;  // what we accept
  bool auto_ack = true;
  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds reconnect_min{100};
  std::chrono::milliseconds reconnect_max{10'000};
  std::function<void(std::string_view)> log;  // diagnostics, may be empty
};

// A message from the broker. `token` identifies it to Session::ack (0 for
// QoS 0 and with auto_ack).
struct Inbound {
  Publish publish;
  std::uint64_t token = 0;
};

class Session {
 public:
  using OnMessage = std::function<void(Inbound&&)>;
  // Called with true on each CONNACK accepted, false when a connection is
  // lost (with why).
  using OnState = std::function<void(bool connected, const std::string& why)>;
  // nullptr: done (QoS 0 written, QoS 1 PUBACK, QoS 2 PUBCOMP); else why not.
  using Done = std::function<void(const Error* error)>;
  using SubDone = std::function<void(const Error* error, const std::vector<std::uint8_t>& reason_codes)>;

  // Starts the io thread and the first connection attempt. Does not block.
  // Throws Error(InvalidArgument) when the CONNECT cannot be encoded (a client
  // id, user name or will MQTT cannot carry).
  Session(SessionOptions options, OnMessage on_message, OnState on_state = {});
  // close() with a zero drain time.
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Blocks until the first CONNACK or `timeout`. Throws Error(Unavailable)
  // with the broker's reason (its CONNACK code as native_code) when it
  // refused the connection, or when no connection
  // could be made (the last error), Error(Timeout) when time ran out.
  // Thread-safe.
  void wait_connected(std::chrono::milliseconds timeout);

  // Queues a PUBLISH. `done` (may be empty) runs on the io thread. Throws
  // Error(InvalidArgument) for what cannot be encoded, at once; Error(Closed)
  // after close(). Never blocks: the window is applied on the io thread.
  void publish(std::string topic, std::string payload, std::uint8_t qos, bool retain, Properties properties,
               Done done);

  // SUBSCRIBE; remembered and made again when a reconnect finds no session.
  void subscribe(std::vector<Subscription> subscriptions, Properties properties, SubDone done);
  void unsubscribe(std::vector<std::string> filters, SubDone done);

  // Acknowledges the inbound message with `token` (see the file comment).
  // A token of a session the broker did not keep is ignored. Thread-safe.
  void ack(std::uint64_t token);

  // The properties of the last CONNACK accepted (Maximum QoS, Retain
  // Available, Maximum Packet Size...); empty before it and for 3.1.1.
  // Thread-safe.
  Properties connack_properties() const;

  // QoS > 0 PUBLISHes queued or unacknowledged. Thread-safe.
  std::size_t unacknowledged() const;
  bool connected() const;

  // Waits up to `drain` for unacknowledged PUBLISHes, sends DISCONNECT, closes
  // the socket and joins the io thread. What is still unacknowledged completes
  // with Error(Closed). Every ack() that returned before close() was called
  // is written ahead of DISCONNECT, and the connection is not reset under the
  // broker while it reads them: after DISCONNECT nothing more is sent, and the
  // socket is closed once the broker closes its end (or after 1 s, for a
  // broker that stopped reading). A QoS 2 exchange the broker continues
  // (its PUBREL) is finished on the session's next connection. Idempotent;
  // must not be called from a callback.
  void close(std::chrono::milliseconds drain);

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace omnibus::detail::mqtt
