// gcppubsub:// -- Google Cloud Pub/Sub over gRPC (grpc++), with stubs that
// protoc generates at build time from the protos in Google's wheels.
//
// URLs (Go CDK's shape, with the endpoint as the URL's host):
//   gcppubsub://HOST:PORT/projects/PROJECT/topics/TOPIC          publish; receive with a subscription
//                                                                 of one's own, or group=G's (TOPIC-G)
//   gcppubsub://HOST:PORT/projects/PROJECT/subscriptions/SUB     receive from an existing subscription
//   gcppubsub://projects/PROJECT/topics/TOPIC                    Go CDK's form: the endpoint from
//                                                                 ?endpoint=, PUBSUB_EMULATOR_HOST, else
//                                                                 pubsub.googleapis.com:443
// Port 443 (tls=auto) means TLS with Application Default Credentials
// (GOOGLE_APPLICATION_CREDENTIALS: a service account's JSON key; gcloud's
// credentials; the metadata server): the bearer token comes from grpc++'s
// GoogleDefaultCredentials. Any other port is an emulator or fake: plaintext
// and no credentials, as Google's clients do with PUBSUB_EMULATOR_HOST.
//
// Model: a topic fans out to its subscriptions; the subscribers of one
// subscription compete for its messages. A subscriber without group= gets a
// subscription of its own (omnibus-TOPIC-RANDOM), deleted when it closes; a
// group G is the subscription TOPIC-G on the topic (subscription names are
// per project, a group is per topic), created when missing (with
// create=true, the default) and kept, shared by its members. The topic is
// created when missing, also by a subscriber (create=true): in production,
// create topics with their settings first and set create=false.
//
// Publishing: Publish RPCs (sender.cpp); the key is the ordering key,
// headers are attributes (envelope.hpp). Receiving: StreamingPull with flow
// control and lease extension, ack = Acknowledge, nack = ModifyAckDeadline 0
// (receiver.cpp). gRPC status codes map onto ErrorCode in pubsub.cpp.
//
// Threads: gRPC's own (the publisher's completions), plus per receiver one
// thread per StreamingPull stream and one lease thread.

#include "drivers/gcp/gcppubsub_driver.hpp"

#include "drivers/gcp/sender.hpp"

namespace omnibus {
namespace {

using namespace detail::gcp;

class PubSubDriver : public Driver {
 public:
  std::string scheme() const override { return "gcppubsub"; }
  std::string description() const override {
    return "Google Cloud Pub/Sub (gRPC): Publish of up to 1,000 messages, StreamingPull with flow control and "
           "lease extension, ack = Acknowledge, nack = ModifyAckDeadline 0; group = a shared subscription";
  }
  std::vector<OptionSpec> sender_options() const override { return sender_option_specs(); }
  std::vector<OptionSpec> receiver_options() const override { return receiver_option_specs(); }
  std::shared_ptr<Sender> open_sender(const Url& url, const OptionValues& options) override {
    return make_pubsub_sender(make_client(url, options), options);
  }
  std::shared_ptr<Receiver> open_receiver(const Url& url, const OptionValues& options,
                                          const ReceiverSettings& settings) override {
    return make_pubsub_receiver(make_client(url, options), options, settings);
  }
};

}  // namespace

std::shared_ptr<Driver> make_gcppubsub_driver() { return std::make_shared<PubSubDriver>(); }

}  // namespace omnibus
