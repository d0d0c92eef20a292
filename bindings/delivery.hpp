#pragma once
#include "common.hpp"
#include "omnibus/publisher.hpp"

namespace omnibus::bind {
struct PyDelivery {
  std::shared_ptr<DeliveryTracker> tracker;
};
}  // namespace omnibus::bind
