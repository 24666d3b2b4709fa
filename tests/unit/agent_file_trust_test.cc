// The policy's file trust (agent/file_trust.h): whoever can write the
// policy controls what is blocked, so a group- or world-writable policy
// file or directory, one owned by another user, or one reached through such
// a directory, is refused; a sticky /tmp on the way is fine; symlinks are
// judged by what they point at. Ownership cases need root (chown).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "agent/file_trust.h"

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

}  // namespace
}  // namespace tlswall::agent
