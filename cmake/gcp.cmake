# The gcppubsub:// driver (cpp/src/drivers/gcp). Left out, with the reason,
# when grpc++, protoc, grpc_cpp_plugin or the wheels' .proto files are missing.
option(OMNIBUS_WITH_GCP "Build the gcppubsub:// driver (needs grpc++ and the protos of google-cloud-pubsub)"
       ${omnibus_driver_default})

# The Python whose site-packages hold the wheels: the one building the
# extension, else the worktree's .venv, else any python3.
set(OMNIBUS_GCP_PYTHON "" CACHE FILEPATH "Python with google-cloud-pubsub and googleapis-common-protos installed")

function(omnibus_gcp_driver)
  if(NOT OMNIBUS_WITH_GCP)
    message(STATUS "omnibus: gcppubsub:// driver disabled (OMNIBUS_WITH_GCP=OFF)")
    return()
  endif()
  set(why "")
  if(PKG_CONFIG_FOUND)
    pkg_check_modules(OMNIBUS_GRPC QUIET IMPORTED_TARGET grpc++ protobuf)
  endif()
  find_program(OMNIBUS_PROTOC protoc)
  find_program(OMNIBUS_GRPC_CPP_PLUGIN grpc_cpp_plugin)
  if(NOT OMNIBUS_GRPC_FOUND)
    set(why "grpc++ or protobuf not found by pkg-config (libgrpc++-dev libprotobuf-dev)")
  elseif(NOT OMNIBUS_PROTOC OR NOT OMNIBUS_GRPC_CPP_PLUGIN)
    set(why "protoc or grpc_cpp_plugin not found (protobuf-compiler protobuf-compiler-grpc)")
  endif()
  # The well-known types (google/protobuf/*.proto) come with libprotobuf-dev.
  find_path(OMNIBUS_PROTOBUF_INCLUDE google/protobuf/duration.proto PATHS /usr/include /usr/local/include)

  set(py "${OMNIBUS_GCP_PYTHON}")
  if(NOT py AND Python_EXECUTABLE)
    set(py "${Python_EXECUTABLE}")
  endif()
  if(NOT py AND EXISTS "${PROJECT_SOURCE_DIR}/.venv/bin/python")
    set(py "${PROJECT_SOURCE_DIR}/.venv/bin/python")
  endif()
  if(NOT py)
    find_program(py python3)
  endif()
  if(NOT why)
    # Searching sys.path for the files, rather than importing the packages:
    # the protos are all that is needed, and the import is slow.
    execute_process(
      COMMAND "${py}" -c [=[
import os, sys
def find(rel):
    for p in sys.path:
        if p and os.path.isfile(os.path.join(p, rel)):
            return p
    return ""
print(find("google/cloud/pubsub_v1/proto/pubsub.proto") + ";" + find("google/api/annotations.proto"))
]=]
      OUTPUT_VARIABLE roots OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc)
    list(LENGTH roots n)
    if(NOT rc EQUAL 0 OR NOT n EQUAL 2)
      set(why "${py} could not be asked for the protos")
    else()
      list(GET roots 0 pubsub_root)
      list(GET roots 1 api_root)
      if(NOT pubsub_root)
        set(why "google/cloud/pubsub_v1/proto/pubsub.proto not found in ${py}'s site-packages \
(the google-cloud-pubsub wheel: pip install 'omnibus[gcp]')")
      elseif(NOT api_root)
        set(why "google/api/annotations.proto not found in ${py}'s site-packages \
(the googleapis-common-protos wheel: pip install 'omnibus[gcp]')")
      elseif(NOT OMNIBUS_PROTOBUF_INCLUDE)
        set(why "google/protobuf/duration.proto not found (libprotobuf-dev)")
      endif()
    endif()
  endif()
  if(why)
    message(WARNING "omnibus: ${why}; the gcppubsub:// driver is left out. Install it (make deps) and rebuild.")
    # The reason goes to builtin.cpp in a header: quotes and brackets do not
    # survive a -D definition on every generator.
    string(REPLACE "\\" "\\\\" text "${why}")
    string(REPLACE "\"" "\\\"" text "${text}")
    file(WRITE ${CMAKE_BINARY_DIR}/gcp_missing/omnibus_gcp_missing.h "#define OMNIBUS_GCP_MISSING \"${text}\"\n")
    target_include_directories(omnibus_core PRIVATE ${CMAKE_BINARY_DIR}/gcp_missing)
    target_compile_definitions(omnibus_core PRIVATE OMNIBUS_GCP_MISSING_HEADER=1)
    return()
  endif()
  message(STATUS "omnibus: gcppubsub:// with grpc++ ${OMNIBUS_GRPC_grpc++_VERSION}, protos from ${pubsub_root}")

  # The wheel keeps pubsub.proto under google/cloud/pubsub_v1/proto/, but it
  # imports google/pubsub/v1/schema.proto: the two are staged in the build
  # tree at the path their package names.
  set(stage ${CMAKE_BINARY_DIR}/gcp_protos)
  set(gen ${CMAKE_BINARY_DIR}/gcp_gen)
  set(api_protos annotations client field_behavior resource http launch_stage)
  set(outputs "")
  set(proto_files "")
  foreach(p pubsub schema)
    set(src ${pubsub_root}/google/cloud/pubsub_v1/proto/${p}.proto)
    set(dst ${stage}/google/pubsub/v1/${p}.proto)
    add_custom_command(OUTPUT ${dst} COMMAND ${CMAKE_COMMAND} -E copy ${src} ${dst} DEPENDS ${src}
                       COMMENT "Staging google/pubsub/v1/${p}.proto from the google-cloud-pubsub wheel")
    list(APPEND proto_files ${dst})
    list(APPEND outputs ${gen}/google/pubsub/v1/${p}.pb.cc ${gen}/google/pubsub/v1/${p}.grpc.pb.cc)
  endforeach()
  set(api_files "")
  foreach(p ${api_protos})
    list(APPEND api_files ${api_root}/google/api/${p}.proto)
    list(APPEND outputs ${gen}/google/api/${p}.pb.cc)
  endforeach()
  add_custom_command(
    OUTPUT ${outputs}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${gen}
    COMMAND ${OMNIBUS_PROTOC} -I${stage} -I${api_root} -I${OMNIBUS_PROTOBUF_INCLUDE} --cpp_out=${gen}
            --grpc_out=${gen} --plugin=protoc-gen-grpc=${OMNIBUS_GRPC_CPP_PLUGIN}
            ${stage}/google/pubsub/v1/pubsub.proto ${stage}/google/pubsub/v1/schema.proto
    COMMAND ${OMNIBUS_PROTOC} -I${api_root} -I${OMNIBUS_PROTOBUF_INCLUDE} --cpp_out=${gen} ${api_files}
    DEPENDS ${proto_files} ${api_files}
    COMMENT "Generating the Pub/Sub gRPC stubs with protoc")
  # Generated code is compiled apart from omnibus_core: without our warnings.
  add_library(omnibus_gcp_protos STATIC ${outputs})
  target_include_directories(omnibus_gcp_protos PUBLIC ${gen})
  target_link_libraries(omnibus_gcp_protos PUBLIC PkgConfig::OMNIBUS_GRPC)

  file(GLOB sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/cpp/src/drivers/gcp/*.cpp)
  list(FILTER sources EXCLUDE REGEX "/envelope\\.cpp$")
  target_sources(omnibus_core PRIVATE ${sources})
  target_link_libraries(omnibus_core PUBLIC omnibus_gcp_protos)
  target_compile_definitions(omnibus_core PRIVATE OMNIBUS_HAVE_GCP=1 OMNIBUS_DRIVER_GCP=1)
endfunction()
omnibus_gcp_driver()
