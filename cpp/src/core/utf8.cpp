#include "core/utf8.hpp"

namespace omnibus::detail {

Utf8Step utf8_step(std::string_view s, std::size_t i) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const unsigned c = p[i];
  if (c < 0x80) return {1, c, Utf8Fault::None};
  std::size_t len;
  char32_t cp;
  if ((c & 0xE0) == 0xC0) {
    len = 2;
    cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    len = 3;
    cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    len = 4;
    cp = c & 0x07;
  } else {
    return {0, 0, Utf8Fault::Malformed};
  }
  if (i + len > s.size()) return {0, 0, Utf8Fault::Malformed};
  for (std::size_t j = 1; j < len; ++j) {
    if ((p[i + j] & 0xC0) != 0x80) return {0, 0, Utf8Fault::Malformed};
    cp = (cp << 6) | (p[i + j] & 0x3F);
  }
  static constexpr char32_t kShortest[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kShortest[len]) return {0, 0, Utf8Fault::Overlong};
  if (cp > 0x10FFFF) return {0, 0, Utf8Fault::TooLarge};
  if (cp >= 0xD800 && cp <= 0xDFFF) return {0, 0, Utf8Fault::Surrogate};
  return {len, cp, Utf8Fault::None};
}

std::size_t utf8_invalid_at(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto step = utf8_step(s, i);
    if (step.fault != Utf8Fault::None) return i;
    i += step.length;
  }
  return std::string_view::npos;
}

}  // namespace omnibus::detail
