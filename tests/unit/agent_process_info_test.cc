// Process enrichment: cgroup path parsing (table), cgroup id -> path (our
// own cgroup; a child cgroup the test creates when root), and the status of
// live, exited and reused pids against the real /proc.
#include "agent/attribution/process_info.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "agent/sys_mounts.h"

namespace tlswall::agent::attribution {
namespace {

const std::string kHex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const std::string kPod = "8e4e1a4c-2f3b-4f59-9d2e-5c4e3b2a1f00";
const std::string kPodUnderscored = "8e4e1a4c_2f3b_4f59_9d2e_5c4e3b2a1f00";

struct ParseCase {
  std::string path;
  CgroupOrigin want;
};

TEST(ProcessInfoParse, CgroupPathsName) {
  const ParseCase cases[] = {
      {"/", {}},
      {"", {}},
      {"/system.slice/nginx.service", {"", "", "", "nginx.service"}},
      {"/user.slice/user-1000.slice/user@1000.service/app.slice/vte-spawn-1.scope",
       {"", "", "", "vte-spawn-1.scope"}},
      {"/system.slice/docker-" + kHex64 + ".scope",
       {kHex64, "docker", "", "docker-" + kHex64 + ".scope"}},
      // A docker- scope whose id is not 64 hex is just a unit.
      {"/system.slice/docker-abc.scope", {"", "", "", "docker-abc.scope"}},
      {"/docker/" + kHex64, {kHex64, "docker", "", ""}},
      {"/docker/" + kHex64 + "/system.slice/cron.service", {kHex64, "docker", "", "cron.service"}},
      {"/docker/not-an-id", {}},
      {"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + kPodUnderscored +
           ".slice/cri-containerd-" + kHex64 + ".scope",
       {kHex64, "containerd", kPod, "cri-containerd-" + kHex64 + ".scope"}},
      {"/kubepods.slice/kubepods-pod" + kPodUnderscored + ".slice/crio-" + kHex64 + ".scope",
       {kHex64, "crio", kPod, "crio-" + kHex64 + ".scope"}},
      // conmon is the runtime's monitor, not the container.
      {"/machine.slice/libpod-conmon-" + kHex64 + ".scope",
       {"", "", "", "libpod-conmon-" + kHex64 + ".scope"}},
      {"/machine.slice/libpod-" + kHex64 + ".scope/container",
       {kHex64, "podman", "", "libpod-" + kHex64 + ".scope"}},
      {"/kubepods/burstable/pod" + kPod + "/" + kHex64, {kHex64, "", kPod, ""}},
      {"/kubepods/pod" + kPod + "/" + kHex64, {kHex64, "", kPod, ""}},
      {"/kubepods/besteffort/pod" + kPod, {"", "", kPod, ""}},
      // Outside kubepods a pod-looking component means nothing.
      {"/other/pod" + kPod + "/" + kHex64, {}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.path);
    const CgroupOrigin got = parse_cgroup_path(c.path);
    EXPECT_EQ(got.container_id, c.want.container_id);
    EXPECT_EQ(got.runtime, c.want.runtime);
    EXPECT_EQ(got.pod_uid, c.want.pod_uid);
    EXPECT_EQ(got.systemd_unit, c.want.systemd_unit);
  }
}

// Our own cgroup v2 path ("0::<path>" in /proc/self/cgroup).
std::string own_cgroup_path() {
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("0::", 0) == 0) return line.substr(3);
  }
  return "";
}

uint64_t inode_of(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

TEST(ProcessInfoCgroups, OwnCgroupIdResolvesToItsPathByHandleAndByWalk) {
  const std::string mount = find_cgroup2();
  ASSERT_FALSE(mount.empty()) << "no cgroup2 mount";
  const std::string own = own_cgroup_path();
  ASSERT_FALSE(own.empty());
  const uint64_t id = inode_of(mount + own);
  ASSERT_NE(id, 0u);
  for (bool handles : {true, false}) {
    SCOPED_TRACE(handles ? "file handles" : "walk");
    ProcessInfoOptions o;
    o.use_file_handles = handles;
    ProcessInfoResolver r(o);
    EXPECT_EQ(r.cgroup2_mount(), mount);
    EXPECT_EQ(r.cgroup_path(id), own);
    EXPECT_EQ(r.cgroup_path(id), own);  // cached
    const auto stats = r.cache_stats();
    EXPECT_EQ(stats.hits, 1u);
    EXPECT_EQ(stats.misses, 1u);
    if (!handles) {
      EXPECT_EQ(stats.walks, 1u);
    }
  }
}

TEST(ProcessInfoCgroups, ChildCgroupResolvesAndUnknownIdsAreEmpty) {
  if (geteuid() != 0) GTEST_SKIP() << "creating a child cgroup needs root";
  const std::string mount = find_cgroup2();
  ASSERT_FALSE(mount.empty());
  const std::string rel = "/tlswall-procinfo-test-" + std::to_string(getpid());
  ASSERT_EQ(mkdir((mount + rel).c_str(), 0755), 0) << std::strerror(errno);
  const std::string nested = rel + "/app.service";
  const bool made_nested = mkdir((mount + nested).c_str(), 0755) == 0;
  const uint64_t id = inode_of(mount + rel);
  const uint64_t nested_id = made_nested ? inode_of(mount + nested) : 0;

  ProcessInfoResolver r;
  EXPECT_EQ(r.cgroup_path(id), rel);
  // Resolved by file handle, not by the fallback walk.
  EXPECT_EQ(r.cache_stats().handle_lookups, 1u);
  EXPECT_EQ(r.cache_stats().walks, 0u);
  if (made_nested) {
    EXPECT_EQ(r.cgroup_path(nested_id), nested);
    ProcessInfoOptions walk_only;
    walk_only.use_file_handles = false;
    ProcessInfoResolver walker(walk_only);
    EXPECT_EQ(walker.cgroup_path(nested_id), nested);
    EXPECT_EQ(walker.cache_stats().walks, 1u);
    const auto info = r.resolve(999999999u, 0, nested_id);  // no such pid
    EXPECT_EQ(info.status, ProcessStatus::kExited);
    EXPECT_EQ(info.cgroup_path, nested);
    EXPECT_EQ(info.origin.systemd_unit, "app.service");
    rmdir((mount + nested).c_str());
  }
  ASSERT_EQ(rmdir((mount + rel).c_str()), 0) << std::strerror(errno);

  // A removed cgroup (ids are never reused) and one that never existed.
  ProcessInfoResolver fresh;
  EXPECT_EQ(fresh.cgroup_path(id), "");
  EXPECT_EQ(fresh.cgroup_path(~0ull - 7), "");
  EXPECT_EQ(inode_of(mount), 1u) << "cgroup v2 root id";
  EXPECT_EQ(fresh.cgroup_path(inode_of(mount)), "/");
}

TEST(ProcessInfoCgroups, CacheIsBounded) {
  const std::string mount = find_cgroup2();
  ASSERT_FALSE(mount.empty());
  ProcessInfoOptions o;
  o.cgroup_cache_entries = 2;
  ProcessInfoResolver r(o);
  r.cgroup_path(1);
  r.cgroup_path(~0ull - 1);
  r.cgroup_path(~0ull - 2);  // evicts id 1
  r.cgroup_path(1);
  EXPECT_EQ(r.cache_stats().misses, 4u);
  r.cgroup_path(1);
  EXPECT_EQ(r.cache_stats().hits, 1u);
}

TEST(ProcessInfoStatus, OwnProcessIsLiveWithExeAndCmdline) {
  ProcessInfoResolver r;
  const uint32_t self = static_cast<uint32_t>(getpid());
  const uint64_t start = r.start_boottime_ns(self);
  ASSERT_NE(start, 0u);
  // The kernel's start time lies within one tick after /proc's (rounded down).
  const uint64_t tick = 1000000000ull / static_cast<uint64_t>(sysconf(_SC_CLK_TCK));
  for (uint64_t kernel_ns : {start, start + tick / 2, start + tick - 1}) {
    const ProcessInfo info = r.resolve(self, kernel_ns, 0);
    EXPECT_EQ(info.status, ProcessStatus::kLive) << kernel_ns - start;
  }
  const ProcessInfo info = r.resolve(self, start, 0);
  char exe[4096];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe));
  ASSERT_GT(n, 0);
  EXPECT_EQ(info.exe, std::string(exe, static_cast<size_t>(n)));
  // argv[0] first, arguments separated by single spaces, no trailing NUL.
  std::ifstream in("/proc/self/cmdline");
  std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!raw.empty() && raw.back() == '\0') raw.pop_back();
  for (char& c : raw) {
    if (c == '\0') c = ' ';
  }
  EXPECT_EQ(info.cmdline, raw.substr(0, 1024));
  EXPECT_EQ(info.cmdline.find('\0'), std::string::npos);
  // Unknown start time: no reuse check.
  EXPECT_EQ(r.resolve(self, 0, 0).status, ProcessStatus::kLive);
}

TEST(ProcessInfoStatus, CmdlineIsBounded) {
  ProcessInfoOptions o;
  o.max_cmdline = 5;
  ProcessInfoResolver r(o);
  const ProcessInfo info = r.resolve(static_cast<uint32_t>(getpid()), 0, 0);
  EXPECT_LE(info.cmdline.size(), 5u);
  EXPECT_FALSE(info.cmdline.empty());
}

TEST(ProcessInfoStatus, ReapedChildHasExited) {
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) _exit(0);
  ProcessInfoResolver r;
  ASSERT_EQ(waitpid(pid, nullptr, 0), pid);
  const ProcessInfo info = r.resolve(static_cast<uint32_t>(pid), 12345, 0);
  EXPECT_EQ(info.status, ProcessStatus::kExited);
  EXPECT_TRUE(info.exe.empty());
  EXPECT_TRUE(info.cmdline.empty());
  EXPECT_STREQ(process_status_name(info.status), "exited");
}

TEST(ProcessInfoStatus, ZombieHasExited) {
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) _exit(0);
  ProcessInfoResolver r;
  // Not reaped yet: /proc/<pid> exists, state Z.
  ProcessInfo info;
  for (int i = 0; i < 200; ++i) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat;
    std::getline(in, stat);
    if (stat.find(") Z") != std::string::npos) break;
    usleep(5000);
  }
  info = r.resolve(static_cast<uint32_t>(pid), 0, 0);
  EXPECT_EQ(info.status, ProcessStatus::kExited);
  waitpid(pid, nullptr, 0);
}

TEST(ProcessInfoStatus, OtherStartTimeMeansThePidWasReused) {
  ProcessInfoResolver r;
  const uint32_t self = static_cast<uint32_t>(getpid());
  const uint64_t start = r.start_boottime_ns(self);
  ASSERT_NE(start, 0u);
  const uint64_t tick = 1000000000ull / static_cast<uint64_t>(sysconf(_SC_CLK_TCK));
  for (uint64_t other : {start + 2 * tick + 1, start - 2 * tick, uint64_t{1}}) {
    const ProcessInfo info = r.resolve(self, other, 0);
    EXPECT_EQ(info.status, ProcessStatus::kPidReused);
    EXPECT_TRUE(info.exe.empty()) << "never describe the process that reused the pid";
    EXPECT_TRUE(info.cmdline.empty());
  }
  EXPECT_STREQ(process_status_name(ProcessStatus::kPidReused), "pid reused");
}

}  // namespace
}  // namespace tlswall::agent::attribution
