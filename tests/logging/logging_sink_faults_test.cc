// Fault tests: the Scribe sink's disk buffer on a read-only or a full file
// system. Real conditions, not mocks: a tmpfs mounted read-only or with a
// tiny size, inside a private mount namespace of this test process (root
// only; skipped otherwise), so nothing shows on the host. The pipeline must
// keep taking events without blocking, say loudly that it is degraded
// (health and a sink_degraded event), and account for every event.
#include <gtest/gtest.h>

#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>

#include "logging/event_pipeline.h"
#include "tests/logging/logging_pipeline_harness.h"

namespace tlswall::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using logging::make_event_pipeline;

class SinkFaults : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::geteuid() != 0) return;
    // A mount namespace of our own: threads started from here on share it.
    if (::unshare(CLONE_NEWNS) != 0 ||
        ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      ns_error_ = std::string("private mount namespace: ") + std::strerror(errno);
      return;
    }
    ns_ready_ = true;
  }
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (mounts a tmpfs)";
    ASSERT_TRUE(ns_ready_) << ns_error_;
  }
  void TearDown() override {
    for (auto it = mounts_.rbegin(); it != mounts_.rend(); ++it) ::umount2(it->c_str(), MNT_DETACH);
  }
  // Mounts a tmpfs of `size` at dir; "" on success.
  std::string MountTmpfs(const std::string& dir, const std::string& size) {
    fs::create_directories(dir);
    const std::string opts = "size=" + size + ",mode=0755";
    if (::mount("tw-test", dir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, opts.c_str()) != 0) {
      return std::strerror(errno);
    }
    mounts_.push_back(dir);
    return "";
  }
  static std::string RemountReadOnly(const std::string& dir) {
    if (::mount(nullptr, dir.c_str(), nullptr, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV,
                nullptr) != 0) {
      return std::strerror(errno);
    }
    return "";
  }

  static inline bool ns_ready_ = false;
  static inline std::string ns_error_;
  TempDir t_;  // removed after TearDown() unmounted what is inside
  std::vector<std::string> mounts_;
};

// Missing seqs between first and last == what the reports say was lost.
void ExpectEveryEventAccounted(const Received& r, uint64_t first_seq, uint64_t last_seq,
                               const logging::SinkHealth& h) {
  std::set<uint64_t> got;
  for (const auto& m : r.unique) got.insert(std::stoull(m.at("seq")));
  uint64_t missing = 0;
  for (uint64_t s = first_seq; s <= last_seq; ++s) missing += !got.count(s);
  EXPECT_EQ(missing, r.DroppedTotal("scribe"));
  EXPECT_EQ(missing, h.dropped);
  EXPECT_TRUE(r.InOrder());
}

TEST_F(SinkFaults, ReadOnlyBufferDirectoryDegradesVisiblyAndNeverBlocks) {
  const TempDir& t = t_;
  const std::string ro = t.str("ro");
  ASSERT_EQ(MountTmpfs(ro, "1m"), "");
  fs::create_directories(ro + "/buffer");
  ASSERT_EQ(RemountReadOnly(ro), "");

  ScribeTestServer server;
  server.start();
  const int port = server.port();
  server.stop();
  auto cfg = TestPipelineConfig(t, port);
  cfg.scribe[0].buffer_dir = ro + "/buffer";
  cfg.scribe[0].common.queue_events = 4096;
  auto p = make_event_pipeline(cfg);
  const uint64_t first_seq = p->health().next_seq;

  const auto worst = SubmitPaced(*p, 0, 20000, 0);
  // A sink blocked on I/O would show as seconds; 100 ms leaves room for a
  // busy machine descheduling this thread.
  EXPECT_LT(worst, 100ms) << "submit() must never wait for a sink";

  ASSERT_TRUE(eventually([&] { return p->health().sinks.at(1).state == "buffer_unwritable"; }, 5s));
  const auto h = p->health().sinks.at(1);
  EXPECT_FALSE(h.buffer_writable);
  EXPECT_NE(h.buffer_error.find("Read-only file system"), std::string::npos) << h.buffer_error;
  ASSERT_TRUE(eventually(
      [&] {
        for (const auto& m : FromJsonFile(t.str("events.jsonl")).OfType("sink_degraded")) {
          if (m.at("sink") == "scribe" && m.at("reason") == "buffer_unwritable" &&
              m.at("message").find("Read-only file system") != std::string::npos) {
            return true;
          }
        }
        return false;
      },
      5s))
      << "the local JSON file must say the Scribe sink degraded, and why";
  // The JSON sink is unaffected.
  ASSERT_TRUE(eventually(
      [&] { return FromJsonFile(t.str("events.jsonl")).Synthetic().size() == 20000; }, 10s));

  server.start();
  ASSERT_TRUE(p->flush(30000)) << logging::render_health_json(p->health());
  const auto hs = p->health();
  const Received r = FromScribe(server);
  EXPECT_GT(hs.sinks.at(1).dropped_queue_full, 0u) << "memory only: the queue overflowed";
  ExpectEveryEventAccounted(r, first_seq, hs.next_seq - 1, hs.sinks.at(1));
  EXPECT_EQ(hs.sinks.at(1).state, "buffer_unwritable") << "still no disk buffer";
}

TEST_F(SinkFaults, FullBufferDiskDegradesKeepsWhatItWroteAndAccountsForTheRest) {
  const TempDir& t = t_;
  const std::string small = t.str("small");
  ASSERT_EQ(MountTmpfs(small, "256k"), "");

  ScribeTestServer server;
  server.start();
  const int port = server.port();
  server.stop();
  auto cfg = TestPipelineConfig(t, port);
  cfg.scribe[0].buffer_dir = small + "/buffer";
  cfg.scribe[0].buffer_max_bytes = 64ull << 20;  // the disk fills long before the cap
  cfg.scribe[0].segment_bytes = 64 << 10;
  cfg.scribe[0].common.batch_max_bytes = 64 << 10;
  cfg.scribe[0].common.queue_events = 2048;
  auto p = make_event_pipeline(cfg);
  const uint64_t first_seq = p->health().next_seq;

  const auto worst = SubmitPaced(*p, 0, 10000, 20000);
  // A sink blocked on I/O would show as seconds; 100 ms leaves room for a
  // busy machine descheduling this thread.
  EXPECT_LT(worst, 100ms) << "submit() must never wait for a sink";
  ASSERT_TRUE(
      eventually([&] { return p->health().sinks.at(1).state == "buffer_unwritable"; }, 10s));
  const auto h = p->health().sinks.at(1);
  EXPECT_NE(h.buffer_error.find("No space left on device"), std::string::npos) << h.buffer_error;
  EXPECT_GT(h.buffered, 0u) << "what fit on the disk stays there";
  ASSERT_TRUE(eventually(
      [&] {
        for (const auto& m : FromJsonFile(t.str("events.jsonl")).OfType("sink_degraded")) {
          if (m.at("sink") == "scribe" && m.at("reason") == "buffer_unwritable") return true;
        }
        return false;
      },
      5s));

  server.start();
  ASSERT_TRUE(p->flush(60000)) << logging::render_health_json(p->health());
  const auto hs = p->health();
  const Received r = FromScribe(server);
  ExpectEveryEventAccounted(r, first_seq, hs.next_seq - 1, hs.sinks.at(1));
  // The Scribe stream itself carries the degradation, delivered late.
  bool saw = false;
  for (const auto& m : r.OfType("sink_degraded")) saw |= m.at("reason") == "buffer_unwritable";
  EXPECT_TRUE(saw);
  // Once the replay freed the disk, the buffer is writable again.
  EXPECT_TRUE(eventually([&] { return p->health().sinks.at(1).buffer_writable; }, 15s));
}

}  // namespace
}  // namespace tlswall::testing
