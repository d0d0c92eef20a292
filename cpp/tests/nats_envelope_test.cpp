// The nats:// envelope (cpp/src/drivers/nats/envelope.hpp) without cnats or a
// server: each encoding rule, the decoder's handling of what other clients and
// damaged messages send, and round trips through a model of cnats' header table.

#include "drivers/nats/envelope.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

namespace omnibus::detail::nats {
namespace {

using Fields = std::vector<std::pair<std::string, std::string>>;

OutMessage message(std::optional<std::string> key, Headers headers, std::int64_t ts = 0) {
  OutMessage m;
  m.key = std::move(key);
  m.headers = std::move(headers);
  m.timestamp_ms = ts;
  return m;
}

// What a subscriber gets from cnats for `fields`: one entry per distinct name
// with its values in order, but the names in another order (a hash table's):
// here reversed, so that a decoder relying on the sent order would fail.
ReceivedHeaders via_cnats(const Fields& fields) {
  ReceivedHeaders out;
  for (const auto& field : fields) {
    auto it = std::find_if(out.begin(), out.end(), [&](const auto& e) { return e.first == field.first; });
    if (it == out.end()) it = out.insert(out.end(), {field.first, {}});
    it->second.push_back(field.second);
  }
  std::reverse(out.begin(), out.end());
  return out;
}

Envelope round_trip(const OutMessage& m, bool send_timestamp) {
  return decode_headers(via_cnats(encode_headers(m, send_timestamp).fields));
}

TEST(NatsEnvelopeText, CaseInsensitiveComparisons) {
  EXPECT_TRUE(iequals("Omnibus-Key", "omnibus-KEY"));
  EXPECT_FALSE(iequals("Omnibus-Key", "Omnibus-Ke"));
  EXPECT_TRUE(istarts_with("omnibus-anything", "Omnibus-"));
  EXPECT_FALSE(istarts_with("Omnibus", "Omnibus-"));
}

TEST(NatsEnvelopeText, TokensAreHttpTchars) {
  for (const char* ok : {"X-Trace", "a", "!#$%&'*+-.^_`|~09azAZ"}) EXPECT_TRUE(is_token(ok)) << ok;
  for (const char* bad : {"", "a b", "a:b", "a,b", "a\"b", "a(b", "caf\xc3\xa9", "a\tb"})
    EXPECT_FALSE(is_token(bad)) << bad;
  EXPECT_FALSE(is_token(std::string("a\0b", 3)));
}

TEST(NatsEnvelopeText, Utf8IsStrict) {
  for (const char* ok : {"", "ascii", "caf\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xf4\x8f\xbf\xbf"})
    EXPECT_TRUE(valid_utf8(ok)) << ok;
  for (const char* bad : {"\xc0\x80", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82", "\x80", "\xff",
                          "\xf8\x88\x80\x80\x80"})
    EXPECT_FALSE(valid_utf8(bad)) << bad;
}

TEST(NatsEnvelopeText, PlainValues) {
  for (const char* ok : {"v", "a b", "caf\xc3\xa9", "=", "1,2"}) EXPECT_TRUE(is_plain_value(ok)) << ok;
  for (const char* bad : {"", " v", "v ", "a\tb", "a\r\nb", "a\x7f", "\xff"}) EXPECT_FALSE(is_plain_value(bad)) << bad;
  EXPECT_FALSE(is_plain_value(std::string("a\0b", 3)));
}

TEST(NatsEnvelopeEncode, NothingToCarryIsAPlainPub) {
  auto h = encode_headers(message(std::nullopt, {}), false);
  EXPECT_TRUE(h.fields.empty());
  EXPECT_EQ(h.bytes, 0u);
}

TEST(NatsEnvelopeEncode, Keys) {
  EXPECT_EQ(encode_headers(message("order-1", {}), false).fields, (Fields{{"Omnibus-Key", "order-1"}}));
  EXPECT_EQ(encode_headers(message("", {}), false).fields, (Fields{{"Omnibus-Key-B64", "="}}));
  EXPECT_EQ(encode_headers(message(std::string("\0\xff", 2), {}), false).fields, (Fields{{"Omnibus-Key-B64", "AP8="}}));
  EXPECT_EQ(encode_headers(message(" padded ", {}), false).fields, (Fields{{"Omnibus-Key-B64", "IHBhZGRlZCA="}}));
}

TEST(NatsEnvelopeEncode, TimestampOnlyWhenAsked) {
  EXPECT_EQ(encode_headers(message(std::nullopt, {}, 1700000000123), true).fields,
            (Fields{{"Omnibus-Ts", "1700000000123"}}));
  EXPECT_TRUE(encode_headers(message(std::nullopt, {}, 1700000000123), false).fields.empty());
}

TEST(NatsEnvelopeEncode, PlainHeadersTravelAsThemselves) {
  auto h = encode_headers(message(std::nullopt, {{"X-Trace", "1"}, {"X-Trace", "2"}}), false);
  EXPECT_EQ(h.fields, (Fields{{"X-Trace", "1"}, {"X-Trace", "2"}}));  // one name: no Omnibus-Order
  // "NATS/1.0\r\n", each "name: value\r\n" (counted as name + 2 + value + 2), the final "\r\n".
  EXPECT_EQ(h.bytes, 10u + 2 + (7 + 2 + 1 + 2) * 2);
}

TEST(NatsEnvelopeEncode, OtherHeadersTravelAsBase64) {
  Headers headers = {{"content type", "json"},   // not a token
                     {"Omnibus-Key", "x"},       // reserved
                     {"omnibus-ts", "x"},        // reserved, whatever the case
                     {"X-Empty", ""},            // empty value
                     {"X-Bin", "\xff\xfe"}};     // not UTF-8
  auto h = encode_headers(message(std::nullopt, headers), false);
  EXPECT_EQ(h.fields, (Fields{{"Omnibus-B64", "Y29udGVudCB0eXBl:anNvbg=="},
                              {"Omnibus-B64", "T21uaWJ1cy1LZXk=:eA=="},
                              {"Omnibus-B64", "b21uaWJ1cy10cw==:eA=="},
                              {"Omnibus-B64", "WC1FbXB0eQ==:"},
                              {"Omnibus-B64", "WC1CaW4=://4="}}));
}

TEST(NatsEnvelopeEncode, OrderAcrossNames) {
  auto h = encode_headers(message("k", {{"a", "1"}, {"b", "2"}, {"a", "3"}, {"c d", "4"}}), true);
  EXPECT_EQ(h.fields, (Fields{{"Omnibus-Key", "k"},
                              {"Omnibus-Ts", "0"},
                              {"a", "1"},
                              {"b", "2"},
                              {"a", "3"},
                              {"Omnibus-B64", "YyBk:NA=="},
                              {"Omnibus-Order", "a,b,a,Omnibus-B64"}}));
}

TEST(NatsEnvelopeDecode, ReservedNamesAnyCase) {
  auto e = decode_headers({{"omnibus-key-b64", {"AP8="}}, {"OMNIBUS-TS", {"-5"}}, {"x", {"1"}}});
  EXPECT_EQ(e.key, std::string("\0\xff", 2));
  EXPECT_EQ(e.timestamp_ms, -5);
  EXPECT_EQ(e.headers, (Headers{{"x", "1"}}));
  EXPECT_EQ(decode_headers({{"omnibus-KEY", {"k"}}}).key, "k");
  EXPECT_EQ(decode_headers({{"Omnibus-Key-B64", {"="}}}).key, "");
  EXPECT_EQ(decode_headers({{"omnibus-b64", {"eA==:eQ=="}}}).headers, (Headers{{"x", "y"}}));
}

TEST(NatsEnvelopeDecode, NoHeadersNoEnvelope) {
  EXPECT_EQ(decode_headers({}), Envelope{});
}

// Whatever is not a well-formed header of ours arrives as an ordinary header.
TEST(NatsEnvelopeDecode, MalformedOnesArriveAsHeaders) {
  EXPECT_EQ(decode_headers({{"Omnibus-Key", {"a", "b"}}}), (Envelope{std::nullopt, {{"Omnibus-Key", "a"}, {"Omnibus-Key", "b"}}, {}}));
  EXPECT_EQ(decode_headers({{"Omnibus-Key-B64", {"not base64"}}}),
            (Envelope{std::nullopt, {{"Omnibus-Key-B64", "not base64"}}, {}}));
  EXPECT_EQ(decode_headers({{"Omnibus-Key-B64", {"QR=="}}}).headers, (Headers{{"Omnibus-Key-B64", "QR=="}}));
  for (const char* bad : {"", "12x", "x", "1 ", "1.5"})
    EXPECT_EQ(decode_headers({{"Omnibus-Ts", {bad}}}), (Envelope{std::nullopt, {{"Omnibus-Ts", bad}}, {}})) << bad;
  EXPECT_EQ(decode_headers({{"Omnibus-Ts", {"1", "2"}}}).timestamp_ms, std::nullopt);
  EXPECT_EQ(decode_headers({{"Omnibus-Ts", {std::string("12\0", 3)}}}).timestamp_ms, std::nullopt);
  for (const char* bad : {"no colon", "eA==", "eA=:eA==", "eA==:*"})
    EXPECT_EQ(decode_headers({{"Omnibus-B64", {bad}}}).headers, (Headers{{"Omnibus-B64", bad}})) << bad;
  EXPECT_EQ(decode_headers({{"Omnibus-B64", {"eA==:"}}}).headers, (Headers{{"x", ""}}));
  EXPECT_EQ(decode_headers({{"Omnibus-B64", {":"}}}).headers, (Headers{{"", ""}}));
}

TEST(NatsEnvelopeDecode, TimestampSyntaxIsStrtoll) {
  EXPECT_EQ(decode_headers({{"Omnibus-Ts", {"+7"}}}).timestamp_ms, 7);
  EXPECT_EQ(decode_headers({{"Omnibus-Ts", {" 7"}}}).timestamp_ms, 7);
  EXPECT_EQ(decode_headers({{"Omnibus-Ts", {"99999999999999999999"}}}).timestamp_ms, INT64_MAX);
}

TEST(NatsEnvelopeDecode, OrderRebuildsTheSequence) {
  auto e = decode_headers({{"b", {"2"}}, {"a", {"1", "3"}}, {"Omnibus-Order", {"a,b,a"}}});
  EXPECT_EQ(e.headers, (Headers{{"a", "1"}, {"b", "2"}, {"a", "3"}}));
}

// An order naming what is missing or too often is skipped where it fails; the
// headers it does not name follow as cnats gave them.
TEST(NatsEnvelopeDecode, DamagedOrder) {
  auto e = decode_headers({{"b", {"2"}}, {"a", {"1", "3"}}, {"c", {"4"}}, {"Omnibus-Order", {"a,zz,,a,a,b"}}});
  EXPECT_EQ(e.headers, (Headers{{"a", "1"}, {"a", "3"}, {"b", "2"}, {"c", "4"}}));
  EXPECT_EQ(decode_headers({{"a", {"1"}}, {"Omnibus-Order", {"A"}}}).headers, (Headers{{"a", "1"}}));
  EXPECT_EQ(decode_headers({{"Omnibus-Order", {"a", "b"}}}).headers,
            (Headers{{"Omnibus-Order", "a"}, {"Omnibus-Order", "b"}}));
}

TEST(NatsEnvelopeDecode, ForeignHeadersKeepCnatsOrder) {
  auto e = decode_headers({{"Nats-Msg-Id", {"7"}}, {"z", {"1"}}, {"a", {"2", "3"}}});
  EXPECT_EQ(e.headers, (Headers{{"Nats-Msg-Id", "7"}, {"z", "1"}, {"a", "2"}, {"a", "3"}}));
}

TEST(NatsEnvelopeRoundTrip, Keys) {
  for (auto key : {std::optional<std::string>(), std::optional<std::string>(""), std::optional<std::string>("text"),
                   std::optional<std::string>(std::string("\0\xff\r\n", 4)), std::optional<std::string>(" x"),
                   std::optional<std::string>("="), std::optional<std::string>("caf\xc3\xa9")}) {
    auto e = round_trip(message(key, {}), false);
    EXPECT_EQ(e.key, key);
    EXPECT_TRUE(e.headers.empty());
    EXPECT_EQ(e.timestamp_ms, std::nullopt);
  }
}

TEST(NatsEnvelopeRoundTrip, Headers) {
  const Headers cases[] = {
      {{"a", "1"}, {"a", "2"}, {"a", "3"}},
      {{"b", "1"}, {"a", "2"}, {"b", "3"}, {"c", "4"}},
      {{"content type", "json"}, {"X", "1"}, {"content type", "xml"}},
      {{"Omnibus-Key", "not the key"}, {"Omnibus-Order", "b,a"}, {"omnibus-b64", "eA==:eA=="}, {"Omnibus-Ts", "1"}},
      {{"", ""}, {std::string("\0", 1), std::string("\xff", 1)}, {"x", " "}, {"x", "a\r\nb"}},
      {{"Nats-Msg-Id", "id"}, {"nats-msg-id", "ID"}},
  };
  for (const auto& headers : cases) {
    auto e = round_trip(message("k", headers), false);
    EXPECT_EQ(e.headers, headers);
    EXPECT_EQ(e.key, "k");
  }
}

TEST(NatsEnvelopeRoundTrip, Timestamps) {
  for (std::int64_t ts : {std::int64_t{0}, std::int64_t{1700000000123}, std::int64_t{-1}, INT64_MAX, INT64_MIN})
    EXPECT_EQ(round_trip(message(std::nullopt, {{"a", "1"}}, ts), true).timestamp_ms, ts) << ts;
}

// Headers exactly as omnibus has been sending them (and cnats handing them out)
// since the format was introduced: a subscriber must keep decoding them.
TEST(NatsEnvelopeWire, TodaysEncodingDecodes) {
  ReceivedHeaders wire = {
      {"Omnibus-Order", {"X-Trace,Omnibus-B64,X-Trace"}},
      {"Omnibus-B64", {"Y29udGVudCB0eXBl:anNvbg=="}},
      {"X-Trace", {"1", "2"}},
      {"Omnibus-Ts", {"1700000000123"}},
      {"Omnibus-Key-B64", {"AP8="}},
  };
  Envelope expected{std::string("\0\xff", 2), {{"X-Trace", "1"}, {"content type", "json"}, {"X-Trace", "2"}},
                    1700000000123};
  EXPECT_EQ(decode_headers(wire), expected);
  auto sent = encode_headers(message(expected.key, expected.headers, 1700000000123), true).fields;
  EXPECT_EQ(sent, (Fields{{"Omnibus-Key-B64", "AP8="},
                          {"Omnibus-Ts", "1700000000123"},
                          {"X-Trace", "1"},
                          {"Omnibus-B64", "Y29udGVudCB0eXBl:anNvbg=="},
                          {"X-Trace", "2"},
                          {"Omnibus-Order", "X-Trace,Omnibus-B64,X-Trace"}}));
  EXPECT_EQ(decode_headers({{"Omnibus-Key", {"order-1"}}}).key, "order-1");
}

}  // namespace
}  // namespace omnibus::detail::nats
