#include "omnibus/url.hpp"

#include <cctype>

#include "omnibus/error.hpp"

namespace omnibus {
namespace {

const char* const kShape =
    "expected scheme://[user[:password]@]host[:port][,host[:port]...][/path][?name=value&...]";

[[noreturn]] void bad(std::string_view text, const std::string& why) {
  throw Error(ErrorCode::InvalidArgument,
              "malformed URL '" + Url::redact(text) + "': " + why + "; " + kShape);
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

HostPort parse_host(std::string_view url_text, std::string_view item) {
  HostPort hp{"", 0};
  std::string_view port;
  if (!item.empty() && item.front() == '[') {
    auto close = item.find(']');
    if (close == std::string_view::npos) bad(url_text, "IPv6 address '" + std::string(item) + "' lacks ']'");
    hp.host = std::string(item.substr(1, close - 1));
    if (hp.host.empty()) bad(url_text, "empty IPv6 address");
    auto rest = item.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') bad(url_text, "expected ':port' after ']' in '" + std::string(item) + "'");
      port = rest.substr(1);
      if (port.empty()) bad(url_text, "empty port in '" + std::string(item) + "'");
    }
  } else {
    auto colon = item.rfind(':');
    if (colon != std::string_view::npos) {
      if (item.find(':') != colon)
        bad(url_text, "host '" + std::string(item) + "' has several ':'; put IPv6 addresses in brackets");
      hp.host = std::string(item.substr(0, colon));
      port = item.substr(colon + 1);
      if (port.empty()) bad(url_text, "empty port in '" + std::string(item) + "'");
    } else {
      hp.host = std::string(item);
    }
    for (char c : hp.host) {
      if (std::isspace(static_cast<unsigned char>(c)) || c == '@' || c == '[' || c == ']')
        bad(url_text, "invalid character in host '" + hp.host + "'");
    }
  }
  if (!port.empty()) {
    unsigned long value = 0;
    for (char c : port) {
      if (c < '0' || c > '9') bad(url_text, "port '" + std::string(port) + "' is not a number");
      value = value * 10 + static_cast<unsigned long>(c - '0');
      if (value > 65535) break;
    }
    if (value == 0 || value > 65535) bad(url_text, "port '" + std::string(port) + "' is not in 1..65535");
    hp.port = static_cast<std::uint16_t>(value);
  }
  return hp;
}

}  // namespace

namespace {
// A bad escape is reported like every other parse error: naming the redacted
// URL, and never echoing the password it was found in.
std::string decode_part(std::string_view url_text, std::string_view s, const std::string& what,
                        bool secret = false) {
  try {
    return percent_decode(s, what);
  } catch (const Error& e) {
    if (secret) bad(url_text, "bad percent-escape in " + what + ": '%' must be followed by two hex digits");
    bad(url_text, e.what());
  }
}
}  // namespace

std::string percent_decode(std::string_view s, std::string_view what) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    int hi = i + 2 < s.size() ? hex_value(s[i + 1]) : -1;
    int lo = i + 2 < s.size() ? hex_value(s[i + 2]) : -1;
    if (hi < 0 || lo < 0) {
      throw Error(ErrorCode::InvalidArgument,
                  "bad percent-escape in " + std::string(what) + " '" + std::string(s) +
                      "': '%' must be followed by two hex digits (write %25 for a literal '%')");
    }
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

std::string Url::redact(std::string_view text) {
  auto sep = text.find("://");
  if (sep == std::string_view::npos) return std::string(text);
  auto start = sep + 3;
  auto end = text.find_first_of("/?", start);
  auto authority = text.substr(start, end == std::string_view::npos ? text.size() - start : end - start);
  auto at = authority.rfind('@');
  if (at == std::string_view::npos) return std::string(text);
  auto colon = authority.substr(0, at).find(':');
  // A lone userinfo is a token in some protocols (nats://TOKEN@host): all of it is masked.
  if (colon == std::string_view::npos) colon = static_cast<std::size_t>(-1);
  std::string out(text.substr(0, start + colon + 1));
  out += "***";
  out += text.substr(start + at);
  return out;
}

Url Url::parse(std::string_view text) {
  Url url;
  url.text = redact(text);
  auto sep = text.find("://");
  if (sep == std::string_view::npos || sep == 0) bad(text, "no scheme");
  for (std::size_t i = 0; i < sep; ++i) {
    char c = text[i];
    bool ok = std::isalpha(static_cast<unsigned char>(c)) ||
              (i > 0 && (std::isdigit(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.'));
    if (!ok) bad(text, "invalid scheme '" + std::string(text.substr(0, sep)) + "'");
    url.scheme.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  for (char c : text) {
    if (static_cast<unsigned char>(c) < 0x20 || c == ' ')
      bad(text, "contains a space or control character; percent-encode it (space is %20)");
  }
  auto rest = text.substr(sep + 3);
  auto auth_end = rest.find_first_of("/?");
  auto authority = rest.substr(0, auth_end);
  rest = auth_end == std::string_view::npos ? std::string_view{} : rest.substr(auth_end);

  auto at = authority.rfind('@');
  if (at != std::string_view::npos) {
    url.has_userinfo = true;
    auto userinfo = authority.substr(0, at);
    auto colon = userinfo.find(':');
    url.user = decode_part(text, userinfo.substr(0, colon), "user name");
    if (colon != std::string_view::npos) url.password = decode_part(text, userinfo.substr(colon + 1), "password", true);
    authority = authority.substr(at + 1);
  }
  std::size_t pos = 0;
  while (true) {
    auto comma = authority.find(',', pos);
    auto item = authority.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
    if (item.empty() && (comma != std::string_view::npos || pos > 0)) bad(text, "empty host in host list");
    url.hosts.push_back(parse_host(text, item));
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }

  std::string_view query;
  auto q = rest.find('?');
  std::string_view path = rest.substr(0, q);
  if (q != std::string_view::npos) query = rest.substr(q + 1);
  if (!path.empty()) url.path = decode_part(text, path.substr(1), "path");

  while (!query.empty()) {
    auto amp = query.find('&');
    auto pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (pair.empty()) continue;
    auto eq = pair.find('=');
    std::string name = decode_part(text, pair.substr(0, eq), "query option name");
    if (name.empty()) bad(text, "query option without a name");
    // "?flag" alone means flag=true, as in most URL-configured clients.
    std::string value = eq == std::string_view::npos ? "true" : decode_part(text, pair.substr(eq + 1), "query option '" + name + "'");
    url.query.emplace_back(std::move(name), std::move(value));
  }
  return url;
}

}  // namespace omnibus
