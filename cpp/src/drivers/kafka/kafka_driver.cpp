// kafka:// -- Apache Kafka through librdkafka's C API.
//
// URL: kafka://host:port[,host:port...]/topic. User info, when given, is used
// as SASL/PLAIN credentials.
//
// Publishing: each message goes to rd_kafka_producev without a copy (the
// Publisher keeps the batch alive until every delivery report is in); the
// delivery report of each message is its result. A poll thread serves the
// reports. librdkafka batches on the wire (linger_ms, batch_size); its own
// retries stay on (they are protocol-level and, with idempotence, exactly-once
// per partition); omnibus does not retry on top.
//
// Subscribing without ?group=: a private subscription that sees every message
// published after it opened. The partitions are assigned directly at their
// current end offsets (no consumer group, no rebalance), so nothing published
// after open() is missed. With ?group=NAME: a consumer group; open() returns
// once the group gave this member its partitions. A new group starts at
// offset_reset (default earliest: nothing is skipped).
//
// Connection state: librdkafka keeps connections to several brokers and has
// no overall "connected" event, so connected() reads its statistics (one JSON
// document every statistics.interval.ms, 1000 unless rdkafka.statistics.
// interval.ms says otherwise; 0 turns it off and connected() is None): true
// while at least one broker of the cluster (not a bootstrap address) is UP.
//
// Acks: offsets are committed only for acked messages and in order per
// partition: the committed offset is the lowest unacked one, so a crash
// redelivers and never skips. Commits go out at most every 100 ms (and on
// close). nack() seeks the partition back to the message,
// so it comes again, and so do the later messages of that partition that were
// already delivered (at-least-once); delivery_attempt counts those
// redeliveries within this subscriber.

#include "drivers/kafka/kafka_driver.hpp"

#include <librdkafka/rdkafka.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <deque>
#include <map>
#include <cstring>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>

#include "omnibus/driver.hpp"
#include "omnibus/error.hpp"

namespace omnibus {
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

struct HandleDeleter {
  void operator()(rd_kafka_t* rk) const {
    rd_kafka_destroy(rk);
    FailReasons::instance().forget(rk);  // after: no broker thread logs any more
  }
};
struct ConfDeleter {
  void operator()(rd_kafka_conf_t* c) const { rd_kafka_conf_destroy(c); }
};
struct ListDeleter {
  void operator()(rd_kafka_topic_partition_list_t* l) const { rd_kafka_topic_partition_list_destroy(l); }
};
struct QueueDeleter {
  void operator()(rd_kafka_queue_t* q) const { rd_kafka_queue_destroy(q); }
};
struct TopicDeleter {
  void operator()(rd_kafka_topic_t* t) const { rd_kafka_topic_destroy(t); }
};
struct EventDeleter {
  void operator()(rd_kafka_event_t* e) const { rd_kafka_event_destroy(e); }
};
using Handle = std::unique_ptr<rd_kafka_t, HandleDeleter>;
using Conf = std::unique_ptr<rd_kafka_conf_t, ConfDeleter>;
using List = std::unique_ptr<rd_kafka_topic_partition_list_t, ListDeleter>;
using Queue = std::unique_ptr<rd_kafka_queue_t, QueueDeleter>;
using TopicHandle = std::unique_ptr<rd_kafka_topic_t, TopicDeleter>;
using Event = std::unique_ptr<rd_kafka_event_t, EventDeleter>;

// librdkafka's error codes onto the shared taxonomy; the native code is kept.
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

std::string bootstrap_servers(const Url& url) {
  std::string out;
  for (const auto& h : url.hosts) {
    if (h.host.empty()) throw Error(ErrorCode::InvalidArgument, "kafka:// URL '" + url.text + "' names no broker host");
    bool v6 = h.host.find(':') != std::string::npos;
    out += (out.empty() ? "" : ",") + (v6 ? "[" + h.host + "]" : h.host) + ":" + std::to_string(h.port ? h.port : 9092);
  }
  return out;
}

// Kafka's own rule (kafka.common.Topic): 1..249 of [a-zA-Z0-9._-], not "." or "..".
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

// The brokers, and who logs in (never the password), for messages.
std::string broker_where(const Url& url, const OptionValues& o) {
  std::string where = bootstrap_servers(url);
  if (url.has_userinfo) where += " as SASL user '" + url.user + "' (" + o.get_string("sasl_mechanism") + ")";
  return where;
}

// `shown` is how the user wrote it (an omnibus option or the URL part).
void conf_set(rd_kafka_conf_t* conf, const std::string& name, const std::string& value, const std::string& shown) {
  char errstr[512];
  if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), errstr, sizeof errstr) != RD_KAFKA_CONF_OK)
    throw Error(ErrorCode::InvalidArgument, shown + "=" + value + " rejected by librdkafka (property " + name +
                                                "): " + errstr);
}

// What both sides share: brokers, client id, credentials, rdkafka.* pass-through.
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

// Connection state from librdkafka's statistics (see the top of this file).
// update() runs on the thread that serves the handle's callbacks; state() on
// any thread.
class BrokerWatch {
 public:
  // Turns the statistics on (unless the user chose an interval) and routes
  // them to `cb`, whose opaque is the handle's conf opaque.
  void enable(rd_kafka_conf_t* conf, const OptionValues& o,
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
  void update(const char* json, std::size_t len) noexcept {
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
  std::optional<bool> state() const {
    const int s = state_;
    if (s == kUnknown) return std::nullopt;
    return s == kUp;
  }

 private:
  static constexpr int kUnknown = -1, kDown = 0, kUp = 1;
  std::atomic<int> state_{kUp};  // open() returned: the cluster answered
};

Handle make_handle(rd_kafka_type_t type, Conf conf) {
  char errstr[512];
  rd_kafka_t* rk = rd_kafka_new(type, conf.get(), errstr, sizeof errstr);
  if (!rk) throw Error(ErrorCode::InvalidArgument, std::string("librdkafka could not create a client: ") + errstr);
  conf.release();  // rd_kafka_new took it
  return Handle(rk);
}

// Returns the topic's partition count, creating the topic when it does not
// exist yet. Throws Unavailable when no broker answers within `timeout`.
// A topic omnibus creates accepts what this client may send (max_bytes, the
// client's message.max.bytes, plus record-batch overhead), so a limit raised
// with rdkafka.message.max.bytes works end to end without broker changes.
int ensure_topic(rd_kafka_t* rk, const std::string& topic, int partitions, int replication, std::size_t max_bytes,
                 std::chrono::milliseconds timeout, const std::string& where) {
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
  throw Error(ErrorCode::Unavailable,
              "no Kafka broker at " + where + " answered with topic '" + topic + "' within " +
                  std::to_string(timeout.count()) + " ms (last: " + rd_kafka_err2str(last) +
                  (reason.empty() ? "" : "; librdkafka: " + reason) + ")" + hint,
              static_cast<int>(last));
}

// ---------------------------------------------------------------- Sender

class KafkaSender : public Sender {
 public:
  KafkaSender(const Url& url, const OptionValues& o) : topic_(topic_of(url)) {
    Conf conf = base_conf(url, o);
    conf_set(conf.get(), "acks", o.get_string("acks"), "acks");
    conf_set(conf.get(), "linger.ms", std::to_string(o.get_float("linger_ms")), "linger_ms");
    conf_set(conf.get(), "batch.size", std::to_string(o.get_int("batch_size")), "batch_size");
    conf_set(conf.get(), "compression.codec", o.get_string("compression"), "compression");
    conf_set(conf.get(), "enable.idempotence", o.get_bool("idempotence") ? "true" : "false", "idempotence");
    // The portable delivery_timeout_ms (Publisher) is librdkafka's own bound too.
    conf_set(conf.get(), "message.timeout.ms", std::to_string(o.get_int("delivery_timeout_ms")), "delivery_timeout_ms");
    // rdkafka.* may override any of these: apply the family again last.
    for (const auto& [name, value] : o.family("rdkafka.")) conf_set(conf.get(), name, value, "rdkafka." + name);
    rd_kafka_conf_set_dr_msg_cb(conf.get(), &KafkaSender::on_delivery);
    rd_kafka_conf_set_opaque(conf.get(), this);
    watch_.enable(conf.get(), o, &KafkaSender::on_stats);
    max_bytes_ = max_message_bytes(conf.get());
    partition_ = static_cast<std::int32_t>(o.get_int("partition"));
    rk_ = make_handle(RD_KAFKA_PRODUCER, std::move(conf));
    ensure_topic(rk_.get(), topic_, static_cast<int>(o.get_int("partitions")),
                 static_cast<int>(o.get_int("replication_factor")), max_bytes_,
                 std::chrono::milliseconds(o.get_int("connect_timeout_ms")), broker_where(url, o));
    rkt_.reset(rd_kafka_topic_new(rk_.get(), topic_.c_str(), nullptr));
    poller_ = std::thread([this] {
      while (!stop_.load(std::memory_order_acquire)) rd_kafka_poll(rk_.get(), 100);
    });
  }
  ~KafkaSender() override { close(); }

  void send_batch(const std::vector<OutMessage>& batch, const SendResultFn& on_result) override {
    if (closed_.load()) throw Error(ErrorCode::Closed, "kafka:// sender is closed");
    auto* ctx = new BatchCtx{on_result, {}, batch.size()};
    ctx->refs.resize(batch.size());
    for (std::size_t i = 0; i < batch.size(); ++i) {
      ctx->refs[i] = MsgRef{ctx, i};
      const OutMessage& m = batch[i];
      rd_kafka_headers_t* hdrs = nullptr;
      if (!m.headers.empty()) {
        hdrs = rd_kafka_headers_new(m.headers.size());
        for (const auto& [k, v] : m.headers)
          rd_kafka_header_add(hdrs, k.data(), static_cast<ssize_t>(k.size()), v.data(), static_cast<ssize_t>(v.size()));
      }
      // Locals: librdkafka's V_ macros do not parenthesize their arguments.
      const void* key = m.key ? m.key->data() : nullptr;
      const std::size_t key_len = m.key ? m.key->size() : 0;
      for (;;) {
        // No copy: the Publisher keeps the batch alive until every report is in.
        auto err = rd_kafka_producev(
            rk_.get(), RD_KAFKA_V_RKT(rkt_.get()), RD_KAFKA_V_PARTITION(partition_), RD_KAFKA_V_MSGFLAGS(0),
            RD_KAFKA_V_VALUE(const_cast<char*>(m.payload->data()), m.payload->size()),
            RD_KAFKA_V_KEY(key, key_len),
            RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_TIMESTAMP(m.timestamp_ms), RD_KAFKA_V_OPAQUE(&ctx->refs[i]),
            RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) break;  // librdkafka owns hdrs now
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL && !closed_.load()) {
          // librdkafka's own queue is full: wait for reports to drain it (flow
          // control, not a retry of a failed send).
          rd_kafka_poll(rk_.get(), 10);
          continue;
        }
        if (hdrs) rd_kafka_headers_destroy(hdrs);
        Error e = kafka_error(err, "message of " + std::to_string(m.payload->size()) + " bytes to '" + topic_ + "'");
        ctx->report(i, &e);
        break;
      }
    }
  }

  Capabilities capabilities() const override { return kafka_capabilities(max_bytes_); }
  std::optional<bool> connected() const override { return watch_.state(); }

  void close() override {
    if (closed_.exchange(true)) return;
    // The Publisher flushed before calling us. What is left: never sent
    // (purged: certainly undelivered), or in flight after a grace period
    // (purged: the broker may or may not have it; the report says so).
    rd_kafka_purge(rk_.get(), RD_KAFKA_PURGE_F_QUEUE);
    rd_kafka_flush(rk_.get(), 1000);
    rd_kafka_purge(rk_.get(), RD_KAFKA_PURGE_F_INFLIGHT);
    stop_.store(true, std::memory_order_release);
    if (poller_.joinable()) poller_.join();
    rd_kafka_poll(rk_.get(), 0);  // serve the purge reports on this thread
    rkt_.reset();
    rk_.reset();
  }

 private:
  struct BatchCtx;
  struct MsgRef {
    BatchCtx* ctx;
    std::size_t index;
  };
  struct BatchCtx {
    SendResultFn fn;
    std::vector<MsgRef> refs;
    std::size_t remaining;
    std::atomic<std::size_t> left{0};
    BatchCtx(SendResultFn f, std::vector<MsgRef> r, std::size_t n) : fn(std::move(f)), refs(std::move(r)), remaining(n), left(n) {}
    void report(std::size_t i, const Error* e) {
      fn(i, e);
      if (left.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
    }
  };

  static int on_stats(rd_kafka_t*, char* json, size_t len, void* opaque) {
    static_cast<KafkaSender*>(opaque)->watch_.update(json, len);
    return 0;  // librdkafka frees the JSON
  }

  static void on_delivery(rd_kafka_t*, const rd_kafka_message_t* msg, void*) {
    auto* ref = static_cast<MsgRef*>(msg->_private);
    if (!ref) return;
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      ref->ctx->report(ref->index, nullptr);
    } else {
      std::string what = msg->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT
                             ? "closed while in flight: the broker may or may not have it"
                             : "delivery to '" + std::string(rd_kafka_topic_name(msg->rkt)) + "'";
      Error e = kafka_error(msg->err, what);
      ref->ctx->report(ref->index, &e);
    }
  }

  std::string topic_;
  std::int32_t partition_ = RD_KAFKA_PARTITION_UA;
  std::size_t max_bytes_ = 0;
  BrokerWatch watch_;  // before rk_: lives until the handle (and its callbacks) are gone
  Handle rk_;
  TopicHandle rkt_;
  std::thread poller_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> closed_{false};
};

// ---------------------------------------------------------------- Receiver

// The offsets of one partition delivered and not acked, for the commit point
// (the lowest of them). They arrive in order but after a nack's seek, so a
// deque of flags from the lowest outstanding offset on does the work of a
// std::set without a node allocation per message. Offsets missing from the
// partition (compaction, transaction markers) are never outstanding; a gap of
// N offsets behind an outstanding one costs N bytes while it is held.
class OffsetWindow {
 public:
  void add(std::int64_t offset) {
    if (flags_.empty()) base_ = offset;
    if (offset < base_) {  // not expected (a seek goes to an outstanding offset), but kept exact
      flags_.insert(flags_.begin(), static_cast<std::size_t>(base_ - offset), false);
      base_ = offset;
    }
    const auto i = static_cast<std::size_t>(offset - base_);
    if (i >= flags_.size()) flags_.resize(i + 1, false);
    flags_[i] = true;
  }
  void remove(std::int64_t offset) {
    if (offset < base_ || static_cast<std::size_t>(offset - base_) >= flags_.size()) return;
    flags_[static_cast<std::size_t>(offset - base_)] = false;
    while (!flags_.empty() && !flags_.front()) {
      flags_.pop_front();
      ++base_;
    }
  }
  bool empty() const { return flags_.empty(); }
  std::int64_t lowest() const { return base_; }  // when !empty()

 private:
  std::deque<bool> flags_;  // flags_[i]: offset base_ + i is outstanding; front() is always true
  std::int64_t base_ = 0;
};

class KafkaReceiver : public Receiver, public std::enable_shared_from_this<KafkaReceiver> {
 public:
  KafkaReceiver(const Url& url, const OptionValues& o) : topic_(topic_of(url)), group_(o.get_string("group")) {
    Conf conf = base_conf(url, o);
    if (group_.empty()) {
      // librdkafka wants a group id for a consumer handle; with assign() and no
      // commits it never joins that group.
      std::random_device rd;
      conf_set(conf.get(), "group.id", "omnibus-private-" + std::to_string(rd()) + std::to_string(rd()), "group");
    } else {
      conf_set(conf.get(), "group.id", group_, "group");
    }
    conf_set(conf.get(), "enable.auto.commit", "false", "enable.auto.commit");
    conf_set(conf.get(), "enable.auto.offset.store", "false", "enable.auto.offset.store");
    conf_set(conf.get(), "auto.offset.reset", o.get_string("offset_reset"), "offset_reset");
    conf_set(conf.get(), "enable.partition.eof", "false", "enable.partition.eof");
    for (const auto& [name, value] : o.family("rdkafka.")) conf_set(conf.get(), name, value, "rdkafka." + name);
    if (!group_.empty()) {
      rd_kafka_conf_set_rebalance_cb(conf.get(), &KafkaReceiver::on_rebalance);
    }
    rd_kafka_conf_set_opaque(conf.get(), this);
    watch_.enable(conf.get(), o, &KafkaReceiver::on_stats);
    max_bytes_ = max_message_bytes(conf.get());
    rk_ = make_handle(RD_KAFKA_CONSUMER, std::move(conf));
    rd_kafka_poll_set_consumer(rk_.get());
    queue_.reset(rd_kafka_queue_get_consumer(rk_.get()));
    const auto timeout = std::chrono::milliseconds(o.get_int("connect_timeout_ms"));
    const std::string where = broker_where(url, o);
    int partitions = ensure_topic(rk_.get(), topic_, static_cast<int>(o.get_int("partitions")),
                                  static_cast<int>(o.get_int("replication_factor")), max_bytes_, timeout, where);
    if (group_.empty()) {
      List list(rd_kafka_topic_partition_list_new(partitions));
      const auto deadline = std::chrono::steady_clock::now() + timeout;
      for (int p = 0; p < partitions; ++p) {
        std::int64_t low = 0, high = 0;
        for (;;) {
          auto err = rd_kafka_query_watermark_offsets(rk_.get(), topic_.c_str(), p, &low, &high, 5000);
          if (!err) break;
          // A topic created a moment ago may not have settled its leaders yet.
          bool settling = err == RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION ||
                          err == RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE ||
                          err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || err == RD_KAFKA_RESP_ERR__TIMED_OUT;
          if (!settling || std::chrono::steady_clock::now() >= deadline)
            throw kafka_error(err, "reading the end offset of '" + topic_ + "' partition " + std::to_string(p));
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        rd_kafka_topic_partition_list_add(list.get(), topic_.c_str(), p)->offset = high;
      }
      auto err = rd_kafka_assign(rk_.get(), list.get());
      if (err) throw kafka_error(err, "assigning '" + topic_ + "'");
    } else {
      List list(rd_kafka_topic_partition_list_new(1));
      rd_kafka_topic_partition_list_add(list.get(), topic_.c_str(), RD_KAFKA_PARTITION_UA);
      auto err = rd_kafka_subscribe(rk_.get(), list.get());
      if (err) throw kafka_error(err, "subscribing to '" + topic_ + "'");
      // Return once the group gave us our partitions, so that what is
      // published after open() is this member's or another's, never lost to a
      // rebalance in progress. Messages that arrive meanwhile are kept.
      const auto deadline = std::chrono::steady_clock::now() + timeout;
      while (!assigned_.load() && std::chrono::steady_clock::now() < deadline) fetch(early_, 1000, 100);
      early_count_.store(early_.size());
      if (!assigned_.load())
        throw Error(ErrorCode::Unavailable, "consumer group '" + group_ + "' at " + where +
                                                " assigned no partitions within " + std::to_string(timeout.count()) + " ms");
    }
  }
  ~KafkaReceiver() override { close(); }

  std::vector<MessagePtr> receive_batch(std::size_t max, std::chrono::milliseconds timeout) override {
    if (closed_.load()) throw Error(ErrorCode::Closed, "kafka:// receiver is closed");
    std::vector<MessagePtr> out;
    if (!early_.empty()) {
      std::size_t n = std::min(max, early_.size());
      out.assign(std::make_move_iterator(early_.begin()), std::make_move_iterator(early_.begin() + static_cast<long>(n)));
      early_.erase(early_.begin(), early_.begin() + static_cast<long>(n));
      early_count_.store(early_.size());
      return out;
    }
    fetch(out, max, static_cast<int>(timeout.count()));
    return out;
  }

  // librdkafka's consumer queue is the prefetch buffer (rdkafka.queued.min.
  // messages, 100000 by default; the subscriber's prefetch does not apply): a
  // fetch thread and a buffer of our own on top of it only cost a thread hop
  // and a cross-thread free per message. queued.min.messages is not lowered
  // to prefetch: librdkafka 2.0 backs a partition's fetches off for
  // fetch.error.backoff.ms (500 ms) each time its queue is over that mark,
  // which at prefetch=10000 made a backlog read fifteen times slower.
  bool fetches_ahead() const override { return true; }
  std::size_t buffered() const override {
    std::lock_guard lock(mu_);
    return early_count_.load() + (queue_ ? static_cast<std::size_t>(rd_kafka_queue_length(queue_.get())) : 0);
  }

  void ack(const std::vector<std::uint64_t>& ids) override {
    List commit;
    {
      std::lock_guard lock(mu_);
      if (closed_.load()) throw Error(ErrorCode::Closed, "kafka:// subscriber is closed; unacked messages will be redelivered");
      std::set<std::int32_t>& touched = uncommitted_;
      for (auto id : ids) {
        Delivered* d = delivered_locked(id);
        if (!d) continue;
        const auto p = d->partition;
        const auto offset = d->offset;
        d->live = false;
        auto pt = parts_.find(p);
        if (pt == parts_.end()) continue;  // revoked meanwhile
        pt->second.outstanding.remove(offset);
        touched.insert(p);
      }
      trim_locked();
      commit = commit_due_locked();
    }
    if (commit) rd_kafka_commit(rk_.get(), commit.get(), /*async=*/1);
  }

  void nack(const std::vector<std::uint64_t>& ids) override {
    List seek(rd_kafka_topic_partition_list_new(1));
    {
      std::lock_guard lock(mu_);
      if (closed_.load()) throw Error(ErrorCode::Closed, "kafka:// subscriber is closed; unacked messages will be redelivered");
      std::map<std::int32_t, std::int64_t> lowest;
      for (auto id : ids) {
        Delivered* d = delivered_locked(id);
        if (!d) continue;
        d->live = false;
        auto& low = lowest.try_emplace(d->partition, d->offset).first->second;
        low = std::min(low, d->offset);
      }
      trim_locked();
      for (auto [p, offset] : lowest) {
        rd_kafka_topic_partition_list_add(seek.get(), topic_.c_str(), p)->offset = offset;
        // The redelivered ones get new ids; their old ones must not commit past them.
        auto pt = parts_.find(p);
        if (pt != parts_.end()) pt->second.highest = offset - 1;
      }
    }
    if (seek->cnt == 0) return;
    if (auto* error = rd_kafka_seek_partitions(rk_.get(), seek.get(), 10000)) {
      Error e(ErrorCode::Internal, std::string("seek for nack failed: ") + rd_kafka_error_string(error));
      rd_kafka_error_destroy(error);
      throw e;
    }
  }

  Capabilities capabilities() const override { return kafka_capabilities(max_bytes_); }
  std::optional<bool> connected() const override { return watch_.state(); }

  void close() override {
    if (closed_.exchange(true)) return;
    // Leaves the group (the revoke callback commits what was acked); unacked
    // offsets stay uncommitted, so the group's next owner gets them again.
    rd_kafka_consumer_close(rk_.get());
    std::lock_guard lock(mu_);  // buffered() reads queue_ under mu_
    queue_.reset();
    rk_.reset();
    first_id_ += window_.size();
    window_.clear();
    parts_.clear();
  }

 private:
  struct Partition {
    OffsetWindow outstanding;            // delivered, not acked
    std::int64_t highest = -1;           // highest offset delivered (lowered by a nack's seek)
    std::int64_t seen = -1;              // highest offset ever delivered: above it, a first delivery
    std::int64_t committed = -1;         // next offset committed (exclusive)
    std::map<std::int64_t, std::uint32_t> redelivered;  // by offset, only those delivered again
  };

  // A delivered message not yet acked or nacked, by id. Ids are handed out in
  // order, so they index a deque trimmed from the front as the oldest settle:
  // no allocation per message on the receive path. A message held unsettled
  // keeps the (24-byte) entries after it until it settles.
  struct Delivered {
    std::int32_t partition;
    std::int64_t offset;
    bool live;
  };

  Delivered* delivered_locked(std::uint64_t id) {
    if (id < first_id_ || id - first_id_ >= window_.size()) return nullptr;
    Delivered& d = window_[static_cast<std::size_t>(id - first_id_)];
    return d.live ? &d : nullptr;
  }

  void trim_locked() {
    while (!window_.empty() && !window_.front().live) {
      window_.pop_front();
      ++first_id_;
    }
  }

  // Commit point of a partition: the lowest unacked offset, or one past the
  // highest delivered when all are acked. Called with mu_ held. `again`
  // includes points already sent asynchronously, for a final synchronous
  // commit that must not race with them.
  // Commits are spaced kCommitEvery apart: one OffsetCommit per acked batch
  // (hundreds a second on a backlog) cost the broker more than the reads.
  // What is held back is committed by the next ack or fetch after that, and
  // at the latest by the revoke callback when the subscriber closes; a crash
  // meanwhile redelivers at most kCommitEvery's worth (at-least-once).
  static constexpr auto kCommitEvery = std::chrono::milliseconds(100);
  List commit_due_locked() {
    if (group_.empty() || uncommitted_.empty()) return nullptr;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_commit_ < kCommitEvery) return nullptr;
    last_commit_ = now;
    List list = commit_list_locked(uncommitted_);
    uncommitted_.clear();
    return list;
  }

  List commit_list_locked(const std::set<std::int32_t>& touched, bool again = false) {
    List list;
    for (auto p : touched) {
      auto it = parts_.find(p);
      if (it == parts_.end()) continue;
      auto& pt = it->second;
      std::int64_t point = pt.outstanding.empty() ? pt.highest + 1 : pt.outstanding.lowest();
      if (point <= 0 || (point <= pt.committed && !again)) continue;
      pt.committed = point;
      pt.redelivered.erase(pt.redelivered.begin(), pt.redelivered.lower_bound(point));
      if (!list) list.reset(rd_kafka_topic_partition_list_new(static_cast<int>(touched.size())));
      rd_kafka_topic_partition_list_add(list.get(), topic_.c_str(), p)->offset = point;
    }
    return list;
  }

  void fetch(std::vector<MessagePtr>& out, std::size_t max, int timeout_ms) {
    // Kept between calls (fetch thread only): allocating 80 KB per call made
    // glibc consolidate its heap each time.
    std::vector<rd_kafka_message_t*>& raw = raw_;
    raw.resize(std::max<std::size_t>(1, std::min<std::size_t>(max, 10000)));
    // Wait for the first message only, then take what else is ready:
    // rd_kafka_consume_batch_queue with a timeout waits until the whole batch
    // is full or the timeout passed, which at low rates adds up to the whole
    // timeout to every message's latency.
    raw[0] = rd_kafka_consume_queue(queue_.get(), timeout_ms);
    if (!raw[0]) {
      std::unique_lock lock(mu_);
      commit_pending(lock);
      return;
    }
    ssize_t n = 1;
    if (raw.size() > 1) {
      const ssize_t more = rd_kafka_consume_batch_queue(queue_.get(), 0, raw.data() + 1, raw.size() - 1);
      if (more > 0) n += more;
    }
    auto self = weak_from_this().lock();  // null only while the constructor runs
    out.reserve(out.size() + static_cast<std::size_t>(n));
    std::unique_lock lock(mu_);
    for (ssize_t i = 0; i < n; ++i) {
      std::unique_ptr<rd_kafka_message_t, void (*)(rd_kafka_message_t*)> m(raw[static_cast<std::size_t>(i)],
                                                                          rd_kafka_message_destroy);
      if (m->err) {
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) continue;
        if (rd_kafka_fatal_error(rk_.get(), nullptr, 0)) throw kafka_error(m->err, "consumer of '" + topic_ + "'");
        continue;  // transient (broker down, ...): librdkafka reconnects by itself
      }
      OutMessage data;
      data.payload = make_bytes(std::string(static_cast<const char*>(m->payload), m->len));
      if (m->key) data.key = std::string(static_cast<const char*>(m->key), m->key_len);
      rd_kafka_headers_t* hdrs = nullptr;
      if (rd_kafka_message_headers(m.get(), &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR && hdrs) {
        const char* name;
        const void* value;
        size_t size;
        for (size_t k = 0; rd_kafka_header_get_all(hdrs, k, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++k)
          data.headers.emplace_back(name, value ? std::string(static_cast<const char*>(value), size) : std::string());
      }
      data.timestamp_ms = rd_kafka_message_timestamp(m.get(), nullptr);
      auto& pt = parts_[m->partition];
      std::uint32_t attempt = 1;
      if (m->offset <= pt.seen) attempt += ++pt.redelivered[m->offset];
      pt.seen = std::max(pt.seen, m->offset);
      pt.outstanding.add(m->offset);
      pt.highest = std::max(pt.highest, m->offset);
      const std::uint64_t id = first_id_ + window_.size();
      window_.push_back(Delivered{m->partition, m->offset, true});
      out.push_back(std::make_shared<Message>(std::move(data), topic_, attempt, self, id));
    }
    commit_pending(lock);
  }

  // Sends the commit that commit_due_locked() held back, once it is due.
  void commit_pending(std::unique_lock<std::mutex>& lock) {
    List commit = commit_due_locked();
    lock.unlock();
    if (commit) rd_kafka_commit(rk_.get(), commit.get(), /*async=*/1);
  }

  static int on_stats(rd_kafka_t*, char* json, size_t len, void* opaque) {
    static_cast<KafkaReceiver*>(opaque)->watch_.update(json, len);
    return 0;  // librdkafka frees the JSON
  }

  static void on_rebalance(rd_kafka_t* rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts, void* opaque) {
    auto* self = static_cast<KafkaReceiver*>(opaque);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
      {
        std::lock_guard lock(self->mu_);
        for (int i = 0; i < parts->cnt; ++i) self->parts_.erase(parts->elems[i].partition);
      }
      rd_kafka_assign(rk, parts);
      self->assigned_.store(true);
    } else {
      // Revoked: commit what was acked (synchronously, so that the next owner
      // starts after it), then forget the partitions.
      List commit;
      {
        std::lock_guard lock(self->mu_);
        std::set<std::int32_t> touched;
        for (int i = 0; i < parts->cnt; ++i) touched.insert(parts->elems[i].partition);
        commit = self->commit_list_locked(touched, /*again=*/true);
        for (auto p : touched) {
          self->parts_.erase(p);
          self->uncommitted_.erase(p);
        }
        for (auto& d : self->window_)
          if (touched.count(d.partition)) d.live = false;
        self->trim_locked();
      }
      if (commit) rd_kafka_commit(rk, commit.get(), /*async=*/0);
      rd_kafka_assign(rk, nullptr);
    }
  }

  std::string topic_;
  std::string group_;
  std::size_t max_bytes_ = 0;
  BrokerWatch watch_;  // before rk_: lives until the handle (and its callbacks) are gone
  Handle rk_;
  Queue queue_;
  std::vector<MessagePtr> early_;  // fetched while waiting for the first assignment
  std::atomic<bool> assigned_{false};
  std::atomic<bool> closed_{false};
  std::atomic<std::size_t> early_count_{0};  // early_.size(), for buffered() on any thread
  mutable std::mutex mu_;  // guards parts_, window_, first_id_, uncommitted_, last_commit_, queue_'s reset
  std::map<std::int32_t, Partition> parts_;
  std::deque<Delivered> window_;  // delivered, unsettled (and settled ones behind the oldest unsettled)
  std::set<std::int32_t> uncommitted_;  // partitions acked since the last commit
  std::chrono::steady_clock::time_point last_commit_{};
  std::uint64_t first_id_ = 1;    // id of window_.front()
  std::vector<rd_kafka_message_t*> raw_;  // fetch thread only
};

std::vector<OptionSpec> common_options() {
  return {
      {"client_id", OptionType::String, "omnibus", "client.id reported to the brokers"},
      {"partitions", OptionType::Int, "1", "partitions of the topic when omnibus creates it (it does when the topic is missing)", {}, 1, 100000},
      {"replication_factor", OptionType::Int, "-1", "replication of a topic omnibus creates; -1: the broker's default", {}, -1, 1000},
      {"connect_timeout_ms", OptionType::Int, "10000", "how long open() waits for a broker (and a group assignment) before Unavailable", {}, 1},
      {"security_protocol", OptionType::Choice, "",
       "plaintext, ssl, sasl_plaintext or sasl_ssl; default: sasl_* when the URL has USER:PASSWORD@, ssl/sasl_ssl when "
       "tls_ca or tls_cert is given", {"", "plaintext", "ssl", "sasl_plaintext", "sasl_ssl"}},
      {"sasl_mechanism", OptionType::Choice, "PLAIN", "SASL mechanism of the URL's user and password",
       {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}},
      {"tls_ca", OptionType::String, "", "CA certificate file (PEM) the brokers' certificates are checked against"},
      {"tls_cert", OptionType::String, "", "client certificate file (PEM), for brokers that ask for one"},
      {"tls_key", OptionType::String, "", "the client certificate's private key file (PEM)"},
      {"tls_verify_hostname", OptionType::Bool, "true", "check that a broker's certificate names the host connected to"},
      {"rdkafka.", OptionType::String, "", "any librdkafka property, e.g. rdkafka.socket.keepalive.enable=true (validated by librdkafka)"},
  };
}

class KafkaDriver : public Driver {
 public:
  std::string scheme() const override { return "kafka"; }
  std::string description() const override {
    return std::string("Apache Kafka through librdkafka ") + rd_kafka_version_str() +
           ": delivery reports per message, consumer groups, in-order commits of acked offsets";
  }
  std::vector<OptionSpec> sender_options() const override {
    auto specs = common_options();
    std::vector<OptionSpec> own = {
        {"acks", OptionType::Choice, "all", "broker acknowledgements a send waits for", {"0", "1", "all"}},
        {"linger_ms", OptionType::Float, "5", "librdkafka linger.ms: how long it gathers a batch per partition", {}, 0, 900000},
        {"batch_size", OptionType::Int, "1000000", "librdkafka batch.size: most bytes in one request per partition", {}, 1},
        {"compression", OptionType::Choice, "none", "compression.codec", {"none", "gzip", "snappy", "lz4", "zstd"}},
        {"idempotence", OptionType::Bool, "false", "enable.idempotence: no duplicates from librdkafka's retries, per-partition order kept"},
        {"partition", OptionType::Int, "-1", "send every message to this partition; -1: by key hash (keyless: spread)", {}, -1},
    };
    specs.insert(specs.end(), own.begin(), own.end());
    return specs;
  }
  std::vector<OptionSpec> receiver_options() const override {
    auto specs = common_options();
    std::vector<OptionSpec> own = {
        {"group", OptionType::String, "", "consumer group; members share the partitions. Empty: a private subscription that sees every message published after it opened"},
        {"offset_reset", OptionType::Choice, "earliest", "where a new group starts: earliest (nothing skipped) or latest", {"earliest", "latest"}},
    };
    specs.insert(specs.end(), own.begin(), own.end());
    return specs;
  }
  std::shared_ptr<Sender> open_sender(const Url& url, const OptionValues& options) override {
    return std::make_shared<KafkaSender>(url, options);
  }
  std::shared_ptr<Receiver> open_receiver(const Url& url, const OptionValues& options, const ReceiverSettings&) override {
    return std::make_shared<KafkaReceiver>(url, options);
  }
};

}  // namespace

std::shared_ptr<Driver> make_kafka_driver() { return std::make_shared<KafkaDriver>(); }

}  // namespace omnibus
