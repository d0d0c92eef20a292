#include "omnibus/publisher.hpp"

#include <gtest/gtest.h>

#include <map>
#include <set>

#include "omnibus/error.hpp"
#include "test_util.hpp"

namespace omnibus {
namespace {

using namespace std::chrono_literals;
using test::error_of;
using test::eventually;
using test::FakeSender;
using test::has_substr;
using test::kPatience;
using test::numbered;
using test::out;
using test::outs;

using Batches = std::vector<std::vector<std::string>>;
using Sizes = std::vector<std::size_t>;

// A linger no test outlives: whatever leaves the queue early was sent for
// another reason (count, bytes, flush, close).
constexpr std::chrono::microseconds kForever = std::chrono::seconds(60);

// Gives the sender thread time to start waiting out the linger, so that what
// follows has to wake it from that wait. Only which code path runs depends
// on this pause, never whether a test passes.
void settle_into_linger() { std::this_thread::sleep_for(20ms); }

PublisherConfig config(std::size_t batch_messages = 1000, std::chrono::microseconds linger = {}) {
  PublisherConfig c;
  c.batch_messages = batch_messages;
  c.linger = linger;
  return c;
}

// A publisher on a FakeSender.
struct Rig {
  explicit Rig(PublisherConfig c = config()) : pub(std::make_unique<Publisher>(sender, c, "fake://test")) {}
  std::shared_ptr<FakeSender> sender = std::make_shared<FakeSender>();
  std::unique_ptr<Publisher> pub;
};

std::vector<std::string> flatten(const Batches& batches) {
  std::vector<std::string> all;
  for (const auto& b : batches) all.insert(all.end(), b.begin(), b.end());
  return all;
}

std::vector<std::size_t> failed_indices(const DeliveryTracker& t) {
  std::vector<std::size_t> v;
  for (const auto& [i, _] : t.failures()) v.push_back(i);
  return v;
}

// ------------------------------------------------------------ delivery

// A batch that filled up during the linger wakes the sender; when that batch
// took everything queued, the sender goes idle. A later publish must still
// wake it (a stale "wake pending" flag once left it asleep with messages
// queued, forever, until a flush).
TEST(Publisher, PublishAfterALingerWakeIsSent) {
  Rig r(config(10, std::chrono::milliseconds(200)));
  auto first = r.pub->publish(test::numbered("a", 5));
  settle_into_linger();
  auto second = r.pub->publish(test::numbered("b", 5));  // fills the batch of 10
  ASSERT_TRUE(first->wait_for(test::kPatience));
  ASSERT_TRUE(second->wait_for(test::kPatience));
  auto third = r.pub->publish(test::numbered("c", 1));  // no flush: linger, then sent
  EXPECT_TRUE(third->wait_for(test::kPatience));
}

TEST(Publisher, DeliversAndReportsSuccess) {
  Rig r;
  auto t = r.pub->publish(outs({"a", "b", "c"}));
  ASSERT_TRUE(t->wait_for(kPatience));
  EXPECT_EQ(t->size(), 3u);
  EXPECT_TRUE(t->failures().empty());
  // One publish call is enqueued at once, so with linger 0 it leaves as one batch.
  EXPECT_EQ(r.sender->batches(), (Batches{{"a", "b", "c"}}));
  ASSERT_TRUE(eventually([&] { return r.pub->stats().pending == 0; }));
  auto s = r.pub->stats();
  EXPECT_EQ(s.batches_sent, 1u);
  EXPECT_EQ(s.messages_sent, 3u);
  EXPECT_EQ(s.messages_delivered, 3u);
  EXPECT_EQ(s.messages_failed, 0u);
  EXPECT_EQ(s.largest_batch, 3u);
}

TEST(Publisher, KeepsPublishOrderAcrossCalls) {
  Rig r(config(3));
  std::vector<std::shared_ptr<DeliveryTracker>> ts;
  std::vector<std::string> expected;
  for (int i = 0; i < 20; ++i) {
    expected.push_back("m" + std::to_string(i));
    ts.push_back(r.pub->publish(outs({expected.back()})));
  }
  for (auto& t : ts) ASSERT_TRUE(t->wait_for(kPatience));
  EXPECT_EQ(flatten(r.sender->batches()), expected);
  for (auto n : r.sender->batch_sizes()) EXPECT_LE(n, 3u);
}

TEST(Publisher, EmptyPublishIsDoneAtOnce) {
  Rig r;
  auto t = r.pub->publish({});
  EXPECT_TRUE(t->done());
  EXPECT_EQ(t->size(), 0u);
  EXPECT_EQ(r.sender->batch_count(), 0u);
}

TEST(Publisher, StampsTimestampAtEnqueueUnlessGiven) {
  Rig r;
  auto msgs = outs({"unstamped", "stamped"});
  msgs[1].timestamp_ms = 1234;
  ASSERT_TRUE(r.pub->publish(std::move(msgs))->wait_for(kPatience));
  auto ts = r.sender->timestamps();
  ASSERT_EQ(ts.size(), 2u);
  EXPECT_GT(ts[0], 0);
  EXPECT_EQ(ts[1], 1234);
}

TEST(Publisher, ReportsCapabilitiesOfItsSender) {
  Rig r;
  EXPECT_EQ(r.pub->capabilities().delivery_guarantee, "at-least-once");
  EXPECT_EQ(r.pub->url(), "fake://test");
}

// ------------------------------------------------------------ batching

TEST(PublisherBatching, ByCount) {
  Rig r(config(5));
  ASSERT_TRUE(r.pub->publish(numbered("m", 12))->wait_for(kPatience));
  EXPECT_EQ(r.sender->batch_sizes(), (Sizes{5, 5, 2}));
  std::vector<std::string> expected;
  for (int i = 0; i < 12; ++i) expected.push_back("m" + std::to_string(i));
  EXPECT_EQ(flatten(r.sender->batches()), expected);
  EXPECT_EQ(r.pub->stats().largest_batch, 5u);
  EXPECT_EQ(r.pub->stats().batches_sent, 3u);
}

TEST(PublisherBatching, ByBytes) {
  auto c = config();
  c.batch_bytes = 10;
  Rig r(c);
  ASSERT_TRUE(r.pub->publish(outs({"aaaa", "bbbb", "cccc", "dddd", "eeee", "ffff"}))->wait_for(kPatience));
  // 4 + 4 fits in 10 bytes, a third message would not.
  EXPECT_EQ(r.sender->batch_sizes(), (Sizes{2, 2, 2}));
}

TEST(PublisherBatching, KeyAndHeadersCountTowardBytes) {
  EXPECT_EQ(out("ab", std::string("key4"), {{"h", "v"}, {"h", "w"}}).size_bytes(), 2u + 4u + 4u);
  EXPECT_EQ(OutMessage{}.size_bytes(), 0u);

  auto c = config();
  c.batch_bytes = 15;
  Rig r(c);
  std::vector<OutMessage> msgs;
  for (int i = 0; i < 3; ++i) msgs.push_back(out("ab", std::string("key4"), {{"h", "v"}}));  // 8 bytes each
  ASSERT_TRUE(r.pub->publish(std::move(msgs))->wait_for(kPatience));
  EXPECT_EQ(r.sender->batch_sizes(), (Sizes{1, 1, 1}));
}

TEST(PublisherBatching, OversizedMessageGoesAlone) {
  auto c = config();
  c.batch_bytes = 10;
  Rig r(c);
  ASSERT_TRUE(r.pub->publish(outs({"a", std::string(25, 'x'), "b", "c"}))->wait_for(kPatience));
  EXPECT_EQ(r.sender->batch_sizes(), (Sizes{1, 1, 2}));
  EXPECT_EQ(r.sender->batches()[1], (std::vector<std::string>{std::string(25, 'x')}));
}

TEST(PublisherBatching, LingerWaitsForAFullBatch) {
  Rig r(config(5, kForever));
  std::vector<std::shared_ptr<DeliveryTracker>> ts;
  for (int i = 0; i < 4; ++i) ts.push_back(r.pub->publish(outs({"m" + std::to_string(i)})));
  settle_into_linger();
  // Linger has not run out and the batch is not full: nothing may leave yet.
  EXPECT_EQ(r.sender->batch_count(), 0u);
  EXPECT_EQ(r.pub->stats().pending, 4u);
  ts.push_back(r.pub->publish(outs({"m4"})));
  for (auto& t : ts) ASSERT_TRUE(t->wait_for(kPatience));
  EXPECT_EQ(r.sender->batches(), (Batches{{"m0", "m1", "m2", "m3", "m4"}}));
}

TEST(PublisherBatching, FlushSendsAPartialBatchDespiteLinger) {
  Rig r(config(5, kForever));
  std::vector<std::shared_ptr<DeliveryTracker>> ts;
  for (int i = 0; i < 3; ++i) ts.push_back(r.pub->publish(outs({"m" + std::to_string(i)})));
  EXPECT_EQ(r.sender->batch_count(), 0u);
  ASSERT_TRUE(r.pub->flush(kPatience));
  EXPECT_EQ(r.sender->batches(), (Batches{{"m0", "m1", "m2"}}));
  for (auto& t : ts) EXPECT_TRUE(t->done());
  EXPECT_EQ(r.pub->stats().pending, 0u);
}

TEST(PublisherBatching, ShortLingerSendsAPartialBatchOnItsOwn) {
  Rig r(config(5, 50ms));
  auto t = r.pub->publish(outs({"a", "b", "c"}));
  ASSERT_TRUE(t->wait_for(kPatience));
  EXPECT_EQ(r.sender->batches(), (Batches{{"a", "b", "c"}}));
}

TEST(PublisherBatching, ByteLimitEndsLingerEarly) {
  auto c = config(1000, kForever);
  c.batch_bytes = 10;
  Rig r(c);
  auto t1 = r.pub->publish(outs({"aaaa"}));
  settle_into_linger();
  auto t2 = r.pub->publish(outs({"bbbb", "cccc"}));
  // 12 queued bytes reach the limit: the first two go, the third waits.
  ASSERT_TRUE(eventually([&] { return r.sender->batch_count() == 1; }));
  EXPECT_EQ(r.sender->batches(), (Batches{{"aaaa", "bbbb"}}));
  EXPECT_TRUE(t1->wait_for(kPatience));
  EXPECT_FALSE(t2->done());
  ASSERT_TRUE(r.pub->flush(kPatience));
  EXPECT_EQ(r.sender->batches(), (Batches{{"aaaa", "bbbb"}, {"cccc"}}));
  EXPECT_TRUE(t2->done());
}

TEST(PublisherBatching, LeftoverOfAFullBatchWaitsForLingerOrFlush) {
  Rig r(config(2, kForever));
  auto t = r.pub->publish(outs({"a", "b", "c"}));
  ASSERT_TRUE(eventually([&] { return r.pub->stats().pending == 1; }));
  EXPECT_EQ(r.sender->batches(), (Batches{{"a", "b"}}));
  ASSERT_TRUE(r.pub->flush(kPatience));
  EXPECT_EQ(r.sender->batches(), (Batches{{"a", "b"}, {"c"}}));
  EXPECT_TRUE(t->done());
}

// ------------------------------------------------------------ back-pressure

TEST(PublisherBackPressure, EnqueueTakesOnlyWhatFitsAndResumesOnceResultsArrive) {
  auto c = config();
  c.max_pending = 4;
  Rig r(c);
  r.sender->hold_results();
  auto first = r.pub->publish(numbered("m", 3));
  ASSERT_TRUE(eventually([&] { return r.sender->held_batches() == 1; }));

  auto more = outs({"x", "y", "z"});
  auto t = std::make_shared<DeliveryTracker>(more.size());
  // In-flight messages count against max_pending: room for one more only.
  EXPECT_EQ(r.pub->enqueue(more, 0, t, 0, 20ms), 1u);
  EXPECT_EQ(r.pub->stats().pending, 4u);
  EXPECT_EQ(r.pub->enqueue(more, 1, t, 1, 20ms), 0u);
  EXPECT_FALSE(t->done());

  r.sender->release_all();
  EXPECT_EQ(r.pub->enqueue(more, 1, t, 1, kPatience), 2u);
  ASSERT_TRUE(t->wait_for(kPatience));
  ASSERT_TRUE(first->wait_for(kPatience));
  EXPECT_TRUE(t->failures().empty());
  EXPECT_TRUE(first->failures().empty());
  EXPECT_EQ(flatten(r.sender->batches()), (std::vector<std::string>{"m0", "m1", "m2", "x", "y", "z"}));
}

TEST(PublisherBackPressure, PublishThrowsResourceExhaustedAndFailsWhatItCouldNotEnqueue) {
  auto c = config();
  c.max_pending = 3;
  c.block_timeout = 0ms;
  Rig r(c);
  r.sender->hold_results();
  auto first = r.pub->publish(outs({"a", "b"}));
  ASSERT_TRUE(eventually([&] { return r.sender->held_batches() == 1; }));

  auto e = error_of([&] { r.pub->publish(outs({"c", "d", "e"})); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::ResourceExhausted);
  EXPECT_TRUE(e->retryable());
  EXPECT_TRUE(has_substr(e->what(), "fake://test"));
  EXPECT_TRUE(has_substr(e->what(), "max_pending=3"));
  EXPECT_TRUE(has_substr(e->what(), "block_timeout_ms=0"));
  EXPECT_TRUE(has_substr(e->what(), "messages 1..2 were not enqueued"));

  // "c" fitted and is sent; "d" and "e" never reach the driver.
  r.sender->release_all();
  ASSERT_TRUE(r.pub->flush(kPatience));
  EXPECT_EQ(flatten(r.sender->batches()), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(first->failures().empty());
}

TEST(PublisherBackPressure, BlockedPublishProceedsWhenResultsArrive) {
  auto c = config();
  c.max_pending = 2;
  Rig r(c);
  r.sender->hold_results();
  auto first = r.pub->publish(outs({"a", "b"}));
  ASSERT_TRUE(eventually([&] { return r.sender->held_batches() == 1; }));

  std::shared_ptr<DeliveryTracker> second;
  std::optional<Error> error;
  std::thread producer([&] { error = error_of([&] { second = r.pub->publish(outs({"c"})); }); });
  r.sender->release_all();
  producer.join();
  ASSERT_FALSE(error) << error->what();
  ASSERT_TRUE(second->wait_for(kPatience));
  EXPECT_TRUE(second->failures().empty());
  EXPECT_EQ(flatten(r.sender->batches()), (std::vector<std::string>{"a", "b", "c"}));
}

TEST(PublisherBackPressure, ConcurrentProducersAllGetThroughInTheirOwnOrder) {
  auto c = config(7);
  c.max_pending = 16;
  Rig r(c);
  constexpr int kThreads = 4, kEach = 250;
  std::vector<std::thread> producers;
  std::vector<std::shared_ptr<DeliveryTracker>> trackers(kThreads * kEach);
  for (int p = 0; p < kThreads; ++p) {
    producers.emplace_back([&, p] {
      for (int i = 0; i < kEach; ++i)
        trackers[p * kEach + i] = r.pub->publish(outs({std::to_string(p) + ":" + std::to_string(i)}));
    });
  }
  for (auto& th : producers) th.join();
  for (auto& t : trackers) ASSERT_TRUE(t->wait_for(kPatience));

  std::map<int, int> next;  // producer -> next expected sequence number
  auto all = flatten(r.sender->batches());
  ASSERT_EQ(all.size(), static_cast<std::size_t>(kThreads * kEach));
  for (const auto& s : all) {
    int p = std::stoi(s.substr(0, s.find(':')));
    int i = std::stoi(s.substr(s.find(':') + 1));
    EXPECT_EQ(i, next[p]++) << "producer " << p << " out of order";
  }
  for (auto n : r.sender->batch_sizes()) EXPECT_LE(n, 7u);
  ASSERT_TRUE(eventually([&] { return r.pub->stats().pending == 0; }));
  EXPECT_EQ(r.pub->stats().messages_delivered, static_cast<std::uint64_t>(kThreads * kEach));
}

// ------------------------------------------------------------ resend (delivery_timeout)

PublisherConfig resending(std::chrono::milliseconds delivery_timeout) {
  auto c = config();
  c.delivery_timeout = delivery_timeout;
  return c;
}

std::size_t last_position(const std::vector<std::string>& all, const std::string& what) {
  return static_cast<std::size_t>(std::find(all.rbegin(), all.rend(), what).base() - all.begin()) - 1;
}

// A retryable Unavailable (the broker is away) is not the message's result:
// the message goes again, after a backoff, until the broker takes it.
TEST(PublisherResend, ARetryableFailureIsSentAgainUntilItSucceeds) {
  Rig r(resending(std::chrono::seconds(60)));
  r.sender->fail_payload("b", ErrorCode::Unavailable, "broker away");
  auto t = r.pub->publish(outs({"a", "b", "c"}));
  ASSERT_TRUE(eventually([&] { return r.sender->batch_count() >= 3; }));  // sent, resent, resent
  EXPECT_FALSE(t->done());
  EXPECT_EQ(r.pub->stats().pending, 1u);  // b is still the publisher's
  r.sender->clear_failures();
  ASSERT_TRUE(t->wait_for(kPatience));
  EXPECT_TRUE(t->failures().empty());
  auto batches = r.sender->batches();
  EXPECT_EQ(batches.front(), (std::vector<std::string>{"a", "b", "c"}));
  for (std::size_t i = 1; i < batches.size(); ++i) EXPECT_EQ(batches[i], (std::vector<std::string>{"b"}));
  ASSERT_TRUE(eventually([&] { return r.pub->stats().pending == 0; }));  // settled just after the result
  auto s = r.pub->stats();
  EXPECT_EQ(s.messages_resent, batches.size() - 1);
  EXPECT_EQ(s.messages_delivered, 3u);
  EXPECT_EQ(s.messages_failed, 0u);
}

// While a message waits to go again, later ones wait behind it: an outage
// does not reorder the stream.
TEST(PublisherResend, LaterMessagesWaitBehindAResend) {
  Rig r(resending(std::chrono::seconds(60)));
  r.sender->fail_payload("b", ErrorCode::Unavailable, "broker away");
  auto t1 = r.pub->publish(outs({"a", "b"}));
  ASSERT_TRUE(eventually([&] { return r.sender->batch_count() >= 2; }));
  auto t2 = r.pub->publish(outs({"c", "d"}));
  r.sender->clear_failures();
  ASSERT_TRUE(t1->wait_for(kPatience));
  ASSERT_TRUE(t2->wait_for(kPatience));
  auto all = flatten(r.sender->batches());
  EXPECT_LT(last_position(all, "b"), last_position(all, "c"));
  EXPECT_EQ(std::count(all.begin(), all.end(), "c"), 1);
}

TEST(PublisherResend, FailsWithUnavailableOnceTheDeliveryTimeoutIsOver) {
  Rig r(resending(std::chrono::milliseconds(400)));
  r.sender->fail_payload("b", ErrorCode::Unavailable, "broker away");
  auto t = r.pub->publish(outs({"a", "b"}));
  ASSERT_TRUE(t->wait_for(kPatience));
  auto f = t->failures();
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].first, 1u);
  EXPECT_EQ(f[0].second.code(), ErrorCode::Unavailable);
  EXPECT_TRUE(has_substr(f[0].second.what(), "broker away of b"));
  EXPECT_TRUE(has_substr(f[0].second.what(), "not delivered within delivery_timeout_ms=400"));
  EXPECT_GE(r.sender->batch_count(), 2u);
  ASSERT_TRUE(eventually([&] { return r.pub->stats().pending == 0; }));
  EXPECT_EQ(r.pub->stats().messages_failed, 1u);
  EXPECT_EQ(r.pub->stats().messages_delivered, 1u);
}

TEST(PublisherResend, CloseFailsAWaitingResendWithTheBrokersError) {
  Rig r(resending(std::chrono::seconds(60)));
  r.sender->fail_payload("b", ErrorCode::Unavailable, "broker away");
  auto t = r.pub->publish(outs({"a", "b"}));
  ASSERT_TRUE(eventually([&] { return r.pub->stats().messages_resent >= 1; }));
  auto undelivered = r.pub->close(std::chrono::milliseconds(300));
  ASSERT_EQ(undelivered.size(), 1u);
  EXPECT_EQ(*undelivered[0].message.payload, "b");
  EXPECT_EQ(undelivered[0].error.code(), ErrorCode::Unavailable);
  EXPECT_TRUE(has_substr(undelivered[0].error.what(), "broker away of b"));
  ASSERT_TRUE(t->wait_for(kPatience));
  EXPECT_EQ(failed_indices(*t), (std::vector<std::size_t>{1}));
}

// ------------------------------------------------------------ flush

TEST(PublisherFlush, OnAnIdlePublisherReturnsTrue) {
  Rig r;
  EXPECT_TRUE(r.pub->flush(0ms));
}

TEST(PublisherFlush, WaitsForInFlightResults) {
  Rig r;
  r.sender->hold_results();
  auto t = r.pub->publish(outs({"a"}));
  ASSERT_TRUE(eventually([&] { return r.sender->held_batches() == 1; }));
  EXPECT_FALSE(r.pub->flush(20ms));
  EXPECT_FALSE(t->done());
  r.sender->release_all();
  EXPECT_TRUE(r.pub->flush(kPatience));
  EXPECT_TRUE(t->done());
  EXPECT_EQ(r.pub->stats().pending, 0u);
}

// ------------------------------------------------------------ per-message results

TEST(PublisherResults, PartialBatchFailureFailsOnlyThoseMessages) {
  Rig r;
  r.sender->fail_payload("b", ErrorCode::NotFound);
  r.sender->fail_payload("d", ErrorCode::ResourceExhausted, "too big");
  auto t = r.pub->publish(outs({"a", "b", "c", "d", "e"}));
  ASSERT_TRUE(t->wait_for(kPatience));
  EXPECT_EQ(r.sender->batch_count(), 1u);
  auto f = t->failures();
  ASSERT_EQ(f.size(), 2u);
  EXPECT_EQ(f[0].first, 1u);
  EXPECT_EQ(f[0].second.code(), ErrorCode::NotFound);
  EXPECT_TRUE(has_substr(f[0].second.what(), "injected failure of b"));
  EXPECT_EQ(f[1].first, 3u);
  EXPECT_EQ(f[1].second.code(), ErrorCode::ResourceExhausted);
  EXPECT_TRUE(has_substr(f[1].second.what(), "too big of d"));
  ASSERT_TRUE(eventually([&] { return r.pub->stats().pending == 0; }));
  EXPECT_EQ(r.pub->stats().messages_delivered, 3u);
  EXPECT_EQ(r.pub->stats().messages_failed, 2u);
  EXPECT_EQ(r.pub->stats().messages_resent, 0u);  // neither failure is a retryable Unavailable
}

TEST(PublisherResults, EachPublishCallGetsItsOwnResultsFromASharedBatch) {
  Rig r(config(4, kForever));
  r.sender->fail_payload("c", ErrorCode::NotFound);
  auto t1 = r.pub->publish(outs({"a", "b"}));
  auto t2 = r.pub->publish(outs({"c", "d"}));
  ASSERT_TRUE(t1->wait_for(kPatience));
  ASSERT_TRUE(t2->wait_for(kPatience));
  EXPECT_EQ(r.sender->batches(), (Batches{{"a", "b", "c", "d"}}));
  EXPECT_TRUE(t1->failures().empty());
  EXPECT_EQ(failed_indices(*t2), (std::vector<std::size_t>{0}));
}

TEST(PublisherResults, EnqueueMapsMessagesOntoTrackerIndices) {
  Rig r(config(1000, kForever));
  r.sender->fail_payload("m3", ErrorCode::NotFound);
  // A caller publishing msgs[2..4] as tracker entries 5..7 of a larger request.
  auto msgs = numbered("m", 5);
  auto t = std::make_shared<DeliveryTracker>(8);
  EXPECT_EQ(r.pub->enqueue(msgs, 2, t, 5, kPatience), 3u);
  ASSERT_TRUE(r.pub->flush(kPatience));
  EXPECT_EQ(r.sender->batches(), (Batches{{"m2", "m3", "m4"}}));
  EXPECT_EQ(failed_indices(*t), (std::vector<std::size_t>{6}));
  EXPECT_FALSE(t->done());  // entries 0..4 were never enqueued here
}

TEST(PublisherResults, ThrowingSendBatchFailsTheWholeBatchWithItsError) {
  Rig r;
  r.sender->throw_on_send(Error(ErrorCode::NotFound, "topic went away"));
  auto t = r.pub->publish(outs({"a", "b", "c"}));
  ASSERT_TRUE(t->wait_for(kPatience));
  auto f = t->failures();
  ASSERT_EQ(f.size(), 3u);
  for (const auto& [i, e] : f) {
    EXPECT_EQ(e.code(), ErrorCode::NotFound);
    EXPECT_TRUE(has_substr(e.what(), "topic went away"));
  }
  // The publisher keeps working after a failed batch.
  r.sender->throw_on_send(std::nullopt);
  auto ok = r.pub->publish(outs({"d"}));
  ASSERT_TRUE(ok->wait_for(kPatience));
  EXPECT_TRUE(ok->failures().empty());
}

TEST(PublisherResults, NonOmnibusExceptionFromDriverBecomesInternal) {
  Rig r;
  r.sender->throw_non_omnibus_on_send(true);
  auto t = r.pub->publish(outs({"a", "b"}));
  ASSERT_TRUE(t->wait_for(kPatience));
  auto f = t->failures();
  ASSERT_EQ(f.size(), 2u);
  EXPECT_EQ(f[0].second.code(), ErrorCode::Internal);
  EXPECT_TRUE(has_substr(f[0].second.what(), "driver send_batch failed: socket exploded"));
}

TEST(PublisherResults, DuplicateOrOutOfRangeReportsFromADriverAreIgnored) {
  Rig r;
  r.sender->misreport(true);
  auto t = r.pub->publish(outs({"a", "b", "c"}));
  ASSERT_TRUE(t->wait_for(kPatience));
  EXPECT_TRUE(t->failures().empty());
  ASSERT_TRUE(eventually([&] { return r.pub->stats().pending == 0; }));
  auto s = r.pub->stats();
  EXPECT_EQ(s.messages_delivered, 3u);
  EXPECT_EQ(s.messages_failed, 0u);
  // Accounting stayed right: the queue still admits and delivers.
  auto t2 = r.pub->publish(outs({"d"}));
  ASSERT_TRUE(t2->wait_for(kPatience));
  ASSERT_TRUE(eventually([&] { return r.pub->stats().pending == 0; }));
  EXPECT_EQ(r.pub->stats().messages_delivered, 4u);
}

// ------------------------------------------------------------ close

TEST(PublisherClose, FlushesQueuedMessagesIgnoringLinger) {
  Rig r(config(1000, kForever));
  auto t = r.pub->publish(outs({"a", "b", "c"}));
  auto undelivered = r.pub->close(kPatience);
  EXPECT_TRUE(undelivered.empty());
  EXPECT_TRUE(r.pub->closed());
  EXPECT_EQ(r.sender->batches(), (Batches{{"a", "b", "c"}}));
  EXPECT_TRUE(t->done());
  EXPECT_TRUE(t->failures().empty());
  EXPECT_EQ(r.sender->close_calls(), 1);
}

TEST(PublisherClose, IsIdempotent) {
  Rig r;
  r.sender->hold_results();
  r.pub->publish(outs({"a"}));
  ASSERT_TRUE(eventually([&] { return r.sender->held_batches() == 1; }));
  EXPECT_EQ(r.pub->close(0ms).size(), 1u);
  EXPECT_TRUE(r.pub->close(kPatience).empty());
  r.pub.reset();  // the destructor closes again
  EXPECT_EQ(r.sender->close_calls(), 1);
}

TEST(PublisherClose, PublishAfterCloseThrowsClosed) {
  Rig r;
  r.pub->close(kPatience);
  auto e = error_of([&] { r.pub->publish(outs({"late"})); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::Closed);
  EXPECT_TRUE(has_substr(e->what(), "publisher for fake://test is closed"));
  auto msgs = outs({"late"});
  auto t = std::make_shared<DeliveryTracker>(1);
  e = error_of([&] { r.pub->enqueue(msgs, 0, t, 0, 0ms); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code(), ErrorCode::Closed);
  EXPECT_EQ(r.sender->batch_count(), 0u);
}

TEST(PublisherClose, ReturnsInFlightMessagesItCouldNotDeliver) {
  Rig r;
  r.sender->hold_results();
  auto t = r.pub->publish(outs({"a", "b"}));
  ASSERT_TRUE(eventually([&] { return r.sender->held_batches() == 1; }));

  auto undelivered = r.pub->close(0ms);
  ASSERT_EQ(undelivered.size(), 2u);
  std::set<std::string> payloads;
  for (const auto& u : undelivered) {
    payloads.insert(*u.message.payload);
    EXPECT_EQ(u.error.code(), ErrorCode::Closed);
  }
  EXPECT_EQ(payloads, (std::set<std::string>{"a", "b"}));
  ASSERT_TRUE(t->done());
  EXPECT_EQ(failed_indices(*t), (std::vector<std::size_t>{0, 1}));
  for (const auto& [_, e] : t->failures()) EXPECT_EQ(e.code(), ErrorCode::Closed);
  auto s = r.pub->stats();
  EXPECT_EQ(s.pending, 0u);
  EXPECT_EQ(s.messages_failed, 2u);
  EXPECT_EQ(s.messages_delivered, 0u);
}

TEST(PublisherClose, FailsQueuedMessagesThatNeverReachedTheDriver) {
  Rig r(config(1));
  r.sender->block_sends();
  auto t = r.pub->publish(outs({"a", "b", "c"}));
  ASSERT_TRUE(eventually([&] { return r.sender->blocked_in_send(); }));

  // "a" is stuck in send_batch, so "b" and "c" cannot leave the queue. Once
  // close() gave up on them (pending drops to the one in flight), let "a" finish.
  std::thread unblocker([&] {
    eventually([&] { return r.pub->stats().pending == 1; });
    r.sender->unblock();
  });
  auto undelivered = r.pub->close(20ms);
  unblocker.join();

  ASSERT_EQ(undelivered.size(), 2u);
  EXPECT_EQ(*undelivered[0].message.payload, "b");
  EXPECT_EQ(*undelivered[1].message.payload, "c");
  for (const auto& u : undelivered) {
    EXPECT_EQ(u.error.code(), ErrorCode::Closed);
    EXPECT_TRUE(has_substr(u.error.what(), "closed before this message was sent"));
  }
  ASSERT_TRUE(t->done());
  EXPECT_EQ(failed_indices(*t), (std::vector<std::size_t>{1, 2}));
  EXPECT_EQ(r.sender->batches(), (Batches{{"a"}}));
  EXPECT_EQ(r.pub->stats().messages_failed, 2u);
  EXPECT_EQ(r.pub->stats().pending, 0u);
}

TEST(PublisherClose, ReturnsMessagesThatFailedDuringItsFlush) {
  Rig r(config(1000, kForever));
  r.sender->fail_payload("bad", ErrorCode::NotFound);
  auto t = r.pub->publish(outs({"ok", "bad"}));
  auto undelivered = r.pub->close(kPatience);
  ASSERT_EQ(undelivered.size(), 1u);
  EXPECT_EQ(*undelivered[0].message.payload, "bad");
  EXPECT_EQ(undelivered[0].error.code(), ErrorCode::NotFound);
  EXPECT_EQ(failed_indices(*t), (std::vector<std::size_t>{1}));
}

TEST(PublisherClose, WakesABlockedPublisherWithClosed) {
  auto c = config();
  c.max_pending = 1;
  Rig r(c);
  r.sender->hold_results();
  r.pub->publish(outs({"a"}));
  ASSERT_TRUE(eventually([&] { return r.sender->held_batches() == 1; }));

  std::optional<Error> error;
  std::thread producer([&] { error = error_of([&] { r.pub->publish(outs({"b"})); }); });
  auto undelivered = r.pub->close(0ms);
  producer.join();
  ASSERT_TRUE(error);
  EXPECT_EQ(error->code(), ErrorCode::Closed);
  ASSERT_EQ(undelivered.size(), 1u);
  EXPECT_EQ(*undelivered[0].message.payload, "a");
  EXPECT_EQ(r.sender->batches(), (Batches{{"a"}}));
}

TEST(PublisherClose, ConcurrentClosesReportEachMessageOnce) {
  Rig r;
  r.sender->hold_results();
  r.pub->publish(outs({"a", "b", "c"}));
  ASSERT_TRUE(eventually([&] { return r.sender->held_batches() == 1; }));
  std::vector<Undelivered> u1, u2;
  std::thread other([&] { u2 = r.pub->close(0ms); });
  u1 = r.pub->close(0ms);
  other.join();
  EXPECT_EQ(u1.size() + u2.size(), 3u);
  EXPECT_EQ(r.sender->close_calls(), 1);
}

TEST(PublisherClose, DestructorFlushes) {
  auto sender = std::make_shared<FakeSender>();
  std::shared_ptr<DeliveryTracker> t;
  {
    Publisher pub(sender, config(1000, kForever), "fake://dtor");
    t = pub.publish(outs({"a", "b"}));
  }
  EXPECT_TRUE(t->done());
  EXPECT_TRUE(t->failures().empty());
  EXPECT_EQ(sender->batches(), (Batches{{"a", "b"}}));
  EXPECT_EQ(sender->close_calls(), 1);
}

// ------------------------------------------------------------ open

TEST(PublisherOpen, AppliesPortableOptionsAndHandsTheRestToTheDriver) {
  auto driver = std::make_shared<test::FakeDriver>("fakepub");
  test::ScopedDriver scoped(driver);
  auto pub = Publisher::open("fakepub://u:pw@h:1/t?batch_messages=7&token=abc&batch_linger_ms=2.5&max_pending=5",
                             {{"max_pending", "9"}, {"block_timeout_ms", "0"}, {"batch_bytes", "64"}});
  EXPECT_EQ(pub->config().batch_messages, 7u);
  EXPECT_EQ(pub->config().batch_bytes, 64u);
  EXPECT_EQ(pub->config().linger, std::chrono::microseconds(2500));
  EXPECT_EQ(pub->config().max_pending, 9u);  // keyword options override the URL
  EXPECT_EQ(pub->config().block_timeout, 0ms);
  EXPECT_EQ(pub->url(), "fakepub://u:***@h:1/t?batch_messages=7&token=abc&batch_linger_ms=2.5&max_pending=5");
  {
    std::lock_guard lock(driver->mu_);
    ASSERT_TRUE(driver->last_url);
    EXPECT_EQ(driver->last_url->password, "pw");
    EXPECT_EQ(driver->last_url->path, "t");
    ASSERT_TRUE(driver->last_options);
    EXPECT_EQ(driver->last_options->get_string("token"), "abc");
  }
  ASSERT_TRUE(pub->publish(outs({"x"}))->wait_for(kPatience));
  EXPECT_EQ(driver->last_sender->batches(), (Batches{{"x"}}));
}

TEST(PublisherOpen, DefaultsWhenNothingIsGiven) {
  auto pub = Publisher::open(test::unique_topic_url());
  PublisherConfig defaults;
  EXPECT_EQ(pub->config().batch_messages, defaults.batch_messages);
  EXPECT_EQ(pub->config().batch_bytes, defaults.batch_bytes);
  EXPECT_EQ(pub->config().linger, defaults.linger);
  EXPECT_EQ(pub->config().max_pending, defaults.max_pending);
  EXPECT_EQ(pub->config().block_timeout, defaults.block_timeout);
}

// ------------------------------------------------------------ DeliveryTracker

TEST(DeliveryTracker, WaitsUntilEveryMessageHasAResult) {
  DeliveryTracker t(3);
  EXPECT_FALSE(t.done());
  EXPECT_FALSE(t.wait_for(0ms));
  t.complete(0, nullptr);
  t.complete(2, nullptr);
  EXPECT_FALSE(t.done());
  std::thread last([&] { t.complete(1, nullptr); });
  EXPECT_TRUE(t.wait_for(kPatience));
  last.join();
  EXPECT_TRUE(t.failures().empty());
}

TEST(DeliveryTracker, FailuresAreSortedByIndex) {
  DeliveryTracker t(4);
  Error e2(ErrorCode::Timeout, "two");
  Error e0(ErrorCode::Unavailable, "zero");
  t.complete(2, &e2);
  t.complete(1, nullptr);
  t.complete(0, &e0);
  t.complete(3, nullptr);
  auto f = t.failures();
  ASSERT_EQ(f.size(), 2u);
  EXPECT_EQ(f[0].first, 0u);
  EXPECT_STREQ(f[0].second.what(), "zero");
  EXPECT_EQ(f[1].first, 2u);
  EXPECT_EQ(f[1].second.code(), ErrorCode::Timeout);
}

TEST(DeliveryTracker, FailRestFailsTheTail) {
  DeliveryTracker t(4);
  t.complete(0, nullptr);
  t.fail_rest(1, Error(ErrorCode::ResourceExhausted, "full"));
  EXPECT_TRUE(t.done());
  EXPECT_EQ(failed_indices(t), (std::vector<std::size_t>{1, 2, 3}));
}

TEST(DeliveryTracker, OnDoneRunsOnceOnTheLastResult) {
  DeliveryTracker t(2);
  int calls = 0;
  std::thread::id ran_on;
  t.on_done([&] {
    calls++;
    ran_on = std::this_thread::get_id();
  });
  t.complete(0, nullptr);
  EXPECT_EQ(calls, 0);
  std::thread::id completer;
  std::thread th([&] {
    completer = std::this_thread::get_id();
    t.complete(1, nullptr);
  });
  th.join();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(ran_on, completer);
}

TEST(DeliveryTracker, OnDoneAfterCompletionRunsAtOnce) {
  DeliveryTracker t(1);
  t.complete(0, nullptr);
  int calls = 0;
  t.on_done([&] { calls++; });
  EXPECT_EQ(calls, 1);

  DeliveryTracker empty(0);
  EXPECT_TRUE(empty.done());
  empty.on_done([&] { calls++; });
  EXPECT_EQ(calls, 2);
}

TEST(DeliveryTracker, OnDoneCallbackMayPublishAgain) {
  // Callbacks run on the driver's result path; publishing from one must not deadlock.
  Rig r;
  auto t = r.pub->publish(outs({"first"}));
  std::shared_ptr<DeliveryTracker> chained;
  std::atomic<bool> chained_set{false};
  t->on_done([&] {
    chained = r.pub->publish(outs({"second"}));
    chained_set = true;
  });
  ASSERT_TRUE(eventually([&] { return chained_set.load(); }));
  ASSERT_TRUE(chained->wait_for(kPatience));
  EXPECT_EQ(flatten(r.sender->batches()), (std::vector<std::string>{"first", "second"}));
}

}  // namespace
}  // namespace omnibus

