#include "omnibus/bridge.hpp"

#include <gtest/gtest.h>

#include <set>

#include "omnibus/error.hpp"
#include "test_util.hpp"

namespace omnibus {
namespace {

using namespace std::chrono_literals;
using test::error_of;
using test::eventually;
using test::FakeDriver;
using test::has_substr;
using test::out;
using test::receive_n;
using test::ScopedDriver;
using test::unique_topic_url;

// A source topic, a sink topic with a subscriber attached (mem:// keeps
// messages for subscriptions that exist), and a publisher into the source.
struct Rig {
  std::string source = unique_topic_url("/src");
  std::string sink = unique_topic_url("/sink");
  std::shared_ptr<Subscriber> sink_sub = Subscriber::open(sink);
  std::shared_ptr<Publisher> feed = Publisher::open(source);

  void publish(std::vector<OutMessage> msgs) {
    auto tracker = feed->publish(std::move(msgs));
    ASSERT_TRUE(tracker->wait_for(test::kPatience));
    ASSERT_TRUE(tracker->failures().empty());
  }
};

BridgeConfig config() {
  BridgeConfig c;
  c.batch = 64;
  c.max_in_flight = 256;
  c.retry_backoff = 5ms;
  c.max_retry_backoff = 20ms;
  return c;
}

TEST(Bridge, MovesEveryMessageWithKeyHeadersAndTimestamp) {
  Rig r;
  auto bridge = Bridge::open(r.source, r.sink, config());
  std::vector<OutMessage> msgs;
  for (int i = 0; i < 1000; ++i) {
    auto m = out("m" + std::to_string(i), "k" + std::to_string(i % 7), {{"unit", "C"}, {"n", std::to_string(i)}});
    m.timestamp_ms = 1700000000000 + i;
    msgs.push_back(std::move(m));
  }
  r.publish(std::move(msgs));
  auto got = receive_n(*r.sink_sub, 1000);
  ASSERT_EQ(got.size(), 1000u);
  for (int i = 0; i < 1000; ++i) {
    EXPECT_EQ(got[i]->payload(), "m" + std::to_string(i));  // one source, one sink: order kept
    EXPECT_EQ(got[i]->key(), "k" + std::to_string(i % 7));
    EXPECT_EQ(got[i]->headers(), (Headers{{"unit", "C"}, {"n", std::to_string(i)}}));
    EXPECT_EQ(got[i]->timestamp_ms(), 1700000000000 + i);
  }
  EXPECT_TRUE(bridge->wait_idle(test::kPatience));
  auto s = bridge->stats();
  EXPECT_EQ(s.consumed, 1000u);
  EXPECT_EQ(s.published, 1000u);
  EXPECT_EQ(s.acked, 1000u);
  EXPECT_EQ(s.failed, 0u);
  EXPECT_EQ(s.in_flight, 0u);
  EXPECT_EQ(bridge->delivery_guarantee(), "at-least-once");
  EXPECT_TRUE(bridge->stop(test::kPatience));
}

TEST(Bridge, KeyTemplateMapsTopicLevelsAndSourceKey) {
  Rig r;
  auto c = config();
  c.key_template = "{topic[-1]}:{{{key}}}:{topic[1]}";
  c.extra_headers = {{"via", "bridge"}};
  c.keep_headers = false;
  auto bridge = Bridge::open(r.source, r.sink, c);
  r.publish({out("x", "dev-1", {{"dropped", "yes"}})});
  auto got = receive_n(*r.sink_sub, 1);
  ASSERT_EQ(got.size(), 1u);
  // unique_topic_url: "mem://Suite.Name/N/src" -> levels Suite.Name, N, src
  auto topic = r.source.substr(6);
  auto n = topic.substr(topic.find('/') + 1);
  n = n.substr(0, n.find('/'));
  EXPECT_EQ(got[0]->key(), "src:{dev-1}:" + n);
  EXPECT_EQ(got[0]->headers(), (Headers{{"via", "bridge"}}));
}

TEST(Bridge, BadKeyTemplateNamesTheValidFields) {
  Rig r;
  for (std::string bad : {"{device}", "{topic[x]}", "{topic", "a}b", "{topic[]}"}) {
    auto c = config();
    c.key_template = bad;
    auto e = error_of([&] { Bridge::open(r.source, r.sink, c); });
    ASSERT_TRUE(e) << bad;
    EXPECT_EQ(e->code(), ErrorCode::InvalidArgument);
    EXPECT_TRUE(has_substr(e->what(), "{topic[N]}")) << e->what();
  }
  auto c = config();
  c.sink_codec = "yaml";
  auto e = error_of([&] { Bridge::open(r.source, r.sink, c); });
  ASSERT_TRUE(e);
  EXPECT_TRUE(has_substr(e->what(), "msgpack")) << e->what();
  c = config();
  c.batch = 0;
  EXPECT_EQ(error_of([&] { Bridge::open(r.source, r.sink, c); })->code(), ErrorCode::InvalidArgument);
}

TEST(Bridge, SourceIsAckedOnlyAfterTheSinkConfirmed) {
  auto fake = std::make_shared<FakeDriver>("bridgefake");
  ScopedDriver scoped(fake);
  Rig r;
  auto bridge = Bridge::open(r.source, "bridgefake://sink", config());
  fake->last_sender->hold_results();
  r.publish(test::numbered("m", 10));
  ASSERT_TRUE(eventually([&] { return fake->last_sender->held_batches() > 0 && bridge->stats().consumed == 10; }));
  auto s = bridge->stats();
  EXPECT_EQ(s.acked, 0u);
  EXPECT_EQ(s.in_flight, 10u);
  fake->last_sender->release_all();
  ASSERT_TRUE(bridge->wait_idle(test::kPatience));
  s = bridge->stats();
  EXPECT_EQ(s.acked, 10u);
  EXPECT_EQ(s.published, 10u);
}

TEST(Bridge, RetriesWhileTheSinkIsUnavailableThenDelivers) {
  auto fake = std::make_shared<FakeDriver>("bridgefake");
  ScopedDriver scoped(fake);
  Rig r;
  // delivery_timeout_ms=1: the sink's publisher gives up at once, so that
  // the bridge's own retry is what this test sees.
  auto bridge = Bridge::open(r.source, "bridgefake://sink?delivery_timeout_ms=1", config());
  fake->last_sender->fail_payload("m3", ErrorCode::Unavailable, "broker away");
  r.publish(test::numbered("m", 5));
  ASSERT_TRUE(eventually([&] { return bridge->stats().retried >= 3; }));
  EXPECT_EQ(bridge->stats().in_flight, 1u);
  EXPECT_TRUE(has_substr(bridge->last_error(), "broker away"));
  fake->last_sender->clear_failures();
  ASSERT_TRUE(bridge->wait_idle(test::kPatience));
  auto s = bridge->stats();
  EXPECT_EQ(s.published, 5u);
  EXPECT_EQ(s.acked, 5u);
  EXPECT_EQ(s.failed, 0u);
  std::multiset<std::string> sent;
  for (const auto& b : fake->last_sender->batches())
    for (const auto& p : b) sent.insert(p);
  EXPECT_GE(sent.count("m3"), 4u);
  EXPECT_EQ(sent.count("m1"), 1u);
}

TEST(Bridge, UndecodableGoesToTheDeadLetterUrlWithTheError) {
  Rig r;
  auto dlq = unique_topic_url("/dlq");
  auto dlq_sub = Subscriber::open(dlq);
  auto c = config();
  c.source_codec = "json";
  c.sink_codec = "msgpack";
  c.dead_letter_url = dlq;
  auto bridge = Bridge::open(r.source, r.sink, c);
  r.publish({out(R"({"seq":1})", "d1"), out("{not json", "d2"), out(R"({"seq":3})", "d3")});
  auto good = receive_n(*r.sink_sub, 2);
  ASSERT_EQ(good.size(), 2u);
  EXPECT_EQ(good[0]->payload(), builtin_codec("msgpack")->encode(Value{{"seq", 1}}));
  EXPECT_EQ(good[1]->key(), "d3");
  auto bad = receive_n(*dlq_sub, 1);
  ASSERT_EQ(bad.size(), 1u);
  EXPECT_EQ(bad[0]->payload(), "{not json");
  EXPECT_EQ(bad[0]->key(), "d2");
  std::map<std::string, std::string> h(bad[0]->headers().begin(), bad[0]->headers().end());
  EXPECT_EQ(h["omnibus-error-code"], "Codec");
  EXPECT_FALSE(h["omnibus-error"].empty());
  EXPECT_EQ(h["omnibus-source-topic"], r.source.substr(6));
  ASSERT_TRUE(bridge->wait_idle(test::kPatience));
  auto s = bridge->stats();
  EXPECT_EQ(s.published, 2u);
  EXPECT_EQ(s.dead_lettered, 1u);
  EXPECT_EQ(s.acked, 3u);
}

TEST(Bridge, UndecodableWithoutDeadLetterIsCountedAndLeftUnacked) {
  Rig r;
  auto c = config();
  c.source_codec = "json";
  auto bridge = Bridge::open(r.source, r.sink, c);
  r.publish({out("[1]"), out("nope"), out("[3]")});
  ASSERT_EQ(receive_n(*r.sink_sub, 2).size(), 2u);
  ASSERT_TRUE(bridge->wait_idle(test::kPatience));
  auto s = bridge->stats();
  EXPECT_EQ(s.failed, 1u);
  EXPECT_EQ(s.acked, 2u);
  EXPECT_FALSE(bridge->last_error().empty());
}

TEST(Bridge, NonRetryableSinkFailureGoesToTheDeadLetterUrl) {
  auto fake = std::make_shared<FakeDriver>("bridgefake");
  ScopedDriver scoped(fake);
  Rig r;
  auto dlq = unique_topic_url("/dlq");
  auto dlq_sub = Subscriber::open(dlq);
  auto c = config();
  c.dead_letter_url = dlq;
  auto bridge = Bridge::open(r.source, "bridgefake://sink", c);
  fake->last_sender->fail_payload("m1", ErrorCode::InvalidArgument, "refused");
  r.publish(test::numbered("m", 3));
  auto bad = receive_n(*dlq_sub, 1);
  ASSERT_EQ(bad.size(), 1u);
  EXPECT_EQ(bad[0]->payload(), "m1");
  ASSERT_TRUE(bridge->wait_idle(test::kPatience));
  auto s = bridge->stats();
  EXPECT_EQ(s.published, 2u);
  EXPECT_EQ(s.dead_lettered, 1u);
  EXPECT_EQ(s.retried, 0u);
}

TEST(Bridge, TransformEditsAndDropsPerBatch) {
  Rig r;
  std::atomic<int> calls{0};
  auto bridge = Bridge::open(r.source, r.sink, config(), [&](std::vector<BridgeItem>& items) {
    ++calls;
    for (auto& it : items) {
      const auto& p = it.source->payload();
      if (std::stoi(p.substr(1)) % 2) {
        it.drop = true;
      } else {
        it.out.payload = make_bytes(p + "!");
      }
    }
  });
  r.publish(test::numbered("m", 100));
  auto got = receive_n(*r.sink_sub, 50);
  ASSERT_EQ(got.size(), 50u);
  EXPECT_EQ(got[0]->payload(), "m0!");
  EXPECT_EQ(got[49]->payload(), "m98!");
  ASSERT_TRUE(bridge->wait_idle(test::kPatience));
  auto s = bridge->stats();
  EXPECT_EQ(s.dropped, 50u);
  EXPECT_EQ(s.published, 50u);
  EXPECT_EQ(s.acked, 100u);
  EXPECT_LT(calls.load(), 100);  // per batch, not per message
}

TEST(Bridge, TransformErrorSendsTheBatchToTheDeadLetterUrl) {
  Rig r;
  auto dlq = unique_topic_url("/dlq");
  auto dlq_sub = Subscriber::open(dlq);
  auto c = config();
  c.dead_letter_url = dlq;
  auto bridge = Bridge::open(r.source, r.sink, c, [](std::vector<BridgeItem>&) {
    throw std::runtime_error("division by zero");
  });
  r.publish(test::numbered("m", 3));
  auto bad = receive_n(*dlq_sub, 3);
  ASSERT_EQ(bad.size(), 3u);
  bool named = false;
  for (const auto& [k, v] : bad[0]->headers()) named |= k == "omnibus-error" && v.find("division by zero") != std::string::npos;
  EXPECT_TRUE(named);
  ASSERT_TRUE(bridge->wait_idle(test::kPatience));
  EXPECT_EQ(bridge->stats().dead_lettered, 3u);
}

TEST(Bridge, StopDrainsOrReportsWhatIsLeftUnacked) {
  auto fake = std::make_shared<FakeDriver>("bridgefake");
  ScopedDriver scoped(fake);
  Rig r;
  auto bridge = Bridge::open(r.source, "bridgefake://sink", config());
  fake->last_sender->hold_results();
  r.publish(test::numbered("m", 4));
  ASSERT_TRUE(eventually([&] { return fake->last_sender->held_batches() > 0 && bridge->stats().consumed == 4; }));
  // The sink never confirms: stop gives up after its timeout, the sink's
  // close fails the messages, and none of them is acked.
  EXPECT_FALSE(bridge->stop(200ms));
  auto s = bridge->stats();
  EXPECT_EQ(s.acked, 0u);
  EXPECT_EQ(s.failed, 4u);
  EXPECT_EQ(s.in_flight, 0u);
  EXPECT_FALSE(bridge->stop(1s));  // idempotent
}

TEST(Bridge, BackPressureBoundsMessagesInFlight) {
  auto fake = std::make_shared<FakeDriver>("bridgefake");
  ScopedDriver scoped(fake);
  Rig r;
  auto c = config();
  c.batch = 10;
  c.max_in_flight = 30;
  auto bridge = Bridge::open(r.source, "bridgefake://sink", c);
  fake->last_sender->hold_results();
  r.publish(test::numbered("m", 100));
  ASSERT_TRUE(eventually([&] { return bridge->stats().consumed == 30; }));
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(bridge->stats().consumed, 30u);
  fake->last_sender->release_all();
  ASSERT_TRUE(eventually([&] {
    fake->last_sender->release_all();
    return bridge->stats().acked == 100;
  }));
}

}  // namespace
}  // namespace omnibus
