#include "omnibus/url.hpp"

#include <gtest/gtest.h>

#include "omnibus/error.hpp"
#include "test_util.hpp"

namespace omnibus {
namespace {

using test::error_of;
using test::has_substr;
using test::lacks_substr;

using Query = std::vector<std::pair<std::string, std::string>>;

TEST(Url, ParsesEveryPart) {
  auto u = Url::parse("amqp://alice:s3cret@broker.example:5672/orders/eu?prefetch=10&auto_ack=false");
  EXPECT_EQ(u.scheme, "amqp");
  EXPECT_TRUE(u.has_userinfo);
  EXPECT_EQ(u.user, "alice");
  EXPECT_EQ(u.password, "s3cret");
  ASSERT_EQ(u.hosts.size(), 1u);
  EXPECT_EQ(u.hosts[0].host, "broker.example");
  EXPECT_EQ(u.hosts[0].port, 5672);
  EXPECT_EQ(u.path, "orders/eu");
  EXPECT_EQ(u.query, (Query{{"prefetch", "10"}, {"auto_ack", "false"}}));
}

TEST(Url, MinimalUrlHasOneHostWithoutPort) {
  auto u = Url::parse("mem://topic");
  EXPECT_EQ(u.scheme, "mem");
  EXPECT_FALSE(u.has_userinfo);
  EXPECT_EQ(u.user, "");
  EXPECT_EQ(u.password, "");
  ASSERT_EQ(u.hosts.size(), 1u);
  EXPECT_EQ(u.hosts[0].host, "topic");
  EXPECT_EQ(u.hosts[0].port, 0);
  EXPECT_EQ(u.path, "");
  EXPECT_TRUE(u.query.empty());
}

TEST(Url, EmptyHostIsAllowed) {
  auto u = Url::parse("mem:///just/a/path");
  ASSERT_EQ(u.hosts.size(), 1u);
  EXPECT_EQ(u.hosts[0].host, "");
  EXPECT_EQ(u.path, "just/a/path");
}

TEST(Url, SchemeIsLowerCasedAndMayHoldDigitsPlusDashDot) {
  EXPECT_EQ(Url::parse("MEM://t").scheme, "mem");
  EXPECT_EQ(Url::parse("Kafka+SSL.v2-x://h").scheme, "kafka+ssl.v2-x");
}

TEST(Url, HostList) {
  auto u = Url::parse("kafka://a:9092,b,c:9094/t");
  ASSERT_EQ(u.hosts.size(), 3u);
  EXPECT_EQ(u.hosts[0].host, "a");
  EXPECT_EQ(u.hosts[0].port, 9092);
  EXPECT_EQ(u.hosts[1].host, "b");
  EXPECT_EQ(u.hosts[1].port, 0);
  EXPECT_EQ(u.hosts[2].host, "c");
  EXPECT_EQ(u.hosts[2].port, 9094);
  EXPECT_EQ(u.path, "t");
}

TEST(Url, Ipv6HostsInBrackets) {
  auto u = Url::parse("nats://[::1]:4222,[fe80::1%25eth0],h:1");
  ASSERT_EQ(u.hosts.size(), 3u);
  EXPECT_EQ(u.hosts[0].host, "::1");
  EXPECT_EQ(u.hosts[0].port, 4222);
  // The host is kept as written (zone ids are not decoded).
  EXPECT_EQ(u.hosts[1].host, "fe80::1%25eth0");
  EXPECT_EQ(u.hosts[1].port, 0);
}

TEST(Url, PortLimits) {
  EXPECT_EQ(Url::parse("x://h:1").hosts[0].port, 1);
  EXPECT_EQ(Url::parse("x://h:65535").hosts[0].port, 65535);
  for (const char* bad : {"x://h:0", "x://h:65536", "x://h:99999999999999999999999"}) {
    auto e = error_of([&] { Url::parse(bad); });
    ASSERT_TRUE(e) << bad;
    EXPECT_EQ(e->code(), ErrorCode::InvalidArgument);
    EXPECT_TRUE(has_substr(e->what(), "is not in 1..65535")) << bad;
  }
}

TEST(Url, QueryIsDecodedInOrderWithRepeatsAndBareFlags) {
  auto u = Url::parse("mem://t?a=1&flag&&b=x%20y%26z&a=2&empty=");
  EXPECT_EQ(u.query, (Query{{"a", "1"}, {"flag", "true"}, {"b", "x y&z"}, {"a", "2"}, {"empty", ""}}));
}

TEST(Url, ValueKeepsLaterEqualsSigns) {
  EXPECT_EQ(Url::parse("mem://t?expr=a=b").query, (Query{{"expr", "a=b"}}));
}

TEST(Url, HashAndPlusAreOrdinaryCharacters) {
  // MQTT topic filters use both; '+' must not become a space.
  auto u = Url::parse("mqtt://h/sensors/+/temp/#?x=a+b");
  EXPECT_EQ(u.path, "sensors/+/temp/#");
  EXPECT_EQ(u.query, (Query{{"x", "a+b"}}));
}

TEST(Url, PathAndUserinfoArePercentDecoded) {
  auto u = Url::parse("amqp://us%3Aer:p%40ss%2Fw@h/a%2Fb%20c");
  EXPECT_EQ(u.user, "us:er");
  EXPECT_EQ(u.password, "p@ss/w");
  EXPECT_EQ(u.path, "a/b c");
}

TEST(Url, UserWithoutPassword) {
  auto u = Url::parse("amqp://guest@h");
  EXPECT_TRUE(u.has_userinfo);
  EXPECT_EQ(u.user, "guest");
  EXPECT_EQ(u.password, "");
  EXPECT_EQ(u.text, "amqp://***@h");  // a lone userinfo may be a token
}

TEST(Url, TextMasksThePassword) {
  auto u = Url::parse("amqp://alice:s3cret@h:1/vhost?x=1");
  EXPECT_EQ(u.text, "amqp://alice:***@h:1/vhost?x=1");
}

TEST(Url, Redact) {
  EXPECT_EQ(Url::redact("kafka://u:pw@h"), "kafka://u:***@h");
  EXPECT_EQ(Url::redact("kafka://u@h"), "kafka://***@h");  // may be a token (nats://TOKEN@h)
  EXPECT_EQ(Url::redact("kafka://h/p@q"), "kafka://h/p@q");  // '@' outside the authority
  EXPECT_EQ(Url::redact("not a url"), "not a url");
}

struct BadUrl {
  const char* url;
  const char* why;  // must appear in the message
};

// Names the ctest case after the URL, with control characters escaped.
void PrintTo(const BadUrl& p, std::ostream* os) {
  for (const char* c = p.url; *c; ++c) {
    if (static_cast<unsigned char>(*c) < 0x20) *os << "<" << int(*c) << ">";
    else *os << *c;
  }
}

class MalformedUrl : public ::testing::TestWithParam<BadUrl> {};

TEST_P(MalformedUrl, IsInvalidArgumentNamingUrlAndReason) {
  const auto& p = GetParam();
  auto e = error_of([&] { Url::parse(p.url); });
  ASSERT_TRUE(e) << p.url << " was accepted";
  EXPECT_EQ(e->code(), ErrorCode::InvalidArgument);
  EXPECT_TRUE(has_substr(e->what(), "malformed URL '"));
  EXPECT_TRUE(has_substr(e->what(), p.why));
  // The message shows the accepted shape, so the user can fix it.
  EXPECT_TRUE(has_substr(e->what(), "expected scheme://"));
  EXPECT_FALSE(e->retryable());
}

INSTANTIATE_TEST_SUITE_P(
    Url, MalformedUrl,
    ::testing::Values(BadUrl{"no-scheme-here", "no scheme"},                       //
                      BadUrl{"://host", "no scheme"},                              //
                      BadUrl{"1abc://host", "invalid scheme '1abc'"},              //
                      BadUrl{"a_b://host", "invalid scheme 'a_b'"},                //
                      BadUrl{"mem://a b", "space or control character"},           //
                      BadUrl{"mem://ab\tc", "space or control character"},         //
                      BadUrl{"kafka://a,,b", "empty host in host list"},           //
                      BadUrl{"kafka://a,", "empty host in host list"},             //
                      BadUrl{"kafka://,a", "empty host in host list"},             //
                      BadUrl{"kafka://h:", "empty port in 'h:'"},                  //
                      BadUrl{"kafka://h:x1", "port 'x1' is not a number"},         //
                      BadUrl{"kafka://h:-1", "port '-1' is not a number"},         //
                      BadUrl{"kafka://a:b:c", "has several ':'"},                  //
                      BadUrl{"kafka://[::1", "lacks ']'"},                         //
                      BadUrl{"kafka://[]:1", "empty IPv6 address"},                //
                      BadUrl{"kafka://[::1]x", "expected ':port' after ']'"},      //
                      BadUrl{"kafka://[::1]:", "empty port"},                      //
                      BadUrl{"kafka://a]b", "invalid character in host 'a]b'"},    //
                      BadUrl{"mem://t?=v", "query option without a name"},         //
                      BadUrl{"mem://t/%zz", "bad percent-escape in path"},         //
                      BadUrl{"mem://t/%4", "bad percent-escape in path"},          //
                      BadUrl{"mem://t?a=%g1", "bad percent-escape in query option 'a'"},  //
                      BadUrl{"mem://t?%=1", "bad percent-escape in query option name"},   //
                      BadUrl{"amqp://u%zz@h", "bad percent-escape in user name"}));

TEST(Url, ErrorsNeverShowThePassword) {
  for (const char* bad : {"amqp://alice:hunter2@h:0", "amqp://alice:hunter2@h,,x",
                          "amqp://alice:hunter2@h/%zz"}) {
    auto e = error_of([&] { Url::parse(bad); });
    ASSERT_TRUE(e) << bad;
    EXPECT_TRUE(lacks_substr(e->what(), "hunter2"));
    EXPECT_TRUE(has_substr(e->what(), "alice:***@h"));
  }
}

TEST(Url, BadEscapeInPasswordNamesTheUrlButNotThePassword) {
  auto e = error_of([] { Url::parse("amqp://alice:hun%zzter2@h/vhost"); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::InvalidArgument);
  EXPECT_TRUE(has_substr(e->what(), "bad percent-escape in password"));
  EXPECT_TRUE(has_substr(e->what(), "amqp://alice:***@h/vhost"));
  EXPECT_TRUE(lacks_substr(e->what(), "hun"));
}

TEST(Url, PercentDecode) {
  EXPECT_EQ(percent_decode("a%20b%2fc%2F%25", "x"), "a b/c/%");
  EXPECT_EQ(percent_decode("", "x"), "");
  EXPECT_EQ(percent_decode("%41%61", "x"), "Aa");
  auto e = error_of([] { percent_decode("50%", "the thing"); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::InvalidArgument);
  EXPECT_TRUE(has_substr(e->what(), "bad percent-escape in the thing '50%'"));
  EXPECT_TRUE(has_substr(e->what(), "%25"));
}

}  // namespace
}  // namespace omnibus
