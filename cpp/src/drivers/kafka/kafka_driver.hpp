#pragma once
#include <memory>

namespace omnibus {
class Driver;
// kafka:// on librdkafka (README.md, "### kafka://", for the URL, options and
// what acks mean; kafka_driver.cpp for why it works as it does and its pieces).
std::shared_ptr<Driver> make_kafka_driver();
}  // namespace omnibus
