// The json codec (looked up by name, as publishers and subscribers do) on
// arbitrary bytes. Besides the shared fixed-point property: JSON has no NaN,
// so the value itself survives encode/decode, and it survives a trip through
// the msgpack codec too.

#include <cstddef>
#include <cstdint>

#include "codec_check.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace omnibus;
  static const auto json = builtin_codec("json");
  static const auto msgpack = builtin_codec("msgpack");
  auto payload = fuzz::as_text(data, size);
  auto value = fuzz::check_codec(*json, payload);
  if (!value) return 0;
  fuzz::check(json->decode(json->encode(*value)) == *value,
              "value changes across json encode/decode for " + fuzz::shown(payload));
  Value via;
  if (!fuzz::accepts(ErrorCode::Codec, [&] { via = msgpack->decode(msgpack->encode(*value)); }))
    fuzz::fail("msgpack cannot carry a JSON value: " + fuzz::shown(payload));
  fuzz::check(via == *value, "value changes across msgpack encode/decode for " + fuzz::shown(payload));
  return 0;
}
