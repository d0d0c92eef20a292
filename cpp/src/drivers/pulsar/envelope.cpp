#include "drivers/pulsar/envelope.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <set>

#include "core/base64.hpp"
#include "core/utf8.hpp"

namespace omnibus::detail::pulsar {

bool is_c_text(std::string_view s) {
  return s.find('\0') == std::string_view::npos && utf8_invalid_at(s) == std::string_view::npos;
}

namespace {
bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }
}  // namespace

Encoded encode(const std::optional<std::string>& key, const Headers& headers) {
  Encoded out;
  if (key) {
    if (!key->empty() && is_c_text(*key)) {
      out.partition_key = *key;
    } else {
      if (!key->empty()) out.partition_key = b64_encode(*key);
      out.properties.emplace_back(kKeyB64Property, "1");
    }
  }
  std::set<std::string_view> used;
  std::vector<std::string> order;
  for (std::size_t i = 0; i < headers.size(); ++i) {
    const auto& [name, value] = headers[i];
    const bool plain = !name.empty() && is_c_text(name) && !starts_with(name, kReservedPrefix) && is_c_text(value) &&
                       !used.count(name);
    if (plain) {
      used.insert(name);
      order.push_back(name);
      out.properties.emplace_back(name, value);
    } else {
      std::string pname = std::string(kB64Prefix) + std::to_string(i);
      order.push_back(pname);
      out.properties.emplace_back(std::move(pname), b64_encode(name) + ":" + b64_encode(value));
    }
  }
  // libpulsar hands properties back sorted by name (a std::map): say the order when that is not it.
  if (!std::is_sorted(order.begin(), order.end())) out.properties.emplace_back(kOrderProperty, nlohmann::json(order).dump());
  return out;
}

Decoded decode(const std::optional<std::string>& partition_key,
               std::vector<std::pair<std::string, std::string>> properties) {
  Decoded out;
  bool key_b64 = false;
  std::vector<std::string> order;
  std::vector<std::pair<std::string, std::string>> rest;
  for (auto& p : properties) {
    if (p.first == kKeyB64Property && p.second == "1") {
      key_b64 = true;
      continue;
    }
    if (p.first == kOrderProperty) {
      auto j = nlohmann::json::parse(p.second, nullptr, /*allow_exceptions=*/false);
      bool ok = j.is_array() && std::all_of(j.begin(), j.end(), [](const nlohmann::json& e) { return e.is_string(); });
      if (ok) {
        for (const auto& e : j) order.push_back(e.get<std::string>());
        continue;
      }
    }
    rest.push_back(std::move(p));
  }
  if (key_b64) {
    if (!partition_key) out.key = std::string();
    else if (auto k = b64_decode(*partition_key)) out.key = std::move(*k);
    else out.key = partition_key;
  } else {
    out.key = partition_key;
  }
  auto emit = [&](std::pair<std::string, std::string>& p) {
    if (starts_with(p.first, kB64Prefix)) {
      auto colon = p.second.find(':');
      if (colon != std::string::npos) {
        auto n = b64_decode(std::string_view(p.second).substr(0, colon));
        auto v = b64_decode(std::string_view(p.second).substr(colon + 1));
        if (n && v) {
          out.headers.emplace_back(std::move(*n), std::move(*v));
          return;
        }
      }
    }
    out.headers.emplace_back(std::move(p.first), std::move(p.second));
  };
  std::vector<bool> done(rest.size(), false);
  for (const auto& name : order) {
    for (std::size_t i = 0; i < rest.size(); ++i) {
      if (!done[i] && rest[i].first == name) {
        done[i] = true;
        emit(rest[i]);
        break;
      }
    }
  }
  for (std::size_t i = 0; i < rest.size(); ++i)
    if (!done[i]) emit(rest[i]);
  return out;
}

}  // namespace omnibus::detail::pulsar
