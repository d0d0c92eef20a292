#pragma once
// The part of libpulsar's C API (include/pulsar/c/*.h of apache/pulsar-client-cpp,
// as documented there) that pulsar_driver.cpp calls, declared here because the
// pulsar-client wheel ships the library without headers. The library is
// loaded at run time with dlopen(RTLD_NOW | RTLD_LOCAL): it carries its own
// OpenSSL, protobuf and curl, which must not bind to librdkafka's or ours,
// and a missing wheel then drops one driver, not the build.
//
// Thread-safety: load() once (it is idempotent and guarded); api() after a
// successful load() from any thread. The functions themselves are libpulsar's.

#include <cstddef>
#include <cstdint>
#include <string>

namespace omnibus::detail::pulsar {

extern "C" {
struct pulsar_client_t;
struct pulsar_client_configuration_t;
struct pulsar_producer_t;
struct pulsar_producer_configuration_t;
struct pulsar_consumer_t;
struct pulsar_consumer_configuration_t;
struct pulsar_message_t;
struct pulsar_message_id_t;
struct pulsar_string_map_t;
struct pulsar_authentication_t;

// pulsar_result: only the values the driver tells apart (result.h order).
enum pulsar_result : int {
  pulsar_result_Ok = 0,
  pulsar_result_UnknownError,
  pulsar_result_InvalidConfiguration,
  pulsar_result_Timeout,
  pulsar_result_LookupError,
  pulsar_result_ConnectError,
  pulsar_result_ReadError,
  pulsar_result_AuthenticationError,
  pulsar_result_AuthorizationError,
  pulsar_result_ErrorGettingAuthenticationData,
  pulsar_result_BrokerMetadataError,
  pulsar_result_BrokerPersistenceError,
  pulsar_result_ChecksumError,
  pulsar_result_ConsumerBusy,
  pulsar_result_NotConnected,
  pulsar_result_AlreadyClosed,
  pulsar_result_InvalidMessage,
  pulsar_result_ConsumerNotInitialized,
  pulsar_result_ProducerNotInitialized,
  pulsar_result_ProducerBusy,
  pulsar_result_TooManyLookupRequestException,
  pulsar_result_InvalidTopicName,
  pulsar_result_InvalidUrl,
  pulsar_result_ServiceUnitNotReady,
  pulsar_result_OperationNotSupported,
  pulsar_result_ProducerBlockedQuotaExceededError,
  pulsar_result_ProducerBlockedQuotaExceededException,
  pulsar_result_ProducerQueueIsFull,
  pulsar_result_MessageTooBig,
  pulsar_result_TopicNotFound,
  pulsar_result_SubscriptionNotFound,
  pulsar_result_ConsumerNotFound,
  pulsar_result_UnsupportedVersionError,
  pulsar_result_TopicTerminated,
  pulsar_result_CryptoError,
  pulsar_result_IncompatibleSchema,
  pulsar_result_ConsumerAssignError,
  pulsar_result_CumulativeAcknowledgementNotAllowedError,
  pulsar_result_TransactionCoordinatorNotFoundError,
  pulsar_result_InvalidTxnStatusError,
  pulsar_result_NotAllowedError,
  pulsar_result_TransactionConflict,
  pulsar_result_TransactionNotFound,
  pulsar_result_ProducerFenced,
  pulsar_result_MemoryBufferIsFull,
  pulsar_result_Interrupted,
  pulsar_result_Disconnected,
};

enum pulsar_logger_level_t : int { pulsar_DEBUG = 0, pulsar_INFO = 1, pulsar_WARN = 2, pulsar_ERROR = 3 };
using pulsar_logger = void (*)(pulsar_logger_level_t, const char* file, int line, const char* message, void* ctx);
struct pulsar_logger_t {
  void* ctx;
  bool (*is_enabled)(pulsar_logger_level_t level, void* ctx);
  pulsar_logger log;
};

enum pulsar_consumer_type : int { pulsar_ConsumerExclusive, pulsar_ConsumerShared, pulsar_ConsumerFailover, pulsar_ConsumerKeyShared };
enum initial_position : int { initial_position_latest, initial_position_earliest };
enum pulsar_compression_type : int {
  pulsar_CompressionNone = 0,
  pulsar_CompressionLZ4 = 1,
  pulsar_CompressionZLib = 2,
  pulsar_CompressionZSTD = 3,
  pulsar_CompressionSNAPPY = 4
};

struct pulsar_consumer_config_dead_letter_policy_t {
  const char* dead_letter_topic;
  int max_redeliver_count;
  const char* initial_subscription_name;
};

using pulsar_send_callback = void (*)(pulsar_result, pulsar_message_id_t* msg_id, void* ctx);
using pulsar_result_callback = void (*)(pulsar_result, void* ctx);
}  // extern "C"

// One pointer per C function, resolved by load().
struct Api {
  const char* (*result_str)(pulsar_result);
  pulsar_client_configuration_t* (*client_configuration_create)();
  void (*client_configuration_free)(pulsar_client_configuration_t*);
  void (*client_configuration_set_operation_timeout_seconds)(pulsar_client_configuration_t*, int);
  void (*client_configuration_set_io_threads)(pulsar_client_configuration_t*, int);
  void (*client_configuration_set_message_listener_threads)(pulsar_client_configuration_t*, int);
  void (*client_configuration_set_logger_t)(pulsar_client_configuration_t*, pulsar_logger_t);
  void (*client_configuration_set_stats_interval_in_seconds)(pulsar_client_configuration_t*, unsigned int);
  // The configuration keeps its own reference: the authentication may be freed after set_auth.
  void (*client_configuration_set_auth)(pulsar_client_configuration_t*, pulsar_authentication_t*);
  // pulsar+ssl://: the CA file, the client certificate and key (mutual TLS, independent of the
  // authentication), and whether the certificate and its host name are checked.
  void (*client_configuration_set_tls_trust_certs_file_path)(pulsar_client_configuration_t*, const char*);
  void (*client_configuration_set_tls_certificate_file_path)(pulsar_client_configuration_t*, const char*);
  void (*client_configuration_set_tls_private_key_file_path)(pulsar_client_configuration_t*, const char*);
  void (*client_configuration_set_tls_allow_insecure_connection)(pulsar_client_configuration_t*, int);
  void (*client_configuration_set_validate_hostname)(pulsar_client_configuration_t*, int);
  pulsar_authentication_t* (*authentication_token_create)(const char* token);
  void (*authentication_free)(pulsar_authentication_t*);
  pulsar_client_t* (*client_create)(const char*, const pulsar_client_configuration_t*);
  pulsar_result (*client_create_producer)(pulsar_client_t*, const char*, const pulsar_producer_configuration_t*,
                                          pulsar_producer_t**);
  pulsar_result (*client_subscribe)(pulsar_client_t*, const char*, const char*, const pulsar_consumer_configuration_t*,
                                    pulsar_consumer_t**);
  pulsar_result (*client_close)(pulsar_client_t*);
  void (*client_free)(pulsar_client_t*);

  pulsar_producer_configuration_t* (*producer_configuration_create)();
  void (*producer_configuration_free)(pulsar_producer_configuration_t*);
  void (*producer_configuration_set_send_timeout)(pulsar_producer_configuration_t*, int);
  void (*producer_configuration_set_compression_type)(pulsar_producer_configuration_t*, pulsar_compression_type);
  void (*producer_configuration_set_max_pending_messages)(pulsar_producer_configuration_t*, int);
  void (*producer_configuration_set_block_if_queue_full)(pulsar_producer_configuration_t*, int);
  void (*producer_configuration_set_batching_enabled)(pulsar_producer_configuration_t*, int);
  void (*producer_configuration_set_batching_max_messages)(pulsar_producer_configuration_t*, unsigned int);
  void (*producer_configuration_set_batching_max_publish_delay_ms)(pulsar_producer_configuration_t*, unsigned long);
  void (*producer_send_async)(pulsar_producer_t*, pulsar_message_t*, pulsar_send_callback, void*);
  pulsar_result (*producer_flush)(pulsar_producer_t*);
  pulsar_result (*producer_close)(pulsar_producer_t*);
  void (*producer_free)(pulsar_producer_t*);
  int (*producer_is_connected)(pulsar_producer_t*);

  pulsar_consumer_configuration_t* (*consumer_configuration_create)();
  void (*consumer_configuration_free)(pulsar_consumer_configuration_t*);
  void (*consumer_configuration_set_consumer_type)(pulsar_consumer_configuration_t*, pulsar_consumer_type);
  void (*consumer_configuration_set_receiver_queue_size)(pulsar_consumer_configuration_t*, int);
  void (*consumer_set_unacked_messages_timeout_ms)(pulsar_consumer_configuration_t*, const std::uint64_t);
  void (*configure_set_negative_ack_redelivery_delay_ms)(pulsar_consumer_configuration_t*, long);
  void (*consumer_set_subscription_initial_position)(pulsar_consumer_configuration_t*, initial_position);
  void (*consumer_configuration_set_batch_index_ack_enabled)(pulsar_consumer_configuration_t*, int);
  void (*consumer_configuration_set_dlq_policy)(pulsar_consumer_configuration_t*,
                                                const pulsar_consumer_config_dead_letter_policy_t*);
  pulsar_result (*consumer_receive_with_timeout)(pulsar_consumer_t*, pulsar_message_t**, int);
  void (*consumer_acknowledge_async_id)(pulsar_consumer_t*, pulsar_message_id_t*, pulsar_result_callback, void*);
  void (*consumer_negative_acknowledge_id)(pulsar_consumer_t*, pulsar_message_id_t*);
  pulsar_result (*consumer_unsubscribe)(pulsar_consumer_t*);
  pulsar_result (*consumer_close)(pulsar_consumer_t*);
  void (*consumer_free)(pulsar_consumer_t*);
  int (*consumer_is_connected)(pulsar_consumer_t*);

  pulsar_message_t* (*message_create)();
  void (*message_free)(pulsar_message_t*);
  void (*message_set_allocated_content)(pulsar_message_t*, void*, std::size_t);
  void (*message_set_property)(pulsar_message_t*, const char*, const char*);
  void (*message_set_partition_key)(pulsar_message_t*, const char*);
  void (*message_set_event_timestamp)(pulsar_message_t*, std::uint64_t);
  pulsar_string_map_t* (*message_get_properties)(pulsar_message_t*);
  const void* (*message_get_data)(pulsar_message_t*);
  std::uint32_t (*message_get_length)(pulsar_message_t*);
  pulsar_message_id_t* (*message_get_message_id)(pulsar_message_t*);
  const char* (*message_get_partitionKey)(pulsar_message_t*);
  int (*message_has_partition_key)(pulsar_message_t*);
  std::uint64_t (*message_get_publish_timestamp)(pulsar_message_t*);
  std::uint64_t (*message_get_event_timestamp)(pulsar_message_t*);
  int (*message_get_redelivery_count)(pulsar_message_t*);
  void (*message_id_free)(pulsar_message_id_t*);
  char* (*message_id_str)(pulsar_message_id_t*);

  void (*string_map_free)(pulsar_string_map_t*);
  int (*string_map_size)(pulsar_string_map_t*);
  const char* (*string_map_get_key)(pulsar_string_map_t*, int);
  const char* (*string_map_get_value)(pulsar_string_map_t*, int);
};

// Loads libpulsar from `path` (an empty path: not found) and resolves every
// function above. Returns an empty string on success, else why not (the
// dlerror text, or the first symbol missing). The first success sticks; later
// calls return at once.
std::string load(const std::string& path);
// Valid after load() returned "" (the driver is only registered then).
const Api& api();
// Where the library was loaded from, for the driver's description.
const std::string& loaded_path();

}  // namespace omnibus::detail::pulsar
