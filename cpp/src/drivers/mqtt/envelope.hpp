#pragma once
// The mqtt:// envelope: how a message's key, headers and timestamp travel as
// MQTT 5 user properties, and how received user properties become them again.
// Pure functions over plain types, without Paho, so that they are unit-tested
// (cpp/tests/mqtt_envelope_test.cpp) and fuzzed (cpp/fuzz/mqtt_envelope_fuzz.cpp)
// on every build; mqtt_driver.cpp converts to and from Paho's properties.
//
// Keys and headers travel as user properties, in this order: the key as
// "omnibus-key" (or "omnibus-key-b64", base64, when it is not text MQTT
// accepts), with send_timestamp=true the publish time as "omnibus-ts" (decimal
// epoch milliseconds), then each header as one user property, in order,
// repeats kept: user properties are a list, so nothing else is needed to keep
// the order. A header whose name or value MQTT cannot carry as a UTF-8 string
// (not UTF-8, U+0000, control characters), whose name is empty, or whose name
// starts with "omnibus-", travels as ("omnibus-b64", base64(name) + ":" +
// base64(value)). Other MQTT 5 clients see ordinary user properties; what they
// publish arrives as headers. Names are compared exactly (MQTT strings are
// case-sensitive).
//
// Thread-safe (no state), does not block, throws nothing but std::bad_alloc.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/base64.hpp"
#include "omnibus/message.hpp"

namespace omnibus::detail::mqtt {

inline constexpr std::size_t kMaxStringBytes = 65535;  // a UTF-8 string's 2-byte length prefix

inline constexpr std::string_view kKeyProperty = "omnibus-key";
inline constexpr std::string_view kKeyB64Property = "omnibus-key-b64";
inline constexpr std::string_view kTimestampProperty = "omnibus-ts";
inline constexpr std::string_view kHeaderB64Property = "omnibus-b64";
inline constexpr std::string_view kReservedPrefix = "omnibus-";

// Why `s` cannot travel as an MQTT UTF-8 string, or nullptr when it can.
// MQTT (3.1.1 §1.5.3, 5 §1.5.4) requires well-formed UTF-8 without U+0000 and
// surrogates; Mosquitto also closes the connection on control characters
// (U+0001..U+001F, U+007F..U+009F, which the spec says SHOULD NOT appear), so
// they are refused here too rather than costing the connection.
const char* utf8_problem(std::string_view s);

// Whether a header travels as itself (else as omnibus-b64).
inline bool is_plain_header(std::string_view name, std::string_view value) {
  return !utf8_problem(name) && !utf8_problem(value) && !name.empty() &&
         name.compare(0, kReservedPrefix.size(), kReservedPrefix) != 0;
}

// Calls add(name, value) (two std::string_view, valid for the call only) for
// each user property that carries m, in order. `carry`: the key and headers
// (false: drop_headers=true, only the timestamp may go). A template so that
// the driver adds straight into Paho's properties without an extra list.
template <class Add>
void encode_user_properties(const OutMessage& m, bool carry, bool send_timestamp, Add&& add) {
  if (carry && m.key) {
    if (utf8_problem(*m.key)) add(kKeyB64Property, std::string_view(b64_encode(*m.key)));
    else add(kKeyProperty, std::string_view(*m.key));
  }
  if (send_timestamp) add(kTimestampProperty, std::string_view(std::to_string(m.timestamp_ms)));
  if (carry) {
    for (const auto& [name, value] : m.headers) {
      if (is_plain_header(name, value)) add(std::string_view(name), std::string_view(value));
      else add(kHeaderB64Property, std::string_view(b64_encode(name) + ":" + b64_encode(value)));
    }
  }
}

using UserProperties = std::vector<std::pair<std::string, std::string>>;

// The same, as a list.
UserProperties encode_user_properties(const OutMessage& m, bool carry, bool send_timestamp);

struct Envelope {
  std::optional<std::string> key;
  Headers headers;
  std::optional<std::int64_t> timestamp_ms;  // from omnibus-ts

  bool operator==(const Envelope& o) const {
    return key == o.key && headers == o.headers && timestamp_ms == o.timestamp_ms;
  }
};

// Adds one received user property to `out`, in arrival order. Never fails: a
// property that is not a well-formed one of ours arrives as a header, as sent.
// A later key or timestamp replaces an earlier one.
void decode_user_property(std::string_view name, std::string_view value, Envelope& out);

// Every property of a message, in order.
Envelope decode_user_properties(const UserProperties& properties);

}  // namespace omnibus::detail::mqtt
