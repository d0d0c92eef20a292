// SQS queues (sqs.hpp): finding or creating one, SendMessageBatch, and
// long-polled ReceiveMessage with ack = delete and nack = visibility 0.

#include "drivers/awssqs/sqs.hpp"

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <thread>

#include "core/backoff.hpp"
#include "core/base64.hpp"
#include "drivers/awssqs/envelope.hpp"

namespace omnibus::detail::aws {

namespace env = detail::sqs;

namespace {

json attributes_json(const std::vector<env::Attribute>& attrs) {
  json out = json::object();
  for (const auto& a : attrs) {
    if (a.binary()) out[a.name] = {{"DataType", a.type}, {"BinaryValue", b64_encode(a.value)}};
    else out[a.name] = {{"DataType", a.type}, {"StringValue", a.value}};
  }
  return out;
}

// A FIFO MessageGroupId for a key: the key itself when SQS takes it (1..128
// characters, alphanumeric or punctuation), else a hash of it (keys that
// collide only share a group: their order is still kept).
std::string group_id(const std::optional<std::string>& key) {
  if (!key || key->empty()) return "omnibus";
  bool ok = key->size() <= 128 && std::all_of(key->begin(), key->end(), [](char c) {
              return c > 0x20 && c < 0x7f;
            });
  if (ok) return *key;
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : *key) h = (h ^ c) * 1099511628211ull;
  char buf[32];
  std::snprintf(buf, sizeof buf, "omnibus-h%016llx", static_cast<unsigned long long>(h));
  return buf;
}

class SqsSender : public Sender {
 public:
  SqsSender(Queue q, const OptionValues& o)
      : q_(std::move(q)), pool_(std::make_unique<Pool>(*q_.svc, static_cast<std::size_t>(o.get_int("max_in_flight")))),
        dedup_header_(o.get_string("dedup_header")) {
    if (!dedup_header_.empty() && !q_.fifo)
      throw Error(ErrorCode::InvalidArgument, "dedup_header=" + dedup_header_ + " needs a FIFO queue (a name ending in .fifo); " +
                                                  q_.svc->loc.queue + " is a standard queue");
  }

  void send_batch(const std::vector<OutMessage>& batch, const SendResultFn& on_result) override {
    if (closed_) throw Error(ErrorCode::Closed, q_.svc->scheme + " sender is closed");
    // Requests of at most 10 entries and 256 KiB in all, as SQS requires.
    std::vector<std::vector<std::size_t>> chunks;
    std::vector<Pool::Call> calls;
    json entries = json::array();
    std::vector<std::size_t> members;
    std::size_t bytes = 0;
    auto flush = [&] {
      if (members.empty()) return;
      Pool::Call c;
      c.action = "SendMessageBatch";
      c.body = json{{"QueueUrl", q_.url}, {"Entries", std::move(entries)}}.dump();
      calls.push_back(std::move(c));
      chunks.push_back(std::move(members));
      entries = json::array();
      members.clear();
      bytes = 0;
    };
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const auto& m = batch[i];
      env::Encoded e = env::encode(m);
      const std::size_t size = e.bytes();
      if (size > env::kMaxMessageBytes) {
        Error err(ErrorCode::ResourceExhausted,
                  "message of " + std::to_string(m.payload->size()) + " payload bytes is " + std::to_string(size) +
                      " bytes as SQS counts it (body" + (e.body.size() != m.payload->size() ? ", base64-encoded," : "") +
                      " and attributes), over max_message_bytes=" + std::to_string(env::kMaxMessageBytes) + " of " +
                      q_.svc->scheme + q_.svc->loc.queue,
                  0, false);
        on_result(i, &err);
        continue;
      }
      json entry = {{"Id", std::to_string(i)}, {"MessageBody", std::move(e.body)}};
      if (!e.attributes.empty()) entry["MessageAttributes"] = attributes_json(e.attributes);
      if (q_.fifo) {
        entry["MessageGroupId"] = group_id(m.key);
        if (!dedup_header_.empty()) {
          auto h = std::find_if(m.headers.begin(), m.headers.end(), [&](const auto& kv) { return kv.first == dedup_header_; });
          if (h == m.headers.end() || h->second.empty() || h->second.size() > 128) {
            Error err(ErrorCode::InvalidArgument, "message has no header " + dedup_header_ +
                                                      " of 1..128 characters for its deduplication id (dedup_header)");
            on_result(i, &err);
            continue;
          }
          entry["MessageDeduplicationId"] = h->second;
        }
      }
      if (members.size() == kBatchEntries || bytes + size > env::kMaxMessageBytes) flush();
      entries.push_back(std::move(entry));
      members.push_back(i);
      bytes += size;
    }
    flush();
    if (calls.empty()) return;
    pool_->run(calls, kRequestTimeout, nullptr, q_.svc->loc.queue);
    for (std::size_t c = 0; c < calls.size(); ++c) report(calls[c], chunks[c], on_result);
  }

  Capabilities capabilities() const override { return sqs_capabilities(q_.fifo, q_.fan_out, q_.dead_letter); }
  std::optional<bool> connected() const override { return connected_.load(); }
  // Releases the connections at once: the object may live on (Python).
  void close() override {
    closed_ = true;
    pool_.reset();
  }

 private:
  void report(const Pool::Call& call, const std::vector<std::size_t>& members, const SendResultFn& on_result) {
    std::unordered_map<std::size_t, Error> failed;
    std::unordered_map<std::size_t, bool> ok;
    if (!call.error) parse_results(call.result, failed, ok);
    report_batch(call, members, failed, ok, q_.svc->scheme + " SendMessageBatch gave no result for a message", connected_,
                 on_result);
  }

  void parse_results(const json& result, std::unordered_map<std::size_t, Error>& failed,
                     std::unordered_map<std::size_t, bool>& ok) const {
    for (const auto& f : result.value("Failed", json::array())) {
      std::size_t id = std::stoul(f.value("Id", std::string("0")));
      std::string code = f.value("Code", std::string());
      std::string text = q_.svc->scheme + q_.svc->loc.queue + " refused the message: " + code + ": " +
                         f.value("Message", std::string());
      bool sender = f.value("SenderFault", false);
      failed.insert_or_assign(id, Error(sender ? ErrorCode::InvalidArgument : ErrorCode::Unavailable, text, 0, !sender));
    }
    for (const auto& s : result.value("Successful", json::array())) ok[std::stoul(s.value("Id", std::string("0")))] = true;
  }

  Queue q_;
  std::unique_ptr<Pool> pool_;
  std::string dedup_header_;
  bool closed_ = false;
  std::atomic<bool> connected_{true};
};

class SqsReceiver : public Receiver, public std::enable_shared_from_this<SqsReceiver> {
 public:
  SqsReceiver(Queue q, const OptionValues& o)
      : q_(std::move(q)),
        visibility_s_((o.get_int("ack_deadline_ms") + 999) / 1000),
        wait_s_(o.get_int("wait_seconds")),
        pollers_n_(static_cast<std::size_t>(o.get_int("pollers"))),
        control_(std::make_unique<Pool>(*q_.svc, 4)) {}

  // Runs at the end of close(), once (awssns://: unsubscribe and delete a private queue).
  void on_close(std::function<void()> fn) { on_close_ = std::move(fn); }

  // Started once the receiver is owned by a shared_ptr (messages hold one).
  void start() {
    for (std::size_t i = 0; i < pollers_n_; ++i) pools_.push_back(std::make_unique<Pool>(*q_.svc, 1));
    running_ = pollers_n_;
    for (std::size_t i = 0; i < pollers_n_; ++i)
      threads_.emplace_back([this, i] {
        poll(*pools_[i]);
        std::lock_guard lock(mu_);
        --running_;
        room_cv_.notify_all();
      });
  }

  ~SqsReceiver() override { close(); }

  std::vector<MessagePtr> receive_batch(std::size_t max, std::chrono::milliseconds timeout) override {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return !buffer_.empty() || closed_ || fatal_; });
    if (closed_) throw Error(ErrorCode::Closed, q_.svc->scheme + " receiver is closed");
    std::vector<MessagePtr> out;
    if (buffer_.empty() && fatal_) throw *fatal_;
    while (!buffer_.empty() && out.size() < max) {
      out.push_back(std::move(buffer_.front()));
      buffer_.pop_front();
    }
    room_cv_.notify_all();
    return out;
  }

  void ack(const std::vector<std::uint64_t>& ids) override { settle(ids, "DeleteMessageBatch", false); }
  void nack(const std::vector<std::uint64_t>& ids) override { settle(ids, "ChangeMessageVisibilityBatch", false); }

  Capabilities capabilities() const override { return sqs_capabilities(q_.fifo, q_.fan_out, q_.dead_letter); }
  std::optional<bool> connected() const override { return connected_.load(); }

  void close() override {
    {
      std::lock_guard lock(mu_);
      if (closed_) return;
      closed_ = true;  // no new polls
      cv_.notify_all();
      room_cv_.notify_all();
    }
    {
      // Polls in flight end by themselves (within wait_seconds): a poll cut
      // off mid-way still takes messages on the server (SQS and moto alike),
      // which then stay invisible for the visibility timeout. Only a poll
      // that hangs past that (an unreachable endpoint) is aborted.
      std::unique_lock lock(mu_);
      room_cv_.wait_for(lock, std::chrono::seconds(wait_s_ + 5), [&] { return running_ == 0; });
    }
    abort_ = true;
    for (auto& p : pools_) p->wake();
    for (auto& t : threads_)
      if (t.joinable()) t.join();
    // Unacked and buffered messages go back to the queue at once, instead of
    // after their visibility timeout. Best effort: SQS redelivers them anyway.
    std::vector<std::uint64_t> ids;
    {
      std::lock_guard lock(mu_);
      for (const auto& [id, _] : receipts_) ids.push_back(id);
      buffer_.clear();  // they hold this receiver
    }
    try {
      settle(ids, "ChangeMessageVisibilityBatch", true);
    } catch (const Error&) {
    }
    {
      std::lock_guard lock(mu_);
      receipts_.clear();
    }
    // The connections go now: the object may live on (Python).
    pools_.clear();
    {
      std::lock_guard lock(control_mu_);
      control_.reset();
    }
    if (auto fn = std::move(on_close_)) {
      try {
        fn();
      } catch (const Error&) {
        // Best effort: an orphaned private queue costs nothing until used.
      }
    }
  }

 private:
  void poll(Pool& pool) {
    const std::size_t capacity = 10 * pollers_n_;
    detail::Backoff backoff(std::chrono::milliseconds(100), std::chrono::milliseconds(5000));
    for (;;) {
      {
        std::unique_lock lock(mu_);
        room_cv_.wait(lock, [&] { return closed_ || buffer_.size() < capacity; });
        if (closed_) return;
      }
      json req = {{"QueueUrl", q_.url},
                  {"MaxNumberOfMessages", static_cast<int>(kBatchEntries)},
                  {"WaitTimeSeconds", wait_s_},
                  {"VisibilityTimeout", visibility_s_},
                  {"MessageAttributeNames", {"All"}},
                  {"MessageSystemAttributeNames", {"ApproximateReceiveCount", "SentTimestamp", "MessageGroupId"}},
                  {"AttributeNames", {"ApproximateReceiveCount", "SentTimestamp", "MessageGroupId"}}};
      json resp;
      try {
        resp = pool.call("ReceiveMessage", req, std::chrono::seconds(wait_s_ + 20), q_.svc->loc.queue, &abort_);
      } catch (const Error& e) {
        if (e.code() == ErrorCode::Closed) return;
        std::unique_lock lock(mu_);
        if (!e.retryable()) {  // the queue was deleted, the key revoked: nothing to wait for
          fatal_.emplace(e);
          cv_.notify_all();
          return;
        }
        connected_ = false;
        // Back off (up to 5 s, jittered), as SQS asks of a throttled or failing client.
        room_cv_.wait_for(lock, backoff.next(), [&] { return closed_; });
        continue;
      }
      backoff.reset();
      connected_ = true;
      deliver(resp.value("Messages", json::array()));
    }
  }

  void deliver(const json& messages) {
    if (messages.empty()) return;
    auto self = weak_from_this().lock();
    if (!self) return;  // being destroyed without close(): nobody receives any more
    std::vector<MessagePtr> got;
    std::vector<std::pair<std::uint64_t, std::string>> receipts;
    for (const auto& m : messages) {
      std::vector<env::Attribute> attrs;
      if (auto it = m.find("MessageAttributes"); it != m.end() && it->is_object()) {
        for (const auto& [name, v] : it->items()) {
          env::Attribute a{name, v.value("DataType", std::string("String")), {}};
          if (a.binary()) a.value = b64_decode(v.value("BinaryValue", std::string())).value_or(std::string());
          else a.value = v.value("StringValue", std::string());
          attrs.push_back(std::move(a));
        }
      }
      env::Decoded d = env::decode(m.value("Body", std::string()), std::move(attrs));
      const json sys = m.value("Attributes", json::object());
      OutMessage data;
      data.payload = make_bytes(std::move(d.payload));
      data.key = std::move(d.key);
      if (!data.key && d.foreign && q_.fifo && sys.contains("MessageGroupId"))
        data.key = sys.value("MessageGroupId", std::string());
      data.headers = std::move(d.headers);
      std::uint32_t attempt = 1;
      try {
        data.timestamp_ms = std::stoll(sys.value("SentTimestamp", std::string("0")));
        attempt = static_cast<std::uint32_t>(std::stoul(sys.value("ApproximateReceiveCount", std::string("1"))));
      } catch (const std::exception&) {
      }
      if (data.timestamp_ms == 0) data.timestamp_ms = now_ms();
      const std::uint64_t id = next_id_++;
      receipts.emplace_back(id, m.value("ReceiptHandle", std::string()));
      got.push_back(std::make_shared<Message>(std::move(data), q_.svc->loc.queue, std::max<std::uint32_t>(attempt, 1),
                                              self, id));
    }
    std::lock_guard lock(mu_);
    for (auto& r : receipts) receipts_.emplace(r.first, std::move(r.second));
    for (auto& g : got) buffer_.push_back(std::move(g));
    cv_.notify_all();
  }

  // Deletes (ack) or makes visible again (nack, close) the messages of `ids`
  // that this receiver still holds, 10 per request, the requests concurrently.
  void settle(const std::vector<std::uint64_t>& ids, const char* action, bool closing) {
    std::vector<std::string> handles;
    {
      std::lock_guard lock(mu_);
      if (closed_ && !closing)
        throw Error(ErrorCode::Closed, q_.svc->scheme + " subscriber is closed; its unacked messages were returned for redelivery");
      for (auto id : ids) {
        auto it = receipts_.find(id);
        if (it == receipts_.end()) continue;  // unknown or settled already
        handles.push_back(std::move(it->second));
        receipts_.erase(it);
      }
    }
    if (handles.empty()) return;
    const bool remove = std::string(action) == "DeleteMessageBatch";
    std::vector<Pool::Call> calls;
    for (std::size_t i = 0; i < handles.size(); i += kBatchEntries) {
      json entries = json::array();
      for (std::size_t j = i; j < std::min(handles.size(), i + kBatchEntries); ++j) {
        json e = {{"Id", std::to_string(j)}, {"ReceiptHandle", handles[j]}};
        if (!remove) e["VisibilityTimeout"] = 0;
        entries.push_back(std::move(e));
      }
      Pool::Call c;
      c.action = action;
      c.body = json{{"QueueUrl", q_.url}, {"Entries", std::move(entries)}}.dump();
      calls.push_back(std::move(c));
    }
    std::lock_guard lock(control_mu_);
    if (!control_) throw Error(ErrorCode::Closed, q_.svc->scheme + " subscriber is closed");
    control_->run(calls, kRequestTimeout, nullptr, q_.svc->loc.queue);
    // A failed entry (a receipt handle that expired with its visibility
    // timeout) is left to SQS: the message comes again, as at-least-once allows.
    for (auto& c : calls)
      if (c.error) throw *c.error;
  }

  Queue q_;
  const std::int64_t visibility_s_;
  const std::int64_t wait_s_;
  const std::size_t pollers_n_;
  std::vector<std::unique_ptr<Pool>> pools_;
  std::vector<std::thread> threads_;
  std::atomic<bool> abort_{false};
  std::atomic<bool> connected_{true};
  std::atomic<std::uint64_t> next_id_{1};

  std::mutex mu_;  // guards what follows
  std::condition_variable cv_;       // buffer_ got messages, or closed/fatal
  std::condition_variable room_cv_;  // buffer_ has room, or closed
  std::deque<MessagePtr> buffer_;
  std::unordered_map<std::uint64_t, std::string> receipts_;  // unsettled: ack id -> receipt handle
  std::optional<Error> fatal_;
  bool closed_ = false;
  std::size_t running_ = 0;  // poller threads not ended yet

  std::mutex control_mu_;  // guards control_
  std::unique_ptr<Pool> control_;
  std::function<void()> on_close_;
};

}  // namespace

Queue open_queue(std::shared_ptr<Service> svc, bool create, json attrs) {
  global_init();
  Queue q;
  q.svc = std::move(svc);
  const auto& loc = q.svc->loc;
  q.fifo = ends_with(loc.queue, ".fifo");
  Pool pool(*q.svc, 1);
  if (create) {
    if (q.fifo) {
      attrs["FifoQueue"] = "true";
      attrs["ContentBasedDeduplication"] = "true";
    }
    json req = {{"QueueName", loc.queue}, {"Attributes", attrs}};
    q.url = pool.call("CreateQueue", req, kRequestTimeout, loc.queue).value("QueueUrl", std::string());
  } else if (!loc.account.empty()) {
    q.url = loc.endpoint + "/" + loc.account + "/" + loc.queue;
    pool.call("GetQueueAttributes", {{"QueueUrl", q.url}, {"AttributeNames", {"FifoQueue"}}}, kRequestTimeout,
              loc.queue);
  } else {
    json req = {{"QueueName", loc.queue}};
    q.url = pool.call("GetQueueUrl", req, kRequestTimeout, loc.queue).value("QueueUrl", std::string());
  }
  if (q.url.empty())
    throw Error(ErrorCode::Unavailable, q.svc->scheme + " " + loc.endpoint + " gave no QueueUrl for " + loc.queue, 0, true);
  return q;
}

Capabilities sqs_capabilities(bool fifo, bool fan_out, bool dead_letter) {
  Capabilities c;
  c.delivery_guarantee = "at-least-once";
  c.ordered_per_key = fifo;  // per MessageGroupId, the key
  c.key_affinity = fifo;     // a group in flight goes to no other consumer
  c.keys = true;
  c.nack = true;
  c.ack_deadline = true;  // the visibility timeout
  c.requeue_on_close = true;
  c.delivery_count = true;  // ApproximateReceiveCount
  c.competing_consumers = true;
  c.fan_out = fan_out;  // awssqs://: a queue is one group; awssns:// fans out
  c.headers = true;
  c.dead_letter = dead_letter;  // through the queue's redrive policy
  c.durable = true;
  c.request_reply = false;
  c.max_message_bytes = env::kMaxMessageBytes;
  return c;
}

void report_batch(const Pool::Call& call, const std::vector<std::size_t>& members,
                  const std::unordered_map<std::size_t, Error>& failed, const std::unordered_map<std::size_t, bool>& ok,
                  const std::string& no_result, std::atomic<bool>& connected, const SendResultFn& on_result) {
  if (call.error) {
    if (call.error->code() == ErrorCode::Unavailable && call.error->native_code() < 100) connected = false;
    for (auto i : members) on_result(i, &*call.error);
    return;
  }
  connected = true;
  for (auto i : members) {
    if (auto f = failed.find(i); f != failed.end()) on_result(i, &f->second);
    else if (ok.count(i)) on_result(i, nullptr);
    else {
      Error err(ErrorCode::Unavailable, no_result, 0, true);
      on_result(i, &err);
    }
  }
}

std::shared_ptr<Sender> make_sqs_sender(Queue q, const OptionValues& o) {
  return std::make_shared<SqsSender>(std::move(q), o);
}

std::shared_ptr<Receiver> make_sqs_receiver(Queue q, const OptionValues& o, std::function<void()> on_close) {
  auto r = std::make_shared<SqsReceiver>(std::move(q), o);
  if (on_close) r->on_close(std::move(on_close));
  r->start();
  return r;
}

}  // namespace omnibus::detail::aws
