#pragma once
// An SQS queue and its two sides, shared by awssqs:// (the queue of the URL)
// and awssns:// (the queue subscribed to the topic).

#include <functional>
#include <memory>
#include <unordered_map>

#include "drivers/awssqs/aws.hpp"
#include "omnibus/driver.hpp"

namespace omnibus::detail::aws {

constexpr std::size_t kBatchEntries = 10;  // SQS's limit per batch request

struct Queue {
  std::shared_ptr<Service> svc;
  std::string url;   // the QueueUrl
  bool fifo = false;
  bool fan_out = false;  // awssns://: every subscription has a queue of its own
  bool dead_letter = false;  // created with a redrive policy (dead_letter_queue=)
};

// Finds (or creates, with `attrs` when given) the queue svc->loc.queue and
// checks that the credentials work: the first request of every sender and
// receiver. Blocks for one or two requests; throws NotFound, InvalidArgument
// (credentials refused) or Unavailable.
Queue open_queue(std::shared_ptr<Service> svc, bool create, json attrs = json::object());

Capabilities sqs_capabilities(bool fifo, bool fan_out, bool dead_letter = false);

// A batch call's per-message results, shared by SendMessageBatch and
// PublishBatch: a transport or service error fails every member (and a
// transport error marks the sender disconnected); otherwise each member gets
// its entry of `failed`, success when in `ok`, and Unavailable when the
// response named it nowhere (`no_result` says which call).
void report_batch(const Pool::Call& call, const std::vector<std::size_t>& members,
                  const std::unordered_map<std::size_t, Error>& failed, const std::unordered_map<std::size_t, bool>& ok,
                  const std::string& no_result, std::atomic<bool>& connected, const SendResultFn& on_result);

// SendMessageBatch requests to `q` (options: max_in_flight, dedup_header).
// Throws InvalidArgument for dedup_header on a standard queue.
std::shared_ptr<Sender> make_sqs_sender(Queue q, const OptionValues& o);

// Long-polls `q` on `pollers` threads, started before it returns (options:
// ack_deadline_ms, wait_seconds, pollers). `on_close` runs once at the end of
// close() (awssns://: unsubscribe and delete a private queue).
std::shared_ptr<Receiver> make_sqs_receiver(Queue q, const OptionValues& o, std::function<void()> on_close = {});

}  // namespace omnibus::detail::aws
