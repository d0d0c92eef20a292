#include "drivers/nats/envelope.hpp"

#include <cctype>
#include <cstdlib>
#include <cstring>
#include <deque>

#include "core/base64.hpp"
#include "core/utf8.hpp"

namespace omnibus::detail::nats {

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

bool istarts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (std::isalnum(c)) continue;
    // c == 0: strchr would find the terminator.
    if (!std::strchr("!#$%&'*+-.^_`|~", c) || c == 0) return false;
  }
  return true;
}

bool valid_utf8(std::string_view s) { return utf8_invalid_at(s) == std::string_view::npos; }

bool is_plain_value(std::string_view v) {
  if (v.empty() || v.front() == ' ' || v.back() == ' ') return false;
  for (unsigned char c : v)
    if (c < 0x20 || c == 0x7f) return false;
  return valid_utf8(v);
}

HeaderFields encode_headers(const OutMessage& m, bool send_timestamp) {
  HeaderFields h;
  if (!m.key && m.headers.empty() && !send_timestamp) return h;
  auto add = [&](std::string name, std::string value) {
    h.bytes += name.size() + 2 + value.size() + 2;
    h.fields.emplace_back(std::move(name), std::move(value));
  };
  if (m.key) {
    if (is_plain_value(*m.key)) add(std::string(kKeyHeader), *m.key);
    else add(std::string(kKeyB64Header), m.key->empty() ? std::string("=") : b64_encode(*m.key));
  }
  if (send_timestamp) add(std::string(kTimestampHeader), std::to_string(m.timestamp_ms));
  std::string order;
  std::string first;
  bool several = false;
  for (const auto& [name, value] : m.headers) {
    const bool plain = is_token(name) && !istarts_with(name, kReservedPrefix) && is_plain_value(value);
    std::string nats_name = plain ? name : std::string(kB64Header);
    if (first.empty()) first = nats_name;
    else if (nats_name != first) several = true;
    if (!order.empty()) order += ',';
    order += nats_name;
    if (plain) add(name, value);
    else add(std::move(nats_name), b64_encode(name) + ":" + b64_encode(value));
  }
  if (several) add(std::string(kOrderHeader), std::move(order));
  h.bytes += kHeaderLineBytes + 2;
  return h;
}

namespace {

// Decimal epoch milliseconds, the whole value (strtoll's syntax: leading blanks
// and a sign accepted, out of range saturates).
std::optional<std::int64_t> parse_timestamp(const std::string& v) {
  char* end = nullptr;
  long long ts = std::strtoll(v.c_str(), &end, 10);
  if (end == v.c_str() || end != v.c_str() + v.size()) return std::nullopt;
  return ts;
}

}  // namespace

Envelope decode_headers(ReceivedHeaders received) {
  Envelope out;
  std::vector<std::pair<std::string, std::deque<std::string>>> by_name;
  std::string order;
  for (auto& [k, values] : received) {
    const bool one = values.size() == 1;
    if (one && iequals(k, kKeyHeader)) {
      out.key = std::move(values[0]);
      continue;
    }
    if (one && iequals(k, kKeyB64Header)) {
      if (values[0] == "=") {
        out.key = std::string();
        continue;
      }
      if (auto d = b64_decode(values[0])) {
        out.key = std::move(*d);
        continue;
      }
    }
    if (one && iequals(k, kTimestampHeader)) {
      if (auto ts = parse_timestamp(values[0])) {
        out.timestamp_ms = *ts;
        continue;
      }
    }
    if (one && iequals(k, kOrderHeader)) {
      order = std::move(values[0]);
      continue;
    }
    auto& slot = by_name.emplace_back(std::move(k), std::deque<std::string>{});
    for (auto& v : values) slot.second.push_back(std::move(v));
  }
  auto emit = [&](const std::string& name, std::string value) {
    if (iequals(name, kB64Header)) {
      auto colon = value.find(':');
      if (colon != std::string::npos) {
        auto n = b64_decode(std::string_view(value).substr(0, colon));
        auto v = b64_decode(std::string_view(value).substr(colon + 1));
        if (n && v) {
          out.headers.emplace_back(std::move(*n), std::move(*v));
          return;
        }
      }
    }
    out.headers.emplace_back(name, std::move(value));
  };
  // Omnibus-Order names one value per entry; a name it lists more often than
  // the name has values, or that is missing, is skipped. What it does not
  // name follows, name by name.
  if (!order.empty()) {
    std::size_t start = 0;
    for (;;) {
      std::size_t end = order.find(',', start);
      std::string_view name =
          std::string_view(order).substr(start, end == std::string::npos ? std::string::npos : end - start);
      for (auto& [n, values] : by_name) {
        if (n == name && !values.empty()) {
          emit(n, std::move(values.front()));
          values.pop_front();
          break;
        }
      }
      if (end == std::string::npos) break;
      start = end + 1;
    }
  }
  for (auto& [n, values] : by_name)
    for (auto& v : values) emit(n, std::move(v));
  return out;
}

}  // namespace omnibus::detail::nats
