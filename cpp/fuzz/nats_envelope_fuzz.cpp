// The nats:// envelope decoder (cpp/src/drivers/nats/envelope.hpp) on arbitrary
// received headers, and its encoder on arbitrary messages. Input: records.hpp's
// lines, each a header name and its values as cnats hands them out.
// Properties: decoding never throws; what it returns encodes and decodes back
// to itself; a message built from the same records (the first record, when it
// is a lone field, as the key) comes back exactly from its encoding, after a
// model of cnats' header table has grouped it by name and lost the order
// between names.

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "drivers/nats/envelope.hpp"
#include "fuzz_util.hpp"
#include "records.hpp"

namespace {

using namespace omnibus;
using namespace omnibus::detail::nats;

ReceivedHeaders via_cnats(const HeaderFields& h) {
  ReceivedHeaders out;
  for (const auto& field : h.fields) {
    auto it = std::find_if(out.begin(), out.end(), [&](const auto& e) { return e.first == field.first; });
    if (it == out.end()) it = out.insert(out.end(), {field.first, {}});
    it->second.push_back(field.second);
  }
  std::reverse(out.begin(), out.end());
  return out;
}

Envelope decoded(ReceivedHeaders received) {
  Envelope e;
  fuzz::check(fuzz::accepts(ErrorCode::InvalidArgument, [&] { e = decode_headers(std::move(received)); }),
              "decode_headers threw");
  return e;
}

Envelope round_trip(const Envelope& x) {
  OutMessage m;
  m.key = x.key;
  m.headers = x.headers;
  m.timestamp_ms = x.timestamp_ms.value_or(0);
  return decoded(via_cnats(encode_headers(m, x.timestamp_ms.has_value())));
}

std::string describe(const Envelope& e) {
  std::string s = "key " + (e.key ? fuzz::shown(*e.key) : std::string("none")) + ", ts " +
                  (e.timestamp_ms ? std::to_string(*e.timestamp_ms) : std::string("none")) + ", headers";
  for (const auto& [n, v] : e.headers) s += " " + fuzz::shown(n) + "=" + fuzz::shown(v);
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto input = fuzz::as_text(data, size);
  const auto recs = fuzz::records(input);

  ReceivedHeaders received;
  for (const auto& r : recs) received.emplace_back(r[0], std::vector<std::string>(r.begin() + 1, r.end()));
  const Envelope y = decoded(received);
  const Envelope again = round_trip(y);
  fuzz::check(again == y, "decode is not a fixed point: " + describe(y) + " comes back as " + describe(again));

  Envelope x;
  std::size_t first = 0;
  if (!recs.empty() && recs[0].size() == 1) {
    x.key = recs[0][0];
    first = 1;
  }
  for (std::size_t i = first; i < recs.size(); ++i) {
    if (recs[i].size() == 1) x.headers.emplace_back(recs[i][0], std::string());
    for (std::size_t j = 1; j < recs[i].size(); ++j) x.headers.emplace_back(recs[i][0], recs[i][j]);
  }
  if (size % 2) x.timestamp_ms = static_cast<std::int64_t>(fuzz::first_u64(input));
  const Envelope back = round_trip(x);
  fuzz::check(back == x, "round trip: " + describe(x) + " comes back as " + describe(back));
  return 0;
}
