// The pulsar:// envelope (cpp/src/drivers/pulsar/envelope.hpp) without
// libpulsar or a broker: each encoding rule, round trips through a model of
// libpulsar's property map (a std::map: one value per name, sorted by name),
// and what properties from other clients become.

#include "drivers/pulsar/envelope.hpp"

#include <gtest/gtest.h>

#include <map>
#include <string>

namespace omnibus::detail::pulsar {
namespace {

using Props = std::vector<std::pair<std::string, std::string>>;

// What a consumer gets back for `e`: the properties through a std::map, as libpulsar keeps them.
Decoded round_trip(const std::optional<std::string>& key, const Headers& headers) {
  Encoded e = encode(key, headers);
  std::map<std::string, std::string> map;
  for (const auto& [n, v] : e.properties) EXPECT_TRUE(map.emplace(n, v).second) << "property " << n << " repeated";
  return decode(e.partition_key, Props(map.begin(), map.end()));
}

TEST(PulsarEnvelope, TextKeyIsThePartitionKeyAndPlainHeadersAreProperties) {
  Encoded e = encode(std::string("device-1"), {{"a", "1"}, {"b", "2"}});
  EXPECT_EQ(e.partition_key, "device-1");
  EXPECT_EQ(e.properties, (Props{{"a", "1"}, {"b", "2"}}));  // sorted already: no omnibus-order
}

TEST(PulsarEnvelope, OrderRepeatsAndBytesComeBackExactly) {
  Headers h = {{"z", "last-name-first"}, {"a", "x"}, {"a", "repeat"}, {"bin", std::string("\0\xff", 2)},
               {"omnibus-x", "reserved name"}, {"", "empty name"}};
  Decoded d = round_trip(std::string("k"), h);
  EXPECT_EQ(d.key, "k");
  EXPECT_EQ(d.headers, h);
}

TEST(PulsarEnvelope, BinaryAndEmptyKeys) {
  const std::string bin("\x00\x01\xfe", 3);
  Encoded e = encode(bin, {});
  ASSERT_TRUE(e.partition_key);
  EXPECT_NE(*e.partition_key, bin);  // base64: a C string cannot carry NUL
  EXPECT_EQ(round_trip(bin, {}).key, bin);
  EXPECT_EQ(round_trip(std::string(), {}).key, std::string());
  EXPECT_FALSE(encode(std::string(), {}).partition_key);
  EXPECT_EQ(round_trip(std::nullopt, {}).key, std::nullopt);
}

TEST(PulsarEnvelope, OtherClientsPropertiesAreHeadersInNameOrder) {
  Decoded d = decode(std::string("k"), {{"site", "p1"}, {"unit", "C"}});
  EXPECT_EQ(d.key, "k");
  EXPECT_EQ(d.headers, (Headers{{"site", "p1"}, {"unit", "C"}}));
}

TEST(PulsarEnvelope, MalformedEnvelopeFieldsArriveAsHeaders) {
  Decoded d = decode(std::nullopt, {{"omnibus-b64-0", "not base64"}, {"omnibus-key-b64", "yes"},
                                    {"omnibus-order", "[1,2]"}});
  EXPECT_EQ(d.key, std::nullopt);
  EXPECT_EQ(d.headers, (Headers{{"omnibus-b64-0", "not base64"}, {"omnibus-key-b64", "yes"}, {"omnibus-order", "[1,2]"}}));
}

TEST(PulsarEnvelope, OrderNamingMissingPropertiesIsSkipped) {
  Decoded d = decode(std::nullopt, {{"a", "1"}, {"b", "2"}, {"omnibus-order", R"(["b","gone","b"])"}});
  EXPECT_EQ(d.headers, (Headers{{"b", "2"}, {"a", "1"}}));
}

}  // namespace
}  // namespace omnibus::detail::pulsar
