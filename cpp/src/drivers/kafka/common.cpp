// What the pieces of the kafka:// driver share (common.hpp).

#include "drivers/kafka/common.hpp"

#ifdef OMNIBUS_HAVE_TLS_PROBE
#include "core/tls_probe.hpp"
#endif

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace omnibus::detail::kafka {
namespace {

// librdkafka tells why a connection failed (a TLS handshake, a refused SASL
// login) only in its log, at error level from its broker threads; the last
// such line per client is kept for the Unavailable that opening raises when
// no broker answered. librdkafka never logs sasl.password.
class FailReasons {
 public:
  static FailReasons& instance() {
    static FailReasons* r = new FailReasons;  // never destroyed: broker threads may log during exit
    return *r;
  }
  void note(const rd_kafka_t* rk, const char* line) {
    std::lock_guard lock(mu_);
    auto& last = last_[rk];
    // "N/N brokers are down" follows each failure: it would hide the reason.
    if (last.empty() || std::strstr(line, "brokers are down") == nullptr) last = line;
  }
  std::string last(const rd_kafka_t* rk) {
    std::lock_guard lock(mu_);
    auto it = last_.find(rk);
    return it == last_.end() ? std::string() : it->second;
  }
  void forget(const rd_kafka_t* rk) {
    std::lock_guard lock(mu_);
    last_.erase(rk);
  }

 private:
  std::mutex mu_;
  std::unordered_map<const rd_kafka_t*, std::string> last_;
};

struct EventDeleter {
  void operator()(rd_kafka_event_t* e) const { rd_kafka_event_destroy(e); }
};
using Event = std::unique_ptr<rd_kafka_event_t, EventDeleter>;

}  // namespace

void HandleDeleter::operator()(rd_kafka_t* rk) const {
  rd_kafka_destroy(rk);
  FailReasons::instance().forget(rk);  // after: no broker thread logs any more
}

Error kafka_error(rd_kafka_resp_err_t err, const std::string& context) {
  ErrorCode code;
  switch (err) {
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
      code = ErrorCode::Timeout;
      break;
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    case RD_KAFKA_RESP_ERR__RESOLVE:
    case RD_KAFKA_RESP_ERR_BROKER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
    case RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND:
    case RD_KAFKA_RESP_ERR__AUTHENTICATION:
    case RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED:
      code = ErrorCode::Unavailable;
      break;
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR__QUEUE_FULL:
      code = ErrorCode::ResourceExhausted;
      break;
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
      code = ErrorCode::NotFound;
      break;
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR_INVALID_PARTITIONS:
    case RD_KAFKA_RESP_ERR_INVALID_REPLICATION_FACTOR:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
    case RD_KAFKA_RESP_ERR_INVALID_CONFIG:
      code = ErrorCode::InvalidArgument;
      break;
    case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
    case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
    case RD_KAFKA_RESP_ERR__DESTROY:
      code = ErrorCode::Closed;
      break;
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED:
      code = ErrorCode::InvalidArgument;
      break;
    default:
      code = ErrorCode::Internal;
  }
  return Error(code, context + ": " + rd_kafka_err2str(err) + " (librdkafka " + rd_kafka_err2name(err) + ")",
               static_cast<int>(err));
}

namespace {

std::string bootstrap_servers(const Url& url) {
  std::string out;
  for (const auto& h : url.hosts) {
    if (h.host.empty()) throw Error(ErrorCode::InvalidArgument, "kafka:// URL '" + url.text + "' names no broker host");
    bool v6 = h.host.find(':') != std::string::npos;
    out += (out.empty() ? "" : ",") + (v6 ? "[" + h.host + "]" : h.host) + ":" + std::to_string(h.port ? h.port : 9092);
  }
  return out;
}

}  // namespace

std::string topic_of(const Url& url) {
  const std::string& t = url.path;
  auto bad = [&](const std::string& why) {
    throw Error(ErrorCode::InvalidArgument, "kafka:// topic '" + t + "' in '" + url.text + "' " + why +
                                                "; a topic is 1 to 249 of the characters a-z A-Z 0-9 . _ -");
  };
  if (t.empty()) bad("is missing: use kafka://host:port/TOPIC");
  if (t.size() > 249) bad("is longer than 249 characters");
  if (t == "." || t == "..") bad("is not allowed");
  for (char c : t)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'))
      bad(std::string("contains '") + c + "'");
  return t;
}

std::string broker_where(const Url& url, const OptionValues& o) {
  std::string where = bootstrap_servers(url);
  if (url.has_userinfo) where += " as SASL user '" + url.user + "' (" + o.get_string("sasl_mechanism") + ")";
  return where;
}

void conf_set(rd_kafka_conf_t* conf, const std::string& name, const std::string& value, const std::string& shown) {
  char errstr[512];
  if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), errstr, sizeof errstr) != RD_KAFKA_CONF_OK)
    throw Error(ErrorCode::InvalidArgument, shown + "=" + value + " rejected by librdkafka (property " + name +
                                                "): " + errstr);
}

Conf base_conf(const Url& url, const OptionValues& options) {
  Conf conf(rd_kafka_conf_new());
  conf_set(conf.get(), "bootstrap.servers", bootstrap_servers(url), "URL hosts");
  conf_set(conf.get(), "client.id", options.get_string("client_id"), "client_id");
  // librdkafka would print connection errors to stderr behind the user's back;
  // they reach the caller as delivery results and exceptions instead.
  conf_set(conf.get(), "log_level", "3", "log_level");
  rd_kafka_conf_set_log_cb(conf.get(), [](const rd_kafka_t* rk, int level, const char*, const char* line) {
    if (level <= 3) FailReasons::instance().note(rk, line);
  });
  // Topics are created by ensure_topic with the partitions asked for; a
  // metadata request must not auto-create them first with the broker default.
  conf_set(conf.get(), "allow.auto.create.topics", "false", "allow.auto.create.topics");
  // Security: credentials in the URL mean SASL; TLS files mean SSL. The
  // password goes to librdkafka only, never into a message of ours.
  std::string protocol = options.get_string("security_protocol");
  const bool tls_given = !options.get_string("tls_ca").empty() || !options.get_string("tls_cert").empty();
  if (protocol.empty()) protocol = url.has_userinfo ? (tls_given ? "sasl_ssl" : "sasl_plaintext") : (tls_given ? "ssl" : "plaintext");
  const bool sasl = protocol.rfind("sasl_", 0) == 0, ssl = protocol == "ssl" || protocol == "sasl_ssl";
  if (url.has_userinfo && !sasl)
    throw Error(ErrorCode::InvalidArgument,
                "kafka:// URL has credentials (USER:PASSWORD@) but security_protocol=" + protocol +
                    " sends none: use sasl_plaintext or sasl_ssl, or drop the credentials");
  if (sasl && (!url.has_userinfo || url.user.empty()))
    throw Error(ErrorCode::InvalidArgument, "security_protocol=" + protocol +
                                                " needs a user and password in the URL: kafka://USER:PASSWORD@host:port/topic");
  if (!ssl && tls_given)
    throw Error(ErrorCode::InvalidArgument, "tls_ca/tls_cert are given but security_protocol=" + protocol +
                                                " does not use TLS: use ssl or sasl_ssl");
  std::string upper = protocol;
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  conf_set(conf.get(), "security.protocol", upper, "security_protocol");
  if (sasl) {
    conf_set(conf.get(), "sasl.mechanisms", options.get_string("sasl_mechanism"), "sasl_mechanism");
    conf_set(conf.get(), "sasl.username", url.user, "the URL's user");
    if (rd_kafka_conf_set(conf.get(), "sasl.password", url.password.c_str(), nullptr, 0) != RD_KAFKA_CONF_OK)
      throw Error(ErrorCode::InvalidArgument, "librdkafka refused the URL's password (sasl.password)");
  }
  if (ssl) {
    if (!options.get_string("tls_ca").empty()) conf_set(conf.get(), "ssl.ca.location", options.get_string("tls_ca"), "tls_ca");
    if (!options.get_string("tls_cert").empty())
      conf_set(conf.get(), "ssl.certificate.location", options.get_string("tls_cert"), "tls_cert");
    if (!options.get_string("tls_key").empty()) conf_set(conf.get(), "ssl.key.location", options.get_string("tls_key"), "tls_key");
    conf_set(conf.get(), "ssl.endpoint.identification.algorithm", options.get_bool("tls_verify_hostname") ? "https" : "none",
             "tls_verify_hostname");
  }
  for (const auto& [name, value] : options.family("rdkafka.")) conf_set(conf.get(), name, value, "rdkafka." + name);
  return conf;
}

std::size_t max_message_bytes(rd_kafka_conf_t* conf) {
  char buf[64];
  size_t size = sizeof buf;
  if (rd_kafka_conf_get(conf, "message.max.bytes", buf, &size) != RD_KAFKA_CONF_OK) return 0;
  return static_cast<std::size_t>(std::strtoull(buf, nullptr, 10));
}

Capabilities kafka_capabilities(std::size_t max_bytes) {
  Capabilities c;
  c.delivery_guarantee = "at-least-once";
  c.ordered_per_key = true;   // a key maps to one partition, a partition is ordered
  c.key_affinity = true;      // a partition belongs to one group member at a time
  c.keys = true;
  c.nack = true;              // by seeking back: later messages of the partition come again too
  c.ack_deadline = false;
  c.requeue_on_close = true;  // uncommitted offsets go to the group's next owner
  c.delivery_count = false;   // Kafka keeps no count; it is exact within one subscriber only
  c.competing_consumers = true;
  c.headers = true;
  c.dead_letter = false;
  c.durable = true;
  c.max_message_bytes = max_bytes;
  return c;
}

void BrokerWatch::enable(rd_kafka_conf_t* conf, const OptionValues& o,
                         int (*cb)(rd_kafka_t*, char*, size_t, void*)) {
  std::optional<std::string> interval;
  for (const auto& [name, value] : o.family("rdkafka."))
    if (name == "statistics.interval.ms") interval = value;
  if (!interval)
    conf_set(conf, "statistics.interval.ms", "1000", "statistics.interval.ms");
  else if (*interval == "0")
    state_ = kUnknown;  // the user turned statistics off: nothing to tell from
  rd_kafka_conf_set_stats_cb(conf, cb);
}

void BrokerWatch::update(const char* json, std::size_t len) noexcept {
  try {
    auto doc = nlohmann::json::parse(json, json + len);
    bool up = false;
    const auto brokers = doc.value("brokers", nlohmann::json::object());
    for (const auto& broker : brokers)
      if (broker.value("nodeid", -1) >= 0 && broker.value("state", std::string()) == "UP") up = true;
    state_ = up ? kUp : kDown;
  } catch (const std::exception&) {
    // A statistics format this code does not know: say so rather than guess.
    state_ = kUnknown;
  }
}

Handle make_handle(rd_kafka_type_t type, Conf conf) {
  char errstr[512];
  rd_kafka_t* rk = rd_kafka_new(type, conf.get(), errstr, sizeof errstr);
  if (!rk) throw Error(ErrorCode::InvalidArgument, std::string("librdkafka could not create a client: ") + errstr);
  conf.release();  // rd_kafka_new took it
  return Handle(rk);
}

namespace {

// After librdkafka's "certificate verify failed", which does not say what failed: OpenSSL's
// reason from a handshake of our own with the first broker, e.g. "(hostname mismatch)".
std::string certificate_detail(const Url& url, const OptionValues& o, const std::string& reason) {
#ifdef OMNIBUS_HAVE_TLS_PROBE
  if (reason.find("certificate verify failed") == std::string::npos || !o.get_bool("tls_verify_hostname")) return {};
  TlsFiles t;
  t.ca = o.get_string("tls_ca");
  t.cert = o.get_string("tls_cert");
  t.key = o.get_string("tls_key");
  const auto& h = url.hosts.front();
  std::string why = tls_handshake_failure(h.host, h.port ? h.port : 9092, h.host, t, std::chrono::milliseconds(2000));
  return why.empty() ? std::string() : "; the certificate check: " + why;
#else
  (void)url, (void)o, (void)reason;
  return {};
#endif
}

}  // namespace

int ensure_topic(rd_kafka_t* rk, const std::string& topic, int partitions, int replication, std::size_t max_bytes,
                 std::chrono::milliseconds timeout, const Url& url, const OptionValues& o) {
  const std::string where = broker_where(url, o);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  TopicHandle rkt(rd_kafka_topic_new(rk, topic.c_str(), nullptr));
  bool create_sent = false;
  rd_kafka_resp_err_t last = RD_KAFKA_RESP_ERR_NO_ERROR;
  while (std::chrono::steady_clock::now() < deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    const rd_kafka_metadata_t* md = nullptr;
    last = rd_kafka_metadata(rk, 0, rkt.get(), &md, static_cast<int>(std::max<long>(100, std::min<long>(left.count(), 5000))));
    if (last == RD_KAFKA_RESP_ERR_NO_ERROR && md) {
      std::unique_ptr<const rd_kafka_metadata_t, void (*)(const rd_kafka_metadata_t*)> hold(md, rd_kafka_metadata_destroy);
      if (md->topic_cnt == 1) {
        const auto& t = md->topics[0];
        bool leaders = t.partition_cnt > 0 &&
                       std::all_of(t.partitions, t.partitions + t.partition_cnt, [](const rd_kafka_metadata_partition_t& p) {
                         return p.err == RD_KAFKA_RESP_ERR_NO_ERROR && p.leader >= 0;
                       });
        if (t.err == RD_KAFKA_RESP_ERR_NO_ERROR && leaders) return t.partition_cnt;
        if (t.err == RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION) throw kafka_error(t.err, "topic '" + topic + "'");
        if ((t.err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || t.partition_cnt == 0) && !create_sent) {
          create_sent = true;
          char errstr[512];
          auto* nt = rd_kafka_NewTopic_new(topic.c_str(), partitions, replication, errstr, sizeof errstr);
          if (!nt) throw Error(ErrorCode::InvalidArgument, std::string("cannot create topic '") + topic + "': " + errstr);
          if (max_bytes) rd_kafka_NewTopic_set_config(nt, "max.message.bytes", std::to_string(max_bytes + 1024).c_str());
          Queue q(rd_kafka_queue_new(rk));
          rd_kafka_CreateTopics(rk, &nt, 1, nullptr, q.get());
          rd_kafka_NewTopic_destroy(nt);
          Event ev(rd_kafka_queue_poll(q.get(), static_cast<int>(std::max<long>(100, left.count()))));
          if (ev) {
            const auto* res = rd_kafka_event_CreateTopics_result(ev.get());
            size_t n = 0;
            const rd_kafka_topic_result_t** results = res ? rd_kafka_CreateTopics_result_topics(res, &n) : nullptr;
            for (size_t i = 0; i < n; ++i) {
              auto err = rd_kafka_topic_result_error(results[i]);
              if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
                throw kafka_error(err, "creating topic '" + topic + "'");
            }
          }
        }
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::string hint;
  if (where.find(" as SASL user ") != std::string::npos && last == RD_KAFKA_RESP_ERR__TRANSPORT)
    hint = "; a refused SASL login looks like this (the broker closes the connection): check the user, the "
           "password and sasl_mechanism";
  const std::string reason = FailReasons::instance().last(rk);
  // librdkafka before 2.6.1 repeats the client nonce in SCRAM's client-final-message; Kafka 4
  // checks it strictly (RFC 5802) and refuses the proof as invalid credentials whatever the
  // password (librdkafka PR #4895). Debian 12 ships 2.0.2.
  if (where.find("(SCRAM-") != std::string::npos && rd_kafka_version() < 0x020601ff &&
      reason.find("invalid credentials") != std::string::npos)
    hint += std::string("; note: this librdkafka (") + rd_kafka_version_str() +
            ", before 2.6.1) sends SCRAM proofs that Kafka 4 brokers refuse as invalid credentials even with "
            "the right password: use a Kafka 3 broker, sasl_mechanism=PLAIN over TLS, or librdkafka 2.6.1 or later";
  throw Error(ErrorCode::Unavailable,
              "no Kafka broker at " + where + " answered with topic '" + topic + "' within " +
                  std::to_string(timeout.count()) + " ms (last: " + rd_kafka_err2str(last) +
                  (reason.empty() ? "" : "; librdkafka: " + reason) + ")" + certificate_detail(url, o, reason) + hint,
              static_cast<int>(last));
}

}  // namespace omnibus::detail::kafka
