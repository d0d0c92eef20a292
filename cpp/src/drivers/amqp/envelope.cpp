#include "drivers/amqp/envelope.hpp"

#include <cerrno>
#include <cstdlib>
#include <limits>

namespace omnibus::detail::amqp {

std::vector<std::pair<std::string, std::string>> encode_headers(const OutMessage& m, bool fixed_key) {
  std::vector<std::pair<std::string, std::string>> out;
  encode_headers(m, fixed_key, [&](std::string_view name, const std::string& value) { out.emplace_back(name, value); });
  return out;
}

std::optional<std::int64_t> timestamp_ms(std::uint64_t seconds) {
  // Read as signed, so that a negative time sent by timestamp_seconds() comes back.
  const auto s = static_cast<std::int64_t>(seconds);
  if (s > std::numeric_limits<std::int64_t>::max() / 1000 || s < std::numeric_limits<std::int64_t>::min() / 1000)
    return std::nullopt;
  return s * 1000;
}

namespace {

struct ScalarText {
  std::string operator()(const Void&) const { return std::string(); }
  std::string operator()(bool b) const { return b ? "true" : "false"; }
  std::string operator()(std::int64_t i) const { return std::to_string(i); }
  std::string operator()(std::uint64_t u) const { return std::to_string(u); }
  std::string operator()(double d) const { return std::to_string(d); }
  std::string operator()(const std::string& s) const { return s; }
  std::string operator()(const Binary& b) const { return b.bytes; }
  std::string operator()(const Array&) const { return std::string(); }
  std::string operator()(const NestedTable&) const { return std::string(); }
};

// x-delivery-count as the attempt (count + 1), read as std::stoll reads it
// (leading blanks, a sign, digits up to the first other character). A value
// without digits or out of range is not a count; the attempt then comes from
// the redelivered flag.
std::optional<std::uint32_t> attempt_of(const std::string& text) {
  errno = 0;
  char* end = nullptr;
  const long long n = std::strtoll(text.c_str(), &end, 10);
  if (end == text.c_str() || errno == ERANGE) return std::nullopt;
  return static_cast<std::uint32_t>(n) + 1;
}

}  // namespace

std::string field_text(const Scalar& v) { return std::visit(ScalarText{}, v); }
std::string field_text(const Field& v) { return std::visit(ScalarText{}, v); }

Envelope decode(const ReceivedTable& table, std::string_view routing_key, std::optional<std::uint64_t> timestamp_s) {
  Envelope out;
  bool keyed = false;
  for (const auto& [name, value] : table) {
    if (name == kKeyHeader && !keyed) {
      out.key = field_text(value);
      keyed = true;
      continue;
    }
    // Only a non-string is read as the count: RabbitMQ sends a long, omnibus
    // publishes every header as a string.
    if (name == kDeliveryCountHeader && !std::holds_alternative<std::string>(value)) {
      if (auto attempt = attempt_of(field_text(value))) out.attempt = attempt;
    }
    if (const auto* array = std::get_if<Array>(&value)) {
      for (const auto& item : array->items) out.headers.emplace_back(name, field_text(item));
    } else if (!std::holds_alternative<NestedTable>(value)) {
      out.headers.emplace_back(name, field_text(value));
    }
  }
  if (!keyed && !routing_key.empty()) out.key = std::string(routing_key);
  if (timestamp_s) out.timestamp_ms = timestamp_ms(*timestamp_s);
  return out;
}

}  // namespace omnibus::detail::amqp
