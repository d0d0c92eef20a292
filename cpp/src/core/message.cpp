#include "omnibus/message.hpp"

#include <chrono>

#include "omnibus/driver.hpp"

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
                 std::shared_ptr<Receiver> receiver, std::uint64_t ack_id)
    : data_(std::move(data)),
      topic_(std::move(topic)),
      attempt_(delivery_attempt),
      receiver_(std::move(receiver)),
      ack_id_(ack_id) {}

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
