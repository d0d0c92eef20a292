#include "omnibus/message.hpp"

#include <chrono>

#include "omnibus/driver.hpp"
#include "omnibus/error.hpp"

namespace omnibus {

Bytes make_bytes(std::string s) { return std::make_shared<const std::string>(std::move(s)); }

std::int64_t now_ms() noexcept {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

std::size_t OutMessage::size_bytes() const noexcept {
  std::size_t n = payload ? payload->size() : 0;
  if (key) n += key->size();
  for (const auto& [k, v] : headers) n += k.size() + v.size();
  return n;
}

Message::Message(OutMessage data, std::string topic, std::uint32_t delivery_attempt,
                 std::shared_ptr<Receiver> receiver, std::uint64_t ack_id, std::string reply_to)
    : data_(std::move(data)),
      topic_(std::move(topic)),
      attempt_(delivery_attempt),
      receiver_(std::move(receiver)),
      ack_id_(ack_id),
      reply_to_(std::move(reply_to)) {}

namespace {
constexpr const char* kWhereRequestReply =
    "request-reply needs nats:// core (without stream=) or mem:// (capabilities()['request_reply'])";
}

void Message::reply(OutMessage reply) const {
  if (reply_to_.empty()) {
    if (receiver_ && !receiver_->capabilities().request_reply)
      throw Error(ErrorCode::Unsupported, "cannot reply to a message on " + printable(topic_) +
                                              ": this protocol has no request-reply; " + kWhereRequestReply);
    throw Error(ErrorCode::InvalidArgument,
                "cannot reply to a message on " + printable(topic_) +
                    ": it has no reply address (it was sent with publish(), not request(); check msg.reply_to)");
  }
  if (!receiver_)
    throw Error(ErrorCode::InvalidArgument, "cannot reply to a reply (message on " + printable(topic_) + ")");
  if (!reply.payload) throw Error(ErrorCode::InvalidArgument, "reply has no payload");
  if (reply.timestamp_ms == 0) reply.timestamp_ms = now_ms();
  receiver_->reply(*this, reply);
}

std::unique_ptr<PendingReply> Sender::request(const OutMessage&, bool) {
  throw Error(ErrorCode::Unsupported, std::string("this protocol has no request-reply; ") + kWhereRequestReply);
}

void Receiver::reply(const Message&, const OutMessage&) {
  throw Error(ErrorCode::Unsupported, std::string("this protocol has no request-reply; ") + kWhereRequestReply);
}

void Message::ack() {
  if (mark_settled() && receiver_) receiver_->ack({ack_id_});
}

void Message::check_nackable() const {
  if (!auto_acked()) return;
  // Where the protocol has no nack at all, auto_ack=False would not help:
  // say what the receiver itself says for any message.
  if (receiver_ && !receiver_->capabilities().nack)
    throw Error(ErrorCode::Unsupported,
                "nack is not supported by this protocol/configuration (capabilities().nack is False); "
                "the message on " + printable(topic_) + " was acked when the subscriber handed it over (auto_ack)");
  throw Error(ErrorCode::InvalidArgument,
              "cannot nack the message on " + printable(topic_) +
                  ": its subscriber has auto_ack=True, so it was acked when handed over and will not be "
                  "delivered again; open the subscriber with auto_ack=False to ack()/nack() messages yourself "
                  "and get nacked ones redelivered");
}

void Message::nack() {
  check_nackable();
  if (!mark_settled()) return;
  try {
    if (receiver_) receiver_->nack({ack_id_});
  } catch (...) {
    // A protocol that cannot nack throws Unsupported; the message stays
    // unsettled so that the caller can still ack it.
    state_.store(kUnsettled, std::memory_order_release);
    throw;
  }
}

}  // namespace omnibus
