// The AMQP subscriber: basic.consume with manual acks, prefetch, reconnect
// (amqp_driver.cpp says how the driver works).

#include <poll.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_set>

#include "core/connection_loop.hpp"
#include "drivers/amqp/connection.hpp"

namespace omnibus::detail::amqp {
namespace {

using namespace std::chrono_literals;

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
  std::optional<bool> connected() const override { return loop_.up(); }

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
    detail::ConnectionLoop::Steps steps;
    steps.stopping = [this] {
      std::lock_guard lock(mu_);
      return closed_;
    };
    steps.connect = [this] {
      conn_ = connect(settings_);
      setup();
    };
    steps.failed = [this](const Error&) { conn_.reset(); };
    steps.serve = [this] {
      send_ops();
      wait_input(conn_.get(), waker_, 100ms);
      read_some();  // also after a quiet wait: a zero-timeout read sends a due heartbeat
    };
    steps.lost = [this](const Error&) {
      close_conn(conn_, false);
      outstanding_.clear();
      std::lock_guard lock(mu_);
      ops_.clear();  // tags of the lost connection mean nothing to the next one
    };
    steps.wait = [this](std::chrono::milliseconds d) {
      pollfd p{waker_.fd(), POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(d.count())) > 0) waker_.drain();
    };
    loop_.run(steps);
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
        throw_if_closed(frame);
        switch (frame.payload.method.id) {
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
  detail::ConnectionLoop loop_{kBackoffMin, kBackoffMax, true};  // the constructor connected
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

}  // namespace

std::shared_ptr<Receiver> make_amqp_receiver(const Url& url, const OptionValues& o) {
  return std::make_shared<AmqpReceiver>(url, o);
}

}  // namespace omnibus::detail::amqp
