#pragma once
#include <memory>

namespace omnibus {
class Driver;
// mqtt:// -- MQTT 3.1.1 and 5 through paho-mqtt-cpp (see mqtt_driver.cpp for
// the URL, options, threads, how keys and headers travel, and what acks mean).
// Thread-safe, does not block, does not throw.
std::shared_ptr<Driver> make_mqtt_driver();
// mqtts:// -- the same over TLS (tls_ca, tls_cert, tls_key, tls_verify).
std::shared_ptr<Driver> make_mqtts_driver();
}  // namespace omnibus
