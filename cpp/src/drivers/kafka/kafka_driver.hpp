#pragma once
#include <memory>

namespace omnibus {
class Driver;
// kafka:// on librdkafka (see kafka_driver.cpp for the mapping of options,
// acks and errors).
std::shared_ptr<Driver> make_kafka_driver();
}  // namespace omnibus
