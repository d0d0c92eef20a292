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

std::unique_ptr<PendingReply> Sender::request(const OutMessage&) {
  throw Error(ErrorCode::Unsupported, std::string("this protocol has no request-reply; ") + kWhereRequestReply);
}

void Receiver::reply(const Message&, const OutMessage&) {
  throw Error(ErrorCode::Unsupported, std::string("this protocol has no request-reply; ") + kWhereRequestReply);
}

void Message::ack() {
  if (mark_settled() && receiver_) receiver_->ack({ack_id_});
}

void Message::nack() {
  if (!mark_settled()) return;
  try {
    if (receiver_) receiver_->nack({ack_id_});
  } catch (...) {
    // A protocol that cannot nack throws Unsupported; the message stays
    // unsettled so that the caller can still ack it.
    settled_.store(false, std::memory_order_release);
    throw;
  }
}

}  // namespace omnibus
