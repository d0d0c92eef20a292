// b64_decode on arbitrary bytes, and b64_encode/b64_decode as inverses:
// - decode(encode(x)) == x for any bytes x;
// - whatever decode accepts is the one encoding of its result, encode(decode(x)) == x,
//   so a key or header has a single spelling on the wire.
// Neither function throws: an exception escapes to std::terminate, which
// libFuzzer reports as a crash.

#include <cstddef>
#include <cstdint>

#include "core/base64.hpp"
#include "fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace omnibus;
  auto in = fuzz::as_text(data, size);
  auto decoded = b64_decode(in);
  if (decoded)
    fuzz::check(b64_encode(*decoded) == in, "b64_decode accepts " + fuzz::shown(in) +
                                                ", which is not the encoding of what it decodes to");
  auto encoded = b64_encode(in);
  fuzz::check(encoded.size() == (size + 2) / 3 * 4, "b64_encode output has the wrong length");
  auto back = b64_decode(encoded);
  fuzz::check(back && *back == in, "b64_decode(b64_encode(x)) != x for " + fuzz::shown(in));
  return 0;
}
