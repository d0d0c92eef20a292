#pragma once
// Base64 (RFC 4648, with padding), for drivers that must carry arbitrary bytes
// (keys, header names and values) in protocol fields that only take text:
// MQTT 5 user properties, NATS headers. Thread-safe, does not block.

#include <optional>
#include <string>
#include <string_view>

namespace omnibus {

std::string b64_encode(std::string_view in);
// nullopt when `in` is not well-formed padded base64, non-zero pad bits included,
// so the result encodes back to `in` exactly.
std::optional<std::string> b64_decode(std::string_view in);

}  // namespace omnibus
