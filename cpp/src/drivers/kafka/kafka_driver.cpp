// kafka:// -- Apache Kafka through librdkafka's C API.
//
// README.md, section "### kafka://", is the user's description: the URL, the
// options, logins and TLS, groups, acks and nack. This says why the driver
// works as it does. The pieces: common.hpp (handle owners, errors,
// configuration, topic setup, the connection state), sender.cpp and
// receiver.cpp (the two roles); this file holds the options and opens the
// roles.
//
// Publishing: each message goes to rd_kafka_producev without a copy (the
// Publisher keeps the batch alive until every delivery report is in); the
// delivery report of each message is its result. A poll thread serves the
// reports. librdkafka batches on the wire (linger_ms, batch_size); its own
// retries stay on (they are protocol-level and, with idempotence, exactly-once
// per partition); omnibus does not retry on top.
//
// Subscribing without ?group=: the partitions are assigned directly at their
// current end offsets (no consumer group, no rebalance), so nothing published
// after open() is missed. With ?group=NAME, open() returns once the group
// gave this member its partitions.
//
// Connection state: librdkafka keeps connections to several brokers and has
// no overall "connected" event, so connected() reads its statistics (one JSON
// document every statistics.interval.ms, 1000 unless rdkafka.statistics.
// interval.ms says otherwise; 0 turns it off and connected() is None): true
// while at least one broker of the cluster (not a bootstrap address) is UP.

#include "drivers/kafka/kafka_driver.hpp"

#include "drivers/kafka/common.hpp"

namespace omnibus::detail::kafka {
namespace {

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
    return make_kafka_sender(url, options);
  }
  std::shared_ptr<Receiver> open_receiver(const Url& url, const OptionValues& options, const ReceiverSettings&) override {
    return make_kafka_receiver(url, options);
  }
};

}  // namespace
}  // namespace omnibus::detail::kafka

namespace omnibus {

std::shared_ptr<Driver> make_kafka_driver() { return std::make_shared<detail::kafka::KafkaDriver>(); }

}  // namespace omnibus
