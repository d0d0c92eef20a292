#pragma once
// The engine's one UTF-8 decoder (RFC 3629, well-formed sequences only): the
// text codec, the MQTT, NATS and SQS envelopes and anything else that must
// know whether bytes are text share it, so they cannot disagree on what text
// is. Each caller adds its protocol's own rules (which code points it
// forbids) on the decoded values. Thread-safe, does not block or throw.

#include <cstddef>
#include <string_view>

namespace omnibus::detail {

enum class Utf8Fault {
  None,
  Malformed,  // not a lead byte, a bad continuation byte, or cut off by the end
  Overlong,   // a longer form than the code point needs
  Surrogate,  // U+D800..U+DFFF: UTF-16's, never a code point of its own
  TooLarge,   // past U+10FFFF
};

struct Utf8Step {
  std::size_t length;  // bytes of the sequence; 0 with a fault
  char32_t code_point;
  Utf8Fault fault;
};

// Decodes the sequence starting at s[i] (i < s.size()).
Utf8Step utf8_step(std::string_view s, std::size_t i);

// Offset of the first ill-formed sequence; npos when `s` is well-formed UTF-8.
std::size_t utf8_invalid_at(std::string_view s);

}  // namespace omnibus::detail
