// EventQueue: bounded, never blocks, and keeps a reserved share for
// security and control events so a flood of one class cannot push out the
// rest; every refusal is counted per class.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "logging/event_queue.h"

namespace tlswall::logging {
namespace {

using C = EventClass;

TEST(ClassLimits, ReservedShareSplitsTheQueue) {
  const ClassLimits l = class_limits(1000, 0.25);
  EXPECT_EQ(l.control, 1000u);
  EXPECT_EQ(l.other, 750u);
  EXPECT_EQ(l.security, 1000u - 250u / 4);
  const ClassLimits none = class_limits(100, 0.0);
  EXPECT_EQ(none.other, 100u);
  EXPECT_EQ(none.security, 100u);
  const ClassLimits tiny = class_limits(4, 0.5);
  EXPECT_EQ(tiny.other, 2u);
  EXPECT_EQ(tiny.security, 3u);
  EXPECT_EQ(tiny.control, 4u);
  // Out-of-range shares are clamped; a queue always admits something.
  EXPECT_GE(class_limits(10, 5.0).other, 1u);
  EXPECT_EQ(class_limits(0, 0.25).control, 1u);
}

TEST(EventQueue, FloodOfOtherEventsLeavesRoomForSecurityAndControl) {
  EventQueue<int> q(100, 0.25);
  int admitted_other = 0;
  for (int i = 0; i < 1000; ++i) admitted_other += q.try_push(int{i}, C::kOther);
  EXPECT_EQ(admitted_other, 75);
  EXPECT_EQ(q.dropped(C::kOther), 925u);
  // Security events still get in...
  int admitted_security = 0;
  for (int i = 0; i < 1000; ++i) admitted_security += q.try_push(int{i}, C::kSecurity);
  EXPECT_EQ(admitted_security, 100 - 75 - 25 / 4);
  EXPECT_GT(q.dropped(C::kSecurity), 0u);
  // ...and a flood of them cannot take the last slots kept for control.
  int admitted_control = 0;
  for (int i = 0; i < 10; ++i) admitted_control += q.try_push(int{i}, C::kControl);
  EXPECT_EQ(admitted_control, 25 / 4);
  EXPECT_EQ(q.size(), 100u);
  EXPECT_EQ(q.dropped(C::kControl), 10u - 25 / 4);
  EXPECT_EQ(q.dropped_total(),
            q.dropped(C::kOther) + q.dropped(C::kSecurity) + q.dropped(C::kControl));
}

TEST(EventQueue, PopsInOrderAndFreesRoom) {
  EventQueue<int> q(10, 0.0);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(q.try_push(int{i}, C::kOther));
  EXPECT_FALSE(q.try_push(99, C::kOther));
  std::vector<int> out;
  EXPECT_EQ(q.pop(out, 4), 4u);
  EXPECT_EQ(out, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_TRUE(q.try_push(10, C::kOther));
  out.clear();
  q.pop(out, 100);
  EXPECT_EQ(out, (std::vector<int>{4, 5, 6, 7, 8, 9, 10}));
}

TEST(EventQueue, WaitReturnsOnItemsOrDeadlineOrWake) {
  EventQueue<int> q(10, 0.0);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(q.wait(1, t0 + std::chrono::milliseconds(30)), 0u);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(25));
  std::thread producer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    q.try_push(1, C::kOther);
    q.try_push(2, C::kOther);
  });
  EXPECT_EQ(q.wait(2, std::chrono::steady_clock::now() + std::chrono::seconds(10)), 2u);
  producer.join();
  std::thread waker([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    q.wake();
  });
  const auto t1 = std::chrono::steady_clock::now();
  q.wait(100, t1 + std::chrono::seconds(10));
  EXPECT_LT(std::chrono::steady_clock::now() - t1, std::chrono::seconds(5));
  waker.join();
}

TEST(EventQueue, ConcurrentProducersNeverBlockAndEverythingIsAccounted) {
  EventQueue<int> q(1000, 0.25);
  std::atomic<int> admitted{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < 5000; ++i) {
        admitted += q.try_push(int{i}, t == 0 ? C::kSecurity : C::kOther);
      }
    });
  }
  std::vector<int> out;
  size_t popped = 0;
  for (int i = 0; i < 200; ++i) {
    out.clear();
    popped += q.pop(out, 100);
  }
  for (auto& t : ts) t.join();
  out.clear();
  popped += q.pop(out, 100000);
  EXPECT_EQ(popped, static_cast<size_t>(admitted.load()));
  EXPECT_EQ(popped + q.dropped_total(), 20000u);
}

}  // namespace
}  // namespace tlswall::logging
