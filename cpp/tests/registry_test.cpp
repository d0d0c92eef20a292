#include <gtest/gtest.h>

#include <algorithm>

#include "omnibus/driver.hpp"
#include "omnibus/error.hpp"
#include "omnibus/publisher.hpp"
#include "omnibus/subscriber.hpp"
#include "test_util.hpp"

namespace omnibus {
namespace {

using test::error_of;
using test::FakeDriver;
using test::has_substr;
using test::ScopedDriver;

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

TEST(Registry, MemIsBuiltIn) {
  auto& r = DriverRegistry::instance();
  EXPECT_TRUE(contains(r.schemes(), "mem"));
  auto mem = r.get("mem");
  ASSERT_TRUE(mem);
  EXPECT_EQ(mem->scheme(), "mem");
  EXPECT_FALSE(mem->description().empty());
}

TEST(Registry, SchemesAreSorted) {
  ScopedDriver z(std::make_shared<FakeDriver>("zz-sorted"));
  ScopedDriver a(std::make_shared<FakeDriver>("aa-sorted"));
  auto s = DriverRegistry::instance().schemes();
  EXPECT_TRUE(std::is_sorted(s.begin(), s.end()));
  EXPECT_TRUE(contains(s, "aa-sorted"));
  EXPECT_TRUE(contains(s, "zz-sorted"));
}

TEST(Registry, AddThenGetThenRemove) {
  auto& r = DriverRegistry::instance();
  auto d = std::make_shared<FakeDriver>("addget");
  {
    ScopedDriver scoped(d);
    EXPECT_EQ(r.get("addget"), d);
  }
  EXPECT_FALSE(contains(r.schemes(), "addget"));
  auto e = error_of([&] { r.get("addget"); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::InvalidArgument);
}

TEST(Registry, DuplicateSchemeIsAnError) {
  auto& r = DriverRegistry::instance();
  auto first = std::make_shared<FakeDriver>("dup");
  ScopedDriver scoped(first);
  auto e = error_of([&] { r.add(std::make_shared<FakeDriver>("dup")); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::InvalidArgument);
  EXPECT_TRUE(has_substr(e->what(), "a driver for scheme 'dup://' is already registered"));
  EXPECT_EQ(r.get("dup"), first);  // the first registration is kept

  e = error_of([&] { r.add(std::make_shared<FakeDriver>("mem")); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::InvalidArgument);
  EXPECT_TRUE(has_substr(e->what(), "'mem://'"));
}

TEST(Registry, UnknownSchemeListsTheKnownOnes) {
  ScopedDriver scoped(std::make_shared<FakeDriver>("known-extra"));
  auto e = error_of([] { DriverRegistry::instance().get("nosuch"); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::InvalidArgument);
  EXPECT_TRUE(has_substr(e->what(), "unknown URL scheme 'nosuch://'"));
  EXPECT_TRUE(has_substr(e->what(), "known schemes: "));
  EXPECT_TRUE(has_substr(e->what(), "mem://"));
  EXPECT_TRUE(has_substr(e->what(), "known-extra://"));
}

TEST(Registry, UnknownSchemeFromOpen) {
  for (bool publisher : {true, false}) {
    auto e = error_of([&] {
      if (publisher) Publisher::open("nosuch://host/topic");
      else Subscriber::open("nosuch://host/topic");
    });
    ASSERT_TRUE(e);
    EXPECT_EQ(e->code(), ErrorCode::InvalidArgument);
    EXPECT_TRUE(has_substr(e->what(), "unknown URL scheme 'nosuch://'"));
    EXPECT_TRUE(has_substr(e->what(), "mem://"));
  }
}

TEST(Registry, SchemeLookupFromOpenIsCaseInsensitive) {
  // URL schemes are lower-cased by the parser, so MEM:// finds mem://.
  auto pub = Publisher::open(test::unique_topic_url().replace(0, 3, "MEM"));
  EXPECT_EQ(pub->capabilities().delivery_guarantee, "at-least-once");
}

TEST(Registry, LeftOutSchemeGivesUnsupportedWithTheReason) {
  auto& r = DriverRegistry::instance();
  r.add_unavailable("leftout", "libleftout was not found; install libleftout-dev");
  auto e = error_of([&] { r.get("leftout"); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::Unsupported);
  EXPECT_TRUE(has_substr(e->what(), "the leftout:// driver is not in this build"));
  EXPECT_TRUE(has_substr(e->what(), "libleftout was not found; install libleftout-dev"));
  EXPECT_FALSE(contains(r.schemes(), "leftout"));

  auto un = r.unavailable();
  auto it = std::find_if(un.begin(), un.end(), [](const auto& p) { return p.first == "leftout"; });
  ASSERT_NE(it, un.end());
  EXPECT_EQ(it->second, "libleftout was not found; install libleftout-dev");

  e = error_of([] { Publisher::open("leftout://h/t"); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::Unsupported);
  e = error_of([] { Subscriber::open("leftout://h/t"); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::Unsupported);
}

TEST(Registry, ProtocolDriversMissingFromThisBuildAreUnsupported) {
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"amqp", "rabbitmq-c"}, {"kafka", "librdkafka"}, {"mqtt", "paho-mqtt-cpp"}, {"nats", "cnats"}};
  auto& r = DriverRegistry::instance();
  for (const auto& [scheme, library] : expected) {
    if (contains(r.schemes(), scheme)) continue;  // a build that has this driver
    auto e = error_of([&] { r.get(scheme); });
    ASSERT_TRUE(e) << scheme;
    EXPECT_EQ(e->code(), ErrorCode::Unsupported) << scheme;
    EXPECT_TRUE(has_substr(e->what(), scheme + "://")) << scheme;
    EXPECT_TRUE(has_substr(e->what(), library)) << scheme;
  }
}

TEST(Registry, AddingADriverReplacesTheUnavailableNote) {
  auto& r = DriverRegistry::instance();
  r.add_unavailable("latecomer", "not built");
  auto d = std::make_shared<FakeDriver>("latecomer");
  ScopedDriver scoped(d);
  EXPECT_EQ(r.get("latecomer"), d);
  for (const auto& [scheme, _] : r.unavailable()) EXPECT_NE(scheme, "latecomer");
}

TEST(Registry, UnavailableNoteDoesNotHideARegisteredDriver) {
  auto& r = DriverRegistry::instance();
  auto d = std::make_shared<FakeDriver>("present");
  ScopedDriver scoped(d);
  r.add_unavailable("present", "should be ignored");
  EXPECT_EQ(r.get("present"), d);
  for (const auto& [scheme, _] : r.unavailable()) EXPECT_NE(scheme, "present");
}

TEST(Registry, OpenUsesTheRegisteredDriver) {
  auto d = std::make_shared<FakeDriver>("viafake");
  ScopedDriver scoped(d);
  auto pub = Publisher::open("viafake://h/t?token=secret-token");
  std::lock_guard lock(d->mu_);
  ASSERT_TRUE(d->last_sender);
  ASSERT_TRUE(d->last_options);
  EXPECT_EQ(d->last_options->get_string("token"), "secret-token");
  EXPECT_EQ(d->last_url->scheme, "viafake");
  EXPECT_EQ(d->last_url->hosts[0].host, "h");
}

}  // namespace
}  // namespace omnibus
