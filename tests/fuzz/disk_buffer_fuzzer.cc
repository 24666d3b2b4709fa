// libFuzzer target: the disk buffer's segment reader (logging/disk_buffer).
// The input is the bytes of a segment file found in the buffer directory
// at start-up, as a crash, a torn write or a bad disk may leave it. The
// real DiskBuffer opens the directory and reads everything back (peek and
// commit, in batches whose sizes come from the input's length), then
// appends two records and must read exactly those next. It must reject
// (quarantine, skip, count as lost) or read, never crash, hang or read past
// what it holds. Checked besides the sanitizers:
//  - every record read back is one the reader could have found in the file
//    (its payload occurs in the input), or one of the two appended after;
//  - after the appended records nothing is pending.
// Files live in a private directory under $TMPDIR (or /tmp), removed at exit.
//
// TLSWALL_FUZZ_WRITE_SEEDS=DIR: writes the seed corpus instead (segment
// files as DiskBuffer writes them; corpus/disk_buffer/) and exits.
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "logging/disk_buffer.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

namespace fs = std::filesystem;
using tlswall::logging::DiskBuffer;
using tlswall::logging::DiskBufferOptions;

std::string g_root;

void RemoveRoot() {
  std::error_code ec;
  if (!g_root.empty()) fs::remove_all(g_root, ec);
}

void WriteFile(const std::string& path, const uint8_t* data, size_t size) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  FUZZ_CHECK(fd >= 0);
  size_t off = 0;
  while (off < size) {
    const ssize_t n = ::write(fd, data + off, size - off);
    FUZZ_CHECK(n > 0);
    off += static_cast<size_t>(n);
  }
  ::close(fd);
}

std::string ReadFile(const std::string& path) {
  std::string bytes;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  FUZZ_CHECK(fd >= 0);
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) bytes.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return bytes;
}

// The newest segment file of a buffer directory.
std::string NewestSegment(const std::string& dir) {
  std::string newest;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("seg-", 0) == 0 && name > fs::path(newest).filename().string()) {
      newest = e.path().string();
    }
  }
  FUZZ_CHECK(!newest.empty());
  return newest;
}

void Seed(const std::string& out, const std::string& name, const std::string& bytes) {
  WriteFile(out + "/" + name, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

// Segment files as the writer leaves them: records of several sizes, an
// empty segment, one that starts after records an earlier run delivered,
// and one torn mid-record (a crash during append).
void WriteSeeds(const std::string& out) {
  const std::string dir = g_root + "/seeds";
  DiskBufferOptions o;
  o.dir = dir;
  std::string error;
  {
    DiskBuffer b(o);
    FUZZ_CHECK(b.open(&error));
    Seed(out, "empty.twb", ReadFile(NewestSegment(dir)));
    FUZZ_CHECK(b.append({R"({"type":"flow_verdict","rule":"db-tls"})", "second", ""}, &error));
    const std::string three = ReadFile(NewestSegment(dir));
    Seed(out, "three-records.twb", three);
    Seed(out, "torn.twb", three.substr(0, three.size() - 7));
    FUZZ_CHECK(b.append({std::string(1000, 'x')}, &error));
    Seed(out, "large-record.twb", ReadFile(NewestSegment(dir)));
    std::vector<std::string> got;
    FUZZ_CHECK(b.peek(100, 1 << 20, &got, &error));
    b.commit(got.size());
  }
  {
    DiskBuffer b(o);  // a restart: the next segment continues the numbering
    FUZZ_CHECK(b.open(&error));
    FUZZ_CHECK(b.append({"after restart", "and one more"}, &error));
    Seed(out, "after-restart.twb", ReadFile(NewestSegment(dir)));
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/tlswall-fuzz-buffer-XXXXXX";
  FUZZ_CHECK(::mkdtemp(tmpl.data()) != nullptr);
  g_root = tmpl;
  std::atexit(RemoveRoot);
  if (const char* seeds = std::getenv("TLSWALL_FUZZ_WRITE_SEEDS")) {
    WriteSeeds(seeds);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string dir = g_root + "/buf";
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir, ec);
  FUZZ_CHECK(!ec);
  WriteFile(dir + "/seg-00000000000000000001.twb", data, size);
  const std::string input(reinterpret_cast<const char*>(data), size);

  DiskBufferOptions o;
  o.dir = dir;
  o.max_bytes = 1u << 20;
  o.segment_bytes = 64u << 10;
  DiskBuffer b(o);
  std::string error;
  FUZZ_CHECK(b.open(&error));

  // Batch limits from the input's length: small and large batches both.
  const size_t max_records = 1 + size % 7;
  const size_t max_bytes = 1 + (size * 31) % 4096;
  std::vector<std::string> out;
  size_t read = 0;
  for (int round = 0;; ++round) {
    FUZZ_CHECK(round < 100000);  // each round consumes a record or ends
    FUZZ_CHECK(b.peek(max_records, max_bytes, &out, &error));
    if (out.empty()) break;
    FUZZ_CHECK(out.size() <= max_records);
    for (const std::string& rec : out) {
      FUZZ_CHECK(input.find(rec) != std::string::npos);
      ++read;
    }
    b.commit(out.size());
  }
  FUZZ_CHECK(read <= size / DiskBuffer::kRecordHeaderBytes);

  // The buffer still works: what is appended now is what is read next.
  const std::vector<std::string> fresh = {"first appended record", "second"};
  FUZZ_CHECK(b.append(fresh, &error));
  FUZZ_CHECK(b.pending_records() == 2);
  FUZZ_CHECK(b.peek(10, 1 << 20, &out, &error));
  FUZZ_CHECK(out == fresh);
  b.commit(out.size());
  FUZZ_CHECK(b.pending_records() == 0);
  FUZZ_CHECK(b.peek(10, 1 << 20, &out, &error));
  FUZZ_CHECK(out.empty());
  return 0;
}
