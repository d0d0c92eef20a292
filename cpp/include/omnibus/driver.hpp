#pragma once
// The driver boundary. A driver is small: it sends a batch, receives a batch,
// acks/nacks, reports capabilities and maps native errors onto ErrorCode. It
// never retries, batches or encodes; the portable layer (Publisher,
// Subscriber) does that once for every protocol.

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "omnibus/message.hpp"
#include "omnibus/options.hpp"
#include "omnibus/url.hpp"

namespace omnibus {

class Error;

using Clock = std::chrono::steady_clock;

// What a protocol can do. Data, not code: the conformance suite skips on these
// and the comparison reports them.
struct Capabilities {
  std::string delivery_guarantee;  // "at-most-once" | "at-least-once"
  bool ordered_per_key = false;    // one subscriber sees one key's messages in publish order
  bool key_affinity = false;       // competing consumers: one key goes to one consumer at a time
  bool keys = false;               // Message::key travels to the subscriber
  bool nack = false;               // nack() redelivers
  bool ack_deadline = false;       // unacked messages are redelivered after a timeout
  bool requeue_on_close = false;   // a closed subscriber's unacked messages go to its group again
  bool delivery_count = false;     // delivery_attempt counts redeliveries, across consumers too
  bool competing_consumers = false;
  bool fan_out = true;             // subscribers without a group each get every message (false: the
                                   // URL names one queue, which all its subscribers share: awssqs://)
  bool headers = false;
  bool dead_letter = false;
  bool durable = false;            // survives a broker restart
  bool request_reply = false;      // Publisher::request / Subscriber::reply (nats:// core, mem://)
  std::size_t max_message_bytes = 0;  // 0: no limit known
};

// One request in flight, returned by Sender::request once the request was
// sent. wait() may be called repeatedly, from one thread at a time, so that
// the caller can wait in short slices (Ctrl-C in Python) without sending the
// request again. Destroying it abandons the request: a later reply is dropped.
// It stays valid after its Sender closed (wait() then throws Closed).
class PendingReply {
 public:
  virtual ~PendingReply() = default;
  // Blocks up to `timeout` for the first reply; nullptr when none came yet.
  // Throws Closed when the sender closed meanwhile, Timeout at once when the
  // broker says that nothing subscribes to the subject (NATS no-responders),
  // Unavailable when the connection was lost.
  virtual MessagePtr wait(std::chrono::milliseconds timeout) = 0;
  // Calls `fn` once, when wait() would return without blocking (a reply came,
  // no responders, the sender closed): at once on the caller's thread when
  // that is already so, else on the thread that settles the request (a driver
  // thread: fn must be short and must not block). An asyncio caller passes a
  // fn that wakes its event loop, so that no thread waits per request. Call it
  // at most once. fn may still run once while this object is being destroyed,
  // so it must own what it uses. Thread-safe; never throws.
  virtual void on_ready(std::function<void()> fn) = 0;
};

// Called exactly once per message of a batch, with nullptr on success.
// May run on any thread, including inside send_batch.
using SendResultFn = std::function<void(std::size_t index, const Error* error)>;

class Sender {
 public:
  virtual ~Sender() = default;
  // Called by the Publisher's sender thread only (never concurrently).
  // `batch` stays valid until every message's result was reported. May block
  // briefly for network back-pressure; must not retry.
  virtual void send_batch(const std::vector<OutMessage>& batch, const SendResultFn& on_result) = 0;
  virtual Capabilities capabilities() const = 0;
  // Whether the connection to the broker is up right now: true or false, or
  // nullopt when the native library cannot tell. Thread-safe, non-blocking.
  // An in-process driver is always connected.
  virtual std::optional<bool> connected() const { return true; }
  // Request-reply: sends `msg` to the sender's subject with a fresh reply
  // address (an inbox per request) and returns at once; the reply comes
  // through the returned handle. Bypasses batching: called by any thread,
  // concurrently with send_batch and other requests, never with or after
  // close() (the Publisher sees to that). May block briefly on network
  // back-pressure; must not retry. The default throws Unsupported: only
  // drivers with capabilities().request_reply override it.
  // `more`: further requests follow at once (a pipelined batch); the sender
  // may buffer this one to write them together instead of one write each.
  virtual std::unique_ptr<PendingReply> request(const OutMessage& msg, bool more);
  // Fails every message still in flight with Closed, then releases resources.
  // Called once, after the last send_batch returned.
  virtual void close() = 0;
};

class Receiver {
 public:
  virtual ~Receiver() = default;
  // Blocks up to `timeout` for at least one message; returns up to `max`.
  // Called by one thread at a time (the Subscriber's fetch thread, or the
  // application's thread when fetches_ahead()), never after close() began.
  // Throws Closed after close().
  virtual std::vector<MessagePtr> receive_batch(std::size_t max,
                                                std::chrono::milliseconds timeout) = 0;
  // True when the library behind the receiver already fetches ahead on its
  // own threads (librdkafka keeps a local queue per partition): the
  // Subscriber then calls receive_batch on the application's thread instead
  // of running a fetch thread and a second buffer, which would cost a thread
  // hop, a lock hand-off and a cross-thread free per message. Such a receiver
  // documents how much it fetches ahead and reports it in buffered().
  virtual bool fetches_ahead() const { return false; }
  // Messages fetched ahead and not yet returned; meaningful when
  // fetches_ahead(). Thread-safe, non-blocking.
  virtual std::size_t buffered() const { return 0; }
  // Thread-safe, any thread. Unknown or already-settled ids are ignored.
  virtual void ack(const std::vector<std::uint64_t>& ack_ids) = 0;
  // Redelivers; throws Unsupported when capabilities().nack is false.
  virtual void nack(const std::vector<std::uint64_t>& ack_ids) = 0;
  virtual Capabilities capabilities() const = 0;
  // As Sender::connected(). Thread-safe, non-blocking.
  virtual std::optional<bool> connected() const { return true; }
  // Sends `reply` to `msg.reply_to()` (the requester's inbox), fire and forget:
  // a reply nobody waits for any more is dropped, as NATS does. `msg` came
  // from this receiver and has a non-empty reply_to(). Thread-safe, any
  // thread; may block briefly for network back-pressure. Throws Closed after
  // close(); the default throws Unsupported (capabilities().request_reply).
  virtual void reply(const Message& msg, const OutMessage& reply);
  // Unacked messages go back to the broker for redelivery. Idempotent.
  virtual void close() = 0;
};

// Options every Receiver is told about, decided by the portable layer.
struct ReceiverSettings {
  bool manual_ack = false;  // false: the driver may consider a message settled on delivery
};

class Driver {
 public:
  virtual ~Driver() = default;
  virtual std::string scheme() const = 0;
  virtual std::string description() const = 0;
  // Driver-specific options; the portable ones are added by the Publisher/Subscriber.
  virtual std::vector<OptionSpec> sender_options() const = 0;
  virtual std::vector<OptionSpec> receiver_options() const = 0;
  // Open a connection. May block for the connect; throw Unavailable,
  // InvalidArgument or NotFound.
  virtual std::shared_ptr<Sender> open_sender(const Url& url, const OptionValues& options) = 0;
  virtual std::shared_ptr<Receiver> open_receiver(const Url& url, const OptionValues& options,
                                                  const ReceiverSettings& settings) = 0;
};

// Registry keyed by URL scheme. Thread-safe.
class DriverRegistry {
 public:
  static DriverRegistry& instance();

  // Throws InvalidArgument when the scheme is already registered.
  void add(std::shared_ptr<Driver> driver);
  // Records a scheme whose driver this build left out, and why, so that a URL
  // with it gets Unsupported with the reason instead of "unknown scheme".
  void add_unavailable(const std::string& scheme, const std::string& reason);
  // Throws InvalidArgument listing the known schemes when `scheme` is unknown,
  // Unsupported when the driver was left out of this build.
  std::shared_ptr<Driver> get(const std::string& scheme) const;
  std::vector<std::string> schemes() const;  // available ones, sorted
  std::vector<std::pair<std::string, std::string>> unavailable() const;
  // Removes a scheme; for tests that register throwaway drivers.
  void remove(const std::string& scheme);

 private:
  DriverRegistry();
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace omnibus
