// Finds (or mounts) the kernel filesystems the agent needs: bpffs for pins
// and cgroup v2 for attribution. Never assumes a path: reads /proc/mounts.
#pragma once

#include <string>
#include <vector>

namespace tlswall::agent {

struct MountEntry {
  std::string source, target, fstype;
};

// Parses /proc/mounts-format text (octal escapes decoded).
std::vector<MountEntry> parse_mounts(const std::string& text);

// Mount points of `fstype` in the current mount namespace, in mount order.
std::vector<std::string> find_mounts(const std::string& fstype);

struct BpffsResult {
  std::string mount_point;  // bpffs holding pin_root
  bool mounted_by_us = false;
  bool at_pin_root = false;  // mounted by us at pin_root itself (not /sys/fs/bpf)
};

// Makes sure pin_root is on bpffs: if no bpffs covers it, mounts one at
// /sys/fs/bpf (when pin_root is below it) or at pin_root itself. Throws
// std::runtime_error with the reason on failure.
BpffsResult ensure_bpffs(const std::string& pin_root);

// The cgroup v2 mount point, or "" if there is none.
std::string find_cgroup2();

struct Cgroup2Result {
  std::string mount_point;
  bool mounted_by_us = false;
};

// Finds the cgroup v2 mount; where none is visible (cgroup v1 only, or a
// private mount namespace such as `ip netns exec` makes), mounts the
// unified hierarchy at `fallback` (created if needed). Throws
// std::runtime_error if that fails.
Cgroup2Result ensure_cgroup2(const std::string& fallback);

// libbpf attaches tracepoints through tracefs at /sys/kernel/tracing (or
// /sys/kernel/debug/tracing). Where neither is mounted (a private mount
// namespace such as `ip netns exec` remounts /sys), mounts tracefs at
// /sys/kernel/tracing, its standard place, and leaves it there. Returns
// the mount point; throws std::runtime_error if that fails.
std::string ensure_tracefs();

}  // namespace tlswall::agent
