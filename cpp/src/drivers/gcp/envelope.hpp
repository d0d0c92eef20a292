#pragma once
// The gcppubsub:// envelope: how a message's key and headers travel as a
// Pub/Sub message's ordering key and attributes, and how a received one's
// become them again. Pure functions over plain types, without gRPC, so that
// they are unit-tested (cpp/tests/gcp_envelope_test.cpp) on every build; the
// driver converts to and from the generated PubsubMessage.
//
// Payload: Pub/Sub's `data` is bytes, so the payload travels as it is.
//
// Key: Pub/Sub's ordering key (UTF-8, at most 1,024 bytes), so that a
// subscription with message ordering keeps each key's order and every Pub/Sub
// client sees the key. A key that cannot be an ordering key (the empty key,
// bytes that are not UTF-8, longer keys) travels as the attribute omnibus-key,
// base64-encoded, and without an ordering key.
//
// Headers: Pub/Sub attributes are an unordered map of UTF-8 names (1..256
// bytes, not starting with "goog") to UTF-8 values (at most 1,024 bytes), 100
// at most. When every header fits -- distinct names, not starting with
// "omnibus-", values in range, and 100 attributes in all -- each header is an
// attribute of its own, so every Pub/Sub client sees it, and a message of two
// or more headers carries omnibus-order: their names in order, each name's
// length in decimal, a colon, then the name (so names may hold any
// character). Any other set of headers travels packed in one attribute
// omnibus-headers: base64 of, per header, a 4-byte big-endian length and the
// name, then the same for the value; text beyond Pub/Sub's 1,024 bytes a value
// continues in omnibus-headers-2, -3, ... (so about 100 KiB of such headers at
// most: Pub/Sub refuses more than 100 attributes).
//
// Received attributes that are not omnibus-* ones are headers: in the order
// omnibus-order gives when it names exactly them, else sorted by name (an
// omnibus-order naming others is dropped). Any other malformed omnibus-*
// attribute (packed headers with a piece missing, too) arrives as an ordinary
// header instead of being lost.
//
// Thread-safe (no state), does not block, throws nothing but std::bad_alloc.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "omnibus/message.hpp"

namespace omnibus::detail::gcp {

inline constexpr std::string_view kKeyAttr = "omnibus-key";
inline constexpr std::string_view kHeadersAttr = "omnibus-headers";
inline constexpr std::string_view kOrderAttr = "omnibus-order";
inline constexpr std::string_view kReservedPrefix = "omnibus-";
inline constexpr std::size_t kMaxOrderingKey = 1024;
inline constexpr std::size_t kMaxAttributes = 100;
inline constexpr std::size_t kMaxAttributeName = 256;
inline constexpr std::size_t kMaxAttributeValue = 1024;

using Attributes = std::vector<std::pair<std::string, std::string>>;

struct Encoded {
  std::string ordering_key;  // empty: none
  Attributes attributes;
  // Bytes of the key and attributes as Pub/Sub counts them against its
  // request limit (names and values), without the payload.
  std::size_t overhead() const;
};

Encoded encode(const std::optional<std::string>& key, const Headers& headers);

struct Decoded {
  std::optional<std::string> key;
  Headers headers;
  bool foreign = true;  // no omnibus-* attribute: another client sent it

  bool operator==(const Decoded& o) const {
    return key == o.key && headers == o.headers && foreign == o.foreign;
  }
};

// Never fails: what is not a well-formed omnibus envelope arrives as it is.
// `attributes` in any order (Pub/Sub's map has none).
Decoded decode(const std::string& ordering_key, Attributes attributes);

}  // namespace omnibus::detail::gcp
