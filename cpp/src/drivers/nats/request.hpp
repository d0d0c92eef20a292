#pragma once
// The publisher's side of request-reply on core NATS: one reply inbox per
// publisher, one wildcard subscription for all its requests, and the handle
// each request waits on (sender.cpp sends the requests; nats_driver.cpp says
// how the driver works).

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "drivers/nats/common.hpp"

namespace omnibus::detail::nats {

// The replies to one publisher's requests. Owns no cnats handle: the reply
// subscription's callback finds it through the registry, and pending
// requests keep it alive after their publisher closed.
struct ReplyMux {
  struct Slot {
    MessagePtr reply;
    bool no_responders = false;
    std::function<void()> ready;  // PendingReply::on_ready, run once settled
  };
  std::string prefix;  // "<inbox>.", the reply subjects' common part
  std::mutex mu;
  std::condition_variable cv;
  std::unordered_map<std::uint64_t, Slot> slots;  // token -> its reply, while the request waits
  std::uint64_t next_token = 1;
  bool closed = false;
};
using ReplyMuxes = Registry<ReplyMux>;

// cnats' subscription thread: hands the reply to its waiting request.
void on_reply(natsConnection*, natsSubscription*, natsMsg* raw, void* closure);

// One request's wait for its reply. Constructed once the request's slot is in
// the mux, before the request is published; destroying it drops the slot.
class NatsPendingReply final : public PendingReply {
 public:
  NatsPendingReply(std::shared_ptr<ReplyMux> mux, std::uint64_t token, std::string context)
      : mux_(std::move(mux)), token_(token), context_(std::move(context)) {}
  ~NatsPendingReply() override;

  MessagePtr wait(std::chrono::milliseconds timeout) override;
  void on_ready(std::function<void()> fn) override;

 private:
  std::shared_ptr<ReplyMux> mux_;
  std::uint64_t token_;
  std::string context_;
};

}  // namespace omnibus::detail::nats
