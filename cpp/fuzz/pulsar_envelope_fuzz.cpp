// The pulsar:// envelope (cpp/src/drivers/pulsar/envelope.hpp) on arbitrary
// received properties, and its encoder on arbitrary messages. Input:
// records.hpp's lines; a first line of one field is the partition key, every
// other line a property name and its value (a message's headers, for the
// encoder: a name alone is a header with an empty value).
// Properties: decoding never throws; what it returns encodes and decodes back
// to itself; a message built from the same records comes back exactly from
// its encoding, after a model of libpulsar (properties are C strings in a map
// sorted by name, the partition key a C string) has carried it.

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "drivers/pulsar/envelope.hpp"
#include "fuzz_util.hpp"
#include "records.hpp"

namespace {

using namespace omnibus;
using namespace omnibus::detail::pulsar;

std::string c_string(const std::string& s) { return s.substr(0, s.find('\0')); }

// What a consumer gets back from libpulsar for what a producer set.
std::vector<std::pair<std::string, std::string>> via_libpulsar(const std::vector<std::pair<std::string, std::string>>& set) {
  std::map<std::string, std::string> sorted;
  for (const auto& [n, v] : set) sorted[c_string(n)] = c_string(v);
  return {sorted.begin(), sorted.end()};
}

Decoded decoded(const std::optional<std::string>& key, std::vector<std::pair<std::string, std::string>> props) {
  Decoded d;
  fuzz::check(fuzz::accepts(ErrorCode::InvalidArgument, [&] { d = decode(key, std::move(props)); }), "decode threw");
  return d;
}

Decoded round_trip(const Decoded& x) {
  const Encoded e = encode(x.key, x.headers);
  fuzz::check(!e.partition_key || is_c_text(*e.partition_key), "encode made a partition key that is not C text");
  for (const auto& [n, v] : e.properties)
    fuzz::check(is_c_text(n) && is_c_text(v), "encode made a property that is not C text: " + fuzz::shown(n));
  return decoded(e.partition_key, via_libpulsar(e.properties));
}

std::string describe(const Decoded& d) {
  std::string s = "key " + (d.key ? fuzz::shown(*d.key) : std::string("none")) + ", headers";
  for (const auto& [n, v] : d.headers) s += " " + fuzz::shown(n) + "=" + fuzz::shown(v);
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto input = fuzz::as_text(data, size);
  const auto recs = fuzz::records(input);
  std::optional<std::string> key;
  std::size_t first = 0;
  if (!recs.empty() && recs[0].size() == 1) {
    key = recs[0][0];
    first = 1;
  }

  // Received: what another client may have set, as libpulsar hands it out.
  std::vector<std::pair<std::string, std::string>> props;
  for (std::size_t i = first; i < recs.size(); ++i) props.emplace_back(recs[i][0], recs[i].size() > 1 ? recs[i][1] : "");
  const Decoded y = decoded(key ? std::optional<std::string>(c_string(*key)) : std::nullopt, via_libpulsar(props));
  const Decoded again = round_trip(y);
  fuzz::check(again == y, "decode is not a fixed point: " + describe(y) + " comes back as " + describe(again));

  // Sent: any key and headers, in order, repeats and bytes included.
  Decoded x;
  x.key = key;
  for (std::size_t i = first; i < recs.size(); ++i) {
    if (recs[i].size() == 1) x.headers.emplace_back(recs[i][0], std::string());
    for (std::size_t j = 1; j < recs[i].size(); ++j) x.headers.emplace_back(recs[i][0], recs[i][j]);
  }
  const Decoded back = round_trip(x);
  fuzz::check(back == x, "round trip: " + describe(x) + " comes back as " + describe(back));
  return 0;
}
