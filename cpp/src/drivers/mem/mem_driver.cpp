// mem:// -- an in-process broker.
//
// Model: a topic has groups; every group receives every message (fan-out), the
// consumers of one group compete. A subscriber without ?group= gets a private,
// anonymous group that disappears when it closes; a named group outlives its
// consumers and keeps a backlog while none is attached (for the life of the
// process).
//
// Ordering: inside a group a message goes to the consumer chosen by its key's
// hash (keyless: round robin), so the first delivery of one key keeps publish
// order. When consumers join or leave, the not-yet-delivered messages are
// redistributed in publish order. A redelivered message (nack, ack deadline,
// consumer closed) comes back ahead of undelivered ones, and may therefore come
// after later messages of its key that were already delivered.
//
// Request-reply: a request is dispatched like a published message (to every
// group, one consumer per group), carrying a reply address of its own,
// "_INBOX.mem.<n>", that names an inbox in this process. The first reply
// fills the inbox and wakes the requester; later replies (another group's, a
// redelivered request's) and replies to an abandoned inbox are dropped, as
// NATS drops them. A request to a topic without any subscription fails at
// once with Timeout (NATS' no-responders); a named group without consumers
// counts as a responder (its backlog may be served in time).
//
// Locking: one mutex per topic guards its groups and their consumers' queues;
// the broker's mutex guards the inbox table; each inbox has its own mutex. A
// sender's inbox list lock is held while taking an inbox's mutex (close); no
// other lock is taken while holding one.

#include "drivers/mem/mem_driver.hpp"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <unordered_map>

#include "omnibus/driver.hpp"
#include "omnibus/error.hpp"

namespace omnibus {
namespace {

using SteadyClock = std::chrono::steady_clock;

struct Entry {
  OutMessage data;
  std::uint64_t seq;       // topic publish order, for redistribution
  std::uint32_t attempt;   // deliveries so far
  std::string reply_to;    // a request's inbox, else empty
};

// Where one request waits for its reply.
struct Inbox {
  std::mutex mu;
  std::condition_variable cv;
  MessagePtr reply;     // the first reply
  bool closed = false;  // the sender closed
  std::function<void()> ready;  // PendingReply::on_ready, run once settled
};

class MemReceiver;

struct Group {
  std::string name;
  bool durable = false;
  std::vector<MemReceiver*> consumers;
  std::deque<Entry> backlog;  // named group without consumers
  std::size_t round_robin = 0;
};

struct Topic {
  explicit Topic(std::string n) : name(std::move(n)) {}
  std::string name;
  std::mutex mu;
  std::map<std::string, std::shared_ptr<Group>> groups;
  std::uint64_t next_seq = 0;
  std::uint64_t next_anonymous = 0;
};

class Broker {
 public:
  static Broker& instance() {
    static Broker* broker = new Broker();  // never destroyed: receivers may outlive main()
    return *broker;
  }
  std::shared_ptr<Topic> topic(const std::string& name) {
    std::lock_guard lock(mu_);
    auto& t = topics_[name];
    if (!t) t = std::make_shared<Topic>(name);
    return t;
  }

  // A new inbox and its address; registered until close_inbox(address).
  std::pair<std::string, std::shared_ptr<Inbox>> open_inbox() {
    auto inbox = std::make_shared<Inbox>();
    std::lock_guard lock(mu_);
    std::string address = "_INBOX.mem." + std::to_string(next_inbox_++);
    inboxes_.emplace(address, inbox);
    return {std::move(address), std::move(inbox)};
  }
  void close_inbox(const std::string& address) {
    std::lock_guard lock(mu_);
    inboxes_.erase(address);
  }
  // The first reply to an open inbox wins; any other is dropped.
  void deliver_reply(const std::string& address, OutMessage reply) {
    std::shared_ptr<Inbox> inbox;
    {
      std::lock_guard lock(mu_);
      auto it = inboxes_.find(address);
      if (it == inboxes_.end()) return;  // the requester gave up (or it is not an inbox)
      inbox = it->second;
    }
    std::lock_guard lock(inbox->mu);
    if (inbox->reply || inbox->closed) return;
    inbox->reply = std::make_shared<Message>(std::move(reply), address, 1, nullptr, 0);
    inbox->cv.notify_all();
    if (auto ready = std::move(inbox->ready)) ready();
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Topic>> topics_;
  std::unordered_map<std::string, std::shared_ptr<Inbox>> inboxes_;
  std::uint64_t next_inbox_ = 1;
};

// The requester's side of one inbox; closing it drops a later reply.
class MemPendingReply final : public PendingReply {
 public:
  MemPendingReply(std::string address, std::shared_ptr<Inbox> inbox, std::string url)
      : address_(std::move(address)), inbox_(std::move(inbox)), url_(std::move(url)) {}
  ~MemPendingReply() override { Broker::instance().close_inbox(address_); }

  MessagePtr wait(std::chrono::milliseconds timeout) override {
    std::unique_lock lock(inbox_->mu);
    inbox_->cv.wait_for(lock, timeout, [&] { return inbox_->reply || inbox_->closed; });
    if (inbox_->reply) return inbox_->reply;
    if (inbox_->closed)
      throw Error(ErrorCode::Closed, "publisher for " + url_ + " was closed while its request waited for a reply");
    return nullptr;
  }

  void on_ready(std::function<void()> fn) override {
    std::lock_guard lock(inbox_->mu);
    if (inbox_->reply || inbox_->closed)
      fn();
    else
      inbox_->ready = std::move(fn);
  }

 private:
  std::string address_;
  std::shared_ptr<Inbox> inbox_;
  std::string url_;
};

std::string topic_name(const Url& url) {
  if (url.hosts.size() != 1 || url.hosts[0].port != 0)
    throw Error(ErrorCode::InvalidArgument,
                "mem:// takes a topic name, not hosts or ports: mem://TOPIC[/more/levels], got '" + url.text + "'");
  std::string name = url.hosts[0].host;
  if (!url.path.empty()) name = name.empty() ? url.path : name + "/" + url.path;
  if (name.empty())
    throw Error(ErrorCode::InvalidArgument, "mem:// URL '" + url.text + "' names no topic: use mem://TOPIC");
  return name;
}

Capabilities mem_capabilities(std::size_t max_bytes) {
  Capabilities c;
  c.delivery_guarantee = "at-least-once";
  c.ordered_per_key = true;
  c.key_affinity = true;
  c.keys = true;
  c.nack = true;
  c.requeue_on_close = true;
  c.delivery_count = true;
  c.ack_deadline = true;
  c.competing_consumers = true;
  c.headers = true;
  c.dead_letter = false;
  c.durable = false;
  c.request_reply = true;
  c.max_message_bytes = max_bytes;
  return c;
}

class MemReceiver : public Receiver, public std::enable_shared_from_this<MemReceiver> {
 public:
  MemReceiver(std::shared_ptr<Topic> topic, std::string group_name, std::chrono::milliseconds ack_deadline,
              std::size_t max_bytes)
      : topic_(std::move(topic)), ack_deadline_(ack_deadline), max_bytes_(max_bytes) {
    std::lock_guard lock(topic_->mu);
    bool durable = !group_name.empty();
    if (!durable) group_name = "\x01anonymous-" + std::to_string(topic_->next_anonymous++);
    auto& g = topic_->groups[group_name];
    if (!g) {
      g = std::make_shared<Group>();
      g->name = group_name;
      g->durable = durable;
    }
    group_ = g;
    group_->consumers.push_back(this);
    rebalance_locked();
  }
  ~MemReceiver() override { close(); }

  std::vector<MessagePtr> receive_batch(std::size_t max, std::chrono::milliseconds timeout) override {
    std::vector<MessagePtr> out;
    std::unique_lock lock(topic_->mu);
    if (closed_) throw Error(ErrorCode::Closed, "mem:// receiver is closed");
    expire_locked();
    if (ready_.empty()) {
      cv_.wait_for(lock, timeout, [&] { return !ready_.empty() || closed_; });
      if (closed_) throw Error(ErrorCode::Closed, "mem:// receiver is closed");
    }
    const std::size_t n = std::min(max, ready_.size());
    out.reserve(n);
    const auto deadline = SteadyClock::now() + ack_deadline_;
    auto self = shared_from_this();
    for (std::size_t i = 0; i < n; ++i) {
      Entry& e = ready_.front();
      std::uint64_t id = base_id_ + unacked_.size();
      // The message owns the data; a redelivery rebuilds the entry from it.
      auto msg = std::make_shared<Message>(std::move(e.data), topic_->name, e.attempt + 1, self, id,
                                           std::move(e.reply_to));
      unacked_.push_back(Slot{msg, e.seq, deadline, true});
      ready_.pop_front();
      out.push_back(std::move(msg));
    }
    return out;
  }

  void ack(const std::vector<std::uint64_t>& ids) override {
    std::lock_guard lock(topic_->mu);
    if (closed_) throw Error(ErrorCode::Closed, "mem:// subscriber is closed; its unacked messages were returned for redelivery");
    for (auto id : ids) {
      if (auto* s = slot_locked(id)) s->live = false;
    }
    trim_locked();
  }

  void nack(const std::vector<std::uint64_t>& ids) override {
    std::vector<MemReceiver*> wake;
    {
      std::lock_guard lock(topic_->mu);
      if (closed_) throw Error(ErrorCode::Closed, "mem:// subscriber is closed; its unacked messages were returned for redelivery");
      // Redeliver in reverse so that pushing each to the front keeps their order.
      for (auto it = ids.rbegin(); it != ids.rend(); ++it) {
        if (auto* s = slot_locked(*it)) {
          s->live = false;
          dispatch_locked(*group_, s->entry(), /*front=*/true, wake);
        }
      }
      trim_locked();
      notify_locked(wake);
    }
  }

  Capabilities capabilities() const override { return mem_capabilities(max_bytes_); }

  void reply(const Message& msg, const OutMessage& reply) override {
    {
      std::lock_guard lock(topic_->mu);
      if (closed_) throw Error(ErrorCode::Closed, "mem:// subscriber is closed; it cannot reply any more");
    }
    Broker::instance().deliver_reply(msg.reply_to(), reply);
  }

  void close() override {
    {
      std::lock_guard lock(topic_->mu);
      if (closed_) return;
      closed_ = true;
      auto& cs = group_->consumers;
      cs.erase(std::remove(cs.begin(), cs.end(), this), cs.end());
      // Delivered-but-unacked (redelivered first by rebalance) and the undelivered
      // go back to the group; an anonymous group dies with its only consumer.
      for (auto& s : unacked_)
        if (s.live) group_->backlog.push_back(s.entry());
      unacked_.clear();
      for (auto& e : ready_) group_->backlog.push_back(std::move(e));
      ready_.clear();
      if (cs.empty() && !group_->durable) topic_->groups.erase(group_->name);
      else rebalance_locked();
      cv_.notify_all();
    }
  }

  // Receivers are notified under the topic lock: a receiver may be destroyed
  // as soon as the lock is released.
  static void notify_locked(const std::vector<MemReceiver*>& wake) {
    for (auto* r : wake) r->cv_.notify_one();
  }

  // Called with topic_->mu held.
  static void dispatch_locked(Group& g, Entry&& e, bool front, std::vector<MemReceiver*>& wake) {
    if (g.consumers.empty()) {
      if (g.durable) g.backlog.push_back(std::move(e));
      return;
    }
    std::size_t i = e.data.key ? std::hash<std::string>{}(*e.data.key) % g.consumers.size()
                               : g.round_robin++ % g.consumers.size();
    MemReceiver* r = g.consumers[i];
    if (front) r->ready_.push_front(std::move(e));
    else r->ready_.push_back(std::move(e));
    if (std::find(wake.begin(), wake.end(), r) == wake.end()) wake.push_back(r);
  }

 private:
  struct Slot {
    MessagePtr msg;
    std::uint64_t seq;
    SteadyClock::time_point deadline;
    bool live;

    Entry entry() const { return Entry{msg->data(), seq, msg->delivery_attempt(), msg->reply_to()}; }
  };

  Slot* slot_locked(std::uint64_t id) {
    if (id < base_id_ || id - base_id_ >= unacked_.size()) return nullptr;
    Slot& s = unacked_[id - base_id_];
    return s.live ? &s : nullptr;
  }

  void trim_locked() {
    while (!unacked_.empty() && !unacked_.front().live) {
      unacked_.pop_front();
      base_id_++;
    }
  }

  // Ack deadlines are the same for every message of a receiver, so its oldest
  // slot expires first: checking each consumer's front is enough. Any consumer
  // of the group runs the check for all, so that a consumer that stopped
  // fetching still gets its expired messages redelivered elsewhere.
  void expire_locked() {
    auto now = SteadyClock::now();
    std::vector<MemReceiver*> wake;
    std::vector<Entry> expired;
    for (auto* c : group_->consumers) {
      auto& q = c->unacked_;
      while (!q.empty() && (!q.front().live || q.front().deadline <= now)) {
        if (q.front().live) expired.push_back(q.front().entry());
        q.pop_front();
        c->base_id_++;
      }
    }
    // Redeliver in reverse so that pushing each to the front keeps their order, as nack does.
    for (auto it = expired.rbegin(); it != expired.rend(); ++it) dispatch_locked(*group_, std::move(*it), true, wake);
    notify_locked(wake);
  }

  // Redistributes the undelivered messages of the group over its current
  // consumers in publish order, so that per-key order survives a membership change.
  void rebalance_locked() {
    Group& g = *group_;
    std::vector<Entry> all;
    for (auto& e : g.backlog) all.push_back(std::move(e));
    g.backlog.clear();
    for (auto* c : g.consumers) {
      for (auto& e : c->ready_) all.push_back(std::move(e));
      c->ready_.clear();
    }
    // Redelivered entries (attempt > 0) first, then by publish order.
    std::stable_sort(all.begin(), all.end(), [](const Entry& a, const Entry& b) {
      if ((a.attempt > 0) != (b.attempt > 0)) return a.attempt > 0;
      return a.seq < b.seq;
    });
    std::vector<MemReceiver*> wake;
    for (auto& e : all) dispatch_locked(g, std::move(e), false, wake);
    notify_locked(wake);
  }

  std::shared_ptr<Topic> topic_;
  std::shared_ptr<Group> group_;
  std::chrono::milliseconds ack_deadline_;
  std::size_t max_bytes_;
  std::deque<Entry> ready_;
  std::deque<Slot> unacked_;
  std::uint64_t base_id_ = 1;
  bool closed_ = false;
  std::condition_variable cv_;  // waits use topic_->mu
};

class MemSender : public Sender {
 public:
  MemSender(std::shared_ptr<Topic> topic, std::size_t max_bytes) : topic_(std::move(topic)), max_bytes_(max_bytes) {}

  void send_batch(const std::vector<OutMessage>& batch, const SendResultFn& on_result) override {
    std::vector<MemReceiver*> wake;
    std::vector<std::size_t> too_big;
    {
      std::lock_guard lock(topic_->mu);
      if (closed_) throw Error(ErrorCode::Closed, "mem:// sender is closed");
      for (std::size_t i = 0; i < batch.size(); ++i) {
        const auto& m = batch[i];
        if (max_bytes_ && m.payload->size() > max_bytes_) {
          too_big.push_back(i);
          continue;
        }
        const auto seq = topic_->next_seq++;
        for (auto& [_, g] : topic_->groups)
          MemReceiver::dispatch_locked(*g, Entry{m, seq, 0}, false, wake);
      }
      MemReceiver::notify_locked(wake);
    }
    std::size_t next_bad = 0;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (next_bad < too_big.size() && too_big[next_bad] == i) {
        Error err(ErrorCode::ResourceExhausted,
                  "message of " + std::to_string(batch[i].payload->size()) + " bytes exceeds max_message_bytes=" +
                      std::to_string(max_bytes_) + " of mem://" + topic_->name);
        on_result(i, &err);
        ++next_bad;
      } else {
        on_result(i, nullptr);
      }
    }
  }

  std::unique_ptr<PendingReply> request(const OutMessage& m, bool /*more*/) override {
    const std::string url = "mem://" + topic_->name;
    if (max_bytes_ && m.payload->size() > max_bytes_)
      throw Error(ErrorCode::ResourceExhausted, "request of " + std::to_string(m.payload->size()) +
                                                    " bytes exceeds max_message_bytes=" + std::to_string(max_bytes_) +
                                                    " of " + url);
    auto [address, inbox] = Broker::instance().open_inbox();
    // Owns the inbox from here: an exception below closes it.
    auto pending = std::make_unique<MemPendingReply>(address, inbox, url);
    {
      std::lock_guard lock(inboxes_mu_);
      inboxes_.erase(std::remove_if(inboxes_.begin(), inboxes_.end(), [](const auto& w) { return w.expired(); }),
                     inboxes_.end());
      inboxes_.push_back(inbox);
    }
    std::vector<MemReceiver*> wake;
    std::lock_guard lock(topic_->mu);
    if (closed_) throw Error(ErrorCode::Closed, "mem:// sender is closed");
    if (topic_->groups.empty())
      throw Error(ErrorCode::Timeout, "no responders: nothing subscribes to " + url +
                                          ", so no reply can come (the request failed at once instead of waiting)");
    const auto seq = topic_->next_seq++;
    for (auto& [_, g] : topic_->groups) MemReceiver::dispatch_locked(*g, Entry{m, seq, 0, address}, false, wake);
    MemReceiver::notify_locked(wake);
    return pending;
  }

  Capabilities capabilities() const override { return mem_capabilities(max_bytes_); }
  void close() override {
    {
      std::lock_guard lock(topic_->mu);
      closed_ = true;  // send_batch is synchronous: nothing is ever left in flight
    }
    // Requests still waiting for a reply fail with Closed.
    std::lock_guard lock(inboxes_mu_);
    for (auto& w : inboxes_) {
      if (auto inbox = w.lock()) {
        std::lock_guard inbox_lock(inbox->mu);
        inbox->closed = true;
        inbox->cv.notify_all();
        if (auto ready = std::move(inbox->ready)) ready();
      }
    }
    inboxes_.clear();
  }

 private:
  std::shared_ptr<Topic> topic_;
  std::size_t max_bytes_;
  bool closed_ = false;
  std::mutex inboxes_mu_;
  std::vector<std::weak_ptr<Inbox>> inboxes_;  // this sender's requests, for close()
};

class MemDriver : public Driver {
 public:
  std::string scheme() const override { return "mem"; }
  std::string description() const override {
    return "in-process broker: fan-out to subscriptions, competing consumers per ?group=, "
           "per-key order, ack deadline and nack redelivery";
  }
  std::vector<OptionSpec> sender_options() const override {
    return {{"max_message_bytes", OptionType::Int, "16777216",
             "largest payload accepted; a larger message fails alone with ResourceExhausted", {}, 1}};
  }
  std::vector<OptionSpec> receiver_options() const override {
    return {
        {"group", OptionType::String, "",
         "consumer group: subscribers with the same group share (compete for) the messages; "
         "empty: a private subscription that sees every message"},
        {"ack_deadline_ms", OptionType::Int, "30000",
         "an unacked message is redelivered after this long (manual ack only)", {}, 1},
    };
  }
  std::shared_ptr<Sender> open_sender(const Url& url, const OptionValues& options) override {
    return std::make_shared<MemSender>(Broker::instance().topic(topic_name(url)),
                                       static_cast<std::size_t>(options.get_int("max_message_bytes")));
  }
  std::shared_ptr<Receiver> open_receiver(const Url& url, const OptionValues& options,
                                          const ReceiverSettings&) override {
    return std::make_shared<MemReceiver>(Broker::instance().topic(topic_name(url)), options.get_string("group"),
                                         std::chrono::milliseconds(options.get_int("ack_deadline_ms")), 0);
  }
};

}  // namespace

std::shared_ptr<Driver> make_mem_driver() { return std::make_shared<MemDriver>(); }

}  // namespace omnibus
