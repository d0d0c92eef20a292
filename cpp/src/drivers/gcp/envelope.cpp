// The gcppubsub:// envelope (envelope.hpp): ordering key and attributes.

#include "drivers/gcp/envelope.hpp"

#include <algorithm>
#include <set>
#include <unordered_map>

#include "core/base64.hpp"
#include "core/utf8.hpp"

namespace omnibus::detail::gcp {

namespace {

bool utf8(std::string_view s) { return utf8_invalid_at(s) == std::string_view::npos; }

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

// A header that Pub/Sub takes as an attribute of its own.
bool plain_header(const std::pair<std::string, std::string>& h) {
  const auto& [name, value] = h;
  return !name.empty() && name.size() <= kMaxAttributeName && utf8(name) && !starts_with(name, "goog") &&
         !starts_with(name, kReservedPrefix) && value.size() <= kMaxAttributeValue && utf8(value);
}

void put_u32(std::string& out, std::size_t n) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((n >> shift) & 0xff));
}

std::string pack(const Headers& headers) {
  std::string out;
  for (const auto& [name, value] : headers) {
    put_u32(out, name.size());
    out += name;
    put_u32(out, value.size());
    out += value;
  }
  return b64_encode(out);
}

std::optional<Headers> unpack(std::string_view text) {
  auto raw = b64_decode(text);
  if (!raw) return std::nullopt;
  std::string_view s = *raw;
  Headers out;
  auto take = [&](std::string& into) {
    if (s.size() < 4) return false;
    std::size_t n = 0;
    for (int i = 0; i < 4; ++i) n = (n << 8) | static_cast<unsigned char>(s[i]);
    s.remove_prefix(4);
    if (s.size() < n) return false;
    into.assign(s.substr(0, n));
    s.remove_prefix(n);
    return true;
  };
  while (!s.empty()) {
    std::pair<std::string, std::string> h;
    if (!take(h.first) || !take(h.second)) return std::nullopt;
    out.push_back(std::move(h));
  }
  return out;
}

// 1 for omnibus-headers, N for omnibus-headers-N (N >= 2, no leading zero), else 0.
std::size_t chunk_index(std::string_view name) {
  if (name.substr(0, kHeadersAttr.size()) != kHeadersAttr) return 0;
  name.remove_prefix(kHeadersAttr.size());
  if (name.empty()) return 1;
  if (name.size() < 2 || name.size() > 4 || name[0] != '-' || name[1] == '0') return 0;
  std::size_t n = 0;
  for (char c : name.substr(1)) {
    if (c < '0' || c > '9') return 0;
    n = n * 10 + static_cast<std::size_t>(c - '0');
  }
  return n >= 2 ? n : 0;
}

std::string order_of(const Headers& headers) {
  std::string out;
  for (const auto& h : headers) out += std::to_string(h.first.size()) + ":" + h.first;
  return out;
}

std::optional<std::vector<std::string>> parse_order(std::string_view s) {
  std::vector<std::string> names;
  while (!s.empty()) {
    std::size_t colon = s.find(':');
    if (colon == 0 || colon == std::string_view::npos || colon > 4) return std::nullopt;
    std::size_t n = 0;
    for (char c : s.substr(0, colon)) {
      if (c < '0' || c > '9') return std::nullopt;
      n = n * 10 + static_cast<std::size_t>(c - '0');
    }
    s.remove_prefix(colon + 1);
    if (s.size() < n) return std::nullopt;
    names.emplace_back(s.substr(0, n));
    s.remove_prefix(n);
  }
  return names;
}

}  // namespace

std::size_t Encoded::overhead() const {
  std::size_t n = ordering_key.size();
  for (const auto& [name, value] : attributes) n += name.size() + value.size();
  return n;
}

Encoded encode(const std::optional<std::string>& key, const Headers& headers) {
  Encoded e;
  if (key) {
    if (!key->empty() && key->size() <= kMaxOrderingKey && utf8(*key)) e.ordering_key = *key;
    else e.attributes.emplace_back(kKeyAttr, b64_encode(*key));
  }
  if (headers.empty()) return e;
  std::set<std::string_view> names;
  bool plain = headers.size() + e.attributes.size() + (headers.size() > 1 ? 1 : 0) <= kMaxAttributes;
  for (const auto& h : headers) {
    if (!plain) break;
    plain = plain_header(h) && names.insert(h.first).second;
  }
  if (plain) {
    std::string order = headers.size() > 1 ? order_of(headers) : std::string();
    if (order.size() > kMaxAttributeValue) plain = false;
    else {
      for (const auto& h : headers) e.attributes.push_back(h);
      if (!order.empty()) e.attributes.emplace_back(kOrderAttr, std::move(order));
    }
  }
  if (!plain) {
    // Pub/Sub takes attribute values of up to 1,024 bytes: longer packed
    // headers continue in omnibus-headers-2, -3, ...
    const std::string packed = pack(headers);
    for (std::size_t at = 0, i = 1; at < packed.size() || i == 1; at += kMaxAttributeValue, ++i)
      e.attributes.emplace_back(i == 1 ? std::string(kHeadersAttr) : std::string(kHeadersAttr) + "-" + std::to_string(i),
                                packed.substr(at, kMaxAttributeValue));
  }
  return e;
}

Decoded decode(const std::string& ordering_key, Attributes attributes) {
  Decoded d;
  if (!ordering_key.empty()) d.key = ordering_key;
  std::sort(attributes.begin(), attributes.end());
  std::optional<std::vector<std::string>> order;
  std::optional<Headers> packed;
  std::vector<std::pair<std::size_t, std::pair<std::string, std::string>>> chunks;  // of omnibus-headers
  Headers rest;
  for (auto& a : attributes) {
    if (std::size_t i = chunk_index(a.first)) {
      chunks.emplace_back(i, std::move(a));
      continue;
    }
    if (a.first == kKeyAttr && !d.key) {
      if (auto k = b64_decode(a.second)) {
        d.key = std::move(*k);
        d.foreign = false;
        continue;
      }
    } else if (a.first == kOrderAttr && !order) {
      if ((order = parse_order(a.second))) {
        d.foreign = false;
        continue;
      }
    }
    rest.push_back(std::move(a));
  }
  if (!chunks.empty()) {
    std::sort(chunks.begin(), chunks.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
    std::string text;
    bool whole = true;
    for (std::size_t i = 0; i < chunks.size() && whole; ++i) {
      whole = chunks[i].first == i + 1;
      text += chunks[i].second.second;
    }
    if (whole && (packed = unpack(text))) {
      d.foreign = false;
    } else {
      packed.reset();
      for (auto& c : chunks) rest.push_back(std::move(c.second));
      std::sort(rest.begin(), rest.end());
    }
  }
  if (packed) {
    d.headers = std::move(*packed);
    for (auto& r : rest) d.headers.push_back(std::move(r));
    return d;
  }
  // omnibus-order applies when it names exactly the attributes left.
  if (order && order->size() == rest.size()) {
    std::unordered_map<std::string_view, std::size_t> at;
    for (std::size_t i = 0; i < rest.size(); ++i) at.emplace(rest[i].first, i);
    std::vector<std::size_t> picks;
    for (const auto& name : *order) {
      auto it = at.find(name);
      if (it == at.end()) break;
      picks.push_back(it->second);
      at.erase(it);
    }
    if (picks.size() == rest.size()) {
      for (auto i : picks) d.headers.push_back(std::move(rest[i]));
      return d;
    }
  }
  d.headers = std::move(rest);
  return d;
}

}  // namespace omnibus::detail::gcp
