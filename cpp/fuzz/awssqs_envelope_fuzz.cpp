// The awssqs:// envelope (cpp/src/drivers/awssqs/envelope.hpp) on arbitrary
// received bodies and attributes, and its encoder on arbitrary messages.
// Input: records.hpp's lines. As received: the first record's first field is
// the body, every later record an attribute (name, type, value). As sent: the
// first field is the payload, a second one the key, later records headers.
// Properties: decoding never throws; what it returns encodes and decodes back
// to itself; a message comes back exactly from its encoding after a model of
// SQS has reordered its attributes; an encoding keeps SQS's limits (10
// attributes, names and text values SQS takes).

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "drivers/awssqs/envelope.hpp"
#include "fuzz_util.hpp"
#include "records.hpp"

namespace {

using namespace omnibus;
using namespace omnibus::detail::sqs;

Decoded decoded(std::string body, std::vector<Attribute> attrs) {
  Decoded d;
  fuzz::check(fuzz::accepts(ErrorCode::InvalidArgument, [&] { d = decode(std::move(body), std::move(attrs)); }),
              "decode threw");
  return d;
}

Decoded round_trip(const OutMessage& m) {
  Encoded e = encode(m);
  fuzz::check(e.attributes.size() <= kMaxAttributes, "more than 10 attributes");
  fuzz::check(!e.body.empty() && is_sqs_text(e.body), "a body SQS refuses: " + fuzz::shown(e.body));
  for (const auto& a : e.attributes) {
    fuzz::check(is_attribute_name(a.name), "an attribute name SQS refuses: " + fuzz::shown(a.name));
    fuzz::check(!a.value.empty(), "an empty attribute value");
    fuzz::check(a.binary() || is_sqs_text(a.value), "a String value SQS refuses: " + fuzz::shown(a.value));
  }
  std::reverse(e.attributes.begin(), e.attributes.end());  // SQS hands out a map
  return decoded(std::move(e.body), std::move(e.attributes));
}

OutMessage message(const Decoded& d) {
  OutMessage m;
  m.payload = make_bytes(d.payload);
  m.key = d.key;
  m.headers = d.headers;
  return m;
}

std::string describe(const Decoded& d) {
  std::string s = "payload " + fuzz::shown(d.payload) + ", key " + (d.key ? fuzz::shown(*d.key) : std::string("none")) +
                  ", headers";
  for (const auto& [n, v] : d.headers) s += " " + fuzz::shown(n) + "=" + fuzz::shown(v);
  return s;
}

bool same(const Decoded& a, const Decoded& b) { return a.payload == b.payload && a.key == b.key && a.headers == b.headers; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto input = fuzz::as_text(data, size);
  const auto recs = fuzz::records(input);
  if (recs.empty()) return 0;

  std::vector<Attribute> attrs;
  for (std::size_t i = 1; i < recs.size(); ++i)
    attrs.push_back({recs[i][0], recs[i].size() > 1 ? recs[i][1] : "String", recs[i].size() > 2 ? recs[i][2] : ""});
  const Decoded y = decoded(recs[0][0], attrs);
  const Decoded again = round_trip(message(y));
  fuzz::check(same(again, y), "decode is not a fixed point: " + describe(y) + " comes back as " + describe(again));

  Decoded x;
  x.payload = recs[0][0];
  if (recs[0].size() > 1) x.key = recs[0][1];
  for (std::size_t i = 1; i < recs.size(); ++i) x.headers.emplace_back(recs[i][0], recs[i].size() > 1 ? recs[i][1] : "");
  const Decoded back = round_trip(message(x));
  fuzz::check(same(back, x), "round trip: " + describe(x) + " comes back as " + describe(back));
  return 0;
}
