#pragma once
#include <memory>

#include "omnibus/driver.hpp"

namespace omnibus {
// gcppubsub:// (Google Cloud Pub/Sub over gRPC). Thread-safe; opening a sender
// or receiver blocks for its first RPCs (see gcppubsub_driver.cpp).
std::shared_ptr<Driver> make_gcppubsub_driver();
}  // namespace omnibus
