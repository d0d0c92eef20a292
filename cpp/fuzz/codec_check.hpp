#pragma once
// The property the json and msgpack targets share: a payload the codec decodes
// re-encodes without error, and that encoding is a fixed point (decoding and
// encoding it again gives the same bytes). Bytes, not values, are compared
// because MessagePack can carry NaN, which never compares equal.

#include <optional>
#include <string>
#include <string_view>

#include "fuzz_util.hpp"
#include "omnibus/codec.hpp"

namespace omnibus::fuzz {

// Returns the decoded value, or nothing when the codec rejected the payload
// with Error(Codec).
inline std::optional<Value> check_codec(const Codec& codec, std::string_view payload) {
  Value value;
  if (!accepts(ErrorCode::Codec, [&] { value = codec.decode(payload); })) return std::nullopt;
  const auto where = " (codec " + codec.name() + ", payload " + shown(payload) + ")";
  std::string once;
  std::string twice;
  if (!accepts(ErrorCode::Codec, [&] { once = codec.encode(value); }))
    fail("a decoded value does not encode again" + where);
  if (!accepts(ErrorCode::Codec, [&] { twice = codec.encode(codec.decode(once)); }))
    fail("the codec rejects its own encoding " + shown(once) + where);
  check(once == twice, "encoding is not a fixed point: " + shown(once) + " then " + shown(twice) + where);
  return value;
}

}  // namespace omnibus::fuzz
