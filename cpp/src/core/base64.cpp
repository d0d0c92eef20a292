#include "core/base64.hpp"

#include <cstdint>

namespace omnibus {

namespace {
constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}  // namespace

std::string b64_encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    std::uint32_t v = (std::uint8_t(in[i]) << 16) | (std::uint8_t(in[i + 1]) << 8) | std::uint8_t(in[i + 2]);
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += kB64[v & 63];
  }
  if (i < in.size()) {
    std::uint32_t v = std::uint8_t(in[i]) << 16;
    if (i + 1 < in.size()) v |= std::uint8_t(in[i + 1]) << 8;
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += i + 1 < in.size() ? kB64[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::optional<std::string> b64_decode(std::string_view in) {
  if (in.size() % 4) return std::nullopt;
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  out.reserve(in.size() / 4 * 3);
  for (std::size_t i = 0; i < in.size(); i += 4) {
    int a = value(in[i]), b = value(in[i + 1]);
    int c = in[i + 2] == '=' ? -2 : value(in[i + 2]);
    int d = in[i + 3] == '=' ? -2 : value(in[i + 3]);
    bool last = i + 4 == in.size();
    if (a < 0 || b < 0 || c == -1 || d == -1 || (c == -2 && d != -2) || ((c == -2 || d == -2) && !last))
      return std::nullopt;
    // The bits that padding leaves over must be zero (RFC 4648 section 3.5): otherwise
    // "QR==" would decode like "QQ==", and one key or header would have several
    // spellings on the wire. Found by cpp/fuzz/base64_fuzz.cpp.
    if ((c == -2 && (b & 0x0F)) || (c >= 0 && d == -2 && (c & 0x03))) return std::nullopt;
    std::uint32_t v = (a << 18) | (b << 12) | ((c < 0 ? 0 : c) << 6) | (d < 0 ? 0 : d);
    out += char(v >> 16);
    if (c >= 0) out += char((v >> 8) & 0xFF);
    if (d >= 0) out += char(v & 0xFF);
  }
  return out;
}

}  // namespace omnibus
