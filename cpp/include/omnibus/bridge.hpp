#pragma once
// A bridge moves messages from one URL to another (MQTT into Kafka, say),
// at-least-once end to end: a source message is acknowledged only once the
// sink confirmed it (Kafka delivery report, AMQP confirm, JetStream ack, MQTT
// PUBACK). Sink failures that may pass (the broker restarting) are retried
// with backoff while the source message stays unacked; so nothing is lost in
// the gap between two clients as long as the bridge runs, and with a source
// that redelivers unacked messages, not even when it stops.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "omnibus/codec.hpp"
#include "omnibus/message.hpp"
#include "omnibus/publisher.hpp"
#include "omnibus/subscriber.hpp"

namespace omnibus {

// How the bridge maps a source message onto a sink message.
struct BridgeConfig {
  // Messages taken from the source per batch (and handed to the transform).
  std::size_t batch = 1000;
  // Unconfirmed messages at most; the bridge stops receiving while there are
  // more, so a slow sink slows the source instead of filling memory.
  std::size_t max_in_flight = 20000;
  // The sink message's key: empty keeps the source key; else a template of
  // literal text and fields {topic}, {topic[N]} (topic level N, negative from
  // the end, levels split at '/' for mqtt:// and mem://, '.' otherwise) and {key}.
  std::string key_template;
  bool keep_headers = true;       // carry the source headers to the sink
  Headers extra_headers;          // appended to every sink message
  bool keep_timestamp = true;     // false: stamped when published to the sink
  // Codecs: when both are "raw" or equal and no transform runs, payloads pass
  // through unchanged; "raw" source skips decoding. A payload the source codec
  // cannot decode goes to the dead-letter URL (or counts as failed without one).
  std::string source_codec = "raw";
  std::string sink_codec = "raw";
  // Empty: none. Dead letters carry the source payload, key and headers plus
  // omnibus-error, omnibus-error-code and omnibus-source-topic headers.
  std::string dead_letter_url;
  // Floor and cap of the wait before a failed sink delivery is retried: the
  // n-th retry of a batch waits a random time between retry_backoff and
  // min(max_retry_backoff, retry_backoff * 2^n) (the engine's backoff).
  std::chrono::milliseconds retry_backoff{100};
  std::chrono::milliseconds max_retry_backoff{5000};
};

// One message on its way through the transform. The transform sets `drop`
// (the source message is acked, nothing is published) or edits `out`.
struct BridgeItem {
  MessagePtr source;
  OutMessage out;  // the sink message as mapped by the config; the payload re-encoded when codecs differ
  std::optional<Value> value;  // the decoded payload, when the source codec is not raw
  bool drop = false;
};

// Called on the bridge thread once per batch. May throw: the batch's messages
// then go to the dead-letter URL with the error, or without one count as
// failed and stay unacked; the bridge goes on and last_error() keeps it.
using BridgeTransform = std::function<void(std::vector<BridgeItem>&)>;

struct BridgeStats {
  std::uint64_t consumed = 0;       // received from the source
  std::uint64_t published = 0;      // confirmed by the sink
  std::uint64_t dropped = 0;        // dropped by the transform (and acked)
  std::uint64_t dead_lettered = 0;  // confirmed by the dead-letter sink
  std::uint64_t failed = 0;         // given up (not retryable, no dead-letter URL): left unacked
  std::uint64_t retried = 0;        // sink deliveries sent again after a retryable failure
  std::uint64_t acked = 0;          // source messages acknowledged
  std::size_t in_flight = 0;        // received and not yet settled
};

class Bridge {
 public:
  // Opens the source (manual ack), the sink and the dead-letter sink, then
  // starts the bridge thread. Blocks for the connects. Throws InvalidArgument
  // (bad URL, option, codec name or key template, naming the valid ones),
  // Unavailable, NotFound. `source_options`/`sink_options` are extra URL
  // options (name, text) as Publisher::open takes them.
  static std::shared_ptr<Bridge> open(
      const std::string& source_url, const std::string& sink_url, BridgeConfig config,
      BridgeTransform transform = nullptr,
      const std::vector<std::pair<std::string, std::string>>& source_options = {},
      const std::vector<std::pair<std::string, std::string>>& sink_options = {});
  ~Bridge();  // stop() with a 10 s drain, errors swallowed
  Bridge(const Bridge&) = delete;
  Bridge& operator=(const Bridge&) = delete;

  // The delivery guarantee the pair can give: at-least-once only when both
  // the source and the sink are at-least-once; else the weaker one.
  // Thread-safe, non-blocking.
  std::string delivery_guarantee() const;
  std::string source_guarantee() const;
  std::string sink_guarantee() const;

  // Counters; thread-safe, non-blocking.
  BridgeStats stats() const;
  // The last error the bridge met (a failed delivery, the transform, the
  // source), empty when none. Thread-safe.
  std::string last_error() const;
  // Blocks up to `timeout` until nothing is in flight; true when drained.
  // Thread-safe. Does not stop receiving: use it after the source went quiet.
  bool wait_idle(Clock::duration timeout) const;
  // Stops receiving, waits up to `timeout` for in-flight messages to be
  // confirmed and acked, then closes the sinks and the source (unacked
  // messages go back to the source broker where it redelivers). Idempotent,
  // thread-safe; joins the bridge thread. Returns true when everything in
  // flight was settled. Never throws.
  bool stop(Clock::duration timeout);
  // Stops receiving at once and returns; in-flight messages go on to the sink
  // and are acked as they are confirmed. stop() then finishes the job. For
  // callers that wait for the drain in slices (Python, to stay interruptible).
  // Thread-safe, non-blocking.
  void request_stop();
  // The source failed for good (e.g. closed by the broker): the bridge thread
  // ended; last_error() says why. Thread-safe.
  bool failed() const;

 private:
  Bridge(std::shared_ptr<Subscriber> source, std::shared_ptr<Publisher> sink,
         std::shared_ptr<Publisher> dead_letter, BridgeConfig config, BridgeTransform transform,
         char level_separator);
  struct Batch;
  struct KeyPart {
    enum Kind { Literal, Topic, TopicLevel, Key } kind;
    std::string literal;  // Literal
    int level = 0;        // TopicLevel; negative counts from the end
  };
  void run();
  void handle(std::vector<MessagePtr> msgs);
  void send(const std::shared_ptr<Batch>& batch, std::vector<std::size_t> indexes, bool retry);
  void on_batch_done(const std::shared_ptr<Batch>& batch, std::vector<std::size_t> indexes,
                     DeliveryTracker* tracker, bool dead_letter);
  void settle(const std::vector<MessagePtr>& ack, std::size_t settled);
  void dead_letter(const std::shared_ptr<Batch>& batch, std::size_t i, const Error& error);
  std::string map_key(const Message& m) const;
  void note_error(const std::string& what);

  std::shared_ptr<Subscriber> source_;
  std::shared_ptr<Publisher> sink_;
  std::shared_ptr<Publisher> dead_letter_;
  BridgeConfig config_;
  BridgeTransform transform_;
  std::shared_ptr<const Codec> source_codec_;
  std::shared_ptr<const Codec> sink_codec_;
  std::vector<KeyPart> key_parts_;
  char level_separator_;

  std::mutex stop_mu_;  // serializes stop()
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;  // in_flight went down / retries queued / stop
  BridgeStats stats_;
  std::string last_error_;
  bool stopping_ = false;
  bool failed_ = false;
  bool stopped_ = false;
  bool drained_ = false;  // what the first stop() returned
  // Failed sink deliveries waiting for their retry time.
  struct Retry {
    std::shared_ptr<Batch> batch;
    std::vector<std::size_t> indexes;
    Clock::time_point at;
    bool retry;  // a sink failure sent again (false: a first dead-letter send)
  };
  std::vector<Retry> retries_;
  std::minstd_rand retry_rng_{std::random_device{}()};  // guarded by mu_: the retry waits' jitter
  std::thread thread_;
};

}  // namespace omnibus
