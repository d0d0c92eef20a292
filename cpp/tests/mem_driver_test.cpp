// mem:// through the portable Publisher and Subscriber, as applications use it.
// Every test has its own topic: the broker is process-wide.

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <thread>

#include "omnibus/error.hpp"
#include "omnibus/publisher.hpp"
#include "omnibus/subscriber.hpp"
#include "test_util.hpp"

namespace omnibus {
namespace {

using namespace std::chrono_literals;
using test::error_of;
using test::has_substr;
using test::kPatience;
using test::numbered;
using test::out;
using test::outs;
using test::payloads_of;
using test::receive_n;
using test::receive_n_from;
using test::receive_through;
using test::unique_topic_url;

using Options = std::vector<std::pair<std::string, std::string>>;
using Strings = std::vector<std::string>;

const Options kManualAck = {{"auto_ack", "false"}};

Options with(Options base, const Options& more) {
  base.insert(base.end(), more.begin(), more.end());
  return base;
}

void publish_ok(Publisher& pub, std::vector<OutMessage> msgs) {
  auto t = pub.publish(std::move(msgs));
  ASSERT_TRUE(t->wait_for(kPatience));
  ASSERT_TRUE(t->failures().empty()) << t->failures()[0].second.what();
}

std::vector<std::uint32_t> attempts_of(const std::vector<MessagePtr>& msgs) {
  std::vector<std::uint32_t> v;
  for (const auto& m : msgs) v.push_back(m->delivery_attempt());
  return v;
}

std::multiset<std::string> all_payloads(const std::vector<std::vector<MessagePtr>>& per_sub) {
  std::multiset<std::string> all;
  for (const auto& msgs : per_sub)
    for (const auto& m : msgs) all.insert(m->payload());
  return all;
}

std::multiset<std::string> as_multiset(const std::vector<OutMessage>& msgs) {
  std::multiset<std::string> s;
  for (const auto& m : msgs) s.insert(*m.payload);
  return s;
}

// ------------------------------------------------------------ basics

TEST(MemDriver, RoundTripKeepsPayloadKeyHeadersAndTimestamp) {
  const auto url = unique_topic_url();
  auto sub = Subscriber::open(url);
  auto pub = Publisher::open(url);
  auto m = out(std::string("bin\0ary", 7), std::string("user-1"), {{"h", "1"}, {"a", "x"}, {"h", "2"}});
  m.timestamp_ms = 42;
  publish_ok(*pub, {m, out("keyless")});

  auto got = receive_n(*sub, 2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0]->payload(), std::string("bin\0ary", 7));
  EXPECT_EQ(got[0]->key(), std::optional<std::string>("user-1"));
  EXPECT_EQ(got[0]->headers(), (Headers{{"h", "1"}, {"a", "x"}, {"h", "2"}}));
  EXPECT_EQ(got[0]->timestamp_ms(), 42);
  EXPECT_EQ(got[0]->topic(), url.substr(std::string("mem://").size()));
  EXPECT_EQ(got[0]->delivery_attempt(), 1u);
  EXPECT_EQ(got[1]->payload(), "keyless");
  EXPECT_FALSE(got[1]->key());
  EXPECT_GT(got[1]->timestamp_ms(), 0);
}

TEST(MemDriver, PublishedBeforeAnySubscriptionIsNotKept) {
  const auto url = unique_topic_url();
  auto pub = Publisher::open(url);
  publish_ok(*pub, outs({"early"}));
  auto sub = Subscriber::open(url);
  publish_ok(*pub, outs({"late"}));
  EXPECT_EQ(payloads_of(receive_through(*sub, "late")), (Strings{"late"}));
}

TEST(MemDriver, TopicNameMayBeGivenAsHostOrPath) {
  const auto url = unique_topic_url();  // mem://HOST/PATH
  const auto topic = url.substr(std::string("mem://").size());
  auto sub = Subscriber::open("mem://" + topic);
  auto pub = Publisher::open("mem:///" + topic);
  publish_ok(*pub, outs({"x"}));
  auto got = receive_n(*sub, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]->topic(), topic);
}

TEST(MemDriver, RejectsUrlsThatNameNoTopicOrNameHosts) {
  struct Case {
    const char* url;
    const char* why;
  };
  for (const auto& c : {Case{"mem://h:1", "takes a topic name, not hosts or ports"},
                        Case{"mem://a,b/t", "takes a topic name, not hosts or ports"},
                        Case{"mem://", "names no topic"},
                        Case{"mem:///", "names no topic"},
                        Case{"mem:///?", "names no topic"}}) {
    for (bool publisher : {true, false}) {
      auto e = error_of([&] {
        if (publisher) Publisher::open(c.url);
        else Subscriber::open(c.url);
      });
      ASSERT_TRUE(e) << c.url;
      EXPECT_EQ(e->code(), ErrorCode::InvalidArgument) << c.url;
      EXPECT_TRUE(has_substr(e->what(), c.why)) << c.url;
    }
  }
}

TEST(MemDriver, Capabilities) {
  const auto url = unique_topic_url();
  auto sub = Subscriber::open(url);
  auto c = sub->capabilities();
  EXPECT_EQ(c.delivery_guarantee, "at-least-once");
  EXPECT_TRUE(c.ordered_per_key);
  EXPECT_TRUE(c.key_affinity);
  EXPECT_TRUE(c.keys);
  EXPECT_TRUE(c.requeue_on_close);
  EXPECT_TRUE(c.delivery_count);
  EXPECT_TRUE(c.nack);
  EXPECT_TRUE(c.ack_deadline);
  EXPECT_TRUE(c.competing_consumers);
  EXPECT_TRUE(c.headers);
  EXPECT_FALSE(c.dead_letter);
  EXPECT_FALSE(c.durable);
  EXPECT_EQ(Publisher::open(url)->capabilities().max_message_bytes, 16777216u);
  EXPECT_EQ(Publisher::open(url + "?max_message_bytes=10")->capabilities().max_message_bytes, 10u);
}

TEST(MemDriver, OversizedMessageFailsAloneWithResourceExhausted) {
  const auto url = unique_topic_url();
  auto sub = Subscriber::open(url);
  auto pub = Publisher::open(url + "?max_message_bytes=4");
  auto t = pub->publish(outs({"ok", "too long", "end"}));
  ASSERT_TRUE(t->wait_for(kPatience));
  auto f = t->failures();
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].first, 1u);
  EXPECT_EQ(f[0].second.code(), ErrorCode::ResourceExhausted);
  EXPECT_TRUE(has_substr(f[0].second.what(), "message of 8 bytes exceeds max_message_bytes=4"));
  EXPECT_EQ(payloads_of(receive_through(*sub, "end")), (Strings{"ok", "end"}));
}

// ------------------------------------------------------------ fan-out and groups

TEST(MemDriver, FansOutToEverySubscription) {
  const auto url = unique_topic_url();
  auto a = Subscriber::open(url);
  auto b = Subscriber::open(url);
  auto g1 = Subscriber::open(url, {{"group", "g1"}});
  auto g2x = Subscriber::open(url, {{"group", "g2"}});
  auto g2y = Subscriber::open(url, {{"group", "g2"}});
  auto pub = Publisher::open(url);
  auto msgs = numbered("m", 6);
  publish_ok(*pub, msgs);  // copies: the payloads are shared
  const Strings expected = {"m0", "m1", "m2", "m3", "m4", "m5"};

  EXPECT_EQ(payloads_of(receive_n(*a, 6)), expected);
  EXPECT_EQ(payloads_of(receive_n(*b, 6)), expected);
  EXPECT_EQ(payloads_of(receive_n(*g1, 6)), expected);
  // The two members of g2 share one copy of the stream.
  EXPECT_EQ(all_payloads(receive_n_from({g2x.get(), g2y.get()}, 6)), as_multiset(msgs));
}

TEST(MemDriver, SubscriptionsShareThePayloadInsteadOfCopyingIt) {
  const auto url = unique_topic_url();
  auto a = Subscriber::open(url);
  auto b = Subscriber::open(url);
  auto pub = Publisher::open(url);
  publish_ok(*pub, outs({"shared"}));
  auto ga = receive_n(*a, 1);
  auto gb = receive_n(*b, 1);
  ASSERT_EQ(ga.size(), 1u);
  ASSERT_EQ(gb.size(), 1u);
  EXPECT_EQ(ga[0]->payload_ptr().get(), gb[0]->payload_ptr().get());
}

TEST(MemDriver, CompetingConsumersInAGroupEachGetAShareExactlyOnce) {
  const auto url = unique_topic_url();
  std::vector<std::shared_ptr<Subscriber>> subs;
  for (int i = 0; i < 3; ++i) subs.push_back(Subscriber::open(url, {{"group", "workers"}}));
  auto pub = Publisher::open(url);
  auto msgs = numbered("job", 30);
  publish_ok(*pub, msgs);

  auto got = receive_n_from({subs[0].get(), subs[1].get(), subs[2].get()}, 30);
  EXPECT_EQ(all_payloads(got), as_multiset(msgs));
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_FALSE(got[i].empty()) << "consumer " << i << " got nothing";
}

TEST(MemDriver, KeyKeepsOrderAndStaysOnOneConsumer) {
  const auto url = unique_topic_url();
  auto s1 = Subscriber::open(url, {{"group", "g"}});
  auto s2 = Subscriber::open(url, {{"group", "g"}});
  auto pub = Publisher::open(url, {{"batch_messages", "7"}});
  std::vector<OutMessage> msgs;
  // Five keys over two consumers: round robin would split every key.
  for (int i = 0; i < 60; ++i) {
    std::string key = "k" + std::to_string(i % 5);
    msgs.push_back(out(key + ":" + std::to_string(i), key));
  }
  publish_ok(*pub, msgs);

  auto got = receive_n_from({s1.get(), s2.get()}, 60);
  EXPECT_EQ(all_payloads(got), as_multiset(msgs));
  std::map<std::string, std::size_t> owner;  // key -> consumer that got it
  for (std::size_t c = 0; c < got.size(); ++c) {
    std::map<std::string, int> last;  // key -> last sequence number seen
    for (const auto& m : got[c]) {
      const auto& key = *m->key();
      int seq = std::stoi(m->payload().substr(m->payload().find(':') + 1));
      auto it = owner.emplace(key, c).first;
      EXPECT_EQ(it->second, c) << key << " went to two consumers";
      if (last.count(key)) {
        EXPECT_GT(seq, last[key]) << key << " out of order";
      }
      last[key] = seq;
    }
  }
}

TEST(MemDriver, NamedGroupKeepsABacklogWhileNoConsumerIsAttached) {
  const auto url = unique_topic_url();
  Subscriber::open(url, {{"group", "g"}})->close();  // creates the group
  auto pub = Publisher::open(url);
  publish_ok(*pub, outs({"a", "b", "c"}));
  auto sub = Subscriber::open(url, {{"group", "g"}});
  auto got = receive_n(*sub, 3);
  EXPECT_EQ(payloads_of(got), (Strings{"a", "b", "c"}));
  EXPECT_EQ(attempts_of(got), (std::vector<std::uint32_t>{1, 1, 1}));
}

TEST(MemDriver, LeavingConsumerHandsItsMessagesToTheRestOfTheGroup) {
  const auto url = unique_topic_url();
  auto stays = Subscriber::open(url, {{"group", "g"}});
  auto leaves = Subscriber::open(url, {{"group", "g"}});
  auto pub = Publisher::open(url);
  auto msgs = numbered("m", 10);
  publish_ok(*pub, msgs);
  // `leaves` prefetched its share but handed nothing to the application.
  leaves->close();
  auto got = receive_n(*stays, 10);
  EXPECT_EQ(all_payloads({got}), as_multiset(msgs));
}

TEST(MemDriver, JoiningConsumerTakesOverUndeliveredMessagesInPublishOrder) {
  const auto url = unique_topic_url();
  // prefetch=1: the first consumer holds one message, the rest stay undelivered.
  auto first = Subscriber::open(url, {{"group", "g"}, {"prefetch", "1"}});
  auto pub = Publisher::open(url);
  auto msgs = numbered("m", 20);
  publish_ok(*pub, msgs);
  ASSERT_TRUE(test::eventually([&] { return first->buffered() == 1; }));
  auto second = Subscriber::open(url, {{"group", "g"}});

  auto got = receive_n_from({first.get(), second.get()}, 20);
  EXPECT_EQ(all_payloads(got), as_multiset(msgs));
  EXPECT_FALSE(got[1].empty()) << "the new consumer got none of the backlog";
  for (const auto& mine : got) {
    for (std::size_t i = 1; i < mine.size(); ++i) {
      EXPECT_LT(std::stoi(mine[i - 1]->payload().substr(1)), std::stoi(mine[i]->payload().substr(1)));
    }
  }
}

// ------------------------------------------------------------ ack, nack, redelivery

TEST(MemDriver, NackRedeliversWithIncreasingDeliveryAttempt) {
  const auto url = unique_topic_url();
  auto sub = Subscriber::open(url, kManualAck);
  auto pub = Publisher::open(url);
  publish_ok(*pub, {out("job", std::string("k"), {{"h", "v"}})});

  for (std::uint32_t attempt = 1; attempt <= 3; ++attempt) {
    auto got = receive_n(*sub, 1);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0]->payload(), "job");
    EXPECT_EQ(got[0]->key(), std::optional<std::string>("k"));
    EXPECT_EQ(got[0]->headers(), (Headers{{"h", "v"}}));
    EXPECT_EQ(got[0]->delivery_attempt(), attempt);
    if (attempt < 3) got[0]->nack();
    else got[0]->ack();
  }
  // Acked: it does not come back ahead of later messages.
  publish_ok(*pub, outs({"end"}));
  EXPECT_EQ(payloads_of(receive_through(*sub, "end")), (Strings{"end"}));
}

TEST(MemDriver, BatchNackRedeliversInOriginalOrder) {
  const auto url = unique_topic_url();
  auto sub = Subscriber::open(url, kManualAck);
  auto pub = Publisher::open(url);
  publish_ok(*pub, outs({"a", "b", "c"}));
  auto got = receive_n(*sub, 3);
  ASSERT_EQ(payloads_of(got), (Strings{"a", "b", "c"}));
  Subscriber::nack(got);
  auto again = receive_n(*sub, 3);
  EXPECT_EQ(payloads_of(again), (Strings{"a", "b", "c"}));
  EXPECT_EQ(attempts_of(again), (std::vector<std::uint32_t>{2, 2, 2}));
  Subscriber::ack(again);
}

TEST(MemDriver, AckDeadlineRedeliversUnackedMessagesInOriginalOrder) {
  const auto url = unique_topic_url();
  auto sub = Subscriber::open(url, with(kManualAck, {{"ack_deadline_ms", "200"}}));
  auto pub = Publisher::open(url);
  publish_ok(*pub, outs({"a", "b", "c"}));

  std::vector<MessagePtr> first, redelivered;
  test::eventually([&] {
    for (auto& m : sub->receive_batch(100, 20ms)) (m->delivery_attempt() == 1 ? first : redelivered).push_back(m);
    return redelivered.size() >= 3;
  });
  EXPECT_EQ(payloads_of(first), (Strings{"a", "b", "c"}));
  ASSERT_GE(redelivered.size(), 3u);
  redelivered.resize(3);
  EXPECT_EQ(payloads_of(redelivered), (Strings{"a", "b", "c"}));
  EXPECT_EQ(attempts_of(redelivered), (std::vector<std::uint32_t>{2, 2, 2}));
}

TEST(MemDriver, AckedMessagesAreNotRedeliveredAtTheDeadline) {
  const auto url = unique_topic_url();
  // Long enough that the ack right after receipt always beats the deadline.
  auto sub = Subscriber::open(url, with(kManualAck, {{"ack_deadline_ms", "1000"}}));
  auto pub = Publisher::open(url);
  publish_ok(*pub, outs({"acked", "kept"}));
  auto got = receive_n(*sub, 2);
  ASSERT_EQ(payloads_of(got), (Strings{"acked", "kept"}));
  got[0]->ack();

  // Both share one deadline, so an expired "acked" would come back in the
  // same redelivery as "kept".
  std::vector<MessagePtr> redelivered;
  test::eventually([&] {
    for (auto& m : sub->receive_batch(100, 20ms)) redelivered.push_back(m);
    return !redelivered.empty();
  });
  EXPECT_EQ(payloads_of(redelivered), (Strings{"kept"}));
  EXPECT_EQ(attempts_of(redelivered), (std::vector<std::uint32_t>{2}));
}

TEST(MemDriver, AckOfAnExpiredDeliveryIsHarmless) {
  const auto url = unique_topic_url();
  auto sub = Subscriber::open(url, with(kManualAck, {{"ack_deadline_ms", "100"}}));
  auto pub = Publisher::open(url);
  publish_ok(*pub, outs({"x"}));
  auto first = receive_n(*sub, 1);
  ASSERT_EQ(first.size(), 1u);
  std::vector<MessagePtr> again;
  test::eventually([&] {
    again = sub->receive_batch(1, 20ms);
    return !again.empty();
  });
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0]->delivery_attempt(), 2u);
  EXPECT_NO_THROW(first[0]->ack());  // its ack id is stale: ignored
  EXPECT_NO_THROW(again[0]->ack());
}

TEST(MemDriver, CloseReturnsUnackedMessagesToANamedGroup) {
  const auto url = unique_topic_url();
  auto pub = Publisher::open(url);
  auto s1 = Subscriber::open(url, with(kManualAck, {{"group", "g"}}));
  publish_ok(*pub, outs({"done", "pending"}));
  auto got = receive_n(*s1, 2);
  ASSERT_EQ(payloads_of(got), (Strings{"done", "pending"}));
  got[0]->ack();
  s1->close();

  publish_ok(*pub, outs({"after"}));
  auto s2 = Subscriber::open(url, {{"group", "g"}});
  auto again = receive_through(*s2, "after");
  // The unacked one comes back first, counted as a redelivery.
  EXPECT_EQ(payloads_of(again), (Strings{"pending", "after"}));
  EXPECT_EQ(attempts_of(again), (std::vector<std::uint32_t>{2, 1}));
}

TEST(MemDriver, RedeliveredMessagesComeBackAheadOfUndeliveredOnes) {
  const auto url = unique_topic_url();
  // Round robin over [keeps, leaves]: m0, m2 to `keeps`, m1, m3 to `leaves`.
  // `keeps` (prefetch 1) fetches m0 only, m2 stays undelivered; `leaves`
  // (prefetch 2) fetches m1 and m3 and never acks them.
  auto keeps = Subscriber::open(url, with(kManualAck, {{"group", "g"}, {"prefetch", "1"}}));
  auto leaves = Subscriber::open(url, with(kManualAck, {{"group", "g"}, {"prefetch", "2"}}));
  auto pub = Publisher::open(url);
  publish_ok(*pub, numbered("m", 4));
  ASSERT_TRUE(test::eventually([&] { return keeps->buffered() == 1 && leaves->buffered() == 2; }));
  leaves->close();

  std::vector<MessagePtr> got;
  test::eventually([&] {
    for (auto& m : keeps->receive_batch(1, 20ms)) {
      got.push_back(m);
      m->ack();
    }
    return got.size() >= 4;
  });
  // m3 was published after m2 but was delivered before: it goes first.
  EXPECT_EQ(payloads_of(got), (Strings{"m0", "m1", "m3", "m2"}));
  EXPECT_EQ(attempts_of(got), (std::vector<std::uint32_t>{1, 2, 2, 1}));
}

TEST(MemDriver, AutoAckedMessagesDoNotComeBackAfterClose) {
  const auto url = unique_topic_url();
  auto pub = Publisher::open(url);
  auto s1 = Subscriber::open(url, {{"group", "g"}});
  publish_ok(*pub, outs({"a"}));
  ASSERT_EQ(payloads_of(receive_n(*s1, 1)), (Strings{"a"}));
  s1->close();
  publish_ok(*pub, outs({"end"}));
  auto s2 = Subscriber::open(url, {{"group", "g"}});
  EXPECT_EQ(payloads_of(receive_through(*s2, "end")), (Strings{"end"}));
}

TEST(MemDriver, AckAfterSubscriberCloseThrowsClosed) {
  const auto url = unique_topic_url();
  auto sub = Subscriber::open(url, kManualAck);
  auto pub = Publisher::open(url);
  publish_ok(*pub, outs({"a", "b"}));
  auto got = receive_n(*sub, 2);
  ASSERT_EQ(got.size(), 2u);
  sub->close();
  for (auto* op : {"ack", "nack"}) {
    auto e = error_of([&] {
      if (std::string(op) == "ack") got[0]->ack();
      else got[1]->nack();
    });
    ASSERT_TRUE(e) << op;
    EXPECT_EQ(e->code(), ErrorCode::Closed) << op;
    EXPECT_TRUE(has_substr(e->what(), "closed")) << op;
  }
}

TEST(MemDriver, PublisherAndSubscriberCloseCleanly) {
  const auto url = unique_topic_url();
  auto sub = Subscriber::open(url);
  auto pub = Publisher::open(url, {{"batch_linger_ms", "60000"}});
  auto t = pub->publish(outs({"a", "b"}));
  EXPECT_TRUE(pub->close(kPatience).empty());  // close flushes despite the linger
  EXPECT_TRUE(t->done());
  EXPECT_EQ(payloads_of(receive_n(*sub, 2)), (Strings{"a", "b"}));
  sub->close();
  EXPECT_TRUE(sub->closed());
}

// ------------------------------------------------------------ request-reply

// Answers every request on `sub` with "re:<payload>" (and its headers) until
// `stop`; counts the replies it sent.
class Responder {
 public:
  explicit Responder(std::shared_ptr<Subscriber> sub) : sub_(std::move(sub)) {
    thread_ = std::thread([this] {
      while (!stop_) {
        for (auto& m : sub_->receive_batch(10, 20ms)) {
          if (m->reply_to().empty()) continue;
          m->reply(out("re:" + m->payload(), std::nullopt, m->headers()));
          replies_++;
        }
      }
    });
  }
  ~Responder() {
    stop_ = true;
    thread_.join();
  }
  int replies() const { return replies_; }

 private:
  std::shared_ptr<Subscriber> sub_;
  std::atomic<bool> stop_{false};
  std::atomic<int> replies_{0};
  std::thread thread_;
};

TEST(MemDriver, RequestGetsTheReplyWithHeaders) {
  const auto url = unique_topic_url();
  auto sub = Subscriber::open(url);
  auto pub = Publisher::open(url);
  EXPECT_TRUE(pub->capabilities().request_reply);
  Responder responder(sub);
  auto reply = pub->request(out("ping", std::nullopt, {{"trace", "7"}}), kPatience);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->payload(), "re:ping");
  EXPECT_EQ(reply->headers(), (Headers{{"trace", "7"}}));
  EXPECT_TRUE(reply->reply_to().empty());
  EXPECT_GT(reply->timestamp_ms(), 0);
}

TEST(MemDriver, PublishedMessageHasNoReplyAddressAndCannotBeAnswered) {
  const auto url = unique_topic_url();
  auto sub = Subscriber::open(url);
  auto pub = Publisher::open(url);
  publish_ok(*pub, {out("plain")});
  auto got = receive_n(*sub, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0]->reply_to().empty());
  auto err = error_of([&] { got[0]->reply(out("x")); });
  ASSERT_TRUE(err);
  EXPECT_EQ(err->code(), ErrorCode::InvalidArgument);
  EXPECT_TRUE(has_substr(err->what(), "no reply address"));
}

TEST(MemDriver, RequestWithoutSubscriberFailsAtOnceWithTimeoutNamingTheTopic) {
  const auto url = unique_topic_url();
  auto pub = Publisher::open(url);
  auto err = error_of([&] { pub->request(out("anyone?"), kPatience); });
  ASSERT_TRUE(err);
  EXPECT_EQ(err->code(), ErrorCode::Timeout);
  EXPECT_TRUE(has_substr(err->what(), url));
  EXPECT_TRUE(has_substr(err->what(), "no responders"));
}

TEST(MemDriver, UnansweredRequestTimesOutNamingTheUrlAndTheTimeout) {
  const auto url = unique_topic_url();
  auto sub = Subscriber::open(url);  // receives, never replies
  auto pub = Publisher::open(url);
  auto err = error_of([&] { pub->request(out("hello?"), 200ms); });
  ASSERT_TRUE(err);
  EXPECT_EQ(err->code(), ErrorCode::Timeout);
  EXPECT_TRUE(has_substr(err->what(), url));
  EXPECT_TRUE(has_substr(err->what(), "0.2 s"));
  // The request did reach the subscriber, with a reply address.
  auto got = receive_n(*sub, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_FALSE(got[0]->reply_to().empty());
  got[0]->reply(out("too late"));  // dropped: the requester gave up
}

TEST(MemDriver, OneReplyPerGroupAndTheRequesterTakesTheFirst) {
  const auto url = unique_topic_url();
  auto a = Subscriber::open(url, {{"group", "workers"}});
  auto b = Subscriber::open(url, {{"group", "workers"}});
  auto pub = Publisher::open(url);
  {
    Responder ra(a), rb(b);
    for (int i = 0; i < 20; ++i) {
      auto reply = pub->request(out("job-" + std::to_string(i)), kPatience);
      EXPECT_EQ(reply->payload(), "re:job-" + std::to_string(i));
    }
    EXPECT_TRUE(test::wait_until(Clock::now() + kPatience, [&] { return ra.replies() + rb.replies() == 20; }));
    EXPECT_EQ(ra.replies() + rb.replies(), 20);  // competing consumers: each request answered once
  }
}

TEST(MemDriver, ConcurrentRequestsEachGetTheirOwnReply) {
  const auto url = unique_topic_url();
  auto sub = Subscriber::open(url);
  auto pub = Publisher::open(url);
  Responder responder(sub);
  std::vector<std::thread> threads;
  std::atomic<int> right{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        const auto body = std::to_string(t) + "/" + std::to_string(i);
        if (pub->request(out(body), kPatience)->payload() == "re:" + body) right++;
      }
    });
  }
  publish_ok(*pub, numbered("batched", 100));  // batching goes on beside the requests
  for (auto& th : threads) th.join();
  EXPECT_EQ(right.load(), 100);
}

TEST(MemDriver, CloseFailsAWaitingRequestWithClosed) {
  const auto url = unique_topic_url();
  auto sub = Subscriber::open(url);  // never replies
  auto pub = Publisher::open(url);
  auto pending = pub->send_request(out("wait"));
  pub->close(1s);
  auto err = error_of([&] { pending->wait(kPatience); });
  ASSERT_TRUE(err);
  EXPECT_EQ(err->code(), ErrorCode::Closed);
  auto again = error_of([&] { pub->request(out("after"), 1s); });
  ASSERT_TRUE(again);
  EXPECT_EQ(again->code(), ErrorCode::Closed);
}

TEST(MemDriver, ClosedSubscriberCannotReply) {
  const auto url = unique_topic_url();
  auto sub = Subscriber::open(url);
  auto pub = Publisher::open(url);
  auto pending = pub->send_request(out("q"));
  auto got = receive_n(*sub, 1);
  ASSERT_EQ(got.size(), 1u);
  sub->close();
  auto err = error_of([&] { Subscriber::reply(*got[0], out("a")); });
  ASSERT_TRUE(err);
  EXPECT_EQ(err->code(), ErrorCode::Closed);
}

}  // namespace
}  // namespace omnibus
