// The gcppubsub:// envelope (cpp/src/drivers/gcp/envelope.hpp) on arbitrary
// received ordering keys and attributes, and its encoder on arbitrary keys and
// headers. Input: records.hpp's lines. As received: the first record's first
// field is the ordering key, every later record an attribute (name, value).
// As sent: the first record's first field, when there is a second one, is
// the key; later records are headers. Properties: decoding never throws; what
// it returns encodes and decodes back to itself; a key and headers come back
// exactly from their encoding after a model of Pub/Sub has reordered the
// attributes; an encoding keeps Pub/Sub's limits (100 attributes, UTF-8 names
// of 1..256 bytes not starting with "goog", UTF-8 values up to 1,024 bytes,
// an ordering key of UTF-8 up to 1,024 bytes).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <set>

#include "core/utf8.hpp"
#include "drivers/gcp/envelope.hpp"
#include "fuzz_util.hpp"
#include "records.hpp"

namespace {

using namespace omnibus;
using namespace omnibus::detail::gcp;

bool utf8(std::string_view s) { return detail::utf8_invalid_at(s) == std::string_view::npos; }

Decoded decoded(const std::string& ordering_key, Attributes attrs) {
  Decoded d;
  fuzz::check(fuzz::accepts(ErrorCode::InvalidArgument, [&] { d = decode(ordering_key, std::move(attrs)); }),
              "decode threw");
  return d;
}

Decoded round_trip(const std::optional<std::string>& key, const Headers& headers) {
  Encoded e = encode(key, headers);
  // Headers of over ~100 KiB packed need more attributes than Pub/Sub takes
  // (it refuses such a message); the fuzzer's inputs stay far below that.
  fuzz::check(e.attributes.size() <= kMaxAttributes, "more than 100 attributes");
  fuzz::check(e.ordering_key.size() <= kMaxOrderingKey && utf8(e.ordering_key),
              "an ordering key Pub/Sub refuses: " + fuzz::shown(e.ordering_key));
  std::set<std::string> names;
  for (const auto& [name, value] : e.attributes) {
    fuzz::check(!name.empty() && name.size() <= kMaxAttributeName && utf8(name) && name.rfind("goog", 0) != 0,
                "an attribute name Pub/Sub refuses: " + fuzz::shown(name));
    fuzz::check(value.size() <= kMaxAttributeValue, "an attribute value over 1,024 bytes: " + fuzz::shown(name));
    fuzz::check(utf8(value), "an attribute value that is not UTF-8: " + fuzz::shown(value));
    fuzz::check(names.insert(name).second, "a repeated attribute name: " + fuzz::shown(name));
  }
  std::reverse(e.attributes.begin(), e.attributes.end());  // Pub/Sub hands out a map
  return decoded(e.ordering_key, std::move(e.attributes));
}

std::string describe(const Decoded& d) {
  std::string s = "key " + (d.key ? fuzz::shown(*d.key) : std::string("none")) + ", headers";
  for (const auto& [n, v] : d.headers) s += " " + fuzz::shown(n) + "=" + fuzz::shown(v);
  return s;
}

bool same(const Decoded& a, const Decoded& b) { return a.key == b.key && a.headers == b.headers; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto input = fuzz::as_text(data, size);
  const auto recs = fuzz::records(input);
  if (recs.empty()) return 0;

  Attributes attrs;
  for (std::size_t i = 1; i < recs.size(); ++i) attrs.emplace_back(recs[i][0], recs[i].size() > 1 ? recs[i][1] : "");
  const Decoded y = decoded(recs[0][0], attrs);
  const Decoded again = round_trip(y.key, y.headers);
  fuzz::check(same(again, y), "decode is not a fixed point: " + describe(y) + " comes back as " + describe(again));

  Decoded x;
  if (recs[0].size() > 1) x.key = recs[0][1];
  for (std::size_t i = 1; i < recs.size(); ++i) x.headers.emplace_back(recs[i][0], recs[i].size() > 1 ? recs[i][1] : "");
  const Decoded back = round_trip(x.key, x.headers);
  fuzz::check(same(back, x), "round trip: " + describe(x) + " comes back as " + describe(back));
  return 0;
}
