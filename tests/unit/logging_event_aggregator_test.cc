// EventAggregator with injected time: the first of a key goes out at once,
// repeats within the window become one event with a count, keys are
// (type, rule, owner, destination), and counts always add up.
#include <gtest/gtest.h>

#include <chrono>
#include <vector>

#include "../logging/test_owner.h"
#include "logging/event_aggregator.h"
#include "tests/logging/logging_test_support.h"

namespace tlswall::logging {
namespace {

using std::chrono::milliseconds;
using testing::flow_event;
using T = EventAggregator::Clock::time_point;

T At(int ms) { return T{} + std::chrono::hours(1) + milliseconds(ms); }

uint64_t Occurrences(const std::vector<Event>& v) {
  uint64_t n = 0;
  for (const auto& e : v) n += e.count;
  return n;
}

TEST(EventAggregator, FirstPassesRepeatsFoldIntoOneCountedEvent) {
  EventAggregator a(milliseconds(1000), 100);
  std::vector<Event> out;
  for (int i = 0; i < 50; ++i) {
    Event e = flow_event(EventType::kPlaintextBlocked, i);
    e.time = std::chrono::system_clock::time_point{} + std::chrono::seconds(1000 + i);
    a.expire(At(i * 10), out);
    if (a.offer(e, At(i * 10))) out.push_back(e);
  }
  ASSERT_EQ(out.size(), 1u) << "only the first goes out inside the window";
  EXPECT_EQ(out[0].count, 1u);
  EXPECT_EQ(a.folded(), 49u);
  a.expire(At(999), out);
  EXPECT_EQ(out.size(), 1u) << "window not over yet";
  a.expire(At(1000), out);
  ASSERT_EQ(out.size(), 2u);
  const Event& s = out[1];
  EXPECT_EQ(s.count, 49u);
  EXPECT_EQ(s.type, EventType::kPlaintextBlocked);
  EXPECT_EQ(s.rule, "db-tls");
  ASSERT_TRUE(s.first_time && s.last_time);
  EXPECT_EQ(*s.first_time, std::chrono::system_clock::time_point{} + std::chrono::seconds(1001));
  EXPECT_EQ(*s.last_time, std::chrono::system_clock::time_point{} + std::chrono::seconds(1049));
  EXPECT_EQ(s.message, "synthetic 1") << "the summary carries the first repeat's details";
  EXPECT_EQ(Occurrences(out), 50u);
  EXPECT_EQ(a.keys(), 0u);
}

TEST(EventAggregator, ASingleRepeatIsEmittedAsItself) {
  EventAggregator a(milliseconds(100), 100);
  std::vector<Event> out;
  EXPECT_TRUE(a.offer(flow_event(EventType::kPlaintextReported, 1), At(0)));
  EXPECT_FALSE(a.offer(flow_event(EventType::kPlaintextReported, 2), At(50)));
  a.expire(At(100), out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].count, 1u);
  EXPECT_FALSE(out[0].first_time.has_value());
  EXPECT_EQ(out[0].message, "synthetic 2");
}

TEST(EventAggregator, DifferentKeysAreNotFolded) {
  EventAggregator a(milliseconds(1000), 100);
  const Event base = flow_event(EventType::kPlaintextBlocked, 0);
  EXPECT_TRUE(a.offer(base, At(0)));
  Event other_type = base;
  other_type.type = EventType::kPlaintextReported;
  EXPECT_TRUE(a.offer(other_type, At(1)));
  EXPECT_TRUE(a.offer(flow_event(EventType::kPlaintextBlocked, 0, "other-rule"), At(2)));
  EXPECT_TRUE(
      a.offer(flow_event(EventType::kPlaintextBlocked, 0, "db-tls", "198.18.130.11"), At(3)));
  Event other_port = base;
  other_port.flow->dport = 5433;
  EXPECT_TRUE(a.offer(other_port, At(4)));
  Event owned = base;
  owned.owner =
      logging::TestOwner(1234u, 1000u, "curl", "/usr/bin/curl", "/system.slice/a.service", "");
  EXPECT_TRUE(a.offer(owned, At(5)));
  Event other_user = owned;
  other_user.owner->uid = 1001u;
  EXPECT_TRUE(a.offer(other_user, At(6)));
  Event other_container = owned;
  other_container.owner->container = "c0ffee";
  EXPECT_TRUE(a.offer(other_container, At(7)));
  EXPECT_EQ(a.keys(), 8u);
}

TEST(EventAggregator, PidAndSourcePortDoNotSplitAFlood) {
  // A fork-per-connection client: new pid and source port every time.
  EventAggregator a(milliseconds(1000), 100);
  Event e = flow_event(EventType::kPlaintextBlocked, 0);
  e.owner =
      logging::TestOwner(100u, 0u, "php-fpm", "/usr/sbin/php-fpm", "/system.slice/php.service", "");
  EXPECT_TRUE(a.offer(e, At(0)));
  for (uint32_t pid = 101; pid < 120; ++pid) {
    Event r = flow_event(EventType::kPlaintextBlocked, static_cast<int>(pid));
    r.owner = e.owner;
    r.owner->pid = pid;
    EXPECT_FALSE(a.offer(r, At(static_cast<int>(pid))));
  }
}

TEST(EventAggregator, ControlEventsAndPreCountedEventsPassThrough) {
  EventAggregator a(milliseconds(1000), 100);
  Event p;
  p.type = EventType::kPolicyRejected;
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(a.offer(p, At(i)));
  Event d;
  d.type = EventType::kEventsDropped;
  d.count = 7;
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(a.offer(d, At(i)));
  Event pre = flow_event(EventType::kPlaintextBlocked, 1);
  pre.count = 3;
  EXPECT_TRUE(a.offer(pre, At(0)));
  EXPECT_TRUE(a.offer(pre, At(1)));
  EXPECT_EQ(a.folded(), 0u);
}

TEST(EventAggregator, NewWindowAfterTheOldOneEnds) {
  EventAggregator a(milliseconds(100), 100);
  std::vector<Event> out;
  int emitted_now = 0;
  for (int ms = 0; ms < 1000; ms += 5) {
    a.expire(At(ms), out);
    emitted_now += a.offer(flow_event(EventType::kStateLost, ms), At(ms));
  }
  a.flush(out);
  EXPECT_EQ(emitted_now, 10) << "one immediate event per window";
  EXPECT_EQ(Occurrences(out) + static_cast<uint64_t>(emitted_now), 200u);
}

TEST(EventAggregator, KeyTableIsBoundedAndOverflowPassesThrough) {
  EventAggregator a(milliseconds(1000), 4);
  for (int i = 0; i < 10; ++i) {
    EXPECT_TRUE(
        a.offer(flow_event(EventType::kPlaintextBlocked, i, "r" + std::to_string(i)), At(i)));
  }
  EXPECT_EQ(a.keys(), 4u);
  EXPECT_EQ(a.untracked(), 6u);
  // Untracked keys are not folded: nothing is lost.
  EXPECT_TRUE(a.offer(flow_event(EventType::kPlaintextBlocked, 0, "r9"), At(20)));
}

TEST(EventAggregator, WindowZeroTurnsItOff) {
  EventAggregator a(milliseconds(0), 100);
  for (int i = 0; i < 10; ++i)
    EXPECT_TRUE(a.offer(flow_event(EventType::kPlaintextBlocked, i), At(i)));
  EXPECT_EQ(a.next_deadline(), EventAggregator::Clock::time_point::max());
}

TEST(EventAggregator, FlushEmitsEveryPendingSummary) {
  EventAggregator a(milliseconds(100000), 100);
  std::vector<Event> out;
  for (int k = 0; k < 3; ++k) {
    for (int i = 0; i < 4; ++i)
      a.offer(flow_event(EventType::kPlaintextBlocked, i, "r" + std::to_string(k)), At(i));
  }
  a.flush(out);
  ASSERT_EQ(out.size(), 3u);
  for (const auto& e : out) EXPECT_EQ(e.count, 3u);
  EXPECT_EQ(a.keys(), 0u);
}

}  // namespace
}  // namespace tlswall::logging
