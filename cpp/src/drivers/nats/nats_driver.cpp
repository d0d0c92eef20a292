// nats:// -- core NATS and JetStream through cnats (the NATS C client, 3.4).
//
// README.md, section "### nats://", is the user's description: the URL, the
// two modes (core NATS at-most-once, JetStream at-least-once), the options,
// request-reply, keys and headers, logins and TLS. This says why the driver
// works as it does. The pieces: common.hpp (handle owners, the callback
// registry, subjects, errors, settings, natsMsg conversion), connection.hpp
// (a connection and its state, JetStream setup), request.hpp (replies to a
// publisher's requests), sender.cpp and receiver.cpp (the two roles, core
// and JetStream each), envelope.hpp (how keys and headers travel, and why);
// this file holds the options and opens the roles.
//
// Core NATS: a subscriber's SUB is confirmed with a PING/PONG before open
// returns, so nothing published after that is missed. With flush=true a
// batch's PONG says the server has its messages (it routes before it
// answers). A batch without its PONG fails with Timeout, "may or may not have
// been delivered": cnats keeps what it could not write while reconnecting and
// sends it after the reconnect.
//
// JetStream: an existing stream is used as it is; a publisher fails at open
// when the stream does not capture its subject, since it would get no
// PubAck. An existing durable consumer keeps its configuration, except
// ack_wait / max_deliver / max_ack_pending given explicitly (it is updated).
// nack() at the last attempt of max_deliver sends +TERM rather than -NAK: the
// server would not redeliver it anyway, and TERM says so and raises its
// advisory. Closing a subscriber NAKs its unacked messages, those buffered in
// the subscriber included, so that the group's other members get them at
// once. Acks are fire-and-forget publishes: an ack lost with the connection
// means a redelivery after ack_wait, never a loss.
//
// Request-reply (core only): one _INBOX.<nuid> per publisher with one
// wildcard subscription <inbox>.* for all its requests, as cnats' and
// nats-py's own request do; the first reply to <inbox>.<n> is the answer,
// later ones (several subscribers without a queue group each reply) are
// dropped. A request in flight when the connection drops ends by timeout (the
// reply subscription comes back with the reconnect). JetStream publishers
// have none: a JetStream publish is answered by the stream's PubAck, not by a
// subscriber.
//
// Connections: cnats reconnects by itself and restores subscriptions (core,
// and the pull consumer's inbox); the wait between rounds is the engine's
// backoff (core/backoff.hpp), so that many clients do not come back in step.
// Each connection keeps its state, its disconnect and reconnect counts and
// the last asynchronous error (slow consumer, permission violation) from
// cnats' callbacks. The core has no hook to show them to the application
// (Capabilities are static), so they show in error messages only.
//
// Threads: cnats runs, per connection, a reader and a flusher thread, and one
// process-wide thread for connection callbacks; JetStream PubAcks arrive on
// the subscription thread of the publisher's reply inbox. This driver adds
// none. cnats callbacks reach the driver through a registry of weak
// references keyed by an id (the closure), never through a raw pointer, so a
// callback that cnats runs after a publisher or subscriber closed finds
// nothing and returns. The objects that callbacks touch own no cnats handle
// and are never destroyed on a cnats thread. nats_Close() is never called:
// cnats' library state is process-wide and other connections may live.
//
// Errors: natsStatus codes and JetStream API error codes map onto ErrorCode;
// native_code is the JetStream error code (10000+) when the server sent one,
// else the natsStatus.

#include "drivers/nats/nats_driver.hpp"

#include "core/tls.hpp"
#include "drivers/nats/connection.hpp"

namespace omnibus::detail::nats {
namespace {

std::vector<OptionSpec> connection_options() {
  std::vector<OptionSpec> specs{
      {"stream", OptionType::String, "",
       "JetStream stream name: publish with per-message PubAcks and consume through a pull consumer "
       "(at-least-once); empty: core NATS (at-most-once)"},
      {"create_stream", OptionType::Bool, "true",
       "create the stream when it does not exist (subjects: the URL's subject); false: NotFound instead"},
      {"storage", OptionType::Choice, "file", "storage of a stream this client creates: file survives a server restart",
       {"file", "memory"}},
      {"replicas", OptionType::Int, "1", "replicas of a stream this client creates (a cluster allows up to 5)", {}, 1, 5},
      {"name", OptionType::String, "", "connection name the server shows in its monitoring"},
      {"tls", OptionType::Bool, "false", "connect with TLS (implied by tls_ca and tls_cert); the server's certificate is checked against the system's CAs unless tls_ca is given"},
      {"creds", OptionType::String, "", "a .creds file (user JWT and NKey seed, as `nsc` writes it) to log in with"},
      {"nkey", OptionType::String, "", "NKey public key (U...) to log in with; its seed comes from nkey_seed"},
      {"nkey_seed", OptionType::String, "", "file holding the seed (SU...) of nkey"},
      {"connect_timeout_ms", OptionType::Int, "5000", "bound on connecting to each server of the pool", {}, 1, 3600000},
      {"reconnect_wait_ms", OptionType::Int, "100",
       "wait after the first failed reconnect round; later waits are drawn between it and a ceiling that doubles each round up to reconnect_max_wait_ms",
       {}, 0, 3600000},
      {"reconnect_max_wait_ms", OptionType::Int, "5000", "longest wait between reconnect rounds", {}, 0, 3600000},
      {"max_reconnects", OptionType::Int, "-1", "reconnect rounds before giving up (the connection closes); -1: forever",
       {}, -1, 1000000000},
      {"ping_interval_ms", OptionType::Int, "120000",
       "interval of the client's PINGs; two unanswered mark the connection stale and start a reconnect",
       {}, 1, 86400000},
      {"request_timeout_ms", OptionType::Int, "5000", "bound on JetStream API requests (stream and consumer lookups)",
       {}, 1, 3600000},
  };
  for (auto& spec : tls_option_specs("nats")) specs.push_back(std::move(spec));
  return specs;
}

class NatsDriver final : public Driver {
 public:
  std::string scheme() const override { return "nats"; }
  std::string description() const override {
    return "NATS (cnats): core NATS publish/subscribe with '*' and '>' wildcards and queue groups (?group=), at-most-once; "
           "JetStream (?stream=NAME) with async PubAcks, durable or ephemeral pull consumers, ack/nak, redelivery after "
           "ack_wait, at-least-once; keys and headers as NATS headers; automatic reconnect with backoff";
  }
  std::vector<OptionSpec> sender_options() const override {
    auto specs = connection_options();
    specs.push_back({"flush", OptionType::Bool, "true",
                     "core NATS: end every batch with a PING and report its messages delivered when the PONG is back "
                     "(the server has them); false: delivered once in cnats' write buffer"});
    specs.push_back({"ack_timeout_ms", OptionType::Int, "10000",
                     "how long a publish waits for the server's confirmation (core: the PONG after a batch; JetStream: "
                     "each message's PubAck) before failing with Timeout",
                     {}, 1, 3600000});
    specs.push_back({"max_inflight", OptionType::Int, "4096",
                     "JetStream: messages published and waiting for their PubAck; publishing waits when reached",
                     {}, 1, 1000000});
    specs.push_back({"msg_id", OptionType::Bool, "false",
                     "JetStream: a unique Nats-Msg-Id header per message, so that the stream drops a message published "
                     "twice within its duplicate window"});
    specs.push_back({"send_timestamp", OptionType::Bool, "false",
                     "carry each message's publish time as header Omnibus-Ts (core NATS subscribers see it as "
                     "timestamp_ms; else they stamp arrival, JetStream the time the stream stored it)"});
    specs.push_back({"reconnect_buffer_bytes", OptionType::Int, "8388608",
                     "bytes of publishes cnats keeps while disconnected; beyond, a publish fails with Unavailable",
                     {}, 0, 2147483647});
    return specs;
  }
  std::vector<OptionSpec> receiver_options() const override {
    auto specs = connection_options();
    specs.push_back({"group", OptionType::String, "",
                     "competing consumers: core NATS queue group; JetStream durable consumer of that name shared by "
                     "its members. Empty: every subscriber gets every message"});
    specs.push_back({"queue", OptionType::String, "", "the NATS name of group= (the same option)"});
    specs.push_back({"durable", OptionType::String, "",
                     "JetStream: durable consumer name (default: the group name; neither: an ephemeral consumer)"});
    specs.push_back({"deliver", OptionType::Choice, "default",
                     "JetStream: where a new consumer starts: new (messages stored after it was created), all (the "
                     "whole stream), last; default: new for an ephemeral consumer, all for a durable one",
                     {"default", "new", "all", "last"}});
    specs.push_back({"ack_wait", OptionType::String, "30s",
                     "JetStream: redeliver a message not acked within this time (30s, 500ms, or milliseconds)"});
    specs.push_back({"ack_deadline_ms", OptionType::Int, "30000",
                     "the portable name of ack_wait, in milliseconds", {}, 1, 86400000LL * 365});
    specs.push_back({"max_deliver", OptionType::Int, "-1",
                     "JetStream: deliveries of a message before the server gives up on it; -1: no limit",
                     {}, -1, 2147483647});
    specs.push_back({"max_ack_pending", OptionType::Int, "20000",
                     "JetStream: unacked messages the consumer hands out before it waits for acks; -1: no limit",
                     {}, -1, 2147483647});
    specs.push_back({"inactive_threshold_ms", OptionType::Int, "300000",
                     "JetStream: the server deletes an ephemeral consumer after this long without a fetch (a crashed "
                     "subscriber's, say)",
                     {}, 1, 86400000LL * 365});
    specs.push_back({"pending_limit", OptionType::Int, "65536",
                     "core NATS: messages cnats buffers for a subscriber before it drops them (slow consumer)",
                     {}, 1, 2147483647});
    return specs;
  }

  std::shared_ptr<Sender> open_sender(const Url& url, const OptionValues& options) override {
    Settings s = common_settings(url, options);
    if (const char* why = subject_problem(s.subject, false))
      throw Error(ErrorCode::InvalidArgument, "cannot publish to NATS subject " + printable(s.subject) + " of " + s.url +
                                                  ": " + why + " (subjects are tokens like 'orders.eu.created')");
    s.flush = options.get_bool("flush");
    s.ack_timeout_ms = options.get_int("ack_timeout_ms");
    s.max_inflight = static_cast<std::size_t>(options.get_int("max_inflight"));
    s.msg_id = options.get_bool("msg_id");
    s.send_timestamp = options.get_bool("send_timestamp");
    s.reconnect_buffer_bytes = options.get_int("reconnect_buffer_bytes");
    if (s.msg_id && !s.jetstream())
      throw Error(ErrorCode::InvalidArgument, "msg_id=true needs JetStream (stream=NAME): core NATS has no duplicate "
                                              "detection (" + s.url + ")");
    if (s.jetstream()) return make_js_sender(std::move(s));
    return make_core_sender(std::move(s));
  }

  std::shared_ptr<Receiver> open_receiver(const Url& url, const OptionValues& options,
                                          const ReceiverSettings&) override {
    // ReceiverSettings::manual_ack changes nothing: the portable layer acks
    // on hand-over when it is false, and JetStream consumers always want acks.
    Settings s = common_settings(url, options);
    if (const char* why = subject_problem(s.subject, true))
      throw Error(ErrorCode::InvalidArgument, "cannot subscribe to NATS subject " + printable(s.subject) + " of " + s.url +
                                                  ": " + why + " (subjects are tokens like 'orders.*.created' or 'orders.>')");
    s.group = options.get_string("group");
    const std::string queue = options.get_string("queue");
    if (!queue.empty() && !s.group.empty() && queue != s.group)
      throw Error(ErrorCode::InvalidArgument, "group=" + printable(s.group) + " and queue=" + printable(queue) + " of " +
                                                  s.url + " name different groups; queue= is the NATS name of group=, "
                                                  "give one");
    if (s.group.empty()) s.group = queue;
    s.durable = options.get_string("durable");
    const std::string deliver = options.get_string("deliver");
    s.deliver = deliver == "default" ? "" : deliver;
    s.ack_wait_ms = parse_duration_ms(options.get_string("ack_wait"));
    if (s.ack_wait_ms <= 0)
      throw Error(ErrorCode::InvalidArgument, "ack_wait=" + printable(options.get_string("ack_wait")) + " of " + s.url +
                                                  " is not a duration: use 30s, 500ms, 2m or a number of milliseconds");
    s.ack_wait_given = options.was_given("ack_wait");
    if (options.was_given("ack_deadline_ms")) {
      const auto ms = options.get_int("ack_deadline_ms");
      if (s.ack_wait_given && ms != s.ack_wait_ms)
        throw Error(ErrorCode::InvalidArgument, "ack_wait and ack_deadline_ms of " + s.url +
                                                    " differ; they are the same setting, give one");
      s.ack_wait_ms = ms;
      s.ack_wait_given = true;
    }
    s.max_deliver = options.get_int("max_deliver");
    if (s.max_deliver == 0)
      throw Error(ErrorCode::InvalidArgument, "max_deliver=0 of " + s.url + ": use -1 (no limit) or at least 1");
    s.max_deliver_given = options.was_given("max_deliver");
    s.max_ack_pending = options.get_int("max_ack_pending");
    if (s.max_ack_pending == 0)
      throw Error(ErrorCode::InvalidArgument, "max_ack_pending=0 of " + s.url + ": use -1 (no limit) or at least 1");
    s.max_ack_pending_given = options.was_given("max_ack_pending");
    s.inactive_threshold_ms = options.get_int("inactive_threshold_ms");
    s.pending_limit = options.get_int("pending_limit");
    if (!s.group.empty()) {
      if (const char* why = name_problem(s.group, s.jetstream()))
        throw Error(ErrorCode::InvalidArgument, "group " + printable(s.group) + " of " + s.url + " " + why +
                                                    (s.jetstream() ? " (it names the JetStream durable consumer)" : ""));
    }
    if (!s.durable.empty()) {
      if (!s.jetstream())
        throw Error(ErrorCode::InvalidArgument, "durable=" + printable(s.durable) + " of " + s.url +
                                                    " needs JetStream (stream=NAME); core NATS subscriptions keep nothing");
      if (const char* why = name_problem(s.durable, true))
        throw Error(ErrorCode::InvalidArgument, "durable consumer name " + printable(s.durable) + " of " + s.url + " " + why);
    }
    if (s.jetstream()) return make_js_receiver(std::move(s));
    for (const char* js_only : {"durable", "max_deliver", "max_ack_pending", "ack_wait", "ack_deadline_ms"}) {
      if (options.was_given(js_only))
        throw Error(ErrorCode::InvalidArgument, std::string(js_only) + " of " + s.url +
                                                    " is a JetStream setting: add stream=NAME (core NATS has no acks)");
    }
    return make_core_receiver(std::move(s));
  }
};

}  // namespace
}  // namespace omnibus::detail::nats

namespace omnibus {

std::shared_ptr<Driver> make_nats_driver() { return std::make_shared<detail::nats::NatsDriver>(); }

}  // namespace omnibus
