#include "drivers/pulsar/c_api.hpp"

#include <dlfcn.h>

#include <mutex>

namespace omnibus::detail::pulsar {

namespace {
Api g_api{};
std::string g_path;
bool g_loaded = false;
std::mutex g_mu;

template <typename F>
bool resolve(void* lib, const char* name, F& fn, std::string& error) {
  void* sym = dlsym(lib, name);
  if (!sym) {
    if (error.empty()) error = std::string("libpulsar at ") + g_path + " lacks " + name + " (a pulsar-client older than the pinned one?)";
    return false;
  }
  fn = reinterpret_cast<F>(sym);
  return true;
}
}  // namespace

std::string load(const std::string& path) {
  std::lock_guard lock(g_mu);
  if (g_loaded) return {};
  if (path.empty()) return "libpulsar was not found: install the pulsar-client wheel (pip install 'omnibus[pulsar]')";
  // Never unloaded: its threads and atexit handlers must find their code.
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char* e = dlerror();
    return std::string("dlopen of libpulsar failed: ") + (e ? e : "unknown error");
  }
  g_path = path;
  std::string error;
  Api a{};
#define OMNIBUS_PULSAR_FN(field, symbol) resolve(lib, symbol, a.field, error)
  OMNIBUS_PULSAR_FN(result_str, "pulsar_result_str");
  OMNIBUS_PULSAR_FN(client_configuration_create, "pulsar_client_configuration_create");
  OMNIBUS_PULSAR_FN(client_configuration_free, "pulsar_client_configuration_free");
  OMNIBUS_PULSAR_FN(client_configuration_set_operation_timeout_seconds, "pulsar_client_configuration_set_operation_timeout_seconds");
  OMNIBUS_PULSAR_FN(client_configuration_set_io_threads, "pulsar_client_configuration_set_io_threads");
  OMNIBUS_PULSAR_FN(client_configuration_set_message_listener_threads, "pulsar_client_configuration_set_message_listener_threads");
  OMNIBUS_PULSAR_FN(client_configuration_set_logger_t, "pulsar_client_configuration_set_logger_t");
  OMNIBUS_PULSAR_FN(client_configuration_set_stats_interval_in_seconds, "pulsar_client_configuration_set_stats_interval_in_seconds");
  OMNIBUS_PULSAR_FN(client_configuration_set_auth, "pulsar_client_configuration_set_auth");
  OMNIBUS_PULSAR_FN(client_configuration_set_tls_trust_certs_file_path,
                    "pulsar_client_configuration_set_tls_trust_certs_file_path");
  OMNIBUS_PULSAR_FN(client_configuration_set_tls_certificate_file_path,
                    "pulsar_client_configuration_set_tls_certificate_file_path");
  OMNIBUS_PULSAR_FN(client_configuration_set_tls_private_key_file_path,
                    "pulsar_client_configuration_set_tls_private_key_file_path");
  OMNIBUS_PULSAR_FN(client_configuration_set_tls_allow_insecure_connection,
                    "pulsar_client_configuration_set_tls_allow_insecure_connection");
  OMNIBUS_PULSAR_FN(client_configuration_set_validate_hostname, "pulsar_client_configuration_set_validate_hostname");
  OMNIBUS_PULSAR_FN(authentication_token_create, "pulsar_authentication_token_create");
  OMNIBUS_PULSAR_FN(authentication_free, "pulsar_authentication_free");
  OMNIBUS_PULSAR_FN(client_create, "pulsar_client_create");
  OMNIBUS_PULSAR_FN(client_create_producer, "pulsar_client_create_producer");
  OMNIBUS_PULSAR_FN(client_subscribe, "pulsar_client_subscribe");
  OMNIBUS_PULSAR_FN(client_close, "pulsar_client_close");
  OMNIBUS_PULSAR_FN(client_free, "pulsar_client_free");
  OMNIBUS_PULSAR_FN(producer_configuration_create, "pulsar_producer_configuration_create");
  OMNIBUS_PULSAR_FN(producer_configuration_free, "pulsar_producer_configuration_free");
  OMNIBUS_PULSAR_FN(producer_configuration_set_send_timeout, "pulsar_producer_configuration_set_send_timeout");
  OMNIBUS_PULSAR_FN(producer_configuration_set_compression_type, "pulsar_producer_configuration_set_compression_type");
  OMNIBUS_PULSAR_FN(producer_configuration_set_max_pending_messages, "pulsar_producer_configuration_set_max_pending_messages");
  OMNIBUS_PULSAR_FN(producer_configuration_set_block_if_queue_full, "pulsar_producer_configuration_set_block_if_queue_full");
  OMNIBUS_PULSAR_FN(producer_configuration_set_batching_enabled, "pulsar_producer_configuration_set_batching_enabled");
  OMNIBUS_PULSAR_FN(producer_configuration_set_batching_max_messages, "pulsar_producer_configuration_set_batching_max_messages");
  OMNIBUS_PULSAR_FN(producer_configuration_set_batching_max_publish_delay_ms, "pulsar_producer_configuration_set_batching_max_publish_delay_ms");
  OMNIBUS_PULSAR_FN(producer_send_async, "pulsar_producer_send_async");
  OMNIBUS_PULSAR_FN(producer_flush, "pulsar_producer_flush");
  OMNIBUS_PULSAR_FN(producer_close, "pulsar_producer_close");
  OMNIBUS_PULSAR_FN(producer_free, "pulsar_producer_free");
  OMNIBUS_PULSAR_FN(producer_is_connected, "pulsar_producer_is_connected");
  OMNIBUS_PULSAR_FN(consumer_configuration_create, "pulsar_consumer_configuration_create");
  OMNIBUS_PULSAR_FN(consumer_configuration_free, "pulsar_consumer_configuration_free");
  OMNIBUS_PULSAR_FN(consumer_configuration_set_consumer_type, "pulsar_consumer_configuration_set_consumer_type");
  OMNIBUS_PULSAR_FN(consumer_configuration_set_receiver_queue_size, "pulsar_consumer_configuration_set_receiver_queue_size");
  OMNIBUS_PULSAR_FN(consumer_set_unacked_messages_timeout_ms, "pulsar_consumer_set_unacked_messages_timeout_ms");
  OMNIBUS_PULSAR_FN(configure_set_negative_ack_redelivery_delay_ms, "pulsar_configure_set_negative_ack_redelivery_delay_ms");
  OMNIBUS_PULSAR_FN(consumer_set_subscription_initial_position, "pulsar_consumer_set_subscription_initial_position");
  OMNIBUS_PULSAR_FN(consumer_configuration_set_batch_index_ack_enabled, "pulsar_consumer_configuration_set_batch_index_ack_enabled");
  OMNIBUS_PULSAR_FN(consumer_configuration_set_dlq_policy, "pulsar_consumer_configuration_set_dlq_policy");
  OMNIBUS_PULSAR_FN(consumer_receive_with_timeout, "pulsar_consumer_receive_with_timeout");
  OMNIBUS_PULSAR_FN(consumer_acknowledge_async_id, "pulsar_consumer_acknowledge_async_id");
  OMNIBUS_PULSAR_FN(consumer_negative_acknowledge_id, "pulsar_consumer_negative_acknowledge_id");
  OMNIBUS_PULSAR_FN(consumer_unsubscribe, "pulsar_consumer_unsubscribe");
  OMNIBUS_PULSAR_FN(consumer_close, "pulsar_consumer_close");
  OMNIBUS_PULSAR_FN(consumer_free, "pulsar_consumer_free");
  OMNIBUS_PULSAR_FN(consumer_is_connected, "pulsar_consumer_is_connected");
  OMNIBUS_PULSAR_FN(message_create, "pulsar_message_create");
  OMNIBUS_PULSAR_FN(message_free, "pulsar_message_free");
  OMNIBUS_PULSAR_FN(message_set_allocated_content, "pulsar_message_set_allocated_content");
  OMNIBUS_PULSAR_FN(message_set_property, "pulsar_message_set_property");
  OMNIBUS_PULSAR_FN(message_set_partition_key, "pulsar_message_set_partition_key");
  OMNIBUS_PULSAR_FN(message_set_event_timestamp, "pulsar_message_set_event_timestamp");
  OMNIBUS_PULSAR_FN(message_get_properties, "pulsar_message_get_properties");
  OMNIBUS_PULSAR_FN(message_get_data, "pulsar_message_get_data");
  OMNIBUS_PULSAR_FN(message_get_length, "pulsar_message_get_length");
  OMNIBUS_PULSAR_FN(message_get_message_id, "pulsar_message_get_message_id");
  OMNIBUS_PULSAR_FN(message_get_partitionKey, "pulsar_message_get_partitionKey");
  OMNIBUS_PULSAR_FN(message_has_partition_key, "pulsar_message_has_partition_key");
  OMNIBUS_PULSAR_FN(message_get_publish_timestamp, "pulsar_message_get_publish_timestamp");
  OMNIBUS_PULSAR_FN(message_get_event_timestamp, "pulsar_message_get_event_timestamp");
  OMNIBUS_PULSAR_FN(message_get_redelivery_count, "pulsar_message_get_redelivery_count");
  OMNIBUS_PULSAR_FN(message_id_free, "pulsar_message_id_free");
  OMNIBUS_PULSAR_FN(message_id_str, "pulsar_message_id_str");
  OMNIBUS_PULSAR_FN(string_map_free, "pulsar_string_map_free");
  OMNIBUS_PULSAR_FN(string_map_size, "pulsar_string_map_size");
  OMNIBUS_PULSAR_FN(string_map_get_key, "pulsar_string_map_get_key");
  OMNIBUS_PULSAR_FN(string_map_get_value, "pulsar_string_map_get_value");
#undef OMNIBUS_PULSAR_FN
  if (!error.empty()) return error;
  g_api = a;
  g_loaded = true;
  return {};
}

const Api& api() { return g_api; }
const std::string& loaded_path() { return g_path; }

}  // namespace omnibus::detail::pulsar
