#pragma once
#include <memory>

namespace omnibus {
class Driver;
// nats:// -- core NATS and JetStream through cnats (see nats_driver.cpp for the
// URL, options, threads, how keys and headers travel, and what acks mean).
// Thread-safe, does not block, does not throw.
std::shared_ptr<Driver> make_nats_driver();
}  // namespace omnibus
