// The policy's file trust (agent/path_trust.h): whoever can write the
// policy controls what is blocked, so a group- or world-writable policy
// file or directory, one owned by another user, or one reached through such
// a directory, is refused; a sticky /tmp on the way is fine; symlinks are
// judged by what they point at. Ownership cases need root (chown).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "agent/path_trust.h"

namespace tlswall::agent {
namespace {

namespace fs = std::filesystem;

class FileTrustTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tlswall-trust-XXXXXX";  // /tmp: sticky, world-writable, on the way
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ::chmod(dir_.c_str(), 0755);
    file_ = dir_ + "/policy.toml";
    std::ofstream(file_) << "version = \"x\"\n";
    ::chmod(file_.c_str(), 0644);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir_, file_;
};

TEST_F(FileTrustTest, RootOwnedNotWritableByOthersIsTrusted) {
  EXPECT_EQ(untrusted_policy_path(file_), std::nullopt);
  EXPECT_EQ(untrusted_policy_path(dir_), std::nullopt);
  EXPECT_EQ(untrusted_policy_path(dir_ + "/missing.toml"), std::nullopt) << "the loader says so";
}

TEST_F(FileTrustTest, GroupOrWorldWritableFileIsRefused) {
  ::chmod(file_.c_str(), 0664);
  auto bad = untrusted_policy_path(file_);
  ASSERT_TRUE(bad);
  EXPECT_NE(bad->find("writable by its group (mode 0664)"), std::string::npos) << *bad;
  EXPECT_NE(bad->find("chmod go-w"), std::string::npos) << *bad;
  EXPECT_TRUE(untrusted_policy_path(dir_)) << "a *.toml in the directory";
  ::chmod(file_.c_str(), 0646);
  bad = untrusted_policy_path(file_);
  ASSERT_TRUE(bad);
  EXPECT_NE(bad->find("writable by everyone"), std::string::npos) << *bad;
}

TEST_F(FileTrustTest, WritableDirectoryIsRefusedEvenSticky) {
  ::chmod(dir_.c_str(), 0777);
  EXPECT_TRUE(untrusted_policy_path(file_)) << "others could swap the file";
  ::chmod(dir_.c_str(), 01777);
  EXPECT_TRUE(untrusted_policy_path(dir_)) << "others could add policy files";
  EXPECT_FALSE(untrusted_policy_path(file_)) << "sticky: only on the way, like /tmp";
}

TEST_F(FileTrustTest, OwnedByAnotherUserIsRefused) {
  if (::geteuid() != 0) GTEST_FAIL() << "needs root to chown";
  ASSERT_EQ(::chown(file_.c_str(), 65534, 65534), 0);
  auto bad = untrusted_policy_path(file_);
  ASSERT_TRUE(bad);
  EXPECT_NE(bad->find("owned by uid 65534"), std::string::npos) << *bad;
  ASSERT_EQ(::chown(file_.c_str(), 0, 0), 0);
  ASSERT_EQ(::chown(dir_.c_str(), 65534, 65534), 0);
  EXPECT_TRUE(untrusted_policy_path(file_)) << "its directory belongs to someone else";
}

TEST_F(FileTrustTest, SymlinksAreJudgedByTheirTarget) {
  // ConfigMap-style: policy.d/x.toml -> ..data/x.toml -> a real file.
  const std::string data = dir_ + "/data-1";
  fs::create_directory(data);
  ::chmod(data.c_str(), 0755);
  const std::string real = data + "/x.toml";
  std::ofstream(real) << "version = \"y\"\n";
  ::chmod(real.c_str(), 0644);
  const std::string link = dir_ + "/x.toml";
  fs::create_symlink(real, link);
  EXPECT_EQ(untrusted_policy_path(link), std::nullopt);
  ::chmod(real.c_str(), 0666);
  EXPECT_TRUE(untrusted_policy_path(link)) << "the target is world-writable";
  EXPECT_TRUE(untrusted_policy_path(dir_)) << "through the directory's *.toml";
}

// ---- the daemon's own paths ----

class PrivatePathTest : public FileTrustTest {
 protected:
  // The one line open_private_dir throws, "" if it did not.
  std::string Refusal(const std::string& dir, MissingDir missing = MissingDir::kCreate) {
    try {
      open_private_dir(dir, 0700, missing, "state directory");
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "";
  }
  static bool Has(const std::string& s, const std::string& part) {
    return s.find(part) != std::string::npos;
  }
};

TEST_F(PrivatePathTest, MissingLevelsAreMadeAndTheDirectoryIsOpened) {
  const std::string d = dir_ + "/a/b/state";
  const OwnedFd fd = open_private_dir(d, 0700, MissingDir::kCreate, "state directory");
  ASSERT_GE(fd.get(), 0);
  struct stat st {
  }, by_path{};
  ASSERT_EQ(::fstat(fd.get(), &st), 0);
  ASSERT_EQ(::stat(d.c_str(), &by_path), 0);
  EXPECT_EQ(st.st_ino, by_path.st_ino) << "the fd is the directory made";
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat((dir_ + "/a").c_str(), &by_path), 0);
  EXPECT_EQ(by_path.st_mode & 0777, 0755u) << "levels on the way";
  // Again: it exists now and is accepted as it is.
  EXPECT_EQ(Refusal(d), "");
  EXPECT_EQ(Refusal(dir_ + "/x/y/z", MissingDir::kLeave), "");
  EXPECT_FALSE(fs::exists(dir_ + "/x")) << "kLeave makes nothing";
}

TEST_F(PrivatePathTest, AnUnwritablePlaceIsAnErrorOnlyWhenTheDirectoryIsRequired) {
  // /proc: mkdir fails there for everybody (not a trust problem).
  const std::string d = "/proc/tlswall-path-test/state";
  EXPECT_TRUE(Has(Refusal(d), "cannot create /proc/tlswall-path-test")) << Refusal(d);
  EXPECT_EQ(open_private_dir(d, 0700, MissingDir::kTryCreate, "state directory").get(), -1);
}

TEST_F(PrivatePathTest, ASymlinkAtTheDirectoryIsRefusedWhoeverOwnsIt) {
  fs::create_directory(dir_ + "/real");
  ::chmod((dir_ + "/real").c_str(), 0700);
  fs::create_directory_symlink(dir_ + "/real", dir_ + "/state");
  const std::string err = Refusal(dir_ + "/state");
  EXPECT_TRUE(Has(err, "state directory " + dir_ + "/state is a symlink (to " + dir_ + "/real)"))
      << err;
  EXPECT_TRUE(Has(err, "refused")) << err;
  EXPECT_TRUE(Has(Refusal(dir_ + "/state", MissingDir::kLeave), "is a symlink")) << "checked too";
}

TEST_F(PrivatePathTest, ASymlinkOnTheWayIsFollowedWhenTrusted) {
  // /var/run -> /run: made by root, to a place nobody else can change.
  fs::create_directory(dir_ + "/run");
  ::chmod((dir_ + "/run").c_str(), 0755);
  fs::create_directory_symlink(dir_ + "/run", dir_ + "/var-run");
  EXPECT_EQ(Refusal(dir_ + "/var-run/tlswall"), "");
  EXPECT_TRUE(fs::is_directory(dir_ + "/run/tlswall"));
  // Not when the place it leads to is writable by others.
  ::chmod((dir_ + "/run").c_str(), 0777);
  EXPECT_TRUE(Has(Refusal(dir_ + "/var-run/tlswall"), dir_ + "/run is writable by everyone"));
  ::chmod((dir_ + "/run").c_str(), 0755);
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to chown";
  ASSERT_EQ(::lchown((dir_ + "/var-run").c_str(), 65534, 65534), 0);
  const std::string err = Refusal(dir_ + "/var-run/tlswall");
  EXPECT_TRUE(Has(err, dir_ + "/var-run is a symlink owned by uid 65534")) << err;
}

TEST_F(PrivatePathTest, AWritableDirectoryIsRefusedEvenSticky) {
  const std::string d = dir_ + "/state";
  fs::create_directory(d);
  ::chmod(d.c_str(), 0770);
  EXPECT_TRUE(Has(Refusal(d), d + " is writable by its group (mode 0770)")) << Refusal(d);
  ::chmod(d.c_str(), 01777);
  EXPECT_TRUE(Has(Refusal(d), "writable by everyone")) << "its own directory: no sticky exception";
  EXPECT_TRUE(Has(Refusal(d), "chmod go-w " + d));
  EXPECT_EQ(Refusal(d + "/sub"), "") << "sticky on the way is fine (as /tmp)";
  ::chmod(d.c_str(), 0777);
  EXPECT_TRUE(Has(Refusal(d + "/sub"), d + " is writable by everyone")) << "not sticky: refused";
}

TEST_F(PrivatePathTest, NotADirectoryIsRefused) {
  std::ofstream(dir_ + "/state") << "x";
  EXPECT_TRUE(Has(Refusal(dir_ + "/state"), dir_ + "/state is not a directory"));
}

TEST_F(PrivatePathTest, AnotherUsersDirectoryIsRefusedAtAnyLevel) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to chown";
  const std::string d = dir_ + "/state";
  fs::create_directories(d + "/buffer");
  ASSERT_EQ(::chown(d.c_str(), 65534, 65534), 0);
  std::string err = Refusal(d);
  EXPECT_TRUE(Has(err, "state directory " + d + " is owned by uid 65534, not root")) << err;
  EXPECT_TRUE(Has(err, "chown root " + d)) << err;
  err = Refusal(d + "/buffer");
  EXPECT_TRUE(Has(err, d + " is owned by uid 65534")) << "on the way: " << err;
}

TEST_F(PrivatePathTest, SymlinksAndForeignFilesInTheDirectoryAreRefused) {
  const std::string d = dir_ + "/pins";
  const OwnedFd fd = open_private_dir(d, 0700, MissingDir::kCreate, "pin root");
  std::ofstream(d + "/flows_v1") << "x";
  std::ofstream(d + "/other") << "x";
  auto pins_only = [](const std::string& n) { return n.rfind("flows_", 0) == 0; };
  EXPECT_EQ(foreign_entry(fd.get(), d, {}, "pin"), std::nullopt);
  fs::create_symlink("/etc/passwd", d + "/flows_v2");
  auto bad = foreign_entry(fd.get(), d, pins_only, "pin");
  ASSERT_TRUE(bad);
  EXPECT_TRUE(Has(*bad, "pin " + d + "/flows_v2 is a symlink (to /etc/passwd)")) << *bad;
  fs::remove(d + "/flows_v2");
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to chown";
  ASSERT_EQ(::chown((d + "/other").c_str(), 65534, 65534), 0);
  EXPECT_EQ(foreign_entry(fd.get(), d, pins_only, "pin"), std::nullopt) << "not selected";
  bad = foreign_entry(fd.get(), d, {}, "state file");
  ASSERT_TRUE(bad);
  EXPECT_TRUE(Has(*bad, "state file " + d + "/other is owned by uid 65534")) << *bad;
}

// A socket inode at `path` nobody listens on (a daemon that died).
void BindStale(const std::string& path) {
  ASSERT_EQ(::mknod(path.c_str(), S_IFSOCK | 0600, 0), 0) << std::strerror(errno);
}

TEST_F(PrivatePathTest, OnlyAStaleSocketOfOurOwnMayBeReplaced) {
  const OwnedFd fd = open_private_dir(dir_, 0700, MissingDir::kCreate, "control socket directory");
  const std::string sock = dir_ + "/control.sock";
  EXPECT_EQ(unusable_socket_path(fd.get(), "control.sock", sock, "control socket"), std::nullopt);
  BindStale(sock);
  EXPECT_EQ(unusable_socket_path(fd.get(), "control.sock", sock, "control socket"), std::nullopt);
  fs::remove(sock);
  std::ofstream(sock) << "x";
  auto bad = unusable_socket_path(fd.get(), "control.sock", sock, "control socket");
  ASSERT_TRUE(bad);
  EXPECT_TRUE(Has(*bad, sock + " exists and is not a socket")) << *bad;
  fs::remove(sock);
  BindStale(dir_ + "/elsewhere.sock");
  fs::create_symlink(dir_ + "/elsewhere.sock", sock);
  bad = unusable_socket_path(fd.get(), "control.sock", sock, "control socket");
  ASSERT_TRUE(bad);
  EXPECT_TRUE(Has(*bad, sock + " is a symlink")) << *bad;
  fs::remove(sock);
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to chown";
  BindStale(sock);
  ASSERT_EQ(::lchown(sock.c_str(), 65534, 65534), 0);
  bad = unusable_socket_path(fd.get(), "control.sock", sock, "control socket");
  ASSERT_TRUE(bad);
  EXPECT_TRUE(Has(*bad, sock + " is a socket of uid 65534")) << *bad;
}

}  // namespace
}  // namespace tlswall::agent
