#include "core/connection_loop.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace omnibus::detail {
namespace {

using std::chrono::milliseconds;

// A scripted connection: each connect() and serve() takes the next outcome
// ("ok" or an error), and the loop stops when the script runs out.
struct Script {
  std::vector<std::string> connects, serves;
  std::size_t c = 0, s = 0;
  std::vector<std::string> log;
  std::vector<milliseconds> waits;
  std::vector<bool> up_seen;  // up() at each serve
};

ConnectionLoop::Steps steps_for(Script& sc, ConnectionLoop& loop) {
  ConnectionLoop::Steps st;
  st.stopping = [&] { return sc.c >= sc.connects.size() && sc.s >= sc.serves.size(); };
  st.before_attempt = [&] { sc.log.push_back("attempt"); };
  st.connect = [&] {
    const std::string& r = sc.connects.at(sc.c++);
    sc.log.push_back("connect " + r);
    if (r != "ok") throw Error(ErrorCode::Unavailable, r);
  };
  st.serve = [&] {
    sc.up_seen.push_back(loop.up());
    const std::string& r = sc.serves.at(sc.s++);
    sc.log.push_back("serve " + r);
    if (r != "ok") throw Error(ErrorCode::Unavailable, r);
  };
  st.failed = [&](const Error& e) { sc.log.push_back(std::string("failed ") + e.what()); };
  st.lost = [&](const Error& e) { sc.log.push_back(std::string("lost ") + e.what()); };
  st.wait = [&](milliseconds d) { sc.waits.push_back(d); };
  return st;
}

TEST(ConnectionLoop, ServesUntilLostThenReconnectsWithBackoff) {
  Script sc;
  sc.serves = {"ok", "down", "ok"};
  sc.connects = {"refused", "refused", "ok"};
  ConnectionLoop loop(milliseconds(100), milliseconds(5000), true);
  loop.run(steps_for(sc, loop));
  EXPECT_EQ(sc.log, (std::vector<std::string>{"serve ok", "serve down", "lost down", "attempt", "connect refused",
                                              "failed refused", "attempt", "connect refused", "failed refused",
                                              "attempt", "connect ok", "serve ok"}));
  // One wait per failed attempt, none after a loss (the first retry is at
  // once), each drawn between the floor and the doubling ceiling.
  ASSERT_EQ(sc.waits.size(), 2u);
  EXPECT_GE(sc.waits[0], milliseconds(100));
  EXPECT_LE(sc.waits[0], milliseconds(100));
  EXPECT_GE(sc.waits[1], milliseconds(100));
  EXPECT_LE(sc.waits[1], milliseconds(200));
  EXPECT_EQ(sc.up_seen, (std::vector<bool>{true, true, true}));
  EXPECT_TRUE(loop.up());
}

TEST(ConnectionLoop, BackoffStartsFromTheFloorAfterASuccess) {
  Script sc;
  sc.connects = {"no", "no", "no", "ok", "no"};
  sc.serves = {"down"};
  ConnectionLoop loop(milliseconds(10), milliseconds(1000), false);
  loop.run(steps_for(sc, loop));
  ASSERT_EQ(sc.waits.size(), 4u);
  EXPECT_LE(sc.waits[2], milliseconds(40));  // third failure: ceiling 40 ms
  EXPECT_LE(sc.waits[3], milliseconds(10));  // after the success: the floor again
  EXPECT_FALSE(loop.up());                   // the last attempt failed
}

TEST(ConnectionLoop, StopsBeforeTheFirstStepWhenAskedTo) {
  ConnectionLoop loop(milliseconds(100), milliseconds(5000), false);
  ConnectionLoop::Steps st;
  int calls = 0;
  st.stopping = [] { return true; };
  st.connect = [&] { ++calls; };
  st.serve = [&] { ++calls; };
  st.lost = [&](const Error&) { ++calls; };
  st.wait = [&](milliseconds) { ++calls; };
  loop.run(st);
  EXPECT_EQ(calls, 0);
}

TEST(ConnectionLoop, ErrorsOtherThanOmnibusErrorsPropagate) {
  ConnectionLoop loop(milliseconds(1), milliseconds(2), true);
  ConnectionLoop::Steps st;
  st.stopping = [] { return false; };
  st.connect = [] {};
  st.serve = [] { throw std::logic_error("a bug, not a lost connection"); };
  st.lost = [](const Error&) {};
  st.wait = [](milliseconds) {};
  EXPECT_THROW(loop.run(st), std::logic_error);
}

}  // namespace
}  // namespace omnibus::detail
