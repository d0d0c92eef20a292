#include "drivers/mqtt/envelope.hpp"

#include <cstdlib>

namespace omnibus::detail::mqtt {

const char* utf8_problem(std::string_view s) {
  if (s.size() > kMaxStringBytes) return "longer than 65535 bytes";
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  for (std::size_t i = 0; i < n;) {
    unsigned c = p[i];
    std::size_t len;
    std::uint32_t cp;
    if (c < 0x80) {
      if (c == 0) return "contains U+0000";
      if (c < 0x20 || c == 0x7f) return "contains a control character";
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return "is not valid UTF-8";
    }
    if (i + len > n) return "is not valid UTF-8";
    for (std::size_t j = 1; j < len; ++j) {
      if ((p[i + j] & 0xC0) != 0x80) return "is not valid UTF-8";
      cp = (cp << 6) | (p[i + j] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
      return "is not valid UTF-8 (overlong or out of range)";
    if (cp >= 0xD800 && cp <= 0xDFFF) return "contains a UTF-16 surrogate";
    if (cp >= 0x80 && cp <= 0x9F) return "contains a control character";
    i += len;
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
