#include "drivers/mqtt/envelope.hpp"

#include <cstdlib>

#include "core/utf8.hpp"

namespace omnibus::detail::mqtt {

const char* utf8_problem(std::string_view s) {
  if (s.size() > kMaxStringBytes) return "longer than 65535 bytes";
  for (std::size_t i = 0; i < s.size();) {
    const auto step = utf8_step(s, i);
    switch (step.fault) {
      case Utf8Fault::None:
        break;
      case Utf8Fault::Surrogate:
        return "contains a UTF-16 surrogate";
      case Utf8Fault::Overlong:
      case Utf8Fault::TooLarge:
        return "is not valid UTF-8 (overlong or out of range)";
      case Utf8Fault::Malformed:
        return "is not valid UTF-8";
    }
    // MQTT forbids U+0000 and advises against the C0 and C1 controls and DEL.
    const char32_t cp = step.code_point;
    if (cp == 0) return "contains U+0000";
    if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9F)) return "contains a control character";
    i += step.length;
  }
  return nullptr;
}

UserProperties encode_user_properties(const OutMessage& m, bool carry, bool send_timestamp) {
  UserProperties out;
  encode_user_properties(m, carry, send_timestamp,
                         [&](std::string_view name, std::string_view value) { out.emplace_back(name, value); });
  return out;
}

namespace {

// Decimal epoch milliseconds, the whole value (strtoll's syntax: leading blanks
// and a sign accepted, out of range saturates). The whole value: a U+0000
// inside (which MQTT forbids) makes it not ours, not the digits before it.
std::optional<std::int64_t> parse_timestamp(std::string_view value) {
  const std::string text(value);
  char* end = nullptr;
  long long ts = std::strtoll(text.c_str(), &end, 10);
  if (end == text.c_str() || end != text.c_str() + text.size()) return std::nullopt;
  return ts;
}

}  // namespace

void decode_user_property(std::string_view name, std::string_view value, Envelope& out) {
  if (name == kKeyProperty) {
    out.key = std::string(value);
    return;
  }
  if (name == kKeyB64Property) {
    if (auto k = b64_decode(value)) {
      out.key = std::move(*k);
      return;
    }
  } else if (name == kTimestampProperty) {
    if (auto ts = parse_timestamp(value)) {
      out.timestamp_ms = *ts;
      return;
    }
  } else if (name == kHeaderB64Property) {
    auto colon = value.find(':');
    if (colon != std::string_view::npos) {
      auto n = b64_decode(value.substr(0, colon));
      auto v = b64_decode(value.substr(colon + 1));
      if (n && v) {
        out.headers.emplace_back(std::move(*n), std::move(*v));
        return;
      }
    }
  }
  out.headers.emplace_back(std::string(name), std::string(value));  // as sent, when not ours
}

Envelope decode_user_properties(const UserProperties& properties) {
  Envelope out;
  for (const auto& [name, value] : properties) decode_user_property(name, value, out);
  return out;
}

}  // namespace omnibus::detail::mqtt
