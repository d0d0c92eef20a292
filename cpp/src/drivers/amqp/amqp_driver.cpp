// amqp:// -- AMQP 0-9-1 (RabbitMQ) through rabbitmq-c.
//
// URL: amqp://user:password@host[:port]/EXCHANGE?vhost=/&options. The path is
// the exchange (empty: the default exchange ""); the virtual host is the
// option `vhost` (default "/"), because the whole path is percent-decoded into
// one name. The port defaults to 5672; only the first host is used. Without
// user info the login is guest/guest.
//
// Declarations: the exchange is declared (type exchange_type, default topic,
// durable) unless declare=false, which checks it passively instead: a missing
// exchange or queue is then NotFound. The default exchange is never declared.
// Names starting with "amq." are reserved for the broker's own exchanges
// (AMQP 0-9-1, 3.1.3.1; RabbitMQ refuses to declare them and rejects a type
// other than theirs with 406), so they are only checked, never declared. The
// standard ones carry their own type: amq.direct, amq.fanout, amq.topic,
// amq.headers and amq.match (headers); exchange_type= naming another type is
// InvalidArgument. Queue names starting with "amq." are reserved too, so a
// group queue on amq.X is named "amq_X.GROUP".
// Queue arguments are the option family arg.<name>=value (x-dead-letter-
// exchange, x-max-length, x-queue-type, ...): a value that reads as a decimal
// integer travels as a signed 64-bit integer, true/false as a boolean, anything
// else as a string, because RabbitMQ rejects x-max-length given as a string.
// Binding arguments (headers exchanges: bind.x-match=any, bind.color=red) are
// the family bind.<name>. A publisher given queue=Q declares Q (durable) and
// binds it, so that messages published before any subscriber are kept.
//
// Subscribing without group= and queue=: a private subscription, an exclusive,
// auto-delete, server-named queue bound to the exchange with binding_key
// (default "#" for topic exchanges, "" otherwise); it exists before open()
// returns, so it sees every message published after that, and goes away with
// the connection. With group=G (or queue=Q): a durable queue named Q, or
// "EXCHANGE.G", shared by competing consumers (RabbitMQ round-robins it).
//
// Keys: a message's key is its routing key, unless routing_key= is given (or
// the key is empty): then the routing key is that option and the key travels
// in the header "omnibus-key". A subscriber's Message::key is the
// "omnibus-key" header when present (removed from the headers), else the
// delivery's routing key, else (empty routing key) none. So keys round-trip
// exactly between omnibus clients, and another client's routing key shows as
// the key.
//
// Headers: an AMQP field table, one entry per header in order, values as
// long strings (AMQP long strings are bytes). A repeated name is written as
// repeated entries, which RabbitMQ passes through unchanged: omnibus sees
// order and repeats end to end; a client that decodes tables into a map
// (pika) sees one of them. Received tables: strings and byte arrays as bytes,
// arrays as one header per element, numbers and booleans as their decimal
// text, nested tables are dropped. The timestamp travels in the timestamp
// property (whole seconds, AMQP's unit); without one, arrival time is used.
//
// Threads: rabbitmq-c is blocking and not thread-safe, so each publisher and
// each subscriber has one connection (channel 1) owned by one I/O thread; no
// other thread calls rabbitmq-c after open(). send_batch queues the batch for
// that thread and returns; ack()/nack() queue delivery tags for it; an
// eventfd wakes it. The thread polls the socket at least every 100 ms, which
// also serves heartbeats (option heartbeat, default 30 s: rabbitmq-c sends
// them when due, and a silent broker is a lost connection after two of them).
//
// Publishing: persistent (delivery mode 2) unless persistent=false. With
// confirm=true (default) the channel is in confirm mode and each message's
// result is the broker's basic.ack (multiple acks settle a range) or
// basic.nack (ResourceExhausted: e.g. x-overflow=reject-publish). Confirms
// are pipelined: up to confirm_window messages are unconfirmed at a time.
// mandatory=true (default, needs confirms) makes an unroutable message come
// back as basic.return; that message then fails with NotFound ("unroutable").
// A return carries no delivery tag, so it is matched to the oldest
// unconfirmed message with the same routing key and body (identical messages
// route identically). With confirm=false the result is "written to the
// socket" and returns are ignored. A message larger than max_message_bytes
// (RabbitMQ's default max_message_size, 128 MiB) fails alone with
// ResourceExhausted before it is sent: the broker would close the channel,
// taking the messages behind it along.
//
// Receiving and acks: basic.consume with manual acks and basic.qos
// prefetch_count = the subscriber's prefetch (at most 65535). ack() sends
// basic.ack (one multiple ack when the ids are all the oldest outstanding
// ones); nack() sends basic.nack with requeue=nack_requeue (default true:
// redelivered, with the redelivered flag; false: dead-lettered through the
// queue's x-dead-letter-exchange, or dropped without one). delivery_attempt is
// x-delivery-count + 1 when the queue counts (quorum queues), else 2 for a
// redelivered message and 1 otherwise. close() closes the channel: every
// unacked message, buffered ones included, goes back to the queue.
//
// Connection loss (broker restart, heartbeat timeout, channel error): the I/O
// thread reconnects with backoff (core/backoff.hpp: 100 ms to 5 s, jittered) until closed,
// declaring and consuming again. Unconfirmed messages are sent again first
// on the new connection (the broker may have them already: at-least-once,
// duplicates possible), queued ones after them; both wait for the reconnect
// up to connect_timeout_ms, then fail with Unavailable. Acks for deliveries of
// the lost connection are dropped (the broker redelivers those messages); a
// private subscription's new queue misses what was published while down.
//
// Errors: rabbitmq-c status codes (negative) and AMQP reply codes (positive)
// are the native codes. 404 NOT_FOUND -> NotFound; 406 PRECONDITION_FAILED and
// channel-level 403 -> InvalidArgument; 320 CONNECTION_FORCED, socket errors
// -> Unavailable; 311, 506 -> ResourceExhausted; 540 -> Unsupported; others
// -> Internal. A refused login (ACCESS_REFUSED) and a refused vhost (530) are
// Unavailable like every connection failure (ConnectionError in Python, the
// same as kafka:// SASL failures), but not retryable: the same credentials
// will be refused again.

#include "drivers/amqp/amqp_driver.hpp"

#include "core/tls.hpp"
#include "drivers/amqp/connection.hpp"

namespace omnibus {
namespace {

using namespace detail::amqp;

std::vector<OptionSpec> common_options() {
  std::vector<OptionSpec> specs{
      {"vhost", OptionType::String, "/", "virtual host (the URL path is the exchange, so the vhost is an option)"},
      {"exchange_type", OptionType::Choice, "topic",
       "type of the exchange when declared or checked (amq.direct, amq.fanout, amq.topic, amq.headers and "
       "amq.match have their own)",
       {"direct", "topic", "fanout", "headers"}},
      {"declare", OptionType::Bool, "true",
       "declare the exchange (and a named queue); false: check that they exist (NotFound when missing)"},
      {"durable", OptionType::Bool, "true", "a declared exchange and named queue survive a broker restart"},
      {"queue", OptionType::String, "",
       "a named queue to declare (or check) and bind to the exchange; a subscriber consumes from it"},
      {"auto_delete", OptionType::Bool, "false", "a declared named queue is deleted when its last consumer goes"},
      {"binding_key", OptionType::String, "#", "binding key of the queue; default \"#\" for topic exchanges, \"\" otherwise"},
      {"arg.", OptionType::String, "",
       "queue argument, e.g. arg.x-dead-letter-exchange=dlx, arg.x-max-length=1000 (integers and true/false are typed)"},
      {"bind.", OptionType::String, "", "binding argument (headers exchanges), e.g. bind.x-match=any, bind.color=red"},
      {"heartbeat", OptionType::Int, "30", "heartbeat interval in seconds asked of the broker; 0 turns heartbeats off", {}, 0, 65535},
      {"sasl_mechanism", OptionType::Choice, "PLAIN",
       "PLAIN: the URL's user and password; EXTERNAL: the client certificate (amqps:// with tls_cert) is the login, "
       "as RabbitMQ's rabbitmq_auth_mechanism_ssl plugin reads it",
       {"PLAIN", "EXTERNAL"}},
      {"connect_timeout_ms", OptionType::Int, "10000",
       "bound on connecting and on each broker round trip; how long messages wait for a reconnect", {}, 1},
      {"max_message_bytes", OptionType::Int, "134217728",
       "largest message sent (RabbitMQ's max_message_size, default 128 MiB); a larger one fails alone", {}, 1},
  };
  for (auto& spec : detail::tls_option_specs("amqps")) specs.push_back(std::move(spec));
  return specs;
}

// One class for both schemes: amqps:// is the same protocol over TLS.
class AmqpDriver : public Driver {
 public:
  explicit AmqpDriver(bool tls) : tls_(tls) {}
  std::string scheme() const override { return tls_ ? "amqps" : "amqp"; }
  std::string description() const override {
    return std::string("AMQP 0-9-1 (RabbitMQ) through rabbitmq-c ") + amqp_version() + (tls_ ? ", over TLS" : "") +
           ": pipelined publisher confirms, mandatory returns, manual acks, nack/requeue or dead-letter";
  }
  std::vector<OptionSpec> sender_options() const override {
    auto specs = common_options();
    std::vector<OptionSpec> own = {
        {"routing_key", OptionType::String, "",
         "routing key of every message; when given, a message's key travels in the header omnibus-key instead"},
        {"confirm", OptionType::Bool, "true", "publisher confirms: a message's result is the broker's basic.ack/nack"},
        {"confirm_window", OptionType::Int, "10000", "most messages awaiting a confirm at a time", {}, 1, 10000000},
        {"mandatory", OptionType::Bool, "true", "an unroutable message fails with NotFound (needs confirm=true)"},
        {"persistent", OptionType::Bool, "true", "delivery mode 2: durable queues keep the message across restarts"},
    };
    specs.insert(specs.end(), own.begin(), own.end());
    return specs;
  }
  std::vector<OptionSpec> receiver_options() const override {
    auto specs = common_options();
    std::vector<OptionSpec> own = {
        {"group", OptionType::String, "",
         "competing consumers share the durable queue EXCHANGE.GROUP (or queue=); empty: a private queue"},
        {"nack_requeue", OptionType::Bool, "true",
         "nack() requeues (redelivery); false: dead-letters through the queue's x-dead-letter-exchange"},
    };
    specs.insert(specs.end(), own.begin(), own.end());
    return specs;
  }
  std::shared_ptr<Sender> open_sender(const Url& url, const OptionValues& options) override {
    return make_amqp_sender(url, options);
  }
  std::shared_ptr<Receiver> open_receiver(const Url& url, const OptionValues& options, const ReceiverSettings&) override {
    return make_amqp_receiver(url, options);
  }

 private:
  bool tls_;
};

}  // namespace

std::shared_ptr<Driver> make_amqp_driver() { return std::make_shared<AmqpDriver>(false); }
std::shared_ptr<Driver> make_amqps_driver() { return std::make_shared<AmqpDriver>(true); }

}  // namespace omnibus
