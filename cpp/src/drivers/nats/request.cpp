// The publisher's side of request-reply on core NATS (request.hpp).

#include "drivers/nats/request.hpp"

#include <cstdlib>
#include <string_view>

namespace omnibus::detail::nats {

void on_reply(natsConnection*, natsSubscription*, natsMsg* raw, void* closure) {
  NatsPtr<natsMsg> msg(raw);
  auto mux = ReplyMuxes::instance().find(closure);
  if (!mux) return;
  std::string_view subject(natsMsg_GetSubject(msg.get()));
  if (subject.size() <= mux->prefix.size() || subject.substr(0, mux->prefix.size()) != mux->prefix) return;
  const std::uint64_t token = std::strtoull(std::string(subject.substr(mux->prefix.size())).c_str(), nullptr, 10);
  const bool no_responders = natsMsg_IsNoResponders(msg.get());
  MessagePtr reply;
  if (!no_responders) {
    OutMessage data = to_out(msg.get());
    if (data.timestamp_ms == 0) data.timestamp_ms = now_ms();
    reply = std::make_shared<Message>(std::move(data), std::string(subject), 1, nullptr, 0);
  }
  std::lock_guard lock(mux->mu);
  auto it = mux->slots.find(token);
  if (it == mux->slots.end() || it->second.reply || it->second.no_responders) return;  // abandoned, or answered
  it->second.reply = std::move(reply);
  it->second.no_responders = no_responders;
  mux->cv.notify_all();
  // Under mu: the slot's owner cannot erase it (and free what fn wakes) meanwhile.
  if (auto ready = std::move(it->second.ready)) ready();
}

NatsPendingReply::~NatsPendingReply() {
  std::lock_guard lock(mux_->mu);
  mux_->slots.erase(token_);
}

MessagePtr NatsPendingReply::wait(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mux_->mu);
  auto& slot = mux_->slots.at(token_);
  mux_->cv.wait_for(lock, timeout, [&] { return slot.reply || slot.no_responders || mux_->closed; });
  if (slot.reply) return slot.reply;
  if (slot.no_responders)
    throw Error(ErrorCode::Timeout,
                context_ + ": no responders: nothing subscribes to the subject, so no reply can come (the server "
                           "said so at once; the request did not wait for its timeout)",
                NATS_NO_RESPONDERS, true);
  if (mux_->closed) throw Error(ErrorCode::Closed, context_ + ": the publisher was closed while the request waited");
  return nullptr;
}

void NatsPendingReply::on_ready(std::function<void()> fn) {
  std::lock_guard lock(mux_->mu);
  auto& slot = mux_->slots.at(token_);
  if (slot.reply || slot.no_responders || mux_->closed)
    fn();
  else
    slot.ready = std::move(fn);
}

}  // namespace omnibus::detail::nats
