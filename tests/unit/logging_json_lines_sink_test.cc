// JsonLinesSink: one JSON object per line in a file under a temporary
// directory, counted; an unopenable path is a start-up error naming it.
#include <gtest/gtest.h>

#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "logging/json_lines_sink.h"

namespace tlswall::logging {
namespace {

namespace fs = std::filesystem;

class JsonLinesSinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "tw_sink_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << std::strerror(errno);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  fs::path dir_;
};

Event Sample(int i) {
  Event e;
  e.type = EventType::kPlaintextReported;
  e.severity = Severity::kWarning;
  e.time = std::chrono::system_clock::time_point{} + std::chrono::hours(24 * 365 * 56);
  e.flow = FlowEndpoints{4, "10.0.0." + std::to_string(i), 40000, "10.1.2.3", 5432};
  e.action = "report";
  e.reason = "not_handshake_record";
  e.rule = "db-tls";
  e.message = "line\nbreak";  // must not split the record
  return e;
}

std::vector<std::string> Lines(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

TEST_F(JsonLinesSinkTest, WritesOneObjectPerLineAndCounts) {
  const fs::path path = dir_ / "events.jsonl";
  {
    JsonLinesSink sink(path.string(), "web-1", "0.1.0");
    EXPECT_EQ(sink.path(), path.string());
    for (int i = 0; i < 3; ++i) sink.write(Sample(i));
    sink.flush();
    EXPECT_EQ(sink.written(), 3u);
    EXPECT_EQ(sink.failed(), 0u);
  }
  const auto lines = Lines(path);
  ASSERT_EQ(lines.size(), 3u);
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& l = lines[i];
    EXPECT_EQ(l.front(), '{') << l;
    EXPECT_EQ(l.back(), '}') << l;
    EXPECT_EQ(l, render_json(Sample(static_cast<int>(i)), "web-1", "0.1.0"));
    EXPECT_NE(l.find("\"src\":\"10.0.0." + std::to_string(i) + "\""), std::string::npos) << l;
    EXPECT_NE(l.find("\"host\":\"web-1\""), std::string::npos) << l;
  }
}

TEST_F(JsonLinesSinkTest, LinesAreVisibleWithoutAnExplicitFlush) {
  // Events are evidence: each must reach the file as it is written, not
  // when the daemon exits.
  const fs::path path = dir_ / "events.jsonl";
  JsonLinesSink sink(path.string(), "h", "v");
  sink.write(Sample(1));
  EXPECT_EQ(Lines(path).size(), 1u);
}

TEST_F(JsonLinesSinkTest, AppendsToAnExistingFile) {
  const fs::path path = dir_ / "events.jsonl";
  {
    std::ofstream f(path);
    f << "{\"earlier\":true}\n";
  }
  {
    JsonLinesSink sink(path.string(), "h", "v");
    sink.write(Sample(0));
  }
  const auto lines = Lines(path);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "{\"earlier\":true}");
}

TEST_F(JsonLinesSinkTest, CreatesParentDirectories) {
  const fs::path path = dir_ / "var" / "log" / "tlswall" / "events.jsonl";
  JsonLinesSink sink(path.string(), "h", "v");
  sink.write(Sample(0));
  EXPECT_TRUE(fs::is_regular_file(path));
  EXPECT_EQ(sink.written(), 1u);
}

TEST_F(JsonLinesSinkTest, RotatesBySize) {
  const fs::path path = dir_ / "events.jsonl";
  const size_t line = render_json(Sample(0), "h", "v").size() + 1;
  {
    JsonLinesSink sink(path.string(), "h", "v", /*max_bytes=*/line * 3, /*max_files=*/2);
    for (int i = 0; i < 20; ++i) sink.write(Sample(i % 10));
    EXPECT_EQ(sink.written(), 20u);
  }
  size_t files = 0, bytes = 0;
  for (const auto& f : fs::directory_iterator(dir_)) {
    ++files;
    bytes += fs::file_size(f.path());
    EXPECT_LE(fs::file_size(f.path()), line * 3) << f.path();
  }
  EXPECT_GE(files, 2u) << "never rotated";
  EXPECT_LE(files, 3u) << "kept more than max_files rotated files";
  EXPECT_LT(bytes, line * 20) << "old data was not dropped";
}

TEST_F(JsonLinesSinkTest, UnopenablePathThrowsWithThePath) {
  // A parent that is a regular file cannot become a directory, root or not.
  const fs::path blocker = dir_ / "not-a-dir";
  { std::ofstream(blocker) << "x"; }
  const std::string path = (blocker / "events.jsonl").string();
  try {
    JsonLinesSink sink(path, "h", "v");
    FAIL() << "opened " << path;
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST_F(JsonLinesSinkTest, DirectoryAsPathThrowsWithThePath) {
  const fs::path path = dir_ / "a-directory";
  fs::create_directory(path);
  try {
    JsonLinesSink sink(path.string(), "h", "v");
    FAIL() << "opened a directory as the events file";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
  }
}

TEST_F(JsonLinesSinkTest, FailedWritesAreCountedNotThrown) {
  // /dev/full accepts open() and fails every write with ENOSPC.
  if (::access("/dev/full", W_OK) != 0) GTEST_SKIP() << "/dev/full not writable here";
  JsonLinesSink sink("/dev/full", "h", "v");
  EXPECT_NO_THROW(sink.write(Sample(0)));
  EXPECT_NO_THROW(sink.write(Sample(1)));
  EXPECT_EQ(sink.failed(), 2u);
  EXPECT_EQ(sink.written(), 0u);
}

}  // namespace
}  // namespace tlswall::logging
