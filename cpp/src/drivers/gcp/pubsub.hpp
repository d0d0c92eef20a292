#pragma once
// What the gcppubsub:// sender and receiver share: the URL's location, the
// gRPC channel and stubs, status mapping, and the topic and subscription
// administration that opening a sender or receiver does. The generated stubs
// (google/pubsub/v1/pubsub.grpc.pb.h) are made at build time by protoc from
// the protos in Google's wheels (cmake/gcp.cmake).

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>

#include "google/pubsub/v1/pubsub.grpc.pb.h"
#include "omnibus/driver.hpp"
#include "omnibus/error.hpp"

namespace omnibus::detail::gcp {

namespace v1 = ::google::pubsub::v1;

// Google's limits: messages per Publish request, and ack ids per
// Acknowledge/ModifyAckDeadline request (kept well under its 512 KiB request size).
constexpr int kMaxPublishMessages = 1000;
constexpr std::size_t kMaxAckIds = 2500;
// The largest message Pub/Sub takes (data, attributes and ordering key).
constexpr std::size_t kMaxMessageBytes = 10000000;

struct Location {
  std::string endpoint;  // host:port the channel connects to
  bool tls = true;       // TLS with Application Default Credentials; false: plaintext, no credentials
  std::string project;
  std::string topic;         // short name; empty when the URL names a subscription
  std::string subscription;  // short name; empty when the URL names a topic
  std::string url;           // the URL as given, for messages

  std::string topic_path() const { return "projects/" + project + "/topics/" + topic; }
  std::string subscription_path(const std::string& name) const {
    return "projects/" + project + "/subscriptions/" + name;
  }
};

// The channel and stubs of one sender or receiver. Stubs are thread-safe.
struct Client {
  Location loc;
  std::chrono::milliseconds timeout{10000};  // deadline of each unary RPC
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Publisher::Stub> publisher;
  std::unique_ptr<v1::Subscriber::Stub> subscriber;

  // A context whose deadline is `timeout` from now.
  std::unique_ptr<grpc::ClientContext> context() const;
};

// Parses the URL's location (see gcppubsub_driver.cpp for the forms) and makes
// the channel; does not block (gRPC connects on the first RPC). Throws
// InvalidArgument for a malformed URL, or when TLS is asked for and no
// Application Default Credentials are found.
std::shared_ptr<Client> make_client(const Url& url, const OptionValues& o);

// gRPC status onto ErrorCode, keeping the status code as the native code
// (see the mapping in pubsub.cpp). `what` says what was being done.
Error to_error(const grpc::Status& s, const std::string& what);
// Throws to_error(s, what) unless s is OK.
void check(const grpc::Status& s, const std::string& what);

// GetTopic, and CreateTopic when it is missing and `create`; the first RPC of
// every sender and receiver, so a wrong endpoint or refused credentials fail
// the open. Blocks for one or two RPCs; throws NotFound, InvalidArgument,
// Unavailable, Timeout.
void ensure_topic(const Client& c, bool create);

// The subscription `path` on the client's topic: GetSubscription, and
// CreateSubscription (with `ack_deadline_s` and message ordering when
// `ordering`) when it is missing and `create`; another member of a group
// creating it at the same moment is fine. Throws NotFound, InvalidArgument
// (it exists on another topic), Unavailable, Timeout. Returns the
// subscription's topic path.
std::string ensure_subscription(const Client& c, const std::string& path, int ack_deadline_s, bool ordering,
                                bool create);

// Best effort: an error is swallowed (a leftover subscription of a closed
// receiver expires after 31 days of inactivity in Pub/Sub).
void delete_subscription(const Client& c, const std::string& path) noexcept;

Capabilities pubsub_capabilities(std::size_t max_message_bytes);

// The options both sides have (endpoint, tls, create, timeout_ms).
std::vector<OptionSpec> common_options();

}  // namespace omnibus::detail::gcp
