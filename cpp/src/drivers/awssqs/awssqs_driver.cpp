// awssqs:// -- Amazon SQS (and API-compatible servers: moto, LocalStack,
// ElasticMQ) over HTTP(S) with libcurl, the JSON protocol
// (application/x-amz-json-1.0), requests signed with SigV4 by libcurl itself
// (CURLOPT_AWS_SIGV4).
//
// URLs: awssqs://sqs.REGION.amazonaws.com/ACCOUNT/QUEUE (the queue's own URL),
// or the short form awssqs:///QUEUE with the endpoint from ?endpoint=,
// AWS_ENDPOINT_URL_SQS or AWS_ENDPOINT_URL (else https://sqs.REGION.amazonaws.com)
// and the queue URL from GetQueueUrl (CreateQueue with ?create=true). The
// region comes from ?region=, the host name, AWS_REGION or AWS_DEFAULT_REGION.
// Credentials: the URL's userinfo (ACCESS_KEY_ID:SECRET, the secret
// percent-encoded), else AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
// (/AWS_SESSION_TOKEN), else the shared credentials file
// (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, ?profile= or AWS_PROFILE).
//
// Model: a queue is one group. Its subscribers compete for its messages (SQS
// cannot fan out: awssns:// can); a received message is invisible to the
// others for the visibility timeout (the ack deadline), ack deletes it
// (DeleteMessageBatch), nack makes it visible at once
// (ChangeMessageVisibilityBatch to 0), ApproximateReceiveCount is the delivery
// attempt. Standard queues are at-least-once and unordered; FIFO queues
// (names ending in .fifo) keep order per MessageGroupId, which is the key.
//
// Threads and connections: libcurl easy handles are not shared between
// threads. A Sender's handles belong to the Publisher's sender thread, which
// sends the SendMessageBatch requests of one batch concurrently on a curl
// multi handle (one connection per request in flight, kept alive between
// batches). A Receiver runs `pollers` threads, each long-polling
// ReceiveMessage on a handle of its own into a bounded buffer, so that
// receive_batch() honours its short timeout and close() interrupts a poll at
// once (curl_multi_wakeup). Acks and nacks from any thread share one set of
// handles under a mutex.

#include "drivers/awssqs/awssqs_driver.hpp"

#include "drivers/awssqs/sqs.hpp"

namespace omnibus {
namespace {

using namespace detail::aws;

// The queue of an awssqs:// URL; with dead_letter_queue= (and create=true)
// that queue is created first and the URL's queue gets a redrive policy to it.
Queue open_sqs(const Url& url, const OptionValues& o) {
  auto svc = std::make_shared<Service>(make_service(url, o, "sqs"));
  const std::string dlq = o.get_string("dead_letter_queue");
  json attrs = json::object();
  if (!dlq.empty()) {
    if (!o.get_bool("create"))
      throw Error(ErrorCode::InvalidArgument,
                  "dead_letter_queue=" + dlq + " needs create=true: omnibus sets the redrive policy when it creates " +
                      svc->loc.queue + " (for an existing queue, set it in SQS)");
    auto dsvc = std::make_shared<Service>(*svc);
    dsvc->loc.queue = dlq;
    Queue dead = open_queue(dsvc, true);
    Pool pool(*svc, 1);
    std::string arn = pool.call("GetQueueAttributes", {{"QueueUrl", dead.url}, {"AttributeNames", {"QueueArn"}}},
                                kRequestTimeout, dlq)
                          .value("Attributes", json::object())
                          .value("QueueArn", std::string());
    attrs["RedrivePolicy"] =
        json{{"deadLetterTargetArn", arn}, {"maxReceiveCount", o.get_int("max_receive_count")}}.dump();
  }
  Queue q = open_queue(svc, o.get_bool("create"), attrs);
  q.dead_letter = !dlq.empty();
  return q;
}

// Options of both sides: either may create the queue.
void add_dead_letter_options(std::vector<OptionSpec>& o) {
  o.push_back({"dead_letter_queue", OptionType::String, "",
               "with create=true: create this queue too and give the URL's queue a redrive policy to it, so that "
               "a message received max_receive_count times goes there (nack counts)"});
  o.push_back({"max_receive_count", OptionType::Int, "5", "receives before a message goes to dead_letter_queue", {},
               1, 1000});
}

class SqsDriver : public Driver {
 public:
  std::string scheme() const override { return "awssqs"; }
  std::string description() const override {
    return "Amazon SQS (libcurl, SigV4): SendMessageBatch, long-polled ReceiveMessage, ack = delete, nack = "
           "visibility 0; standard and FIFO queues; a queue is one group (no fan-out)";
  }
  std::vector<OptionSpec> sender_options() const override {
    auto o = common_options("sqs", "the queue (CreateQueue; a .fifo name makes a FIFO queue with content-based "
                                   "deduplication)");
    o.push_back({"max_in_flight", OptionType::Int, "8",
                 "SendMessageBatch requests of one publish batch sent concurrently (one connection each)", {}, 1, 64});
    add_dead_letter_options(o);
    o.push_back({"dedup_header", OptionType::String, "",
                 "FIFO queues: the header whose value is the MessageDeduplicationId (SQS drops a repeat within 5 "
                 "minutes); empty: the queue's content-based deduplication"});
    return o;
  }
  std::vector<OptionSpec> receiver_options() const override {
    auto o = common_options("sqs", "the queue (CreateQueue; a .fifo name makes a FIFO queue with content-based "
                                   "deduplication)");
    add_dead_letter_options(o);
    o.push_back({"group", OptionType::String, "",
                 "accepted for portable code: an SQS queue is one group, its subscribers always share its "
                 "messages, whatever the value (for a copy per subscription use awssns:// with a queue each)"});
    o.push_back({"ack_deadline_ms", OptionType::Int, "30000",
                 "visibility timeout: an unacked message is redelivered after this long (rounded up to whole "
                 "seconds, SQS's unit)", {}, 0, 43200000});
    o.push_back({"wait_seconds", OptionType::Int, "1",
                 "long-poll time of each ReceiveMessage (SQS allows up to 20); close() waits for the polls in flight, "
                 "so up to this long. More costs fewer requests on an idle queue (SQS bills each)", {}, 0, 20});
    o.push_back({"pollers", OptionType::Int, "2", "ReceiveMessage requests in flight at once (threads)", {}, 1, 32});
    return o;
  }
  std::shared_ptr<Sender> open_sender(const Url& url, const OptionValues& options) override {
    return make_sqs_sender(open_sqs(url, options), options);
  }
  std::shared_ptr<Receiver> open_receiver(const Url& url, const OptionValues& options,
                                          const ReceiverSettings&) override {
    return make_sqs_receiver(open_sqs(url, options), options);
  }
};

}  // namespace

std::shared_ptr<Driver> make_awssqs_driver() { return std::make_shared<SqsDriver>(); }

}  // namespace omnibus
