// pulsar:// -- Apache Pulsar through libpulsar's C API, loaded at run time
// from the pulsar-client wheel (see c_api.hpp for why, and how).
//
// URL: pulsar://host:port[,host:port...]/TOPIC, where TOPIC is a full name
// (persistent://tenant/namespace/topic, non-persistent://...), tenant/namespace/topic
// (persistent), or a bare name in persistent://public/default. Port 6650 by default;
// pulsar+ssl:// is the same over TLS (port 6651 by default; tls_ca, tls_cert/tls_key, tls_verify).
//
// Publishing: one producer per Sender. Each message goes to
// pulsar_producer_send_async without a copy of its payload (the Publisher
// keeps the batch alive until every result is in); the send callback is its
// result. libpulsar batches on the wire (batching, batching_max_messages,
// batching_max_publish_delay_ms), compresses, and resends what a lost
// connection left unconfirmed, until send_timeout_ms; omnibus does not retry
// on top. The key is the partition key, so it picks the partition of a
// partitioned topic and the consumer of a key_shared subscription; headers
// are properties and the timestamp is the event time (envelope.hpp).
//
// Subscribing: without group= a subscription of its own (exclusive, named
// omnibus-<random>, from the latest message: it sees what is published after
// open()), removed again at close so that the broker keeps no backlog for it.
// group=G is the durable subscription G, shared by default (its consumers
// compete; subscription_type=key_shared|failover|exclusive for the others),
// starting at offset_reset (default earliest: nothing is skipped). ack() is
// an individual ack (batch-index acks on, so a nack of one message of a batch
// redelivers only that one; batch_index_ack=false halves the cost per message
// and redelivers the whole batch), nack() a negative ack redelivered after
// nack_redelivery_delay_ms. delivery_attempt is the broker's redelivery count
// plus one (the broker counts nacks and ack timeouts for shared and
// key_shared subscriptions; for the others this receiver counts the nacks it
// made itself). A consumer that closes with unacked messages returns them to
// the subscription uncounted, so capabilities()["delivery_count"] is false.

#include "drivers/pulsar/pulsar_driver.hpp"

#include "core/tls.hpp"
#ifdef OMNIBUS_HAVE_TLS_PROBE
#include "core/tls_probe.hpp"
#endif

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <random>
#include <unordered_map>

#include "drivers/pulsar/c_api.hpp"
#include "drivers/pulsar/envelope.hpp"
#include "omnibus/driver.hpp"
#include "omnibus/error.hpp"

namespace omnibus {
namespace {

namespace pc = detail::pulsar;
using pc::pulsar_result;

const pc::Api& P() { return pc::api(); }

// Pulsar's default broker limit (maxMessageSize); the client learns the
// broker's own at connect and fails larger messages with MessageTooBig.
constexpr std::size_t kMaxMessageBytes = 5 * 1024 * 1024;

Error pulsar_error(pulsar_result r, const std::string& context) {
  ErrorCode code;
  switch (r) {
    case pc::pulsar_result_Timeout:
      code = ErrorCode::Timeout;
      break;
    case pc::pulsar_result_LookupError:
    case pc::pulsar_result_ConnectError:
    case pc::pulsar_result_ReadError:
    case pc::pulsar_result_AuthenticationError:
    case pc::pulsar_result_ErrorGettingAuthenticationData:
    case pc::pulsar_result_BrokerMetadataError:
    case pc::pulsar_result_BrokerPersistenceError:
    case pc::pulsar_result_NotConnected:
    case pc::pulsar_result_ServiceUnitNotReady:
    case pc::pulsar_result_TooManyLookupRequestException:
    case pc::pulsar_result_Disconnected:
    case pc::pulsar_result_ChecksumError:
      code = ErrorCode::Unavailable;
      break;
    case pc::pulsar_result_MessageTooBig:
    case pc::pulsar_result_ProducerQueueIsFull:
    case pc::pulsar_result_MemoryBufferIsFull:
    case pc::pulsar_result_ProducerBlockedQuotaExceededError:
    case pc::pulsar_result_ProducerBlockedQuotaExceededException:
      code = ErrorCode::ResourceExhausted;
      break;
    case pc::pulsar_result_TopicNotFound:
    case pc::pulsar_result_SubscriptionNotFound:
    case pc::pulsar_result_ConsumerNotFound:
      code = ErrorCode::NotFound;
      break;
    case pc::pulsar_result_InvalidConfiguration:
    case pc::pulsar_result_InvalidTopicName:
    case pc::pulsar_result_InvalidUrl:
    case pc::pulsar_result_AuthorizationError:
    case pc::pulsar_result_IncompatibleSchema:
    case pc::pulsar_result_ConsumerBusy:
    case pc::pulsar_result_ProducerBusy:
    case pc::pulsar_result_TopicTerminated:
    case pc::pulsar_result_NotAllowedError:
      code = ErrorCode::InvalidArgument;
      break;
    case pc::pulsar_result_AlreadyClosed:
    case pc::pulsar_result_Interrupted:
      code = ErrorCode::Closed;
      break;
    case pc::pulsar_result_OperationNotSupported:
      code = ErrorCode::Unsupported;
      break;
    default:
      code = ErrorCode::Internal;
  }
  // A refused token stays refused: Unavailable (as other drivers' refused logins), not worth a retry.
  const bool refused = r == pc::pulsar_result_AuthenticationError;
  const std::string message = context + ": " + P().result_str(r) + (refused ? ": the broker refused the token" : "") +
                              " (libpulsar result " + std::to_string(static_cast<int>(r)) + ")";
  return refused ? Error(code, message, static_cast<int>(r), false) : Error(code, message, static_cast<int>(r));
}

// The token of Pulsar's token authentication (a JWT): the URL's password (from the URL,
// password_file= or password_env=), or a lone userinfo (pulsar://TOKEN@host/...). Empty: none.
std::string token_of(const Url& url) {
  if (!url.has_userinfo) return {};
  if (!url.password.empty()) return url.password;
  if (url.user.empty())
    throw Error(ErrorCode::InvalidArgument, "pulsar:// URL '" + url.text +
                                                "' has an empty userinfo; give pulsar://TOKEN@host/topic or "
                                                "password_file=/password_env= with the token");
  return url.user;
}

bool is_tls(const Url& url) { return url.scheme == "pulsar+ssl"; }
detail::TlsFiles tls_files(const Url& url, const OptionValues& o);

// Why opening failed, where libpulsar does not say. A timeout: a broker with token authentication
// leaves a client whose token is missing or refused waiting without an answer, as a stuck broker
// would. A ConnectError over TLS: OpenSSL's reason from a handshake of our own (e.g. the CA).
std::string open_failure_hint(pulsar_result r, const Url& url, const OptionValues& o) {
#ifdef OMNIBUS_HAVE_TLS_PROBE
  if (r == pc::pulsar_result_ConnectError && is_tls(url)) {
    const auto& h = url.hosts.front();
    std::string why = detail::tls_handshake_failure(h.host, h.port ? h.port : 6651, h.host, tls_files(url, o),
                                                    std::chrono::milliseconds(2000));
    return why.empty() ? "" : " (TLS handshake failed: " + why + ")";
  }
#endif
  (void)o;
  if (r != pc::pulsar_result_Timeout) return "";
  return url.has_userinfo ? " (no answer: a broker refusing the token does this, as does a stuck one)"
                          : " (no answer: a broker that requires a token does this to a client without one, as "
                            "does a stuck broker; give pulsar://TOKEN@host/... or password_file=)";
}

std::string service_url(const Url& url) {
  std::string out = is_tls(url) ? "pulsar+ssl://" : "pulsar://";
  bool first = true;
  for (const auto& h : url.hosts) {
    if (h.host.empty()) throw Error(ErrorCode::InvalidArgument, "pulsar:// URL '" + url.text + "' names no broker host");
    out += (first ? "" : ",") + h.host + ":" + std::to_string(h.port ? h.port : (is_tls(url) ? 6651 : 6650));
    first = false;
  }
  return out;
}

std::string topic_of(const Url& url) {
  const std::string& p = url.path;
  auto bad = [&](const std::string& why) {
    throw Error(ErrorCode::InvalidArgument,
                "pulsar:// topic '" + p + "' in '" + url.text + "' " + why +
                    "; use pulsar://host:6650/TOPIC (in persistent://public/default), "
                    "pulsar://host:6650/tenant/namespace/TOPIC or pulsar://host:6650/persistent://tenant/namespace/TOPIC");
  };
  if (p.empty()) bad("is missing");
  std::string rest = p;
  std::string domain = "persistent://";
  for (const char* d : {"persistent://", "non-persistent://"}) {
    if (p.rfind(d, 0) == 0) {
      domain = d;
      rest = p.substr(std::char_traits<char>::length(d));
    }
  }
  const auto slashes = std::count(rest.begin(), rest.end(), '/');
  if (rest.find("://") != std::string::npos) bad("has an unknown domain (persistent:// or non-persistent://)");
  if (slashes == 0 && rest.size() == p.size()) return domain + "public/default/" + rest;
  if (slashes != 2) bad("is not tenant/namespace/topic");
  std::size_t a = rest.find('/'), b = rest.rfind('/');
  if (a == 0 || b == a + 1 || b + 1 == rest.size()) bad("has an empty tenant, namespace or topic");
  if (rest.find('\0') != std::string::npos) bad("contains a NUL byte");
  return domain + rest;
}

bool no_log_level(pc::pulsar_logger_level_t, void*) { return false; }
void no_log(pc::pulsar_logger_level_t, const char*, int, const char*, void*) {}

// One libpulsar client (its own I/O thread) per Sender or Receiver.
struct ClientDeleter {
  void operator()(pc::pulsar_client_t* c) const {
    P().client_close(c);  // a second close (after Receiver::close) returns AlreadyClosed and does nothing
    P().client_free(c);
  }
};
using ClientHandle = std::unique_ptr<pc::pulsar_client_t, ClientDeleter>;

// Reads the TLS options; throws InvalidArgument when they are given to plaintext pulsar://.
detail::TlsFiles tls_files(const Url& url, const OptionValues& o) {
  detail::TlsFiles t = detail::read_tls_options(o, "pulsar+ssl", url.text);
  if (!is_tls(url) && t.any_given())
    throw Error(ErrorCode::InvalidArgument, "pulsar:// URL '" + url.text + "' has TLS options, but pulsar:// is "
                                            "plaintext: use pulsar+ssl://host[:6651]/topic for TLS");
  return t;
}

ClientHandle make_client(const Url& url, const OptionValues& o) {
  const std::string service = service_url(url);
  const std::string token = token_of(url);
  const detail::TlsFiles tls = tls_files(url, o);
  auto* conf = P().client_configuration_create();
  if (is_tls(url)) {
    // Without tls_ca libpulsar uses OpenSSL's default paths: the system's CAs.
    if (!tls.ca.empty()) P().client_configuration_set_tls_trust_certs_file_path(conf, tls.ca.c_str());
    if (!tls.cert.empty()) {
      P().client_configuration_set_tls_certificate_file_path(conf, tls.cert.c_str());
      P().client_configuration_set_tls_private_key_file_path(conf, tls.key.c_str());
    }
    P().client_configuration_set_tls_allow_insecure_connection(conf, tls.verify ? 0 : 1);
    P().client_configuration_set_validate_hostname(conf, tls.verify ? 1 : 0);
  }
  if (!token.empty()) {
    auto* auth = P().authentication_token_create(token.c_str());
    P().client_configuration_set_auth(conf, auth);
    P().authentication_free(auth);  // the configuration holds its own reference
  }
  const auto timeout_s = std::max<std::int64_t>(1, (o.get_int("connect_timeout_ms") + 999) / 1000);
  P().client_configuration_set_operation_timeout_seconds(conf, static_cast<int>(timeout_s));
  P().client_configuration_set_io_threads(conf, 1);
  P().client_configuration_set_message_listener_threads(conf, 1);
  P().client_configuration_set_stats_interval_in_seconds(conf, 0);
  // libpulsar logs to stdout by default; failures reach the caller as results instead.
  P().client_configuration_set_logger_t(conf, pc::pulsar_logger_t{nullptr, &no_log_level, &no_log});
  ClientHandle client(P().client_create(service.c_str(), conf));
  P().client_configuration_free(conf);
  if (!client) throw Error(ErrorCode::InvalidArgument, "libpulsar could not make a client for " + service);
  return client;
}

Capabilities pulsar_capabilities(bool ack_timeout, bool dead_letter) {
  Capabilities c;
  c.delivery_guarantee = "at-least-once";
  c.ordered_per_key = true;       // one producer's messages of a key go to one partition, in order
  c.key_affinity = false;         // only with subscription_type=key_shared; a shared group spreads a key
  c.keys = true;
  c.nack = true;
  c.ack_deadline = ack_timeout;   // ack_timeout_ms (libpulsar takes 10 s at least)
  c.requeue_on_close = true;      // a closed consumer's unacked messages go to the subscription again
  // The broker counts nacks and ack timeouts (shared subscriptions; this receiver counts its own nacks
  // otherwise), but not a consumer closing with unacked messages: that redelivery comes as attempt 1.
  c.delivery_count = false;
  c.competing_consumers = true;
  c.headers = true;
  c.dead_letter = dead_letter;
  c.durable = true;
  c.max_message_bytes = kMaxMessageBytes;
  return c;
}

class PulsarSender : public Sender {
 public:
  PulsarSender(const Url& url, const OptionValues& o) : topic_(std::make_shared<const std::string>(topic_of(url))) {
    client_ = make_client(url, o);
    auto* conf = P().producer_configuration_create();
    P().producer_configuration_set_send_timeout(conf, static_cast<int>(o.get_int("send_timeout_ms")));
    P().producer_configuration_set_max_pending_messages(conf, static_cast<int>(o.get_int("max_pending_messages")));
    // The Publisher's back-pressure relies on send_batch blocking, not failing, when libpulsar's queue is full.
    P().producer_configuration_set_block_if_queue_full(conf, 1);
    P().producer_configuration_set_batching_enabled(conf, o.get_bool("batching") ? 1 : 0);
    P().producer_configuration_set_batching_max_messages(conf, static_cast<unsigned>(o.get_int("batching_max_messages")));
    P().producer_configuration_set_batching_max_publish_delay_ms(
        conf, static_cast<unsigned long>(o.get_int("batching_max_publish_delay_ms")));
    const std::string& comp = o.get_string("compression");
    P().producer_configuration_set_compression_type(
        conf, comp == "lz4"      ? pc::pulsar_CompressionLZ4
              : comp == "zlib"   ? pc::pulsar_CompressionZLib
              : comp == "zstd"   ? pc::pulsar_CompressionZSTD
              : comp == "snappy" ? pc::pulsar_CompressionSNAPPY
                                 : pc::pulsar_CompressionNone);
    pc::pulsar_producer_t* producer = nullptr;
    auto r = P().client_create_producer(client_.get(), topic_->c_str(), conf, &producer);
    P().producer_configuration_free(conf);
    if (r != pc::pulsar_result_Ok)
      throw pulsar_error(r, "creating a producer on '" + *topic_ + "' at " + service_url(url) + open_failure_hint(r, url, o));
    producer_ = producer;
  }
  ~PulsarSender() override { close(); }

  void send_batch(const std::vector<OutMessage>& batch, const SendResultFn& on_result) override {
    auto fn = std::make_shared<SendResultFn>(on_result);
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const OutMessage& m = batch[i];
      auto enc = pc::encode(m.key, m.headers);
      pc::pulsar_message_t* msg = P().message_create();
      // No copy: the Publisher keeps the payload alive until the result is reported.
      P().message_set_allocated_content(msg, const_cast<char*>(m.payload->data()), m.payload->size());
      if (enc.partition_key) P().message_set_partition_key(msg, enc.partition_key->c_str());
      for (const auto& [name, value] : enc.properties) P().message_set_property(msg, name.c_str(), value.c_str());
      if (m.timestamp_ms > 0) P().message_set_event_timestamp(msg, static_cast<std::uint64_t>(m.timestamp_ms));
      P().producer_send_async(producer_, msg, &on_sent, new Pending{fn, i, topic_});
      P().message_free(msg);  // libpulsar keeps its own reference to the built message
    }
  }

  Capabilities capabilities() const override { return pulsar_capabilities(false, false); }
  std::optional<bool> connected() const override {
    std::lock_guard lock(mu_);
    if (!producer_) return false;
    return P().producer_is_connected(producer_) != 0;
  }

  void close() override {
    std::lock_guard lock(mu_);
    if (!producer_) return;
    // Fails what is still pending with AlreadyClosed (mapped to Closed) and waits for its callbacks.
    P().producer_close(producer_);
    P().producer_free(producer_);
    producer_ = nullptr;
    client_.reset();
  }

 private:
  struct Pending {
    std::shared_ptr<SendResultFn> fn;
    std::size_t index;
    std::shared_ptr<const std::string> topic;  // callbacks may outlive the Sender
  };

  static void on_sent(pulsar_result r, pc::pulsar_message_id_t* id, void* ctx) {
    std::unique_ptr<Pending> p(static_cast<Pending*>(ctx));
    if (id) P().message_id_free(id);
    if (r == pc::pulsar_result_Ok) {
      (*p->fn)(p->index, nullptr);
    } else {
      Error e = pulsar_error(r, "sending to '" + *p->topic + "'");
      (*p->fn)(p->index, &e);
    }
  }

  std::shared_ptr<const std::string> topic_;
  ClientHandle client_;
  mutable std::mutex mu_;  // guards producer_ against close()
  pc::pulsar_producer_t* producer_ = nullptr;
};

std::string random_suffix() {
  std::random_device rd;
  std::mt19937_64 gen((static_cast<std::uint64_t>(rd()) << 32) ^ rd());
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(gen()));
  return buf;
}

class PulsarReceiver : public Receiver, public std::enable_shared_from_this<PulsarReceiver> {
 public:
  PulsarReceiver(const Url& url, const OptionValues& o) : topic_(topic_of(url)), group_(o.get_string("group")) {
    std::string type = o.get_string("subscription_type");
    if (type.empty()) type = group_.empty() ? "exclusive" : "shared";
    private_ = group_.empty();
    subscription_ = private_ ? "omnibus-" + random_suffix() : group_;
    broker_counts_ = type == "shared" || type == "key_shared";
    std::string reset = o.get_string("offset_reset");
    if (reset.empty()) reset = private_ ? "latest" : "earliest";
    const auto ack_timeout = o.get_int("ack_timeout_ms");
    if (ack_timeout != 0 && ack_timeout < 10000)
      throw Error(ErrorCode::InvalidArgument, "ack_timeout_ms=" + std::to_string(ack_timeout) +
                                                  ": libpulsar takes 0 (off) or at least 10000 ms");
    const std::string dlq_topic = o.get_string("dead_letter_topic");
    const auto max_redeliver = o.get_int("max_redeliver");
    dead_letter_ = !dlq_topic.empty() || max_redeliver > 0;
    if (dead_letter_ && !broker_counts_)
      throw Error(ErrorCode::InvalidArgument,
                  "dead_letter_topic/max_redeliver need a shared or key_shared subscription (the broker counts "
                  "redeliveries only there); give group= (shared by default) or subscription_type=shared");
    if (dead_letter_ && max_redeliver <= 0)
      throw Error(ErrorCode::InvalidArgument, "dead_letter_topic=" + dlq_topic +
                                                  " needs max_redeliver=N (deliveries before a message goes there)");
    client_ = make_client(url, o);
    auto* conf = P().consumer_configuration_create();
    P().consumer_configuration_set_consumer_type(
        conf, type == "shared"       ? pc::pulsar_ConsumerShared
              : type == "key_shared" ? pc::pulsar_ConsumerKeyShared
              : type == "failover"   ? pc::pulsar_ConsumerFailover
                                     : pc::pulsar_ConsumerExclusive);
    P().consumer_configuration_set_receiver_queue_size(conf, static_cast<int>(o.get_int("receiver_queue_size")));
    P().configure_set_negative_ack_redelivery_delay_ms(conf, static_cast<long>(o.get_int("nack_redelivery_delay_ms")));
    P().consumer_set_unacked_messages_timeout_ms(conf, static_cast<std::uint64_t>(ack_timeout));
    P().consumer_set_subscription_initial_position(
        conf, reset == "earliest" ? pc::initial_position_earliest : pc::initial_position_latest);
    P().consumer_configuration_set_batch_index_ack_enabled(conf, o.get_bool("batch_index_ack") ? 1 : 0);
    ack_timeout_ = ack_timeout > 0;
    if (dead_letter_) {
      pc::pulsar_consumer_config_dead_letter_policy_t policy{dlq_topic.empty() ? nullptr : dlq_topic.c_str(),
                                                             static_cast<int>(max_redeliver), nullptr};
      P().consumer_configuration_set_dlq_policy(conf, &policy);
    }
    pc::pulsar_consumer_t* consumer = nullptr;
    auto r = P().client_subscribe(client_.get(), topic_.c_str(), subscription_.c_str(), conf, &consumer);
    P().consumer_configuration_free(conf);
    if (r != pc::pulsar_result_Ok)
      throw pulsar_error(r, "subscribing '" + subscription_ + "' to '" + topic_ + "' at " + service_url(url) +
                                open_failure_hint(r, url, o));
    consumer_ = consumer;
  }

  ~PulsarReceiver() override {
    close();
    std::lock_guard lock(mu_);
    for (auto& u : window_)
      if (u.id) P().message_id_free(u.id);
    window_.clear();
    if (consumer_) P().consumer_free(consumer_);
    consumer_ = nullptr;
    client_.reset();
  }

  std::vector<MessagePtr> receive_batch(std::size_t max, std::chrono::milliseconds timeout) override {
    if (closed_.load()) throw Error(ErrorCode::Closed, "pulsar:// receiver is closed");
    std::vector<MessagePtr> out;
    // At most one receiver queue's worth per call: a vector of 5,000 pointers made glibc
    // consolidate its heap on every call (a large request with small chunks free).
    max = std::min<std::size_t>(max, kMaxBatch);
    out.reserve(max);
    pc::pulsar_message_t* m = nullptr;
    auto r = P().consumer_receive_with_timeout(consumer_, &m, static_cast<int>(std::max<long long>(0, timeout.count())));
    if (r == pc::pulsar_result_Timeout) return out;
    if (r != pc::pulsar_result_Ok) {
      if (closed_.load() || r == pc::pulsar_result_AlreadyClosed) throw Error(ErrorCode::Closed, "pulsar:// receiver is closed");
      throw pulsar_error(r, "receiving from '" + topic_ + "'");
    }
    auto self = shared_from_this();
    out.push_back(convert(m, self));
    while (out.size() < max && P().consumer_receive_with_timeout(consumer_, &m, 0) == pc::pulsar_result_Ok)
      out.push_back(convert(m, self));
    return out;
  }

  void ack(const std::vector<std::uint64_t>& ids) override {
    // libpulsar is called outside mu_, which the fetch thread needs for every message it hands out.
    for (const auto& u : take(ids)) {
      P().consumer_acknowledge_async_id(consumer_, u.id, &on_acked, nullptr);
      P().message_id_free(u.id);
    }
  }

  void nack(const std::vector<std::uint64_t>& ids) override {
    auto taken = take(ids);
    if (!broker_counts_) {
      std::lock_guard lock(mu_);
      for (const auto& u : taken) {
        if (char* s = P().message_id_str(u.id)) {
          nacked_[s] = u.attempt;
          std::free(s);
        }
      }
    }
    for (const auto& u : taken) {
      P().consumer_negative_acknowledge_id(consumer_, u.id);
      P().message_id_free(u.id);
    }
  }

  Capabilities capabilities() const override { return pulsar_capabilities(ack_timeout_, dead_letter_); }
  std::optional<bool> connected() const override {
    if (closed_.load()) return false;
    return P().consumer_is_connected(consumer_) != 0;
  }

  void close() override {
    if (closed_.exchange(true)) return;
    // A private subscription goes with its consumer, so the broker keeps no
    // backlog for it; a group's stays, and its unacked messages go to the
    // group's other consumers. The handles are freed by the destructor, when
    // no Message refers to this receiver any more.
    if (private_) P().consumer_unsubscribe(consumer_);
    P().consumer_close(consumer_);
    // Its connections and threads go now, not when the last Message lets go of this receiver.
    P().client_close(client_.get());
  }

 private:
  // A delivered message not yet acked or nacked, by id. Ids are handed out in
  // order, so they index a deque trimmed from the front as the oldest settle.
  struct Unsettled {
    pc::pulsar_message_id_t* id;  // null once settled
    std::uint32_t attempt;
  };
  static constexpr std::size_t kMaxBatch = 1000;

  // Removes `ids` from the window; returns those that were unsettled (the caller frees their ids).
  std::vector<Unsettled> take(const std::vector<std::uint64_t>& ids) {
    std::vector<Unsettled> out;
    out.reserve(ids.size());
    std::lock_guard lock(mu_);
    if (closed_.load()) throw Error(ErrorCode::Closed, "pulsar:// subscriber is closed; unacked messages will be redelivered");
    for (auto id : ids) {
      if (id < first_id_ || id - first_id_ >= window_.size()) continue;
      Unsettled& u = window_[static_cast<std::size_t>(id - first_id_)];
      if (!u.id) continue;
      out.push_back(u);
      u.id = nullptr;
    }
    while (!window_.empty() && !window_.front().id) {
      window_.pop_front();
      ++first_id_;
    }
    return out;
  }

  static void on_acked(pulsar_result, void*) {}  // a lost ack is redelivered: at-least-once

  MessagePtr convert(pc::pulsar_message_t* m, const std::shared_ptr<PulsarReceiver>& self) {
    std::unique_ptr<pc::pulsar_message_t, void (*)(pc::pulsar_message_t*)> hold(m, P().message_free);
    OutMessage data;
    data.payload = make_bytes(std::string(static_cast<const char*>(P().message_get_data(m)), P().message_get_length(m)));
    std::optional<std::string> partition_key;
    if (P().message_has_partition_key(m)) partition_key = P().message_get_partitionKey(m);
    std::vector<std::pair<std::string, std::string>> props;
    if (auto* map = P().message_get_properties(m)) {
      const int n = P().string_map_size(map);
      props.reserve(static_cast<std::size_t>(n));
      for (int i = 0; i < n; ++i) props.emplace_back(P().string_map_get_key(map, i), P().string_map_get_value(map, i));
      P().string_map_free(map);
    }
    auto dec = pc::decode(partition_key, std::move(props));
    data.key = std::move(dec.key);
    data.headers = std::move(dec.headers);
    const std::uint64_t event = P().message_get_event_timestamp(m);
    data.timestamp_ms = static_cast<std::int64_t>(event ? event : P().message_get_publish_timestamp(m));
    pc::pulsar_message_id_t* id = P().message_get_message_id(m);
    std::uint32_t attempt = static_cast<std::uint32_t>(std::max(0, P().message_get_redelivery_count(m))) + 1;
    std::lock_guard lock(mu_);
    if (!broker_counts_ && !nacked_.empty()) {
      if (char* s = P().message_id_str(id)) {
        auto it = nacked_.find(s);
        if (it != nacked_.end()) {
          attempt = it->second + 1;
          nacked_.erase(it);
        }
        std::free(s);
      }
    }
    const std::uint64_t ack_id = first_id_ + window_.size();
    window_.push_back(Unsettled{id, attempt});
    return std::make_shared<Message>(std::move(data), topic_, attempt, self, ack_id);
  }

  std::string topic_;
  std::string group_;
  std::string subscription_;
  bool private_ = true;
  bool broker_counts_ = false;
  bool ack_timeout_ = false;
  bool dead_letter_ = false;
  ClientHandle client_;
  pc::pulsar_consumer_t* consumer_ = nullptr;
  std::atomic<bool> closed_{false};
  std::mutex mu_;  // guards window_, first_id_, nacked_
  std::deque<Unsettled> window_;  // delivered, unsettled (and settled ones behind the oldest unsettled)
  std::uint64_t first_id_ = 1;    // id of window_.front()
  std::unordered_map<std::string, std::uint32_t> nacked_;  // message id text -> attempts so far (non-shared only)
};

std::vector<OptionSpec> common_options() {
  std::vector<OptionSpec> specs = {
      {"connect_timeout_ms", OptionType::Int, "10000",
       "libpulsar's operation timeout (whole seconds, rounded up): how long open() waits for the broker", {}, 1},
  };
  for (auto& spec : detail::tls_option_specs("pulsar+ssl")) specs.push_back(std::move(spec));
  return specs;
}

class PulsarDriver : public Driver {
 public:
  explicit PulsarDriver(bool tls) : tls_(tls) {}
  std::string scheme() const override { return tls_ ? "pulsar+ssl" : "pulsar"; }
  std::string description() const override {
    return "Apache Pulsar through libpulsar's C API (" + pc::loaded_path() + ")" + (tls_ ? " over TLS" : "") +
           ": send callbacks per message, shared/key_shared/failover/exclusive subscriptions, individual and negative acks";
  }
  std::vector<OptionSpec> sender_options() const override {
    auto specs = common_options();
    std::vector<OptionSpec> own = {
        {"batching", OptionType::Bool, "true", "libpulsar batches messages into one entry (batchingEnabled)"},
        {"batching_max_messages", OptionType::Int, "1000", "most messages in one batch", {}, 1, 1000000},
        {"batching_max_publish_delay_ms", OptionType::Int, "1", "how long libpulsar gathers a batch", {}, 0, 3600000},
        {"compression", OptionType::Choice, "none", "compression of each entry", {"none", "lz4", "zlib", "zstd", "snappy"}},
        {"send_timeout_ms", OptionType::Int, "30000",
         "a message the broker has not confirmed by then fails with Timeout (libpulsar resends until then; 0: never)", {}, 0},
        {"max_pending_messages", OptionType::Int, "10000", "messages in flight before send_batch blocks", {}, 1},
    };
    specs.insert(specs.end(), own.begin(), own.end());
    return specs;
  }
  std::vector<OptionSpec> receiver_options() const override {
    auto specs = common_options();
    std::vector<OptionSpec> own = {
        {"group", OptionType::String, "",
         "subscription name, shared by its consumers. Empty: an exclusive subscription of its own that sees what is "
         "published after open() and is removed at close"},
        {"subscription_type", OptionType::Choice, "",
         "empty: exclusive without group, shared with one", {"", "shared", "key_shared", "failover", "exclusive"}},
        {"offset_reset", OptionType::Choice, "",
         "where a new subscription starts; empty: latest without group, earliest with one", {"", "earliest", "latest"}},
        {"nack_redelivery_delay_ms", OptionType::Int, "1000", "how long after nack() a message comes again", {}, 0},
        {"ack_timeout_ms", OptionType::Int, "0",
         "an unacked message comes again after this long; 0: never (libpulsar takes 10000 at least)", {}, 0},
        {"receiver_queue_size", OptionType::Int, "1000", "messages libpulsar prefetches", {}, 0, 1000000},
        {"batch_index_ack", OptionType::Bool, "true",
         "ack and nack single messages of a batch entry; false (pulsar-client's default) receives about twice "
         "as fast, but a nack then redelivers the acked messages of its batch too"},
        {"dead_letter_topic", OptionType::String, "",
         "where a message goes after max_redeliver deliveries; empty with max_redeliver: <topic>-<subscription>-DLQ"},
        {"max_redeliver", OptionType::Int, "0",
         "deliveries before a message goes to dead_letter_topic (shared/key_shared subscriptions); 0: no dead-lettering", {}, 0},
    };
    specs.insert(specs.end(), own.begin(), own.end());
    return specs;
  }
  std::shared_ptr<Sender> open_sender(const Url& url, const OptionValues& options) override {
    return std::make_shared<PulsarSender>(url, options);
  }
  std::shared_ptr<Receiver> open_receiver(const Url& url, const OptionValues& options, const ReceiverSettings&) override {
    return std::make_shared<PulsarReceiver>(url, options);
  }

 private:
  bool tls_;
};

}  // namespace

std::shared_ptr<Driver> make_pulsar_driver() { return std::make_shared<PulsarDriver>(false); }

std::string register_pulsar_driver(const std::string& path) {
  std::string why = detail::pulsar::load(path);
  auto& registry = DriverRegistry::instance();
  if (!why.empty()) {
    registry.add_unavailable("pulsar", why);
    registry.add_unavailable("pulsar+ssl", why);
    return why;
  }
  const auto schemes = registry.schemes();
  if (std::find(schemes.begin(), schemes.end(), "pulsar") == schemes.end()) registry.add(make_pulsar_driver());
  if (std::find(schemes.begin(), schemes.end(), "pulsar+ssl") == schemes.end())
    registry.add(std::make_shared<PulsarDriver>(true));
  return {};
}

}  // namespace omnibus
