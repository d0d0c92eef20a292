#pragma once
// Error taxonomy shared by every driver. The codes come from error_codes.def.

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace omnibus {

enum class ErrorCode : std::uint8_t {
#define OMNIBUS_ERROR(code, py_name, py_base, retryable, doc) code,
#include "omnibus/error_codes.def"
#undef OMNIBUS_ERROR
};

// One row of error_codes.def, for code that needs the whole table (bindings, docs).
struct ErrorInfo {
  ErrorCode code;
  const char* name;         // C++ enumerator name, e.g. "Codec"
  const char* python_name;  // e.g. "CodecError"
  const char* python_base;  // builtin base class name, "" for none
  bool retryable;           // default retryability of this code
  const char* doc;
};

// The table, in declaration order. Thread-safe (immutable).
const ErrorInfo* error_table(std::size_t* count) noexcept;
const ErrorInfo& error_info(ErrorCode code) noexcept;

// The exception every omnibus API throws. Copyable, so per-message delivery
// results can carry one. `native_code` is the wrapped library's own code
// (librdkafka rd_kafka_resp_err_t, ...), 0 when there is none.
class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message, int native_code = 0);
  Error(ErrorCode code, const std::string& message, int native_code, bool retryable);

  ErrorCode code() const noexcept { return code_; }
  int native_code() const noexcept { return native_code_; }
  bool retryable() const noexcept { return retryable_; }

 private:
  ErrorCode code_;
  int native_code_;
  bool retryable_;
};

// `s` quoted for an error message: control bytes (NUL, newline, ...) and
// bytes >= 0x7f that are not part of valid UTF-8 are written as \xNN, so a
// message never carries a NUL (which would cut it short) and shows what was
// really given. Thread-safe; does not throw beyond std::bad_alloc.
std::string printable(std::string_view s);

}  // namespace omnibus
