// One NATS connection, and JetStream setup on it (connection.hpp).

#include "drivers/nats/connection.hpp"

#include <algorithm>
#include <random>

#include "core/backoff.hpp"

namespace omnibus::detail::nats {
namespace {

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

}  // namespace

// ---------------------------------------------------------------- connection

Connection::Connection(const Settings& s, const std::string& role, bool send_asap)
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
    if (!s.tls_files.ca.empty()) check(natsOptions_LoadCATrustedCertificates(opts.get(), s.tls_files.ca.c_str()), "tls_ca=" + s.tls_files.ca);
    if (!s.tls_files.cert.empty())
      check(natsOptions_LoadCertificatesChain(opts.get(), s.tls_files.cert.c_str(), s.tls_files.key.c_str()),
            "tls_cert=" + s.tls_files.cert + " with tls_key=" + s.tls_files.key);
    if (!s.tls_files.verify) check(natsOptions_SkipServerVerification(opts.get(), true), "tls_verify");
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

std::string Connection::permission_violation(const std::string& fragment) const {
  if (!nc_) return "";
  const char* text = nullptr;
  if (natsConnection_GetLastError(nc_.get(), &text) != NATS_NOT_PERMITTED || !text) return "";
  std::string t = text;
  return fragment.empty() || t.find(fragment) != std::string::npos ? t : "";
}

void Connection::rethrow_explained(const Error& e) const {
  const std::string v = permission_violation();
  if (v.empty()) throw e;
  throw Error(ErrorCode::Unavailable, std::string(e.what()) + "; the server refused: " + v +
                                          " (this user lacks the permission)", e.native_code(), false);
}

void Connection::unsubscribe(NatsPtr<natsSubscription>& sub, std::chrono::milliseconds timeout) {
  if (!sub) return;
  natsSubscription_Unsubscribe(sub.get());  // out of the connection's table; our reference keeps it alive
  if (nc_) natsConnection_FlushTimeout(nc_.get(), timeout.count());
  sub.reset();
}

void Connection::close() {
  if (!nc_) return;
  natsConnection_FlushTimeout(nc_.get(), 1000);
  natsConnection_Close(nc_.get());
  nc_.reset();
  ConnSinks::instance().remove(key_);
}

std::string Connection::state() const {
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

void Connection::check(natsStatus st, const std::string& what) {
  if (st == NATS_OK) return;
  Error e = nats_error(st, "NATS " + context_ + ": " + what);
  ConnSinks::instance().remove(key_);
  throw Error(st == NATS_NO_MEMORY ? ErrorCode::ResourceExhausted : ErrorCode::InvalidArgument, e.what(), e.native_code());
}

// ---------------------------------------------------------------- JetStream setup

NatsPtr<jsCtx> make_js(Connection& conn, const Settings& s, jsOptions* extra) {
  jsOptions jo;
  if (extra) jo = *extra;
  else jsOptions_Init(&jo);
  jo.Wait = s.request_timeout_ms;
  jsCtx* js = nullptr;
  natsStatus st = natsConnection_JetStream(&js, conn.get(), &jo);
  if (st != NATS_OK) throw nats_error(st, "NATS " + conn.context() + ": JetStream context");
  return NatsPtr<jsCtx>(js);
}

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

}  // namespace omnibus::detail::nats
