#pragma once
// What the pieces of the kafka:// driver share (kafka_driver.cpp says how the
// driver works): librdkafka handle owners, the error mapping, configuration,
// topic setup and the connection state.

#include <librdkafka/rdkafka.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>

#include "omnibus/driver.hpp"
#include "omnibus/error.hpp"

namespace omnibus::detail::kafka {

// Destroys the client, then forgets its FailReasons (common.cpp).
struct HandleDeleter {
  void operator()(rd_kafka_t* rk) const;
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
using Handle = std::unique_ptr<rd_kafka_t, HandleDeleter>;
using Conf = std::unique_ptr<rd_kafka_conf_t, ConfDeleter>;
using List = std::unique_ptr<rd_kafka_topic_partition_list_t, ListDeleter>;
using Queue = std::unique_ptr<rd_kafka_queue_t, QueueDeleter>;
using TopicHandle = std::unique_ptr<rd_kafka_topic_t, TopicDeleter>;

// librdkafka's error codes onto the shared taxonomy; the native code is kept.
Error kafka_error(rd_kafka_resp_err_t err, const std::string& context);

// Kafka's own rule (kafka.common.Topic): 1..249 of [a-zA-Z0-9._-], not "." or "..".
std::string topic_of(const Url& url);

// The brokers, and who logs in (never the password), for messages.
std::string broker_where(const Url& url, const OptionValues& o);

// `shown` is how the user wrote it (an omnibus option or the URL part).
void conf_set(rd_kafka_conf_t* conf, const std::string& name, const std::string& value, const std::string& shown);

// What both sides share: brokers, client id, credentials, rdkafka.* pass-through.
Conf base_conf(const Url& url, const OptionValues& options);

// The conf's message.max.bytes; 0 when it cannot be read.
std::size_t max_message_bytes(rd_kafka_conf_t* conf);

Capabilities kafka_capabilities(std::size_t max_bytes);

// Connection state from librdkafka's statistics (see the opening comment of
// kafka_driver.cpp). update() runs on the thread that serves the handle's
// callbacks; state() on any thread.
class BrokerWatch {
 public:
  // Turns the statistics on (unless the user chose an interval) and routes
  // them to `cb`, whose opaque is the handle's conf opaque.
  void enable(rd_kafka_conf_t* conf, const OptionValues& o,
              int (*cb)(rd_kafka_t*, char*, size_t, void*));
  void update(const char* json, std::size_t len) noexcept;
  std::optional<bool> state() const {
    const int s = state_;
    if (s == kUnknown) return std::nullopt;
    return s == kUp;
  }

 private:
  static constexpr int kUnknown = -1, kDown = 0, kUp = 1;
  std::atomic<int> state_{kUp};  // open() returned: the cluster answered
};

// A client of `type` on `conf`, which it takes; InvalidArgument when
// librdkafka refuses the configuration.
Handle make_handle(rd_kafka_type_t type, Conf conf);

// Returns the topic's partition count, creating the topic when it does not
// exist yet. Throws Unavailable when no broker answers within `timeout`.
// A topic omnibus creates accepts what this client may send (max_bytes, the
// client's message.max.bytes, plus record-batch overhead), so a limit raised
// with rdkafka.message.max.bytes works end to end without broker changes.
// The error names the brokers of `url` (broker_where) and, after a failed certificate check,
// what failed in it (a second handshake of our own: librdkafka does not say).
int ensure_topic(rd_kafka_t* rk, const std::string& topic, int partitions, int replication, std::size_t max_bytes,
                 std::chrono::milliseconds timeout, const Url& url, const OptionValues& o);

// The roles (sender.cpp, receiver.cpp): each connects, and makes sure of its
// topic, before it returns; throws what base_conf, make_handle, ensure_topic
// and kafka_error throw.
std::shared_ptr<Sender> make_kafka_sender(const Url& url, const OptionValues& o);
std::shared_ptr<Receiver> make_kafka_receiver(const Url& url, const OptionValues& o);

}  // namespace omnibus::detail::kafka
