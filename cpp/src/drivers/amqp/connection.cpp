// What the AMQP sender and receiver share (connection.hpp).

#include "drivers/amqp/connection.hpp"

#include "core/tls.hpp"
#ifdef OMNIBUS_HAVE_TLS_PROBE
#include "core/tls_probe.hpp"
#endif

#include <amqp_tcp_socket.h>
#include <amqp_ssl_socket.h>
#include <poll.h>

namespace omnibus::detail::amqp {
namespace {

// A received field as the envelope reads it (envelope.hpp).
Scalar to_scalar(const amqp_field_value_t& v) {
  switch (v.kind) {
    case AMQP_FIELD_KIND_UTF8:
      return str(v.value.bytes);
    case AMQP_FIELD_KIND_BYTES:
      return Binary{str(v.value.bytes)};
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
      return Void{};
  }
}

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

}  // namespace

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

void throw_if_closed(const amqp_frame_t& frame) {
  if (frame.frame_type != AMQP_FRAME_METHOD) return;
  if (frame.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD) {
    auto* m = static_cast<amqp_channel_close_t*>(frame.payload.method.decoded);
    throw reply_code_error(m->reply_code, str(m->reply_text), "the broker closed the channel", false);
  }
  if (frame.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
    auto* m = static_cast<amqp_connection_close_t*>(frame.payload.method.decoded);
    throw reply_code_error(m->reply_code, str(m->reply_text), "the broker closed the connection", true);
  }
}

Field to_field(const amqp_field_value_t& v) {
  if (v.kind == AMQP_FIELD_KIND_TABLE) return NestedTable{};
  if (v.kind == AMQP_FIELD_KIND_ARRAY) {
    Array array;
    for (int k = 0; k < v.value.array.num_entries; ++k) array.items.push_back(to_scalar(v.value.array.entries[k]));
    return array;
  }
  return std::visit([](auto&& s) -> Field { return std::move(s); }, to_scalar(v));
}

ConnSettings conn_settings(const Url& url, const OptionValues& o) {
  ConnSettings s;
  const auto& h = url.hosts.front();
  if (h.host.empty()) throw Error(ErrorCode::InvalidArgument, "amqp:// URL '" + url.text + "' names no broker host");
  s.host = h.host;
  s.tls = url.scheme == "amqps";
  s.port = h.port ? h.port : (s.tls ? 5671 : 5672);
  s.tls_files = read_tls_options(o, "amqps", url.text);
  if (!s.tls && s.tls_files.any_given())
    throw Error(ErrorCode::InvalidArgument, "amqp:// URL '" + url.text + "' has TLS options, but amqp:// is plaintext: "
                                            "use amqps://host[:5671]/... for TLS");
  s.external = o.get_string("sasl_mechanism") == "EXTERNAL";
  if (s.external && (!s.tls || s.tls_files.cert.empty()))
    throw Error(ErrorCode::InvalidArgument, "amqp URL '" + url.text + "': sasl_mechanism=EXTERNAL logs in with the "
                                            "client certificate: use amqps:// with tls_cert= and tls_key=");
  if (s.external && url.has_userinfo && !url.password.empty())
    throw Error(ErrorCode::InvalidArgument, "amqp URL '" + url.text + "': sasl_mechanism=EXTERNAL logs in with the "
                                            "client certificate, not a password; drop the password from the URL");
  if (s.external) {
    // rabbitmq-c cannot send the empty identity (which means "the certificate's"): the URL's user,
    // else the certificate's common name, which is what RabbitMQ takes anyway.
    s.identity = url.has_userinfo ? url.user : std::string();
#ifdef OMNIBUS_HAVE_TLS_PROBE
    if (s.identity.empty()) s.identity = certificate_common_name(s.tls_files.cert);
#endif
    if (s.identity.empty())
      throw Error(ErrorCode::InvalidArgument, "amqp URL '" + url.text + "': sasl_mechanism=EXTERNAL needs the identity "
                                              "to log in as: amqps://USER@host/... (no common name read from tls_cert)");
  }
  if (url.has_userinfo && !s.external) {
    s.user = url.user;
    s.password = url.password;
  }
  s.vhost = o.get_string("vhost");
  s.heartbeat = static_cast<int>(o.get_int("heartbeat"));
  s.connect_timeout = std::chrono::milliseconds(o.get_int("connect_timeout_ms"));
  s.where = s.host + ":" + std::to_string(s.port) + " (vhost " + printable(s.vhost) + ")";
  return s;
}

ConnHandle connect(const ConnSettings& s) {
  ConnHandle conn(amqp_new_connection());
  if (!conn) throw Error(ErrorCode::ResourceExhausted, "rabbitmq-c could not allocate a connection");
  amqp_socket_t* sock = s.tls ? amqp_ssl_socket_new(conn.get()) : amqp_tcp_socket_new(conn.get());  // owned by conn
  if (!sock) throw Error(ErrorCode::ResourceExhausted, "rabbitmq-c could not allocate a socket");
  if (s.tls) {
    // Without tls_ca, OpenSSL's default CA paths (the system's CAs).
    if (!s.tls_files.ca.empty() && amqp_ssl_socket_set_cacert(sock, s.tls_files.ca.c_str()) != AMQP_STATUS_OK)
      throw Error(ErrorCode::InvalidArgument, "amqps:// tls_ca=" + s.tls_files.ca + " cannot be loaded (a PEM CA certificate file)");
    if (!s.tls_files.cert.empty() && amqp_ssl_socket_set_key(sock, s.tls_files.cert.c_str(), s.tls_files.key.c_str()) != AMQP_STATUS_OK)
      throw Error(ErrorCode::InvalidArgument, "amqps:// tls_cert=" + s.tls_files.cert + " with tls_key=" + s.tls_files.key +
                                                  " cannot be loaded (PEM files; the key must match the certificate)");
    amqp_ssl_socket_set_verify_peer(sock, s.tls_files.verify ? 1 : 0);
    amqp_ssl_socket_set_verify_hostname(sock, s.tls_files.verify ? 1 : 0);
  }
  timeval tv{static_cast<time_t>(s.connect_timeout.count() / 1000),
             static_cast<suseconds_t>((s.connect_timeout.count() % 1000) * 1000)};
  int status = amqp_socket_open_noblock(sock, s.host.c_str(), s.port, &tv);
  if (status != AMQP_STATUS_OK) {
    Error e = status_error(status, "cannot connect to the AMQP broker at " + s.where);
    switch (status) {
      case AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED:
        throw Error(ErrorCode::Unavailable, std::string(e.what()) + " -- the broker's certificate does not name host '" +
                                                s.host + "' (or tls_verify=false to skip the check)", status, false);
      case AMQP_STATUS_SSL_PEER_VERIFY_FAILED:
      case AMQP_STATUS_SSL_ERROR:
      case AMQP_STATUS_SSL_CONNECTION_FAILED: {
        // rabbitmq-c does not say what failed in the certificate check: OpenSSL does, in a
        // handshake of our own (e.g. "certificate verify failed (certificate has expired)").
        std::string why;
#ifdef OMNIBUS_HAVE_TLS_PROBE
        if (status == AMQP_STATUS_SSL_PEER_VERIFY_FAILED)
          why = tls_handshake_failure(s.host, s.port, s.host, s.tls_files, std::chrono::milliseconds(2000));
#endif
        throw Error(ErrorCode::Unavailable,
                    std::string(e.what()) + " -- TLS handshake failed: " +
                        (why.empty() ? "is tls_ca the CA that signed the broker's certificate, is the port a TLS "
                                       "listener, does the broker accept tls_cert?"
                                     : why),
                    status, false);
      }
      default:
        throw e;
    }
  }
  amqp_set_handshake_timeout(conn.get(), &tv);
  amqp_set_rpc_timeout(conn.get(), &tv);
  amqp_rpc_reply_t r =
      s.external ? amqp_login(conn.get(), s.vhost.c_str(), 0, kFrameMax, s.heartbeat, AMQP_SASL_METHOD_EXTERNAL,
                              s.identity.c_str())
                 : amqp_login(conn.get(), s.vhost.c_str(), 0, kFrameMax, s.heartbeat, AMQP_SASL_METHOD_PLAIN,
                              s.user.c_str(), s.password.c_str());
  if (r.reply_type != AMQP_RESPONSE_NORMAL) {
    Error e = reply_error(r, "login to " + s.where +
                                 (s.external ? " as " + printable(s.identity) + " with the client certificate (EXTERNAL)"
                                             : " as user " + printable(s.user)));
    if (e.native_code() == AMQP_ACCESS_REFUSED && s.external)
      throw Error(ErrorCode::Unavailable,
                  std::string(e.what()) + " -- the broker refused the certificate's login: is the "
                                          "rabbitmq_auth_mechanism_ssl plugin on, EXTERNAL in auth_mechanisms, and a "
                                          "user named as the certificate (ssl_cert_login_from) there?",
                  e.native_code(), false);
    if (e.native_code() == AMQP_ACCESS_REFUSED)
      throw Error(ErrorCode::Unavailable,
                  std::string(e.what()) + " -- wrong user name or password (give the right ones as amqp://USER:PASSWORD@host)",
                  e.native_code(), false);
    if (e.native_code() == AMQP_NOT_ALLOWED)
      throw Error(ErrorCode::Unavailable,
                  std::string(e.what()) + " -- the vhost does not exist or the user may not use it (option vhost=, default /)",
                  e.native_code(), false);
    if (!s.tls && (e.native_code() == AMQP_STATUS_CONNECTION_CLOSED || e.native_code() == AMQP_STATUS_SOCKET_ERROR))
      throw Error(ErrorCode::Unavailable, std::string(e.what()) + " -- the broker closed the connection during the "
                                          "handshake (a TLS port? then use amqps://)", e.native_code(), true);
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

void close_conn(ConnHandle& conn, bool polite) {
  if (!conn) return;
  if (polite) {
    amqp_channel_close(conn.get(), kChannel, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn.get(), AMQP_REPLY_SUCCESS);
  }
  conn.reset();
}

std::string Topology::apply(amqp_connection_state_t c, const std::string& where) const {
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

bool wait_input(amqp_connection_state_t c, Waker& waker, std::chrono::milliseconds timeout) {
  if (amqp_frames_enqueued(c) || amqp_data_in_buffer(c)) return true;
  pollfd fds[2] = {{amqp_get_sockfd(c), POLLIN, 0}, {waker.fd(), POLLIN, 0}};
  int n = ::poll(fds, 2, static_cast<int>(timeout.count()));
  if (n > 0 && fds[1].revents) waker.drain();
  return n > 0 && fds[0].revents;
}

}  // namespace omnibus::detail::amqp
