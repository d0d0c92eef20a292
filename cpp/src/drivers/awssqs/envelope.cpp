#include "drivers/awssqs/envelope.hpp"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <set>

#include "core/base64.hpp"
#include "core/utf8.hpp"

namespace omnibus::detail::sqs {
namespace {

bool istarts_with(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(s[i])) != std::tolower(static_cast<unsigned char>(prefix[i])))
      return false;
  return true;
}

void put_u32(std::string& out, std::size_t n) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((n >> shift) & 0xFF));
}

bool get_chunk(std::string_view& in, std::string& out) {
  if (in.size() < 4) return false;
  std::size_t n = 0;
  for (int i = 0; i < 4; ++i) n = (n << 8) | static_cast<unsigned char>(in[i]);
  in.remove_prefix(4);
  if (n > in.size()) return false;
  out.assign(in.substr(0, n));
  in.remove_prefix(n);
  return true;
}

std::optional<Headers> unpack(std::string_view in) {
  Headers out;
  while (!in.empty()) {
    std::string name, value;
    if (!get_chunk(in, name) || !get_chunk(in, value)) return std::nullopt;
    out.emplace_back(std::move(name), std::move(value));
  }
  return out;
}

Attribute value_attribute(std::string name, const std::string& value) {
  if (value.empty()) return {std::move(name), std::string(kEmptyType), std::string(kEmptyBody)};
  return {std::move(name), is_sqs_text(value) ? "String" : "Binary", value};
}

}  // namespace

bool is_sqs_text(std::string_view s) {
  // SQS' character set: #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF
  // (surrogates are not well-formed UTF-8 to begin with).
  for (std::size_t i = 0; i < s.size();) {
    const auto step = utf8_step(s, i);
    if (step.fault != Utf8Fault::None) return false;
    const char32_t cp = step.code_point;
    if (cp < 0x20 && cp != 0x9 && cp != 0xA && cp != 0xD) return false;
    if (cp == 0xFFFE || cp == 0xFFFF) return false;
    i += step.length;
  }
  return true;
}

bool is_attribute_name(std::string_view s) {
  if (s.empty() || s.size() > 256 || s.front() == '.' || s.back() == '.') return false;
  if (s.find("..") != std::string_view::npos) return false;
  if (istarts_with(s, "AWS.") || istarts_with(s, "Amazon.")) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  });
}

std::size_t Encoded::bytes() const {
  std::size_t n = body.size();
  for (const auto& a : attributes) n += a.name.size() + a.type.size() + a.value.size();
  return n;
}

Encoded encode(const OutMessage& m) {
  Encoded e;
  const std::string& payload = *m.payload;
  if (payload.empty()) {
    e.body = kEmptyBody;
    e.attributes.push_back({std::string(kBodyAttr), "String", "empty"});
  } else if (is_sqs_text(payload)) {
    e.body = payload;
  } else {
    e.body = b64_encode(payload);
    e.attributes.push_back({std::string(kBodyAttr), "String", "base64"});
  }
  if (m.key) e.attributes.push_back(value_attribute(std::string(kKeyAttr), *m.key));
  if (m.headers.empty()) return e;

  bool plain = e.attributes.size() + m.headers.size() + (m.headers.size() >= 2 ? 1 : 0) <= kMaxAttributes;
  std::set<std::string> names;
  for (const auto& [name, value] : m.headers) {
    if (!plain) break;
    plain = is_attribute_name(name) && !istarts_with(name, kReservedPrefix) && !value.empty() &&
            names.insert(name).second;
  }
  if (plain) {
    std::string order;
    for (const auto& [name, value] : m.headers) {
      e.attributes.push_back(value_attribute(name, value));
      order += (order.empty() ? "" : ",") + name;
    }
    if (m.headers.size() >= 2) e.attributes.push_back({std::string(kOrderAttr), "String", order});
  } else {
    std::string packed;
    for (const auto& [name, value] : m.headers) {
      put_u32(packed, name.size());
      packed += name;
      put_u32(packed, value.size());
      packed += value;
    }
    e.attributes.push_back({std::string(kHeadersAttr), "Binary", std::move(packed)});
  }
  return e;
}

Decoded decode(std::string body, std::vector<Attribute> attributes) {
  Decoded d;
  d.payload = std::move(body);
  std::optional<std::vector<std::string>> order;
  std::vector<Attribute> rest;
  bool packed = false;
  for (auto& a : attributes) {
    if (a.name == kBodyAttr && !a.binary()) {
      if (a.value == "empty" && d.payload == kEmptyBody) {
        d.payload.clear();
        d.foreign = false;
        continue;
      }
      if (a.value == "base64") {
        if (auto raw = b64_decode(d.payload)) {
          d.payload = std::move(*raw);
          d.foreign = false;
          continue;
        }
      }
    } else if (a.name == kKeyAttr) {
      d.key = a.type == kEmptyType ? std::string() : std::move(a.value);
      d.foreign = false;
      continue;
    } else if (a.name == kOrderAttr && !a.binary()) {
      std::vector<std::string> names;
      std::size_t pos = 0;
      for (;;) {
        auto comma = a.value.find(',', pos);
        names.push_back(a.value.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos));
        if (comma == std::string::npos) break;
        pos = comma + 1;
      }
      order = std::move(names);
      d.foreign = false;
      continue;
    } else if (a.name == kHeadersAttr && a.binary() && !packed) {
      if (auto h = unpack(a.value)) {
        d.headers = std::move(*h);
        packed = true;
        d.foreign = false;
        continue;
      }
    }
    rest.push_back(std::move(a));
  }
  std::sort(rest.begin(), rest.end(), [](const Attribute& x, const Attribute& y) { return x.name < y.name; });
  if (order && order->size() == rest.size()) {
    std::vector<Attribute> ordered;
    for (const auto& name : *order) {
      auto it = std::find_if(rest.begin(), rest.end(), [&](const Attribute& a) { return a.name == name; });
      if (it == rest.end() || std::find_if(ordered.begin(), ordered.end(), [&](const Attribute& a) {
                                return a.name == name;
                              }) != ordered.end())
        break;
      ordered.push_back(*it);
    }
    if (ordered.size() == rest.size()) rest = std::move(ordered);
  }
  for (auto& a : rest)
    d.headers.emplace_back(std::move(a.name), a.type == kEmptyType ? std::string() : std::move(a.value));
  return d;
}

}  // namespace omnibus::detail::sqs
