#include "omnibus/options.hpp"

#include <gtest/gtest.h>

#include "omnibus/error.hpp"
#include "omnibus/publisher.hpp"
#include "omnibus/subscriber.hpp"
#include "test_util.hpp"

namespace omnibus {
namespace {

using test::error_of;
using test::has_substr;

const std::vector<OptionSpec>& specs() {
  static const std::vector<OptionSpec> s = {
      {"verbose", OptionType::Bool, "false", "talk more"},
      {"retries", OptionType::Int, "3", "how often to retry", {}, 0, 10},
      {"window", OptionType::Int, "100", "window size", {}, 1},
      {"ratio", OptionType::Float, "0.5", "a ratio", {}, 0, 1},
      {"name", OptionType::String, "", "a name"},
      {"mode", OptionType::Choice, "fast", "how", {"fast", "safe"}},
  };
  return s;
}

OptionValues parse(const std::vector<std::pair<std::string, std::string>>& given) {
  return OptionValues::parse(specs(), given, "test:// thing");
}

TEST(Options, DefaultsFillEveryDeclaredOption) {
  auto v = parse({});
  EXPECT_FALSE(v.get_bool("verbose"));
  EXPECT_EQ(v.get_int("retries"), 3);
  EXPECT_EQ(v.get_int("window"), 100);
  EXPECT_DOUBLE_EQ(v.get_float("ratio"), 0.5);
  EXPECT_EQ(v.get_string("name"), "");
  EXPECT_EQ(v.get_string("mode"), "fast");
  EXPECT_EQ(v.values().size(), specs().size());
  for (const auto& s : specs()) EXPECT_FALSE(v.was_given(s.name)) << s.name;
}

TEST(Options, GivenValuesAreConvertedAndRecorded) {
  auto v = parse({{"verbose", "yes"}, {"retries", "10"}, {"ratio", "0.25"}, {"name", "x y"}, {"mode", "safe"}});
  EXPECT_TRUE(v.get_bool("verbose"));
  EXPECT_EQ(v.get_int("retries"), 10);
  EXPECT_DOUBLE_EQ(v.get_float("ratio"), 0.25);
  EXPECT_EQ(v.get_string("name"), "x y");
  EXPECT_EQ(v.get_string("mode"), "safe");
  EXPECT_TRUE(v.was_given("verbose"));
  EXPECT_TRUE(v.was_given("mode"));
  EXPECT_FALSE(v.was_given("window"));
}

TEST(Options, LaterValueOverridesEarlier) {
  // URL query pairs come first, keyword options after: keywords win.
  auto v = parse({{"retries", "1"}, {"retries", "7"}});
  EXPECT_EQ(v.get_int("retries"), 7);
}

TEST(Options, BoolSpellings) {
  for (const char* t : {"true", "TRUE", "1", "yes", "On"}) EXPECT_TRUE(parse({{"verbose", t}}).get_bool("verbose")) << t;
  for (const char* f : {"false", "False", "0", "no", "OFF"})
    EXPECT_FALSE(parse({{"verbose", f}}).get_bool("verbose")) << f;
}

TEST(Options, IntegerRangeIsInclusive) {
  EXPECT_EQ(parse({{"retries", "0"}}).get_int("retries"), 0);
  EXPECT_EQ(parse({{"retries", "10"}}).get_int("retries"), 10);
  EXPECT_EQ(parse({{"window", "9223372036854775807"}}).get_int("window"), INT64_MAX);
}

TEST(Options, FloatAcceptsIntegersAndRangeEnds) {
  EXPECT_DOUBLE_EQ(parse({{"ratio", "1"}}).get_float("ratio"), 1.0);
  EXPECT_DOUBLE_EQ(parse({{"ratio", "0"}}).get_float("ratio"), 0.0);
}

struct BadValue {
  const char* name;
  const char* value;
  const char* expected;  // what the message says the option expects
};

void PrintTo(const BadValue& p, std::ostream* os) { *os << p.name << "=" << p.value; }

class BadOptionValue : public ::testing::TestWithParam<BadValue> {};

TEST_P(BadOptionValue, IsInvalidArgumentNamingOptionOwnerValueAndExpectation) {
  const auto& p = GetParam();
  auto e = error_of([&] { parse({{p.name, p.value}}); });
  ASSERT_TRUE(e) << p.name << "=" << p.value << " was accepted";
  EXPECT_EQ(e->code(), ErrorCode::InvalidArgument);
  EXPECT_TRUE(has_substr(e->what(), std::string("option '") + p.name + "' of test:// thing expects "));
  EXPECT_TRUE(has_substr(e->what(), p.expected));
  EXPECT_TRUE(has_substr(e->what(), std::string("got '") + p.value + "'"));
}

INSTANTIATE_TEST_SUITE_P(Options, BadOptionValue,
                         ::testing::Values(BadValue{"verbose", "maybe", "a bool (true/false"},
                                           BadValue{"verbose", "", "a bool"},
                                           BadValue{"retries", "", "an int"},
                                           BadValue{"retries", "3x", "an int"},
                                           BadValue{"retries", "1.5", "an int"},
                                           BadValue{"retries", "0x10", "an int"},
                                           BadValue{"retries", "99999999999999999999", "an int"},
                                           BadValue{"retries", "11", "an int in 0..10"},
                                           BadValue{"retries", "-1", "an int in 0..10"},
                                           BadValue{"window", "0", "an int in 1.."},
                                           BadValue{"ratio", "abc", "a number"},
                                           BadValue{"ratio", "", "a number"},
                                           BadValue{"ratio", "nan", "a number"},
                                           BadValue{"ratio", "inf", "a number"},
                                           BadValue{"ratio", "1.01", "a number in 0..1"},
                                           BadValue{"ratio", "-0.5", "a number in 0..1"},
                                           BadValue{"mode", "FAST", "one of fast, safe"},
                                           BadValue{"mode", "", "one of fast, safe"}));

TEST(Options, UnknownNameListsTheValidOnesWithTypeAndDefault) {
  auto e = error_of([] { parse({{"retires", "3"}}); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::InvalidArgument);
  const std::string what = e->what();
  EXPECT_TRUE(has_substr(what, "unknown option 'retires' for test:// thing"));
  EXPECT_TRUE(has_substr(what, "valid options are: mode, name, ratio, retries, verbose, window"));
  EXPECT_TRUE(has_substr(what, "  retries (int, default 3): how often to retry\n"));
  EXPECT_TRUE(has_substr(what, "  mode (choice: fast|safe, default fast): how\n"));
  EXPECT_TRUE(has_substr(what, "  name (str, default ''): a name\n"));
}

// A spec named "lib." admits any "lib.<name>" as a string for the driver's
// native library.
TEST(Options, FamilyPassesAnyNameWithItsPrefix) {
  std::vector<OptionSpec> s = specs();
  s.push_back({"lib.", OptionType::String, "", "handed to the library"});
  auto v = OptionValues::parse(s, {{"lib.linger.ms", "5"}, {"retries", "1"}, {"lib.acks", "all"}}, "test:// thing");
  auto fam = v.family("lib.");
  using Map = std::map<std::string, std::string>;
  EXPECT_EQ(Map(fam.begin(), fam.end()), (Map{{"linger.ms", "5"}, {"acks", "all"}}));
  EXPECT_EQ(v.get_string("lib.acks"), "all");
  EXPECT_TRUE(v.was_given("lib.linger.ms"));
  EXPECT_EQ(v.get_int("retries"), 1);
  EXPECT_TRUE(v.family("other.").empty());
  EXPECT_EQ(v.values().count("lib."), 0u);  // the family itself has no value
}

TEST(Options, FamilyKeepsTheLastValueOfARepeatedName) {
  std::vector<OptionSpec> s = {{"lib.", OptionType::String, "", "handed to the library"}};
  auto v = OptionValues::parse(s, {{"lib.acks", "1"}, {"lib.acks", "all"}}, "test:// thing");
  for (const auto& [name, value] : v.family("lib.")) {
    EXPECT_EQ(name, "acks");
    EXPECT_EQ(value, "all");
  }
}

TEST(Options, FamilyPrefixAloneIsUnknownAndListedWithPlaceholder) {
  std::vector<OptionSpec> s = {{"lib.", OptionType::String, "", "handed to the library"},
                               {"plain", OptionType::Int, "1", "an int"}};
  for (const char* name : {"lib.", "lib", "libx"}) {
    auto e = error_of([&] { OptionValues::parse(s, {{name, "1"}}, "test:// thing"); });
    ASSERT_TRUE(e) << name;
    EXPECT_EQ(e->code(), ErrorCode::InvalidArgument);
    EXPECT_TRUE(has_substr(e->what(), std::string("unknown option '") + name + "'"));
    EXPECT_TRUE(has_substr(e->what(), "valid options are: lib.<name>, plain"));
    EXPECT_TRUE(has_substr(e->what(), "  lib.<name> (str, default ''): handed to the library\n"));
  }
}

TEST(Options, DescribeOptionsOneLinePerSpec) {
  std::vector<OptionSpec> s = {
      {"a", OptionType::Bool, "true", "first"},
      {"b", OptionType::Float, "1.5", "second"},
      {"c", OptionType::Choice, "x", "third", {"x", "y", "z"}},
  };
  EXPECT_EQ(describe_options(s),
            "  a (bool, default true): first\n"
            "  b (float, default 1.5): second\n"
            "  c (choice: x|y|z, default x): third\n");
  EXPECT_EQ(describe_options({}), "");
}

TEST(Options, TypeNames) {
  EXPECT_STREQ(option_type_name(OptionType::Bool), "bool");
  EXPECT_STREQ(option_type_name(OptionType::Int), "int");
  EXPECT_STREQ(option_type_name(OptionType::Float), "float");
  EXPECT_STREQ(option_type_name(OptionType::String), "str");
  EXPECT_STREQ(option_type_name(OptionType::Choice), "choice");
}

TEST(Options, ReadingAnUndeclaredOptionIsAnInternalError) {
  auto v = parse({});
  auto e = error_of([&] { v.get_int("nope"); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::Internal);
  EXPECT_TRUE(has_substr(e->what(), "'nope'"));
}

TEST(Options, EmptyGivenListWithNoSpecs) {
  auto v = OptionValues::parse({}, {}, "nothing");
  EXPECT_TRUE(v.values().empty());
  auto e = error_of([] { OptionValues::parse({}, {{"x", "1"}}, "nothing"); });
  ASSERT_TRUE(e);
  EXPECT_TRUE(has_substr(e->what(), "unknown option 'x' for nothing"));
}

// The portable option tables are parsed with their own defaults whenever a
// publisher or subscriber opens, so a bad default would break every open().
TEST(Options, PortableDefaultsParse) {
  auto p = OptionValues::parse(Publisher::portable_options(), {}, "publisher");
  EXPECT_EQ(p.get_int("batch_messages"), 1000);
  EXPECT_EQ(p.get_int("batch_bytes"), 1 << 20);
  EXPECT_DOUBLE_EQ(p.get_float("batch_linger_ms"), 0.1);  // a 100 us linger turns per-message wake-ups into batches
  EXPECT_EQ(p.get_int("max_pending"), 100000);
  EXPECT_EQ(p.get_int("block_timeout_ms"), 10000);
  auto s = OptionValues::parse(Subscriber::portable_options(), {}, "subscriber");
  EXPECT_EQ(s.get_int("prefetch"), 1000);
  EXPECT_TRUE(s.get_bool("auto_ack"));
}

TEST(Options, PublisherOpenRejectsUnknownOptionListingPortableAndDriverOptions) {
  auto e = error_of([] { Publisher::open(test::unique_topic_url("?batch_size=10")); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::InvalidArgument);
  EXPECT_TRUE(has_substr(e->what(), "unknown option 'batch_size' for mem:// publisher"));
  EXPECT_TRUE(has_substr(e->what(),
                         "valid options are: batch_bytes, batch_linger_ms, batch_messages, block_timeout_ms, "
                         "delivery_timeout_ms, max_message_bytes, max_pending"));
}

TEST(Options, SubscriberOpenRejectsUnknownOptionListingPortableAndDriverOptions) {
  auto e = error_of([] { Subscriber::open(test::unique_topic_url(), {{"grup", "g"}}); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::InvalidArgument);
  EXPECT_TRUE(has_substr(e->what(), "unknown option 'grup' for mem:// subscriber"));
  EXPECT_TRUE(has_substr(e->what(), "valid options are: ack_deadline_ms, auto_ack, group, password_env, password_file, prefetch"));
}

TEST(Options, PasswordFromAFileOrTheEnvironmentIsCheckedAndNeverShown) {
  // A missing file and an unset variable are named; what they would hold never is.
  auto e = error_of([] { Publisher::open(test::unique_topic_url("?password_file=/nonexistent/omnibus-pw")); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::InvalidArgument);
  EXPECT_TRUE(has_substr(e->what(), "password_file=/nonexistent/omnibus-pw cannot be read"));
  e = error_of([] { Subscriber::open(test::unique_topic_url("?password_env=OMNIBUS_TEST_UNSET_VARIABLE")); });
  ASSERT_TRUE(e);
  EXPECT_TRUE(has_substr(e->what(), "password_env=OMNIBUS_TEST_UNSET_VARIABLE names an environment variable that is unset"));
  e = error_of([] { Publisher::open("mem://u:hunter2@h/t?password_env=HOME"); });
  ASSERT_TRUE(e);
  EXPECT_TRUE(has_substr(e->what(), "give it once"));
  EXPECT_FALSE(has_substr(e->what(), "hunter2"));
  e = error_of([] { Publisher::open("mem://h/t?password_env=HOME&password_file=/etc/hostname"); });
  ASSERT_TRUE(e);
  EXPECT_TRUE(has_substr(e->what(), "both given"));
}

TEST(Options, OneUrlServesBothSides) {
  // A URL query option of the other role is skipped, so a shared URL can
  // carry publisher and subscriber settings together.
  const auto url = test::unique_topic_url("?group=g&prefetch=5&batch_messages=3&max_message_bytes=64");
  auto pub = Publisher::open(url);
  EXPECT_EQ(pub->config().batch_messages, 3u);
  EXPECT_EQ(pub->capabilities().max_message_bytes, 64u);
  auto sub = Subscriber::open(url);
  EXPECT_EQ(sub->config().prefetch, 5u);
}

TEST(Options, KeywordOptionsMustBelongToTheRole) {
  const auto url = test::unique_topic_url();
  auto e = error_of([&] { Publisher::open(url, {{"group", "g"}}); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::InvalidArgument);
  EXPECT_TRUE(has_substr(e->what(), "unknown option 'group' for mem:// publisher"));
  e = error_of([&] { Subscriber::open(url, {{"batch_messages", "3"}}); });
  ASSERT_TRUE(e);
  EXPECT_TRUE(has_substr(e->what(), "unknown option 'batch_messages' for mem:// subscriber"));
}

TEST(Options, OpenRejectsBadValuesBeforeConnecting) {
  auto e = error_of([] { Publisher::open(test::unique_topic_url("?batch_linger_ms=60001")); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::InvalidArgument);
  EXPECT_TRUE(has_substr(e->what(), "option 'batch_linger_ms' of mem:// publisher expects a number in 0..60000"));
  e = error_of([] { Subscriber::open(test::unique_topic_url(), {{"prefetch", "0"}}); });
  ASSERT_TRUE(e);
  EXPECT_TRUE(has_substr(e->what(), "option 'prefetch' of mem:// subscriber expects an int in 1.."));
}

}  // namespace
}  // namespace omnibus
