// The mqtt:// envelope decoder (cpp/src/drivers/mqtt/envelope.hpp) on arbitrary
// user properties, and its encoder on arbitrary messages. Input: records.hpp's
// lines, each a user property: name, then value (further fields are joined to
// the value with a tab). Properties: decoding never throws; what it returns
// encodes and decodes back to itself; a message built from the same records
// (the first record, when it is a lone field, as the key) comes back exactly
// from its encoding, and with drop_headers only its timestamp does.

#include <cstddef>
#include <cstdint>

#include "drivers/mqtt/envelope.hpp"
#include "fuzz_util.hpp"
#include "records.hpp"

namespace {

using namespace omnibus;
using namespace omnibus::detail::mqtt;

Envelope decoded(const UserProperties& props) {
  Envelope e;
  fuzz::check(fuzz::accepts(ErrorCode::InvalidArgument, [&] { e = decode_user_properties(props); }),
              "decode_user_properties threw");
  return e;
}

OutMessage message_of(const Envelope& x) {
  OutMessage m;
  m.key = x.key;
  m.headers = x.headers;
  m.timestamp_ms = x.timestamp_ms.value_or(0);
  return m;
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

  UserProperties props;
  for (const auto& r : recs) {
    std::string value;
    for (std::size_t j = 1; j < r.size(); ++j) value += (j > 1 ? "\t" : "") + r[j];
    props.emplace_back(r[0], std::move(value));
  }
  const Envelope y = decoded(props);
  const Envelope again = decoded(encode_user_properties(message_of(y), true, y.timestamp_ms.has_value()));
  fuzz::check(again == y, "decode is not a fixed point: " + describe(y) + " comes back as " + describe(again));

  Envelope x;
  std::size_t first = 0;
  if (!recs.empty() && recs[0].size() == 1) {
    x.key = recs[0][0];
    first = 1;
  }
  for (std::size_t i = first; i < recs.size(); ++i) x.headers.emplace_back(props[i]);
  if (size % 2) x.timestamp_ms = static_cast<std::int64_t>(fuzz::first_u64(input));
  const Envelope back = decoded(encode_user_properties(message_of(x), true, x.timestamp_ms.has_value()));
  fuzz::check(back == x, "round trip: " + describe(x) + " comes back as " + describe(back));
  const Envelope dropped = decoded(encode_user_properties(message_of(x), false, x.timestamp_ms.has_value()));
  fuzz::check(dropped == Envelope{std::nullopt, {}, x.timestamp_ms}, "drop_headers: " + describe(dropped));
  return 0;
}
