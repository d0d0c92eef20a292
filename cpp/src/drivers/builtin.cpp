#include "drivers/builtin.hpp"

#include "omnibus/driver.hpp"
#include "drivers/mem/mem_driver.hpp"
#ifdef OMNIBUS_DRIVER_KAFKA
#include "drivers/kafka/kafka_driver.hpp"
#endif
#ifdef OMNIBUS_DRIVER_MQTT
#include "drivers/mqtt/mqtt_driver.hpp"
#endif

namespace omnibus {

namespace {
// The reason a protocol scheme has no driver in this build. The native
// library's presence is decided at configure time (cmake/drivers.cmake).
std::string missing(bool have_library, const char* library, const char* apt) {
  if (!have_library)
    return std::string(library) + " was not found when omnibus was built; install " + apt +
           " (make deps) and reinstall omnibus";
  return std::string("the driver on ") + library + " is not implemented yet (see the project's open issues)";
}
}  // namespace

void register_builtin_drivers(DriverRegistry& registry) {
  registry.add(make_mem_driver());
#ifdef OMNIBUS_HAVE_KAFKA
  constexpr bool kafka = true;
#else
  constexpr bool kafka = false;
#endif
#ifdef OMNIBUS_HAVE_MQTT
  constexpr bool mqtt = true;
#else
  constexpr bool mqtt = false;
#endif
#ifdef OMNIBUS_HAVE_AMQP
  constexpr bool amqp = true;
#else
  constexpr bool amqp = false;
#endif
#ifdef OMNIBUS_HAVE_NATS
  constexpr bool nats = true;
#else
  constexpr bool nats = false;
#endif
#ifdef OMNIBUS_DRIVER_KAFKA
  registry.add(make_kafka_driver());
#else
  registry.add_unavailable("kafka", missing(kafka, "librdkafka", "librdkafka-dev"));
#endif
#ifdef OMNIBUS_DRIVER_MQTT
  registry.add(make_mqtt_driver());
#else
  registry.add_unavailable("mqtt", missing(mqtt, "paho-mqtt-cpp", "libpaho-mqttpp-dev"));
#endif
  registry.add_unavailable("amqp", missing(amqp, "rabbitmq-c", "librabbitmq-dev"));
  registry.add_unavailable("nats", missing(nats, "cnats", "libnats-dev"));
}

}  // namespace omnibus
