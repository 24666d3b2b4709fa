// Test support for the attribution probes: a private bpffs, the owner
// tables created as the daemon creates them, child cgroups, and worker
// processes that connect over loopback inside a network namespace of their
// own. Everything is removed again on destruction, also when a test fails.
// Needs root.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <set>
#include <string>

#include "agent/owned_fd.h"

extern "C" {
#include "abi/tlswall_abi.h"
}

namespace tlswall::ownertest {

using agent::OwnedFd;

// A bpffs mounted on a fresh temporary directory (never the host's).
class PrivateBpffs {
 public:
  PrivateBpffs();  // throws std::runtime_error
  ~PrivateBpffs();
  PrivateBpffs(const PrivateBpffs&) = delete;
  PrivateBpffs& operator=(const PrivateBpffs&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// tw_owners and tw_owner_tuples with the types and sizes of
// bpf/lib/owner_maps.bpf.h (socket storage needs BTF for key and value).
struct OwnerMaps {
  OwnerMaps();  // throws std::runtime_error
  OwnedFd owners;
  OwnedFd tuples;
  uint32_t owners_id = 0;
  uint32_t tuples_id = 0;
};

// A child cgroup of the cgroup2 root with a unique name, or a named child
// of `parent` (a cgroup directory); removed on destruction (its processes
// and child cgroups must be gone by then).
class TestCgroup {
 public:
  TestCgroup();                                                    // throws std::runtime_error
  TestCgroup(const std::string& parent, const std::string& name);  // idem
  ~TestCgroup();
  TestCgroup(const TestCgroup&) = delete;
  TestCgroup& operator=(const TestCgroup&) = delete;
  const std::string& path() const { return path_; }
  uint64_t id() const { return id_; }
  // Depth below the cgroup2 mount ("/" is 0), as selectors take it.
  uint32_t level() const;

 private:
  void create();
  std::string path_;
  uint64_t id_ = 0;
};

// The cgroup2 mount (from /proc/mounts); throws if there is none.
std::string cgroup2_mount();
// The cgroup v2 id (inode of the directory) of process `pid`; 0 if unknown.
uint64_t cgroup_id_of(pid_t pid);

enum class Family { kV4, kV6, kV4MappedOnV6 };

struct ConnectSpec {
  Family family = Family::kV4;
  std::string comm = "tw-owner-test";  // at most 15 characters
  uid_t uid = 0;                       // 0: stay root
  gid_t gid = 0;
  std::string cgroup;        // cgroup directory to join first; "" = stay
  bool from_thread = false;  // connect from a second thread (pid != tgid)
};

// A forked child that joins `cgroup`, unshares its network namespace,
// brings up lo, listens, renames itself, drops to uid/gid and connects to
// its listener; the connected socket is passed to the test (SCM_RIGHTS),
// and the child stays alive (and its start time valid) until destruction.
class Worker {
 public:
  explicit Worker(const ConnectSpec& spec);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  pid_t pid() const { return pid_; }
  pid_t tid() const { return tid_; }  // the connecting thread
  int sock() const { return sock_.get(); }

 private:
  pid_t pid_ = -1;
  pid_t tid_ = -1;
  OwnedFd ctl_;
  OwnedFd sock_;
  std::string error_;
};

// The record socket storage holds for `sock`; nullopt if none (ENOENT).
std::optional<tw_owner> owner_of_socket(int owners_fd, int sock);
// The flow key the classifier builds for `sock`'s SYN (getsockname /
// getpeername; IPv4 and IPv4-mapped IPv6 peers as family 4).
tw_flow_key flow_key_of_socket(int sock);

// Names of the loaded programs that use the map with id `map_id`.
std::multiset<std::string> programs_using_map(uint32_t map_id);
// Links whose program uses map `map_id`.
size_t links_using_map(uint32_t map_id);
// Waits up to ~2 s for programs_using_map(map_id) to become `want`
// (releasing a program is deferred in the kernel).
std::multiset<std::string> wait_programs_using_map(uint32_t map_id,
                                                   const std::multiset<std::string>& want);
// The id of the BPF link pinned at `path`; 0 if none.
uint32_t pinned_link_id(const std::string& path);
// Ids of the programs attached to cgroup `dir` for sock_ops.
size_t sock_ops_programs_on(const std::string& dir);

bool path_exists(const std::string& path);

}  // namespace tlswall::ownertest
