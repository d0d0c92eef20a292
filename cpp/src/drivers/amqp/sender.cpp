// The AMQP publisher: pipelined confirms, returns, resend after a reconnect
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

class AmqpSender : public Sender {
 public:
  AmqpSender(const Url& url, const OptionValues& o)
      : settings_(conn_settings(url, o)),
        topo_(topology(url, o, false)),
        routing_key_(o.get_string("routing_key")),
        fixed_key_(o.was_given("routing_key")),
        confirm_(o.get_bool("confirm")),
        mandatory_(o.get_bool("mandatory") && o.get_bool("confirm")),
        persistent_(o.get_bool("persistent")),
        window_(static_cast<std::size_t>(o.get_int("confirm_window"))),
        max_bytes_(static_cast<std::size_t>(o.get_int("max_message_bytes"))) {
    conn_ = connect(settings_);
    setup();
    thread_ = std::thread([this] { run(); });
  }
  ~AmqpSender() override { close(); }

  void send_batch(const std::vector<OutMessage>& batch, const SendResultFn& on_result) override {
    if (batch.empty()) return;
    auto job = std::make_shared<Job>();
    job->batch = &batch;
    job->size = batch.size();
    job->fn = on_result;
    job->queued = SteadyClock::now();
    {
      std::lock_guard lock(mu_);
      if (closed_) throw Error(ErrorCode::Closed, "amqp:// publisher is closed");
      jobs_.push_back(std::move(job));
    }
    waker_.wake();
  }

  Capabilities capabilities() const override { return amqp_capabilities(confirm_, max_bytes_); }
  std::optional<bool> connected() const override { return loop_.up(); }

  void close() override {
    {
      std::lock_guard lock(mu_);
      if (closed_) return;
      closed_ = true;
    }
    waker_.wake();
    if (thread_.joinable()) thread_.join();
  }

 private:
  struct Job {
    // Valid only until the batch's last result is reported (the Publisher
    // frees it then): loops over a job read `size`, never batch->size().
    const std::vector<OutMessage>* batch = nullptr;
    std::size_t size = 0;
    SendResultFn fn;
    std::size_t next = 0;  // first message not yet written
    SteadyClock::time_point queued;
  };
  struct Unconfirmed {
    std::uint64_t tag;
    std::shared_ptr<Job> job;
    std::size_t index;
    bool done = false;
    bool returned = false;
    std::string return_text;
  };

  void setup() {
    if (confirm_) {
      amqp_confirm_select(conn_.get(), kChannel);
      check_rpc(conn_.get(), "enabling publisher confirms on " + settings_.where);
    }
    topo_.apply(conn_.get(), settings_.where);
    next_tag_ = 1;
  }

  void run() {
    detail::ConnectionLoop::Steps steps;
    steps.stopping = [this] {
      std::lock_guard lock(mu_);
      return closed_;
    };
    steps.before_attempt = [this] { fail_stale_jobs(); };
    steps.connect = [this] {
      conn_ = connect(settings_);
      setup();
    };
    steps.failed = [this](const Error& e) {
      conn_.reset();
      last_error_ = e.what();
    };
    steps.serve = [this] {
      publish_some();
      drain_input();
      const bool more = !resend_.empty() || has_writable_job();
      if (!more || unconfirmed_.size() >= window_) {
        if (wait_input(conn_.get(), waker_, 100ms)) drain_input();
      }
      service_heartbeat();
    };
    steps.lost = [this](const Error& e) { lost(e); };
    steps.wait = [this](std::chrono::milliseconds d) { wait_waker(d); };
    loop_.run(steps);
    shutdown();
  }

  bool has_writable_job() {
    std::lock_guard lock(mu_);
    return !jobs_.empty();
  }

  // Writes messages of queued jobs while the confirm window has room,
  // reading confirms between messages so the window keeps moving.
  void publish_some() {
    // rabbitmq-c writes a message as 3 send() calls and the last one pushes a
    // packet; corked, a burst of messages leaves in few full packets, which
    // is most of the throughput on loopback. Uncorked (flushed) on return.
    if (unconfirmed_.size() >= window_ || (resend_.empty() && !has_writable_job())) return;
    Cork cork(amqp_get_sockfd(conn_.get()));
    std::size_t written = 0;
    // First what a lost connection left unconfirmed, oldest first.
    while (!resend_.empty() && unconfirmed_.size() < window_) {
      const Unconfirmed u = resend_.front();
      resend_.pop_front();
      publish_one(u.job, u.index, (*u.job->batch)[u.index]);
      ++written;
    }
    while (unconfirmed_.size() < window_ && written < 4096) {
      std::shared_ptr<Job> job;
      {
        std::lock_guard lock(mu_);
        if (jobs_.empty()) return;
        job = jobs_.front();
      }
      while (job->next < job->size && unconfirmed_.size() < window_) {
        const std::size_t i = job->next++;
        publish_one(job, i, (*job->batch)[i]);
        ++written;
        if ((written & 255) == 0 && amqp_data_in_buffer(conn_.get())) drain_input();
      }
      if (job->next == job->size) {
        std::lock_guard lock(mu_);
        jobs_.pop_front();
      }
    }
  }

  void publish_one(const std::shared_ptr<Job>& job, std::size_t i, const OutMessage& m) {
    if (m.size_bytes() > max_bytes_) {
      Error e(ErrorCode::ResourceExhausted,
              "message of " + std::to_string(m.size_bytes()) + " bytes is larger than max_message_bytes=" +
                  std::to_string(max_bytes_) + " (RabbitMQ's max_message_size; raise both together)");
      job->fn(i, &e);
      return;
    }
    const std::string& rk = detail::amqp::key_is_routing_key(m, fixed_key_) ? *m.key : routing_key_;
    amqp_basic_properties_t props{};
    props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
    props.delivery_mode = persistent_ ? 2 : 1;
    props.timestamp = detail::amqp::timestamp_seconds(m.timestamp_ms ? m.timestamp_ms : now_ms());
    entries_.clear();
    detail::amqp::encode_headers(m, fixed_key_, [&](std::string_view name, const std::string& value) {
      amqp_table_entry_t e{};
      e.key = bytes_of(name);
      e.value.kind = AMQP_FIELD_KIND_UTF8;
      e.value.value.bytes = bytes_of(value);
      entries_.push_back(e);
    });
    if (!entries_.empty()) {
      props._flags |= AMQP_BASIC_HEADERS_FLAG;
      props.headers = amqp_table_t{static_cast<int>(entries_.size()), entries_.data()};
    }
    int status = amqp_basic_publish(conn_.get(), kChannel, bytes_of(topo_.exchange), bytes_of(rk), mandatory_, 0,
                                    &props, bytes_of(*m.payload));
    if (status != AMQP_STATUS_OK) {
      // The message may be partly written: it fails with the connection.
      unconfirmed_.push_back(Unconfirmed{0, job, i});
      throw status_error(status, "publishing to exchange " + printable(topo_.exchange) + " on " + settings_.where);
    }
    if (confirm_) {
      unconfirmed_.push_back(Unconfirmed{next_tag_++, job, i});
    } else {
      job->fn(i, nullptr);
    }
  }

  // Reads every frame already available, without blocking.
  void drain_input() {
    for (;;) {
      amqp_frame_t frame;
      timeval tv = zero_tv();
      int status = amqp_simple_wait_frame_noblock(conn_.get(), &frame, &tv);
      if (status == AMQP_STATUS_TIMEOUT) return;
      if (status != AMQP_STATUS_OK) throw status_error(status, "connection to " + settings_.where);
      if (frame.frame_type != AMQP_FRAME_METHOD) continue;
      handle_method(frame);
    }
  }

  void service_heartbeat() {
    // rabbitmq-c sends a due heartbeat (and notices a silent broker) inside
    // its frame wait; a zero-timeout wait is enough.
    drain_input();
  }

  void handle_method(const amqp_frame_t& frame) {
    throw_if_closed(frame);
    switch (frame.payload.method.id) {
      case AMQP_BASIC_ACK_METHOD: {
        auto* m = static_cast<amqp_basic_ack_t*>(frame.payload.method.decoded);
        settle(m->delivery_tag, m->multiple, false);
        break;
      }
      case AMQP_BASIC_NACK_METHOD: {
        auto* m = static_cast<amqp_basic_nack_t*>(frame.payload.method.decoded);
        settle(m->delivery_tag, m->multiple, true);
        break;
      }
      case AMQP_BASIC_RETURN_METHOD: {
        auto* m = static_cast<amqp_basic_return_t*>(frame.payload.method.decoded);
        const std::string text = std::to_string(m->reply_code) + " " + str(m->reply_text);
        const std::string rk = str(m->routing_key);
        amqp_message_t msg;
        amqp_rpc_reply_t r = amqp_read_message(conn_.get(), frame.channel, &msg, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) throw reply_error(r, "reading a returned message");
        std::string_view body(static_cast<const char*>(msg.body.bytes), msg.body.len);
        for (auto& u : unconfirmed_) {
          if (u.done || u.returned) continue;
          const OutMessage& om = (*u.job->batch)[u.index];
          const bool key_as_rk = detail::amqp::key_is_routing_key(om, fixed_key_);
          if ((key_as_rk ? *om.key : routing_key_) == rk && *om.payload == body) {
            u.returned = true;
            u.return_text = text;
            break;
          }
        }
        amqp_destroy_message(&msg);
        break;
      }
      default:
        break;  // connection.blocked/unblocked and others: nothing to do
    }
  }

  void settle(std::uint64_t tag, bool multiple, bool nacked) {
    if (unconfirmed_.empty()) return;
    const std::uint64_t base = unconfirmed_.front().tag;
    if (tag < base) return;
    const std::size_t last = static_cast<std::size_t>(tag - base);
    const std::size_t first = multiple ? 0 : last;
    for (std::size_t k = first; k <= last && k < unconfirmed_.size(); ++k) {
      auto& u = unconfirmed_[k];
      if (u.done) continue;
      u.done = true;
      report(u, nacked);
    }
    while (!unconfirmed_.empty() && unconfirmed_.front().done) unconfirmed_.pop_front();
  }

  void report(Unconfirmed& u, bool nacked) {
    const OutMessage& m = (*u.job->batch)[u.index];
    if (u.returned) {
      const bool key_as_rk = detail::amqp::key_is_routing_key(m, fixed_key_);
      Error e(ErrorCode::NotFound, "unroutable: no queue is bound to exchange " + printable(topo_.exchange) +
                                       " for routing key " + printable(key_as_rk ? *m.key : routing_key_) +
                                       " (basic.return " + u.return_text + "; mandatory=true)",
              AMQP_NO_ROUTE);
      u.job->fn(u.index, &e);
    } else if (nacked) {
      Error e(ErrorCode::ResourceExhausted,
              "the broker refused the message (basic.nack): a queue is full with x-overflow=reject-publish, or it "
              "failed to store it",
              0, true);
      u.job->fn(u.index, &e);
    } else {
      u.job->fn(u.index, nullptr);
    }
  }

  // The connection is gone: what was written and not confirmed is sent again
  // after the reconnect, ahead of everything queued and in its order (the
  // broker may have it already: at-least-once, a duplicate is possible);
  // queued messages wait for the reconnect too. Either fails with Unavailable
  // once the broker has been away for connect_timeout_ms.
  void lost(const Error& why) {
    last_error_ = why.what();
    std::deque<Unconfirmed> again;
    for (auto& u : unconfirmed_)
      if (!u.done) again.push_back(u);
    again.insert(again.end(), resend_.begin(), resend_.end());
    resend_.swap(again);
    unconfirmed_.clear();
    if (!resend_.empty() && lost_at_ == SteadyClock::time_point::max()) lost_at_ = SteadyClock::now();
    close_conn(conn_, false);
  }

  // While disconnected: messages queued longer than connect_timeout fail, and
  // so do the ones waiting to be sent again once the connection has been
  // down that long.
  void fail_stale_jobs() {
    const auto now = SteadyClock::now();
    if (!resend_.empty() && now - lost_at_ > settings_.connect_timeout) {
      Error e(ErrorCode::Unavailable,
              "connection lost before the broker confirmed the message (it may or may not have it), and no new "
              "connection to " + settings_.where + " within " + std::to_string(settings_.connect_timeout.count()) +
                  " ms (connect_timeout_ms); last error: " + last_error_,
              0, true);
      std::deque<Unconfirmed> failing;
      failing.swap(resend_);
      for (auto& u : failing) u.job->fn(u.index, &e);
    }
    if (resend_.empty()) lost_at_ = SteadyClock::time_point::max();
    std::vector<std::shared_ptr<Job>> stale;
    {
      std::lock_guard lock(mu_);
      while (!jobs_.empty() && now - jobs_.front()->queued > settings_.connect_timeout) {
        stale.push_back(jobs_.front());
        jobs_.pop_front();
      }
    }
    for (auto& job : stale) {
      Error e(ErrorCode::Unavailable,
              "no connection to the AMQP broker at " + settings_.where + " for " +
                  std::to_string(settings_.connect_timeout.count()) + " ms (connect_timeout_ms); last error: " +
                  last_error_);
      for (std::size_t i = job->next; i < job->size; ++i) job->fn(i, &e);
    }
  }

  void wait_waker(std::chrono::milliseconds d) {
    pollfd p{waker_.fd(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(d.count())) > 0) waker_.drain();
  }

  void shutdown() {
    // The Publisher flushed before close(): wait a little for confirms still
    // in flight, then fail what is left with Closed.
    const auto deadline = SteadyClock::now() + 2s;
    try {
      while (conn_ && !unconfirmed_.empty() && SteadyClock::now() < deadline) {
        if (wait_input(conn_.get(), waker_, 100ms)) drain_input();
      }
    } catch (const Error& e) {
      lost(e);
    }
    Error e(ErrorCode::Closed, "amqp:// publisher closed before the broker confirmed the message");
    for (auto& u : unconfirmed_)
      if (!u.done) u.job->fn(u.index, &e);
    unconfirmed_.clear();
    for (auto& u : resend_) u.job->fn(u.index, &e);
    resend_.clear();
    std::deque<std::shared_ptr<Job>> jobs;
    {
      std::lock_guard lock(mu_);
      jobs.swap(jobs_);
    }
    for (auto& job : jobs)
      for (std::size_t i = job->next; i < job->size; ++i) job->fn(i, &e);
    close_conn(conn_, true);
  }

  const ConnSettings settings_;
  const Topology topo_;
  const std::string routing_key_;
  const bool fixed_key_;
  const bool confirm_;
  const bool mandatory_;
  const bool persistent_;
  const std::size_t window_;
  const std::size_t max_bytes_;

  // Owned by the I/O thread after the constructor.
  ConnHandle conn_;
  detail::ConnectionLoop loop_{kBackoffMin, kBackoffMax, true};  // the constructor connected
  std::uint64_t next_tag_ = 1;
  std::deque<Unconfirmed> unconfirmed_;
  std::deque<Unconfirmed> resend_;  // lost with a connection, to be sent first on the next
  SteadyClock::time_point lost_at_ = SteadyClock::time_point::max();  // when resend_ began to wait
  std::vector<amqp_table_entry_t> entries_;
  std::string last_error_;

  Waker waker_;
  std::mutex mu_;  // guards jobs_, closed_
  std::deque<std::shared_ptr<Job>> jobs_;
  bool closed_ = false;
  std::thread thread_;
};

}  // namespace

std::shared_ptr<Sender> make_amqp_sender(const Url& url, const OptionValues& o) {
  return std::make_shared<AmqpSender>(url, o);
}

}  // namespace omnibus::detail::amqp
