// The amqp:// envelope decoder (cpp/src/drivers/amqp/envelope.hpp) on arbitrary
// received headers tables, and its encoder on arbitrary messages. Input:
// records.hpp's lines. A line of one field is the routing key (the last one
// wins); any other is a table entry: name, then a value whose first byte is its
// kind and the rest its content -- s string, x byte array, b boolean (true
// when the rest is not empty), i int64 / u uint64 / d double (the rest in
// decimal), v void, t table, a array (its elements are the following fields,
// each a kind and content). The first eight input bytes are the timestamp
// property.
// Properties: decoding never throws; what it returns publishes (with its key
// in the header when a header has the key's name, as the format needs) and
// decodes back to itself; a message built from the entries (the routing key
// as its key) comes back exactly, its timestamp in whole seconds.

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "drivers/amqp/envelope.hpp"
#include "fuzz_util.hpp"
#include "records.hpp"

namespace {

using namespace omnibus;
using namespace omnibus::detail::amqp;

Scalar scalar_of(const std::string& f) {
  const std::string rest = f.empty() ? std::string() : f.substr(1);
  switch (f.empty() ? 's' : f[0]) {
    case 'x':
      return Binary{rest};
    case 'b':
      return !rest.empty();
    case 'i':
      return static_cast<std::int64_t>(std::strtoll(rest.c_str(), nullptr, 10));
    case 'u':
      return static_cast<std::uint64_t>(std::strtoull(rest.c_str(), nullptr, 10));
    case 'd':
      return std::strtod(rest.c_str(), nullptr);
    case 'v':
    case 't':
    case 'a':
      return Void{};
    default:
      return rest;
  }
}

Field field_of(const fuzz::Record& r) {
  const std::string& f = r[1];
  if (!f.empty() && f[0] == 't') return NestedTable{};
  if (!f.empty() && f[0] == 'a') {
    Array a;
    for (std::size_t j = 2; j < r.size(); ++j) a.items.push_back(scalar_of(r[j]));
    return a;
  }
  return std::visit([](auto&& s) -> Field { return std::move(s); }, scalar_of(f));
}

Envelope decoded(const ReceivedTable& table, std::string_view rk, std::optional<std::uint64_t> ts) {
  Envelope e;
  fuzz::check(fuzz::accepts(ErrorCode::InvalidArgument, [&] { e = decode(table, rk, ts); }), "decode threw");
  return e;
}

bool names_key_header(const Headers& headers) {
  for (const auto& h : headers)
    if (h.first == kKeyHeader) return true;
  return false;
}

// Publishes x as the driver does and decodes what RabbitMQ delivers: the
// table as sent, every value a string. The key goes in the header when a
// header is named like it (with fixed_key: routing_key= given, as "fixed").
Envelope round_trip(const Envelope& x) {
  OutMessage m;
  m.key = x.key;
  m.headers = x.headers;
  m.timestamp_ms = x.timestamp_ms.value_or(0);
  const bool fixed_key = names_key_header(x.headers);
  ReceivedTable table;
  encode_headers(m, fixed_key, [&](std::string_view n, const std::string& v) { table.emplace_back(n, v); });
  const std::string rk = key_is_routing_key(m, fixed_key) ? *m.key : fixed_key ? "fixed" : "";
  return decoded(table, rk, x.timestamp_ms ? std::optional<std::uint64_t>(timestamp_seconds(*x.timestamp_ms)) : std::nullopt);
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

  ReceivedTable table;
  std::string rk;
  for (const auto& r : recs) {
    if (r.size() == 1) rk = r[0];
    else table.emplace_back(r[0], field_of(r));
  }
  const std::optional<std::uint64_t> ts = size % 2 ? std::optional<std::uint64_t>(fuzz::first_u64(input)) : std::nullopt;
  Envelope y = decoded(table, rk, ts);
  y.attempt.reset();  // x-delivery-count goes out as a string: not a count any more
  // The first omnibus-key entry is always the key, so a later one is a header.
  if (!y.key && names_key_header(y.headers)) fuzz::fail("a header named omnibus-key but no key: " + describe(y));
  const Envelope again = round_trip(y);
  fuzz::check(again == y, "decode is not a fixed point: " + describe(y) + " comes back as " + describe(again));

  Envelope x;
  if (!rk.empty() || size % 3 == 0) x.key = rk;
  for (const auto& [name, value] : table) x.headers.emplace_back(name, field_text(value));
  if (ts) {
    const auto ms = timestamp_ms(*ts);
    if (ms) x.timestamp_ms = *ms;  // whole seconds, so that it comes back exactly
  }
  if (!x.key && names_key_header(x.headers)) return 0;  // the format cannot say "no key" then
  const Envelope back = round_trip(x);
  fuzz::check(back == x, "round trip: " + describe(x) + " comes back as " + describe(back));
  return 0;
}
