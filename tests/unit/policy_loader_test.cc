// load_policy on files and directories: merging, cross-file duplicates,
// unreadable inputs, file list and the policy hash.
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <string>

#include "policy/policy.h"
#include "policy_test_support.h"

namespace tlswall::policy {
namespace {

namespace fs = std::filesystem;

const auto kNow = Utc(2026, 11, 21);

// Boundaries in one file, rules in another.
const std::string kBoundaries = R"(version = "merge-1"
[boundaries.remote]
cidrs = ["198.18.128.0/17"]
)";
const std::string kRules = R"([[rules]]
name = "remote-tls"
boundary = "remote"
ports = [443]
mode = "enforce"
)";

class PolicyLoader : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::path(::testing::TempDir()) / "policy_loader_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(dir_, ec);
  }

  std::string Write(const std::string& rel, const std::string& text) {
    const fs::path p = fs::path(dir_) / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }

  std::string Dir(const std::string& rel = "") const {
    return rel.empty() ? dir_ : (fs::path(dir_) / rel).string();
  }

  std::string dir_;
};

TEST_F(PolicyLoader, SingleFile) {
  const std::string path = Write("one.toml", kBoundaries + kRules);
  const auto r = load_policy(path, kNow);
  ASSERT_TRUE(r.ok()) << All(r);
  EXPECT_EQ(r.policy->files, std::vector<std::string>{path});
  EXPECT_EQ(r.policy->version, "merge-1");
  // sha256 of "one.toml\0" "149\0" + the 149 bytes (computed with sha256sum).
  EXPECT_EQ(r.policy->hash, "c73094e6391756d6bd01e63ab417abaf23af587e63cf978f4cb80379c7498bd0");
}

TEST_F(PolicyLoader, RelativePathGivesAbsoluteFileList) {
  Write("one.toml", kBoundaries + kRules);
  const fs::path old = fs::current_path();
  fs::current_path(dir_);
  const auto r = load_policy("./one.toml", kNow);
  fs::current_path(old);
  ASSERT_TRUE(r.ok()) << All(r);
  ASSERT_EQ(r.policy->files.size(), 1u);
  EXPECT_EQ(r.policy->files[0], (fs::path(dir_) / "one.toml").string());
}

TEST_F(PolicyLoader, DirectoryMerge) {
  Write("d/20-rules.toml", kRules);
  Write("d/10-boundaries.toml", kBoundaries);
  Write("d/README.txt", "not policy");
  Write("d/.20-rules.toml.swp.toml", "garbage [[[");
  const auto r = load_policy(Dir("d"), kNow);
  ASSERT_TRUE(r.ok()) << All(r);
  EXPECT_TRUE(r.diagnostics.empty()) << All(r);
  EXPECT_EQ(r.policy->files,
            (std::vector<std::string>{Dir("d/10-boundaries.toml"), Dir("d/20-rules.toml")}));
  ASSERT_EQ(r.policy->rules.size(), 1u);
  EXPECT_EQ(r.policy->rules[0].boundary, "remote");
  EXPECT_EQ(r.policy->rules[0].mode, Mode::kEnforce);
  EXPECT_EQ(r.policy->rules[0].where.file, Dir("d/20-rules.toml"));
  EXPECT_EQ(r.policy->boundaries[0].where.file, Dir("d/10-boundaries.toml"));
  // sha256 over both files in name order (computed with sha256sum).
  EXPECT_EQ(r.policy->hash, "4080bd5677013c23bbba49e071605a7ecc9ab37c755ea9128c7c0f150b2a4b36");
}

TEST_F(PolicyLoader, DuplicateBoundaryAcrossFiles) {
  Write("d/a.toml", kBoundaries + kRules);
  Write("d/b.toml", "\n[boundaries.remote]\ncidrs = [\"10.0.0.0/8\"]\n");
  const auto r = load_policy(Dir("d"), kNow);
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(HasDiag(
      r, Dir("d/b.toml") + ":2:13: error: ",
      "duplicate boundary name \"remote\"; it is already defined at " + Dir("d/a.toml") + ":2:13"))
      << All(r);
  EXPECT_EQ(Errors(r), 1u) << All(r);
}

TEST_F(PolicyLoader, DuplicateRuleAcrossFiles) {
  Write("d/a.toml", kBoundaries + kRules);
  Write("d/b.toml", kRules);
  const auto r = load_policy(Dir("d"), kNow);
  EXPECT_TRUE(HasDiag(
      r, Dir("d/b.toml") + ":2:8: error: ",
      "duplicate rule name \"remote-tls\"; it is already defined at " + Dir("d/a.toml") + ":5:8"))
      << All(r);
}

TEST_F(PolicyLoader, VersionSetInTwoFiles) {
  Write("d/a.toml", kBoundaries);
  Write("d/b.toml", "version = \"merge-2\"\n" + kRules);
  const auto r = load_policy(Dir("d"), kNow);
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(HasDiag(r, Dir("d/b.toml") + ":1:11: error: ",
                      "version is set again here to \"merge-2\"; it was already set to "
                      "\"merge-1\" at " +
                          Dir("d/a.toml") + ":1:11"))
      << All(r);
  // The same value twice is also refused: one file owns the version.
  Write("d/b.toml", "version = \"merge-1\"\n" + kRules);
  const auto same = load_policy(Dir("d"), kNow);
  EXPECT_TRUE(
      HasDiag(same, Dir("d/b.toml") + ":1:11: error: ",
              "version is set again here; it was already set at " + Dir("d/a.toml") + ":1:11"))
      << All(same);
}

TEST_F(PolicyLoader, DefaultModeSetInTwoFiles) {
  Write("d/a.toml", "default_mode = \"enforce\"\n" + kBoundaries);
  Write("d/b.toml", "default_mode = \"monitor\"\n" + kRules);
  const auto r = load_policy(Dir("d"), kNow);
  EXPECT_TRUE(
      HasDiag(r, Dir("d/b.toml") + ":1:16: error: ",
              "default_mode is set again here; it was already set at " + Dir("d/a.toml") + ":1:16"))
      << All(r);
}

TEST_F(PolicyLoader, VersionMissingInEveryFile) {
  Write("d/a.toml", "[boundaries.remote]\ncidrs = [\"198.18.128.0/17\"]\n");
  Write("d/b.toml", kRules);
  const auto r = load_policy(Dir("d"), kNow);
  EXPECT_TRUE(HasDiag(r, Dir("d/a.toml") + ":1:1: error: ", "the policy has no version")) << All(r);
  EXPECT_EQ(Errors(r), 1u) << All(r);
}

TEST_F(PolicyLoader, DiagnosticsInFileOrder) {
  Write("d/a.toml", kBoundaries + "[[rules]]\nname = \"x\"\nboundary = \"remote\"\nports = [0]\n");
  Write("d/b.toml", "[[rules]]\nname = \"y\"\nboundary = \"remote\"\nports = [70000]\n");
  const auto r = load_policy(Dir("d"), kNow);
  ASSERT_EQ(r.diagnostics.size(), 2u) << All(r);
  EXPECT_EQ(r.diagnostics[0].where.file, Dir("d/a.toml"));
  EXPECT_EQ(r.diagnostics[0].where.line, 7u);
  EXPECT_EQ(r.diagnostics[1].where.file, Dir("d/b.toml"));
  EXPECT_EQ(r.diagnostics[1].where.line, 4u);
}

TEST_F(PolicyLoader, SyntaxErrorInOneFileDoesNotCascade) {
  Write("d/a.toml", "version = \"v\"\n[boundaries.remote]\ncidrs = [\"198.18.128.0/17\"\n");
  Write("d/b.toml", kRules);
  const auto r = load_policy(Dir("d"), kNow);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(Errors(r), 1u) << All(r);  // not also "unknown boundary remote"
  EXPECT_TRUE(
      HasDiag(r, Dir("d/a.toml") + ":3:28: error: ", "syntax error: Error while parsing array"))
      << All(r);
}

TEST_F(PolicyLoader, DirectoryWithoutTomlFiles) {
  Write("d/policy.yaml", "version: 1\n");
  const auto r = load_policy(Dir("d"), kNow);
  EXPECT_FALSE(r.ok());
  ASSERT_EQ(r.diagnostics.size(), 1u);
  EXPECT_EQ(r.diagnostics[0].render(), Dir("d") + ": error: policy directory has no *.toml files");
}

TEST_F(PolicyLoader, MissingPath) {
  const auto r = load_policy(Dir("nope.toml"), kNow);
  EXPECT_FALSE(r.ok());
  ASSERT_EQ(r.diagnostics.size(), 1u);
  EXPECT_EQ(r.diagnostics[0].render(),
            Dir("nope.toml") + ": error: cannot read policy: No such file or directory");
}

TEST_F(PolicyLoader, DanglingSymlinkInDirectory) {
  Write("d/a.toml", kBoundaries + kRules);
  fs::create_symlink(Dir("gone.toml"), Dir("d/b.toml"));
  const auto r = load_policy(Dir("d"), kNow);
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(HasDiag(r, Dir("d/b.toml") + ": error: ", "cannot read policy file:")) << All(r);
  EXPECT_EQ(Errors(r), 1u) << All(r);
}

TEST_F(PolicyLoader, UnreadableFile) {
  const std::string path = Write("secret.toml", kBoundaries + kRules);
  ASSERT_EQ(chmod(path.c_str(), 0), 0);
  auto check = [&] {
    const auto r = load_policy(path, kNow);
    return !r.ok() && HasDiag(r, path + ": error: ", "cannot read policy file: Permission denied");
  };
  if (geteuid() != 0) {
    EXPECT_TRUE(check());
    return;
  }
  // Root reads any file: check as an unprivileged user in a child.
  ASSERT_EQ(chmod(Dir("").c_str(), 0755), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (setgid(65534) != 0 || setuid(65534) != 0) _exit(3);
    _exit(check() ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "3 = could not drop privileges, 1 = wrong diagnostic";
}

TEST_F(PolicyLoader, DirectoryNamedTomlIsAnError) {
  Write("d/a.toml", kBoundaries + kRules);
  fs::create_directories(Dir("d/sub.toml"));
  const auto r = load_policy(Dir("d"), kNow);
  EXPECT_TRUE(
      HasDiag(r, Dir("d/sub.toml") + ": error: ", "cannot read policy file: not a regular file"))
      << All(r);
}

// ---- hash ----

TEST_F(PolicyLoader, HashIsStableAndDetectsChanges) {
  Write("d/a.toml", kBoundaries);
  Write("d/b.toml", kRules);
  const auto first = load_policy(Dir("d"), kNow);
  ASSERT_TRUE(first.ok()) << All(first);
  const std::string h = first.policy->hash;
  EXPECT_EQ(h.size(), 64u);
  EXPECT_EQ(load_policy(Dir("d"), kNow).policy->hash, h);
  EXPECT_EQ(load_policy(Dir("d"), Utc(2027, 1, 1)).policy->hash, h);  // time plays no part

  // The same files elsewhere: only base names are hashed.
  Write("copy/a.toml", kBoundaries);
  Write("copy/b.toml", kRules);
  EXPECT_EQ(load_policy(Dir("copy"), kNow).policy->hash, h);

  // One byte changed (a comment still changes the hash: it is over bytes).
  Write("d/b.toml", kRules + "#\n");
  const auto changed = load_policy(Dir("d"), kNow);
  ASSERT_TRUE(changed.ok()) << All(changed);
  EXPECT_NE(changed.policy->hash, h);

  // Same bytes, different file name.
  Write("d/b.toml", kRules);
  fs::rename(Dir("d/b.toml"), Dir("d/c.toml"));
  const auto renamed = load_policy(Dir("d"), kNow);
  ASSERT_TRUE(renamed.ok()) << All(renamed);
  EXPECT_NE(renamed.policy->hash, h);

  // Moving bytes from one file to the next must not collide.
  Write("e/a.toml", kBoundaries + "#");
  Write("e/b.toml", kRules);
  Write("f/a.toml", kBoundaries);
  Write("f/b.toml", "#" + kRules);
  EXPECT_NE(load_policy(Dir("e"), kNow).policy->hash, load_policy(Dir("f"), kNow).policy->hash);
}

TEST_F(PolicyLoader, TextAndFileHashAgree) {
  const std::string path = Write("one.toml", kBoundaries + kRules);
  const auto f = load_policy(path, kNow);
  const auto t = load_policy_text("one.toml", kBoundaries + kRules, kNow);
  ASSERT_TRUE(f.ok() && t.ok());
  EXPECT_EQ(f.policy->hash, t.policy->hash);
  EXPECT_EQ(compile_policy(*f.policy, kNow).hash, f.policy->hash);
}

}  // namespace
}  // namespace tlswall::policy
