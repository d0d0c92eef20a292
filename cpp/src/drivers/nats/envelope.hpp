#pragma once
// The nats:// envelope: how a message's key, headers and timestamp travel as
// NATS headers, and how received NATS headers become them again. Pure
// functions over plain types, without cnats, so that they are unit-tested
// (cpp/tests/nats_envelope_test.cpp) and fuzzed (cpp/fuzz/nats_envelope_fuzz.cpp)
// on every build; common.cpp converts to and from natsMsg.
//
// Keys and headers: NATS has no key. The key travels as header Omnibus-Key
// (text) or Omnibus-Key-B64 (base64; a lone '=' is the empty key) and the
// publish time, with send_timestamp=true, as Omnibus-Ts (epoch ms). An
// application header whose name is an HTTP token (as NATS and its clients
// parse headers) not starting with "Omnibus-" and whose value is non-empty
// UTF-8 text without control characters or leading/trailing blanks travels
// as itself, so every NATS client sees it; any other header travels as
// Omnibus-B64: base64(name):base64(value). cnats keeps headers in a hash
// table, which loses the order between different names, so a message with
// headers of two or more names also carries Omnibus-Order: the names in
// order, comma-separated; the subscriber rebuilds the exact sequence.
// Headers from other clients arrive as they are (order between names as cnats
// gives it). Received names are compared without regard to case.
//
// Thread-safe (no state), does not block, throws nothing but std::bad_alloc.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "omnibus/message.hpp"

namespace omnibus::detail::nats {

inline constexpr std::string_view kKeyHeader = "Omnibus-Key";
inline constexpr std::string_view kKeyB64Header = "Omnibus-Key-B64";
inline constexpr std::string_view kTimestampHeader = "Omnibus-Ts";
inline constexpr std::string_view kB64Header = "Omnibus-B64";
inline constexpr std::string_view kOrderHeader = "Omnibus-Order";
inline constexpr std::string_view kReservedPrefix = "Omnibus-";
inline constexpr std::size_t kHeaderLineBytes = 10;  // "NATS/1.0\r\n"

// ASCII case-insensitive comparisons, as NATS header names are compared.
bool iequals(std::string_view a, std::string_view b);
bool istarts_with(std::string_view s, std::string_view prefix);
// An HTTP token (RFC 9110 tchar): what NATS clients accept as a header name.
bool is_token(std::string_view s);
// Well-formed UTF-8: no overlong forms, surrogates or code points past U+10FFFF.
bool valid_utf8(std::string_view s);
// A header value that survives cnats and other clients unchanged: non-empty
// (cnats cannot parse an empty value), no control characters (CR and LF end
// the line), no leading or trailing blanks (parsers trim them), UTF-8.
bool is_plain_value(std::string_view v);

struct HeaderFields {
  std::vector<std::pair<std::string, std::string>> fields;  // NATS name, value, in order
  std::size_t bytes = 0;                                     // encoded header block, 0 when none
};

// The NATS headers for m's key, headers and (when send_timestamp) its
// timestamp_ms; no fields when there is nothing to carry (a plain PUB).
HeaderFields encode_headers(const OutMessage& m, bool send_timestamp);

// Received headers as cnats hands them out: each distinct name once, with its
// values in the order they arrived.
using ReceivedHeaders = std::vector<std::pair<std::string, std::vector<std::string>>>;

struct Envelope {
  std::optional<std::string> key;
  Headers headers;
  std::optional<std::int64_t> timestamp_ms;  // from Omnibus-Ts

  bool operator==(const Envelope& o) const {
    return key == o.key && headers == o.headers && timestamp_ms == o.timestamp_ms;
  }
};

// The key, headers and timestamp that `received` carries. Never fails: a
// header that is not a well-formed one of ours arrives as an ordinary header.
Envelope decode_headers(ReceivedHeaders received);

}  // namespace omnibus::detail::nats
