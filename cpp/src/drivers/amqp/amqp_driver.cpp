// amqp:// -- AMQP 0-9-1 (RabbitMQ) through rabbitmq-c.
//
// URL: amqp://user:password@host[:port]/EXCHANGE?vhost=/&options. The path is
// the exchange (empty: the default exchange ""); the virtual host is the
// option `vhost` (default "/"), because the whole path is percent-decoded into
// one name. The port defaults to 5672; only the first host is used. Without
// user info the login is guest/guest.
//
// Declarations: the exchange is declared (type exchange_type, default topic,
// durable) unless declare=false, which checks it passively instead: a missing
// exchange or queue is then NotFound. The default exchange is never declared.
// Names starting with "amq." are reserved for the broker's own exchanges
// (AMQP 0-9-1, 3.1.3.1; RabbitMQ refuses to declare them and rejects a type
// other than theirs with 406), so they are only checked, never declared. The
// standard ones carry their own type: amq.direct, amq.fanout, amq.topic,
// amq.headers and amq.match (headers); exchange_type= naming another type is
// InvalidArgument. Queue names starting with "amq." are reserved too, so a
// group queue on amq.X is named "amq_X.GROUP".
// Queue arguments are the option family arg.<name>=value (x-dead-letter-
// exchange, x-max-length, x-queue-type, ...): a value that reads as a decimal
// integer travels as a signed 64-bit integer, true/false as a boolean, anything
// else as a string, because RabbitMQ rejects x-max-length given as a string.
// Binding arguments (headers exchanges: bind.x-match=any, bind.color=red) are
// the family bind.<name>. A publisher given queue=Q declares Q (durable) and
// binds it, so that messages published before any subscriber are kept.
//
// Subscribing without group= and queue=: a private subscription, an exclusive,
// auto-delete, server-named queue bound to the exchange with binding_key
// (default "#" for topic exchanges, "" otherwise); it exists before open()
// returns, so it sees every message published after that, and goes away with
// the connection. With group=G (or queue=Q): a durable queue named Q, or
// "EXCHANGE.G", shared by competing consumers (RabbitMQ round-robins it).
//
// Keys: a message's key is its routing key, unless routing_key= is given (or
// the key is empty): then the routing key is that option and the key travels
// in the header "omnibus-key". A subscriber's Message::key is the
// "omnibus-key" header when present (removed from the headers), else the
// delivery's routing key, else (empty routing key) none. So keys round-trip
// exactly between omnibus clients, and another client's routing key shows as
// the key.
//
// Headers: an AMQP field table, one entry per header in order, values as
// long strings (AMQP long strings are bytes). A repeated name is written as
// repeated entries, which RabbitMQ passes through unchanged: omnibus sees
// order and repeats end to end; a client that decodes tables into a map
// (pika) sees one of them. Received tables: strings and byte arrays as bytes,
// arrays as one header per element, numbers and booleans as their decimal
// text, nested tables are dropped. The timestamp travels in the timestamp
// property (whole seconds, AMQP's unit); without one, arrival time is used.
//
// Threads: rabbitmq-c is blocking and not thread-safe, so each publisher and
// each subscriber has one connection (channel 1) owned by one I/O thread; no
// other thread calls rabbitmq-c after open(). send_batch queues the batch for
// that thread and returns; ack()/nack() queue delivery tags for it; an
// eventfd wakes it. The thread polls the socket at least every 100 ms, which
// also serves heartbeats (option heartbeat, default 30 s: rabbitmq-c sends
// them when due, and a silent broker is a lost connection after two of them).
//
// Publishing: persistent (delivery mode 2) unless persistent=false. With
// confirm=true (default) the channel is in confirm mode and each message's
// result is the broker's basic.ack (multiple acks settle a range) or
// basic.nack (ResourceExhausted: e.g. x-overflow=reject-publish). Confirms
// are pipelined: up to confirm_window messages are unconfirmed at a time.
// mandatory=true (default, needs confirms) makes an unroutable message come
// back as basic.return; that message then fails with NotFound ("unroutable").
// A return carries no delivery tag, so it is matched to the oldest
// unconfirmed message with the same routing key and body (identical messages
// route identically). With confirm=false the result is "written to the
// socket" and returns are ignored. A message larger than max_message_bytes
// (RabbitMQ's default max_message_size, 128 MiB) fails alone with
// ResourceExhausted before it is sent: the broker would close the channel,
// taking the messages behind it along.
//
// Receiving and acks: basic.consume with manual acks and basic.qos
// prefetch_count = the subscriber's prefetch (at most 65535). ack() sends
// basic.ack (one multiple ack when the ids are all the oldest outstanding
// ones); nack() sends basic.nack with requeue=nack_requeue (default true:
// redelivered, with the redelivered flag; false: dead-lettered through the
// queue's x-dead-letter-exchange, or dropped without one). delivery_attempt is
// x-delivery-count + 1 when the queue counts (quorum queues), else 2 for a
// redelivered message and 1 otherwise. close() closes the channel: every
// unacked message, buffered ones included, goes back to the queue.
//
// Connection loss (broker restart, heartbeat timeout, channel error): the I/O
// thread reconnects with backoff (core/backoff.hpp: 100 ms to 5 s, jittered) until closed,
// declaring and consuming again. Unconfirmed messages are sent again first
// on the new connection (the broker may have them already: at-least-once,
// duplicates possible), queued ones after them; both wait for the reconnect
// up to connect_timeout_ms, then fail with Unavailable. Acks for deliveries of
// the lost connection are dropped (the broker redelivers those messages); a
// private subscription's new queue misses what was published while down.
//
// Errors: rabbitmq-c status codes (negative) and AMQP reply codes (positive)
// are the native codes. 404 NOT_FOUND -> NotFound; 406 PRECONDITION_FAILED and
// channel-level 403 -> InvalidArgument; 320 CONNECTION_FORCED, socket errors
// -> Unavailable; 311, 506 -> ResourceExhausted; 540 -> Unsupported; others
// -> Internal. A refused login (ACCESS_REFUSED) and a refused vhost (530) are
// Unavailable like every connection failure (ConnectionError in Python, the
// same as kafka:// SASL failures), but not retryable: the same credentials
// will be refused again.

#include "drivers/amqp/amqp_driver.hpp"

#include "core/backoff.hpp"
#include "drivers/amqp/envelope.hpp"

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <set>
#include <string_view>
#include <thread>
#include <unordered_set>

#include "omnibus/driver.hpp"
#include "omnibus/error.hpp"

namespace omnibus {
namespace {

using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

constexpr amqp_channel_t kChannel = 1;
constexpr int kFrameMax = 131072;  // RabbitMQ's default frame_max
constexpr auto kBackoffMin = 100ms;
constexpr auto kBackoffMax = 5000ms;

std::string str(amqp_bytes_t b) { return b.len ? std::string(static_cast<const char*>(b.bytes), b.len) : std::string(); }
amqp_bytes_t bytes_of(std::string_view s) { return amqp_bytes_t{s.size(), const_cast<char*>(s.data())}; }

struct ConnDeleter {
  void operator()(amqp_connection_state_t c) const { amqp_destroy_connection(c); }
};
using ConnHandle = std::unique_ptr<amqp_connection_state_t_, ConnDeleter>;

// ---------------------------------------------------------------- errors

Error status_error(int status, const std::string& context) {
  ErrorCode code;
  switch (status) {
    case AMQP_STATUS_TIMEOUT:
      code = ErrorCode::Timeout;
      break;
    case AMQP_STATUS_NO_MEMORY:
      code = ErrorCode::ResourceExhausted;
      break;
    case AMQP_STATUS_TABLE_TOO_BIG:
    case AMQP_STATUS_INVALID_PARAMETER:
      code = ErrorCode::InvalidArgument;
      break;
    case AMQP_STATUS_INCOMPATIBLE_AMQP_VERSION:
    case AMQP_STATUS_BROKER_UNSUPPORTED_SASL_METHOD:
    case AMQP_STATUS_UNSUPPORTED:
      code = ErrorCode::Unsupported;
      break;
    case AMQP_STATUS_BAD_AMQP_DATA:
    case AMQP_STATUS_UNKNOWN_CLASS:
    case AMQP_STATUS_UNKNOWN_METHOD:
    case AMQP_STATUS_UNEXPECTED_STATE:
    case AMQP_STATUS_WRONG_METHOD:
      code = ErrorCode::Internal;
      break;
    default:  // socket, TCP, resolution, heartbeat timeout, connection closed
      code = ErrorCode::Unavailable;
  }
  return Error(code, context + ": " + amqp_error_string2(status) + " (rabbitmq-c status " + std::to_string(status) + ")",
               status);
}

Error reply_code_error(int reply_code, const std::string& text, const std::string& context, bool connection_level) {
  ErrorCode code;
  bool retryable = false;
  switch (reply_code) {
    case AMQP_NOT_FOUND:
      code = ErrorCode::NotFound;
      break;
    case AMQP_PRECONDITION_FAILED:
      // RabbitMQ says "message size N is larger than configured max size M".
      code = text.find("larger than") != std::string::npos ? ErrorCode::ResourceExhausted : ErrorCode::InvalidArgument;
      break;
    case AMQP_ACCESS_REFUSED:
      code = connection_level ? ErrorCode::Unavailable : ErrorCode::InvalidArgument;
      break;
    case AMQP_NOT_ALLOWED:
      code = ErrorCode::Unavailable;
      break;
    case AMQP_CONNECTION_FORCED:
    case AMQP_RESOURCE_LOCKED:
      code = ErrorCode::Unavailable;
      retryable = true;
      break;
    case AMQP_CONTENT_TOO_LARGE:
    case AMQP_RESOURCE_ERROR:
      code = ErrorCode::ResourceExhausted;
      retryable = true;
      break;
    case AMQP_NO_ROUTE:
    case AMQP_NO_CONSUMERS:
      code = ErrorCode::NotFound;
      break;
    case AMQP_INVALID_PATH:
      code = ErrorCode::InvalidArgument;
      break;
    case AMQP_NOT_IMPLEMENTED:
      code = ErrorCode::Unsupported;
      break;
    default:
      code = ErrorCode::Internal;
  }
  return Error(code, context + ": broker replied " + std::to_string(reply_code) + " " + text, reply_code, retryable);
}

Error reply_error(const amqp_rpc_reply_t& r, const std::string& context) {
  switch (r.reply_type) {
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
      return status_error(r.library_error, context);
    case AMQP_RESPONSE_SERVER_EXCEPTION:
      if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        auto* m = static_cast<amqp_connection_close_t*>(r.reply.decoded);
        return reply_code_error(m->reply_code, str(m->reply_text), context, true);
      }
      if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        auto* m = static_cast<amqp_channel_close_t*>(r.reply.decoded);
        return reply_code_error(m->reply_code, str(m->reply_text), context, false);
      }
      return Error(ErrorCode::Internal, context + ": unexpected server method " + std::to_string(r.reply.id));
    case AMQP_RESPONSE_NONE:
      return Error(ErrorCode::Internal, context + ": rabbitmq-c returned no reply");
    default:
      return Error(ErrorCode::Internal, context + ": unknown reply type");
  }
}

// ---------------------------------------------------------------- tables

// Storage for an amqp_table_t built from strings we own.
struct TableBuilder {
  std::deque<std::string> strings;  // deque: stable addresses
  std::vector<amqp_table_entry_t> entries;

  void add(const std::string& name, const std::string& value, bool typed) {
    amqp_table_entry_t e{};
    e.key = bytes_of(strings.emplace_back(name));
    if (typed && value == "true") {
      e.value.kind = AMQP_FIELD_KIND_BOOLEAN;
      e.value.value.boolean = 1;
    } else if (typed && value == "false") {
      e.value.kind = AMQP_FIELD_KIND_BOOLEAN;
      e.value.value.boolean = 0;
    } else if (typed && !value.empty() && value.find_first_not_of("-0123456789") == std::string::npos &&
               value.find('-', 1) == std::string::npos && value != "-") {
      e.value.kind = AMQP_FIELD_KIND_I64;
      e.value.value.i64 = std::stoll(value);
    } else {
      e.value.kind = AMQP_FIELD_KIND_UTF8;
      e.value.value.bytes = bytes_of(strings.emplace_back(value));
    }
    entries.push_back(e);
  }
  amqp_table_t table() { return amqp_table_t{static_cast<int>(entries.size()), entries.empty() ? nullptr : entries.data()}; }
};

// A received field as the envelope reads it (envelope.hpp).
detail::amqp::Scalar to_scalar(const amqp_field_value_t& v) {
  switch (v.kind) {
    case AMQP_FIELD_KIND_UTF8:
      return str(v.value.bytes);
    case AMQP_FIELD_KIND_BYTES:
      return detail::amqp::Binary{str(v.value.bytes)};
    case AMQP_FIELD_KIND_BOOLEAN:
      return v.value.boolean != 0;
    case AMQP_FIELD_KIND_I8:
      return std::int64_t{v.value.i8};
    case AMQP_FIELD_KIND_U8:
      return std::int64_t{v.value.u8};
    case AMQP_FIELD_KIND_I16:
      return std::int64_t{v.value.i16};
    case AMQP_FIELD_KIND_U16:
      return std::int64_t{v.value.u16};
    case AMQP_FIELD_KIND_I32:
      return std::int64_t{v.value.i32};
    case AMQP_FIELD_KIND_U32:
      return std::int64_t{v.value.u32};
    case AMQP_FIELD_KIND_I64:
    case AMQP_FIELD_KIND_TIMESTAMP:
      return std::int64_t{v.value.i64};
    case AMQP_FIELD_KIND_U64:
      return std::uint64_t{v.value.u64};
    case AMQP_FIELD_KIND_F32:
      return double{v.value.f32};
    case AMQP_FIELD_KIND_F64:
      return double{v.value.f64};
    default:
      return detail::amqp::Void{};
  }
}

detail::amqp::Field to_field(const amqp_field_value_t& v) {
  if (v.kind == AMQP_FIELD_KIND_TABLE) return detail::amqp::NestedTable{};
  if (v.kind == AMQP_FIELD_KIND_ARRAY) {
    detail::amqp::Array array;
    for (int k = 0; k < v.value.array.num_entries; ++k) array.items.push_back(to_scalar(v.value.array.entries[k]));
    return array;
  }
  return std::visit([](auto&& s) -> detail::amqp::Field { return std::move(s); }, to_scalar(v));
}

// ---------------------------------------------------------------- settings

struct ConnSettings {
  std::string host;
  int port = 5672;
  std::string user = "guest";
  std::string password = "guest";
  std::string vhost = "/";
  int heartbeat = 30;
  std::chrono::milliseconds connect_timeout{10000};
  std::string where;  // host:port vhost, for messages
};

ConnSettings conn_settings(const Url& url, const OptionValues& o) {
  ConnSettings s;
  const auto& h = url.hosts.front();
  if (h.host.empty()) throw Error(ErrorCode::InvalidArgument, "amqp:// URL '" + url.text + "' names no broker host");
  s.host = h.host;
  s.port = h.port ? h.port : 5672;
  if (url.has_userinfo) {
    s.user = url.user;
    s.password = url.password;
  }
  s.vhost = o.get_string("vhost");
  s.heartbeat = static_cast<int>(o.get_int("heartbeat"));
  s.connect_timeout = std::chrono::milliseconds(o.get_int("connect_timeout_ms"));
  s.where = s.host + ":" + std::to_string(s.port) + " (vhost " + printable(s.vhost) + ")";
  return s;
}

// One AMQP connection with channel 1 open. Not thread-safe: owned by one
// thread at a time (the opener, then the I/O thread).
ConnHandle connect(const ConnSettings& s) {
  ConnHandle conn(amqp_new_connection());
  if (!conn) throw Error(ErrorCode::ResourceExhausted, "rabbitmq-c could not allocate a connection");
  amqp_socket_t* sock = amqp_tcp_socket_new(conn.get());  // owned by conn
  if (!sock) throw Error(ErrorCode::ResourceExhausted, "rabbitmq-c could not allocate a socket");
  timeval tv{static_cast<time_t>(s.connect_timeout.count() / 1000),
             static_cast<suseconds_t>((s.connect_timeout.count() % 1000) * 1000)};
  int status = amqp_socket_open_noblock(sock, s.host.c_str(), s.port, &tv);
  if (status != AMQP_STATUS_OK) throw status_error(status, "cannot connect to the AMQP broker at " + s.where);
  amqp_set_handshake_timeout(conn.get(), &tv);
  amqp_set_rpc_timeout(conn.get(), &tv);
  amqp_rpc_reply_t r = amqp_login(conn.get(), s.vhost.c_str(), 0, kFrameMax, s.heartbeat, AMQP_SASL_METHOD_PLAIN,
                                  s.user.c_str(), s.password.c_str());
  if (r.reply_type != AMQP_RESPONSE_NORMAL) {
    Error e = reply_error(r, "login to " + s.where + " as user " + printable(s.user));
    if (e.native_code() == AMQP_ACCESS_REFUSED)
      throw Error(ErrorCode::Unavailable,
                  std::string(e.what()) + " -- wrong user name or password (give the right ones as amqp://USER:PASSWORD@host)",
                  e.native_code(), false);
    if (e.native_code() == AMQP_NOT_ALLOWED)
      throw Error(ErrorCode::Unavailable,
                  std::string(e.what()) + " -- the vhost does not exist or the user may not use it (option vhost=, default /)",
                  e.native_code(), false);
    throw e;
  }
  amqp_channel_open(conn.get(), kChannel);
  r = amqp_get_rpc_reply(conn.get());
  if (r.reply_type != AMQP_RESPONSE_NORMAL) throw reply_error(r, "opening a channel on " + s.where);
  return conn;
}

void check_rpc(amqp_connection_state_t c, const std::string& context) {
  amqp_rpc_reply_t r = amqp_get_rpc_reply(c);
  if (r.reply_type != AMQP_RESPONSE_NORMAL) throw reply_error(r, context);
}

// Closes the channel and the connection politely (bounded by the RPC
// timeout), then frees it.
void close_conn(ConnHandle& conn, bool polite) {
  if (!conn) return;
  if (polite) {
    amqp_channel_close(conn.get(), kChannel, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn.get(), AMQP_REPLY_SUCCESS);
  }
  conn.reset();
}

// What both roles declare. Throws NotFound (passive check of a missing
// exchange), InvalidArgument (inequivalent arguments), Unavailable.
struct Topology {
  std::string exchange;
  std::string exchange_type;
  bool declare = true;
  bool reserved_exchange = false;  // "amq.*": the broker's own, checked passively
  bool durable = true;
  std::string queue;  // named queue to declare and bind ("" none)
  bool private_queue = false;
  bool auto_delete = false;
  std::string binding_key;
  std::vector<std::pair<std::string, std::string>> queue_args;
  std::vector<std::pair<std::string, std::string>> bind_args;

  // Returns the queue name (the server's for a private queue).
  std::string apply(amqp_connection_state_t c, const std::string& where) const {
    if (!exchange.empty()) {
      const bool passive = !declare || reserved_exchange;
      amqp_exchange_declare(c, kChannel, bytes_of(exchange), bytes_of(exchange_type), passive, durable, 0, 0,
                            amqp_empty_table);
      check_rpc(c, (passive ? "checking " : "declaring ") + exchange_type + " exchange " + printable(exchange) +
                       " on " + where +
                       (reserved_exchange ? " (a name starting with amq. is the broker's own: it must exist)"
                        : declare         ? ""
                                          : " (declare=false: it must exist)"));
    }
    if (queue.empty() && !private_queue) return {};
    TableBuilder qargs;
    for (const auto& [k, v] : queue_args) qargs.add(k, v, true);
    const std::string what = private_queue ? std::string("a private queue") : "queue " + printable(queue);
    auto* ok = amqp_queue_declare(c, kChannel, bytes_of(queue), !declare && !private_queue,
                                  !private_queue && durable, private_queue, private_queue || auto_delete, qargs.table());
    check_rpc(c, (declare || private_queue ? "declaring " : "checking ") + what + " on " + where +
                     (declare || private_queue ? "" : " (declare=false: it must exist)"));
    std::string name = ok ? str(ok->queue) : queue;
    if (!exchange.empty() && (declare || private_queue)) {
      TableBuilder bargs;
      for (const auto& [k, v] : bind_args) bargs.add(k, v, false);
      amqp_queue_bind(c, kChannel, bytes_of(name), bytes_of(exchange), bytes_of(binding_key), bargs.table());
      check_rpc(c, "binding " + what + " to exchange " + printable(exchange) + " with key " + printable(binding_key));
    }
    return name;
  }
};

// The exchanges every broker declares itself, with their types.
std::optional<std::string> standard_exchange_type(const std::string& name) {
  static const std::pair<const char*, const char*> kStandard[] = {
      {"amq.direct", "direct"}, {"amq.fanout", "fanout"}, {"amq.topic", "topic"},
      {"amq.headers", "headers"}, {"amq.match", "headers"}};
  for (const auto& [n, type] : kStandard)
    if (name == n) return std::string(type);
  return std::nullopt;
}

constexpr std::string_view kReservedPrefix = "amq.";

bool reserved_name(const std::string& name) { return name.compare(0, kReservedPrefix.size(), kReservedPrefix) == 0; }

Topology topology(const Url& url, const OptionValues& o, bool receiver) {
  Topology t;
  t.exchange = url.path;
  t.exchange_type = o.get_string("exchange_type");
  t.reserved_exchange = reserved_name(t.exchange);
  if (auto type = standard_exchange_type(t.exchange)) {
    if (o.was_given("exchange_type") && t.exchange_type != *type)
      throw Error(ErrorCode::InvalidArgument,
                  "amqp:// URL '" + url.text + "': " + t.exchange + " is the broker's standard " + *type +
                      " exchange, not a " + t.exchange_type + " one (drop exchange_type=, or name an exchange of "
                      "your own in the path)");
    t.exchange_type = *type;
  }
  t.declare = o.get_bool("declare");
  t.durable = o.get_bool("durable");
  t.queue = o.get_string("queue");
  t.auto_delete = o.get_bool("auto_delete");
  t.binding_key = o.was_given("binding_key") ? o.get_string("binding_key") : (t.exchange_type == "topic" ? "#" : "");
  t.queue_args = o.family("arg.");
  t.bind_args = o.family("bind.");
  if (receiver) {
    const std::string& group = o.get_string("group");
    if (t.queue.empty() && !group.empty()) {
      // "amq.X.G" would be refused (reserved prefix): amq.fanout's group G is "amq_fanout.G".
      const std::string base = t.reserved_exchange ? "amq_" + t.exchange.substr(kReservedPrefix.size()) : t.exchange;
      t.queue = t.exchange.empty() ? group : base + "." + group;
    }
    t.private_queue = t.queue.empty();
    if (t.private_queue && t.exchange.empty())
      throw Error(ErrorCode::InvalidArgument,
                  "amqp:// subscriber URL '" + url.text +
                      "' names neither an exchange (the path: amqp://host/EXCHANGE) nor a queue (queue=NAME or group=NAME); "
                      "a private queue on the default exchange would receive nothing");
  }
  return t;
}

Capabilities amqp_capabilities(bool confirm, std::size_t max_bytes) {
  Capabilities c;
  c.delivery_guarantee = confirm ? "at-least-once" : "at-most-once";
  c.ordered_per_key = true;  // one channel's messages stay in order in a queue and to its one consumer
  c.key_affinity = false;    // a shared queue round-robins, whatever the routing key
  c.keys = true;
  c.nack = true;
  c.ack_deadline = false;  // RabbitMQ's consumer_timeout closes the channel after 30 min; no per-message deadline
  c.requeue_on_close = true;
  c.delivery_count = false;  // classic queues only flag a redelivery (quorum queues count: x-delivery-count)
  c.competing_consumers = true;
  c.headers = true;
  c.dead_letter = true;
  c.durable = true;
  c.max_message_bytes = max_bytes;
  return c;
}

// eventfd that wakes an I/O thread out of poll().
class Waker {
 public:
  Waker() : fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    if (fd_ < 0) throw Error(ErrorCode::Internal, std::string("eventfd: ") + std::strerror(errno), errno);
  }
  ~Waker() { ::close(fd_); }
  Waker(const Waker&) = delete;
  Waker& operator=(const Waker&) = delete;
  void wake() {
    std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(fd_, &one, sizeof one);
  }
  void drain() {
    std::uint64_t v;
    [[maybe_unused]] auto n = ::read(fd_, &v, sizeof v);
  }
  int fd() const { return fd_; }

 private:
  int fd_;
};

// Waits until the connection has input or the waker fires, up to `timeout`.
// Returns true when input is (or may be) ready.
bool wait_input(amqp_connection_state_t c, Waker& waker, std::chrono::milliseconds timeout) {
  if (amqp_frames_enqueued(c) || amqp_data_in_buffer(c)) return true;
  pollfd fds[2] = {{amqp_get_sockfd(c), POLLIN, 0}, {waker.fd(), POLLIN, 0}};
  int n = ::poll(fds, 2, static_cast<int>(timeout.count()));
  if (n > 0 && fds[1].revents) waker.drain();
  return n > 0 && fds[0].revents;
}

timeval zero_tv() { return timeval{0, 0}; }

// TCP_CORK for the scope: the kernel sends full packets only, and what is
// left when the scope ends.
class Cork {
 public:
  explicit Cork(int fd) : fd_(fd) { set(1); }
  ~Cork() { set(0); }
  Cork(const Cork&) = delete;
  Cork& operator=(const Cork&) = delete;

 private:
  void set(int on) {
    if (fd_ >= 0) ::setsockopt(fd_, IPPROTO_TCP, TCP_CORK, &on, sizeof on);
  }
  int fd_;
};

// ---------------------------------------------------------------- Sender

class AmqpSender : public Sender {
 public:
  AmqpSender(const Url& url, const OptionValues& o)
      : settings_(conn_settings(url, o)),
        topo_(topology(url, o, false)),
        routing_key_(o.get_string("routing_key")),
        fixed_key_(o.was_given("routing_key")),
        confirm_(o.get_bool("confirm")),
        mandatory_(o.get_bool("mandatory") && o.get_bool("confirm")),
        persistent_(o.get_bool("persistent")),
        window_(static_cast<std::size_t>(o.get_int("confirm_window"))),
        max_bytes_(static_cast<std::size_t>(o.get_int("max_message_bytes"))) {
    conn_ = connect(settings_);
    setup();
    thread_ = std::thread([this] { run(); });
  }
  ~AmqpSender() override { close(); }

  void send_batch(const std::vector<OutMessage>& batch, const SendResultFn& on_result) override {
    if (batch.empty()) return;
    auto job = std::make_shared<Job>();
    job->batch = &batch;
    job->size = batch.size();
    job->fn = on_result;
    job->queued = SteadyClock::now();
    {
      std::lock_guard lock(mu_);
      if (closed_) throw Error(ErrorCode::Closed, "amqp:// publisher is closed");
      jobs_.push_back(std::move(job));
    }
    waker_.wake();
  }

  Capabilities capabilities() const override { return amqp_capabilities(confirm_, max_bytes_); }
  std::optional<bool> connected() const override { return up_.load(std::memory_order_relaxed); }

  void close() override {
    {
      std::lock_guard lock(mu_);
      if (closed_) return;
      closed_ = true;
    }
    waker_.wake();
    if (thread_.joinable()) thread_.join();
  }

 private:
  struct Job {
    // Valid only until the batch's last result is reported (the Publisher
    // frees it then): loops over a job read `size`, never batch->size().
    const std::vector<OutMessage>* batch = nullptr;
    std::size_t size = 0;
    SendResultFn fn;
    std::size_t next = 0;  // first message not yet written
    SteadyClock::time_point queued;
  };
  struct Unconfirmed {
    std::uint64_t tag;
    std::shared_ptr<Job> job;
    std::size_t index;
    bool done = false;
    bool returned = false;
    std::string return_text;
  };

  void setup() {
    if (confirm_) {
      amqp_confirm_select(conn_.get(), kChannel);
      check_rpc(conn_.get(), "enabling publisher confirms on " + settings_.where);
    }
    topo_.apply(conn_.get(), settings_.where);
    next_tag_ = 1;
  }

  void run() {
    detail::Backoff backoff(kBackoffMin, kBackoffMax);
    for (;;) {
      {
        std::lock_guard lock(mu_);
        if (closed_) break;
      }
      // Published once per turn of the loop (at least every 100 ms): conn_ is the I/O thread's.
      up_.store(static_cast<bool>(conn_), std::memory_order_relaxed);
      if (!conn_) {
        fail_stale_jobs();
        try {
          conn_ = connect(settings_);
          setup();
          backoff.reset();
        } catch (const Error& e) {
          conn_.reset();
          last_error_ = e.what();
          wait_waker(backoff.next());
        }
        continue;
      }
      try {
        publish_some();
        drain_input();
        const bool more = !resend_.empty() || has_writable_job();
        if (!more || unconfirmed_.size() >= window_) {
          if (wait_input(conn_.get(), waker_, 100ms)) drain_input();
        }
        service_heartbeat();
      } catch (const Error& e) {
        lost(e);
      }
    }
    shutdown();
  }

  bool has_writable_job() {
    std::lock_guard lock(mu_);
    return !jobs_.empty();
  }

  // Writes messages of queued jobs while the confirm window has room,
  // reading confirms between messages so the window keeps moving.
  void publish_some() {
    // rabbitmq-c writes a message as 3 send() calls and the last one pushes a
    // packet; corked, a burst of messages leaves in few full packets, which
    // is most of the throughput on loopback. Uncorked (flushed) on return.
    if (unconfirmed_.size() >= window_ || (resend_.empty() && !has_writable_job())) return;
    Cork cork(amqp_get_sockfd(conn_.get()));
    std::size_t written = 0;
    // First what a lost connection left unconfirmed, oldest first.
    while (!resend_.empty() && unconfirmed_.size() < window_) {
      const Unconfirmed u = resend_.front();
      resend_.pop_front();
      publish_one(u.job, u.index, (*u.job->batch)[u.index]);
      ++written;
    }
    while (unconfirmed_.size() < window_ && written < 4096) {
      std::shared_ptr<Job> job;
      {
        std::lock_guard lock(mu_);
        if (jobs_.empty()) return;
        job = jobs_.front();
      }
      while (job->next < job->size && unconfirmed_.size() < window_) {
        const std::size_t i = job->next++;
        publish_one(job, i, (*job->batch)[i]);
        ++written;
        if ((written & 255) == 0 && amqp_data_in_buffer(conn_.get())) drain_input();
      }
      if (job->next == job->size) {
        std::lock_guard lock(mu_);
        jobs_.pop_front();
      }
    }
  }

  void publish_one(const std::shared_ptr<Job>& job, std::size_t i, const OutMessage& m) {
    if (m.size_bytes() > max_bytes_) {
      Error e(ErrorCode::ResourceExhausted,
              "message of " + std::to_string(m.size_bytes()) + " bytes is larger than max_message_bytes=" +
                  std::to_string(max_bytes_) + " (RabbitMQ's max_message_size; raise both together)");
      job->fn(i, &e);
      return;
    }
    const std::string& rk = detail::amqp::key_is_routing_key(m, fixed_key_) ? *m.key : routing_key_;
    amqp_basic_properties_t props{};
    props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
    props.delivery_mode = persistent_ ? 2 : 1;
    props.timestamp = detail::amqp::timestamp_seconds(m.timestamp_ms ? m.timestamp_ms : now_ms());
    entries_.clear();
    detail::amqp::encode_headers(m, fixed_key_, [&](std::string_view name, const std::string& value) {
      amqp_table_entry_t e{};
      e.key = bytes_of(name);
      e.value.kind = AMQP_FIELD_KIND_UTF8;
      e.value.value.bytes = bytes_of(value);
      entries_.push_back(e);
    });
    if (!entries_.empty()) {
      props._flags |= AMQP_BASIC_HEADERS_FLAG;
      props.headers = amqp_table_t{static_cast<int>(entries_.size()), entries_.data()};
    }
    int status = amqp_basic_publish(conn_.get(), kChannel, bytes_of(topo_.exchange), bytes_of(rk), mandatory_, 0,
                                    &props, bytes_of(*m.payload));
    if (status != AMQP_STATUS_OK) {
      // The message may be partly written: it fails with the connection.
      unconfirmed_.push_back(Unconfirmed{0, job, i});
      throw status_error(status, "publishing to exchange " + printable(topo_.exchange) + " on " + settings_.where);
    }
    if (confirm_) {
      unconfirmed_.push_back(Unconfirmed{next_tag_++, job, i});
    } else {
      job->fn(i, nullptr);
    }
  }

  // Reads every frame already available, without blocking.
  void drain_input() {
    for (;;) {
      amqp_frame_t frame;
      timeval tv = zero_tv();
      int status = amqp_simple_wait_frame_noblock(conn_.get(), &frame, &tv);
      if (status == AMQP_STATUS_TIMEOUT) return;
      if (status != AMQP_STATUS_OK) throw status_error(status, "connection to " + settings_.where);
      if (frame.frame_type != AMQP_FRAME_METHOD) continue;
      handle_method(frame);
    }
  }

  void service_heartbeat() {
    // rabbitmq-c sends a due heartbeat (and notices a silent broker) inside
    // its frame wait; a zero-timeout wait is enough.
    drain_input();
  }

  void handle_method(const amqp_frame_t& frame) {
    switch (frame.payload.method.id) {
      case AMQP_BASIC_ACK_METHOD: {
        auto* m = static_cast<amqp_basic_ack_t*>(frame.payload.method.decoded);
        settle(m->delivery_tag, m->multiple, false);
        break;
      }
      case AMQP_BASIC_NACK_METHOD: {
        auto* m = static_cast<amqp_basic_nack_t*>(frame.payload.method.decoded);
        settle(m->delivery_tag, m->multiple, true);
        break;
      }
      case AMQP_BASIC_RETURN_METHOD: {
        auto* m = static_cast<amqp_basic_return_t*>(frame.payload.method.decoded);
        const std::string text = std::to_string(m->reply_code) + " " + str(m->reply_text);
        const std::string rk = str(m->routing_key);
        amqp_message_t msg;
        amqp_rpc_reply_t r = amqp_read_message(conn_.get(), frame.channel, &msg, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) throw reply_error(r, "reading a returned message");
        std::string_view body(static_cast<const char*>(msg.body.bytes), msg.body.len);
        for (auto& u : unconfirmed_) {
          if (u.done || u.returned) continue;
          const OutMessage& om = (*u.job->batch)[u.index];
          const bool key_as_rk = detail::amqp::key_is_routing_key(om, fixed_key_);
          if ((key_as_rk ? *om.key : routing_key_) == rk && *om.payload == body) {
            u.returned = true;
            u.return_text = text;
            break;
          }
        }
        amqp_destroy_message(&msg);
        break;
      }
      case AMQP_CHANNEL_CLOSE_METHOD: {
        auto* m = static_cast<amqp_channel_close_t*>(frame.payload.method.decoded);
        throw reply_code_error(m->reply_code, str(m->reply_text), "the broker closed the channel", false);
      }
      case AMQP_CONNECTION_CLOSE_METHOD: {
        auto* m = static_cast<amqp_connection_close_t*>(frame.payload.method.decoded);
        throw reply_code_error(m->reply_code, str(m->reply_text), "the broker closed the connection", true);
      }
      default:
        break;  // connection.blocked/unblocked and others: nothing to do
    }
  }

  void settle(std::uint64_t tag, bool multiple, bool nacked) {
    if (unconfirmed_.empty()) return;
    const std::uint64_t base = unconfirmed_.front().tag;
    if (tag < base) return;
    const std::size_t last = static_cast<std::size_t>(tag - base);
    const std::size_t first = multiple ? 0 : last;
    for (std::size_t k = first; k <= last && k < unconfirmed_.size(); ++k) {
      auto& u = unconfirmed_[k];
      if (u.done) continue;
      u.done = true;
      report(u, nacked);
    }
    while (!unconfirmed_.empty() && unconfirmed_.front().done) unconfirmed_.pop_front();
  }

  void report(Unconfirmed& u, bool nacked) {
    const OutMessage& m = (*u.job->batch)[u.index];
    if (u.returned) {
      const bool key_as_rk = detail::amqp::key_is_routing_key(m, fixed_key_);
      Error e(ErrorCode::NotFound, "unroutable: no queue is bound to exchange " + printable(topo_.exchange) +
                                       " for routing key " + printable(key_as_rk ? *m.key : routing_key_) +
                                       " (basic.return " + u.return_text + "; mandatory=true)",
              AMQP_NO_ROUTE);
      u.job->fn(u.index, &e);
    } else if (nacked) {
      Error e(ErrorCode::ResourceExhausted,
              "the broker refused the message (basic.nack): a queue is full with x-overflow=reject-publish, or it "
              "failed to store it",
              0, true);
      u.job->fn(u.index, &e);
    } else {
      u.job->fn(u.index, nullptr);
    }
  }

  // The connection is gone: what was written and not confirmed is sent again
  // after the reconnect, ahead of everything queued and in its order (the
  // broker may have it already: at-least-once, a duplicate is possible);
  // queued messages wait for the reconnect too. Either fails with Unavailable
  // once the broker has been away for connect_timeout_ms.
  void lost(const Error& why) {
    last_error_ = why.what();
    std::deque<Unconfirmed> again;
    for (auto& u : unconfirmed_)
      if (!u.done) again.push_back(u);
    again.insert(again.end(), resend_.begin(), resend_.end());
    resend_.swap(again);
    unconfirmed_.clear();
    if (!resend_.empty() && lost_at_ == SteadyClock::time_point::max()) lost_at_ = SteadyClock::now();
    close_conn(conn_, false);
  }

  // While disconnected: messages queued longer than connect_timeout fail, and
  // so do the ones waiting to be sent again once the connection has been
  // down that long.
  void fail_stale_jobs() {
    const auto now = SteadyClock::now();
    if (!resend_.empty() && now - lost_at_ > settings_.connect_timeout) {
      Error e(ErrorCode::Unavailable,
              "connection lost before the broker confirmed the message (it may or may not have it), and no new "
              "connection to " + settings_.where + " within " + std::to_string(settings_.connect_timeout.count()) +
                  " ms (connect_timeout_ms); last error: " + last_error_,
              0, true);
      std::deque<Unconfirmed> failing;
      failing.swap(resend_);
      for (auto& u : failing) u.job->fn(u.index, &e);
    }
    if (resend_.empty()) lost_at_ = SteadyClock::time_point::max();
    std::vector<std::shared_ptr<Job>> stale;
    {
      std::lock_guard lock(mu_);
      while (!jobs_.empty() && now - jobs_.front()->queued > settings_.connect_timeout) {
        stale.push_back(jobs_.front());
        jobs_.pop_front();
      }
    }
    for (auto& job : stale) {
      Error e(ErrorCode::Unavailable,
              "no connection to the AMQP broker at " + settings_.where + " for " +
                  std::to_string(settings_.connect_timeout.count()) + " ms (connect_timeout_ms); last error: " +
                  last_error_);
      for (std::size_t i = job->next; i < job->size; ++i) job->fn(i, &e);
    }
  }

  void wait_waker(std::chrono::milliseconds d) {
    pollfd p{waker_.fd(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(d.count())) > 0) waker_.drain();
  }

  void shutdown() {
    // The Publisher flushed before close(): wait a little for confirms still
    // in flight, then fail what is left with Closed.
    const auto deadline = SteadyClock::now() + 2s;
    try {
      while (conn_ && !unconfirmed_.empty() && SteadyClock::now() < deadline) {
        if (wait_input(conn_.get(), waker_, 100ms)) drain_input();
      }
    } catch (const Error& e) {
      lost(e);
    }
    Error e(ErrorCode::Closed, "amqp:// publisher closed before the broker confirmed the message");
    for (auto& u : unconfirmed_)
      if (!u.done) u.job->fn(u.index, &e);
    unconfirmed_.clear();
    for (auto& u : resend_) u.job->fn(u.index, &e);
    resend_.clear();
    std::deque<std::shared_ptr<Job>> jobs;
    {
      std::lock_guard lock(mu_);
      jobs.swap(jobs_);
    }
    for (auto& job : jobs)
      for (std::size_t i = job->next; i < job->size; ++i) job->fn(i, &e);
    close_conn(conn_, true);
  }

  const ConnSettings settings_;
  const Topology topo_;
  const std::string routing_key_;
  const bool fixed_key_;
  const bool confirm_;
  const bool mandatory_;
  const bool persistent_;
  const std::size_t window_;
  const std::size_t max_bytes_;

  // Owned by the I/O thread after the constructor.
  ConnHandle conn_;
  std::atomic<bool> up_{true};  // connected(), as last seen by the I/O thread
  std::uint64_t next_tag_ = 1;
  std::deque<Unconfirmed> unconfirmed_;
  std::deque<Unconfirmed> resend_;  // lost with a connection, to be sent first on the next
  SteadyClock::time_point lost_at_ = SteadyClock::time_point::max();  // when resend_ began to wait
  std::vector<amqp_table_entry_t> entries_;
  std::string last_error_;

  Waker waker_;
  std::mutex mu_;  // guards jobs_, closed_
  std::deque<std::shared_ptr<Job>> jobs_;
  bool closed_ = false;
  std::thread thread_;
};

// ---------------------------------------------------------------- Receiver

class AmqpReceiver : public Receiver, public std::enable_shared_from_this<AmqpReceiver> {
 public:
  AmqpReceiver(const Url& url, const OptionValues& o)
      : settings_(conn_settings(url, o)),
        topo_(topology(url, o, true)),
        prefetch_(static_cast<std::uint16_t>(std::min<std::int64_t>(o.get_int("prefetch"), 65535))),
        nack_requeue_(o.get_bool("nack_requeue")),
        max_bytes_(static_cast<std::size_t>(o.get_int("max_message_bytes"))) {
    conn_ = connect(settings_);
    setup();
    thread_ = std::thread([this] { run(); });
  }
  ~AmqpReceiver() override { close(); }

  std::vector<MessagePtr> receive_batch(std::size_t max, std::chrono::milliseconds timeout) override {
    std::vector<Delivery> got;
    {
      std::unique_lock lock(mu_);
      if (closed_) throw Error(ErrorCode::Closed, "amqp:// subscriber is closed");
      cv_.wait_for(lock, timeout, [&] { return closed_ || !ready_.empty(); });
      if (closed_) throw Error(ErrorCode::Closed, "amqp:// subscriber is closed");
      const std::size_t n = std::min(max, ready_.size());
      got.assign(std::make_move_iterator(ready_.begin()), std::make_move_iterator(ready_.begin() + static_cast<long>(n)));
      ready_.erase(ready_.begin(), ready_.begin() + static_cast<long>(n));
    }
    std::vector<MessagePtr> out;
    out.reserve(got.size());
    auto self = shared_from_this();
    for (auto& d : got) out.push_back(std::make_shared<Message>(std::move(d.data), std::move(d.topic), d.attempt, self, d.id));
    return out;
  }

  void ack(const std::vector<std::uint64_t>& ids) override { settle(ids, Op::Ack); }
  void nack(const std::vector<std::uint64_t>& ids) override { settle(ids, Op::Nack); }

  Capabilities capabilities() const override { return amqp_capabilities(true, max_bytes_); }
  std::optional<bool> connected() const override { return up_.load(std::memory_order_relaxed); }

  void close() override {
    {
      std::lock_guard lock(mu_);
      if (closed_) return;
      closed_ = true;
      ready_.clear();
    }
    cv_.notify_all();
    waker_.wake();
    if (thread_.joinable()) thread_.join();
  }

 private:
  enum class Op { Ack, Nack };
  struct Delivery {
    OutMessage data;
    std::string topic;
    std::uint32_t attempt;
    std::uint64_t id;
  };

  // ack ids: the connection's epoch in the top 16 bits, the delivery tag
  // below, so that an ack for a delivery of a lost connection is dropped
  // instead of settling another message with the same tag.
  static constexpr int kEpochShift = 48;

  void settle(const std::vector<std::uint64_t>& ids, Op op) {
    {
      std::lock_guard lock(mu_);
      if (closed_)
        throw Error(ErrorCode::Closed, "amqp:// subscriber is closed; its unacked messages went back to the queue");
      for (auto id : ids) ops_.emplace_back(op, id);
    }
    waker_.wake();
  }

  void setup() {
    queue_ = topo_.apply(conn_.get(), settings_.where);
    amqp_basic_qos(conn_.get(), kChannel, 0, prefetch_, 0);
    check_rpc(conn_.get(), "setting the prefetch (basic.qos)");
    amqp_basic_consume(conn_.get(), kChannel, bytes_of(queue_), amqp_empty_bytes, 0, /*no_ack=*/0, 0, amqp_empty_table);
    check_rpc(conn_.get(), "consuming from queue " + printable(queue_) + " on " + settings_.where);
    outstanding_.clear();
    ++epoch_;
  }

  void run() {
    detail::Backoff backoff(kBackoffMin, kBackoffMax);
    for (;;) {
      {
        std::lock_guard lock(mu_);
        if (closed_) break;
      }
      // Published once per turn of the loop (at least every 100 ms): conn_ is the I/O thread's.
      up_.store(static_cast<bool>(conn_), std::memory_order_relaxed);
      if (!conn_) {
        try {
          conn_ = connect(settings_);
          setup();
          backoff.reset();
        } catch (const Error&) {
          conn_.reset();
          pollfd p{waker_.fd(), POLLIN, 0};
          if (::poll(&p, 1, static_cast<int>(backoff.next().count())) > 0) waker_.drain();
        }
        continue;
      }
      try {
        send_ops();
        if (wait_input(conn_.get(), waker_, 100ms)) {
          read_some();
        } else {
          read_some();  // zero-timeout read: rabbitmq-c sends a due heartbeat
        }
      } catch (const Error&) {
        close_conn(conn_, false);
        outstanding_.clear();
        std::lock_guard lock(mu_);
        ops_.clear();  // tags of the lost connection mean nothing to the next one
      }
    }
    try {
      if (conn_) send_ops();
    } catch (const Error&) {
    }
    // Closing the channel returns every unacked delivery to the queue.
    close_conn(conn_, true);
  }

  void send_ops() {
    std::vector<std::pair<Op, std::uint64_t>> ops;
    {
      std::lock_guard lock(mu_);
      ops.swap(ops_);
    }
    if (ops.empty()) return;
    std::vector<std::uint64_t> acks;
    for (auto [op, id] : ops) {
      if ((id >> kEpochShift) != (epoch_ & 0xffff)) continue;
      const std::uint64_t tag = id & ((std::uint64_t(1) << kEpochShift) - 1);
      if (!outstanding_.erase(tag)) continue;
      if (op == Op::Ack) {
        acks.push_back(tag);
      } else {
        int s = amqp_basic_nack(conn_.get(), kChannel, tag, 0, nack_requeue_);
        if (s != AMQP_STATUS_OK) throw status_error(s, "nack");
      }
    }
    if (acks.empty()) return;
    std::sort(acks.begin(), acks.end());
    // One multiple ack when nothing older than the newest one stays unacked.
    if (outstanding_.empty() || *outstanding_.begin() > acks.back()) {
      int s = amqp_basic_ack(conn_.get(), kChannel, acks.back(), 1);
      if (s != AMQP_STATUS_OK) throw status_error(s, "ack");
      return;
    }
    for (auto tag : acks) {
      int s = amqp_basic_ack(conn_.get(), kChannel, tag, 0);
      if (s != AMQP_STATUS_OK) throw status_error(s, "ack");
    }
  }

  void read_some() {
    std::vector<Delivery> got;
    for (int i = 0; i < 1000; ++i) {
      const bool buffered = amqp_frames_enqueued(conn_.get()) || amqp_data_in_buffer(conn_.get());
      if (i > 0 && !buffered) {
        pollfd p{amqp_get_sockfd(conn_.get()), POLLIN, 0};
        if (::poll(&p, 1, 0) <= 0) break;
      }
      amqp_envelope_t env;
      timeval tv = zero_tv();
      amqp_maybe_release_buffers(conn_.get());
      amqp_rpc_reply_t r = amqp_consume_message(conn_.get(), &env, &tv, 0);
      if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        got.push_back(to_delivery(env));
        amqp_destroy_envelope(&env);
        continue;
      }
      if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT) break;
      if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
        amqp_frame_t frame;
        timeval tv2 = zero_tv();
        int s = amqp_simple_wait_frame_noblock(conn_.get(), &frame, &tv2);
        if (s == AMQP_STATUS_TIMEOUT) break;
        if (s != AMQP_STATUS_OK) throw status_error(s, "connection to " + settings_.where);
        if (frame.frame_type != AMQP_FRAME_METHOD) continue;
        switch (frame.payload.method.id) {
          case AMQP_CHANNEL_CLOSE_METHOD: {
            auto* m = static_cast<amqp_channel_close_t*>(frame.payload.method.decoded);
            throw reply_code_error(m->reply_code, str(m->reply_text), "the broker closed the channel", false);
          }
          case AMQP_CONNECTION_CLOSE_METHOD: {
            auto* m = static_cast<amqp_connection_close_t*>(frame.payload.method.decoded);
            throw reply_code_error(m->reply_code, str(m->reply_text), "the broker closed the connection", true);
          }
          case AMQP_BASIC_CANCEL_METHOD:
            // The queue was deleted: consume again after reconnecting (declares it anew).
            throw Error(ErrorCode::NotFound, "the broker cancelled the consumer of queue " + printable(queue_));
          default:
            continue;
        }
      }
      throw reply_error(r, "consuming from " + settings_.where);
    }
    if (got.empty()) return;
    {
      std::lock_guard lock(mu_);
      for (auto& d : got) ready_.push_back(std::move(d));
    }
    cv_.notify_all();
  }

  Delivery to_delivery(const amqp_envelope_t& env) {
    Delivery d;
    d.data.payload = make_bytes(str(env.message.body));
    const auto& p = env.message.properties;
    detail::amqp::ReceivedTable table;
    if (p._flags & AMQP_BASIC_HEADERS_FLAG) {
      table.reserve(static_cast<std::size_t>(p.headers.num_entries));
      for (int i = 0; i < p.headers.num_entries; ++i)
        table.emplace_back(str(p.headers.entries[i].key), to_field(p.headers.entries[i].value));
    }
    auto e = detail::amqp::decode(table, std::string_view(static_cast<const char*>(env.routing_key.bytes), env.routing_key.len),
                                  (p._flags & AMQP_BASIC_TIMESTAMP_FLAG) ? std::optional<std::uint64_t>(p.timestamp)
                                                                         : std::nullopt);
    d.data.key = std::move(e.key);
    d.data.headers = std::move(e.headers);
    d.data.timestamp_ms = e.timestamp_ms ? *e.timestamp_ms : now_ms();
    const std::uint32_t attempt = e.attempt ? *e.attempt : (env.redelivered ? 2 : 1);
    d.topic = env.exchange.len ? str(env.exchange) : queue_;
    d.attempt = attempt;
    outstanding_.insert(env.delivery_tag);
    d.id = ((epoch_ & 0xffff) << kEpochShift) | env.delivery_tag;
    return d;
  }

  const ConnSettings settings_;
  const Topology topo_;
  const std::uint16_t prefetch_;
  const bool nack_requeue_;
  const std::size_t max_bytes_;

  // Owned by the I/O thread after the constructor.
  ConnHandle conn_;
  std::atomic<bool> up_{true};  // connected(), as last seen by the I/O thread
  std::string queue_;
  std::uint64_t epoch_ = 0;
  std::set<std::uint64_t> outstanding_;  // delivered, not settled (this connection)

  Waker waker_;
  std::mutex mu_;  // guards ready_, ops_, closed_
  std::condition_variable cv_;
  std::deque<Delivery> ready_;
  std::vector<std::pair<Op, std::uint64_t>> ops_;
  bool closed_ = false;
  std::thread thread_;
};

// ---------------------------------------------------------------- options

std::vector<OptionSpec> common_options() {
  return {
      {"vhost", OptionType::String, "/", "virtual host (the URL path is the exchange, so the vhost is an option)"},
      {"exchange_type", OptionType::Choice, "topic",
       "type of the exchange when declared or checked (amq.direct, amq.fanout, amq.topic, amq.headers and "
       "amq.match have their own)",
       {"direct", "topic", "fanout", "headers"}},
      {"declare", OptionType::Bool, "true",
       "declare the exchange (and a named queue); false: check that they exist (NotFound when missing)"},
      {"durable", OptionType::Bool, "true", "a declared exchange and named queue survive a broker restart"},
      {"queue", OptionType::String, "",
       "a named queue to declare (or check) and bind to the exchange; a subscriber consumes from it"},
      {"auto_delete", OptionType::Bool, "false", "a declared named queue is deleted when its last consumer goes"},
      {"binding_key", OptionType::String, "#", "binding key of the queue; default \"#\" for topic exchanges, \"\" otherwise"},
      {"arg.", OptionType::String, "",
       "queue argument, e.g. arg.x-dead-letter-exchange=dlx, arg.x-max-length=1000 (integers and true/false are typed)"},
      {"bind.", OptionType::String, "", "binding argument (headers exchanges), e.g. bind.x-match=any, bind.color=red"},
      {"heartbeat", OptionType::Int, "30", "heartbeat interval in seconds asked of the broker; 0 turns heartbeats off", {}, 0, 65535},
      {"connect_timeout_ms", OptionType::Int, "10000",
       "bound on connecting and on each broker round trip; how long messages wait for a reconnect", {}, 1},
      {"max_message_bytes", OptionType::Int, "134217728",
       "largest message sent (RabbitMQ's max_message_size, default 128 MiB); a larger one fails alone", {}, 1},
  };
}

class AmqpDriver : public Driver {
 public:
  std::string scheme() const override { return "amqp"; }
  std::string description() const override {
    return std::string("AMQP 0-9-1 (RabbitMQ) through rabbitmq-c ") + amqp_version() +
           ": pipelined publisher confirms, mandatory returns, manual acks, nack/requeue or dead-letter";
  }
  std::vector<OptionSpec> sender_options() const override {
    auto specs = common_options();
    std::vector<OptionSpec> own = {
        {"routing_key", OptionType::String, "",
         "routing key of every message; when given, a message's key travels in the header omnibus-key instead"},
        {"confirm", OptionType::Bool, "true", "publisher confirms: a message's result is the broker's basic.ack/nack"},
        {"confirm_window", OptionType::Int, "10000", "most messages awaiting a confirm at a time", {}, 1, 10000000},
        {"mandatory", OptionType::Bool, "true", "an unroutable message fails with NotFound (needs confirm=true)"},
        {"persistent", OptionType::Bool, "true", "delivery mode 2: durable queues keep the message across restarts"},
    };
    specs.insert(specs.end(), own.begin(), own.end());
    return specs;
  }
  std::vector<OptionSpec> receiver_options() const override {
    auto specs = common_options();
    std::vector<OptionSpec> own = {
        {"group", OptionType::String, "",
         "competing consumers share the durable queue EXCHANGE.GROUP (or queue=); empty: a private queue"},
        {"nack_requeue", OptionType::Bool, "true",
         "nack() requeues (redelivery); false: dead-letters through the queue's x-dead-letter-exchange"},
    };
    specs.insert(specs.end(), own.begin(), own.end());
    return specs;
  }
  std::shared_ptr<Sender> open_sender(const Url& url, const OptionValues& options) override {
    return std::make_shared<AmqpSender>(url, options);
  }
  std::shared_ptr<Receiver> open_receiver(const Url& url, const OptionValues& options, const ReceiverSettings&) override {
    return std::make_shared<AmqpReceiver>(url, options);
  }
};

}  // namespace

std::shared_ptr<Driver> make_amqp_driver() { return std::make_shared<AmqpDriver>(); }

}  // namespace omnibus
