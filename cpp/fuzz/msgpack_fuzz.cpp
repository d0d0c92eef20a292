// The msgpack codec (looked up by name, as publishers and subscribers do) on
// arbitrary bytes, with the shared fixed-point property.

#include <cstddef>
#include <cstdint>

#include "codec_check.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const auto msgpack = omnibus::builtin_codec("msgpack");
  omnibus::fuzz::check_codec(*msgpack, omnibus::fuzz::as_text(data, size));
  return 0;
}
