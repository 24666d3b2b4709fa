// PolicyWatcher against real inotify in a temporary directory: rename-over
// writes, a Kubernetes-style `..data` symlink swap, a swapped policy-path
// symlink, a slow in-place write, touch without a content change, delete and
// recreate, a replaced parent directory, bursts and a continuous stream
// (debounce and its ceiling), queue overflow, and the polling fallback.
// The watcher is driven as the daemon drives it: poll(fd) with the timeout
// from next_deadline(), on_readable(), take_change().
#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "agent/owned_fd.h"
#include "agent/watch/policy_watcher.h"

namespace tlswall::agent {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// The policy hash as policy/policy_loader.cc defines it, written here from
// its definition: sha256 over (base name, NUL, decimal length, NUL, bytes)
// per file, in base-name order.
std::string policy_hash(const std::map<std::string, std::string>& files) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  for (const auto& [name, bytes] : files) {
    const std::string len = std::to_string(bytes.size());
    EVP_DigestUpdate(ctx, name.data(), name.size());
    EVP_DigestUpdate(ctx, "\0", 1);
    EVP_DigestUpdate(ctx, len.data(), len.size());
    EVP_DigestUpdate(ctx, "\0", 1);
    EVP_DigestUpdate(ctx, bytes.data(), bytes.size());
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx, md, &n);
  EVP_MD_CTX_free(ctx);
  std::string hex;
  static const char kHex[] = "0123456789abcdef";
  for (unsigned int i = 0; i < n; ++i) {
    hex += kHex[md[i] >> 4];
    hex += kHex[md[i] & 15];
  }
  return hex;
}

void write_file(const std::string& path, const std::string& content) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << content;
}

// Config management's way: a temporary name in the same directory, renamed over.
void write_by_rename(const std::string& path, const std::string& content) {
  const std::string tmp =
      fs::path(path).parent_path() / ("." + fs::path(path).filename().string() + ".tmp");
  write_file(tmp, content);
  ASSERT_EQ(::rename(tmp.c_str(), path.c_str()), 0) << std::strerror(errno);
}

std::string policy_text(const std::string& version) {
  return "version = \"" + version + "\"\n[[boundary]]\nname = \"internet\"\n";
}

struct Change {
  Clock::time_point at;
  bool missing;
  std::string fingerprint;
  std::string content_hash_now;  // what the files held when it was reported
};

class PolicyWatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tw_pw_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr) << std::strerror(errno);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // Drives `w` for `duration` like the daemon's loop; `probe` computes the
  // content hash at the moment a change is reported.
  std::vector<Change> pump(PolicyWatcher& w, milliseconds duration,
                           const std::function<std::string()>& probe = nullptr) {
    std::vector<Change> out;
    const Clock::time_point end = Clock::now() + duration;
    for (Clock::time_point now = Clock::now(); now < end; now = Clock::now()) {
      Clock::time_point until = end;
      if (auto d = w.next_deadline()) until = std::max(now, std::min(until, *d));
      const int timeout = static_cast<int>(std::chrono::ceil<milliseconds>(until - now).count());
      if (w.fd() >= 0) {
        pollfd p{w.fd(), POLLIN, 0};
        if (::poll(&p, 1, timeout) > 0) w.on_readable();
      } else {
        std::this_thread::sleep_for(milliseconds(timeout));
      }
      if (w.take_change()) {
        out.push_back({Clock::now(), w.missing(), w.fingerprint(), probe ? probe() : ""});
      }
    }
    return out;
  }

  std::string dir_;
};

TEST_F(PolicyWatcherTest, FingerprintIsThePolicyHash) {
  const std::string pd = dir_ + "/policy.d";
  fs::create_directory(pd);
  write_file(pd + "/b.toml", policy_text("b"));
  write_file(pd + "/a.toml", policy_text("a"));
  write_file(pd + "/.hidden.toml", "ignored");
  write_file(pd + "/notes.txt", "ignored");
  const PolicyFingerprint fp = fingerprint_policy_path(pd);
  EXPECT_FALSE(fp.missing);
  EXPECT_TRUE(fp.directory);
  EXPECT_EQ(fp.files, 2u);
  EXPECT_EQ(fp.hash, policy_hash({{"a.toml", policy_text("a")}, {"b.toml", policy_text("b")}}));
  // A file path hashes its own base name.
  EXPECT_EQ(fingerprint_policy_path(pd + "/a.toml").hash,
            policy_hash({{"a.toml", policy_text("a")}}));
  EXPECT_TRUE(fingerprint_policy_path(dir_ + "/nope").missing);

  PolicyWatcher w(pd);
  EXPECT_FALSE(w.degraded()) << w.status();
  EXPECT_EQ(w.fingerprint(), fp.hash);
  EXPECT_EQ(w.files(), 2u);
  EXPECT_NE(w.status().find("watching " + pd + " (directory, 2 files"), std::string::npos)
      << w.status();
  EXPECT_TRUE(pump(w, milliseconds(300)).empty()) << "the initial content counts as reported";
}

TEST_F(PolicyWatcherTest, RenameOverFileIsReportedOnce) {
  const std::string file = dir_ + "/policy.toml";
  write_file(file, policy_text("1"));
  PolicyWatcher w(file);
  const Clock::time_point t0 = Clock::now();
  write_by_rename(file, policy_text("2"));
  const auto changes = pump(w, milliseconds(1000));
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_FALSE(changes[0].missing);
  EXPECT_EQ(changes[0].fingerprint, policy_hash({{"policy.toml", policy_text("2")}}));
  EXPECT_GE(changes[0].at - t0, milliseconds(200)) << "debounced";
  EXPECT_LT(changes[0].at - t0, milliseconds(950));
  // A second rename-over still seen (the new inode is watched via the parent).
  write_by_rename(file, policy_text("3"));
  const auto again = pump(w, milliseconds(800));
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].fingerprint, policy_hash({{"policy.toml", policy_text("3")}}));
}

TEST_F(PolicyWatcherTest, RenameIntoDirectoryIsReportedOnce) {
  const std::string pd = dir_ + "/policy.d";
  fs::create_directory(pd);
  write_file(pd + "/a.toml", policy_text("a1"));
  PolicyWatcher w(pd);
  write_by_rename(pd + "/a.toml", policy_text("a2"));
  write_by_rename(pd + "/b.toml", policy_text("b1"));
  const auto changes = pump(w, milliseconds(1000));
  ASSERT_EQ(changes.size(), 1u) << "two files renamed in one burst: one change";
  EXPECT_EQ(changes[0].fingerprint,
            policy_hash({{"a.toml", policy_text("a2")}, {"b.toml", policy_text("b1")}}));
  EXPECT_EQ(w.files(), 2u);
  // Deleting one file is a change too.
  ASSERT_EQ(::unlink((pd + "/b.toml").c_str()), 0);
  const auto del = pump(w, milliseconds(800));
  ASSERT_EQ(del.size(), 1u);
  EXPECT_EQ(del[0].fingerprint, policy_hash({{"a.toml", policy_text("a2")}}));
}

// The layout a kubelet gives a ConfigMap volume:
//   ..2026_11_21_a/policy.toml, ..data -> ..2026_11_21_a, policy.toml -> ..data/policy.toml
TEST_F(PolicyWatcherTest, ConfigMapDataSymlinkSwapIsReportedOnceAndNewTargetWatched) {
  const std::string pd = dir_ + "/cm";
  fs::create_directories(pd + "/..2026_11_21_a");
  write_file(pd + "/..2026_11_21_a/policy.toml", policy_text("a"));
  fs::create_directory_symlink("..2026_11_21_a", pd + "/..data");
  fs::create_symlink("..data/policy.toml", pd + "/policy.toml");
  PolicyWatcher w(pd);
  EXPECT_EQ(w.fingerprint(), policy_hash({{"policy.toml", policy_text("a")}}));

  // The swap: new directory, `ln -s new ..data_tmp && mv -T ..data_tmp ..data`,
  // old directory removed.
  fs::create_directories(pd + "/..2026_11_21_b");
  write_file(pd + "/..2026_11_21_b/policy.toml", policy_text("b"));
  fs::create_directory_symlink("..2026_11_21_b", pd + "/..data_tmp");
  ASSERT_EQ(::rename((pd + "/..data_tmp").c_str(), (pd + "/..data").c_str()), 0);
  fs::remove_all(pd + "/..2026_11_21_a");
  auto changes = pump(w, milliseconds(1000));
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].fingerprint, policy_hash({{"policy.toml", policy_text("b")}}));

  // A later change inside the new target directory is still seen.
  write_by_rename(pd + "/..2026_11_21_b/policy.toml", policy_text("b2"));
  changes = pump(w, milliseconds(1000));
  ASSERT_EQ(changes.size(), 1u) << w.status();
  EXPECT_EQ(changes[0].fingerprint, policy_hash({{"policy.toml", policy_text("b2")}}));

  // A new file added by the next swap appears with it.
  fs::create_directories(pd + "/..2026_11_21_c");
  write_file(pd + "/..2026_11_21_c/policy.toml", policy_text("c"));
  write_file(pd + "/..2026_11_21_c/extra.toml", policy_text("x"));
  fs::create_symlink("..data/extra.toml", pd + "/extra.toml");
  fs::create_directory_symlink("..2026_11_21_c", pd + "/..data_tmp");
  ASSERT_EQ(::rename((pd + "/..data_tmp").c_str(), (pd + "/..data").c_str()), 0);
  changes = pump(w, milliseconds(1000));
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].fingerprint,
            policy_hash({{"extra.toml", policy_text("x")}, {"policy.toml", policy_text("c")}}));
}

TEST_F(PolicyWatcherTest, PolicyPathSymlinkSwapIsReported) {
  fs::create_directories(dir_ + "/v1");
  fs::create_directories(dir_ + "/v2");
  write_file(dir_ + "/v1/p.toml", policy_text("v1"));
  write_file(dir_ + "/v2/p.toml", policy_text("v2"));
  fs::create_directory_symlink("v1", dir_ + "/current");
  PolicyWatcher w(dir_ + "/current");
  fs::create_directory_symlink("v2", dir_ + "/current.tmp");
  ASSERT_EQ(::rename((dir_ + "/current.tmp").c_str(), (dir_ + "/current").c_str()), 0);
  auto changes = pump(w, milliseconds(1000));
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].fingerprint, policy_hash({{"p.toml", policy_text("v2")}}));
  // The old target is no longer what counts; the new one is watched.
  write_by_rename(dir_ + "/v1/p.toml", policy_text("v1b"));
  EXPECT_TRUE(pump(w, milliseconds(600)).empty());
  write_by_rename(dir_ + "/v2/p.toml", policy_text("v2b"));
  changes = pump(w, milliseconds(1000));
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].fingerprint, policy_hash({{"p.toml", policy_text("v2b")}}));
}

TEST_F(PolicyWatcherTest, SlowInPlaceWriteIsReportedOnceAfterCloseWithFinalContent) {
  const std::string file = dir_ + "/policy.toml";
  write_file(file, policy_text("old"));
  PolicyWatcher w(file);
  const std::string final_text = policy_text("new-and-longer-than-before") + "# tail\n";
  const std::string half = final_text.substr(0, final_text.size() / 2);
  auto probe = [&] { return fingerprint_policy_path(file).hash; };

  OwnedFd f(::open(file.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
  ASSERT_GE(f.get(), 0);
  ASSERT_EQ(::write(f.get(), half.data(), half.size()), static_cast<ssize_t>(half.size()));
  // The writer pauses mid-file longer than the debounce: nothing may be reported.
  EXPECT_TRUE(pump(w, milliseconds(300), probe).empty());
  const std::string rest = final_text.substr(half.size());
  ASSERT_EQ(::write(f.get(), rest.data(), rest.size()), static_cast<ssize_t>(rest.size()));
  EXPECT_TRUE(pump(w, milliseconds(100), probe).empty());
  const Clock::time_point closed = Clock::now();
  f.reset();
  const auto changes = pump(w, milliseconds(1000), probe);
  ASSERT_EQ(changes.size(), 1u);
  const std::string final_hash = policy_hash({{"policy.toml", final_text}});
  EXPECT_EQ(changes[0].fingerprint, final_hash);
  EXPECT_EQ(changes[0].content_hash_now, final_hash);
  EXPECT_GE(changes[0].at - closed, milliseconds(200));
}

TEST_F(PolicyWatcherTest, TouchAndIdenticalRewriteReportNothing) {
  const std::string pd = dir_ + "/policy.d";
  fs::create_directory(pd);
  write_file(pd + "/a.toml", policy_text("a"));
  PolicyWatcher w(pd);
  const uint64_t checks = w.stats().checks;
  ASSERT_EQ(::utimensat(AT_FDCWD, (pd + "/a.toml").c_str(), nullptr, 0), 0);  // touch
  EXPECT_TRUE(pump(w, milliseconds(600)).empty());
  EXPECT_GT(w.stats().events, 0u) << "the notification arrived";
  EXPECT_GT(w.stats().checks, checks) << "and the content was compared";
  write_by_rename(pd + "/a.toml", policy_text("a"));  // same bytes, new inode
  ASSERT_EQ(::chmod((pd + "/a.toml").c_str(), 0640), 0);
  EXPECT_TRUE(pump(w, milliseconds(600)).empty());
  // Files that are not policy (hidden, not *.toml) change nothing.
  write_file(pd + "/README", "x");
  write_by_rename(pd + "/.swap.toml", "x");
  EXPECT_TRUE(pump(w, milliseconds(600)).empty());
}

TEST_F(PolicyWatcherTest, DeletedFileIsMissingThenComesBack) {
  const std::string file = dir_ + "/policy.toml";
  write_file(file, policy_text("1"));
  PolicyWatcher w(file);
  ASSERT_EQ(::unlink(file.c_str()), 0);
  auto changes = pump(w, milliseconds(800));
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_TRUE(changes[0].missing);
  EXPECT_TRUE(w.missing());
  EXPECT_EQ(w.fingerprint(), "");
  EXPECT_EQ(w.status().rfind("missing: " + file, 0), 0u) << w.status();
  EXPECT_TRUE(pump(w, milliseconds(400)).empty()) << "missing is reported once";
  write_by_rename(file, policy_text("2"));
  changes = pump(w, milliseconds(800));
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_FALSE(changes[0].missing);
  EXPECT_EQ(changes[0].fingerprint, policy_hash({{"policy.toml", policy_text("2")}}));
}

TEST_F(PolicyWatcherTest, DeletedDirectoryAndItsParentComeBack) {
  const std::string pd = dir_ + "/etc/policy.d";
  fs::create_directories(pd);
  write_file(pd + "/a.toml", policy_text("a"));
  PolicyWatcher w(pd);
  fs::remove_all(dir_ + "/etc");
  auto changes = pump(w, milliseconds(800));
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_TRUE(changes[0].missing);
  EXPECT_NE(w.status().find("watching " + dir_ + " for it"), std::string::npos) << w.status();
  // Back, one level at a time, the file written in place.
  fs::create_directories(pd);
  write_file(pd + "/a.toml", policy_text("back"));
  changes = pump(w, milliseconds(1000));
  ASSERT_EQ(changes.size(), 1u) << w.status();
  EXPECT_FALSE(changes[0].missing);
  EXPECT_EQ(changes[0].fingerprint, policy_hash({{"a.toml", policy_text("back")}}));
}

TEST_F(PolicyWatcherTest, ReplacedParentDirectoryIsFollowed) {
  const std::string etc = dir_ + "/etc";
  fs::create_directories(etc);
  write_file(etc + "/policy.toml", policy_text("1"));
  PolicyWatcher w(etc + "/policy.toml");
  // The whole directory swapped for a new one.
  fs::create_directories(dir_ + "/etc.new");
  write_file(dir_ + "/etc.new/policy.toml", policy_text("2"));
  ASSERT_EQ(::rename(etc.c_str(), (dir_ + "/etc.old").c_str()), 0);
  ASSERT_EQ(::rename((dir_ + "/etc.new").c_str(), etc.c_str()), 0);
  auto changes = pump(w, milliseconds(1000));
  ASSERT_EQ(changes.size(), 1u) << w.status();
  EXPECT_EQ(changes[0].fingerprint, policy_hash({{"policy.toml", policy_text("2")}}));
  // The old directory no longer counts, the new one does.
  write_by_rename(dir_ + "/etc.old/policy.toml", policy_text("old"));
  EXPECT_TRUE(pump(w, milliseconds(600)).empty());
  write_by_rename(etc + "/policy.toml", policy_text("3"));
  changes = pump(w, milliseconds(1000));
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].fingerprint, policy_hash({{"policy.toml", policy_text("3")}}));
}

TEST_F(PolicyWatcherTest, ContinuousStreamIsReportedWithinMaxDelay) {
  const std::string file = dir_ + "/policy.toml";
  write_file(file, policy_text("0"));
  PolicyWatcherOptions o;
  o.quiet = milliseconds(200);
  o.max_delay = milliseconds(1000);
  PolicyWatcher w(file, o);
  // A write every 50 ms for 1.6 s: never 200 ms of quiet.
  std::vector<Change> changes;
  const Clock::time_point t0 = Clock::now();
  for (int i = 1; i <= 32; ++i) {
    write_by_rename(file, policy_text(std::to_string(i)));
    auto c = pump(w, milliseconds(50));
    changes.insert(changes.end(), c.begin(), c.end());
  }
  auto tail = pump(w, milliseconds(600));
  changes.insert(changes.end(), tail.begin(), tail.end());
  ASSERT_GE(changes.size(), 2u) << "one forced by max_delay, one after the stream settled";
  EXPECT_GE(changes[0].at - t0, milliseconds(950));
  EXPECT_LT(changes[0].at - t0, milliseconds(1600));
  EXPECT_EQ(changes.back().fingerprint, policy_hash({{"policy.toml", policy_text("32")}}));
}

TEST_F(PolicyWatcherTest, QueueOverflowIsTreatedAsAChange) {
  std::ifstream q("/proc/sys/fs/inotify/max_queued_events");
  long max_queued = 0;
  q >> max_queued;
  if (max_queued <= 0 || max_queued > 200000) GTEST_SKIP() << "max_queued_events " << max_queued;
  const std::string pd = dir_ + "/policy.d";
  fs::create_directory(pd);
  write_file(pd + "/a.toml", policy_text("a"));
  write_file(pd + "/b.toml", policy_text("b"));
  PolicyWatcher w(pd);
  write_by_rename(pd + "/a.toml", policy_text("a2"));
  // Alternating attribute changes are not merged by inotify: overflow the queue.
  for (long i = 0; i < max_queued / 2 + 1000; ++i) {
    ::utimensat(AT_FDCWD, (pd + "/a.toml").c_str(), nullptr, 0);
    ::utimensat(AT_FDCWD, (pd + "/b.toml").c_str(), nullptr, 0);
  }
  const auto changes = pump(w, milliseconds(1000));
  EXPECT_GE(w.stats().overflows, 1u);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].fingerprint,
            policy_hash({{"a.toml", policy_text("a2")}, {"b.toml", policy_text("b")}}));
}

TEST_F(PolicyWatcherTest, PollingOnlyWhenInotifyIsOff) {
  const std::string file = dir_ + "/policy.toml";
  write_file(file, policy_text("1"));
  PolicyWatcherOptions o;
  o.use_inotify = false;
  o.poll_interval = milliseconds(150);
  PolicyWatcher w(file, o);
  EXPECT_EQ(w.fd(), -1);
  EXPECT_FALSE(w.degraded());
  EXPECT_TRUE(w.polling());
  EXPECT_NE(w.status().find("polling every 150 ms (inotify off)"), std::string::npos) << w.status();
  ASSERT_TRUE(w.next_deadline().has_value());
  EXPECT_TRUE(pump(w, milliseconds(400)).empty());
  write_by_rename(file, policy_text("2"));
  const auto changes = pump(w, milliseconds(500));
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].fingerprint, policy_hash({{"policy.toml", policy_text("2")}}));
}

TEST_F(PolicyWatcherTest, InotifyFailureDegradesToPolling) {
  const std::string file = dir_ + "/policy.toml";
  write_file(file, policy_text("1"));
  // Exhaust the fd table so that inotify_init1 fails (EMFILE).
  rlimit old{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &old), 0);
  rlimit low = old;
  low.rlim_cur = 64;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  std::vector<OwnedFd> fillers;
  for (;;) {
    OwnedFd f(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (f.get() < 0) break;
    fillers.push_back(std::move(f));
  }
  PolicyWatcherOptions o;
  o.poll_interval = milliseconds(150);
  auto w = std::make_unique<PolicyWatcher>(file, o);
  fillers.clear();
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &old), 0);

  EXPECT_EQ(w->fd(), -1);
  EXPECT_TRUE(w->degraded());
  EXPECT_EQ(w->status().rfind("degraded: inotify_init1: ", 0), 0u) << w->status();
  ASSERT_TRUE(w->next_deadline().has_value());
  // The first fingerprint could not open the file either (same EMFILE): the
  // next poll corrects it. Then changes are seen by polling.
  pump(*w, milliseconds(400));
  EXPECT_EQ(w->fingerprint(), policy_hash({{"policy.toml", policy_text("1")}}));
  write_by_rename(file, policy_text("2"));
  const auto changes = pump(*w, milliseconds(500));
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].fingerprint, policy_hash({{"policy.toml", policy_text("2")}}));
}

}  // namespace
}  // namespace tlswall::agent
