#pragma once
// Messages on the way out (OutMessage) and on the way in (Message).

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace omnibus {

// Payloads are immutable and shared: a published payload reaches every
// subscriber (and Python, as a read-only buffer) without a copy.
using Bytes = std::shared_ptr<const std::string>;
// Ordered multimap: a name may repeat, order is kept end to end.
using Headers = std::vector<std::pair<std::string, std::string>>;

Bytes make_bytes(std::string s);

// Wall clock in milliseconds since the Unix epoch.
std::int64_t now_ms() noexcept;

struct OutMessage {
  Bytes payload;
  std::optional<std::string> key;
  Headers headers;
  std::int64_t timestamp_ms = 0;  // 0: stamped by the publisher at enqueue

  std::size_t size_bytes() const noexcept;  // payload + key + headers, for batching limits
};

class Receiver;

// A received message. Shared between the subscriber's buffer and the user;
// ack()/nack() are thread-safe and settle the message once (later calls are
// no-ops, so an already-acked message can be acked again harmlessly). A
// message that an auto_ack subscriber acked on hand-over cannot be nacked:
// nack() throws instead of doing nothing, since it would never come again.
class Message {
 public:
  // `reply_to`: the requester's reply address when the message was sent with
  // Publisher::request, else empty.
  Message(OutMessage data, std::string topic, std::uint32_t delivery_attempt,
          std::shared_ptr<Receiver> receiver, std::uint64_t ack_id, std::string reply_to = {});

  const OutMessage& data() const noexcept { return data_; }
  const std::string& payload() const noexcept { return *data_.payload; }
  const Bytes& payload_ptr() const noexcept { return data_.payload; }
  const std::optional<std::string>& key() const noexcept { return data_.key; }
  const Headers& headers() const noexcept { return data_.headers; }
  const std::string& topic() const noexcept { return topic_; }
  std::int64_t timestamp_ms() const noexcept { return data_.timestamp_ms; }
  // 1 on first delivery, incremented on each redelivery.
  std::uint32_t delivery_attempt() const noexcept { return attempt_; }
  std::uint64_t ack_id() const noexcept { return ack_id_; }
  const std::shared_ptr<Receiver>& receiver() const noexcept { return receiver_; }
  // Where the sender waits for a reply (an inbox subject); empty when the
  // message was published, not requested.
  const std::string& reply_to() const noexcept { return reply_to_; }

  // Acknowledge / negatively acknowledge (redeliver where the driver can).
  // Non-blocking for mem://; may block briefly on a network driver. Throws
  // Closed when the subscriber was closed, Unsupported (nack) when the
  // protocol cannot redeliver. ack() of an auto-acked message is a no-op (it
  // is acked, as asked); nack() of one throws InvalidArgument
  // (check_nackable()).
  void ack();
  void nack();
  // True once ack() or nack() ran (or the subscriber auto-acked it).
  bool settled() const noexcept { return state_.load(std::memory_order_acquire) != kUnsettled; }
  // True when an auto_ack subscriber acked it on hand-over.
  bool auto_acked() const noexcept { return state_.load(std::memory_order_acquire) == kAutoAcked; }
  // Marks the message settled without telling the driver; returns false when
  // it already was. Used by batch ack paths.
  bool mark_settled() noexcept { return claim(kSettled); }
  // As mark_settled(), remembering that the subscriber settled it on
  // hand-over (auto_ack), not the application.
  bool mark_auto_acked() noexcept { return claim(kAutoAcked); }
  // Throws InvalidArgument when the message was auto-acked (a nack could not
  // bring it back), or Unsupported first when the protocol cannot nack at
  // all, so that the advice in the error holds. Used before any nack.
  void check_nackable() const;
  // Answers a request: sends `reply` to reply_to() through the receiver this
  // message came from. Independent of ack (a reply does not settle the
  // message). Thread-safe; may block briefly on a network driver. Throws
  // InvalidArgument when the message has no reply address (it was published,
  // not requested), Closed when the subscriber was closed, Unsupported when
  // the protocol has no request-reply. A zero timestamp_ms is stamped now.
  void reply(OutMessage reply) const;

 private:
  OutMessage data_;
  std::string topic_;
  std::uint32_t attempt_;
  std::shared_ptr<Receiver> receiver_;
  std::uint64_t ack_id_;
  std::string reply_to_;

  static constexpr std::uint8_t kUnsettled = 0, kSettled = 1, kAutoAcked = 2;
  bool claim(std::uint8_t to) noexcept {
    std::uint8_t expected = kUnsettled;
    return state_.compare_exchange_strong(expected, to, std::memory_order_acq_rel);
  }
  std::atomic<std::uint8_t> state_{kUnsettled};
};

using MessagePtr = std::shared_ptr<Message>;

}  // namespace omnibus
