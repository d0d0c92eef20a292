// The awssqs:// envelope (cpp/src/drivers/awssqs/envelope.hpp) without libcurl
// or a server: each encoding rule, round trips through a model of SQS (which
// hands attributes out as a map, sorted here in reverse so that relying on the
// sent order fails), and what other clients send.

#include "drivers/awssqs/envelope.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

namespace omnibus::detail::sqs {
namespace {

OutMessage message(std::string payload, std::optional<std::string> key = std::nullopt, Headers headers = {}) {
  OutMessage m;
  m.payload = make_bytes(std::move(payload));
  m.key = std::move(key);
  m.headers = std::move(headers);
  return m;
}

Decoded via_sqs(const OutMessage& m) {
  Encoded e = encode(m);
  std::sort(e.attributes.begin(), e.attributes.end(),
            [](const Attribute& a, const Attribute& b) { return a.name > b.name; });
  return decode(e.body, e.attributes);
}

const Attribute* find(const Encoded& e, std::string_view name) {
  for (const auto& a : e.attributes)
    if (a.name == name) return &a;
  return nullptr;
}

TEST(AwsSqsEnvelope, TextPayloadTravelsAsItselfWithoutAttributes) {
  Encoded e = encode(message("hello, Grüße 🚀"));
  EXPECT_EQ(e.body, "hello, Grüße 🚀");
  EXPECT_TRUE(e.attributes.empty());
  EXPECT_EQ(e.bytes(), e.body.size());
}

TEST(AwsSqsEnvelope, BinaryAndEmptyPayloadsAreMarked) {
  Encoded bin = encode(message(std::string("\x00\x01\xff", 3)));
  EXPECT_EQ(bin.body, "AAH/");
  ASSERT_NE(find(bin, kBodyAttr), nullptr);
  EXPECT_EQ(find(bin, kBodyAttr)->value, "base64");
  Encoded empty = encode(message(""));
  EXPECT_EQ(empty.body, "-");
  EXPECT_EQ(find(empty, kBodyAttr)->value, "empty");
  for (std::string p : {std::string("\x00", 1), std::string(""), std::string("a\x01z"), std::string("\xed\xa0\x80")})
    EXPECT_EQ(via_sqs(message(p)).payload, p);
}

TEST(AwsSqsEnvelope, SqsTextIsXmlCharacters) {
  EXPECT_TRUE(is_sqs_text("tab\tcr\rlf\n"));
  EXPECT_FALSE(is_sqs_text(std::string("nul\0", 4)));
  EXPECT_FALSE(is_sqs_text("\x1f"));
  EXPECT_FALSE(is_sqs_text("\xef\xbf\xbe"));  // U+FFFE
  EXPECT_FALSE(is_sqs_text("\xc0\x80"));      // overlong NUL
  EXPECT_TRUE(is_sqs_text("\xf0\x9f\x9a\x80"));
}

TEST(AwsSqsEnvelope, KeysOfEveryKind) {
  for (std::optional<std::string> key : {std::optional<std::string>("k1"), std::optional<std::string>(""),
                                         std::optional<std::string>(std::string("\x00\xff", 2)),
                                         std::optional<std::string>()}) {
    Decoded d = via_sqs(message("x", key));
    EXPECT_EQ(d.key, key);
    EXPECT_EQ(d.payload, "x");
  }
  EXPECT_EQ(find(encode(message("x", "k")), kKeyAttr)->type, "String");
  EXPECT_EQ(find(encode(message("x", std::string("\x00", 1))), kKeyAttr)->type, "Binary");
}

TEST(AwsSqsEnvelope, PlainHeadersAreAttributesOfTheirOwnWithTheirOrder) {
  Headers h = {{"zeta", "1"}, {"alpha", std::string("\x00\x01", 2)}, {"mid.x", "3"}};
  Encoded e = encode(message("x", std::nullopt, h));
  ASSERT_NE(find(e, "zeta"), nullptr);
  EXPECT_EQ(find(e, "zeta")->type, "String");
  EXPECT_EQ(find(e, "alpha")->type, "Binary");
  EXPECT_EQ(find(e, kOrderAttr)->value, "zeta,alpha,mid.x");
  EXPECT_EQ(find(e, kHeadersAttr), nullptr);
  EXPECT_EQ(via_sqs(message("x", std::nullopt, h)).headers, h);
  // One header needs no order.
  EXPECT_EQ(find(encode(message("x", std::nullopt, {{"a", "1"}})), kOrderAttr), nullptr);
}

TEST(AwsSqsEnvelope, OtherHeadersArePacked) {
  std::vector<Headers> cases = {
      {{"b", "1"}, {"a", std::string("\x00\xff", 2)}, {"b", "2"}, {"ключ", "значение"}},  // repeat, name
      {{"empty", ""}},                                                                     // empty value
      {{"omnibus-key", "x"}},                                                              // reserved
      {{"AWS.thing", "x"}},
  };
  Headers many;
  for (int i = 0; i < 10; ++i) many.emplace_back("h" + std::to_string(i), "v");
  cases.push_back(many);  // 10 headers + omnibus-order > 10 attributes
  for (const auto& h : cases) {
    Encoded e = encode(message("x", "k", h));
    ASSERT_NE(find(e, kHeadersAttr), nullptr);
    EXPECT_LE(e.attributes.size(), kMaxAttributes);
    Decoded d = via_sqs(message("x", "k", h));
    EXPECT_EQ(d.headers, h);
    EXPECT_EQ(d.key, "k");
    EXPECT_FALSE(d.foreign);
  }
}

TEST(AwsSqsEnvelope, ForeignAttributesAreHeadersSortedByName) {
  Decoded d = decode("body", {{"b", "String", "2"}, {"a", "Number", "1"}, {"c", "Binary", std::string("\x00", 1)}});
  EXPECT_TRUE(d.foreign);
  EXPECT_EQ(d.payload, "body");
  EXPECT_EQ(d.key, std::nullopt);
  EXPECT_EQ(d.headers, (Headers{{"a", "1"}, {"b", "2"}, {"c", std::string("\x00", 1)}}));
}

TEST(AwsSqsEnvelope, DamagedEnvelopeArrivesAsItIs) {
  // Not base64: the body stays, the attribute becomes a header.
  Decoded d = decode("not base64!", {{"omnibus-body", "String", "base64"}});
  EXPECT_EQ(d.payload, "not base64!");
  EXPECT_EQ(d.headers, (Headers{{"omnibus-body", "base64"}}));
  // A truncated packed block.
  Decoded p = decode("x", {{"omnibus-headers", "Binary", std::string("\x00\x00\x00\x05""ab", 6)}});
  EXPECT_EQ(p.headers.size(), 1u);
  EXPECT_EQ(p.headers[0].first, "omnibus-headers");
  // An order that does not match the attributes: sorted by name instead.
  Decoded o = decode("x", {{"b", "String", "2"}, {"a", "String", "1"}, {"omnibus-order", "String", "b,zz"}});
  EXPECT_EQ(o.headers, (Headers{{"a", "1"}, {"b", "2"}}));
}

TEST(AwsSqsEnvelope, SizeCountsBodyAndAttributes) {
  Encoded e = encode(message(std::string(100, '\x00'), "key"));
  EXPECT_EQ(e.bytes(), e.body.size() + std::string("omnibus-body").size() + 6 + 6 +
                           std::string("omnibus-key").size() + 6 + 3);
}

}  // namespace
}  // namespace omnibus::detail::sqs
