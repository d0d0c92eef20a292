#pragma once
#include <string>
// Registers the drivers compiled into this build (see CMake OMNIBUS_WITH_*),
// and records the left-out ones with the reason.
namespace omnibus {
class DriverRegistry;
void register_builtin_drivers(DriverRegistry& registry);
// pulsar://: loads libpulsar from `path` (empty: not found) and registers the
// driver, or records why not as its unavailable reason. Returns "" on success,
// else the reason. Thread-safe; blocks for the dlopen only.
std::string load_pulsar_driver(const std::string& path);
}  // namespace omnibus
