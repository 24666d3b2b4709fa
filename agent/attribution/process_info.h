// Process enrichment in user space: turns an owner record's (tgid,
// start_boottime_ns, cgroup_id) into what an operator reads in an event:
// the executable, its command line, the cgroup path, the container and the
// systemd unit, and whether the process is still the one that connected.
//
// Cheap enough for every event: a handful of small /proc reads per call,
// cgroup paths cached (bounded LRU; cgroup ids are never reused). A missing
// or exited process is a status, never an exception.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "agent/owned_fd.h"

namespace tlswall::agent::attribution {

enum class ProcessStatus {
  kLive,       // /proc/<tgid> is the process that connected
  kExited,     // no /proc/<tgid>
  kPidReused,  // /proc/<tgid> started at another time: another process
};
// "live", "exited", "pid reused".
const char* process_status_name(ProcessStatus s);

// What a cgroup v2 path says about where a process runs. Empty fields when
// the path says nothing.
struct CgroupOrigin {
  std::string container_id;  // hex id of the container
  std::string runtime;       // "docker", "containerd", "crio", "podman" (if the path says)
  std::string pod_uid;       // Kubernetes pod UID (dashes restored)
  std::string systemd_unit;  // the last "*.service" / "*.scope" component
};

// Parses a cgroup path (as in /proc/<pid>/cgroup, "0::/..."-stripped):
//   /system.slice/docker-<64 hex>.scope            docker (systemd driver)
//   /docker/<64 hex>                                docker (cgroupfs driver)
//   .../cri-containerd-<hex>.scope                  containerd (CRI)
//   .../crio-<hex>.scope                            CRI-O
//   .../libpod-<hex>.scope                          podman
//   /kubepods[/<qos>]/pod<uid>/<hex>                Kubernetes, cgroupfs driver
//   /kubepods.slice/...-pod<uid_with_underscores>.slice/...  systemd driver
// Conmon scopes (crio-conmon-, libpod-conmon-) are not containers.
CgroupOrigin parse_cgroup_path(std::string_view path);

struct ProcessInfo {
  ProcessStatus status = ProcessStatus::kExited;
  // Only for a live process (never the data of a process that reused the
  // pid): "" where unreadable (kernel threads, races with exit).
  std::string exe;      // readlink /proc/<tgid>/exe ("... (deleted)" kept)
  std::string cmdline;  // arguments joined by spaces, at most max_cmdline bytes
  // From the cgroup id, whatever the process status (the cgroup may outlive
  // the process): path relative to the cgroup2 mount ("/" = root), "" if
  // unknown, and what the path says.
  std::string cgroup_path;
  CgroupOrigin origin;
};

struct ProcessInfoOptions {
  std::string proc_root = "/proc";
  // The cgroup v2 mount; "" = found in /proc/self/mounts on first use.
  std::string cgroup2_mount;
  size_t cgroup_cache_entries = 4096;
  size_t max_cmdline = 1024;        // bytes of the joined command line
  size_t max_walk_entries = 20000;  // directories the fallback walk may visit
  // Resolve ids with open_by_handle_at (needs CAP_DAC_READ_SEARCH); false,
  // or a failure, falls back to walking the mount comparing inode numbers.
  bool use_file_handles = true;
};

class ProcessInfoResolver {
 public:
  explicit ProcessInfoResolver(ProcessInfoOptions opts = {});
  ProcessInfoResolver(const ProcessInfoResolver&) = delete;
  ProcessInfoResolver& operator=(const ProcessInfoResolver&) = delete;

  // start_boottime_ns 0 means unknown: the pid-reuse check is skipped.
  // Thread-safe; never throws for missing processes or cgroups.
  ProcessInfo resolve(uint32_t tgid, uint64_t start_boottime_ns, uint64_t cgroup_id);

  // The path of cgroup v2 id `id` relative to the mount ("/" for the root),
  // "" if there is no such cgroup (or no cgroup v2). Cached.
  std::string cgroup_path(uint64_t id);

  // Start time of /proc/<tgid> in ns since boot (field 22 of stat, clock
  // ticks converted), or 0 if there is no such process.
  uint64_t start_boottime_ns(uint32_t tgid) const;

  const std::string& cgroup2_mount();

  struct CacheStats {
    uint64_t hits = 0, misses = 0, handle_lookups = 0, walks = 0;
  };
  CacheStats cache_stats() const;

 private:
  std::string lookup_cgroup(uint64_t id);  // uncached; mu_ held
  std::string walk_for(uint64_t id);       // fallback; mu_ held

  ProcessInfoOptions opts_;
  long ticks_per_sec_;
  mutable std::mutex mu_;
  bool mount_known_ = false;
  OwnedFd mount_fd_;
  std::list<std::pair<uint64_t, std::string>> lru_;  // front = most recent
  std::unordered_map<uint64_t, std::list<std::pair<uint64_t, std::string>>::iterator> index_;
  CacheStats stats_;
};

}  // namespace tlswall::agent::attribution
