// DiskBuffer: segment files written, read back in order, resumed after a
// restart, bounded by a cap that drops the oldest (exactly counted), and
// corrupt data skipped, counted and quarantined instead of crashing.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "logging/disk_buffer.h"
#include "tests/logging/logging_test_support.h"

namespace tlswall::logging {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

std::vector<std::string> Records(int from, int n, size_t pad = 0) {
  std::vector<std::string> r;
  for (int i = from; i < from + n; ++i)
    r.push_back("rec-" + std::to_string(i) + std::string(pad, 'x'));
  return r;
}

DiskBufferOptions Opts(const std::string& dir, uint64_t max = 1 << 20, uint64_t seg = 64 << 10) {
  DiskBufferOptions o;
  o.dir = dir;
  o.max_bytes = max;
  o.segment_bytes = seg;
  return o;
}

// Reads everything, committing as it goes.
std::vector<std::string> Drain(DiskBuffer& b, size_t batch = 7) {
  std::vector<std::string> all, got;
  std::string err;
  for (int guard = 0; guard < 100000; ++guard) {
    EXPECT_TRUE(b.peek(batch, 1 << 20, &got, &err)) << err;
    if (got.empty()) break;
    all.insert(all.end(), got.begin(), got.end());
    b.commit(got.size());
  }
  return all;
}

std::vector<fs::path> Segments(const fs::path& dir) {
  std::vector<fs::path> s;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".twb") s.push_back(e.path());
  }
  std::sort(s.begin(), s.end());
  return s;
}

size_t QuarantineCount(const fs::path& dir) {
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(dir / "quarantine")) {
    (void)e;
    ++n;
  }
  return n;
}

TEST(DiskBuffer, WritesAndReadsBackInOrder) {
  TempDir t;
  DiskBuffer b(Opts(t.str("buf")));
  std::string err;
  ASSERT_TRUE(b.open(&err)) << err;
  EXPECT_TRUE(b.writable());
  ASSERT_TRUE(b.append(Records(0, 10), &err)) << err;
  ASSERT_TRUE(b.append(Records(10, 5), &err)) << err;
  EXPECT_EQ(b.pending_records(), 15u);
  EXPECT_EQ(Drain(b), Records(0, 15));
  EXPECT_EQ(b.pending_records(), 0u);
  EXPECT_EQ(b.lost_to_cap(), 0u);
  EXPECT_EQ(b.lost_to_corruption(), 0u);
}

TEST(DiskBuffer, PeekWithoutCommitReturnsTheSameRecords) {
  TempDir t;
  DiskBuffer b(Opts(t.str()));
  std::string err;
  ASSERT_TRUE(b.open(&err));
  ASSERT_TRUE(b.append(Records(0, 5), &err));
  std::vector<std::string> a, c;
  ASSERT_TRUE(b.peek(3, 1 << 20, &a, &err));
  ASSERT_TRUE(b.peek(3, 1 << 20, &c, &err));
  EXPECT_EQ(a, c);
  b.commit(2);  // partial acceptance
  ASSERT_TRUE(b.peek(10, 1 << 20, &a, &err));
  EXPECT_EQ(a, Records(2, 3));
}

TEST(DiskBuffer, BatchRespectsByteLimitButAlwaysReturnsOneRecord) {
  TempDir t;
  DiskBuffer b(Opts(t.str()));
  std::string err;
  ASSERT_TRUE(b.open(&err));
  ASSERT_TRUE(b.append(Records(0, 4, 1000), &err));
  std::vector<std::string> got;
  ASSERT_TRUE(b.peek(100, 2500, &got, &err));
  EXPECT_EQ(got.size(), 2u);
  ASSERT_TRUE(b.peek(100, 10, &got, &err));
  EXPECT_EQ(got.size(), 1u) << "a record larger than the byte limit must still come out";
}

TEST(DiskBuffer, RollsSegmentsAndDeletesThemOnceRead) {
  TempDir t;
  DiskBuffer b(Opts(t.str(), 1 << 20, 64 << 10));
  std::string err;
  ASSERT_TRUE(b.open(&err));
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(b.append(Records(i * 10, 10, 500), &err)) << err;
  EXPECT_GE(Segments(t.path()).size(), 4u);
  for (const auto& p : Segments(t.path())) EXPECT_LE(fs::file_size(p), 64u << 10) << p;
  const auto all = Drain(b);
  ASSERT_EQ(all.size(), 400u);
  EXPECT_EQ(all.front(), Records(0, 1, 500)[0]);
  EXPECT_EQ(all.back(), Records(399, 1, 500)[0]);
  EXPECT_LE(Segments(t.path()).size(), 1u) << "read segments must be deleted";
  EXPECT_LT(b.bytes(), 1024u);
}

TEST(DiskBuffer, RestartResumesWhereDeliveryStopped) {
  TempDir t;
  std::string err;
  {
    DiskBuffer b(Opts(t.str(), 1 << 20, 64 << 10));
    ASSERT_TRUE(b.open(&err));
    for (int i = 0; i < 20; ++i) ASSERT_TRUE(b.append(Records(i * 10, 10, 400), &err));
    std::vector<std::string> got;
    ASSERT_TRUE(b.peek(37, 1 << 20, &got, &err));
    b.commit(got.size());  // 37 delivered (maybe fewer: batches stop at segment ends)
    const size_t first = got.size();
    ASSERT_TRUE(b.peek(50, 1 << 20, &got, &err));
    b.commit(got.size());
    EXPECT_EQ(b.pending_records(), 200u - first - got.size());
  }
  DiskBuffer b(Opts(t.str(), 1 << 20, 64 << 10));
  ASSERT_TRUE(b.open(&err)) << err;
  const auto rest = Drain(b);
  ASSERT_FALSE(rest.empty());
  // The rest, in order, continuing exactly after the last committed record.
  const std::string& first = rest.front();
  const int from = std::stoi(first.substr(4));
  EXPECT_EQ(rest, Records(from, 200 - from, 400));
  EXPECT_EQ(b.lost_to_corruption(), 0u);
  // And new records continue after the old ones.
  ASSERT_TRUE(b.append(Records(1000, 2), &err));
  EXPECT_EQ(Drain(b), Records(1000, 2));
}

TEST(DiskBuffer, RestartWithEverythingDeliveredStartsEmpty) {
  TempDir t;
  std::string err;
  {
    DiskBuffer b(Opts(t.str()));
    ASSERT_TRUE(b.open(&err));
    ASSERT_TRUE(b.append(Records(0, 3), &err));
    Drain(b);
  }
  DiskBuffer b(Opts(t.str()));
  ASSERT_TRUE(b.open(&err));
  EXPECT_EQ(b.pending_records(), 0u);
  EXPECT_TRUE(Drain(b).empty());
}

TEST(DiskBuffer, CapDropsOldestSegmentsAndCountsExactly) {
  TempDir t;
  // 256 KiB cap, 64 KiB segments; each record ~1 KiB.
  DiskBuffer b(Opts(t.str(), 256 << 10, 64 << 10));
  std::string err;
  ASSERT_TRUE(b.open(&err));
  const int total = 1000;
  for (int i = 0; i < total; i += 10) ASSERT_TRUE(b.append(Records(i, 10, 1000), &err)) << err;
  EXPECT_LE(b.bytes(), 256u << 10);
  EXPECT_GT(b.lost_to_cap(), 0u);
  const auto kept = Drain(b);
  EXPECT_EQ(kept.size() + b.lost_to_cap(), static_cast<size_t>(total))
      << "every record is either delivered or counted as lost";
  // What survives is the newest, in order.
  const int from = std::stoi(kept.front().substr(4));
  EXPECT_EQ(kept, Records(from, total - from, 1000));
}

TEST(DiskBuffer, CapWhileReadingMidSegmentCountsOnlyUnread) {
  TempDir t;
  DiskBuffer b(Opts(t.str(), 256 << 10, 64 << 10));
  std::string err;
  ASSERT_TRUE(b.open(&err));
  for (int i = 0; i < 100; i += 10) ASSERT_TRUE(b.append(Records(i, 10, 1000), &err));
  std::vector<std::string> got;
  ASSERT_TRUE(b.peek(20, 1 << 20, &got, &err));
  b.commit(got.size());
  const size_t delivered = got.size();
  for (int i = 100; i < 1000; i += 10) ASSERT_TRUE(b.append(Records(i, 10, 1000), &err));
  const auto kept = Drain(b);
  EXPECT_EQ(delivered + kept.size() + b.lost_to_cap(), 1000u);
}

// Flips one byte of a file at `off`.
void Corrupt(const fs::path& p, uint64_t off) {
  std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(off));
  char c;
  f.get(c);
  f.seekp(static_cast<std::streamoff>(off));
  f.put(static_cast<char>(c ^ 0x5a));
}

TEST(DiskBuffer, CorruptRecordIsSkippedCountedAndSegmentQuarantined) {
  TempDir t;
  std::string err;
  {
    DiskBuffer b(Opts(t.str(), 1 << 20, 64 << 10));
    ASSERT_TRUE(b.open(&err));
    for (int i = 0; i < 10; ++i) ASSERT_TRUE(b.append(Records(i * 10, 10, 200), &err));
  }
  const auto segs = Segments(t.path());
  ASSERT_FALSE(segs.empty());
  // Damage the payload of the 5th record of the first segment.
  const uint64_t rec = DiskBuffer::kRecordHeaderBytes + Records(0, 1, 200)[0].size();
  Corrupt(segs.front(),
          DiskBuffer::kSegmentHeaderBytes + 4 * rec + DiskBuffer::kRecordHeaderBytes + 3);

  DiskBuffer b(Opts(t.str(), 1 << 20, 64 << 10));
  ASSERT_TRUE(b.open(&err)) << err;
  const auto all = Drain(b);
  EXPECT_EQ(b.lost_to_corruption(), 1u);
  EXPECT_EQ(all.size(), 99u);
  EXPECT_EQ(all[3], Records(3, 1, 200)[0]);
  EXPECT_EQ(all[4], Records(5, 1, 200)[0]) << "reading resumes at the next good record";
  EXPECT_EQ(b.quarantined(), 1u);
  EXPECT_EQ(QuarantineCount(t.path()), 1u);
  EXPECT_FALSE(b.last_warning().empty());
}

// Offset of record k in a segment whose records are `recs`, in order.
uint64_t RecordOffset(const std::vector<std::string>& recs, size_t k) {
  uint64_t off = DiskBuffer::kSegmentHeaderBytes;
  for (size_t j = 0; j < k; ++j) off += DiskBuffer::kRecordHeaderBytes + recs[j].size();
  return off;
}

// Found by the disk_buffer fuzzer (tests/fuzz/regressions/disk_buffer/):
// at a restart the newest segment has a corrupt record and a good one after
// it. The reader delivers the good one; what is appended after the restart
// must be numbered after it, or the reader takes it for delivered and skips
// it without a trace.
TEST(DiskBuffer, RecordsAppendedAfterACorruptTailAreDelivered) {
  TempDir t;
  std::string err;
  const auto recs = Records(0, 3, 10);
  {
    DiskBuffer b(Opts(t.str()));
    ASSERT_TRUE(b.open(&err));
    ASSERT_TRUE(b.append(recs, &err));
  }
  const auto segs = Segments(t.path());
  ASSERT_EQ(segs.size(), 1u);
  Corrupt(segs.front(), RecordOffset(recs, 1) + 5);  // the second record's length

  DiskBuffer b(Opts(t.str()));
  ASSERT_TRUE(b.open(&err)) << err;
  EXPECT_EQ(Drain(b), (std::vector<std::string>{recs[0], recs[2]}));
  EXPECT_EQ(b.lost_to_corruption(), 1u);
  ASSERT_TRUE(b.append(Records(3, 2, 10), &err));
  EXPECT_EQ(b.pending_records(), 2u);
  EXPECT_EQ(Drain(b), Records(3, 2, 10));
}

TEST(DiskBuffer, CorruptRunToTheSegmentEndLosesOnlyThatRun) {
  TempDir t;
  std::string err;
  {
    DiskBuffer b(Opts(t.str(), 1 << 20, 64 << 10));
    ASSERT_TRUE(b.open(&err));
    for (int i = 0; i < 30; ++i) ASSERT_TRUE(b.append(Records(i * 10, 10, 400), &err));
  }
  const auto segs = Segments(t.path());
  ASSERT_GE(segs.size(), 2u);
  const auto recs = Records(0, 300, 400);
  size_t in_first = 0;
  while (in_first < recs.size() &&
         RecordOffset(recs, in_first + 1) <= fs::file_size(segs.front())) {
    ++in_first;
  }
  ASSERT_GT(in_first, 10u);
  // Wreck the magic of every record after the 2nd: nothing to resync to.
  for (size_t k = 2; k < in_first; ++k) Corrupt(segs.front(), RecordOffset(recs, k));
  DiskBuffer b(Opts(t.str(), 1 << 20, 64 << 10));
  ASSERT_TRUE(b.open(&err));
  const auto all = Drain(b);
  EXPECT_EQ(b.lost_to_corruption(), in_first - 2);
  EXPECT_EQ(all.size() + b.lost_to_corruption(), 300u);
  EXPECT_EQ(all[2], recs[in_first]);
  EXPECT_EQ(b.quarantined(), 1u);
}

TEST(DiskBuffer, SegmentWithBadHeaderIsQuarantinedAtOpen) {
  TempDir t;
  std::string err;
  {
    DiskBuffer b(Opts(t.str(), 1 << 20, 64 << 10));
    ASSERT_TRUE(b.open(&err));
    for (int i = 0; i < 50; ++i) ASSERT_TRUE(b.append(Records(i * 10, 10, 400), &err));
  }
  const auto segs = Segments(t.path());
  ASSERT_GE(segs.size(), 3u);
  Corrupt(segs[1], 2);  // magic of the second segment
  DiskBuffer b(Opts(t.str(), 1 << 20, 64 << 10));
  ASSERT_TRUE(b.open(&err)) << err;
  EXPECT_EQ(b.quarantined(), 1u);
  const auto all = Drain(b);
  EXPECT_GT(b.lost_to_corruption(), 0u);
  EXPECT_EQ(all.size() + b.lost_to_corruption(), 500u) << "the lost segment is counted exactly";
}

TEST(DiskBuffer, TornTailAfterCrashIsIgnored) {
  TempDir t;
  std::string err;
  {
    DiskBuffer b(Opts(t.str()));
    ASSERT_TRUE(b.open(&err));
    ASSERT_TRUE(b.append(Records(0, 10), &err));
  }
  const auto segs = Segments(t.path());
  ASSERT_EQ(segs.size(), 1u);
  {
    std::ofstream f(segs[0], std::ios::app | std::ios::binary);
    f << "TWB1\x10\x00";  // a record header cut short
  }
  DiskBuffer b(Opts(t.str()));
  ASSERT_TRUE(b.open(&err)) << err;
  EXPECT_EQ(Drain(b), Records(0, 10));
  ASSERT_TRUE(b.append(Records(10, 2), &err));
  EXPECT_EQ(Drain(b), Records(10, 2));
  EXPECT_EQ(b.lost_to_corruption(), 0u);
}

TEST(DiskBuffer, GarbageFilesAreNotSegments) {
  TempDir t;
  { std::ofstream(t.path() / "notes.txt") << "hello"; }
  { std::ofstream(t.path() / "seg-1.twb") << "short name"; }
  DiskBuffer b(Opts(t.str()));
  std::string err;
  ASSERT_TRUE(b.open(&err)) << err;
  EXPECT_EQ(b.pending_records(), 0u);
  EXPECT_TRUE(fs::exists(t.path() / "notes.txt"));
}

TEST(DiskBuffer, UnusableDirectoryIsReportedNotThrown) {
  TempDir t;
  { std::ofstream(t.path() / "file") << "x"; }
  DiskBuffer b(Opts((t.path() / "file" / "buf").string()));
  std::string err;
  EXPECT_FALSE(b.open(&err));
  EXPECT_FALSE(err.empty());
  EXPECT_FALSE(b.writable());
  EXPECT_FALSE(b.append(Records(0, 1), &err));
  std::vector<std::string> got;
  EXPECT_TRUE(b.peek(10, 1000, &got, &err));
  EXPECT_TRUE(got.empty());
}

TEST(DiskBuffer, QuarantineIsBounded) {
  TempDir t;
  std::string err;
  DiskBufferOptions o = Opts(t.str(), 1 << 20, 64 << 10);
  o.max_quarantined = 2;
  for (int round = 0; round < 4; ++round) {
    {
      DiskBuffer b(o);
      ASSERT_TRUE(b.open(&err));
      ASSERT_TRUE(b.append(Records(0, 5), &err));
    }
    for (const auto& s : Segments(t.path())) Corrupt(s, 0);
  }
  DiskBuffer b(o);
  ASSERT_TRUE(b.open(&err));
  EXPECT_LE(QuarantineCount(t.path()), 2u);
}

}  // namespace
}  // namespace tlswall::logging
