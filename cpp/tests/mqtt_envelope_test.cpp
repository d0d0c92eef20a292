// The mqtt:// envelope (cpp/src/drivers/mqtt/envelope.hpp) without Paho or a
// broker: each encoding rule, the decoder's handling of what other clients and
// damaged messages send, and round trips.

#include "drivers/mqtt/envelope.hpp"

#include <gtest/gtest.h>

#include <string>

namespace omnibus::detail::mqtt {
namespace {

OutMessage message(std::optional<std::string> key, Headers headers, std::int64_t ts = 0) {
  OutMessage m;
  m.key = std::move(key);
  m.headers = std::move(headers);
  m.timestamp_ms = ts;
  return m;
}

Envelope round_trip(const OutMessage& m, bool send_timestamp) {
  return decode_user_properties(encode_user_properties(m, true, send_timestamp));
}

TEST(MqttEnvelopeText, Utf8Problems) {
  for (const char* ok : {"", "text", "caf\xc3\xa9", "\xf0\x9f\x98\x80", "a b", "\xc2\xa0"})
    EXPECT_EQ(utf8_problem(ok), nullptr) << ok;
  EXPECT_STREQ(utf8_problem(std::string("a\0b", 3)), "contains U+0000");
  EXPECT_STREQ(utf8_problem("a\nb"), "contains a control character");
  EXPECT_STREQ(utf8_problem("\x7f"), "contains a control character");
  EXPECT_STREQ(utf8_problem("\xc2\x85"), "contains a control character");  // U+0085
  EXPECT_STREQ(utf8_problem("\xff"), "is not valid UTF-8");
  EXPECT_STREQ(utf8_problem("\xe2\x82"), "is not valid UTF-8");
  EXPECT_STREQ(utf8_problem("\xc0\x80"), "is not valid UTF-8 (overlong or out of range)");
  EXPECT_STREQ(utf8_problem("\xf4\x90\x80\x80"), "is not valid UTF-8 (overlong or out of range)");
  EXPECT_STREQ(utf8_problem("\xed\xa0\x80"), "contains a UTF-16 surrogate");
  EXPECT_STREQ(utf8_problem(std::string(65536, 'a')), "longer than 65535 bytes");
  EXPECT_EQ(utf8_problem(std::string(65535, 'a')), nullptr);
}

TEST(MqttEnvelopeText, PlainHeaders) {
  EXPECT_TRUE(is_plain_header("X-Trace", "1"));
  EXPECT_TRUE(is_plain_header("Omnibus-Key", "x"));  // the prefix is case-sensitive, as MQTT strings are
  EXPECT_TRUE(is_plain_header("a", ""));
  EXPECT_FALSE(is_plain_header("", "x"));
  EXPECT_FALSE(is_plain_header("omnibus-anything", "x"));
  EXPECT_FALSE(is_plain_header("a\nb", "x"));
  EXPECT_FALSE(is_plain_header("a", "\xff"));
}

TEST(MqttEnvelopeEncode, KeysTimestampHeadersInOrder) {
  auto props = encode_user_properties(message("k", {{"b", "1"}, {"a", "2"}, {"b", "3"}}, 42), true, true);
  EXPECT_EQ(props, (UserProperties{{"omnibus-key", "k"}, {"omnibus-ts", "42"}, {"b", "1"}, {"a", "2"}, {"b", "3"}}));
  EXPECT_TRUE(encode_user_properties(message(std::nullopt, {}), true, false).empty());
  EXPECT_EQ(encode_user_properties(message("", {}), true, false), (UserProperties{{"omnibus-key", ""}}));
  EXPECT_EQ(encode_user_properties(message(std::string("\0\xff", 2), {}), true, false),
            (UserProperties{{"omnibus-key-b64", "AP8="}}));
  EXPECT_EQ(encode_user_properties(message("a\nb", {}), true, false), (UserProperties{{"omnibus-key-b64", "YQpi"}}));
}

TEST(MqttEnvelopeEncode, DropHeadersKeepsOnlyTheTimestamp) {
  EXPECT_EQ(encode_user_properties(message("k", {{"a", "1"}}, 7), false, true), (UserProperties{{"omnibus-ts", "7"}}));
  EXPECT_TRUE(encode_user_properties(message("k", {{"a", "1"}}, 7), false, false).empty());
}

TEST(MqttEnvelopeEncode, OtherHeadersTravelAsBase64) {
  auto props = encode_user_properties(
      message(std::nullopt, {{"omnibus-key", "x"}, {"", "y"}, {"x", std::string("\xc2\x85")}, {"x", "y"}}), true, false);
  EXPECT_EQ(props, (UserProperties{{"omnibus-b64", "b21uaWJ1cy1rZXk=:eA=="},
                                   {"omnibus-b64", ":eQ=="},
                                   {"omnibus-b64", "eA==:woU="},
                                   {"x", "y"}}));
}

TEST(MqttEnvelopeDecode, OursAndOthers) {
  auto e = decode_user_properties({{"x", "1"}, {"omnibus-key-b64", "AP8="}, {"omnibus-ts", "-3"}, {"omnibus-b64", "eA==:eQ=="}});
  EXPECT_EQ(e, (Envelope{std::string("\0\xff", 2), {{"x", "1"}, {"x", "y"}}, -3}));
  EXPECT_EQ(decode_user_properties({}), Envelope{});
  EXPECT_EQ(decode_user_properties({{"Omnibus-Key", "k"}}).headers, (Headers{{"Omnibus-Key", "k"}}));  // exact names
  EXPECT_EQ(decode_user_properties({{"omnibus-key", "a"}, {"omnibus-key", "b"}}).key, "b");  // the last one wins
}

TEST(MqttEnvelopeDecode, MalformedOnesArriveAsHeaders) {
  for (const char* bad : {"", "x", "1x", "1 ", "-"})
    EXPECT_EQ(decode_user_properties({{"omnibus-ts", bad}}), (Envelope{std::nullopt, {{"omnibus-ts", bad}}, {}})) << bad;
  // U+0000 (which MQTT forbids): the whole value is not a number.
  for (auto bad : {std::string("\0", 1), std::string("12\0x", 4)})
    EXPECT_EQ(decode_user_properties({{"omnibus-ts", bad}}).headers, (Headers{{"omnibus-ts", bad}}));
  EXPECT_EQ(decode_user_properties({{"omnibus-key-b64", "QR=="}}), (Envelope{std::nullopt, {{"omnibus-key-b64", "QR=="}}, {}}));
  for (const char* bad : {"no colon", "eA==", "eA=:eA==", "eA==:*"})
    EXPECT_EQ(decode_user_properties({{"omnibus-b64", bad}}).headers, (Headers{{"omnibus-b64", bad}})) << bad;
  EXPECT_EQ(decode_user_properties({{"omnibus-b64", ":"}}).headers, (Headers{{"", ""}}));
  EXPECT_EQ(decode_user_properties({{"omnibus-other", "v"}}).headers, (Headers{{"omnibus-other", "v"}}));
}

TEST(MqttEnvelopeRoundTrip, Keys) {
  for (auto key : {std::optional<std::string>(), std::optional<std::string>(""), std::optional<std::string>("text"),
                   std::optional<std::string>(std::string("\0\xff\r\n", 4)), std::optional<std::string>("caf\xc3\xa9"),
                   std::optional<std::string>(std::string(70000, 'k'))}) {
    auto e = round_trip(message(key, {}), false);
    EXPECT_EQ(e.key, key);
    EXPECT_TRUE(e.headers.empty());
  }
}

TEST(MqttEnvelopeRoundTrip, Headers) {
  const Headers cases[] = {
      {{"a", "1"}, {"a", "2"}, {"a", "3"}},
      {{"b", "1"}, {"a", "2"}, {"b", "3"}, {"c", "4"}},
      {{"omnibus-key", "not the key"}, {"omnibus-ts", "1"}, {"omnibus-b64", "eA==:eA=="}, {"Omnibus-Key", "x"}},
      {{"", ""}, {std::string("\0", 1), std::string("\xff", 1)}, {"x", " "}, {"x", "a\r\nb"}, {"x", ""}},
  };
  for (const auto& headers : cases) {
    auto e = round_trip(message("k", headers), false);
    EXPECT_EQ(e.headers, headers);
    EXPECT_EQ(e.key, "k");
  }
}

TEST(MqttEnvelopeRoundTrip, Timestamps) {
  for (std::int64_t ts : {std::int64_t{0}, std::int64_t{1700000000123}, std::int64_t{-1}, INT64_MAX, INT64_MIN})
    EXPECT_EQ(round_trip(message(std::nullopt, {}, ts), true).timestamp_ms, ts) << ts;
  EXPECT_EQ(round_trip(message(std::nullopt, {}, 5), false).timestamp_ms, std::nullopt);
}

// User properties exactly as omnibus has been sending them: a subscriber must
// keep decoding them, and a publisher keep sending them.
TEST(MqttEnvelopeWire, TodaysEncodingDecodes) {
  const UserProperties wire = {{"omnibus-key-b64", "AP8="},
                               {"omnibus-ts", "1700000000123"},
                               {"X-Trace", "1"},
                               {"omnibus-b64", "b21uaWJ1cy1rZXk=:eA=="},
                               {"X-Trace", "2"}};
  const Envelope expected{std::string("\0\xff", 2), {{"X-Trace", "1"}, {"omnibus-key", "x"}, {"X-Trace", "2"}},
                          1700000000123};
  EXPECT_EQ(decode_user_properties(wire), expected);
  EXPECT_EQ(encode_user_properties(message(expected.key, expected.headers, 1700000000123), true, true), wire);
  EXPECT_EQ(decode_user_properties({{"omnibus-key", "order-1"}}).key, "order-1");
}

}  // namespace
}  // namespace omnibus::detail::mqtt
