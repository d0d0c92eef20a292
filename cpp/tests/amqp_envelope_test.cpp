// The amqp:// envelope (cpp/src/drivers/amqp/envelope.hpp) without rabbitmq-c
// or a broker: where the key goes, the headers table, the timestamp property,
// every field kind a received table may hold, and round trips.

#include "drivers/amqp/envelope.hpp"

#include <gtest/gtest.h>

#include <limits>
#include <string>

namespace omnibus::detail::amqp {
namespace {

using Entries = std::vector<std::pair<std::string, std::string>>;

OutMessage message(std::optional<std::string> key, Headers headers, std::int64_t ts = 0) {
  OutMessage m;
  m.key = std::move(key);
  m.headers = std::move(headers);
  m.timestamp_ms = ts;
  return m;
}

// What a subscriber decodes from m as published with routing_key=`fixed`
// (the option given when not empty): the broker keeps the table as sent,
// every value a string.
Envelope round_trip(const OutMessage& m, const std::string& fixed = "") {
  const bool fixed_key = !fixed.empty();
  ReceivedTable table;
  for (auto& [name, value] : encode_headers(m, fixed_key)) table.emplace_back(name, value);
  const std::string rk = key_is_routing_key(m, fixed_key) ? *m.key : fixed;
  return decode(table, rk, timestamp_seconds(m.timestamp_ms));
}

TEST(AmqpEnvelopeEncode, KeyIsTheRoutingKeyUnlessFixedOrEmpty) {
  EXPECT_TRUE(key_is_routing_key(message("k", {}), false));
  EXPECT_FALSE(key_is_routing_key(message("k", {}), true));
  EXPECT_FALSE(key_is_routing_key(message("", {}), false));
  EXPECT_FALSE(key_is_routing_key(message(std::nullopt, {}), false));
  EXPECT_TRUE(encode_headers(message("k", {}), false).empty());
  EXPECT_EQ(encode_headers(message("k", {}), true), (Entries{{"omnibus-key", "k"}}));
  EXPECT_EQ(encode_headers(message("", {}), false), (Entries{{"omnibus-key", ""}}));
  EXPECT_TRUE(encode_headers(message(std::nullopt, {}), true).empty());
}

TEST(AmqpEnvelopeEncode, HeadersInOrderAsTheyAre) {
  const Headers headers = {{"b", "1"}, {"a", std::string("\0\xff", 2)}, {"b", "3"}, {"", ""}};
  Entries expected = {{"omnibus-key", "k"}};
  expected.insert(expected.end(), headers.begin(), headers.end());
  EXPECT_EQ(encode_headers(message("k", headers), true), expected);
}

TEST(AmqpEnvelopeTimestamp, WholeSecondsNegativeIncluded) {
  EXPECT_EQ(timestamp_seconds(1700000000999), 1700000000u);
  EXPECT_EQ(timestamp_ms(1700000000), 1700000000000);
  EXPECT_EQ(timestamp_ms(timestamp_seconds(-5000)), -5000);
  EXPECT_EQ(timestamp_ms(timestamp_seconds(std::numeric_limits<std::int64_t>::min())),
            std::numeric_limits<std::int64_t>::min() / 1000 * 1000);
}

// Found while moving the envelope out of the driver: seconds * 1000 overflowed
// (undefined behaviour) for a timestamp property past year 292 million.
TEST(AmqpEnvelopeTimestamp, OutOfRangeIsNone) {
  EXPECT_EQ(timestamp_ms(std::numeric_limits<std::uint64_t>::max() / 2), std::nullopt);
  EXPECT_EQ(timestamp_ms(static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max() / 1000 + 1)), std::nullopt);
  EXPECT_EQ(timestamp_ms(static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max() / 1000)),
            std::numeric_limits<std::int64_t>::max() / 1000 * 1000);
  EXPECT_EQ(decode({}, "", std::numeric_limits<std::uint64_t>::max() / 2).timestamp_ms, std::nullopt);
}

TEST(AmqpEnvelopeDecode, FieldText) {
  EXPECT_EQ(field_text(Field(std::string("s"))), "s");
  EXPECT_EQ(field_text(Field(Binary{std::string("\0\xff", 2)})), std::string("\0\xff", 2));
  EXPECT_EQ(field_text(Field(true)), "true");
  EXPECT_EQ(field_text(Field(false)), "false");
  EXPECT_EQ(field_text(Field(std::int64_t{-7})), "-7");
  EXPECT_EQ(field_text(Field(std::numeric_limits<std::uint64_t>::max())), "18446744073709551615");
  EXPECT_EQ(field_text(Field(1.5)), "1.500000");
  EXPECT_EQ(field_text(Field(Void{})), "");
  EXPECT_EQ(field_text(Field(NestedTable{})), "");
  EXPECT_EQ(field_text(Field(Array{{std::int64_t{1}}})), "");
}

TEST(AmqpEnvelopeDecode, TablesOfOtherClients) {
  ReceivedTable table = {{"s", std::string("v")},
                         {"n", std::int64_t{42}},
                         {"flag", true},
                         {"list", Array{{std::string("a"), std::int64_t{2}, Void{}}}},
                         {"nested", NestedTable{}},
                         {"empty", Array{}},
                         {"f", 0.25}};
  auto e = decode(table, "", std::nullopt);
  EXPECT_EQ(e.headers, (Headers{{"s", "v"}, {"n", "42"}, {"flag", "true"}, {"list", "a"}, {"list", "2"}, {"list", ""},
                                {"f", "0.250000"}}));
  EXPECT_EQ(e.key, std::nullopt);
  EXPECT_EQ(e.timestamp_ms, std::nullopt);
  EXPECT_EQ(e.attempt, std::nullopt);
}

TEST(AmqpEnvelopeDecode, KeyHeaderFirstOneWinsElseRoutingKey) {
  auto e = decode({{"omnibus-key", std::string("a")}, {"omnibus-key", std::string("b")}}, "rk", std::nullopt);
  EXPECT_EQ(e.key, "a");
  EXPECT_EQ(e.headers, (Headers{{"omnibus-key", "b"}}));
  EXPECT_EQ(decode({}, "rk", std::nullopt).key, "rk");
  EXPECT_EQ(decode({}, "", std::nullopt).key, std::nullopt);
  EXPECT_EQ(decode({{"omnibus-key", std::int64_t{5}}}, "rk", std::nullopt).key, "5");
  EXPECT_EQ(decode({{"Omnibus-Key", std::string("x")}}, "rk", std::nullopt).key, "rk");  // exact name
}

TEST(AmqpEnvelopeDecode, DeliveryCount) {
  EXPECT_EQ(decode({{"x-delivery-count", std::int64_t{2}}}, "", std::nullopt).attempt, 3u);
  EXPECT_EQ(decode({{"x-delivery-count", 1.0}}, "", std::nullopt).attempt, 2u);  // "1.000000"
  EXPECT_EQ(decode({{"x-delivery-count", Binary{"4"}}}, "", std::nullopt).attempt, 5u);
  // A string is an application's header, not the broker's count.
  auto e = decode({{"x-delivery-count", std::string("9")}}, "", std::nullopt);
  EXPECT_EQ(e.attempt, std::nullopt);
  EXPECT_EQ(e.headers, (Headers{{"x-delivery-count", "9"}}));
}

// Found while moving the envelope out of the driver: the count was read with
// std::stoll, whose std::invalid_argument / std::out_of_range escaped the
// subscriber's I/O thread (which only catches omnibus::Error) and terminated
// the process, for any delivery whose x-delivery-count was a boolean, void,
// table, array, non-numeric byte array, or a u64/double past int64.
TEST(AmqpEnvelopeDecode, DeliveryCountThatIsNotANumberIsIgnored) {
  const Field bad[] = {true, Void{}, NestedTable{}, Array{{std::int64_t{1}}}, Binary{"x"}, Binary{""},
                       std::numeric_limits<std::uint64_t>::max(), 1e300};
  for (const auto& value : bad) {
    Envelope e;
    ASSERT_NO_THROW(e = decode({{"x-delivery-count", value}}, "", std::nullopt)) << field_text(value);
    EXPECT_EQ(e.attempt, std::nullopt) << field_text(value);
  }
}

TEST(AmqpEnvelopeRoundTrip, Keys) {
  for (auto key : {std::optional<std::string>(), std::optional<std::string>(""), std::optional<std::string>("text"),
                   std::optional<std::string>(std::string("\0\xff\r\n", 4))}) {
    EXPECT_EQ(round_trip(message(key, {})).key, key);
    if (key) {
      EXPECT_EQ(round_trip(message(key, {}), "fixed").key, key);
    }
  }
  // Without a key, a routing_key= option shows as the key (it is the routing key).
  EXPECT_EQ(round_trip(message(std::nullopt, {}), "fixed").key, "fixed");
}

TEST(AmqpEnvelopeRoundTrip, Headers) {
  const Headers cases[] = {
      {{"a", "1"}, {"a", "2"}, {"a", "3"}},
      {{"b", "1"}, {"a", "2"}, {"b", "3"}},
      {{"", ""}, {std::string("\0", 1), std::string("\xff", 1)}, {"x-delivery-count", "7"}},
      {{"omnibus-key", "a header, after the key's"}},
  };
  for (const auto& headers : cases) {
    auto e = round_trip(message("", headers));
    EXPECT_EQ(e.headers, headers);
    EXPECT_EQ(e.key, "");
    EXPECT_EQ(e.attempt, std::nullopt);
  }
}

TEST(AmqpEnvelopeRoundTrip, Timestamps) {
  for (std::int64_t ts : {std::int64_t{1700000000000}, std::int64_t{1700000000999}, std::int64_t{-1500}})
    EXPECT_EQ(round_trip(message(std::nullopt, {}, ts)).timestamp_ms, ts / 1000 * 1000) << ts;
}

// A delivery exactly as omnibus has been publishing it (key in the header
// because routing_key= was given, headers as long strings) and as RabbitMQ's
// quorum queues redeliver it.
TEST(AmqpEnvelopeWire, TodaysEncodingDecodes) {
  const ReceivedTable wire = {{"omnibus-key", std::string("\0\xff", 2)},
                              {"X-Trace", std::string("1")},
                              {"content type", std::string("json")},
                              {"X-Trace", std::string("2")},
                              {"x-delivery-count", std::int64_t{1}}};
  const Envelope expected{std::string("\0\xff", 2),
                          {{"X-Trace", "1"}, {"content type", "json"}, {"X-Trace", "2"}, {"x-delivery-count", "1"}},
                          1700000000000,
                          2};
  EXPECT_EQ(decode(wire, "orders", 1700000000), expected);
  EXPECT_EQ(encode_headers(message(expected.key, {{"X-Trace", "1"}, {"content type", "json"}, {"X-Trace", "2"}}), true),
            (Entries{{"omnibus-key", std::string("\0\xff", 2)}, {"X-Trace", "1"}, {"content type", "json"}, {"X-Trace", "2"}}));
  EXPECT_EQ(timestamp_seconds(1700000000123), 1700000000u);
}

}  // namespace
}  // namespace omnibus::detail::amqp
