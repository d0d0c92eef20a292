# One block per protocol driver. A driver whose native library is missing is
# left out with a message; its URL scheme then raises omnibus.Unsupported with
# the reason (see cpp/src/drivers/builtin.cpp).
find_package(PkgConfig QUIET)

# A fuzz build (OMNIBUS_BUILD_FUZZ) exercises the portable layer only: drivers
# default to OFF there, and -DOMNIBUS_WITH_<NAME>=ON still adds one.
if(OMNIBUS_BUILD_FUZZ)
  set(omnibus_driver_default OFF)
else()
  set(omnibus_driver_default ON)
endif()

# pkg is a pkg-config module, or "cmake:Package" for a CMake config package;
# target is what to link (the pkg-config imported target when empty).
# The driver is compiled when its library is found and cpp/src/drivers/<name>/
# has sources; builtin.cpp then registers it (OMNIBUS_DRIVER_<NAME>).
function(omnibus_driver name pkg apt target)
  string(TOUPPER ${name} upper)
  option(OMNIBUS_WITH_${upper} "Build the ${name}:// driver (needs ${pkg})" ${omnibus_driver_default})
  set(found OFF)
  if(OMNIBUS_WITH_${upper} AND pkg MATCHES "^cmake:(.*)$")
    set(package ${CMAKE_MATCH_1})
    find_package(${package} QUIET CONFIG)
    if(${package}_FOUND)
      set(found ON)
      set(OMNIBUS_${upper}_VERSION ${${package}_VERSION})
    endif()
  elseif(OMNIBUS_WITH_${upper} AND PKG_CONFIG_FOUND)
    pkg_check_modules(OMNIBUS_${upper} QUIET IMPORTED_TARGET ${pkg})
    if(OMNIBUS_${upper}_FOUND)
      set(found ON)
    endif()
  endif()
  if(found)
    message(STATUS "omnibus: ${name}:// native library ${pkg} ${OMNIBUS_${upper}_VERSION} found")
    target_compile_definitions(omnibus_core PRIVATE OMNIBUS_HAVE_${upper}=1)
    file(GLOB sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/cpp/src/drivers/${name}/*.cpp)
    # envelope.cpp needs no native library: CMakeLists.txt always builds it.
    list(FILTER sources EXCLUDE REGEX "/envelope\\.cpp$")
    if(sources)
      if(NOT target)
        set(target PkgConfig::OMNIBUS_${upper})
      endif()
      target_sources(omnibus_core PRIVATE ${sources})
      target_link_libraries(omnibus_core PUBLIC ${target})
      target_compile_definitions(omnibus_core PRIVATE OMNIBUS_DRIVER_${upper}=1)
    endif()
  elseif(OMNIBUS_WITH_${upper})
    message(WARNING "omnibus: ${pkg} not found; the ${name}:// driver is left out. "
                    "Install ${apt} (make deps) and rebuild.")
  else()
    message(STATUS "omnibus: ${name}:// driver disabled (OMNIBUS_WITH_${upper}=OFF)")
  endif()
endfunction()

# Debian's cnats CMake config is broken; pkg-config 'libnats' works.
omnibus_driver(kafka rdkafka librdkafka-dev "")
# core/tls_probe.cpp: OpenSSL's own reason for a failed handshake, which Paho does not give and
# librdkafka and rabbitmq-c give only in part. mqtt:// needs it; kafka:// and amqp:// use it when
# it is there (OMNIBUS_HAVE_TLS_PROBE).
find_package(OpenSSL QUIET)
if(OpenSSL_FOUND)
  target_sources(omnibus_core PRIVATE ${PROJECT_SOURCE_DIR}/cpp/src/core/tls_probe.cpp)
  target_link_libraries(omnibus_core PUBLIC OpenSSL::SSL)
  target_compile_definitions(omnibus_core PRIVATE OMNIBUS_HAVE_TLS_PROBE=1)
  omnibus_driver(mqtt cmake:PahoMqttCpp libpaho-mqttpp-dev PahoMqttCpp::paho-mqttpp3)
else()
  message(WARNING "omnibus: OpenSSL not found; the mqtt:// driver is left out. Install libssl-dev (make deps).")
endif()
omnibus_driver(amqp librabbitmq librabbitmq-dev "")
omnibus_driver(nats libnats libnats-dev "")
# awssqs:// (and awssns://): HTTP and SigV4 signing by libcurl (7.75 or later).
omnibus_driver(awssqs "libcurl>=7.75" libcurl4-openssl-dev "")

# pulsar:// needs no library at build time: libpulsar (from the pulsar-client
# wheel) is loaded with dlopen at run time, so only libdl is linked here and a
# missing wheel makes the scheme unavailable with the reason, not the build fail.
option(OMNIBUS_WITH_PULSAR "Build the pulsar:// driver (loads libpulsar from the pulsar-client wheel at run time)"
       ${omnibus_driver_default})
if(OMNIBUS_WITH_PULSAR)
  target_sources(omnibus_core PRIVATE ${PROJECT_SOURCE_DIR}/cpp/src/drivers/pulsar/pulsar_driver.cpp
                                      ${PROJECT_SOURCE_DIR}/cpp/src/drivers/pulsar/c_api.cpp)
  target_link_libraries(omnibus_core PUBLIC ${CMAKE_DL_LIBS})
  target_compile_definitions(omnibus_core PRIVATE OMNIBUS_DRIVER_PULSAR=1)
else()
  message(STATUS "omnibus: pulsar:// driver disabled (OMNIBUS_WITH_PULSAR=OFF)")
endif()

# gcppubsub:// on gRPC: grpc++ and protobuf from Debian, and C++ stubs that
# protoc and grpc_cpp_plugin generate at build time from the .proto files in
# Google's wheels (google-cloud-pubsub ships google/pubsub/v1 as
# google/cloud/pubsub_v1/proto/, googleapis-common-protos ships google/api),
# so that no generated or copied proto lives in this repository.
include(${CMAKE_CURRENT_LIST_DIR}/gcp.cmake)
