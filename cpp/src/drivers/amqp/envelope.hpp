#pragma once
// The amqp:// envelope: how a message's key, headers and timestamp travel in
// an AMQP 0-9-1 publish (routing key, headers table, timestamp property), and
// how a received delivery's become them again. Pure functions over plain
// types, without rabbitmq-c, so that they are unit-tested
// (cpp/tests/amqp_envelope_test.cpp) and fuzzed (cpp/fuzz/amqp_envelope_fuzz.cpp)
// on every build; connection.cpp, sender.cpp and receiver.cpp convert to and from amqp_table_t.
//
// Keys: a message's key is its routing key, unless routing_key= is given (or
// the key is empty): then the routing key is that option and the key travels
// in the header "omnibus-key". A subscriber's key is the first "omnibus-key"
// header when present (removed from the headers), else the delivery's routing
// key, else (empty routing key) none. So keys round-trip exactly between
// omnibus clients, and another client's routing key shows as the key. (An
// application header named "omnibus-key" on a message whose key is its routing
// key, or that has none, is read back as the key: the format cannot tell.)
//
// Headers: an AMQP field table, one entry per header in order, values as
// long strings (AMQP long strings are bytes). A repeated name is written as
// repeated entries, which RabbitMQ passes through unchanged: omnibus sees
// order and repeats end to end; a client that decodes tables into a map
// (pika) sees one of them. Received tables: strings and byte arrays as bytes,
// arrays as one header per element, numbers and booleans as their decimal
// text, nested tables are dropped. A numeric x-delivery-count (RabbitMQ's
// quorum queues count redeliveries in it) gives the delivery attempt.
//
// Timestamp: the timestamp property, whole seconds (AMQP's unit); without one,
// the driver uses the arrival time.
//
// Thread-safe (no state), does not block, throws nothing but std::bad_alloc.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "omnibus/message.hpp"

namespace omnibus::detail::amqp {

inline constexpr std::string_view kKeyHeader = "omnibus-key";
inline constexpr std::string_view kDeliveryCountHeader = "x-delivery-count";

// Whether m's key is its routing key; else the key, when it has one, goes in
// the header. `fixed_key`: the routing_key option was given.
inline bool key_is_routing_key(const OutMessage& m, bool fixed_key) {
  return m.key && !m.key->empty() && !fixed_key;
}

// Calls add(name, value) (std::string_view, const std::string&) for each entry
// of m's headers table, in order; none: the publish has no headers table.
// A template so that the driver fills rabbitmq-c's entries without copies.
template <class Add>
void encode_headers(const OutMessage& m, bool fixed_key, Add&& add) {
  if (m.key && !key_is_routing_key(m, fixed_key)) add(kKeyHeader, *m.key);
  for (const auto& [name, value] : m.headers) add(std::string_view(name), value);
}

// The same, as a list of (name, long string value).
std::vector<std::pair<std::string, std::string>> encode_headers(const OutMessage& m, bool fixed_key);

// The timestamp property for timestamp_ms (truncated to whole seconds; a
// negative time wraps, and comes back from timestamp_ms()).
inline std::uint64_t timestamp_seconds(std::int64_t ms) { return static_cast<std::uint64_t>(ms / 1000); }
// A received timestamp property in milliseconds; none when it does not fit.
std::optional<std::int64_t> timestamp_ms(std::uint64_t seconds);

// A received field value, as far as the driver tells kinds apart: every
// integer kind (and AMQP's timestamp) is an int64_t except u64, f32 is a double
// (same text), void and decimal are Void (empty text).
struct Void {
  bool operator==(const Void&) const { return true; }
};
struct Binary {  // a byte array ('x'): text like a string, but not one
  std::string bytes;
  bool operator==(const Binary& o) const { return bytes == o.bytes; }
};
struct NestedTable {  // dropped, so its content does not matter
  bool operator==(const NestedTable&) const { return true; }
};
using Scalar = std::variant<Void, bool, std::int64_t, std::uint64_t, double, std::string, Binary>;
struct Array {  // an array's arrays and tables are Void
  std::vector<Scalar> items;
  bool operator==(const Array& o) const { return items == o.items; }
};
using Field = std::variant<Void, bool, std::int64_t, std::uint64_t, double, std::string, Binary, Array, NestedTable>;
using ReceivedTable = std::vector<std::pair<std::string, Field>>;

// A field's text: bytes as they are, numbers in decimal (std::to_string),
// booleans true/false, anything else empty.
std::string field_text(const Scalar& v);
std::string field_text(const Field& v);

struct Envelope {
  std::optional<std::string> key;
  Headers headers;
  std::optional<std::int64_t> timestamp_ms;
  std::optional<std::uint32_t> attempt;  // from x-delivery-count

  bool operator==(const Envelope& o) const {
    return key == o.key && headers == o.headers && timestamp_ms == o.timestamp_ms && attempt == o.attempt;
  }
};

// A delivery's key, headers, timestamp and attempt from its headers table (in
// order; empty without one), routing key and timestamp property (when set).
// Never fails.
Envelope decode(const ReceivedTable& table, std::string_view routing_key, std::optional<std::uint64_t> timestamp_s);

}  // namespace omnibus::detail::amqp
