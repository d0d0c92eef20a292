#pragma once
#include <memory>

namespace omnibus {
class Driver;
// nats:// -- core NATS and JetStream through cnats (README.md, "### nats://",
// for the URL, options and what acks mean; nats_driver.cpp for why it works
// as it does, its threads and its pieces).
// Thread-safe, does not block, does not throw.
std::shared_ptr<Driver> make_nats_driver();
}  // namespace omnibus
