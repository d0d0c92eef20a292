// The kafka:// publisher: each message goes to rd_kafka_producev, and its
// delivery report is its result. kafka_driver.cpp says how the driver works.

#include <atomic>
#include <thread>

#include "drivers/kafka/common.hpp"

namespace omnibus::detail::kafka {
namespace {

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
                 std::chrono::milliseconds(o.get_int("connect_timeout_ms")), url, o);
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

}  // namespace

std::shared_ptr<Sender> make_kafka_sender(const Url& url, const OptionValues& o) {
  return std::make_shared<KafkaSender>(url, o);
}

}  // namespace omnibus::detail::kafka
