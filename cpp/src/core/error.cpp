#include "omnibus/error.hpp"

#include "core/utf8.hpp"

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
    const unsigned c = p[i];
    const auto step = detail::utf8_step(s, i);
    if (step.length == 1 && c >= 0x20 && c != 0x7f && c != '\\' && c != '\'') {
      out += char(c);
    } else if (step.length > 1) {
      out.append(s.data() + i, step.length);
      i += step.length;
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
