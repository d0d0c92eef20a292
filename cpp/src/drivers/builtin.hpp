#pragma once
// Registers the drivers compiled into this build (see CMake OMNIBUS_WITH_*),
// and records the left-out ones with the reason.
namespace omnibus {
class DriverRegistry;
void register_builtin_drivers(DriverRegistry& registry);
}  // namespace omnibus
