#include "omnibus/subscriber.hpp"

#include <gtest/gtest.h>

#include <mutex>
#include <set>

#include "omnibus/error.hpp"
#include "test_util.hpp"

namespace omnibus {
namespace {

using namespace std::chrono_literals;
using test::error_of;
using test::eventually;
using test::FakeReceiver;
using test::has_substr;
using test::kPatience;
using test::payloads_of;
using test::receive_n;

using Ids = std::vector<std::vector<std::uint64_t>>;
using Strings = std::vector<std::string>;

SubscriberConfig config(bool auto_ack = true, std::size_t prefetch = 1000) {
  SubscriberConfig c;
  c.auto_ack = auto_ack;
  c.prefetch = prefetch;
  return c;
}

// A subscriber on a FakeReceiver. Payloads are offered before the fetch
// thread starts, so its first fetch sees all of them.
struct Rig {
  explicit Rig(SubscriberConfig c = config(), const Strings& offered = {}, bool can_nack = true)
      : receiver(std::make_shared<FakeReceiver>(can_nack)) {
    receiver->offer(offered);
    sub = std::make_unique<Subscriber>(receiver, c, "fake://sub");
  }
  std::shared_ptr<FakeReceiver> receiver;
  std::unique_ptr<Subscriber> sub;
};

std::vector<std::uint64_t> ids_of(const std::vector<MessagePtr>& msgs) {
  std::vector<std::uint64_t> v;
  for (const auto& m : msgs) v.push_back(m->ack_id());
  return v;
}

TEST(Subscriber, ReceivesInOrder) {
  Rig r(config(), {"a", "b", "c"});
  auto got = receive_n(*r.sub, 3);
  EXPECT_EQ(payloads_of(got), (Strings{"a", "b", "c"}));
  EXPECT_EQ(got[0]->topic(), "fake-topic");
  EXPECT_EQ(got[0]->delivery_attempt(), 1u);
  EXPECT_EQ(r.sub->url(), "fake://sub");
}

TEST(Subscriber, ReceiveBatchReturnsAtMostMax) {
  Rig r(config(), {"a", "b", "c", "d", "e"});
  ASSERT_TRUE(eventually([&] { return r.sub->buffered() == 5; }));
  EXPECT_EQ(payloads_of(r.sub->receive_batch(2, kPatience)), (Strings{"a", "b"}));
  EXPECT_EQ(r.sub->buffered(), 3u);
  EXPECT_EQ(payloads_of(r.sub->receive_batch(10, kPatience)), (Strings{"c", "d", "e"}));
}

TEST(Subscriber, ReturnsEmptyOnTimeout) {
  Rig r;
  EXPECT_TRUE(r.sub->receive_batch(10, 20ms).empty());
  EXPECT_TRUE(r.sub->receive_batch(10, 0ms).empty());
}

TEST(Subscriber, MessagesOfferedLaterArrive) {
  Rig r;
  EXPECT_TRUE(r.sub->receive_batch(10, 0ms).empty());
  r.receiver->offer({"late"});
  EXPECT_EQ(payloads_of(receive_n(*r.sub, 1)), (Strings{"late"}));
}

TEST(Subscriber, PrefetchBoundsWhatIsFetchedAhead) {
  Strings ten;
  for (int i = 0; i < 10; ++i) ten.push_back(std::to_string(i));
  Rig r(config(true, 4), ten);
  ASSERT_TRUE(eventually([&] { return r.sub->buffered() == 4; }));
  // The fetch thread asks only for the room left in the buffer.
  EXPECT_EQ(r.receiver->handed_out(), 4u);
  EXPECT_EQ(r.sub->receive_batch(3, kPatience).size(), 3u);
  ASSERT_TRUE(eventually([&] { return r.receiver->handed_out() == 7u; }));
  ASSERT_TRUE(eventually([&] { return r.sub->buffered() == 4; }));
  EXPECT_EQ(r.receiver->handed_out(), 7u);
}

TEST(Subscriber, AutoAckAcksEachReceivedBatchInOneCall) {
  Rig r(config(true), {"a", "b", "c"});
  ASSERT_TRUE(eventually([&] { return r.sub->buffered() == 3; }));
  auto got = r.sub->receive_batch(3, kPatience);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(r.receiver->ack_calls(), (Ids{ids_of(got)}));
  for (const auto& m : got) EXPECT_TRUE(m->settled());
  // Acking an auto-acked message again is harmless and reaches no driver.
  got[0]->ack();
  Subscriber::ack(got);
  EXPECT_EQ(r.receiver->ack_calls().size(), 1u);
}

// nack() of an auto-acked message used to be a silent no-op: the caller
// believed it would come again, and it never did.
TEST(Subscriber, NackOfAnAutoAckedMessageIsAnErrorThatSaysWhy) {
  Rig r(config(true), {"a", "b"});
  ASSERT_TRUE(eventually([&] { return r.sub->buffered() == 2; }));
  auto got = r.sub->receive_batch(2, kPatience);
  ASSERT_EQ(got.size(), 2u);
  for (const auto& m : got) EXPECT_TRUE(m->auto_acked());

  auto e = error_of([&] { got[0]->nack(); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::InvalidArgument);
  EXPECT_TRUE(has_substr(e->what(), "auto_ack=True"));
  EXPECT_TRUE(has_substr(e->what(), "auto_ack=False"));
  e = error_of([&] { Subscriber::nack(got); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::InvalidArgument);
  EXPECT_TRUE(r.receiver->nack_calls().empty());

  // ack() asks for what already holds: a no-op that reaches no driver.
  got[1]->ack();
  Subscriber::ack(got);
  EXPECT_EQ(r.receiver->ack_calls(), (Ids{ids_of(got)}));
  for (const auto& m : got) EXPECT_TRUE(m->auto_acked());
}

TEST(Subscriber, NackOfAnAutoAckedMessageWhereTheProtocolCannotNackIsUnsupported) {
  Rig r(config(true), {"a"}, /*can_nack=*/false);
  auto got = receive_n(*r.sub, 1);
  ASSERT_EQ(got.size(), 1u);
  auto e = error_of([&] { got[0]->nack(); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::Unsupported);
  EXPECT_TRUE(has_substr(e->what(), "nack is not supported"));
}

TEST(Subscriber, ABatchNackWithOneAutoAckedMessageSettlesNothing) {
  Rig manual(config(false), {"m"});
  Rig automatic(config(true), {"a"});
  auto mixed = receive_n(*manual.sub, 1);
  auto a = receive_n(*automatic.sub, 1);
  ASSERT_EQ(mixed.size(), 1u);
  ASSERT_EQ(a.size(), 1u);
  mixed.push_back(a[0]);
  auto e = error_of([&] { Subscriber::nack(mixed); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::InvalidArgument);
  EXPECT_FALSE(mixed[0]->settled());
  EXPECT_TRUE(manual.receiver->nack_calls().empty());
  mixed[0]->nack();
  EXPECT_EQ(manual.receiver->nack_calls(), (Ids{{mixed[0]->ack_id()}}));
}

TEST(Subscriber, ManualAckLeavesMessagesToTheApplication) {
  Rig r(config(false), {"a", "b"});
  auto got = receive_n(*r.sub, 2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_TRUE(r.receiver->ack_calls().empty());
  for (const auto& m : got) EXPECT_FALSE(m->settled());

  Subscriber::ack(got);
  EXPECT_EQ(r.receiver->ack_calls(), (Ids{ids_of(got)}));
  for (const auto& m : got) EXPECT_TRUE(m->settled());
  Subscriber::ack(got);
  got[1]->ack();
  got[1]->nack();
  EXPECT_EQ(r.receiver->ack_calls().size(), 1u);
  EXPECT_TRUE(r.receiver->nack_calls().empty());
}

TEST(Subscriber, MessageAckAndNackSettleOnce) {
  Rig r(config(false), {"a", "b"});
  auto got = receive_n(*r.sub, 2);
  ASSERT_EQ(got.size(), 2u);
  got[0]->ack();
  got[0]->ack();
  got[0]->nack();
  got[1]->nack();
  got[1]->nack();
  got[1]->ack();
  EXPECT_EQ(r.receiver->ack_calls(), (Ids{{got[0]->ack_id()}}));
  EXPECT_EQ(r.receiver->nack_calls(), (Ids{{got[1]->ack_id()}}));
}

TEST(Subscriber, BatchNackSkipsSettledMessages) {
  Rig r(config(false), {"a", "b", "c"});
  auto got = receive_n(*r.sub, 3);
  ASSERT_EQ(got.size(), 3u);
  got[1]->ack();
  Subscriber::nack(got);
  EXPECT_EQ(r.receiver->nack_calls(), (Ids{{got[0]->ack_id(), got[2]->ack_id()}}));
  for (const auto& m : got) EXPECT_TRUE(m->settled());
}

TEST(Subscriber, NackWhereUnsupportedLeavesMessagesAckable) {
  Rig r(config(false), {"a", "b"}, /*can_nack=*/false);
  EXPECT_FALSE(r.sub->capabilities().nack);
  auto got = receive_n(*r.sub, 2);
  ASSERT_EQ(got.size(), 2u);

  auto e = error_of([&] { Subscriber::nack(got); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::Unsupported);
  EXPECT_TRUE(has_substr(e->what(), "nack is not supported"));
  for (const auto& m : got) EXPECT_FALSE(m->settled());

  e = error_of([&] { got[0]->nack(); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::Unsupported);
  EXPECT_FALSE(got[0]->settled());

  Subscriber::ack(got);
  EXPECT_EQ(r.receiver->ack_calls(), (Ids{ids_of(got)}));
}

TEST(Subscriber, BatchAckMakesOneCallPerReceiver) {
  Rig r1(config(false), {"a", "b"});
  Rig r2(config(false), {"c"});
  auto got = receive_n(*r1.sub, 2);
  auto got2 = receive_n(*r2.sub, 1);
  ASSERT_EQ(got.size(), 2u);
  ASSERT_EQ(got2.size(), 1u);
  std::vector<MessagePtr> mixed = {got[0], got2[0], got[1], nullptr};
  Subscriber::ack(mixed);
  EXPECT_EQ(r1.receiver->ack_calls(), (Ids{ids_of(got)}));
  EXPECT_EQ(r2.receiver->ack_calls(), (Ids{ids_of(got2)}));
}

TEST(Subscriber, FetchErrorSurfacesOnceTheBufferIsEmpty) {
  Rig r(config(), {"a", "b"});
  r.receiver->fail_when_empty(Error(ErrorCode::Unavailable, "connection lost"));
  EXPECT_EQ(payloads_of(receive_n(*r.sub, 2)), (Strings{"a", "b"}));
  for (int i = 0; i < 2; ++i) {
    auto e = error_of([&] { r.sub->receive_batch(10, kPatience); });
    ASSERT_TRUE(e);
    EXPECT_EQ(e->code(), ErrorCode::Unavailable);
    EXPECT_TRUE(has_substr(e->what(), "connection lost"));
  }
}

TEST(Subscriber, CloseStopsReceivingAndClosesTheReceiverOnce) {
  Rig r(config(), {"a", "b", "c"});
  ASSERT_TRUE(eventually([&] { return r.sub->buffered() == 3; }));
  r.sub->close();
  EXPECT_TRUE(r.sub->closed());
  EXPECT_EQ(r.sub->buffered(), 0u);
  EXPECT_EQ(r.receiver->close_calls(), 1);
  auto e = error_of([&] { r.sub->receive_batch(10, 0ms); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::Closed);
  EXPECT_TRUE(has_substr(e->what(), "subscriber for fake://sub is closed"));
  r.sub->close();
  r.sub.reset();
  EXPECT_EQ(r.receiver->close_calls(), 1);
}

TEST(Subscriber, CloseWakesABlockedReceive) {
  Rig r;
  std::optional<Error> error;
  std::thread reader([&] { error = error_of([&] { r.sub->receive_batch(1, kPatience); }); });
  r.sub->close();
  reader.join();
  ASSERT_TRUE(error);
  EXPECT_EQ(error->code(), ErrorCode::Closed);
}

TEST(Subscriber, DestructorCloses) {
  auto receiver = std::make_shared<FakeReceiver>();
  { Subscriber sub(receiver, config(), "fake://dtor"); }
  EXPECT_EQ(receiver->close_calls(), 1);
}

TEST(Subscriber, SeveralReadersShareTheBufferWithoutDuplicates) {
  Strings all;
  for (int i = 0; i < 400; ++i) all.push_back(std::to_string(i));
  Rig r(config(true, 16), all);
  std::mutex mu;
  std::multiset<std::string> seen;
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&] {
      eventually([&] {
        auto got = r.sub->receive_batch(7, 5ms);
        std::lock_guard lock(mu);
        for (const auto& m : got) seen.insert(m->payload());
        return seen.size() >= all.size();
      });
    });
  }
  for (auto& th : readers) th.join();
  EXPECT_EQ(seen, std::multiset<std::string>(all.begin(), all.end()));
}

TEST(SubscriberOpen, AppliesPortableOptionsAndTellsTheDriverAboutManualAck) {
  auto driver = std::make_shared<test::FakeDriver>("fakesub");
  test::ScopedDriver scoped(driver);
  auto sub = Subscriber::open("fakesub://u:pw@h/q?prefetch=5&queue=jobs", {{"auto_ack", "false"}});
  EXPECT_EQ(sub->config().prefetch, 5u);
  EXPECT_FALSE(sub->config().auto_ack);
  EXPECT_EQ(sub->url(), "fakesub://u:***@h/q?prefetch=5&queue=jobs");
  std::lock_guard lock(driver->mu_);
  ASSERT_TRUE(driver->last_settings);
  EXPECT_TRUE(driver->last_settings->manual_ack);
  ASSERT_TRUE(driver->last_options);
  EXPECT_EQ(driver->last_options->get_string("queue"), "jobs");
}

TEST(SubscriberOpen, AutoAckByDefault) {
  auto driver = std::make_shared<test::FakeDriver>("fakesub2");
  test::ScopedDriver scoped(driver);
  auto sub = Subscriber::open("fakesub2://h");
  EXPECT_TRUE(sub->config().auto_ack);
  EXPECT_EQ(sub->config().prefetch, 1000u);
  std::lock_guard lock(driver->mu_);
  ASSERT_TRUE(driver->last_settings);
  EXPECT_FALSE(driver->last_settings->manual_ack);
}

}  // namespace
}  // namespace omnibus
