#pragma once
// What the pieces of the nats:// driver share (nats_driver.cpp says how the
// driver works): cnats handle owners, the registry cnats callbacks go
// through, subject checks, the error mapping, the settings a URL makes, and
// the conversion of messages to and from natsMsg.

#include <nats/nats.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/tls.hpp"
#include "drivers/nats/envelope.hpp"
#include "omnibus/driver.hpp"
#include "omnibus/error.hpp"

namespace omnibus::detail::nats {

using SteadyClock = std::chrono::steady_clock;

// Owners of cnats handles: each kind has its own destroy function.
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

// Why `subject` is not a valid NATS subject, or nullptr.
const char* subject_problem(std::string_view subject, bool wildcards);
// Does `subject` (literal) match `pattern` (with '*' and '>')?
bool subject_matches(std::string_view pattern, std::string_view subject);
// Stream, consumer and queue names: no whitespace; stream and consumer names
// are also file names on the server.
const char* name_problem(std::string_view name, bool jetstream);
// "30000" (ms), "500ms", "30s", "2m", "1.5s" -> milliseconds; -1 when malformed.
std::int64_t parse_duration_ms(const std::string& text);

// The Error for a natsStatus and, when the server sent one, a JetStream API
// error code; `context` says what was being done.
Error nats_error(natsStatus s, const std::string& context, jsErrCode jerr = static_cast<jsErrCode>(0));

// What a URL and its options say. The connection part is common_settings';
// the driver fills in each role's own part.
struct Settings {
  std::string url;  // redacted, for messages
  std::vector<std::string> servers;
  std::string where;  // host:port,... for messages
  std::string user, password;
  bool has_user = false;
  // TLS and the other ways to log in (user/password above; a token is a user without password)
  bool tls = false;
  TlsFiles tls_files;
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

// What both roles take from the URL and the connection options. Throws
// InvalidArgument for what cannot work: no server or subject, tls_cert
// without tls_key, nkey without nkey_seed, two ways to log in, a bad stream
// name.
Settings common_settings(const Url& url, const OptionValues& o);

// What a role can do follows from its mode (core or JetStream) and storage;
// max_bytes becomes max_message_bytes (the largest payload that fits).
Capabilities nats_capabilities(const Settings& s, std::size_t max_bytes);

// A natsMsg for `m` with its headers; nullptr when it needs none (plain PUB).
NatsPtr<natsMsg> make_msg(const std::string& subject, const OutMessage& m, const HeaderFields& h,
                          const std::string& context, const char* reply = nullptr);
// A received natsMsg's payload, key, headers and (from Omnibus-Ts) timestamp.
OutMessage to_out(natsMsg* msg);

}  // namespace omnibus::detail::nats
