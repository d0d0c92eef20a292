// gcppubsub:// publishing (sender.hpp): Publish RPCs of up to request_messages
// messages and request_bytes bytes, up to max_in_flight of them at once on
// gRPC's async API, each message's result reported from the sender's
// completion thread when its RPC completes. A completion queue and thread of
// its own rather than gRPC's callback API: grpc++ 1.51 serves callbacks from
// process-wide threads that outlive no channel cleanly (a crash seen when the
// last channel went while Python imported grpcio), and this way close() ends
// everything the sender started.
//
// Order: Pub/Sub keeps the order of one ordering key as the server received
// the messages, so a Publish request that carries a key waits until the
// earlier requests with that key completed; requests of other keys (and
// unkeyed ones) go out meanwhile. A request that fails and is resent by the
// Publisher may land after later ones of its key: Google's clients stop a key
// after a failure instead, which the Sender contract cannot express.

#include "drivers/gcp/sender.hpp"

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "drivers/gcp/envelope.hpp"

namespace omnibus::detail::gcp {

namespace {

// What a PubsubMessage costs on the wire beside its data and attributes
// (field tags and lengths): an over-estimate, so that requests stay under the limit.
constexpr std::size_t kFraming = 64;

class PubSubSender : public Sender {
 public:
  PubSubSender(std::shared_ptr<Client> c, const OptionValues& o)
      : c_(std::move(c)),
        url_(c_->loc.url),
        max_in_flight_(static_cast<std::size_t>(o.get_int("max_in_flight"))),
        request_bytes_(static_cast<std::size_t>(o.get_int("request_bytes"))),
        request_messages_(static_cast<int>(o.get_int("request_messages"))) {
    cq_thread_ = std::thread([this] { complete(); });
  }

  ~PubSubSender() override { close(); }

  void send_batch(const std::vector<OutMessage>& batch, const SendResultFn& on_result) override {
    {
      std::lock_guard lock(mu_);
      if (closed_) throw Error(ErrorCode::Closed, "gcppubsub:// sender for " + url_ + " is closed");
    }
    std::vector<std::unique_ptr<Call>> calls;
    std::unique_ptr<Call> cur;
    std::size_t bytes = 0;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const OutMessage& m = batch[i];
      Encoded e = encode(m.key, m.headers);
      const std::size_t size = m.payload->size() + e.overhead() + kFraming;
      if (size > request_bytes_ || size - kFraming > kMaxMessageBytes) {
        Error err(ErrorCode::ResourceExhausted,
                  "message of " + std::to_string(m.payload->size()) + " payload bytes is " + std::to_string(size) +
                      " bytes with its attributes, over max_message_bytes=" + std::to_string(max_message_bytes()) +
                      " of " + url_ + " (request_bytes)",
                  0, false);
        on_result(i, &err);
        continue;
      }
      if (cur && (cur->members.size() == static_cast<std::size_t>(request_messages_) || bytes + size > request_bytes_)) {
        calls.push_back(std::move(cur));
      }
      if (!cur) {
        cur = std::make_unique<Call>();
        cur->req.set_topic(c_->loc.topic_path());
        cur->on_result = on_result;
        bytes = 0;
      }
      v1::PubsubMessage* pm = cur->req.add_messages();
      pm->set_data(*m.payload);
      if (!e.ordering_key.empty()) {
        cur->keys.insert(e.ordering_key);
        pm->set_ordering_key(std::move(e.ordering_key));
      }
      auto& attrs = *pm->mutable_attributes();
      for (auto& [name, value] : e.attributes) attrs[name] = std::move(value);
      cur->members.push_back(i);
      bytes += size;
    }
    if (cur) calls.push_back(std::move(cur));
    for (auto& call : calls) launch(std::move(call));
  }

  Capabilities capabilities() const override { return pubsub_capabilities(max_message_bytes()); }
  std::optional<bool> connected() const override { return connected_.load(); }

  // Cancels the RPCs in flight (their messages fail with Closed) and waits
  // for their callbacks, which use this object.
  void close() override {
    std::unique_lock lock(mu_);
    if (closed_ && in_flight_.empty()) return;
    closed_ = true;
    for (Call* call : in_flight_) call->ctx.TryCancel();
    cv_.wait(lock, [&] { return in_flight_.empty(); });
    lock.unlock();
    cq_.Shutdown();  // nothing is in flight: the thread ends at once
    if (cq_thread_.joinable()) cq_thread_.join();
    c_.reset();  // the channel (its connection) goes now: the object may live on (Python)
  }

 private:
  struct Call {
    grpc::ClientContext ctx;
    v1::PublishRequest req;
    v1::PublishResponse resp;
    grpc::Status status;
    std::unique_ptr<grpc::ClientAsyncResponseReader<v1::PublishResponse>> reader;
    std::vector<std::size_t> members;  // index in the batch of each message of req
    std::unordered_set<std::string> keys;
    SendResultFn on_result;
  };

  std::size_t max_message_bytes() const { return std::min(request_bytes_ - kFraming, kMaxMessageBytes); }

  void launch(std::unique_ptr<Call> call) {
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] {
        if (closed_) return true;
        if (in_flight_.size() >= max_in_flight_) return false;
        for (const auto& k : call->keys)
          if (keys_in_flight_.count(k)) return false;
        return true;
      });
      if (closed_) {
        Error err(ErrorCode::Closed, "gcppubsub:// sender for " + url_ + " was closed before this message was sent");
        for (auto i : call->members) call->on_result(i, &err);
        return;
      }
      for (const auto& k : call->keys) ++keys_in_flight_[k];
      in_flight_.insert(call.get());
    }
    call->ctx.set_deadline(std::chrono::system_clock::now() + c_->timeout);
    Call* raw = call.release();  // owned by the completion queue from here on (its tag)
    raw->reader = c_->publisher->AsyncPublish(&raw->ctx, raw->req, &cq_);
    raw->reader->Finish(&raw->resp, &raw->status, raw);
  }

  // The completion thread: each Publish's result, until close() shuts the queue down.
  void complete() {
    void* tag = nullptr;
    bool ok = false;
    while (cq_.Next(&tag, &ok)) {
      std::unique_ptr<Call> call(static_cast<Call*>(tag));
      const grpc::Status s = call->status;
      done(std::move(call), s);
    }
  }

  // On the completion thread, once per Publish.
  void done(std::unique_ptr<Call> call, const grpc::Status& s) {
    bool closing;
    {
      std::lock_guard lock(mu_);
      closing = closed_;
    }
    if (s.ok() && call->resp.message_ids_size() == static_cast<int>(call->members.size())) {
      connected_ = true;
      for (auto i : call->members) call->on_result(i, nullptr);
    } else {
      Error err = s.ok() ? Error(ErrorCode::Unavailable,
                                 "gcppubsub:// Publish to " + c_->loc.topic_path() + " returned " +
                                     std::to_string(call->resp.message_ids_size()) + " message ids for " +
                                     std::to_string(call->members.size()) + " messages",
                                 0, true)
                 : (closing && s.error_code() == grpc::StatusCode::CANCELLED)
                     ? Error(ErrorCode::Closed, "gcppubsub:// sender for " + url_ + " was closed with this "
                                                "message in flight (it may have been published)")
                     : to_error(s, "gcppubsub:// Publish to " + c_->loc.topic_path());
      if (s.error_code() == grpc::StatusCode::UNAVAILABLE) connected_ = false;
      for (auto i : call->members) call->on_result(i, &err);
    }
    std::lock_guard lock(mu_);
    for (const auto& k : call->keys)
      if (--keys_in_flight_[k] == 0) keys_in_flight_.erase(k);
    in_flight_.erase(call.get());
    cv_.notify_all();
  }

  std::shared_ptr<Client> c_;  // reset by close(), after the last callback
  const std::string url_;
  const std::size_t max_in_flight_;
  const std::size_t request_bytes_;
  const int request_messages_;
  std::atomic<bool> connected_{true};
  grpc::CompletionQueue cq_;
  std::thread cq_thread_;

  std::mutex mu_;  // guards what follows
  std::condition_variable cv_;  // a request completed, or closed
  bool closed_ = false;
  std::unordered_set<Call*> in_flight_;
  std::unordered_map<std::string, int> keys_in_flight_;
};

}  // namespace

std::shared_ptr<Sender> make_pubsub_sender(std::shared_ptr<Client> c, const OptionValues& o) {
  if (c->loc.topic.empty())
    throw Error(ErrorCode::InvalidArgument, "gcppubsub:// " + c->loc.url +
                                                " names a subscription: publish to its topic's URL "
                                                "(gcppubsub://HOST:PORT/projects/P/topics/T)");
  ensure_topic(*c, o.get_bool("create"));
  return std::make_shared<PubSubSender>(std::move(c), o);
}

std::vector<OptionSpec> sender_option_specs() {
  auto o = common_options();
  o.push_back({"max_in_flight", OptionType::Int, "8", "Publish RPCs of one publisher in flight at once", {}, 1, 256});
  o.push_back({"request_messages", OptionType::Int, "1000",
               "most messages per Publish request (Pub/Sub allows 1,000)", {}, 1, kMaxPublishMessages});
  o.push_back({"request_bytes", OptionType::Int, "9437184",
               "most bytes per Publish request, attributes included (9 MiB; Pub/Sub allows 10 MB). A message "
               "larger than this fails alone with ResourceExhausted",
               {}, 1024, 10000000});
  return o;
}

}  // namespace omnibus::detail::gcp
