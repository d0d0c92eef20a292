// mqtt:// -- MQTT 3.1.1 and 5 through paho-mqtt-cpp (mqtt::async_client over
// the Paho C MQTTAsync library).
//
// URL: mqtt://[user:password@]host[:port][,host[:port]...]/topic/levels?options.
// The port defaults to 1883; several hosts are a failover list tried in order.
// A publisher's path is a topic name; a subscriber's is a topic filter (with
// '+' and '#'), and a shared subscription is either ?group=G or a path given as
// $share/G/filter (MQTT 5). Each publisher and each subscriber is one MQTT
// connection with its own client id (generated unless ?client_id= is given;
// MQTT allows one connection per id: a second one takes the session over).
//
// Threads: Paho C runs two threads for the whole process (one sends queued
// commands, one reads sockets and runs every callback, holding Paho's global
// lock). This driver adds one per publisher, its watchdog (below). Callbacks
// only take this driver's own short locks, and this driver never calls Paho
// while holding one of those, so the lock order is always Paho -> driver
// (a publisher's link_mu_, which serializes client replacement with
// publishing, is taken before Paho's).
//
// Publishing: send_batch hands each message to Paho at once and returns; each
// message's result comes from its own delivery token: PUBACK for QoS 1,
// PUBCOMP for QoS 2, written to the socket for QoS 0. At most max_inflight
// messages are outstanding per publisher: Paho scans its command queue on every
// publish, so a short queue is also the fast one.
// Reconnecting: a publisher's Paho client does not reconnect by itself. Its
// watchdog thread replaces the client after a connection loss (first after
// 1 s, then the engine's backoff up to 30 s) and hands the new one every
// unacknowledged QoS 1/2 message again, oldest first, whether the session is
// persistent or clean: a message in flight when the connection dropped is
// neither lost nor failed, and may arrive twice (at-least-once). Messages
// published meanwhile wait in the window; a batch that finds the window full
// and the connection down for connect_timeout_ms fails its remaining messages
// with Unavailable. Why not Paho's own reconnect and retransmission: see the
// comment above MqttSender. Subscribers keep Paho's automatic reconnect.
//
// Keys and headers travel as MQTT 5 user properties, in order, repeats kept:
// the key as "omnibus-key" (or "omnibus-key-b64"), with send_timestamp=true
// the publish time as "omnibus-ts", each header as itself when MQTT can carry
// it, else as "omnibus-b64"; the rules, and why: envelope.hpp. Other MQTT 5
// clients see ordinary user properties; what they publish arrives as headers.
// MQTT 3.1.1 has no properties: a message with a key or
// headers fails (InvalidArgument) unless drop_headers=true. Without
// "omnibus-ts" a subscriber stamps a message with its arrival time (the
// timestamp is off by default: one more property per message costs Paho a
// noticeable share of its throughput).
//
// Receiving and acks: Paho C sends the PUBACK (PUBREC/PUBCOMP for QoS 2) for a
// message as it reads it from the socket, before any callback, and has no API
// to delay it (paho-mqtt-cpp 1.2, Paho C 1.3). So ack() cannot reach the
// broker: it is accepted and does nothing. A message is settled with the
// broker once it is in this process; one that was buffered but not processed
// when the subscriber closed or crashed is not delivered again. Receivers
// therefore report delivery_guarantee "at-most-once", nack false and
// requeue_on_close false, whatever the QoS. The broker-to-client hop itself is
// at-least-once for QoS >= 1: a message whose PUBACK was lost with the
// connection comes again (DUP set: delivery_attempt 2), and a persistent
// session (clean_session=false) keeps messages published while the subscriber
// was away. Subscriptions are restored after every automatic reconnect.
//
// Errors: Paho return codes and MQTT reason codes map onto ErrorCode, the
// native code kept (negative: Paho C MQTTASYNC_* codes; positive: MQTT CONNACK
// or reason codes). Connecting resolves the host name first with a bounded
// lookup, so that an unknown or unresolvable host is Unavailable within
// connect_timeout_ms (Paho would resolve in its send thread, holding its
// global lock, for as long as the resolver takes).
//
// Known Paho C limitation: a connection opened while others of this process
// are idle may take about a second to complete, because Paho's socket thread
// only looks at new sockets when its 1 s poll of the existing ones returns.

#include "drivers/mqtt/mqtt_driver.hpp"

#include "core/backoff.hpp"
#include "core/tls.hpp"
#include "core/tls_probe.hpp"
#include "drivers/mqtt/envelope.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string_view>
#include <thread>

#include <mqtt/async_client.h>

#include "omnibus/driver.hpp"
#include "omnibus/error.hpp"

namespace omnibus {
namespace {

using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

// MQTT's largest Remaining Length (a 4-byte variable byte integer), the same in 3.1.1 and 5.
constexpr std::size_t kMaxRemainingLength = 268435455;
using detail::mqtt::kTimestampProperty;
using detail::mqtt::utf8_problem;

// Paho's automatic reconnect backoff, whole seconds (Paho's unit), doubling.
constexpr int kReconnectMinSeconds = 1;
constexpr int kReconnectMaxSeconds = 30;

// ---------------------------------------------------------------- sizes

// Bytes one user property adds to a PUBLISH: identifier, two length-prefixed strings.
std::size_t user_property_bytes(std::size_t name, std::size_t value) { return 1 + 2 + name + 2 + value; }

std::size_t varint_bytes(std::size_t v) { return v < 128 ? 1 : v < 16384 ? 2 : v < 2097152 ? 3 : 4; }

// ---------------------------------------------------------------- errors

// Paho C's MQTTASYNC_* return codes, and MQTT CONNACK/reason codes, onto the
// shared taxonomy. `native` is kept in the Error: negative for Paho codes,
// positive for MQTT codes.
// `detail`: what else is known (the TLS handshake's reason), after the code's meaning.
Error mqtt_error(int native, const std::string& context, const std::string& detail = "") {
  ErrorCode code = ErrorCode::Unavailable;
  bool retryable = true;
  std::string what;
  if (native < 0) {
    const char* s = MQTTAsync_strerror(native);
    what = s ? s : "Paho C error";
    switch (native) {
      case MQTTASYNC_FAILURE:
        what = "connection failed (refused, unreachable or dropped)";
        break;
      case MQTTASYNC_DISCONNECTED:
        what = "not connected to the broker";
        break;
      case MQTTASYNC_OPERATION_INCOMPLETE:
        what = "the connection was lost or closed before the broker acknowledged (the message may or may not "
               "have been delivered)";
        break;
      case MQTTASYNC_MAX_MESSAGES_INFLIGHT:
      case MQTTASYNC_NO_MORE_MSGIDS:
      case MQTTASYNC_MAX_BUFFERED_MESSAGES:
      case MQTTASYNC_MAX_BUFFERED:
        code = ErrorCode::ResourceExhausted;
        break;
      case MQTTASYNC_BAD_UTF8_STRING:
      case MQTTASYNC_TOPICNAME_TRUNCATED:
      case MQTTASYNC_BAD_QOS:
      case MQTTASYNC_BAD_PROTOCOL:
      case MQTTASYNC_BAD_MQTT_OPTION:
      case MQTTASYNC_0_LEN_WILL_TOPIC:
        code = ErrorCode::InvalidArgument;
        break;
      case MQTTASYNC_SSL_NOT_SUPPORTED:
      case MQTTASYNC_WRONG_MQTT_VERSION:
        code = ErrorCode::Unsupported;
        break;
      case MQTTASYNC_PERSISTENCE_ERROR:
      case MQTTASYNC_NULL_PARAMETER:
      case MQTTASYNC_BAD_STRUCTURE:
        code = ErrorCode::Internal;
        break;
      default:
        break;
    }
  } else if (native >= 1 && native <= 5) {  // MQTT 3.1.1 CONNACK return codes
    static const char* const names[] = {"", "unacceptable protocol version", "client identifier rejected",
                                        "server unavailable", "bad user name or password", "not authorized"};
    what = std::string("broker refused the connection: ") + names[native];
    if (native == 1) code = ErrorCode::Unsupported;
    if (native == 2) code = ErrorCode::InvalidArgument;
    if (native == 4 || native == 5) retryable = false;
  } else {  // MQTT 5 reason codes
    const char* s = MQTTReasonCode_toString(static_cast<MQTTReasonCodes>(native));
    what = std::string("broker answered: ") + (s ? s : "reason code");
    switch (native) {
      case 0x81: case 0x82: case 0x91: case 0x92: case 0x94:
        code = ErrorCode::Internal;
        break;
      case 0x84: case 0x9A: case 0x9B: case 0x9E: case 0xA1: case 0xA2:
        code = ErrorCode::Unsupported;
        break;
      case 0x85: case 0x8C: case 0x8F: case 0x90: case 0x99:
        code = ErrorCode::InvalidArgument;
        break;
      case 0x93: case 0x95: case 0x96: case 0x97:
        code = ErrorCode::ResourceExhausted;
        break;
      case 0x86: case 0x87: case 0x8A:
        retryable = false;
        break;
      case 0x8E:
        what += " (another connection used the same client_id)";
        break;
      default:
        break;
    }
  }
  if (code != ErrorCode::Unavailable && code != ErrorCode::ResourceExhausted) retryable = false;
  return Error(code, context + ": " + what + (detail.empty() ? "" : "; " + detail) + " (" +
                         (native < 0 ? "Paho C code " : "MQTT code ") + std::to_string(native) + ")",
               native, retryable);
}

// The code of a failed token or exception: the MQTT reason code when the
// broker sent one, else Paho's return code.
int native_code(int rc, int reason) {
  if (reason >= 0x80 && reason != mqtt::ReasonCode::MQTTPP_V3_CODE) return reason;
  return rc != 0 ? rc : (reason > 0 && reason != mqtt::ReasonCode::MQTTPP_V3_CODE ? reason : MQTTASYNC_FAILURE);
}

// ---------------------------------------------------------------- settings

std::string generated_client_id() {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}() ^ (std::uint64_t(::getpid()) << 32)};
  static std::uint64_t counter = 0;
  std::lock_guard lock(mu);
  std::uint64_t v = rng() ^ ++counter;
  static const char hex[] = "0123456789abcdef";
  std::string id = "omnibus-";
  for (int i = 0; i < 12; ++i) id += hex[(v >> (i * 4)) & 15];  // 20 chars: within 3.1.1's guaranteed 23
  return id;
}

struct Settings {
  std::string url;                       // redacted, for messages
  std::vector<HostPort> hosts;
  std::string where;                     // "host:port[,host:port]" for messages
  std::string user, password;
  bool has_user = false;
  std::string topic;                     // topic name (publisher) or filter without $share (subscriber)
  std::string group;                     // shared subscription group, subscriber only
  int qos = 1;
  int version = MQTTVERSION_5;           // MQTTVERSION_5 or MQTTVERSION_3_1_1
  bool retain = false;
  std::string client_id;
  bool clean_session = true;
  std::int64_t session_expiry_s = -1;
  int keepalive_s = 60;
  int max_inflight = 100;
  std::chrono::milliseconds connect_timeout{10000};
  bool drop_headers = false;
  bool send_timestamp = false;
  bool tls = false;  // mqtts://
  detail::TlsFiles tls_files;

  bool v5() const { return version == MQTTVERSION_5; }
  // What the broker keeps between connections (MQTT 5 Session Expiry Interval).
  std::uint32_t session_expiry() const {
    if (session_expiry_s >= 0) return static_cast<std::uint32_t>(session_expiry_s);
    return clean_session ? 0u : 0xFFFFFFFFu;
  }
  bool persistent() const { return !clean_session && (!v5() || session_expiry() != 0); }
  std::string topic_for_messages() const { return (group.empty() ? "" : "$share/" + group + "/") + topic; }
};

std::string url_topic(const Url& url) {
  if (url.hosts.empty() || url.hosts[0].host.empty())
    throw Error(ErrorCode::InvalidArgument,
                "mqtt:// URL '" + url.text + "' names no broker: use mqtt://[user:password@]host[:port]/topic");
  if (url.path.empty())
    throw Error(ErrorCode::InvalidArgument,
                "mqtt:// URL '" + url.text + "' names no topic: use mqtt://host[:port]/topic/levels");
  return url.path;
}

Settings common_settings(const Url& url, const OptionValues& o) {
  Settings s;
  s.url = url.text;
  s.tls = url.scheme == "mqtts";
  s.tls_files = detail::read_tls_options(o, "mqtts", url.text);
  if (!s.tls && s.tls_files.any_given())
    throw Error(ErrorCode::InvalidArgument, "mqtt:// URL '" + url.text + "' has TLS options, but mqtt:// is plaintext: "
                                            "use mqtts://host[:8883]/topic for TLS");
  s.hosts = url.hosts;
  for (auto& h : s.hosts) {
    if (h.port == 0) h.port = s.tls ? 8883 : 1883;
    if (!s.where.empty()) s.where += ",";
    s.where += (h.host.find(':') != std::string::npos ? "[" + h.host + "]" : h.host) + ":" + std::to_string(h.port);
  }
  s.user = url.user;
  s.password = url.password;
  s.has_user = url.has_userinfo && !url.user.empty();
  s.topic = url_topic(url);
  s.qos = static_cast<int>(o.get_int("qos"));
  s.version = o.get_string("version") == "5" ? MQTTVERSION_5 : MQTTVERSION_3_1_1;
  s.client_id = o.get_string("client_id");
  if (s.client_id.empty()) s.client_id = generated_client_id();
  if (const char* why = utf8_problem(s.client_id))
    throw Error(ErrorCode::InvalidArgument, "client_id of " + url.text + " " + why + "; MQTT client ids are UTF-8 strings");
  s.clean_session = o.get_bool("clean_session");
  s.session_expiry_s = o.get_int("session_expiry_s");
  if (s.session_expiry_s >= 0 && !s.v5() && o.was_given("session_expiry_s"))
    throw Error(ErrorCode::InvalidArgument,
                "session_expiry_s is an MQTT 5 setting; with version=3.1.1 use clean_session=false for a session "
                "that lasts until the broker expires it");
  s.keepalive_s = static_cast<int>(o.get_int("keepalive_s"));
  s.connect_timeout = std::chrono::milliseconds(o.get_int("connect_timeout_ms"));
  return s;
}

void check_topic_name(const std::string& t, const std::string& url) {
  auto bad = [&](const std::string& rule) {
    throw Error(ErrorCode::InvalidArgument, "cannot publish to MQTT topic " + printable(t) + " of " + url + ": " + rule);
  };
  if (t.empty()) bad("a topic name must be at least one character long (MQTT 5 §4.7.3)");
  if (const char* why = utf8_problem(t))
    bad(std::string("the topic name ") + why +
        "; topic names are UTF-8 strings of at most 65535 bytes without U+0000 or control characters "
        "(MQTT 5 §1.5.4)");
  if (t.find_first_of("+#") != std::string::npos)
    bad("the wildcards '+' and '#' may only appear in subscription filters, never in the topic name of a "
        "PUBLISH (MQTT 5 §4.7.1)");
  if (t.rfind("$share/", 0) == 0)
    bad("'$share/GROUP/...' names a shared subscription (a filter), not a topic; publish to the plain topic");
}

void check_topic_filter(const std::string& f, const std::string& url) {
  auto bad = [&](const std::string& rule) {
    throw Error(ErrorCode::InvalidArgument, "cannot subscribe to MQTT topic filter " + printable(f) + " of " + url + ": " + rule);
  };
  if (f.empty()) bad("a topic filter must be at least one character long (MQTT 5 §4.7.3)");
  if (const char* why = utf8_problem(f))
    bad(std::string("the filter ") + why +
        "; filters are UTF-8 strings of at most 65535 bytes without U+0000 or control characters (MQTT 5 §1.5.4)");
  std::size_t start = 0;
  for (;;) {
    std::size_t end = f.find('/', start);
    std::string_view level(f.data() + start, (end == std::string::npos ? f.size() : end) - start);
    if (level.find('#') != std::string_view::npos && (level != "#" || end != std::string::npos))
      bad("'#' must be a whole level and the last one, as in 'a/b/#' (MQTT 5 §4.7.1.2)");
    if (level.find('+') != std::string_view::npos && level != "+")
      bad("'+' must be a whole level, as in 'a/+/c' (MQTT 5 §4.7.1.3)");
    if (end == std::string::npos) break;
    start = end + 1;
  }
}

// ---------------------------------------------------------------- name resolution

// Resolves `host` to a numeric address with glibc's getaddrinfo_a, waiting at
// most until `deadline`; IPv4 first, as Paho does. Numeric hosts return at
// once. Throws Unavailable naming the host when it does not resolve in time.
std::string resolve(const HostPort& hp, SteadyClock::time_point deadline, const std::string& url) {
  in6_addr scratch;
  if (::inet_pton(AF_INET, hp.host.c_str(), &scratch) == 1 || ::inet_pton(AF_INET6, hp.host.c_str(), &scratch) == 1)
    return hp.host;
  struct Lookup {
    std::string name;
    addrinfo hints{};
    gaicb request{};
  };
  auto* lookup = new Lookup;
  lookup->name = hp.host;
  lookup->hints.ai_family = AF_UNSPEC;
  lookup->hints.ai_socktype = SOCK_STREAM;
  lookup->request.ar_name = lookup->name.c_str();
  lookup->request.ar_request = &lookup->hints;
  gaicb* list[1] = {&lookup->request};
  const std::string where = "cannot resolve MQTT broker host '" + hp.host + "' of " + url;
  if (int rc = ::getaddrinfo_a(GAI_NOWAIT, list, 1, nullptr); rc != 0) {
    delete lookup;
    throw Error(ErrorCode::Unavailable, where + ": " + ::gai_strerror(rc), rc);
  }
  int err = EAI_INPROGRESS;
  for (;;) {
    err = ::gai_error(&lookup->request);
    if (err != EAI_INPROGRESS) break;
    auto left = deadline - SteadyClock::now();
    if (left <= 0s) break;
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
    timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
    const gaicb* wait[1] = {&lookup->request};
    ::gai_suspend(wait, 1, &ts);  // returns on completion, timeout or signal; the loop re-checks
  }
  if (err == EAI_INPROGRESS) {
    int c = ::gai_cancel(&lookup->request);
    if (c == EAI_CANCELED) {
      delete lookup;
    } else if (c == EAI_ALLDONE) {
      if (lookup->request.ar_result) ::freeaddrinfo(lookup->request.ar_result);
      delete lookup;
    }
    // EAI_NOTCANCELED: glibc's resolver thread still writes into the request,
    // so it is left to it (a few hundred bytes, once per timed-out lookup).
    throw Error(ErrorCode::Unavailable, where + ": no answer from the resolver within connect_timeout_ms", EAI_AGAIN);
  }
  if (err != 0) {
    delete lookup;
    throw Error(ErrorCode::Unavailable, where + ": " + ::gai_strerror(err), err);
  }
  std::string out;
  const addrinfo* pick = nullptr;
  for (const addrinfo* a = lookup->request.ar_result; a; a = a->ai_next)
    if (a->ai_family == AF_INET && !pick) pick = a;
  if (!pick) pick = lookup->request.ar_result;
  char text[INET6_ADDRSTRLEN] = {0};
  if (pick && pick->ai_family == AF_INET)
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(pick->ai_addr)->sin_addr, text, sizeof text);
  else if (pick && pick->ai_family == AF_INET6)
    ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(pick->ai_addr)->sin6_addr, text, sizeof text);
  out = text;
  ::freeaddrinfo(lookup->request.ar_result);
  delete lookup;
  if (out.empty()) throw Error(ErrorCode::Unavailable, where + ": no IPv4 or IPv6 address");
  return out;
}

std::string server_uri(const std::string& address, std::uint16_t port, bool tls) {
  bool v6 = address.find(':') != std::string::npos;
  return (tls ? "ssl://" : "tcp://") + (v6 ? "[" + address + "]" : address) + ":" + std::to_string(port);
}

// ---------------------------------------------------------------- connection

// One MQTT connection: owns the mqtt::async_client. The hooks run on Paho's
// callback thread and must be short; the object that owns the Connection must
// outlive it (it is destroyed first, which waits for running callbacks:
// Paho runs them under the lock its destroy takes).
class Connection {
 public:
  struct Hooks {
    std::function<void(bool reconnect)> connected;
    std::function<void()> lost;
    std::function<void(mqtt::const_message_ptr)> message;  // subscribers only
  };

  // Connects, blocking up to connect_timeout for the CONNACK. Throws
  // Unavailable (unreachable, refused, timed out; the host named),
  // InvalidArgument or Unsupported (the broker refused what was asked).
  // With auto_reconnect Paho reconnects by itself after a loss; without, the
  // owner replaces the Connection (the publisher does, see MqttSender).
  // A set `cancel` ends the wait for the CONNACK early (Closed).
  Connection(const Settings& s, const char* role, Hooks hooks, bool auto_reconnect,
             const std::atomic<bool>* cancel = nullptr)
      : s_(s), role_(role), hooks_(std::move(hooks)) {
    const auto deadline = SteadyClock::now() + s_.connect_timeout;
    std::vector<std::string> uris;
    for (const auto& h : s_.hosts) {
      std::string address = resolve(h, deadline, s_.url);
      if (addresses_.empty()) addresses_.emplace_back(address, h.port);
      // Over TLS Paho checks the certificate against the host in the URI: give it the name, which
      // resolve() just showed to answer (Paho resolves it again; a cached answer, fast).
      uris.push_back(server_uri(s_.tls ? h.host : address, h.port, s_.tls));
    }

    mqtt::create_options create(s_.version);
    // Queue publishes during an automatic reconnect instead of failing them;
    // Paho's bound on queued commands is the sender's window (plus slack),
    // which it never exceeds.
    create.set_send_while_disconnected(true, false);
    create.set_max_buffered_messages(s_.max_inflight + 16);
    create.set_delete_oldest_messages(false);
    cli_ = std::make_unique<mqtt::async_client>(uris.front(), s_.client_id, create, nullptr);  // no persistence files

    cli_->set_connected_handler([this](const std::string& cause) {
      const bool reconnect = first_connect_done_.load(std::memory_order_acquire);
      connected_.store(true, std::memory_order_release);
      if (hooks_.connected) hooks_.connected(reconnect || cause == "automatic reconnect");
    });
    cli_->set_connection_lost_handler([this](const std::string& cause) {
      {
        std::lock_guard lock(mu_);
        last_loss_ = cause.empty() ? "connection lost" : cause;
      }
      connected_.store(false, std::memory_order_release);
      if (hooks_.lost) hooks_.lost();
    });
    if (s_.v5()) {
      cli_->set_disconnected_handler([this](const mqtt::properties&, mqtt::ReasonCode reason) {
        // The broker closed the session with a reason (MQTT 5 DISCONNECT): keep it for error messages.
        const char* s = MQTTReasonCode_toString(static_cast<MQTTReasonCodes>(reason));
        std::lock_guard lock(mu_);
        last_loss_ = std::string("broker disconnected: ") + (s ? s : "reason " + std::to_string(int(reason)));
      });
    }
    if (hooks_.message) cli_->set_message_callback(hooks_.message);

    mqtt::connect_options co;
    co.set_mqtt_version(s_.version);
    if (s_.v5()) {
      co.set_clean_session(false);  // Paho refuses the 3.1.1 flag on an MQTT 5 connect
      co.set_clean_start(s_.clean_session);
      co.set_properties(mqtt::properties{
          mqtt::property(mqtt::property::SESSION_EXPIRY_INTERVAL, static_cast<int32_t>(s_.session_expiry()))});
    } else {
      co.set_clean_start(false);
      co.set_clean_session(s_.clean_session);
    }
    if (uris.size() > 1) co.set_servers(std::make_shared<mqtt::string_collection>(uris));
    co.set_keep_alive_interval(s_.keepalive_s);
    // Paho's own timeout is in whole seconds and checked every 3 s; the wait below is the real bound.
    co.set_connect_timeout(static_cast<int>((s_.connect_timeout.count() + 999) / 1000));
    co.set_max_inflight(s_.max_inflight);
    if (auto_reconnect) co.set_automatic_reconnect(kReconnectMinSeconds, kReconnectMaxSeconds);
    if (s_.tls) co.set_ssl(ssl_options());
    if (s_.has_user) {
      co.set_user_name(s_.user);
      if (!s_.password.empty()) co.set_password(s_.password);
    }

    const std::string context = std::string("MQTT ") + role_ + " connecting to " + s_.where + " (" + s_.url + ")";
    mqtt::token_ptr tok;
    try {
      tok = cli_->connect(co);
      // In steps, so that a cancel (the owner closing) ends the wait early.
      for (;;) {
        auto left = deadline - SteadyClock::now();
        if (left <= SteadyClock::duration::zero())
          throw Error(ErrorCode::Unavailable, context + ": no CONNACK within connect_timeout_ms=" +
                                                  std::to_string(s_.connect_timeout.count()));
        if (tok->wait_for(std::chrono::duration_cast<std::chrono::milliseconds>(std::min<SteadyClock::duration>(
                std::max<SteadyClock::duration>(left, 1ms), 100ms))))
          break;
        if (cancel && cancel->load(std::memory_order_acquire))
          throw Error(ErrorCode::Closed, context + ": closed while connecting");
      }
      auto rsp = tok->get_connect_response();
      read_connack(rsp.get_properties(), context);
    } catch (const mqtt::exception& e) {
      int native = native_code(e.get_return_code(), e.get_reason_code());
      std::string why;
      if (s_.tls && native == MQTTASYNC_FAILURE && !addresses_.empty())
        why = omnibus::detail::tls_handshake_failure(addresses_[0].first, addresses_[0].second, s_.hosts[0].host,
                                                     s_.tls_files, std::chrono::milliseconds(2000));
      if (!why.empty())
        why = "TLS handshake failed: " + why;
      else if (native == MQTTASYNC_FAILURE && !addresses_.empty() &&
               omnibus::detail::tcp_accepts(addresses_[0].first, addresses_[0].second, std::chrono::milliseconds(1000)))
        // The port takes connections, and dropped this one: the likely cause, in a few words.
        why = s_.tls ? "the port accepts TCP but completed no TLS handshake: is it a plaintext listener? "
                       "(mqtt:// for one)"
                     : "the port accepts TCP but dropped the MQTT connect: a TLS listener does that (mqtts:// "
                       "for one)";
      Error err = mqtt_error(native, context, why);
      cli_.reset();  // stops Paho's retries before the error leaves
      throw err;
    } catch (...) {
      cli_.reset();
      throw;
    }
    first_connect_done_.store(true, std::memory_order_release);
  }

  ~Connection() { close(); }

  // Sends DISCONNECT (bounded wait) and destroys the client; idempotent.
  // After it returns no callback runs any more.
  void close() {
    if (!cli_) return;
    abandon();
    cli_.reset();  // also ends automatic reconnects of a client that was not connected
  }

  // Sends DISCONNECT (bounded wait) without destroying the client: for a
  // client whose Paho state must not be freed (see MqttSender), which the
  // caller then leaks on purpose. Such a client was created without automatic
  // reconnect, so it stays disconnected.
  void abandon() {
    if (!cli_) return;
    try {
      auto tok = cli_->disconnect(0);
      tok->wait_for(std::chrono::milliseconds(2000));
    } catch (const std::exception&) {
      // Not connected (or already closing).
    }
    connected_.store(false, std::memory_order_release);
  }

  mqtt::async_client& client() { return *cli_; }
  bool connected() const { return connected_.load(std::memory_order_acquire); }
  // The broker's Maximum Packet Size (MQTT 5 CONNACK), 0 when it sent none.
  std::size_t broker_max_packet() const { return broker_max_packet_; }
  std::string last_loss() const {
    std::lock_guard lock(mu_);
    return last_loss_;
  }

 private:
  mqtt::ssl_options ssl_options() {
    mqtt::ssl_options ssl;
    const auto& t = s_.tls_files;
    if (!t.ca.empty()) ssl.set_trust_store(t.ca);  // else OpenSSL's default paths: the system's CAs
    if (!t.cert.empty()) {
      ssl.set_key_store(t.cert);
      ssl.set_private_key(t.key);
    }
    ssl.set_enable_server_cert_auth(t.verify);
    ssl.set_verify(t.verify);  // the certificate must name the host of the URL
    // No set_error_handler: Paho C++ 1.2.0 hands the C library an error-callback context that lives
    // in a by-value parameter of async_client::connect, so the handler would run on a dead stack
    // frame (AddressSanitizer: stack-use-after-scope). tls_handshake_failure finds the reason instead.
    return ssl;
  }

  // Refuses, loudly, what the broker said in its CONNACK it cannot do.
  void read_connack(const mqtt::properties& props, const std::string& context) {
    connected_.store(true, std::memory_order_release);
    if (!s_.v5()) return;
    const auto& c = props.c_struct();
    for (int i = 0; i < c.count; ++i) {
      const MQTTProperty& p = c.array[i];
      switch (p.identifier) {
        case MQTTPROPERTY_CODE_MAXIMUM_PACKET_SIZE:
          broker_max_packet_ = p.value.integer4;
          break;
        case MQTTPROPERTY_CODE_MAXIMUM_QOS:
          if (s_.qos > p.value.byte)
            throw Error(ErrorCode::Unsupported, context + ": the broker supports QoS up to " +
                                                    std::to_string(p.value.byte) + ", qos=" + std::to_string(s_.qos) +
                                                    " was asked");
          break;
        case MQTTPROPERTY_CODE_RETAIN_AVAILABLE:
          if (s_.retain && p.value.byte == 0)
            throw Error(ErrorCode::Unsupported, context + ": the broker does not support retained messages (retain=true)");
          break;
        case MQTTPROPERTY_CODE_SHARED_SUBSCRIPTION_AVAILABLE:
          if (!s_.group.empty() && p.value.byte == 0)
            throw Error(ErrorCode::Unsupported, context + ": the broker does not support shared subscriptions (group=" +
                                                    s_.group + ")");
          break;
        default:
          break;
      }
    }
  }

  Settings s_;
  const char* role_;
  Hooks hooks_;
  std::atomic<bool> connected_{false};
  std::atomic<bool> first_connect_done_{false};
  std::size_t broker_max_packet_ = 0;  // written before the constructor returns, read-only after
  mutable std::mutex mu_;
  std::string last_loss_;
  std::vector<std::pair<std::string, std::uint16_t>> addresses_;  // the first host, resolved: for errors
  std::unique_ptr<mqtt::async_client> cli_;  // last: destroyed first, while the hooks' targets live
};

Capabilities mqtt_capabilities(const Settings& s, std::size_t broker_max_packet, bool receiver) {
  Capabilities c;
  // Receivers: Paho acknowledges on arrival (see the header comment), so a
  // message the application has not processed yet is not redelivered.
  c.delivery_guarantee = (s.qos == 0 || receiver) ? "at-most-once" : "at-least-once";
  c.ordered_per_key = true;       // one connection publishes in order; one subscriber receives in order
  c.key_affinity = false;         // shared subscriptions hand messages out round robin, keys unseen
  c.keys = s.v5() && !s.drop_headers;
  c.headers = s.v5() && !s.drop_headers;
  c.nack = false;                 // MQTT has no negative acknowledgement
  c.ack_deadline = false;
  c.requeue_on_close = false;     // already acknowledged on arrival: nothing goes back
  c.delivery_count = false;       // only the DUP flag: attempt 1 or 2
  c.competing_consumers = s.v5(); // $share/GROUP/filter
  c.dead_letter = false;
  c.durable = s.qos >= 1 && s.persistent();
  // The largest payload of a key- and header-less message on this topic: the
  // MQTT limit (or the broker's Maximum Packet Size) minus this topic's fixed
  // overhead (topic, packet id, the timestamp property).
  std::size_t overhead = 2 + s.topic.size() + (s.qos > 0 ? 2 : 0);
  if (s.v5()) overhead += 1 + (s.send_timestamp ? user_property_bytes(kTimestampProperty.size(), 13) : 0);
  std::size_t limit = kMaxRemainingLength;
  if (broker_max_packet > 0) limit = std::min<std::size_t>(limit, broker_max_packet > 5 ? broker_max_packet - 5 : 0);
  c.max_message_bytes = limit > overhead ? limit - overhead : 1;
  return c;
}

// ---------------------------------------------------------------- sender

// Why a publisher sometimes replaces its Paho client: when the socket write of
// a QoS 1/2 PUBLISH fails because the connection dropped under it, Paho C
// (1.3.12, as packaged) reports the message failed (MQTTASYNC_FAILURE) and
// frees its topic and payload, yet keeps it for retransmission on a persistent
// session. After the reconnect it sends whatever that memory holds by then;
// the broker closes the connection as malformed, at every reconnect, and no
// PUBACK comes back (seen with Mosquitto SIGKILLed mid-stream: "disconnected
// due to malformed packet", the PUBLISH carrying a garbage topic). Destroying
// that client would free the same memory again. So the sender abandons such a
// client (disconnected, never destroyed: a deliberate leak of a few KB per
// occurrence), connects a new one and sends its unacknowledged messages
// again, in order. The same happens when nothing is acknowledged for
// connect_timeout_ms while the connection is up. Sending again can duplicate
// a message the broker already had (MQTT allows that for QoS 1; for QoS 2 the
// new client starts a clean session first so that packet ids of the old
// session cannot swallow a message, which means a message may arrive twice).

class MqttSender final : public Sender {
 public:
  explicit MqttSender(Settings s) : s_(std::move(s)), topic_(s_.topic), gate_(std::make_shared<Gate>()) {
    gate_->target = this;
    install(make_link(1));
    watchdog_ = std::thread([this] { watch(); });
  }
  ~MqttSender() override { close(); }

  // Publisher thread only. Hands every message to Paho without waiting for the
  // previous one's acknowledgement; blocks only while max_inflight messages are
  // outstanding (and, while disconnected, for at most connect_timeout_ms).
  void send_batch(const std::vector<OutMessage>& batch, const SendResultFn& on_result) override {
    // The function object may be a temporary of the caller: results arrive after we return.
    auto fn = std::make_shared<SendResultFn>(on_result);
    // Set when a wait for room starts while disconnected; max(): not waiting so.
    SteadyClock::time_point give_up = SteadyClock::time_point::max();
    const std::size_t window = static_cast<std::size_t>(s_.max_inflight);
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const OutMessage& m = batch[i];
      mqtt::properties props;
      if (auto err = encode(m, props)) {
        on_result(i, &*err);
        continue;
      }
      {
        std::unique_lock lock(mu_);
        if (!closed_ && next_ - base_ >= window) {
          // Full: wait until half of the window is free, so that the sender
          // wakes once per window/2 completions instead of once per message.
          // A window that stops moving while connected is the watchdog's
          // business (it replaces the client and sends the window again).
          waiting_ = true;
          while (!closed_ && next_ - base_ > resume_at_) {
            if (is_connected()) {
              give_up = SteadyClock::time_point::max();
              space_cv_.wait_for(lock, 100ms);  // woken by completions and by connection changes
              continue;
            }
            if (give_up == SteadyClock::time_point::max()) give_up = SteadyClock::now() + s_.connect_timeout;
            if (SteadyClock::now() >= give_up) break;
            space_cv_.wait_until(lock, give_up);
          }
          waiting_ = false;
        }
        if (closed_ || next_ - base_ >= window) {
          Error err = closed_ ? Error(ErrorCode::Closed, "MQTT publisher for " + s_.url + " is closed")
                              : Error(ErrorCode::Unavailable,
                                      "MQTT publisher for " + s_.url + ": not connected to " + s_.where + " for " +
                                          std::to_string(s_.connect_timeout.count()) +
                                          " ms (connect_timeout_ms) with max_inflight=" +
                                          std::to_string(s_.max_inflight) +
                                          " messages waiting; the client keeps reconnecting (" + last_loss() + ")",
                                      MQTTASYNC_DISCONNECTED);
          lock.unlock();
          for (std::size_t j = i; j < batch.size(); ++j) on_result(j, &err);
          return;
        }
      }
      auto msg = mqtt::message::create(topic_, mqtt::binary_ref(m.payload), s_.qos, s_.retain);
      if (!props.empty()) msg->set_properties(std::move(props));
      // Under link_mu_ so that a client replacement sees the slot either not
      // yet in the window or already handed to a client (never both twice).
      std::lock_guard link_lock(link_mu_);
      // Not connected: the watchdog hands it to the next client.
      const bool up = link_ && link_->conn->connected();
      std::uint64_t seq;
      {
        std::lock_guard lock(mu_);
        seq = next_++;
        window_.push_back(Slot{fn, i, true, msg, up ? link_->gen : 0});
      }
      if (up) hand_to(*link_, seq, msg);
    }
  }

  Capabilities capabilities() const override { return mqtt_capabilities(s_, max_packet(), false); }
  std::optional<bool> connected() const override { return is_connected(); }

  // Fails what is still in flight with Closed, then disconnects. Idempotent.
  void close() override {
    std::vector<std::pair<std::shared_ptr<SendResultFn>, std::size_t>> dropped;
    bool poisoned;
    {
      std::lock_guard lock(mu_);
      if (closed_) return;
      closed_ = true;
      for (auto& slot : window_)
        if (slot.live) dropped.emplace_back(std::move(slot.fn), slot.index);
      window_.clear();
      base_ = next_;
      poisoned = poisoned_;
    }
    closing_.store(true, std::memory_order_release);  // ends a connect attempt of the watchdog
    space_cv_.notify_all();
    watch_cv_.notify_all();
    if (watchdog_.joinable()) watchdog_.join();
    if (!dropped.empty()) {
      Error err(ErrorCode::Closed, "MQTT publisher for " + s_.url +
                                       " was closed before the broker acknowledged this message (it may or may not "
                                       "have been delivered)");
      for (auto& [fn, index] : dropped) (*fn)(index, &err);
    }
    {
      // From here on no Paho callback reaches this sender (abandoned clients included).
      std::lock_guard lock(gate_->mu);
      gate_->target = nullptr;
    }
    std::unique_ptr<Link> link = retire();
    if (!link) return;
    if (poisoned) abandon(std::move(link));  // destroying it would free Paho's stale copy again
    else link->conn->close();
  }

 private:
  // What Paho's callbacks reach the sender through. Shared with the listeners
  // and hooks of every client, abandoned ones included; close() cuts it.
  struct Gate {
    std::mutex mu;
    MqttSender* target = nullptr;
  };

  // Paho's per-message result for one client: runs on Paho's threads, under Paho's lock.
  class Listener final : public mqtt::iaction_listener {
   public:
    Listener(std::shared_ptr<Gate> gate, std::uint32_t gen) : gate_(std::move(gate)), gen_(gen) {}
    void on_success(const mqtt::token& tok) override {
      std::lock_guard lock(gate_->mu);
      if (gate_->target) gate_->target->complete(gen_, seq(tok), nullptr);
    }
    void on_failure(const mqtt::token& tok) override {
      std::lock_guard lock(gate_->mu);
      if (gate_->target) gate_->target->failed(gen_, seq(tok), native_code(tok.get_return_code(), tok.get_reason_code()));
    }

   private:
    static std::uint64_t seq(const mqtt::token& tok) {
      return static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(tok.get_user_context()));
    }
    std::shared_ptr<Gate> gate_;
    const std::uint32_t gen_;
  };

  // One Paho client, numbered, with the listener of its messages.
  struct Link {
    std::uint32_t gen;
    std::unique_ptr<Listener> listener;
    std::unique_ptr<Connection> conn;
  };

  struct Slot {
    std::shared_ptr<SendResultFn> fn;
    std::size_t index;
    bool live;
    mqtt::message_ptr msg;  // kept to send it again on a new client
    std::uint32_t gen;      // the client it was handed to; 0: none yet
  };

  // Connects a new client (blocking up to connect_timeout_ms). Throws as Connection does.
  std::unique_ptr<Link> make_link(std::uint32_t gen) {
    auto link = std::make_unique<Link>();
    link->gen = gen;
    link->listener = std::make_unique<Listener>(gate_, gen);
    Connection::Hooks hooks;
    auto gate = gate_;
    hooks.connected = [gate](bool) { poke(*gate); };
    hooks.lost = [gate] { poke(*gate); };
    link->conn = std::make_unique<Connection>(s_, "publisher", std::move(hooks), false, &closing_);
    return link;
  }

  static void poke(Gate& gate) {
    std::lock_guard lock(gate.mu);
    if (gate.target) gate.target->wake();
  }

  // Disconnects a client and leaks it on purpose (see the comment above the class).
  static void abandon(std::unique_ptr<Link> link) {
    link->conn->abandon();
    (void)link.release();
  }

  // Caller holds link_mu_.
  void hand_to(Link& link, std::uint64_t seq, const mqtt::message_ptr& msg) {
    try {
      link.conn->client().publish(msg, reinterpret_cast<void*>(static_cast<std::uintptr_t>(seq)), *link.listener);
    } catch (const mqtt::exception& e) {
      Error err = mqtt_error(native_code(e.get_return_code(), e.get_reason_code()), context());
      complete(link.gen, seq, &err);
    }
  }

  // Makes `link` the current client; caller holds link_mu_ or is the constructor.
  void install(std::unique_ptr<Link> link) {
    broker_max_packet_.store(link->conn->broker_max_packet(), std::memory_order_relaxed);
    link_ = std::move(link);
    std::lock_guard lock(live_mu_);
    live_ = link_->conn.get();
  }

  // Takes the current client out (under link_mu_). Once this returns no
  // reader of live_ still uses it, so the caller may destroy it.
  std::unique_ptr<Link> retire() {
    std::lock_guard link_lock(link_mu_);
    std::lock_guard lock(live_mu_);
    live_ = nullptr;
    return std::move(link_);
  }

  bool is_connected() const {
    std::lock_guard lock(live_mu_);
    return live_ && live_->connected();
  }

  // Why the connection was last lost, and why the client was last replaced.
  std::string last_loss() const {
    std::string out;
    {
      std::lock_guard lock(live_mu_);
      if (live_) out = live_->last_loss();
    }
    std::lock_guard lock(loss_mu_);
    if (out.empty()) out = last_loss_before_;
    if (!last_loss_.empty()) out += (out.empty() ? "" : "; ") + last_loss_;
    if (replacements_ > 0)
      out += (out.empty() ? "" : "; ") + std::string("client replaced ") + std::to_string(replacements_) +
             " time(s), last because " + replace_reason_;
    return out;
  }

  std::string context() const {
    std::string loss = last_loss();
    return "MQTT publish to '" + s_.topic + "' at " + s_.where + " (" + s_.url + ")" +
           (loss.empty() ? "" : "; last connection loss: " + loss);
  }

  std::size_t max_packet() const { return broker_max_packet_.load(std::memory_order_relaxed); }

  // Reports message `seq` once; unknown, already reported, or answered by a
  // client it is no longer with: ignored.
  void complete(std::uint32_t gen, std::uint64_t seq, const Error* err) {
    std::shared_ptr<SendResultFn> fn;
    std::size_t index = 0;
    bool wake = false;
    {
      std::lock_guard lock(mu_);
      if (seq < base_ || seq >= next_) return;
      Slot& slot = window_[seq - base_];
      if (!slot.live || slot.gen != gen) return;
      slot.live = false;
      slot.msg.reset();
      fn = std::move(slot.fn);
      index = slot.index;
      while (!window_.empty() && !window_.front().live) {
        window_.pop_front();
        ++base_;
      }
      if (waiting_ && next_ - base_ <= resume_at_) {
        waiting_ = false;
        wake = true;
      }
    }
    if (wake) space_cv_.notify_one();
    (*fn)(index, err);
  }

  // A message's token failed. A QoS 1/2 message that failed because the
  // connection went is not reported: the next client sends it again. On a
  // persistent session, one whose PUBLISH could not be written stays in Paho
  // with freed contents (MQTTASYNC_FAILURE): that client must not be reused.
  void failed(std::uint32_t gen, std::uint64_t seq, int native) {
    const bool lost = native == MQTTASYNC_FAILURE || native == MQTTASYNC_DISCONNECTED ||
                      native == MQTTASYNC_OPERATION_INCOMPLETE;
    if (lost && s_.qos > 0) {
      {
        std::lock_guard lock(mu_);
        if (seq < base_ || seq >= next_) return;
        Slot& slot = window_[seq - base_];
        if (!slot.live || slot.gen != gen) return;
        slot.gen = 0;  // for the next client
        if (native == MQTTASYNC_FAILURE && !s_.clean_session && link_gen_ == gen) poisoned_ = true;
      }
      watch_cv_.notify_all();
      return;
    }
    Error err = mqtt_error(native, context());
    complete(gen, seq, &err);
  }

  void wake() {
    { std::lock_guard lock(mu_); }  // pairs with the waiters' predicate checks
    space_cv_.notify_all();
    watch_cv_.notify_all();
  }

  // The watchdog thread: the publisher's client does not reconnect by itself;
  // this thread replaces it after a connection loss (core/backoff.hpp, 1 s to
  // 30 s), at once when a message was corrupted (failed()),
  // and when nothing was acknowledged for connect_timeout_ms while connected
  // (Paho lost the window's tokens).
  void watch() {
    detail::Backoff backoff{std::chrono::seconds(kReconnectMinSeconds), std::chrono::seconds(kReconnectMaxSeconds)};
    auto delay = std::chrono::milliseconds::zero();
    auto down_since = SteadyClock::time_point::max();
    std::uint64_t seen_base = base_;
    auto progress_at = SteadyClock::now();
    std::unique_lock lock(mu_);
    while (!closed_) {
      watch_cv_.wait_for(lock, 100ms);
      if (closed_) break;
      const auto now = SteadyClock::now();
      std::string why;
      if (poisoned_) {
        why = "a PUBLISH was cut off by a connection loss and Paho C kept a corrupt copy of it";
      } else if (!is_connected()) {
        if (down_since == SteadyClock::time_point::max()) {
          down_since = now;
          delay = backoff.next();
        }
        if (now - down_since < delay) continue;
        why = "the connection was lost";
      } else {
        down_since = SteadyClock::time_point::max();
        if (window_.empty() || base_ != seen_base) {
          seen_base = base_;
          progress_at = now;
          continue;
        }
        if (now - progress_at < s_.connect_timeout) continue;
        why = "no acknowledgement for " + std::to_string(s_.connect_timeout.count()) +
              " ms (connect_timeout_ms) while connected";
      }
      lock.unlock();
      const bool ok = replace_client(why);
      lock.lock();
      if (ok) {
        backoff.reset();
        down_since = SteadyClock::time_point::max();
      } else {
        down_since = SteadyClock::now();
        delay = backoff.next();
      }
      seen_base = base_;
      progress_at = SteadyClock::now();
    }
  }

  // Watchdog thread. Retires the current client (destroyed, or abandoned when
  // it holds a corrupt message), connects a new one (one attempt, blocking up
  // to connect_timeout_ms) and hands it every unacknowledged message, oldest
  // first. Returns whether a new client is connected.
  bool replace_client(const std::string& why) {
    std::unique_ptr<Link> old = retire();
    bool poisoned;
    std::uint32_t gen;
    {
      std::lock_guard lock(mu_);
      poisoned = poisoned_;
      poisoned_ = false;  // the corrupt copy goes with the old client
      gen = ++link_gen_;
      // Whatever the old client still reports for these is ignored from here on.
      for (auto& slot : window_) slot.gen = 0;
    }
    if (old) {
      std::lock_guard loss(loss_mu_);
      replace_reason_ = why;
      last_loss_before_ = old->conn->last_loss();
    }
    if (old && poisoned) abandon(std::move(old));
    else old.reset();  // disconnects and destroys the client
    std::unique_ptr<Link> link;
    try {
      if (s_.qos == 2 && !s_.clean_session) {
        // Forget the old session's QoS 2 packet ids (see the class comment).
        Settings clean = s_;
        clean.clean_session = true;
        clean.session_expiry_s = 0;
        Connection(clean, "publisher", Connection::Hooks{}, false, &closing_).close();
      }
      link = make_link(gen);
    } catch (const Error& e) {
      std::lock_guard loss(loss_mu_);
      last_loss_ = std::string("reconnecting: ") + e.what();
      return false;
    }
    std::lock_guard link_lock(link_mu_);
    std::vector<std::pair<std::uint64_t, mqtt::message_ptr>> resend;
    {
      std::lock_guard lock(mu_);
      if (closed_) {
        link->conn->close();
        return false;
      }
      for (std::size_t k = 0; k < window_.size(); ++k) {
        Slot& slot = window_[k];
        if (!slot.live || slot.gen != 0) continue;
        slot.gen = gen;
        resend.emplace_back(base_ + k, slot.msg);
      }
    }
    {
      std::lock_guard loss(loss_mu_);
      ++replacements_;
      last_loss_.clear();
    }
    install(std::move(link));
    for (auto& [seq, msg] : resend) hand_to(*link_, seq, msg);
    space_cv_.notify_all();
    return true;
  }

  // Validates `m` and builds its MQTT 5 properties. Returns the error that fails
  // this message alone, or nothing.
  std::optional<Error> encode(const OutMessage& m, mqtt::properties& props) const {
    const bool carry = !s_.drop_headers;
    const bool has_extras = m.key.has_value() || !m.headers.empty();
    if (has_extras && carry && !s_.v5())
      return Error(ErrorCode::InvalidArgument,
                   "MQTT 3.1.1 cannot carry a message key or headers (" + s_.url +
                       "): use version=5 (they travel as user properties), or pass drop_headers=true to publish "
                       "the payload without them");
    std::size_t prop_bytes = 0;
    if (s_.v5()) {
      detail::mqtt::encode_user_properties(m, carry, s_.send_timestamp, [&](std::string_view name, std::string_view value) {
        props.add(mqtt::property(mqtt::property::USER_PROPERTY, std::string(name), std::string(value)));
        prop_bytes += user_property_bytes(name.size(), value.size());
      });
    }
    const std::size_t remaining = 2 + s_.topic.size() + (s_.qos > 0 ? 2 : 0) +
                                  (s_.v5() ? varint_bytes(prop_bytes) + prop_bytes : 0) + m.payload->size();
    const std::size_t broker = max_packet();
    if (remaining > kMaxRemainingLength || (broker && 1 + varint_bytes(remaining) + remaining > broker)) {
      const std::size_t limit = broker ? std::min(broker, kMaxRemainingLength) : kMaxRemainingLength;
      return Error(ErrorCode::ResourceExhausted,
                   "message of " + std::to_string(m.payload->size()) + " payload bytes (" +
                       std::to_string(remaining) + " bytes as an MQTT PUBLISH) exceeds " +
                       (broker ? "the broker's Maximum Packet Size of " : "MQTT's packet size limit of ") +
                       std::to_string(limit) + " bytes for '" + s_.topic + "' at " + s_.where,
                   0x95);
    }
    return std::nullopt;
  }

  const Settings s_;
  const mqtt::string_ref topic_;  // shared by every message, never copied
  const std::shared_ptr<Gate> gate_;
  mutable std::mutex loss_mu_;
  std::string last_loss_;       // why the last client replacement could not connect
  std::string last_loss_before_;  // the retired client's last connection loss
  std::string replace_reason_;  // why the client was last replaced
  std::uint64_t replacements_ = 0;
  std::mutex mu_;
  std::condition_variable space_cv_;
  std::condition_variable watch_cv_;
  std::deque<Slot> window_;  // messages base_ .. next_-1, in send order
  std::uint64_t base_ = 1;
  std::uint64_t next_ = 1;
  const std::uint64_t resume_at_ = static_cast<std::uint64_t>(s_.max_inflight / 2);
  bool waiting_ = false;   // the sender waits for resume_at_
  bool closed_ = false;
  bool poisoned_ = false;  // the current client holds a corrupt message: replace it
  std::uint32_t link_gen_ = 1;
  std::atomic<std::size_t> broker_max_packet_{0};  // the current (or last) client's, from its CONNACK
  std::mutex link_mu_;  // order: link_mu_ -> Paho -> gate_->mu -> mu_ -> live_mu_
  std::unique_ptr<Link> link_;
  // link_'s connection, for readers that cannot take link_mu_ (they may hold
  // mu_); a leaf lock, held only to read it.
  mutable std::mutex live_mu_;
  const Connection* live_ = nullptr;
  std::atomic<bool> closing_{false};
  std::thread watchdog_;
};

// ---------------------------------------------------------------- receiver

class MqttReceiver final : public Receiver, public std::enable_shared_from_this<MqttReceiver> {
 public:
  explicit MqttReceiver(Settings s) : s_(std::move(s)) {
    filter_ = s_.group.empty() ? s_.topic : "$share/" + s_.group + "/" + s_.topic;
    Connection::Hooks hooks;
    hooks.connected = [this](bool reconnect) {
      if (reconnect) resubscribe();
    };
    hooks.lost = [] {};
    hooks.message = [this](mqtt::const_message_ptr msg) { arrived(std::move(msg)); };
    conn_ = std::make_unique<Connection>(s_, "subscriber", std::move(hooks), true);
    subscribe_and_wait();
  }
  ~MqttReceiver() override { close(); }

  // Fetch thread only. Blocks up to `timeout` for the first message.
  std::vector<MessagePtr> receive_batch(std::size_t max, std::chrono::milliseconds timeout) override {
    std::vector<Arrived> got;
    {
      std::unique_lock lock(mu_);
      if (closed_) throw Error(ErrorCode::Closed, "MQTT subscriber for " + s_.url + " is closed");
      if (queue_.empty()) {
        cv_.wait_for(lock, timeout, [&] { return !queue_.empty() || closed_; });
        if (closed_) throw Error(ErrorCode::Closed, "MQTT subscriber for " + s_.url + " is closed");
      }
      const std::size_t n = std::min(max, queue_.size());
      got.reserve(n);
      for (std::size_t i = 0; i < n; ++i) {
        got.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    std::vector<MessagePtr> out;
    out.reserve(got.size());
    auto self = shared_from_this();
    for (auto& a : got) {
      const auto id = next_ack_id_.fetch_add(1, std::memory_order_relaxed);
      out.push_back(std::make_shared<Message>(std::move(a.data), std::move(a.topic), a.attempt, self, id));
    }
    return out;
  }

  // Any thread. Paho already acknowledged each message on arrival (see the
  // header comment): nothing to tell the broker.
  void ack(const std::vector<std::uint64_t>&) override {
    std::lock_guard lock(mu_);
    if (closed_) throw Error(ErrorCode::Closed, "MQTT subscriber for " + s_.url + " is closed");
  }

  void nack(const std::vector<std::uint64_t>&) override {
    throw Error(ErrorCode::Unsupported,
                "MQTT has no negative acknowledgement, and Paho acknowledges each message to the broker on "
                "arrival: nack cannot redeliver (capabilities().nack is false)");
  }

  std::optional<bool> connected() const override { return conn_->connected(); }
  Capabilities capabilities() const override {
    return mqtt_capabilities(s_, conn_ ? conn_->broker_max_packet() : 0, true);
  }

  // Disconnects. Buffered messages are dropped: the broker considers them
  // delivered already. A persistent session keeps what is published meanwhile.
  void close() override {
    {
      std::lock_guard lock(mu_);
      if (closed_) return;
      closed_ = true;
      queue_.clear();
    }
    cv_.notify_all();
    if (conn_) conn_->close();
  }

 private:
  struct Arrived {
    OutMessage data;
    std::string topic;
    std::uint32_t attempt;
  };

  void subscribe_and_wait() {
    const std::string context = "MQTT subscribe to '" + filter_ + "' at " + s_.where + " (" + s_.url + ")";
    try {
      auto tok = conn_->client().subscribe(filter_, s_.qos);
      if (!tok->wait_for(s_.connect_timeout))
        throw Error(ErrorCode::Unavailable,
                    context + ": no SUBACK within connect_timeout_ms=" + std::to_string(s_.connect_timeout.count()));
      auto rsp = tok->get_subscribe_response();
      const auto& codes = rsp.get_reason_codes();
      int granted = codes.empty() ? s_.qos : static_cast<int>(codes.front());
      if (granted >= 0x80) throw Error(mqtt_error(granted, context));
      if (granted < s_.qos)
        throw Error(ErrorCode::Unsupported, context + ": the broker granted QoS " + std::to_string(granted) +
                                                " for qos=" + std::to_string(s_.qos) +
                                                "; ask for that QoS explicitly to accept it");
    } catch (const mqtt::exception& e) {
      throw mqtt_error(native_code(e.get_return_code(), e.get_reason_code()), context);
    }
    subscribed_.store(true, std::memory_order_release);
  }

  // On Paho's callback thread after an automatic reconnect: the broker lost a
  // clean session's subscription, and resubscribing a persistent one is
  // harmless. Not waited for here (the callback must not block).
  void resubscribe() {
    if (!subscribed_.load(std::memory_order_acquire)) return;
    try {
      conn_->client().subscribe(filter_, s_.qos);
    } catch (const std::exception&) {
      // The connection dropped again; the next reconnect tries again.
    }
  }

  // On Paho's callback thread, under Paho's lock: convert and queue, nothing more.
  void arrived(mqtt::const_message_ptr msg) {
    Arrived a;
    a.topic = msg->get_topic();
    a.attempt = msg->is_duplicate() ? 2 : 1;
    a.data.payload = msg->get_payload_ref().ptr();  // shared, not copied
    if (!a.data.payload) a.data.payload = make_bytes(std::string());
    a.data.timestamp_ms = 0;
    const auto& props = msg->get_properties().c_struct();
    detail::mqtt::Envelope env;
    for (int i = 0; i < props.count; ++i) {
      const MQTTProperty& p = props.array[i];
      if (p.identifier != MQTTPROPERTY_CODE_USER_PROPERTY) continue;
      detail::mqtt::decode_user_property(std::string_view(p.value.data.data ? p.value.data.data : "", p.value.data.len),
                                         std::string_view(p.value.value.data ? p.value.value.data : "", p.value.value.len),
                                         env);
    }
    a.data.key = std::move(env.key);
    a.data.headers = std::move(env.headers);
    if (env.timestamp_ms) a.data.timestamp_ms = *env.timestamp_ms;
    if (a.data.timestamp_ms == 0) a.data.timestamp_ms = now_ms();  // 3.1.1, or a foreign publisher
    bool wake;
    {
      std::lock_guard lock(mu_);
      if (closed_) return;
      wake = queue_.empty();
      queue_.push_back(std::move(a));
    }
    if (wake) cv_.notify_one();
  }

  const Settings s_;
  std::string filter_;
  std::atomic<bool> subscribed_{false};
  std::atomic<std::uint64_t> next_ack_id_{1};
  std::mutex mu_;
  std::condition_variable cv_;
  // Unbounded: Paho has acknowledged these already and cannot be slowed down
  // without stalling every MQTT connection of the process (one callback thread).
  std::deque<Arrived> queue_;
  bool closed_ = false;
  std::unique_ptr<Connection> conn_;  // last: destroyed first, while the members its hooks use live
};

// ---------------------------------------------------------------- driver

std::vector<OptionSpec> connection_options() {
  std::vector<OptionSpec> specs{
      {"qos", OptionType::Int, "1",
       "MQTT quality of service, one of 0, 1, 2 (MQTT defines no other): 0 at most once, 1 at least once "
       "(a publish result is the PUBACK), 2 exactly once on the wire (the PUBCOMP). A subscriber receives each "
       "message at the lower of the publisher's and its own QoS",
       {}, 0, 2},
      {"version", OptionType::Choice, "5",
       "MQTT protocol version; 5 carries keys and headers (user properties) and shared subscriptions",
       {"3.1.1", "5"}},
      {"client_id", OptionType::String, "",
       "MQTT client identifier; empty: a unique one per publisher/subscriber. One connection per id: a second "
       "connection with the same id takes the session over"},
      {"clean_session", OptionType::Bool, "true",
       "true: the broker forgets the session at disconnect; false: a persistent session (with a fixed client_id, "
       "subscriptions and QoS>=1 messages wait for the client while it is away). A publisher sends its "
       "unacknowledged QoS>=1 messages again after a reconnect either way"},
      {"session_expiry_s", OptionType::Int, "-1",
       "MQTT 5: seconds the broker keeps the session after a disconnect; -1: 0 with clean_session=true, never "
       "expires with clean_session=false",
       {}, -1, 4294967295LL},
      {"keepalive_s", OptionType::Int, "60", "MQTT keep alive: seconds between pings on an idle connection; 0: none",
       {}, 0, 65535},
      {"connect_timeout_ms", OptionType::Int, "10000",
       "bound on name resolution plus CONNACK (and SUBACK) when opening; also how long a publish waits for a lost "
       "connection to come back when max_inflight messages are outstanding",
       {}, 1, 3600000},
  };
  for (auto& spec : detail::tls_option_specs("mqtts")) specs.push_back(std::move(spec));
  return specs;
}

// One class for both schemes: mqtts:// is the same protocol over TLS.
class MqttDriver final : public Driver {
 public:
  explicit MqttDriver(bool tls) : tls_(tls) {}
  std::string scheme() const override { return tls_ ? "mqtts" : "mqtt"; }
  std::string description() const override {
    return std::string("MQTT 3.1.1/5 (paho-mqtt-cpp)") + (tls_ ? " over TLS" : "") +
           ": QoS 0/1/2, + and # filters, shared subscriptions (?group=, MQTT 5), "
           "keys and headers as MQTT 5 user properties, automatic reconnect; Paho acknowledges messages on arrival";
  }
  std::vector<OptionSpec> sender_options() const override {
    auto specs = connection_options();
    specs.push_back({"retain", OptionType::Bool, "false",
                     "publish with the MQTT retain flag: the broker keeps the last message of the topic for new "
                     "subscribers"});
    specs.push_back({"max_inflight", OptionType::Int, "100",
                     "messages outstanding (sent, result not yet in) per publisher; more pipelines deeper, but "
                     "Paho's per-publish cost grows with its queue",
                     {}, 1, 65535});
    specs.push_back({"drop_headers", OptionType::Bool, "false",
                     "true: publish without the message key and headers (needed to publish keyed messages or "
                     "messages with headers over MQTT 3.1.1, which has no properties)"});
    specs.push_back({"send_timestamp", OptionType::Bool, "false",
                     "MQTT 5: carry each message's publish time as user property omnibus-ts, so that subscribers "
                     "see it as timestamp_ms (one more property per message, which costs Paho noticeably); "
                     "false: subscribers stamp messages on arrival"});
    return specs;
  }
  std::vector<OptionSpec> receiver_options() const override {
    auto specs = connection_options();
    specs.push_back({"group", OptionType::String, "",
                     "shared subscription ($share/GROUP/filter, MQTT 5): subscribers of one group share the "
                     "messages round robin; empty: every subscriber gets every message"});
    return specs;
  }

  std::shared_ptr<Sender> open_sender(const Url& url, const OptionValues& options) override {
    Settings s = common_settings(url, options);
    s.retain = options.get_bool("retain");
    s.max_inflight = static_cast<int>(options.get_int("max_inflight"));
    s.drop_headers = options.get_bool("drop_headers");
    s.send_timestamp = options.get_bool("send_timestamp");
    if (s.send_timestamp && !s.v5())
      throw Error(ErrorCode::InvalidArgument,
                  "send_timestamp=true needs MQTT 5 user properties; use version=5 (" + s.url + ")");
    check_topic_name(s.topic, s.url);
    return std::make_shared<MqttSender>(std::move(s));
  }

  std::shared_ptr<Receiver> open_receiver(const Url& url, const OptionValues& options,
                                          const ReceiverSettings&) override {
    // ReceiverSettings::manual_ack cannot change anything: Paho acknowledges
    // on arrival; capabilities() says so (delivery_guarantee at-most-once).
    Settings s = common_settings(url, options);
    s.group = options.get_string("group");
    if (s.topic.rfind("$share/", 0) == 0) {
      auto slash = s.topic.find('/', 7);
      if (slash == std::string::npos || slash == 7 || slash + 1 == s.topic.size())
        throw Error(ErrorCode::InvalidArgument, "shared subscription '" + s.topic + "' of " + s.url +
                                                    " must be $share/GROUP/FILTER (MQTT 5 §4.8.2)");
      std::string group = s.topic.substr(7, slash - 7);
      if (!s.group.empty() && s.group != group)
        throw Error(ErrorCode::InvalidArgument, "the URL names shared subscription group '" + group +
                                                    "' and group='" + s.group + "' was given too (" + s.url + ")");
      s.group = group;
      s.topic = s.topic.substr(slash + 1);
    }
    if (!s.group.empty()) {
      if (!s.v5())
        throw Error(ErrorCode::Unsupported, "shared subscriptions (group='" + s.group + "') are an MQTT 5 feature: "
                                                "use version=5 (" + s.url + ")");
      if (s.group.find_first_of("/+#") != std::string::npos || utf8_problem(s.group))
        throw Error(ErrorCode::InvalidArgument, "shared subscription group '" + s.group + "' of " + s.url +
                                                    " must be UTF-8 text without '/', '+' or '#' (MQTT 5 §4.8.2)");
    }
    check_topic_filter(s.topic, s.url);
    s.max_inflight = 100;  // only sizes Paho's (unused) publish queue for a subscriber
    return std::make_shared<MqttReceiver>(std::move(s));
  }

 private:
  bool tls_;
};

}  // namespace

std::shared_ptr<Driver> make_mqtt_driver() { return std::make_shared<MqttDriver>(false); }
std::shared_ptr<Driver> make_mqtts_driver() { return std::make_shared<MqttDriver>(true); }

}  // namespace omnibus
