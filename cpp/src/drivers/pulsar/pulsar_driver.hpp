#pragma once
#include <memory>
#include <string>

namespace omnibus {
class Driver;
// pulsar:// on libpulsar's C API (see pulsar_driver.cpp for the mapping of
// subscriptions, acks and errors). Valid only after register_pulsar_driver()
// succeeded.
std::shared_ptr<Driver> make_pulsar_driver();
// Loads libpulsar from `path` (empty: not found) and registers pulsar:// in
// DriverRegistry::instance(); when that fails, records the reason as the
// scheme's unavailable reason and returns it (empty on success). Thread-safe;
// a second call after a success does nothing. Blocks for the dlopen only.
std::string register_pulsar_driver(const std::string& path);
}  // namespace omnibus
