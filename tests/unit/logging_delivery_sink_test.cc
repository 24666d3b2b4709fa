// DeliverySink against a scripted in-process transport: batching, backoff,
// order through the disk buffer, memory-only drops, degraded conditions,
// and a stop that keeps what it can on disk.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include "logging/delivery_sink.h"
#include "tests/logging/logging_test_support.h"

namespace tlswall::logging {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::TempDir;

// A destination that records what it took and answers what it is told.
class FakeTransport : public Transport {
 public:
  struct State {
    std::mutex mu;
    std::vector<std::string> got;
    std::vector<size_t> batch_sizes;
    Status answer = Status::kOk;
    size_t partial = SIZE_MAX;  // with kError: accept this many first
    int calls = 0;
  };
  explicit FakeTransport(std::shared_ptr<State> s) : s_(std::move(s)) {}
  std::string kind() const override { return "fake"; }
  std::string target() const override { return "fake:0"; }
  std::string render(const RenderedEvent& e) override { return e.event.message; }
  Status send(const std::vector<std::string>& records, size_t* accepted,
              std::string* error) override {
    std::lock_guard<std::mutex> lk(s_->mu);
    ++s_->calls;
    *accepted = 0;
    if (s_->answer == Status::kOk) {
      s_->got.insert(s_->got.end(), records.begin(), records.end());
      s_->batch_sizes.push_back(records.size());
      *accepted = records.size();
      return Status::kOk;
    }
    if (s_->partial != SIZE_MAX) {
      const size_t n = std::min(s_->partial, records.size());
      s_->got.insert(s_->got.end(), records.begin(), records.begin() + n);
      *accepted = n;
    }
    *error = s_->answer == Status::kTryLater ? "TRY_LATER" : "connection refused";
    return s_->answer;
  }
  bool connected() const override { return true; }
  void disconnect() override {}

 private:
  std::shared_ptr<State> s_;
};

EventRef Ev(int i, EventType t = EventType::kPlaintextBlocked) {
  auto r = std::make_shared<RenderedEvent>();
  r->event.type = t;
  r->event.message = "m" + std::to_string(i);
  r->cls = event_class(t);
  return r;
}

std::vector<std::string> Expected(int from, int n) {
  std::vector<std::string> v;
  for (int i = from; i < from + n; ++i) v.push_back("m" + std::to_string(i));
  return v;
}

DeliveryOptions Fast() {
  DeliveryOptions o;
  o.queue_events = 10000;
  o.batch_max_events = 100;
  o.batch_delay = 0ms;
  o.retry_min = 10ms;
  o.retry_max = 40ms;
  o.buffer_retry = 50ms;
  return o;
}

size_t Got(const std::shared_ptr<FakeTransport::State>& s) {
  std::lock_guard<std::mutex> lk(s->mu);
  return s->got.size();
}

TEST(DeliverySink, DeliversInOrderInBatches) {
  auto st = std::make_shared<FakeTransport::State>();
  DeliveryOptions o = Fast();
  o.batch_delay = 20ms;
  DeliverySink s("t", std::make_unique<FakeTransport>(st), o);
  s.start();
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(s.offer(Ev(i)));
  ASSERT_TRUE(eventually([&] { return Got(st) == 1000; }, 10s));
  s.stop(1s);
  std::lock_guard<std::mutex> lk(st->mu);
  EXPECT_EQ(st->got, Expected(0, 1000));
  for (size_t b : st->batch_sizes) EXPECT_LE(b, 100u);
  EXPECT_LT(st->batch_sizes.size(), 200u) << "events must be batched";
  EXPECT_EQ(s.health().delivered, 1000u);
  EXPECT_TRUE(s.condition().empty());
}

TEST(DeliverySink, BatchByteLimitSplitsBatches) {
  auto st = std::make_shared<FakeTransport::State>();
  DeliveryOptions o = Fast();
  o.batch_max_bytes = 10;  // "mNN" records: 3-4 bytes each
  o.batch_delay = 50ms;
  DeliverySink s("t", std::make_unique<FakeTransport>(st), o);
  for (int i = 0; i < 30; ++i) ASSERT_TRUE(s.offer(Ev(i)));
  s.start();
  ASSERT_TRUE(eventually([&] { return Got(st) == 30; }, 10s));
  s.stop(1s);
  std::lock_guard<std::mutex> lk(st->mu);
  EXPECT_EQ(st->got, Expected(0, 30));
  for (size_t b : st->batch_sizes) EXPECT_LE(b, 5u);  // "m0".."m9": 2 bytes each
}

TEST(DeliverySink, MemoryOnlyRetriesWithBackoffAndKeepsOrder) {
  auto st = std::make_shared<FakeTransport::State>();
  st->answer = Transport::Status::kError;
  DeliverySink s("t", std::make_unique<FakeTransport>(st), Fast());
  s.start();
  for (int i = 0; i < 50; ++i) s.offer(Ev(i));
  ASSERT_TRUE(eventually([&] { return s.condition() == "unreachable"; }, 5s));
  std::this_thread::sleep_for(200ms);
  {
    std::lock_guard<std::mutex> lk(st->mu);
    // Backoff: 10, 20, 40, 40 ms ... not a busy loop.
    EXPECT_LT(st->calls, 15) << "retries must back off";
    EXPECT_GE(st->calls, 2);
    st->answer = Transport::Status::kOk;
  }
  for (int i = 50; i < 60; ++i) s.offer(Ev(i));
  ASSERT_TRUE(eventually([&] { return Got(st) == 60; }, 5s));
  EXPECT_TRUE(eventually([&] { return s.condition().empty(); }, 5s));
  s.stop(1s);
  std::lock_guard<std::mutex> lk(st->mu);
  EXPECT_EQ(st->got, Expected(0, 60));
  const SinkHealth h = s.health();
  EXPECT_GE(h.send_failures, 2u);
  EXPECT_EQ(h.dropped, 0u);
  EXPECT_NE(h.last_error.find("connection refused"), std::string::npos);
}

TEST(DeliverySink, PartialAcceptanceIsNotResent) {
  auto st = std::make_shared<FakeTransport::State>();
  st->answer = Transport::Status::kError;
  st->partial = 3;
  DeliveryOptions o = Fast();
  o.batch_delay = 30ms;
  DeliverySink s("t", std::make_unique<FakeTransport>(st), o);
  for (int i = 0; i < 10; ++i) s.offer(Ev(i));
  s.start();
  ASSERT_TRUE(eventually([&] { return Got(st) >= 3; }, 5s));
  {
    std::lock_guard<std::mutex> lk(st->mu);
    st->answer = Transport::Status::kOk;
    st->partial = SIZE_MAX;
  }
  ASSERT_TRUE(eventually([&] { return Got(st) >= 10; }, 5s));
  s.stop(1s);
  std::lock_guard<std::mutex> lk(st->mu);
  EXPECT_EQ(st->got, Expected(0, 10));
}

TEST(DeliverySink, TryLaterIsHonouredAndReported) {
  auto st = std::make_shared<FakeTransport::State>();
  st->answer = Transport::Status::kTryLater;
  DeliverySink s("t", std::make_unique<FakeTransport>(st), Fast());
  s.start();
  s.offer(Ev(0));
  ASSERT_TRUE(eventually([&] { return s.condition() == "try_later"; }, 5s));
  EXPECT_GE(s.health().try_later, 1u);
  EXPECT_EQ(Got(st), 0u);
  {
    std::lock_guard<std::mutex> lk(st->mu);
    st->answer = Transport::Status::kOk;
  }
  ASSERT_TRUE(eventually([&] { return Got(st) == 1; }, 5s));
  s.stop(1s);
}

TEST(DeliverySink, MemoryOnlyQueueOverflowIsCountedWithReservedShare) {
  auto st = std::make_shared<FakeTransport::State>();
  st->answer = Transport::Status::kError;
  DeliveryOptions o = Fast();
  o.queue_events = 100;
  o.reserve_share = 0.25;
  DeliverySink s("t", std::make_unique<FakeTransport>(st), o);
  s.start();
  int other_ok = 0;
  for (int i = 0; i < 500; ++i) other_ok += s.offer(Ev(i, EventType::kStateLost));
  // The flood of state_lost cannot push out a plaintext event.
  EXPECT_TRUE(s.offer(Ev(1000, EventType::kPlaintextBlocked)));
  EXPECT_TRUE(s.offer(Ev(1001, EventType::kPolicyRejected)));
  const SinkHealth h = s.health();
  EXPECT_EQ(h.dropped_queue_full, static_cast<uint64_t>(500 - other_ok));
  const SinkDrops d = s.take_drops();
  EXPECT_EQ(d.queue_full, h.dropped_queue_full);
  EXPECT_EQ(s.take_drops().queue_full, 0u) << "drops are reported once";
  s.stop(0ms);
}

TEST(DeliverySink, SpoolsToDiskWhileDownAndReplaysInOrder) {
  TempDir t;
  auto st = std::make_shared<FakeTransport::State>();
  st->answer = Transport::Status::kError;
  DeliveryOptions o = Fast();
  o.queue_events = 64;  // far less than what arrives during the outage
  DiskBufferOptions b;
  b.dir = t.str("buf");
  b.max_bytes = 1 << 20;
  b.segment_bytes = 64 << 10;
  o.buffer = b;
  DeliverySink s("t", std::make_unique<FakeTransport>(st), o);
  s.start();
  for (int i = 0; i < 2000; ++i) {
    while (!s.offer(Ev(i)))
      std::this_thread::sleep_for(1ms);  // the test paces, the sink never blocks
  }
  ASSERT_TRUE(eventually([&] { return s.health().buffered == 2000; }, 10s))
      << s.health().buffered << " " << s.health().backlog << " " << s.health().last_error;
  EXPECT_EQ(s.condition(), "unreachable");
  {
    std::lock_guard<std::mutex> lk(st->mu);
    st->answer = Transport::Status::kOk;
  }
  for (int i = 2000; i < 2100; ++i) {
    while (!s.offer(Ev(i))) std::this_thread::sleep_for(1ms);
  }
  ASSERT_TRUE(eventually([&] { return Got(st) == 2100; }, 10s))
      << Got(st) << " backlog " << s.health().backlog << " buffered " << s.health().buffered
      << " dropped " << s.health().dropped << " " << s.health().last_error;
  EXPECT_TRUE(eventually([&] { return s.idle(); }, 5s));
  s.stop(1s);
  std::lock_guard<std::mutex> lk(st->mu);
  EXPECT_EQ(st->got, Expected(0, 2100));
  // (Refused offers were retried by the test; nothing was lost after that.)
  EXPECT_EQ(s.health().dropped_buffer_cap + s.health().dropped_buffer_corrupt +
                s.health().dropped_shutdown,
            0u);
}

TEST(DeliverySink, StopKeepsUndeliveredEventsOnDiskForTheNextStart) {
  TempDir t;
  DiskBufferOptions b;
  b.dir = t.str("buf");
  auto down = std::make_shared<FakeTransport::State>();
  down->answer = Transport::Status::kError;
  {
    DeliveryOptions o = Fast();
    o.buffer = b;
    DeliverySink s("t", std::make_unique<FakeTransport>(down), o);
    s.start();
    for (int i = 0; i < 300; ++i) s.offer(Ev(i));
    s.stop(0ms);
    EXPECT_EQ(s.health().dropped_shutdown, 0u);
  }
  auto up = std::make_shared<FakeTransport::State>();
  DeliveryOptions o = Fast();
  o.buffer = b;
  DeliverySink s("t", std::make_unique<FakeTransport>(up), o);
  s.start();
  ASSERT_TRUE(eventually([&] { return Got(up) == 300; }, 10s)) << Got(up);
  s.stop(1s);
  std::lock_guard<std::mutex> lk(up->mu);
  EXPECT_EQ(up->got, Expected(0, 300));
}

TEST(DeliverySink, StopWithoutBufferCountsWhatIsLost) {
  auto st = std::make_shared<FakeTransport::State>();
  st->answer = Transport::Status::kError;
  DeliverySink s("t", std::make_unique<FakeTransport>(st), Fast());
  s.start();
  for (int i = 0; i < 40; ++i) s.offer(Ev(i));
  s.stop(50ms);
  EXPECT_EQ(s.health().dropped_shutdown, 40u);
  EXPECT_EQ(s.take_drops().shutdown, 40u);
}

TEST(DeliverySink, UnwritableBufferDegradesToMemoryOnlyAndSaysSo) {
  TempDir t;
  { std::ofstream(t.path() / "file") << "x"; }
  auto st = std::make_shared<FakeTransport::State>();
  DeliveryOptions o = Fast();
  DiskBufferOptions b;
  b.dir = (t.path() / "file" / "buf").string();
  o.buffer = b;
  DeliverySink s("t", std::make_unique<FakeTransport>(st), o);
  s.start();
  EXPECT_EQ(s.condition(), "buffer_unwritable");
  EXPECT_FALSE(s.health().buffer_writable);
  // Delivery itself still works.
  for (int i = 0; i < 10; ++i) s.offer(Ev(i));
  ASSERT_TRUE(eventually([&] { return Got(st) == 10; }, 5s));
  EXPECT_EQ(s.condition(), "buffer_unwritable");
  s.stop(1s);
}

}  // namespace
}  // namespace tlswall::logging
