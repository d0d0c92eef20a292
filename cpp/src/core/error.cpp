#include "omnibus/error.hpp"

namespace omnibus {
namespace {
constexpr ErrorInfo kTable[] = {
#define OMNIBUS_ERROR(code, py_name, py_base, retryable, doc) \
  {ErrorCode::code, #code, py_name, py_base, retryable, doc},
#include "omnibus/error_codes.def"
#undef OMNIBUS_ERROR
};
}  // namespace

const ErrorInfo* error_table(std::size_t* count) noexcept {
  *count = sizeof(kTable) / sizeof(kTable[0]);
  return kTable;
}

const ErrorInfo& error_info(ErrorCode code) noexcept {
  return kTable[static_cast<std::size_t>(code)];
}

Error::Error(ErrorCode code, const std::string& message, int native_code)
    : Error(code, message, native_code, error_info(code).retryable) {}

Error::Error(ErrorCode code, const std::string& message, int native_code, bool retryable)
    : std::runtime_error(message), code_(code), native_code_(native_code), retryable_(retryable) {}

std::string printable(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "'";
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (std::size_t i = 0; i < s.size();) {
    unsigned c = p[i];
    // Length of a well-formed UTF-8 sequence starting here, 0 if none.
    std::size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 && c >= 0xC2 ? 2 : (c & 0xF0) == 0xE0 ? 3
                    : (c & 0xF8) == 0xF0 && c <= 0xF4 ? 4 : 0;
    for (std::size_t j = 1; len && j < len; ++j)
      if (i + j >= s.size() || (p[i + j] & 0xC0) != 0x80) len = 0;
    if (len == 1 && c >= 0x20 && c != 0x7f && c != '\\' && c != '\'') {
      out += char(c);
    } else if (len > 1) {
      out.append(s.data() + i, len);
      i += len;
      continue;
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
    ++i;
  }
  return out + "'";
}

}  // namespace omnibus
