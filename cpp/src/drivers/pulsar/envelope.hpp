#pragma once
// The pulsar:// envelope: how a message's key and headers travel as a Pulsar
// partition key and message properties, and back. Pure functions over plain
// types, without libpulsar, so that they are unit-tested
// (cpp/tests/pulsar_envelope_test.cpp) and fuzzed on every build;
// pulsar_driver.cpp converts to and from pulsar_message_t.
//
// Pulsar properties are a map of C strings: one value per name, names sorted
// on the way back, no NUL bytes. The key is the partition key (so it routes
// to a partition and to a key_shared consumer) when it is text without NUL;
// any other key goes base64 as the partition key with the property
// omnibus-key-b64 (value "1"; the empty key has no partition key at all). A
// header whose name is non-empty text not starting with "omnibus-", whose
// value is text, and whose name did not come before in the message is a
// property of its own; any other header (a repeat, bytes, a reserved name)
// is the property omnibus-b64-<index>: base64(name):base64(value). When the
// properties' sorted order is not the headers' order, omnibus-order carries
// the property names in order as a JSON array of strings. Properties from
// other clients arrive as headers in name order. The timestamp is Pulsar's
// event time, native.
//
// Thread-safe (no state), does not block, throws nothing but std::bad_alloc.

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "omnibus/message.hpp"

namespace omnibus::detail::pulsar {

inline constexpr std::string_view kKeyB64Property = "omnibus-key-b64";
inline constexpr std::string_view kB64Prefix = "omnibus-b64-";
inline constexpr std::string_view kOrderProperty = "omnibus-order";
inline constexpr std::string_view kReservedPrefix = "omnibus-";

// Text a C string carries unchanged: well-formed UTF-8 without NUL.
bool is_c_text(std::string_view s);

struct Encoded {
  std::optional<std::string> partition_key;
  std::vector<std::pair<std::string, std::string>> properties;  // distinct names
};

Encoded encode(const std::optional<std::string>& key, const Headers& headers);

struct Decoded {
  std::optional<std::string> key;
  Headers headers;
  bool operator==(const Decoded& o) const { return key == o.key && headers == o.headers; }
};

// `properties` as libpulsar hands them out (sorted by name, distinct names).
// Never fails: a property that is not a well-formed one of ours is a header.
Decoded decode(const std::optional<std::string>& partition_key,
               std::vector<std::pair<std::string, std::string>> properties);

}  // namespace omnibus::detail::pulsar
