#include "core/connection_loop.hpp"

namespace omnibus::detail {

ConnectionLoop::ConnectionLoop(std::chrono::milliseconds min, std::chrono::milliseconds max, bool connected)
    : backoff_(min, max), up_(connected) {}

void ConnectionLoop::run(const Steps& steps) {
  while (!steps.stopping()) {
    if (!up_.load(std::memory_order_relaxed)) {
      if (steps.before_attempt) steps.before_attempt();
      try {
        steps.connect();
        backoff_.reset();
        up_.store(true, std::memory_order_relaxed);
      } catch (const Error& e) {
        if (steps.failed) steps.failed(e);
        steps.wait(backoff_.next());
      }
      continue;
    }
    try {
      steps.serve();
    } catch (const Error& e) {
      up_.store(false, std::memory_order_relaxed);
      steps.lost(e);
    }
  }
}

}  // namespace omnibus::detail
