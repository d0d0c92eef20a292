#include "drivers/builtin.hpp"

#include "omnibus/driver.hpp"
#include "drivers/mem/mem_driver.hpp"

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
  registry.add_unavailable("kafka", missing(kafka, "librdkafka", "librdkafka-dev"));
  registry.add_unavailable("mqtt", missing(mqtt, "paho-mqtt-cpp", "libpaho-mqttpp-dev"));
  registry.add_unavailable("amqp", missing(amqp, "rabbitmq-c", "librabbitmq-dev"));
  registry.add_unavailable("nats", missing(nats, "cnats", "libnats-dev"));
}

}  // namespace omnibus
