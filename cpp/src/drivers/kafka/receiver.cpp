// The kafka:// subscriber: a private assignment at the end offsets, or a
// consumer group member, committing acked offsets in order per partition.
// kafka_driver.cpp says how the driver works.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "drivers/kafka/common.hpp"

namespace omnibus::detail::kafka {
namespace {

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
    // The prefetch is bounded by bytes (queued.max.messages.kbytes, 64 MiB by default), not by
    // librdkafka's default of 100,000 messages: librdkafka 2.0 takes a partition whose queue
    // reached either bound off its fetch list and looks again only when its broker thread wakes,
    // up to a second later, so a reader faster than the network idled after every 100,000
    // messages (a 500k backlog of 100 B messages read at 0.23M msg/s, 0.97M with this).
    // rdkafka.queued.min.messages (below) still sets it.
    conf_set(conf.get(), "queued.min.messages", "1000000", "queued.min.messages");
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
                                  static_cast<int>(o.get_int("replication_factor")), max_bytes_, timeout, url, o);
    if (group_.empty()) {
      List list(rd_kafka_topic_partition_list_new(partitions));
      const auto deadline = std::chrono::steady_clock::now() + timeout;
      for (int p = 0; p < partitions; ++p) {
        std::int64_t low = 0, high = 0;
        for (;;) {
          auto err = rd_kafka_query_watermark_offsets(rk_.get(), topic_.c_str(), p, &low, &high, 5000);
          if (!err) break;
          // A topic created a moment ago may not have settled its leaders yet, and librdkafka's
          // cached metadata may not list all its partitions yet (_UNKNOWN_PARTITION: seen with
          // twenty subscribers opening at once over SASL_SSL).
          bool settling = err == RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION ||
                          err == RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE ||
                          err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || err == RD_KAFKA_RESP_ERR__TIMED_OUT ||
                          err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION;
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
  // to prefetch: each time the queue reaches that mark librdkafka 2.0 stops
  // fetching until its broker thread next wakes (see the constructor), which
  // at prefetch=10000 made a backlog read fifteen times slower.
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

}  // namespace

std::shared_ptr<Receiver> make_kafka_receiver(const Url& url, const OptionValues& o) {
  return std::make_shared<KafkaReceiver>(url, o);
}

}  // namespace omnibus::detail::kafka
