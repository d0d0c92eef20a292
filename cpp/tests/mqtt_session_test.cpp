// The MQTT session (cpp/src/drivers/mqtt/session.hpp) against a real
// Mosquitto on a free loopback port, started and stopped by each test
// (skipped when Debian's mosquitto is not installed): QoS 0, 1 and 2 both
// ways in both protocol versions, manual acknowledgement and redelivery on a
// kept session, and resending on the same session after the broker is killed
// and started again, and the broker held back by the Receive Maximum until
// the application acks. OMNIBUS_MQTT_TRACE=1 prints every packet and keeps
// the broker's log (log_type all) in its temporary directory.

#include "drivers/mqtt/session.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace omnibus::detail::mqtt {
namespace {

using namespace std::chrono_literals;

std::uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

bool accepts(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

// Mosquitto with persistence in a private directory; stop() kills it like a
// crash, start() brings it back on the same port with what it saved.
class Broker {
 public:
  Broker() : port_(free_port()) {
    dir_ = std::filesystem::temp_directory_path() / ("omnibus-mqtt-session-" + std::to_string(::getpid()) + "-" +
                                                     std::to_string(port_));
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ / "mosquitto.conf") << "listener " << port_ << " 127.0.0.1\n"
                                           << "allow_anonymous true\npersistence true\n"
                                           << "persistence_location " << dir_.string() << "/\n"
                                           << "autosave_interval 1\n" << (std::getenv("OMNIBUS_MQTT_TRACE") ? "log_type all\n" : "")
                                           << "max_inflight_messages 1000\nmax_queued_messages 100000\n"
                                           << "user " << (std::getenv("USER") ? std::getenv("USER") : "root") << "\n";
  }
  ~Broker() {
    stop(SIGTERM);
    std::error_code ignored;
    if (!std::getenv("OMNIBUS_MQTT_TRACE")) std::filesystem::remove_all(dir_, ignored);
  }
  static bool available() { return std::system("command -v mosquitto >/dev/null 2>&1") == 0; }
  void start() {
    pid_ = ::fork();
    if (pid_ == 0) {
      const std::string conf = (dir_ / "mosquitto.conf").string();
      const std::string log = (dir_ / "log").string();
      std::freopen(log.c_str(), "a", stdout);
      std::freopen(log.c_str(), "a", stderr);
      ::execlp("mosquitto", "mosquitto", "-c", conf.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 200 && !accepts(port_); ++i) std::this_thread::sleep_for(50ms);
    ASSERT_TRUE(accepts(port_)) << "mosquitto did not start";
  }
  // SIGSTOP/SIGCONT: a broker that stops answering without closing anything.
  void signal(int sig) { ::kill(pid_, sig); }
  void stop(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  std::uint16_t port() const { return port_; }

 private:
  std::uint16_t port_;
  std::filesystem::path dir_;
  pid_t pid_ = -1;
};

// What a subscriber received, for the test thread to wait on.
struct Inbox {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Inbound> got;
  void add(Inbound&& m) {
    std::lock_guard lock(mu);
    got.push_back(std::move(m));
    cv.notify_all();
  }
  bool wait_for(std::size_t n, std::chrono::milliseconds timeout = 20s) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, timeout, [&] { return got.size() >= n; });
  }
  std::size_t size() {
    std::lock_guard lock(mu);
    return got.size();
  }
};

SessionOptions options(const Broker& b, Version v, std::string id = "") {
  SessionOptions o;
  o.port = b.port();
  o.version = v;
  o.client_id = std::move(id);
  o.keep_alive_s = 5;
  o.reconnect_min = 50ms;
  o.reconnect_max = 500ms;
  if (std::getenv("OMNIBUS_MQTT_TRACE"))
    o.log = [id = o.client_id](std::string_view s) { std::fprintf(stderr, "%lld [%s] %.*s\n", (long long)(std::chrono::steady_clock::now().time_since_epoch().count() / 1000) % 100000000, id.c_str(), int(s.size()), s.data()); };
  return o;
}

void subscribe(Session& s, const std::string& filter, std::uint8_t qos) {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<std::vector<std::uint8_t>> codes;
  s.subscribe({{filter, qos}}, {}, [&](const Error* e, const std::vector<std::uint8_t>& rc) {
    std::lock_guard lock(mu);
    codes = e ? std::vector<std::uint8_t>{0x80} : rc;
    cv.notify_all();
  });
  std::unique_lock lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, 10s, [&] { return codes.has_value(); }));
  ASSERT_EQ(*codes, std::vector<std::uint8_t>{qos});
}

// Counts completions of publishes.
struct Completions {
  std::mutex mu;
  std::condition_variable cv;
  std::size_t ok = 0, failed = 0;
  Session::Done callback() {
    return [this](const Error* e) {
      std::lock_guard lock(mu);
      (e ? failed : ok)++;
      cv.notify_all();
    };
  }
  bool wait_for(std::size_t n, std::chrono::milliseconds timeout = 30s) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, timeout, [&] { return ok + failed >= n; });
  }
};

class MqttSession : public ::testing::TestWithParam<Version> {
 protected:
  void SetUp() override {
    if (!Broker::available()) GTEST_SKIP() << "mosquitto is not installed (make deps)";
    broker_.start();
  }
  Broker broker_;
};

class MqttSessionV5 : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!Broker::available()) GTEST_SKIP() << "mosquitto is not installed (make deps)";
    broker_.start();
  }
  Broker broker_;
};

TEST_P(MqttSession, EveryQosBothWaysInOrder) {
  const Version v = GetParam();
  Inbox inbox;
  Session sub(options(broker_, v), [&](Inbound&& m) { inbox.add(std::move(m)); });
  sub.wait_connected(10s);
  subscribe(sub, "t/#", 2);
  Session pub(options(broker_, v), [](Inbound&&) {});
  pub.wait_connected(10s);
  EXPECT_TRUE(pub.connected());
  constexpr int kEach = 5000;
  Completions done;
  for (std::uint8_t qos = 0; qos <= 2; ++qos)
    for (int i = 0; i < kEach; ++i)
      pub.publish("t/" + std::to_string(qos), std::to_string(i), qos, false, {}, done.callback());
  ASSERT_TRUE(done.wait_for(3 * kEach));
  EXPECT_EQ(done.failed, 0u);
  EXPECT_EQ(pub.unacknowledged(), 0u);
  const bool all = inbox.wait_for(3 * kEach);
  std::map<std::string, int> next;
  if (!all) {
    for (const auto& m : inbox.got) next[m.publish.topic]++;
    for (auto& [t, n] : next) ADD_FAILURE() << t << ": " << n;
    return;
  }
  for (const auto& m : inbox.got) {
    EXPECT_EQ(m.publish.payload, std::to_string(next[m.publish.topic]++)) << m.publish.topic;
    EXPECT_EQ(m.publish.qos, std::stoi(m.publish.topic.substr(2)));
  }
  EXPECT_EQ(next.size(), 3u);
  pub.close(5s);
  sub.close(5s);
}

TEST_P(MqttSession, ManualAckHoldsMessagesForTheNextSubscriber) {
  const Version v = GetParam();
  for (std::uint8_t qos : {1, 2}) {
    const std::string id = "held-" + std::to_string(qos) + (v == Version::V5 ? "-5" : "-3");
    auto so = options(broker_, v, id);
    // 3.1.1's Clean Session 1 ends the session with the connection; MQTT 5
    // keeps it for the Session Expiry Interval.
    so.clean_start = v == Version::V5;
    so.session_expiry_s = 3600;
    so.auto_ack = false;
    {
      // Create the session and its subscription.
      Session s(so, [](Inbound&&) {});
      s.wait_connected(10s);
      subscribe(s, "held/" + id, qos);
      s.close(5s);
    }
    Session pub(options(broker_, v), [](Inbound&&) {});
    pub.wait_connected(10s);
    Completions done;
    for (int i = 0; i < 20; ++i) pub.publish("held/" + id, std::to_string(i), qos, false, {}, done.callback());
    ASSERT_TRUE(done.wait_for(20));
    ASSERT_EQ(done.failed, 0u);

    so.clean_start = false;
    std::set<std::string> acked;
    {
      Inbox first;
      Session s(so, [&](Inbound&& m) { first.add(std::move(m)); });
      s.wait_connected(10s);
      ASSERT_TRUE(first.wait_for(20)) << first.size();
      for (auto& m : first.got) {
        EXPECT_NE(m.token, 0u);
        const int n = std::stoi(m.publish.payload);
        if (n % 2 == 0) {
          s.ack(m.token);
          acked.insert(m.publish.payload);
        }
      }
      // No wait: close() writes the acks given before it ahead of
      // DISCONNECT and does not reset the connection while the broker reads
      // them (with QoS 2 the broker's PUBRELs cross our DISCONNECT; an
      // answer to them used to fail and reset it, losing the last acks).
      s.close(1s);
    }
    Inbox second;
    Session s(so, [&](Inbound&& m) { second.add(std::move(m)); });
    s.wait_connected(10s);
    ASSERT_TRUE(second.wait_for(10)) << second.size();
    std::this_thread::sleep_for(300ms);  // nothing more may come; a late extra would show below
    std::set<std::string> again;
    for (auto& m : second.got) {
      again.insert(m.publish.payload);
      s.ack(m.token);
    }
    EXPECT_EQ(second.size(), 10u);
    for (int i = 1; i < 20; i += 2) EXPECT_TRUE(again.count(std::to_string(i))) << i;
    for (const auto& a : acked) EXPECT_FALSE(again.count(a)) << a;
    s.close(2s);
  }
}

TEST_P(MqttSession, ResendsOnTheSameSessionAfterTheBrokerRestarts) {
  const Version v = GetParam();
  auto so = options(broker_, v, std::string("crash-sub-") + (v == Version::V5 ? "5" : "3"));
  so.clean_start = v == Version::V5;
  so.session_expiry_s = 3600;
  Inbox inbox;
  Session sub(so, [&](Inbound&& m) { inbox.add(std::move(m)); });
  sub.wait_connected(10s);
  subscribe(sub, "crash", 1);
  auto po = options(broker_, v, std::string("crash-pub-") + (v == Version::V5 ? "5" : "3"));
  po.session_expiry_s = 3600;
  po.clean_start = v == Version::V5;
  std::atomic<int> drops{0};
  Session pub(po, [](Inbound&&) {}, [&](bool up, const std::string&) { drops += up ? 0 : 1; });
  pub.wait_connected(10s);
  std::this_thread::sleep_for(1500ms);  // the subscription reaches the broker's save
  constexpr int kTotal = 5000;
  Completions done;
  std::thread killer([&] {
    std::this_thread::sleep_for(30ms);
    broker_.stop(SIGKILL);
    std::this_thread::sleep_for(300ms);
    broker_.start();
  });
  for (int i = 0; i < kTotal; ++i) pub.publish("crash", std::to_string(i), 1, false, {}, done.callback());
  killer.join();
  ASSERT_TRUE(done.wait_for(kTotal, 60s));
  EXPECT_EQ(done.failed, 0u);
  // Every message the broker acknowledged was saved before its PUBACK only if
  // it saved in time; what matters here is that every PUBLISH completed on
  // the resumed session, none failed, and the subscriber is connected again.
  EXPECT_GE(drops.load(), 1) << "the broker was not killed mid-stream";
  for (int i = 0; i < 200 && !sub.connected(); ++i) std::this_thread::sleep_for(50ms);
  EXPECT_TRUE(sub.connected());
  // The subscriber's session and subscription survived the crash (saved
  // before it): what is published now reaches it.
  Completions after;
  for (int i = 0; i < 100; ++i) pub.publish("crash", "after-" + std::to_string(i), 1, false, {}, after.callback());
  ASSERT_TRUE(after.wait_for(100));
  for (int i = 0; i < 200; ++i) {
    {
      std::lock_guard lock(inbox.mu);
      if (std::count_if(inbox.got.begin(), inbox.got.end(),
                        [](const Inbound& m) { return m.publish.payload.rfind("after-", 0) == 0; }) == 100)
        break;
    }
    std::this_thread::sleep_for(50ms);
  }
  std::set<std::string> later;
  {
    std::lock_guard lock(inbox.mu);
    for (const auto& m : inbox.got)
      if (m.publish.payload.rfind("after-", 0) == 0) later.insert(m.publish.payload);
  }
  EXPECT_EQ(later.size(), 100u);
  pub.close(5s);
  sub.close(5s);
}

TEST_F(MqttSessionV5, ReceiveMaximumHoldsTheBrokerBackUntilAcks) {
  auto so = options(broker_, Version::V5, "window");
  so.receive_maximum = 10;
  so.auto_ack = false;
  Inbox inbox;
  Session sub(so, [&](Inbound&& m) { inbox.add(std::move(m)); });
  sub.wait_connected(10s);
  subscribe(sub, "window", 1);
  Session pub(options(broker_, Version::V5), [](Inbound&&) {});
  pub.wait_connected(10s);
  Completions done;
  for (int i = 0; i < 50; ++i) pub.publish("window", std::to_string(i), 1, false, {}, done.callback());
  ASSERT_TRUE(done.wait_for(50));
  ASSERT_TRUE(inbox.wait_for(10));
  std::this_thread::sleep_for(500ms);  // the broker must not send an 11th before an ack
  EXPECT_EQ(inbox.size(), 10u);
  std::size_t acked = 0;
  while (acked < 50) {
    ASSERT_TRUE(inbox.wait_for(acked + 1, 5s)) << acked;
    std::lock_guard lock(inbox.mu);
    for (; acked < inbox.got.size(); ++acked) {
      EXPECT_EQ(inbox.got[acked].publish.payload, std::to_string(acked));
      sub.ack(inbox.got[acked].token);
    }
  }
  EXPECT_TRUE(sub.connected());
  pub.close(2s);
  sub.close(2s);
}

// A broker that stops answering (SIGSTOP) is found dead by the keepalive;
// both sessions connect again to the same broker, which kept their sessions
// in memory, and resend there: QoS 2 PUBLISH with DUP and PUBREL. Every
// message then arrives exactly once.
TEST_P(MqttSession, KeepaliveFindsAStuckBrokerAndQos2StaysExactlyOnce) {
  const Version v = GetParam();
  const std::string suffix = v == Version::V5 ? "5" : "3";
  auto so = options(broker_, v, "stuck-sub-" + suffix);
  so.keep_alive_s = 1;
  so.clean_start = v == Version::V5;
  so.session_expiry_s = 3600;
  Inbox inbox;
  Session sub(so, [&](Inbound&& m) { inbox.add(std::move(m)); });
  sub.wait_connected(10s);
  subscribe(sub, "stuck", 2);
  auto po = options(broker_, v, "stuck-pub-" + suffix);
  po.keep_alive_s = 1;
  po.clean_start = v == Version::V5;
  po.session_expiry_s = 3600;
  std::mutex mu;
  std::condition_variable cv;
  int drops = 0, resumed = 0;
  Session pub(po, [](Inbound&&) {}, [&](bool up, const std::string& why) {
    std::lock_guard lock(mu);
    drops += up ? 0 : 1;
    resumed += up && why == "session resumed";
    cv.notify_all();
  });
  pub.wait_connected(10s);
  constexpr int kTotal = 3000;
  Completions done;
  for (int i = 0; i < kTotal / 2; ++i) pub.publish("stuck", std::to_string(i), 2, false, {}, done.callback());
  broker_.signal(SIGSTOP);
  for (int i = kTotal / 2; i < kTotal; ++i) pub.publish("stuck", std::to_string(i), 2, false, {}, done.callback());
  {
    std::unique_lock lock(mu);
    const bool dropped = cv.wait_for(lock, 20s, [&] { return drops >= 1; });
    broker_.signal(SIGCONT);
    ASSERT_TRUE(dropped) << "the keepalive did not notice the stopped broker";
  }
  ASSERT_TRUE(done.wait_for(kTotal, 60s));
  EXPECT_EQ(done.failed, 0u);
  {
    std::lock_guard lock(mu);
    EXPECT_GE(resumed, 1) << "the publisher did not come back on its session";
  }
  ASSERT_TRUE(inbox.wait_for(kTotal, 30s)) << inbox.size();
  std::this_thread::sleep_for(500ms);  // a duplicate would come now
  std::map<std::string, int> seen;
  {
    std::lock_guard lock(inbox.mu);
    for (const auto& m : inbox.got) seen[m.publish.payload]++;
  }
  EXPECT_EQ(seen.size(), static_cast<std::size_t>(kTotal));
  for (const auto& [payload, n] : seen) EXPECT_EQ(n, 1) << payload;
  pub.close(5s);
  sub.close(5s);
}

TEST_F(MqttSessionV5, FailoverTriesTheNextBrokerAndReportsItsConnack) {
  auto o = options(broker_, Version::V5);
  o.failover = {{"127.0.0.1", free_port()}, {"127.0.0.1", broker_.port()}};  // nothing listens on the first
  o.connect_timeout = 2s;
  Session s(o, [](Inbound&&) {});
  s.wait_connected(20s);
  EXPECT_TRUE(s.connected());
  // Mosquitto's CONNACK always says what it assigned or limits; at least one property is there.
  EXPECT_FALSE(s.connack_properties().empty());
  s.close(1s);
}

INSTANTIATE_TEST_SUITE_P(Versions, MqttSession, ::testing::Values(Version::V311, Version::V5),
                         [](const auto& info) { return info.param == Version::V5 ? "V5" : "V311"; });

TEST(MqttSessionAlone, RefusedAndUnreachableSayWhy) {
  SessionOptions o;
  o.port = free_port();  // nothing listens
  o.connect_timeout = 1s;
  Session s(o, [](Inbound&&) {});
  try {
    s.wait_connected(2s);
    FAIL();
  } catch (const Error& e) {
    EXPECT_TRUE(e.code() == ErrorCode::Unavailable || e.code() == ErrorCode::Timeout) << e.what();
    EXPECT_NE(std::string(e.what()).find(std::to_string(o.port)), std::string::npos) << e.what();
  }
  EXPECT_THROW(s.publish("t", "x", 3, false, {}, {}), Error);
  EXPECT_THROW(s.publish("a/#", "x", 0, false, {}, {}), Error);
  EXPECT_THROW(s.subscribe({{"a/#/b", 0}}, {}, {}), Error);
  SessionOptions bad = o;
  bad.client_id = std::string("id\0", 3);
  try {
    Session never(bad, [](Inbound&&) {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("client id"), std::string::npos) << e.what();
  }
  s.close(0ms);
  EXPECT_THROW(s.publish("t", "x", 0, false, {}, {}), Error);
}

}  // namespace
}  // namespace omnibus::detail::mqtt
