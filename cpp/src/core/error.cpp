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

}  // namespace omnibus
