// The text codec's UTF-8 check on arbitrary bytes, against an independent
// oracle: nlohmann-json's strict serializer, which refuses exactly the strings
// that are not valid UTF-8 (overlong forms, surrogates, past U+10FFFF).
// Accepted payloads must come back unchanged from encode.

#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_util.hpp"
#include "omnibus/codec.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace omnibus;
  static const auto text = builtin_codec("text");
  auto payload = fuzz::as_text(data, size);
  Value value;
  bool ours = fuzz::accepts(ErrorCode::Codec, [&] { value = text->decode(payload); });
  bool oracle = true;
  try {
    Value(std::string(payload)).dump();
  } catch (const nlohmann::json::type_error&) {
    oracle = false;
  }
  fuzz::check(ours == oracle, std::string("check_utf8 ") + (ours ? "accepts " : "rejects ") +
                                  fuzz::shown(payload) + " but nlohmann-json does not");
  if (ours) fuzz::check(text->encode(value) == payload, "text encode(decode(x)) != x");
  return 0;
}
