// nats:// -- core NATS and JetStream through cnats (the NATS C client, 3.4).
//
// URL: nats://[user:password@]host[:port][,host[:port]...]/subject?options.
// The port defaults to 4222; several hosts are one server pool (cnats
// randomizes it, as every NATS client does, and learns the cluster's other
// members from the server). The path is a NATS subject: '.'-separated tokens,
// none empty, no whitespace or control characters. A publisher's subject is
// literal; a subscriber's may use the wildcards '*' (one token) and '>' (the
// rest, last token only). Each publisher and each subscriber is one NATS
// connection of its own.
//
// Two modes, chosen by the URL:
//
// Core NATS (no stream=): at-most-once. A publish goes to the subscriptions
// that exist when the server routes it. A subscriber without group= has a
// private subscription that sees what is published after subscriber()
// returned (the SUB is confirmed with a PING/PONG before open returns, so no
// early message is lost). group=G (queue=G is the same, for NATS users) is a
// NATS queue group: each message goes to one member. There is no ack and no
// redelivery: ack() is accepted and does nothing, nack() raises Unsupported.
// Publish results: with flush=true (the default) every batch ends with a
// PING and its messages succeed when the PONG is back -- the server has
// received them (it routes before it answers); a batch whose PONG does not
// come within ack_timeout_ms fails with Timeout, "may or may not have been
// delivered" (cnats keeps what it could not write while reconnecting and
// sends it after the reconnect). flush=false reports success when cnats
// took the message into its write buffer.
//
// JetStream (stream=NAME): at-least-once. Both sides bind to stream NAME, and
// create it when missing (create_stream=true) with the URL's subject as its
// only subject, storage=file (the default) or memory, replicas. An existing
// stream is used as it is; a publisher fails at open when the stream does not
// capture its subject (it would get no acknowledgement). Publishing is
// asynchronous (js_PublishMsgAsync): each message's result is its own PubAck
// from the stream (or the error the stream sent, or Timeout after
// ack_timeout_ms); at most max_inflight messages wait for their PubAck.
// msg_id=true adds a unique Nats-Msg-Id per message so that the stream drops
// a message published twice within its duplicate window; a Nats-Msg-Id header
// given by the application is sent as it is and has the same effect.
// Subscribing is a pull consumer (pull requests on an inbox): without
// group= or durable=, an ephemeral consumer that starts with the messages
// stored after subscriber() returned (deliver=new; deliver=all replays the
// stream, deliver=last starts with the last message) and is deleted when the
// subscriber closes (or by the server after inactive_threshold_ms without a
// fetch). With group=G (or durable=D, which wins as the name) a durable
// consumer of that name, created when missing (deliver=all: from the first
// message the consumer has not seen), shared by every subscriber that names
// it: the members compete for its messages, and it outlives them. An existing
// durable keeps its configuration, except ack_wait / max_deliver /
// max_ack_pending when they are given explicitly (the consumer is updated).
// Acks: ack() sends +ACK; nack() sends -NAK (redelivered at once), or +TERM
// when the message is at its last attempt of max_deliver (the server would
// not redeliver it anyway; TERM says so and raises its advisory). A message
// neither acked nor nacked within ack_wait (ack_deadline_ms is the portable
// name of the same option) is redelivered. delivery_attempt is the server's
// NumDelivered, so it counts redeliveries across consumers; timestamp_ms is
// the time the stream stored the message. Closing a subscriber NAKs its
// unacked messages (those buffered in the subscriber included), so that the
// other members of the group get them at once. Acks are fire-and-forget
// publishes: an ack lost with the connection means a redelivery after
// ack_wait, never a loss.
//
// Request-reply (core only): Publisher::request publishes the request with a
// reply subject <inbox>.<n>, where <inbox> is one _INBOX.<nuid> per publisher
// with one wildcard subscription <inbox>.* for all its requests (as cnats'
// and nats-py's own request do), created on the first request. The first
// reply to <inbox>.<n> is the answer; later ones (several subscribers without
// a queue group each reply) are dropped. The server's no-responders status
// (nothing subscribes to the subject) ends the request at once with Timeout.
// A subscriber's message carries the requester's reply subject as reply_to;
// Subscriber reply publishes the answer there with the same key and header
// encoding as any message, so that nats-py and other clients interoperate
// both ways. A request in flight when the connection drops ends by timeout
// (the reply subscription comes back with the reconnect). JetStream
// publishers have no request-reply (capabilities().request_reply is false):
// a JetStream publish is answered by the stream's PubAck, not by a subscriber.
//
// Keys and headers: NATS has no key. The key travels as header Omnibus-Key
// (or Omnibus-Key-B64), the publish time with send_timestamp=true as
// Omnibus-Ts, headers as themselves when every NATS client can carry them
// unchanged, else as Omnibus-B64, with Omnibus-Order to keep the order between
// names that cnats' hash table loses. The rules, and why: envelope.hpp.
// Headers from other clients arrive as they are (order between names as cnats
// gives it). A message without key, headers or timestamp is a plain PUB.
//
// Sizes: a message (payload plus encoded headers) above the server's
// max_payload (and, with JetStream, the stream's max_msg_size) fails alone
// with ResourceExhausted before it is sent; the rest of its batch goes on.
//
// Connections and state: cnats reconnects by itself, forever by default
// (max_reconnects), waiting reconnect_wait_ms after the first failed round
// over the pool, the ceiling doubling each round up to reconnect_max_wait_ms,
// the wait drawn below it (core/backoff.hpp) so that many clients do not come
// back in step.
// Subscriptions (core, and the pull subscription's inbox) are restored by
// cnats. While disconnected, publishes are kept in cnats' reconnect buffer
// (reconnect_buffer_bytes; beyond it a message fails with Unavailable).
// Each connection keeps its state (connected, reconnecting, closed), its
// disconnect and reconnect counts and the last asynchronous error (slow
// consumer, permission violation) from cnats' callbacks; errors name the
// state and the last error. The core has no hook to show the state to the
// application (Capabilities are static), so it shows in error messages only.
//
// Threads: cnats runs, per connection, a reader and a flusher thread, and one
// process-wide thread for connection callbacks; JetStream PubAcks arrive on
// the subscription thread of the publisher's reply inbox. This driver adds
// none. cnats callbacks reach the driver through a registry of weak
// references keyed by an id (the closure), never through a raw pointer, so a
// callback that cnats runs after a publisher or subscriber closed finds
// nothing and returns. The objects that callbacks touch own no cnats handle
// and are never destroyed on a cnats thread. nats_Close() is never called:
// cnats' library state is process-wide and other connections may live.
//
// Errors: natsStatus codes and JetStream API error codes map onto ErrorCode;
// native_code is the JetStream error code (10000+) when the server sent one,
// else the natsStatus.

#include "drivers/nats/nats_driver.hpp"

#include "core/backoff.hpp"
#include "drivers/nats/envelope.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <random>
#include <string_view>
#include <unordered_map>

#include <nats/nats.h>

#include "omnibus/driver.hpp"
#include "omnibus/error.hpp"

namespace omnibus {
namespace {

using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

using detail::nats::HeaderFields;
using detail::nats::kHeaderLineBytes;
using detail::nats::kTimestampHeader;

// ---------------------------------------------------------------- RAII

struct NatsDeleter {
  void operator()(natsOptions* p) const { natsOptions_Destroy(p); }
  void operator()(natsConnection* p) const { natsConnection_Destroy(p); }
  void operator()(jsCtx* p) const { jsCtx_Destroy(p); }
  void operator()(natsSubscription* p) const { natsSubscription_Destroy(p); }
  void operator()(natsMsg* p) const { natsMsg_Destroy(p); }
  void operator()(jsStreamInfo* p) const { jsStreamInfo_Destroy(p); }
  void operator()(jsConsumerInfo* p) const { jsConsumerInfo_Destroy(p); }
  void operator()(jsMsgMetaData* p) const { jsMsgMetaData_Destroy(p); }
};
template <class T>
using NatsPtr = std::unique_ptr<T, NatsDeleter>;

// Arrays that cnats allocates with malloc and hands over (header keys/values).
struct FreeDeleter {
  void operator()(const char** p) const { std::free(const_cast<char**>(p)); }
};
using CStrArray = std::unique_ptr<const char*, FreeDeleter>;

// ---------------------------------------------------------------- callback registry

// cnats callbacks get a void* closure. It is an id into this registry, not a
// pointer: a callback that runs after its owner closed finds nothing.
template <class T>
class Registry {
 public:
  static Registry& instance() {
    static auto* r = new Registry;  // never destroyed: cnats threads may call in during exit
    return *r;
  }
  void* add(const std::shared_ptr<T>& p) {
    std::lock_guard lock(mu_);
    const std::uintptr_t id = ++next_;
    map_.emplace(id, p);
    return reinterpret_cast<void*>(id);
  }
  void remove(void* key) {
    std::lock_guard lock(mu_);
    map_.erase(reinterpret_cast<std::uintptr_t>(key));
  }
  std::shared_ptr<T> find(void* key) {
    std::lock_guard lock(mu_);
    auto it = map_.find(reinterpret_cast<std::uintptr_t>(key));
    return it == map_.end() ? nullptr : it->second.lock();
  }

 private:
  std::mutex mu_;
  std::uintptr_t next_ = 0;
  std::unordered_map<std::uintptr_t, std::weak_ptr<T>> map_;
};

// ---------------------------------------------------------------- subjects

// Why `subject` is not a valid NATS subject, or nullptr.
const char* subject_problem(std::string_view subject, bool wildcards) {
  if (subject.empty()) return "a subject is at least one token";
  for (unsigned char c : subject) {
    if (c <= 0x20 || c == 0x7f) return "a subject may not contain whitespace or control characters";
  }
  std::size_t start = 0;
  for (;;) {
    std::size_t end = subject.find('.', start);
    std::string_view token = subject.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    if (token.empty()) return "a subject's tokens (between '.') may not be empty";
    if (token == "*" || token == ">") {
      if (!wildcards) return "the wildcards '*' and '>' may only appear in a subscriber's subject, never in a publish";
      if (token == ">" && end != std::string_view::npos) return "'>' must be the last token";
    }
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return nullptr;
}

// Does `subject` (literal) match `pattern` (with '*' and '>')?
bool subject_matches(std::string_view pattern, std::string_view subject) {
  std::size_t p = 0, s = 0;
  for (;;) {
    std::size_t pe = pattern.find('.', p), se = subject.find('.', s);
    std::string_view pt = pattern.substr(p, pe == std::string_view::npos ? std::string_view::npos : pe - p);
    std::string_view st = subject.substr(s, se == std::string_view::npos ? std::string_view::npos : se - s);
    if (pt == ">") return true;
    if (pt != "*" && pt != st) return false;
    if (pe == std::string_view::npos || se == std::string_view::npos) return pe == se;
    p = pe + 1;
    s = se + 1;
  }
}

// Stream, consumer and queue names: no whitespace; stream and consumer names
// are also file names on the server.
const char* name_problem(std::string_view name, bool jetstream) {
  if (name.empty()) return "may not be empty";
  for (unsigned char c : name) {
    if (c <= 0x20 || c == 0x7f) return "may not contain whitespace or control characters";
    if (jetstream && std::strchr(".*>/\\", c) && c != 0) return "may not contain '.', '*', '>', '/' or '\\'";
  }
  return nullptr;
}

// "30000" (ms), "500ms", "30s", "2m", "1.5s" -> milliseconds; -1 when malformed.
std::int64_t parse_duration_ms(const std::string& text) {
  if (text.empty()) return -1;
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || v < 0) return -1;
  std::string unit(end);
  double ms;
  if (unit.empty() || unit == "ms") ms = v;
  else if (unit == "s") ms = v * 1000;
  else if (unit == "m") ms = v * 60000;
  else if (unit == "h") ms = v * 3600000;
  else return -1;
  return static_cast<std::int64_t>(ms + 0.5);
}

// ---------------------------------------------------------------- errors

Error nats_error(natsStatus s, const std::string& context, jsErrCode jerr = static_cast<jsErrCode>(0)) {
  // The thread's last error has the server's text for JetStream API errors.
  std::string detail;
  if (const char* last = nats_GetLastError(nullptr); last && *last) detail = last;
  const char* text = natsStatus_GetText(s);
  std::string what = text ? text : "cnats error";
  if (!detail.empty() && detail != what) what += ": " + detail;
  ErrorCode code = ErrorCode::Unavailable;
  bool retryable = true;
  switch (s) {
    case NATS_TIMEOUT:
      code = ErrorCode::Timeout;
      break;
    case NATS_MAX_PAYLOAD:
    case NATS_SLOW_CONSUMER:
    case NATS_INSUFFICIENT_BUFFER:
    case NATS_NO_MEMORY:
      code = ErrorCode::ResourceExhausted;
      break;
    case NATS_INVALID_SUBJECT:
    case NATS_INVALID_ARG:
    case NATS_INVALID_QUEUE_NAME:
    case NATS_INVALID_TIMEOUT:
    case NATS_ADDRESS_MISSING:
      code = ErrorCode::InvalidArgument;
      break;
    case NATS_NOT_FOUND:
      code = ErrorCode::NotFound;
      break;
    case NATS_CONNECTION_AUTH_FAILED:
    case NATS_NOT_PERMITTED:
      retryable = false;
      break;
    case NATS_SECURE_CONNECTION_WANTED:
    case NATS_SECURE_CONNECTION_REQUIRED:
    case NATS_SSL_ERROR:
      retryable = false;  // a TLS mismatch does not heal by itself
      break;
    case NATS_NO_SERVER_SUPPORT:
      code = ErrorCode::Unsupported;
      break;
    case NATS_NO_RESPONDERS:
      what += " (nothing answered on the server: JetStream not enabled, or not ready yet)";
      break;
    case NATS_ERR:
      retryable = false;
      break;
    default:
      break;
  }
  switch (static_cast<int>(jerr)) {
    case 0:
      break;
    case JSStreamNotFoundErr:
    case JSConsumerNotFoundErr:
      code = ErrorCode::NotFound;
      break;
    case JSStreamMessageExceedsMaximumErr:
    case JSInsufficientResourcesErr:
      code = ErrorCode::ResourceExhausted;
      break;
    case JSNotEnabledErr:
    case JSNotEnabledForAccountErr:
      code = ErrorCode::Unsupported;
      break;
    case JSStreamSubjectOverlapErr:
    case JSConsumerFilterNotSubsetErr:
    case JSConsumerBadDurableNameErr:
    case JSStreamNameExistErr:
    case JSConsumerNameExistErr:
    case JSStreamWrongLastMsgIDErr:
    case JSStreamWrongLastSequenceErr:
      code = ErrorCode::InvalidArgument;
      break;
    case JSStreamStoreFailedErr:
      code = ErrorCode::Unavailable;
      retryable = true;
      break;
    default:
      break;
  }
  if (code != ErrorCode::Unavailable && code != ErrorCode::Timeout && code != ErrorCode::ResourceExhausted)
    retryable = false;
  const int native = jerr ? static_cast<int>(jerr) : static_cast<int>(s);
  return Error(code,
               context + ": " + what + " (" + (jerr ? "JetStream error " : "natsStatus ") + std::to_string(native) + ")",
               native, retryable);
}

// ---------------------------------------------------------------- settings

struct Settings {
  std::string url;  // redacted, for messages
  std::vector<std::string> servers;
  std::string where;  // host:port,... for messages
  std::string user, password;
  bool has_user = false;
  // TLS and the other ways to log in (user/password above; a token is a user without password)
  bool tls = false;
  std::string tls_ca, tls_cert, tls_key;
  bool tls_verify = true;
  std::string creds, nkey, nkey_seed;
  std::string subject;
  std::string name;
  std::chrono::milliseconds connect_timeout{5000};
  std::int64_t reconnect_wait_ms = 100;
  std::int64_t reconnect_max_wait_ms = 5000;
  int max_reconnects = -1;
  std::int64_t reconnect_buffer_bytes = 8 << 20;
  std::int64_t ping_interval_ms = 120000;
  std::int64_t request_timeout_ms = 5000;
  // JetStream
  std::string stream;
  bool create_stream = true;
  bool memory_storage = false;
  int replicas = 1;
  // publisher
  bool flush = true;
  bool send_timestamp = false;
  std::int64_t ack_timeout_ms = 10000;
  std::size_t max_inflight = 4096;
  bool msg_id = false;
  // subscriber
  std::string group;
  std::string durable;
  std::string deliver;  // "", new, all, last
  std::int64_t ack_wait_ms = 30000;
  bool ack_wait_given = false;
  std::int64_t max_deliver = -1;
  bool max_deliver_given = false;
  std::int64_t max_ack_pending = 20000;
  bool max_ack_pending_given = false;
  std::int64_t inactive_threshold_ms = 300000;
  std::int64_t pending_limit = 65536;

  bool jetstream() const { return !stream.empty(); }
  std::string consumer() const { return !durable.empty() ? durable : group; }
};

Settings common_settings(const Url& url, const OptionValues& o) {
  Settings s;
  s.url = url.text;
  if (url.hosts.empty() || url.hosts[0].host.empty())
    throw Error(ErrorCode::InvalidArgument,
                "nats:// URL " + url.text + " names no server: use nats://[user:password@]host[:port]/subject");
  for (const auto& h : url.hosts) {
    if (h.host.empty())
      throw Error(ErrorCode::InvalidArgument, "nats:// URL " + url.text + " has an empty host in its server list");
    const std::uint16_t port = h.port ? h.port : 4222;
    const bool v6 = h.host.find(':') != std::string::npos;
    std::string hp = (v6 ? "[" + h.host + "]" : h.host) + ":" + std::to_string(port);
    s.servers.push_back("nats://" + hp);
    if (!s.where.empty()) s.where += ",";
    s.where += hp;
  }
  s.user = url.user;
  s.password = url.password;
  s.has_user = url.has_userinfo && !(url.user.empty() && url.password.empty());
  s.tls_ca = o.get_string("tls_ca");
  s.tls_cert = o.get_string("tls_cert");
  s.tls_key = o.get_string("tls_key");
  s.tls_verify = o.get_bool("tls_verify");
  s.tls = o.get_bool("tls") || !s.tls_ca.empty() || !s.tls_cert.empty();
  if (s.tls_cert.empty() != s.tls_key.empty())
    throw Error(ErrorCode::InvalidArgument, "nats:// " + url.text + ": tls_cert and tls_key go together (the client "
                                            "certificate and its private key, PEM files); one of them is missing");
  s.creds = o.get_string("creds");
  s.nkey = o.get_string("nkey");
  s.nkey_seed = o.get_string("nkey_seed");
  if (s.nkey.empty() != s.nkey_seed.empty())
    throw Error(ErrorCode::InvalidArgument, "nats:// " + url.text + ": nkey (the public key, U...) and nkey_seed (the "
                                            "file holding its seed, SU...) go together; one of them is missing");
  const int ways = (s.has_user ? 1 : 0) + (s.creds.empty() ? 0 : 1) + (s.nkey.empty() ? 0 : 1);
  if (ways > 1)
    throw Error(ErrorCode::InvalidArgument, "nats:// " + url.text + ": give one way to log in: USER:PASSWORD@ or "
                                            "TOKEN@ (or password_file=), creds=, or nkey= with nkey_seed=");
  if (url.path.empty())
    throw Error(ErrorCode::InvalidArgument, "nats:// URL " + url.text + " names no subject: use nats://host[:port]/subject");
  s.subject = url.path;
  s.name = o.get_string("name");
  s.connect_timeout = std::chrono::milliseconds(o.get_int("connect_timeout_ms"));
  s.reconnect_wait_ms = o.get_int("reconnect_wait_ms");
  s.reconnect_max_wait_ms = std::max(o.get_int("reconnect_max_wait_ms"), s.reconnect_wait_ms);
  s.max_reconnects = static_cast<int>(o.get_int("max_reconnects"));
  s.ping_interval_ms = o.get_int("ping_interval_ms");
  s.request_timeout_ms = o.get_int("request_timeout_ms");
  s.stream = o.get_string("stream");
  if (!s.stream.empty()) {
    if (const char* why = name_problem(s.stream, true))
      throw Error(ErrorCode::InvalidArgument,
                  "stream name " + printable(s.stream) + " of " + url.text + " " + why + " (JetStream stream names)");
  }
  s.create_stream = o.get_bool("create_stream");
  s.memory_storage = o.get_string("storage") == "memory";
  s.replicas = static_cast<int>(o.get_int("replicas"));
  return s;
}

// ---------------------------------------------------------------- connection

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

using ConnSinks = Registry<ConnSink>;

void on_disconnected(natsConnection*, void* closure) {
  if (auto sink = ConnSinks::instance().find(closure)) {
    sink->disconnects.fetch_add(1, std::memory_order_relaxed);
    sink->note("disconnected from the server");
  }
}

void on_reconnected(natsConnection*, void* closure) {
  if (auto sink = ConnSinks::instance().find(closure)) {
    sink->reconnects.fetch_add(1, std::memory_order_relaxed);
    sink->note("");
  }
}

void on_closed(natsConnection*, void* closure) {
  if (auto sink = ConnSinks::instance().find(closure)) sink->note("");
}

void on_async_error(natsConnection*, natsSubscription*, natsStatus err, void* closure) {
  if (auto sink = ConnSinks::instance().find(closure)) {
    const char* t = natsStatus_GetText(err);
    sink->note(std::string("asynchronous error: ") + (t ? t : "?") + " (natsStatus " + std::to_string(err) + ")");
  }
}

// The engine's backoff (core/backoff.hpp), called by cnats after each failed
// round over the server pool; cnats counts the rounds.
std::int64_t reconnect_delay(natsConnection*, int attempts, void* closure) {
  std::int64_t lo = 100, hi = 5000;
  if (auto sink = ConnSinks::instance().find(closure)) {
    lo = sink->wait_min_ms;
    hi = sink->wait_max_ms;
  }
  thread_local std::minstd_rand rng{std::random_device{}()};
  return detail::backoff_delay(std::chrono::milliseconds(lo), std::chrono::milliseconds(hi),
                               static_cast<unsigned>(std::max(attempts - 1, 0)), rng)
      .count();
}

// What to check when connecting failed for a reason the user can fix; names
// who logged in, never the secret.
std::string login_hint(const Settings& s, natsStatus st) {
  std::string who = !s.creds.empty()       ? "the credentials of creds=" + s.creds
                    : !s.nkey.empty()      ? "nkey " + s.nkey
                    : s.has_user && !s.user.empty() && !s.password.empty() ? "user '" + s.user + "' and its password"
                    : s.has_user           ? "the token"
                                           : "no credentials";
  switch (st) {
    case NATS_CONNECTION_AUTH_FAILED:
    case NATS_NOT_PERMITTED:
      return " (the server refused the login with " + who + ": check them, or the server's authorization)";
    case NATS_SECURE_CONNECTION_REQUIRED:
      return " (the server requires TLS: add tls=true, and tls_ca= for a private CA)";
    case NATS_SECURE_CONNECTION_WANTED:
      return " (TLS was asked for, but the server does not offer it: drop tls/tls_ca/tls_cert, or enable TLS on the server)";
    case NATS_SSL_ERROR:
      return " (TLS handshake failed: is tls_ca the CA that signed the server's certificate, does the certificate "
             "name the host in the URL, and does the server accept tls_cert?)";
    default:
      return "";
  }
}

class Connection {
 public:
  // send_asap: every publish is written at once instead of by cnats' flusher
  // thread (one write per message: for connections whose publishes are
  // latency-bound replies, not throughput-bound batches).
  Connection(const Settings& s, const std::string& role, bool send_asap = false)
      : role_(role), context_(role + " at " + s.where + " (" + s.url + ")") {
    sink_ = std::make_shared<ConnSink>();
    sink_->wait_min_ms = s.reconnect_wait_ms;
    sink_->wait_max_ms = s.reconnect_max_wait_ms;
    key_ = ConnSinks::instance().add(sink_);

    natsOptions* raw = nullptr;
    check(natsOptions_Create(&raw), "creating options");
    NatsPtr<natsOptions> opts(raw);
    std::vector<const char*> servers;
    for (const auto& sv : s.servers) servers.push_back(sv.c_str());
    check(natsOptions_SetServers(opts.get(), servers.data(), static_cast<int>(servers.size())), "server list");
    if (s.has_user && !s.user.empty() && !s.password.empty())
      check(natsOptions_SetUserInfo(opts.get(), s.user.c_str(), s.password.c_str()), "user");
    else if (s.has_user)  // nats://TOKEN@host, or a token from password_file=/password_env=
      check(natsOptions_SetToken(opts.get(), (s.user.empty() ? s.password : s.user).c_str()), "token");
    if (!s.creds.empty())
      check(natsOptions_SetUserCredentialsFromFiles(opts.get(), s.creds.c_str(), nullptr), "creds=" + s.creds);
    if (!s.nkey.empty())
      check(natsOptions_SetNKeyFromSeed(opts.get(), s.nkey.c_str(), s.nkey_seed.c_str()), "nkey_seed=" + s.nkey_seed);
    if (s.tls) {
      check(natsOptions_SetSecure(opts.get(), true), "tls");
      if (!s.tls_ca.empty()) check(natsOptions_LoadCATrustedCertificates(opts.get(), s.tls_ca.c_str()), "tls_ca=" + s.tls_ca);
      if (!s.tls_cert.empty())
        check(natsOptions_LoadCertificatesChain(opts.get(), s.tls_cert.c_str(), s.tls_key.c_str()),
              "tls_cert=" + s.tls_cert + " with tls_key=" + s.tls_key);
      if (!s.tls_verify) check(natsOptions_SkipServerVerification(opts.get(), true), "tls_verify");
    }
    if (!s.name.empty()) check(natsOptions_SetName(opts.get(), s.name.c_str()), "name");
    check(natsOptions_SetTimeout(opts.get(), s.connect_timeout.count()), "connect_timeout_ms");
    check(natsOptions_SetMaxReconnect(opts.get(), s.max_reconnects), "max_reconnects");
    check(natsOptions_SetReconnectWait(opts.get(), s.reconnect_wait_ms), "reconnect_wait_ms");
    check(natsOptions_SetCustomReconnectDelay(opts.get(), reconnect_delay, key_), "reconnect delay");
    check(natsOptions_SetReconnectBufSize(opts.get(), static_cast<int>(s.reconnect_buffer_bytes)), "reconnect_buffer_bytes");
    check(natsOptions_SetPingInterval(opts.get(), s.ping_interval_ms), "ping_interval_ms");
    check(natsOptions_SetFailRequestsOnDisconnect(opts.get(), true), "requests");
    if (send_asap) check(natsOptions_SetSendAsap(opts.get(), true), "send_asap");
    check(natsOptions_SetDisconnectedCB(opts.get(), on_disconnected, key_), "callbacks");
    check(natsOptions_SetReconnectedCB(opts.get(), on_reconnected, key_), "callbacks");
    check(natsOptions_SetClosedCB(opts.get(), on_closed, key_), "callbacks");
    check(natsOptions_SetErrorHandler(opts.get(), on_async_error, key_), "callbacks");

    natsConnection* nc = nullptr;
    natsStatus st = natsConnection_Connect(&nc, opts.get());
    if (st != NATS_OK) {
      Error e = nats_error(st, "NATS " + context_ + ": cannot connect" + login_hint(s, st));
      ConnSinks::instance().remove(key_);
      throw e;
    }
    nc_.reset(nc);
  }

  ~Connection() { close(); }

  // Flushes what is buffered (bounded), closes and destroys the connection.
  // Idempotent. Callbacks that cnats still runs find no sink.
  void close() {
    if (!nc_) return;
    natsConnection_FlushTimeout(nc_.get(), 1000);
    natsConnection_Close(nc_.get());
    nc_.reset();
    ConnSinks::instance().remove(key_);
  }

  natsConnection* get() const { return nc_.get(); }
  ConnSink& sink() { return *sink_; }
  bool connected() const { return nc_ && natsConnection_Status(nc_.get()) == NATS_CONN_STATUS_CONNECTED; }
  std::int64_t max_payload() const { return nc_ ? natsConnection_GetMaxPayload(nc_.get()) : 0; }

  // "connected", "reconnecting (3 disconnects, last error: ...)", for messages.
  std::string state() const {
    if (!nc_) return "closed";
    std::string out;
    switch (natsConnection_Status(nc_.get())) {
      case NATS_CONN_STATUS_CONNECTED: out = "connected"; break;
      case NATS_CONN_STATUS_RECONNECTING: out = "reconnecting"; break;
      case NATS_CONN_STATUS_CONNECTING: out = "connecting"; break;
      case NATS_CONN_STATUS_CLOSED: out = "closed (max_reconnects reached)"; break;
      default: out = "disconnected"; break;
    }
    const auto d = sink_->disconnects.load(std::memory_order_relaxed);
    if (d) out += ", " + std::to_string(d) + " disconnect(s), " + std::to_string(sink_->reconnects.load()) + " reconnect(s)";
    std::string last = sink_->error();
    if (!last.empty()) out += ", last: " + last;
    return out;
  }
  const std::string& context() const { return context_; }

 private:
  // Setting an option fails only on what the user gave (a file that does not
  // load, a malformed key): InvalidArgument, with cnats' reason.
  void check(natsStatus st, const std::string& what) {
    if (st == NATS_OK) return;
    Error e = nats_error(st, "NATS " + context_ + ": " + what);
    ConnSinks::instance().remove(key_);
    throw Error(st == NATS_NO_MEMORY ? ErrorCode::ResourceExhausted : ErrorCode::InvalidArgument, e.what(), e.native_code());
  }

  std::string role_;
  std::string context_;
  std::shared_ptr<ConnSink> sink_;
  void* key_ = nullptr;
  NatsPtr<natsConnection> nc_;
};

// ---------------------------------------------------------------- headers

// The envelope rules are in envelope.cpp; these convert to and from cnats.

HeaderFields encode_headers(const OutMessage& m, bool send_timestamp) {
  return detail::nats::encode_headers(m, send_timestamp);
}

// Fills out.key, out.headers and (from Omnibus-Ts) out.timestamp_ms.
void decode_headers(natsMsg* msg, OutMessage& out) {
  const char** raw_keys = nullptr;
  int nkeys = 0;
  if (natsMsgHeader_Keys(msg, &raw_keys, &nkeys) != NATS_OK || nkeys == 0) {
    std::free(const_cast<char**>(raw_keys));
    return;
  }
  CStrArray keys(raw_keys);
  detail::nats::ReceivedHeaders received;
  received.reserve(static_cast<std::size_t>(nkeys));
  for (int i = 0; i < nkeys; ++i) {
    const char* key = keys.get()[i];
    const char** raw_values = nullptr;
    int nvalues = 0;
    if (natsMsgHeader_Values(msg, key, &raw_values, &nvalues) != NATS_OK) {
      std::free(const_cast<char**>(raw_values));
      continue;
    }
    CStrArray values(raw_values);
    auto& slot = received.emplace_back(key, std::vector<std::string>{});
    slot.second.reserve(static_cast<std::size_t>(nvalues));
    for (int j = 0; j < nvalues; ++j) slot.second.emplace_back(values.get()[j]);
  }
  auto env = detail::nats::decode_headers(std::move(received));
  out.key = std::move(env.key);
  out.headers = std::move(env.headers);
  if (env.timestamp_ms) out.timestamp_ms = *env.timestamp_ms;
}

// A natsMsg for `m` with its headers; nullptr when it needs none (plain PUB).
NatsPtr<natsMsg> make_msg(const std::string& subject, const OutMessage& m, const HeaderFields& h,
                          const std::string& context, const char* reply = nullptr) {
  natsMsg* raw = nullptr;
  natsStatus st = natsMsg_Create(&raw, subject.c_str(), reply, m.payload->data(), static_cast<int>(m.payload->size()));
  if (st != NATS_OK) throw nats_error(st, context);
  NatsPtr<natsMsg> msg(raw);
  for (const auto& [name, value] : h.fields) {
    st = natsMsgHeader_Add(msg.get(), name.c_str(), value.c_str());
    if (st != NATS_OK) throw nats_error(st, context + ": header " + printable(name));
  }
  return msg;
}

// ---------------------------------------------------------------- JetStream setup

NatsPtr<jsCtx> make_js(Connection& conn, const Settings& s, jsOptions* extra = nullptr) {
  jsOptions jo;
  if (extra) jo = *extra;
  else jsOptions_Init(&jo);
  jo.Wait = s.request_timeout_ms;
  jsCtx* js = nullptr;
  natsStatus st = natsConnection_JetStream(&js, conn.get(), &jo);
  if (st != NATS_OK) throw nats_error(st, "NATS " + conn.context() + ": JetStream context");
  return NatsPtr<jsCtx>(js);
}

// Binds to stream s.stream, creating it when missing. Returns the stream's
// max_msg_size (0: none). For a publisher, checks that it captures the subject.
std::size_t ensure_stream(jsCtx* js, const Settings& s, const std::string& context, bool publisher) {
  const std::string what = context + ": JetStream stream '" + s.stream + "'";
  for (int attempt = 0; attempt < 2; ++attempt) {
    jsStreamInfo* raw = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    natsStatus st = js_GetStreamInfo(&raw, js, s.stream.c_str(), nullptr, &jerr);
    NatsPtr<jsStreamInfo> info(raw);
    if (st == NATS_OK && info) {
      const jsStreamConfig* cfg = info->Config;
      std::size_t limit = cfg && cfg->MaxMsgSize > 0 ? static_cast<std::size_t>(cfg->MaxMsgSize) : 0;
      if (publisher && cfg) {
        bool captured = false;
        std::string list;
        for (int i = 0; i < cfg->SubjectsLen; ++i) {
          if (subject_matches(cfg->Subjects[i], s.subject)) captured = true;
          list += (i ? ", " : "") + std::string(cfg->Subjects[i]);
        }
        if (cfg->SubjectsLen == 0) captured = s.subject == s.stream;  // a stream without subjects takes its name
        if (!captured)
          throw Error(ErrorCode::InvalidArgument, what + " does not capture subject " + printable(s.subject) +
                                                      " (its subjects: " + (list.empty() ? s.stream : list) +
                                                      "); publish to one of them, or name another stream");
      }
      return limit;
    }
    const bool missing = jerr == JSStreamNotFoundErr || st == NATS_NOT_FOUND;
    if (!missing) throw nats_error(st, what, jerr);
    if (!s.create_stream)
      throw Error(ErrorCode::NotFound, what + " does not exist (create_stream=false)", JSStreamNotFoundErr);
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = s.stream.c_str();
    const char* subjects[] = {s.subject.c_str()};
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = s.memory_storage ? js_MemoryStorage : js_FileStorage;
    cfg.Replicas = s.replicas;
    jsStreamInfo* created = nullptr;
    jerr = static_cast<jsErrCode>(0);
    st = js_AddStream(&created, js, &cfg, nullptr, &jerr);
    NatsPtr<jsStreamInfo> created_info(created);
    if (st == NATS_OK) return 0;
    if (jerr != JSStreamNameExistErr) throw nats_error(st, what + ": cannot create it", jerr);
    // Created meanwhile by someone else (with another configuration): bind to it.
  }
  throw Error(ErrorCode::Unavailable, what + ": neither found nor created");
}

// ---------------------------------------------------------------- capabilities

Capabilities nats_capabilities(const Settings& s, std::size_t max_bytes) {
  Capabilities c;
  const bool js = s.jetstream();
  c.delivery_guarantee = js ? "at-least-once" : "at-most-once";
  c.ordered_per_key = true;  // one connection publishes in order; one subscription receives in order
  c.key_affinity = false;    // queue groups and shared consumers hand out messages without looking at keys
  c.keys = true;             // as the Omnibus-Key header
  c.headers = true;
  c.nack = js;
  c.ack_deadline = js;       // ack_wait
  c.requeue_on_close = js;   // unacked messages are NAKed on close
  c.delivery_count = js;     // NumDelivered, kept by the server
  c.competing_consumers = true;
  c.dead_letter = false;     // after max_deliver the server stops delivering (an advisory, no queue)
  c.durable = js && !s.memory_storage;
  c.request_reply = !js;
  c.max_message_bytes = max_bytes;
  return c;
}

// ---------------------------------------------------------------- request-reply

OutMessage to_out(natsMsg* msg);

// The replies to one publisher's requests. Owns no cnats handle: the reply
// subscription's callback finds it through the registry, and pending
// requests keep it alive after their publisher closed.
struct ReplyMux {
  struct Slot {
    MessagePtr reply;
    bool no_responders = false;
    std::function<void()> ready;  // PendingReply::on_ready, run once settled
  };
  std::string prefix;  // "<inbox>.", the reply subjects' common part
  std::mutex mu;
  std::condition_variable cv;
  std::unordered_map<std::uint64_t, Slot> slots;  // token -> its reply, while the request waits
  std::uint64_t next_token = 1;
  bool closed = false;
};
using ReplyMuxes = Registry<ReplyMux>;

// cnats' subscription thread: hands the reply to its waiting request.
void on_reply(natsConnection*, natsSubscription*, natsMsg* raw, void* closure) {
  NatsPtr<natsMsg> msg(raw);
  auto mux = ReplyMuxes::instance().find(closure);
  if (!mux) return;
  std::string_view subject(natsMsg_GetSubject(msg.get()));
  if (subject.size() <= mux->prefix.size() || subject.substr(0, mux->prefix.size()) != mux->prefix) return;
  const std::uint64_t token = std::strtoull(std::string(subject.substr(mux->prefix.size())).c_str(), nullptr, 10);
  const bool no_responders = natsMsg_IsNoResponders(msg.get());
  MessagePtr reply;
  if (!no_responders) {
    OutMessage data = to_out(msg.get());
    if (data.timestamp_ms == 0) data.timestamp_ms = now_ms();
    reply = std::make_shared<Message>(std::move(data), std::string(subject), 1, nullptr, 0);
  }
  std::lock_guard lock(mux->mu);
  auto it = mux->slots.find(token);
  if (it == mux->slots.end() || it->second.reply || it->second.no_responders) return;  // abandoned, or answered
  it->second.reply = std::move(reply);
  it->second.no_responders = no_responders;
  mux->cv.notify_all();
  // Under mu: the slot's owner cannot erase it (and free what fn wakes) meanwhile.
  if (auto ready = std::move(it->second.ready)) ready();
}

class NatsPendingReply final : public PendingReply {
 public:
  NatsPendingReply(std::shared_ptr<ReplyMux> mux, std::uint64_t token, std::string context)
      : mux_(std::move(mux)), token_(token), context_(std::move(context)) {}
  ~NatsPendingReply() override {
    std::lock_guard lock(mux_->mu);
    mux_->slots.erase(token_);
  }

  MessagePtr wait(std::chrono::milliseconds timeout) override {
    std::unique_lock lock(mux_->mu);
    auto& slot = mux_->slots.at(token_);
    mux_->cv.wait_for(lock, timeout, [&] { return slot.reply || slot.no_responders || mux_->closed; });
    if (slot.reply) return slot.reply;
    if (slot.no_responders)
      throw Error(ErrorCode::Timeout,
                  context_ + ": no responders: nothing subscribes to the subject, so no reply can come (the server "
                             "said so at once; the request did not wait for its timeout)",
                  NATS_NO_RESPONDERS, true);
    if (mux_->closed) throw Error(ErrorCode::Closed, context_ + ": the publisher was closed while the request waited");
    return nullptr;
  }

  void on_ready(std::function<void()> fn) override {
    std::lock_guard lock(mux_->mu);
    auto& slot = mux_->slots.at(token_);
    if (slot.reply || slot.no_responders || mux_->closed)
      fn();
    else
      slot.ready = std::move(fn);
  }

 private:
  std::shared_ptr<ReplyMux> mux_;
  std::uint64_t token_;
  std::string context_;
};

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
    if (st == NATS_OK) {
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
      if (reply_sub_) natsSubscription_Unsubscribe(reply_sub_.get());
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
      stream_max_ = ensure_stream(js_.get(), s_, "NATS " + conn_.context(), true);
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

// ---------------------------------------------------------------- receivers

OutMessage to_out(natsMsg* msg) {
  OutMessage out;
  out.payload = make_bytes(std::string(natsMsg_GetData(msg) ? natsMsg_GetData(msg) : "",
                                       static_cast<std::size_t>(natsMsg_GetDataLength(msg))));
  decode_headers(msg, out);
  return out;
}

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
    if (sub_) natsSubscription_Unsubscribe(sub_.get());
    sub_.reset();
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
    ensure_stream(js_.get(), s_, "NATS " + conn_.context(), false);
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
    // nobody, until ack_wait. Destroying the subscription unsubscribes it.
    sub_.reset();
    if (conn_.get()) {
      natsConnection_FlushTimeout(conn_.get(), 2000);
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

// ---------------------------------------------------------------- driver

std::vector<OptionSpec> connection_options() {
  return {
      {"stream", OptionType::String, "",
       "JetStream stream name: publish with per-message PubAcks and consume through a pull consumer "
       "(at-least-once); empty: core NATS (at-most-once)"},
      {"create_stream", OptionType::Bool, "true",
       "create the stream when it does not exist (subjects: the URL's subject); false: NotFound instead"},
      {"storage", OptionType::Choice, "file", "storage of a stream this client creates: file survives a server restart",
       {"file", "memory"}},
      {"replicas", OptionType::Int, "1", "replicas of a stream this client creates (a cluster allows up to 5)", {}, 1, 5},
      {"name", OptionType::String, "", "connection name the server shows in its monitoring"},
      {"tls", OptionType::Bool, "false", "connect with TLS (implied by tls_ca and tls_cert); the server's certificate is checked against the system's CAs unless tls_ca is given"},
      {"tls_ca", OptionType::String, "", "CA certificate file (PEM) the server's certificate is checked against"},
      {"tls_cert", OptionType::String, "", "client certificate file (PEM), for servers that verify clients (with tls_key)"},
      {"tls_key", OptionType::String, "", "the client certificate's private key file (PEM)"},
      {"tls_verify", OptionType::Bool, "true", "check the server's certificate and that it names the host connected to; false: encrypted but not authenticated"},
      {"creds", OptionType::String, "", "a .creds file (user JWT and NKey seed, as `nsc` writes it) to log in with"},
      {"nkey", OptionType::String, "", "NKey public key (U...) to log in with; its seed comes from nkey_seed"},
      {"nkey_seed", OptionType::String, "", "file holding the seed (SU...) of nkey"},
      {"connect_timeout_ms", OptionType::Int, "5000", "bound on connecting to each server of the pool", {}, 1, 3600000},
      {"reconnect_wait_ms", OptionType::Int, "100",
       "wait after the first failed reconnect round; later waits are drawn between it and a ceiling that doubles each round up to reconnect_max_wait_ms",
       {}, 0, 3600000},
      {"reconnect_max_wait_ms", OptionType::Int, "5000", "longest wait between reconnect rounds", {}, 0, 3600000},
      {"max_reconnects", OptionType::Int, "-1", "reconnect rounds before giving up (the connection closes); -1: forever",
       {}, -1, 1000000000},
      {"ping_interval_ms", OptionType::Int, "120000",
       "interval of the client's PINGs; two unanswered mark the connection stale and start a reconnect",
       {}, 1, 86400000},
      {"request_timeout_ms", OptionType::Int, "5000", "bound on JetStream API requests (stream and consumer lookups)",
       {}, 1, 3600000},
  };
}

class NatsDriver final : public Driver {
 public:
  std::string scheme() const override { return "nats"; }
  std::string description() const override {
    return "NATS (cnats): core NATS publish/subscribe with '*' and '>' wildcards and queue groups (?group=), at-most-once; "
           "JetStream (?stream=NAME) with async PubAcks, durable or ephemeral pull consumers, ack/nak, redelivery after "
           "ack_wait, at-least-once; keys and headers as NATS headers; automatic reconnect with backoff";
  }
  std::vector<OptionSpec> sender_options() const override {
    auto specs = connection_options();
    specs.push_back({"flush", OptionType::Bool, "true",
                     "core NATS: end every batch with a PING and report its messages delivered when the PONG is back "
                     "(the server has them); false: delivered once in cnats' write buffer"});
    specs.push_back({"ack_timeout_ms", OptionType::Int, "10000",
                     "how long a publish waits for the server's confirmation (core: the PONG after a batch; JetStream: "
                     "each message's PubAck) before failing with Timeout",
                     {}, 1, 3600000});
    specs.push_back({"max_inflight", OptionType::Int, "4096",
                     "JetStream: messages published and waiting for their PubAck; publishing waits when reached",
                     {}, 1, 1000000});
    specs.push_back({"msg_id", OptionType::Bool, "false",
                     "JetStream: a unique Nats-Msg-Id header per message, so that the stream drops a message published "
                     "twice within its duplicate window"});
    specs.push_back({"send_timestamp", OptionType::Bool, "false",
                     "carry each message's publish time as header Omnibus-Ts (core NATS subscribers see it as "
                     "timestamp_ms; else they stamp arrival, JetStream the time the stream stored it)"});
    specs.push_back({"reconnect_buffer_bytes", OptionType::Int, "8388608",
                     "bytes of publishes cnats keeps while disconnected; beyond, a publish fails with Unavailable",
                     {}, 0, 2147483647});
    return specs;
  }
  std::vector<OptionSpec> receiver_options() const override {
    auto specs = connection_options();
    specs.push_back({"group", OptionType::String, "",
                     "competing consumers: core NATS queue group; JetStream durable consumer of that name shared by "
                     "its members. Empty: every subscriber gets every message"});
    specs.push_back({"queue", OptionType::String, "", "the NATS name of group= (the same option)"});
    specs.push_back({"durable", OptionType::String, "",
                     "JetStream: durable consumer name (default: the group name; neither: an ephemeral consumer)"});
    specs.push_back({"deliver", OptionType::Choice, "default",
                     "JetStream: where a new consumer starts: new (messages stored after it was created), all (the "
                     "whole stream), last; default: new for an ephemeral consumer, all for a durable one",
                     {"default", "new", "all", "last"}});
    specs.push_back({"ack_wait", OptionType::String, "30s",
                     "JetStream: redeliver a message not acked within this time (30s, 500ms, or milliseconds)"});
    specs.push_back({"ack_deadline_ms", OptionType::Int, "30000",
                     "the portable name of ack_wait, in milliseconds", {}, 1, 86400000LL * 365});
    specs.push_back({"max_deliver", OptionType::Int, "-1",
                     "JetStream: deliveries of a message before the server gives up on it; -1: no limit",
                     {}, -1, 2147483647});
    specs.push_back({"max_ack_pending", OptionType::Int, "20000",
                     "JetStream: unacked messages the consumer hands out before it waits for acks; -1: no limit",
                     {}, -1, 2147483647});
    specs.push_back({"inactive_threshold_ms", OptionType::Int, "300000",
                     "JetStream: the server deletes an ephemeral consumer after this long without a fetch (a crashed "
                     "subscriber's, say)",
                     {}, 1, 86400000LL * 365});
    specs.push_back({"pending_limit", OptionType::Int, "65536",
                     "core NATS: messages cnats buffers for a subscriber before it drops them (slow consumer)",
                     {}, 1, 2147483647});
    return specs;
  }

  std::shared_ptr<Sender> open_sender(const Url& url, const OptionValues& options) override {
    Settings s = common_settings(url, options);
    if (const char* why = subject_problem(s.subject, false))
      throw Error(ErrorCode::InvalidArgument, "cannot publish to NATS subject " + printable(s.subject) + " of " + s.url +
                                                  ": " + why + " (subjects are tokens like 'orders.eu.created')");
    s.flush = options.get_bool("flush");
    s.ack_timeout_ms = options.get_int("ack_timeout_ms");
    s.max_inflight = static_cast<std::size_t>(options.get_int("max_inflight"));
    s.msg_id = options.get_bool("msg_id");
    s.send_timestamp = options.get_bool("send_timestamp");
    s.reconnect_buffer_bytes = options.get_int("reconnect_buffer_bytes");
    if (s.msg_id && !s.jetstream())
      throw Error(ErrorCode::InvalidArgument, "msg_id=true needs JetStream (stream=NAME): core NATS has no duplicate "
                                              "detection (" + s.url + ")");
    if (s.jetstream()) return std::make_shared<JsSender>(std::move(s));
    return std::make_shared<CoreSender>(std::move(s));
  }

  std::shared_ptr<Receiver> open_receiver(const Url& url, const OptionValues& options,
                                          const ReceiverSettings&) override {
    // ReceiverSettings::manual_ack changes nothing: the portable layer acks
    // on hand-over when it is false, and JetStream consumers always want acks.
    Settings s = common_settings(url, options);
    if (const char* why = subject_problem(s.subject, true))
      throw Error(ErrorCode::InvalidArgument, "cannot subscribe to NATS subject " + printable(s.subject) + " of " + s.url +
                                                  ": " + why + " (subjects are tokens like 'orders.*.created' or 'orders.>')");
    s.group = options.get_string("group");
    const std::string queue = options.get_string("queue");
    if (!queue.empty() && !s.group.empty() && queue != s.group)
      throw Error(ErrorCode::InvalidArgument, "group=" + printable(s.group) + " and queue=" + printable(queue) + " of " +
                                                  s.url + " name different groups; queue= is the NATS name of group=, "
                                                  "give one");
    if (s.group.empty()) s.group = queue;
    s.durable = options.get_string("durable");
    const std::string deliver = options.get_string("deliver");
    s.deliver = deliver == "default" ? "" : deliver;
    s.ack_wait_ms = parse_duration_ms(options.get_string("ack_wait"));
    if (s.ack_wait_ms <= 0)
      throw Error(ErrorCode::InvalidArgument, "ack_wait=" + printable(options.get_string("ack_wait")) + " of " + s.url +
                                                  " is not a duration: use 30s, 500ms, 2m or a number of milliseconds");
    s.ack_wait_given = options.was_given("ack_wait");
    if (options.was_given("ack_deadline_ms")) {
      const auto ms = options.get_int("ack_deadline_ms");
      if (s.ack_wait_given && ms != s.ack_wait_ms)
        throw Error(ErrorCode::InvalidArgument, "ack_wait and ack_deadline_ms of " + s.url +
                                                    " differ; they are the same setting, give one");
      s.ack_wait_ms = ms;
      s.ack_wait_given = true;
    }
    s.max_deliver = options.get_int("max_deliver");
    if (s.max_deliver == 0)
      throw Error(ErrorCode::InvalidArgument, "max_deliver=0 of " + s.url + ": use -1 (no limit) or at least 1");
    s.max_deliver_given = options.was_given("max_deliver");
    s.max_ack_pending = options.get_int("max_ack_pending");
    if (s.max_ack_pending == 0)
      throw Error(ErrorCode::InvalidArgument, "max_ack_pending=0 of " + s.url + ": use -1 (no limit) or at least 1");
    s.max_ack_pending_given = options.was_given("max_ack_pending");
    s.inactive_threshold_ms = options.get_int("inactive_threshold_ms");
    s.pending_limit = options.get_int("pending_limit");
    if (!s.group.empty()) {
      if (const char* why = name_problem(s.group, s.jetstream()))
        throw Error(ErrorCode::InvalidArgument, "group " + printable(s.group) + " of " + s.url + " " + why +
                                                    (s.jetstream() ? " (it names the JetStream durable consumer)" : ""));
    }
    if (!s.durable.empty()) {
      if (!s.jetstream())
        throw Error(ErrorCode::InvalidArgument, "durable=" + printable(s.durable) + " of " + s.url +
                                                    " needs JetStream (stream=NAME); core NATS subscriptions keep nothing");
      if (const char* why = name_problem(s.durable, true))
        throw Error(ErrorCode::InvalidArgument, "durable consumer name " + printable(s.durable) + " of " + s.url + " " + why);
    }
    if (s.jetstream()) return std::make_shared<JsReceiver>(std::move(s));
    for (const char* js_only : {"durable", "max_deliver", "max_ack_pending", "ack_wait", "ack_deadline_ms"}) {
      if (options.was_given(js_only))
        throw Error(ErrorCode::InvalidArgument, std::string(js_only) + " of " + s.url +
                                                    " is a JetStream setting: add stream=NAME (core NATS has no acks)");
    }
    return std::make_shared<CoreReceiver>(std::move(s));
  }
};

}  // namespace

std::shared_ptr<Driver> make_nats_driver() { return std::make_shared<NatsDriver>(); }

}  // namespace omnibus
