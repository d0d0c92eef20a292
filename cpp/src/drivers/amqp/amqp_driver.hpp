#pragma once
#include <memory>

namespace omnibus {
class Driver;
// amqp:// on rabbitmq-c, AMQP 0-9-1 (see amqp_driver.cpp for the mapping of
// the URL, options, threads, confirms, acks and errors).
std::shared_ptr<Driver> make_amqp_driver();
std::shared_ptr<Driver> make_amqps_driver();  // AMQP over TLS
}  // namespace omnibus
