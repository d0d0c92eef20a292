// The gcppubsub:// envelope (cpp/src/drivers/gcp/envelope.hpp) without gRPC or
// a server: each rule, and round trips through a model of Pub/Sub, whose
// attributes are a map (reversed here, so that relying on the sent order fails).

#include "drivers/gcp/envelope.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

namespace omnibus::detail::gcp {
namespace {

Decoded via_pubsub(const std::optional<std::string>& key, const Headers& headers) {
  Encoded e = encode(key, headers);
  std::sort(e.attributes.begin(), e.attributes.end(), [](const auto& a, const auto& b) { return a > b; });
  return decode(e.ordering_key, e.attributes);
}

const std::string* find(const Encoded& e, std::string_view name) {
  for (const auto& a : e.attributes)
    if (a.first == name) return &a.second;
  return nullptr;
}

TEST(GcpEnvelope, NoKeyNoHeadersIsNoAttributes) {
  Encoded e = encode(std::nullopt, {});
  EXPECT_TRUE(e.ordering_key.empty());
  EXPECT_TRUE(e.attributes.empty());
  EXPECT_EQ(decode("", {}), (Decoded{std::nullopt, {}, true}));
}

TEST(GcpEnvelope, TextKeyIsTheOrderingKey) {
  Encoded e = encode(std::string("device-7"), {});
  EXPECT_EQ(e.ordering_key, "device-7");
  EXPECT_TRUE(e.attributes.empty());
  EXPECT_EQ(via_pubsub(std::string("device-7"), {}).key, "device-7");
}

TEST(GcpEnvelope, KeysThatCannotBeOrderingKeysTravelAsAnAttribute) {
  for (std::string key : {std::string(), std::string("\xff\x00k", 3), std::string(1025, 'k')}) {
    Encoded e = encode(key, {});
    EXPECT_TRUE(e.ordering_key.empty());
    ASSERT_NE(find(e, kKeyAttr), nullptr);
    Decoded d = via_pubsub(key, {});
    EXPECT_EQ(d.key, key);
    EXPECT_FALSE(d.foreign);
  }
}

TEST(GcpEnvelope, PlainHeadersAreAttributesInTheirOrder) {
  Headers h = {{"zeta", "1"}, {"alpha", "2"}, {"a:b", "3"}};
  Encoded e = encode(std::nullopt, h);
  ASSERT_NE(find(e, "zeta"), nullptr);
  ASSERT_NE(find(e, kOrderAttr), nullptr);
  EXPECT_EQ(*find(e, kOrderAttr), "4:zeta5:alpha3:a:b");
  EXPECT_EQ(via_pubsub(std::nullopt, h).headers, h);
}

TEST(GcpEnvelope, OneHeaderNeedsNoOrder) {
  Encoded e = encode(std::nullopt, {{"trace", "abc"}});
  EXPECT_EQ(e.attributes.size(), 1u);
  Decoded d = via_pubsub(std::nullopt, {{"trace", "abc"}});
  EXPECT_EQ(d.headers, (Headers{{"trace", "abc"}}));
  EXPECT_TRUE(d.foreign);  // indistinguishable from another client's attribute, as intended
}

TEST(GcpEnvelope, OtherHeadersArePacked) {
  for (Headers h : {Headers{{"a", "1"}, {"a", "2"}}, Headers{{"bin", std::string("\x00\xff", 2)}},
                    Headers{{"goog-x", "1"}}, Headers{{"omnibus-key", "x"}}, Headers{{"", "empty name"}},
                    Headers{{"v", std::string(1025, 'v')}}}) {
    Encoded e = encode(std::nullopt, h);
    ASSERT_NE(find(e, kHeadersAttr), nullptr);
    for (const auto& a : e.attributes) EXPECT_EQ(a.first.rfind(kHeadersAttr, 0), 0u) << a.first;
    EXPECT_EQ(via_pubsub(std::nullopt, h).headers, h);
  }
  Headers many;
  for (int i = 0; i < 100; ++i) many.emplace_back("h" + std::to_string(i), "v");
  EXPECT_NE(find(encode(std::nullopt, many), kHeadersAttr), nullptr);
  EXPECT_EQ(via_pubsub(std::nullopt, many).headers, many);
}

TEST(GcpEnvelope, LongPackedHeadersContinueInNumberedAttributes) {
  Headers h = {{"bin", std::string(3000, '\xff')}, {"bin", "again"}};
  Encoded e = encode(std::nullopt, h);
  ASSERT_NE(find(e, kHeadersAttr), nullptr);
  ASSERT_NE(find(e, "omnibus-headers-2"), nullptr);
  ASSERT_NE(find(e, "omnibus-headers-4"), nullptr);
  for (const auto& a : e.attributes) EXPECT_LE(a.second.size(), kMaxAttributeValue);
  EXPECT_EQ(via_pubsub(std::nullopt, h).headers, h);
  // A piece missing: the pieces arrive as headers, nothing is lost or made up.
  Attributes partial;
  for (const auto& a : e.attributes)
    if (a.first != "omnibus-headers-2") partial.push_back(a);
  Decoded d = decode("", partial);
  EXPECT_EQ(d.headers.size(), partial.size());
  EXPECT_EQ(d.headers.front().first, "omnibus-headers");
}

TEST(GcpEnvelope, ForeignAttributesAreSortedHeaders) {
  Decoded d = decode("k", {{"b", "2"}, {"a", "1"}});
  EXPECT_EQ(d.key, "k");
  EXPECT_EQ(d.headers, (Headers{{"a", "1"}, {"b", "2"}}));
  EXPECT_TRUE(d.foreign);
}

TEST(GcpEnvelope, MalformedEnvelopeAttributesArriveAsHeaders) {
  Decoded d = decode("", {{"omnibus-key", "not base64!"}, {"omnibus-headers", "@@"}, {"omnibus-order", "x"}});
  EXPECT_EQ(d.key, std::nullopt);
  EXPECT_EQ(d.headers.size(), 3u);
  // An order that does not name exactly the attributes is ignored, not trusted.
  Decoded e = decode("", {{"omnibus-order", "1:a1:c"}, {"a", "1"}, {"b", "2"}});
  EXPECT_EQ(e.headers, (Headers{{"a", "1"}, {"b", "2"}}));
}

}  // namespace
}  // namespace omnibus::detail::gcp
