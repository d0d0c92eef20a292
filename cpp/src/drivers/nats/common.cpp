// What the pieces of the nats:// driver share (common.hpp).

#include "drivers/nats/common.hpp"

#include "core/tls.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace omnibus::detail::nats {

// ---------------------------------------------------------------- subjects

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

const char* name_problem(std::string_view name, bool jetstream) {
  if (name.empty()) return "may not be empty";
  for (unsigned char c : name) {
    if (c <= 0x20 || c == 0x7f) return "may not contain whitespace or control characters";
    if (jetstream && std::strchr(".*>/\\", c) && c != 0) return "may not contain '.', '*', '>', '/' or '\\'";
  }
  return nullptr;
}

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

Error nats_error(natsStatus s, const std::string& context, jsErrCode jerr) {
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
  s.tls_files = read_tls_options(o, "nats", url.text);
  s.tls = o.get_bool("tls") || !s.tls_files.ca.empty() || !s.tls_files.cert.empty();
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

// ---------------------------------------------------------------- messages

// The envelope rules are in envelope.cpp; these convert to and from cnats.

namespace {

// Arrays that cnats allocates with malloc and hands over (header keys/values).
struct FreeDeleter {
  void operator()(const char** p) const { std::free(const_cast<char**>(p)); }
};
using CStrArray = std::unique_ptr<const char*, FreeDeleter>;

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

}  // namespace

NatsPtr<natsMsg> make_msg(const std::string& subject, const OutMessage& m, const HeaderFields& h,
                          const std::string& context, const char* reply) {
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

OutMessage to_out(natsMsg* msg) {
  OutMessage out;
  out.payload = make_bytes(std::string(natsMsg_GetData(msg) ? natsMsg_GetData(msg) : "",
                                       static_cast<std::size_t>(natsMsg_GetDataLength(msg))));
  decode_headers(msg, out);
  return out;
}

}  // namespace omnibus::detail::nats
