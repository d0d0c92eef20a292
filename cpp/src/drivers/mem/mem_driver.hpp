#pragma once
#include <memory>

namespace omnibus {
class Driver;
// The in-process broker behind mem://. Reference driver: copy this one when
// adding a protocol (see cpp/src/drivers/README.md).
std::shared_ptr<Driver> make_mem_driver();
}  // namespace omnibus
