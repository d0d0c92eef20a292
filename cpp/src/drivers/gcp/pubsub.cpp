// The shared part of gcppubsub:// (pubsub.hpp): location, channel, status
// mapping, topic and subscription administration.

#include "drivers/gcp/pubsub.hpp"

#include <cstdlib>
#include <vector>

#include "drivers/gcp/envelope.hpp"

namespace omnibus::detail::gcp {

namespace {

constexpr const char* kGoogleEndpoint = "pubsub.googleapis.com:443";

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (;;) {
    std::size_t at = s.find(sep, start);
    out.push_back(s.substr(start, at == std::string::npos ? std::string::npos : at - start));
    if (at == std::string::npos) return out;
    start = at + 1;
  }
}

[[noreturn]] void bad_url(const Url& url, const std::string& why) {
  throw Error(ErrorCode::InvalidArgument,
              "gcppubsub:// URL " + url.text + ": " + why +
                  "; expected gcppubsub://HOST:PORT/projects/PROJECT/topics/TOPIC (or .../subscriptions/SUB), or "
                  "gcppubsub://projects/PROJECT/topics/TOPIC with the endpoint from ?endpoint=, PUBSUB_EMULATOR_HOST "
                  "or Google's");
}

// Names Pub/Sub accepts for projects, topics and subscriptions: what matters
// here is that they cannot break the resource path.
bool path_segment(const std::string& s) {
  return !s.empty() && s.find('/') == std::string::npos && s.size() <= 255;
}

Location locate(const Url& url, const OptionValues& o) {
  Location loc;
  loc.url = url.text;
  if (url.hosts.size() != 1) bad_url(url, "one endpoint only");
  if (url.has_userinfo)
    bad_url(url, "credentials do not go in the URL (Application Default Credentials: "
                 "GOOGLE_APPLICATION_CREDENTIALS)");
  const HostPort& hp = url.hosts.front();
  std::string path = url.path;
  if (hp.host.empty() || (hp.host == "projects" && hp.port == 0)) {
    // Go CDK's form: the path starts at the URL's host.
    if (hp.host == "projects") path = "projects/" + path;
    if (!o.get_string("endpoint").empty()) loc.endpoint = o.get_string("endpoint");
    else if (const char* e = std::getenv("PUBSUB_EMULATOR_HOST"); e && *e) loc.endpoint = e;
    else loc.endpoint = kGoogleEndpoint;
  } else {
    if (!o.get_string("endpoint").empty()) bad_url(url, "give the endpoint either as the URL's host or as ?endpoint=");
    const bool v6 = hp.host.find(':') != std::string::npos;
    loc.endpoint = (v6 ? "[" + hp.host + "]" : hp.host) + ":" + std::to_string(hp.port ? hp.port : 443);
  }
  auto parts = split(path, '/');
  if (!parts.empty() && parts.back().empty()) parts.pop_back();
  if (parts.size() != 4 || parts[0] != "projects" || !path_segment(parts[1]) || !path_segment(parts[3]))
    bad_url(url, "the path must be projects/PROJECT/topics/TOPIC or projects/PROJECT/subscriptions/SUBSCRIPTION");
  loc.project = parts[1];
  if (parts[2] == "topics") loc.topic = parts[3];
  else if (parts[2] == "subscriptions") loc.subscription = parts[3];
  else bad_url(url, "'" + parts[2] + "' is neither topics nor subscriptions");
  const std::string& tls = o.get_string("tls");
  if (tls == "auto") loc.tls = loc.endpoint.size() > 4 && loc.endpoint.compare(loc.endpoint.size() - 4, 4, ":443") == 0;
  else loc.tls = tls == "true";
  return loc;
}

}  // namespace

std::unique_ptr<grpc::ClientContext> Client::context() const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  return ctx;
}

std::shared_ptr<Client> make_client(const Url& url, const OptionValues& o) {
  auto c = std::make_shared<Client>();
  c->loc = locate(url, o);
  c->timeout = std::chrono::milliseconds(o.get_int("timeout_ms"));
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (c->loc.tls) {
    // Application Default Credentials, as Google's own clients find them:
    // GOOGLE_APPLICATION_CREDENTIALS (a service account's JSON key), gcloud's
    // user credentials, or the metadata server on Google Cloud.
    creds = grpc::GoogleDefaultCredentials();
    if (!creds)
      throw Error(ErrorCode::InvalidArgument,
                  "gcppubsub:// " + c->loc.endpoint + " needs credentials and none were found: set "
                  "GOOGLE_APPLICATION_CREDENTIALS to a service account's JSON key (Application Default "
                  "Credentials), or use tls=false for an emulator");
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);  // a StreamingPull response may carry many large messages
  args.SetMaxSendMessageSize(-1);     // requests are bounded by request_bytes instead
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);  // notice a dead peer on a quiet stream
  args.SetUserAgentPrefix("omnibus");
  c->channel = grpc::CreateCustomChannel(c->loc.endpoint, creds, args);
  c->publisher = v1::Publisher::NewStub(c->channel);
  c->subscriber = v1::Subscriber::NewStub(c->channel);
  return c;
}

Error to_error(const grpc::Status& s, const std::string& what) {
  const int native = static_cast<int>(s.error_code());
  const std::string text = what + ": " + s.error_message() + " (gRPC status " + std::to_string(native) + ")";
  switch (s.error_code()) {
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::OUT_OF_RANGE:
    case grpc::StatusCode::ALREADY_EXISTS:
      return Error(ErrorCode::InvalidArgument, text, native, false);
    case grpc::StatusCode::NOT_FOUND:
      return Error(ErrorCode::NotFound, text, native, false);
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED:
      // The taxonomy has no code of its own for this: the caller must fix the
      // credentials, as for any other argument.
      return Error(ErrorCode::InvalidArgument, what + ": credentials refused: " + s.error_message() +
                                                   " (gRPC status " + std::to_string(native) + ")",
                   native, false);
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return Error(ErrorCode::ResourceExhausted, text, native, true);
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return Error(ErrorCode::Timeout, text, native, true);
    case grpc::StatusCode::UNIMPLEMENTED:
      return Error(ErrorCode::Unsupported, text, native, false);
    case grpc::StatusCode::DATA_LOSS:
      return Error(ErrorCode::Internal, text, native, false);
    default:  // UNAVAILABLE, ABORTED, INTERNAL, UNKNOWN, CANCELLED: Google's clients retry these
      return Error(ErrorCode::Unavailable, text, native, true);
  }
}

void check(const grpc::Status& s, const std::string& what) {
  if (!s.ok()) throw to_error(s, what);
}

void ensure_topic(const Client& c, bool create) {
  v1::GetTopicRequest get;
  get.set_topic(c.loc.topic_path());
  v1::Topic topic;
  grpc::Status s = c.publisher->GetTopic(c.context().get(), get, &topic);
  if (s.error_code() == grpc::StatusCode::NOT_FOUND && create) {
    v1::Topic t;
    t.set_name(c.loc.topic_path());
    s = c.publisher->CreateTopic(c.context().get(), t, &topic);
    if (s.error_code() == grpc::StatusCode::ALREADY_EXISTS) return;  // created meanwhile by another client
  }
  check(s, "gcppubsub:// " + c.loc.endpoint + " topic " + c.loc.topic_path() +
               (s.error_code() == grpc::StatusCode::NOT_FOUND ? " (create=false)" : ""));
}

std::string ensure_subscription(const Client& c, const std::string& path, int ack_deadline_s, bool ordering,
                                bool create) {
  const std::string what = "gcppubsub:// " + c.loc.endpoint + " subscription " + path;
  v1::GetSubscriptionRequest get;
  get.set_subscription(path);
  v1::Subscription sub;
  grpc::Status s = c.subscriber->GetSubscription(c.context().get(), get, &sub);
  if (s.error_code() == grpc::StatusCode::NOT_FOUND && create && !c.loc.topic.empty()) {
    v1::Subscription want;
    want.set_name(path);
    want.set_topic(c.loc.topic_path());
    want.set_ack_deadline_seconds(ack_deadline_s);
    want.set_enable_message_ordering(ordering);
    s = c.subscriber->CreateSubscription(c.context().get(), want, &sub);
    if (s.error_code() == grpc::StatusCode::ALREADY_EXISTS)  // another group member was first
      s = c.subscriber->GetSubscription(c.context().get(), get, &sub);
  }
  check(s, what);
  if (!c.loc.topic.empty() && sub.topic() != c.loc.topic_path())
    throw Error(ErrorCode::InvalidArgument, what + " exists on topic " + sub.topic() + ", not on " + c.loc.topic_path() +
                                                ": choose another group name");
  return sub.topic();
}

void delete_subscription(const Client& c, const std::string& path) noexcept {
  try {
    v1::DeleteSubscriptionRequest req;
    req.set_subscription(path);
    google::protobuf::Empty out;
    (void)c.subscriber->DeleteSubscription(c.context().get(), req, &out);
  } catch (...) {
  }
}

Capabilities pubsub_capabilities(std::size_t max_message_bytes) {
  Capabilities c;
  c.delivery_guarantee = "at-least-once";
  c.ordered_per_key = true;  // the ordering key, on subscriptions with message ordering (omnibus creates them so)
  c.key_affinity = false;    // Pub/Sub prefers, but does not promise, one key to one stream
  c.keys = true;
  c.nack = true;             // ModifyAckDeadline 0
  c.ack_deadline = true;
  c.requeue_on_close = true;
  c.delivery_count = false;  // Pub/Sub counts deliveries only with a dead-letter policy
  c.competing_consumers = true;  // members of one group share its subscription
  c.fan_out = true;              // each subscription gets every message
  c.headers = true;
  c.dead_letter = false;
  c.durable = true;  // Pub/Sub keeps messages (the fake keeps them in memory only)
  c.request_reply = false;
  c.max_message_bytes = max_message_bytes;
  return c;
}

std::vector<OptionSpec> common_options() {
  return {
      {"endpoint", OptionType::String, "",
       "host:port of the Pub/Sub service when the URL has none (gcppubsub://projects/...); empty: "
       "PUBSUB_EMULATOR_HOST, else Google's pubsub.googleapis.com:443"},
      {"tls", OptionType::Choice, "auto",
       "TLS with Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS); auto: on port 443 only, "
       "plaintext without credentials elsewhere (an emulator)",
       {"auto", "true", "false"}},
      {"create", OptionType::Bool, "true", "create the topic (and a group's subscription) when missing"},
      {"timeout_ms", OptionType::Int, "10000", "deadline of each Publish, Acknowledge and administrative RPC", {},
       100, 600000},
  };
}

}  // namespace omnibus::detail::gcp
