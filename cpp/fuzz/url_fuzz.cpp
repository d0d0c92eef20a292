// Url::parse and percent_decode on arbitrary bytes. Properties:
// - a parsed URL, written back with every component percent-encoded, parses to
//   the same components (so nothing the parser keeps depends on how it was spelt);
// - percent_decode inverts percent-encoding of any bytes, in either hex case;
// - rejections are Error(InvalidArgument), never another exception.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_util.hpp"
#include "omnibus/url.hpp"

namespace omnibus {
namespace {

std::string encode_all(std::string_view s, bool upper) {
  const char* hex = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  std::string out;
  for (char c : s) {
    auto b = static_cast<unsigned char>(c);
    if ((b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9')) {
      out.push_back(c);
    } else {
      out += '%';
      out += hex[b >> 4];
      out += hex[b & 15];
    }
  }
  return out;
}

// Hosts are not percent-decoded, so they are written back as they are; one
// with a ':' or '[' can only have come from brackets.
std::string rebuild(const Url& u, bool upper) {
  std::string out = u.scheme + "://";
  if (u.has_userinfo) out += encode_all(u.user, upper) + ":" + encode_all(u.password, upper) + "@";
  for (std::size_t i = 0; i < u.hosts.size(); ++i) {
    const auto& h = u.hosts[i];
    if (i) out += ',';
    out += h.host.find_first_of(":[") != std::string::npos ? "[" + h.host + "]" : h.host;
    if (h.port) out += ":" + std::to_string(h.port);
  }
  if (!u.path.empty()) out += "/" + encode_all(u.path, upper);
  for (std::size_t i = 0; i < u.query.size(); ++i)
    out += (i ? "&" : "?") + encode_all(u.query[i].first, upper) + "=" + encode_all(u.query[i].second, upper);
  return out;
}

void same(const Url& a, const Url& b, std::string_view input) {
  auto where = " for input " + fuzz::shown(input);
  fuzz::check(a.scheme == b.scheme, "scheme differs after a round trip" + where);
  fuzz::check(a.has_userinfo == b.has_userinfo && a.user == b.user && a.password == b.password,
              "userinfo differs after a round trip" + where);
  fuzz::check(a.hosts.size() == b.hosts.size(), "host count differs after a round trip" + where);
  for (std::size_t i = 0; i < a.hosts.size(); ++i)
    fuzz::check(a.hosts[i].host == b.hosts[i].host && a.hosts[i].port == b.hosts[i].port,
                "host " + std::to_string(i) + " differs after a round trip" + where);
  fuzz::check(a.path == b.path, "path differs after a round trip" + where);
  fuzz::check(a.query == b.query, "query differs after a round trip" + where);
}

void fuzz_parse(std::string_view in) {
  Url url;
  if (!fuzz::accepts(ErrorCode::InvalidArgument, [&] { url = Url::parse(in); })) return;
  fuzz::check(!url.scheme.empty() && !url.hosts.empty(), "parsed URL without scheme or host");
  std::string again = rebuild(url, in.size() % 2 == 0);
  Url reparsed;
  if (!fuzz::accepts(ErrorCode::InvalidArgument, [&] { reparsed = Url::parse(again); }))
    fuzz::fail("rebuilt URL " + fuzz::shown(again) + " is rejected; input " + fuzz::shown(in));
  same(url, reparsed, in);
}

void fuzz_percent_decode(std::string_view in) {
  std::string out;
  if (fuzz::accepts(ErrorCode::InvalidArgument, [&] { out = percent_decode(in, "fuzz input"); })) {
    fuzz::check(out.size() <= in.size(), "percent_decode grew its input");
    if (in.find('%') == std::string_view::npos) fuzz::check(out == in, "percent_decode changed text without '%'");
  }
  for (bool upper : {false, true}) {
    std::string back;
    if (!fuzz::accepts(ErrorCode::InvalidArgument, [&] { back = percent_decode(encode_all(in, upper), "fuzz"); }))
      fuzz::fail("percent_decode rejects a percent-encoding");
    fuzz::check(back == in, "percent_decode(encode(x)) != x for " + fuzz::shown(in));
  }
}

}  // namespace
}  // namespace omnibus

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto in = omnibus::fuzz::as_text(data, size);
  omnibus::fuzz_parse(in);
  omnibus::fuzz_percent_decode(in);
  return 0;
}
