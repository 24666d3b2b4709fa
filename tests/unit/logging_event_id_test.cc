// EventIdSource: ids are "<host_id>-<seq>", seq increases by one, and a
// restart never reuses a number, whether or not state_dir is writable.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "logging/event_id.h"
#include "tests/logging/logging_test_support.h"

namespace tlswall::logging {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

EventIdSource::Options Opts(const std::string& dir, uint64_t now_us, uint64_t block = 100) {
  EventIdSource::Options o;
  o.state_dir = dir;
  o.machine_id_path = dir + "/no-machine-id";
  o.block = block;
  o.now_us = [now_us] { return now_us; };
  return o;
}

TEST(EventIdSource, IdsAreHostIdDashSeqAndIncreaseByOne) {
  TempDir t;
  auto o = Opts(t.str(), 5000);
  o.host_id = "web1";
  EventIdSource ids(o);
  EXPECT_TRUE(ids.persistent());
  const auto a = ids.next();
  const auto b = ids.next();
  EXPECT_EQ(a.seq, 5000u);
  EXPECT_EQ(a.id, "web1-5000");
  EXPECT_EQ(b.seq, 5001u);
  EXPECT_EQ(b.id, "web1-5001");
}

TEST(EventIdSource, HostIdFromMachineIdElsePersistedRandom) {
  TempDir t;
  {
    std::ofstream(t.path() / "machine-id") << "0123456789abcdef0123456789abcdef\n";
    auto o = Opts(t.str(), 1);
    o.machine_id_path = t.str("machine-id");
    EXPECT_EQ(EventIdSource(o).host_id(), "0123456789abcdef0123456789abcdef");
  }
  TempDir u;
  std::string first;
  {
    EventIdSource ids(Opts(u.str(), 1));
    first = ids.host_id();
    EXPECT_EQ(first.size(), 32u);
  }
  EventIdSource again(Opts(u.str(), 1));
  EXPECT_EQ(again.host_id(), first) << "a generated host id must survive restarts";
}

TEST(EventIdSource, RestartNeverReusesASequenceNumberEvenWithAClockBehind) {
  TempDir t;
  std::set<uint64_t> seen;
  uint64_t last = 0;
  for (int run = 0; run < 5; ++run) {
    // The clock says 10 every time (or went backwards): the persisted
    // high-water mark must still move the sequence forward.
    EventIdSource ids(Opts(t.str(), 10, 64));
    for (int i = 0; i < 150; ++i) {
      const auto id = ids.next();
      EXPECT_TRUE(seen.insert(id.seq).second) << "reused " << id.seq << " in run " << run;
      EXPECT_GT(id.seq, last);
      last = id.seq;
    }
  }
}

TEST(EventIdSource, UnwritableStateStillGivesUniqueIdsFromTheClock) {
  TempDir t;
  { std::ofstream(t.path() / "file") << "x"; }
  const std::string bad = (t.path() / "file" / "state").string();
  EventIdSource a(Opts(bad, 1000));
  EXPECT_FALSE(a.persistent());
  EXPECT_FALSE(a.last_error().empty());
  uint64_t last = 0;
  for (int i = 0; i < 10; ++i) last = a.next().seq;
  // A restart later (the clock moved on) starts beyond anything used.
  EventIdSource b(Opts(bad, 2000));
  EXPECT_GT(b.next().seq, last);
}

TEST(EventIdSource, CorruptStateFileIsIgnoredNotFatal) {
  TempDir t;
  { std::ofstream(t.path() / "event_seq") << "not a number\n"; }
  EventIdSource ids(Opts(t.str(), 777));
  EXPECT_EQ(ids.next().seq, 777u);
  EXPECT_TRUE(ids.persistent());
}

TEST(WriteFileAtomically, ReplacesContentAndLeavesNoTemp) {
  TempDir t;
  const std::string p = t.str("f");
  EXPECT_EQ(write_file_atomically(p, "one\n"), "");
  EXPECT_EQ(write_file_atomically(p, "two\n"), "");
  std::ifstream in(p);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "two");
  EXPECT_FALSE(fs::exists(p + ".tmp"));
  EXPECT_NE(write_file_atomically(t.str("missing/dir/f"), "x"), "");
}

}  // namespace
}  // namespace tlswall::logging
