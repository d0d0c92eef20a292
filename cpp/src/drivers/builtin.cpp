#include "drivers/builtin.hpp"

#include "omnibus/driver.hpp"
#include "drivers/mem/mem_driver.hpp"
#ifdef OMNIBUS_DRIVER_KAFKA
#include "drivers/kafka/kafka_driver.hpp"
#endif
#ifdef OMNIBUS_DRIVER_MQTT
#include "drivers/mqtt/mqtt_driver.hpp"
#endif
#ifdef OMNIBUS_DRIVER_AMQP
#include "drivers/amqp/amqp_driver.hpp"
#endif
#ifdef OMNIBUS_DRIVER_NATS
#include "drivers/nats/nats_driver.hpp"
#endif
#ifdef OMNIBUS_DRIVER_AWSSQS
#include "drivers/awssqs/awssqs_driver.hpp"
#endif
#ifdef OMNIBUS_DRIVER_PULSAR
#include "drivers/pulsar/pulsar_driver.hpp"
#endif
#ifdef OMNIBUS_DRIVER_GCP
#include "drivers/gcp/gcppubsub_driver.hpp"
#elif defined(OMNIBUS_GCP_MISSING_HEADER)
#include "omnibus_gcp_missing.h"  // written by cmake/gcp.cmake: OMNIBUS_GCP_MISSING, the reason
#endif

namespace omnibus {

namespace {
// The reason a protocol scheme has no driver in this build. The native
// library's presence is decided at configure time (cmake/drivers.cmake).
[[maybe_unused]] std::string missing(bool have_library, const char* library, const char* apt) {
  if (!have_library)
    return std::string(library) + " was not found when omnibus was built (or the driver was turned off with "
           "OMNIBUS_WITH_<NAME>=OFF); install " + apt + " (make deps) and reinstall omnibus";
  return std::string(library) + " was found, but this build had no sources for the driver on it "
         "(cpp/src/drivers/<name>/); build omnibus from a complete source tree";
}
}  // namespace

void register_builtin_drivers(DriverRegistry& registry) {
  registry.add(make_mem_driver());
#ifdef OMNIBUS_DRIVER_KAFKA
  registry.add(make_kafka_driver());
#elif defined(OMNIBUS_HAVE_KAFKA)
  registry.add_unavailable("kafka", missing(true, "librdkafka", "librdkafka-dev"));
#else
  registry.add_unavailable("kafka", missing(false, "librdkafka", "librdkafka-dev"));
#endif
#ifdef OMNIBUS_DRIVER_MQTT
  registry.add(make_mqtt_driver());
  registry.add(make_mqtts_driver());
#elif defined(OMNIBUS_HAVE_MQTT)
  registry.add_unavailable("mqtt", missing(true, "paho-mqtt-cpp", "libpaho-mqttpp-dev"));
  registry.add_unavailable("mqtts", missing(true, "paho-mqtt-cpp", "libpaho-mqttpp-dev"));
#else
  registry.add_unavailable("mqtt", missing(false, "paho-mqtt-cpp", "libpaho-mqttpp-dev"));
  registry.add_unavailable("mqtts", missing(false, "paho-mqtt-cpp", "libpaho-mqttpp-dev"));
#endif
#ifdef OMNIBUS_DRIVER_AMQP
  registry.add(make_amqp_driver());
  registry.add(make_amqps_driver());
#elif defined(OMNIBUS_HAVE_AMQP)
  registry.add_unavailable("amqp", missing(true, "rabbitmq-c", "librabbitmq-dev"));
  registry.add_unavailable("amqps", missing(true, "rabbitmq-c", "librabbitmq-dev"));
#else
  registry.add_unavailable("amqp", missing(false, "rabbitmq-c", "librabbitmq-dev"));
  registry.add_unavailable("amqps", missing(false, "rabbitmq-c", "librabbitmq-dev"));
#endif
#ifdef OMNIBUS_DRIVER_NATS
  registry.add(make_nats_driver());
#elif defined(OMNIBUS_HAVE_NATS)
  registry.add_unavailable("nats", missing(true, "cnats", "libnats-dev"));
#else
  registry.add_unavailable("nats", missing(false, "cnats", "libnats-dev"));
#endif
  // libpulsar is loaded at run time (drivers/pulsar/c_api.hpp): `import omnibus` finds the
  // pulsar-client wheel and calls load_pulsar_driver(), which replaces this reason with the driver.
#ifdef OMNIBUS_DRIVER_PULSAR
  for (const char* scheme : {"pulsar", "pulsar+ssl"})
    registry.add_unavailable(scheme, "libpulsar is not loaded: install the pulsar-client wheel "
                                     "(pip install 'omnibus[pulsar]') and import omnibus from Python, or set "
                                     "OMNIBUS_LIBPULSAR to the library's path");
#else
  for (const char* scheme : {"pulsar", "pulsar+ssl"})
    registry.add_unavailable(scheme, "this build left the pulsar:// driver out (OMNIBUS_WITH_PULSAR=OFF)");
#endif
#ifdef OMNIBUS_DRIVER_AWSSQS
  registry.add(make_awssqs_driver());
  registry.add(make_awssns_driver());
#elif defined(OMNIBUS_HAVE_AWSSQS)
  registry.add_unavailable("awssqs", missing(true, "libcurl", "libcurl4-openssl-dev"));
  registry.add_unavailable("awssns", missing(true, "libcurl", "libcurl4-openssl-dev"));
#else
  registry.add_unavailable("awssqs", missing(false, "libcurl 7.75 or later", "libcurl4-openssl-dev"));
  registry.add_unavailable("awssns", missing(false, "libcurl 7.75 or later", "libcurl4-openssl-dev"));
#endif
#ifdef OMNIBUS_DRIVER_GCP
  registry.add(make_gcppubsub_driver());
#elif defined(OMNIBUS_GCP_MISSING)
  // cmake/gcp.cmake says which of grpc++, protoc or the wheels' protos it missed.
  registry.add_unavailable("gcppubsub", std::string(OMNIBUS_GCP_MISSING) + " when omnibus was built; install it "
                                        "(make deps) and reinstall omnibus");
#else
  registry.add_unavailable("gcppubsub", "this build left the gcppubsub:// driver out (OMNIBUS_WITH_GCP=OFF)");
#endif
}

std::string load_pulsar_driver(const std::string& path) {
#ifdef OMNIBUS_DRIVER_PULSAR
  return register_pulsar_driver(path);
#else
  (void)path;
  return "this build left the pulsar:// driver out (OMNIBUS_WITH_PULSAR=OFF)";
#endif
}

}  // namespace omnibus
