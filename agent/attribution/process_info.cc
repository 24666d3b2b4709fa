#include "agent/attribution/process_info.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

#include "agent/sys_mounts.h"

namespace tlswall::agent::attribution {
namespace {

// include/linux/exportfs.h: the file handle type of kernfs (cgroup v2),
// whose 8 handle bytes are the cgroup id.
constexpr int kFileIdKernfs = 0xfe;

bool is_hex(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

// "<prefix><hex>.scope" -> hex, or "" if `c` is not of that form.
std::string scoped_id(std::string_view c, std::string_view prefix, size_t min_len) {
  if (!starts_with(c, prefix) || !ends_with(c, ".scope")) return "";
  const std::string_view id = c.substr(prefix.size(), c.size() - prefix.size() - 6);
  return id.size() >= min_len && is_hex(id) ? std::string(id) : "";
}

// A Kubernetes pod UID is 36 characters of hex and dashes.
bool is_pod_uid(std::string_view s) {
  if (s.size() != 36) return false;
  for (char c : s) {
    if (!(c == '-' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// Reads at most `max` bytes of dirfd/name; false if it cannot be opened/read.
bool read_at(int dirfd, const char* name, size_t max, std::string* out) {
  OwnedFd fd(::openat(dirfd, name, O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return false;
  out->assign(max, '\0');
  size_t got = 0;
  while (got < max) {
    const ssize_t n = ::read(fd.get(), out->data() + got, max - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  out->resize(got);
  return true;
}

struct StatFields {
  char state = '?';
  unsigned long long start_ticks = 0;
};

// /proc/<pid>/stat: "pid (comm) state ppid ... starttime(22) ..."; comm may
// hold spaces and parentheses, so fields are counted after the last ')'.
bool parse_stat(const std::string& text, StatFields* out) {
  const size_t close = text.rfind(')');
  if (close == std::string::npos) return false;
  const char* p = text.c_str() + close + 1;
  // Field 3 (state) is the first after ')'; starttime is field 22.
  for (int field = 3; field <= 22; ++field) {
    while (*p == ' ') ++p;
    if (!*p) return false;
    if (field == 3) out->state = *p;
    if (field == 22) {
      char* end = nullptr;
      errno = 0;
      out->start_ticks = std::strtoull(p, &end, 10);
      return errno == 0 && end != p;
    }
    while (*p && *p != ' ') ++p;
  }
  return false;
}

}  // namespace

const char* process_status_name(ProcessStatus s) {
  switch (s) {
    case ProcessStatus::kLive:
      return "live";
    case ProcessStatus::kExited:
      return "exited";
    case ProcessStatus::kPidReused:
      return "pid reused";
  }
  return "unknown";
}

CgroupOrigin parse_cgroup_path(std::string_view path) {
  CgroupOrigin o;
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    if (slash > start) parts.push_back(path.substr(start, slash - start));
    start = slash + 1;
  }
  bool kubepods = false;
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string_view c = parts[i];
    if (ends_with(c, ".service") || ends_with(c, ".scope")) o.systemd_unit = std::string(c);
    if (starts_with(c, "kubepods")) kubepods = true;

    std::string id;
    std::string runtime;
    if (!(id = scoped_id(c, "docker-", 64)).empty() && id.size() == 64) {
      runtime = "docker";
    } else if (!(id = scoped_id(c, "cri-containerd-", 12)).empty()) {
      runtime = "containerd";
    } else if (!starts_with(c, "crio-conmon-") && !(id = scoped_id(c, "crio-", 12)).empty()) {
      runtime = "crio";
    } else if (!starts_with(c, "libpod-conmon-") && !(id = scoped_id(c, "libpod-", 12)).empty()) {
      runtime = "podman";
    } else if (i > 0 && parts[i - 1] == "docker" && c.size() == 64 && is_hex(c)) {
      id = std::string(c);
      runtime = "docker";
    } else if (kubepods && i > 0 && starts_with(parts[i - 1], "pod") && c.size() >= 12 &&
               is_hex(c)) {
      id = std::string(c);  // cgroupfs driver: the runtime is not in the path
    }
    if (!id.empty()) {
      o.container_id = id;
      o.runtime = runtime;
    }

    // Pod UIDs: "pod<uid>" (cgroupfs driver) or "kubepods[-<qos>]-pod<uid
    // with '_' for '-'>.slice" (systemd driver).
    if (kubepods) {
      if (starts_with(c, "pod") && is_pod_uid(c.substr(3))) {
        o.pod_uid = std::string(c.substr(3));
      } else if (starts_with(c, "kubepods") && ends_with(c, ".slice")) {
        const size_t at = c.rfind("-pod");
        if (at != std::string_view::npos) {
          std::string uid(c.substr(at + 4, c.size() - at - 4 - 6));
          for (char& ch : uid) {
            if (ch == '_') ch = '-';
          }
          if (is_pod_uid(uid)) o.pod_uid = uid;
        }
      }
    }
  }
  return o;
}

ProcessInfoResolver::ProcessInfoResolver(ProcessInfoOptions opts)
    : opts_(std::move(opts)), ticks_per_sec_(::sysconf(_SC_CLK_TCK)) {
  if (ticks_per_sec_ <= 0) ticks_per_sec_ = 100;
  if (opts_.cgroup_cache_entries == 0) opts_.cgroup_cache_entries = 1;
}

const std::string& ProcessInfoResolver::cgroup2_mount() {
  std::lock_guard<std::mutex> g(mu_);
  if (!mount_known_) {
    mount_known_ = true;
    if (opts_.cgroup2_mount.empty()) opts_.cgroup2_mount = find_cgroup2();
    if (!opts_.cgroup2_mount.empty()) {
      mount_fd_ = OwnedFd(::open(opts_.cgroup2_mount.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    }
  }
  return opts_.cgroup2_mount;
}

uint64_t ProcessInfoResolver::start_boottime_ns(uint32_t tgid) const {
  OwnedFd dir(::open((opts_.proc_root + "/" + std::to_string(tgid)).c_str(),
                     O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  std::string text;
  StatFields f;
  if (dir.get() < 0 || !read_at(dir.get(), "stat", 1024, &text) || !parse_stat(text, &f)) return 0;
  return f.start_ticks * (1000000000ull / static_cast<uint64_t>(ticks_per_sec_));
}

ProcessInfo ProcessInfoResolver::resolve(uint32_t tgid, uint64_t start_boottime_ns,
                                         uint64_t cgroup_id) {
  ProcessInfo info;
  if (cgroup_id != 0) {
    info.cgroup_path = cgroup_path(cgroup_id);
    info.origin = parse_cgroup_path(info.cgroup_path);
  }

  // Everything below through one directory fd: should the pid be reused
  // meanwhile, reads through it fail instead of describing the newcomer.
  OwnedFd dir(::open((opts_.proc_root + "/" + std::to_string(tgid)).c_str(),
                     O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() < 0) return info;  // exited
  std::string text;
  StatFields f;
  if (!read_at(dir.get(), "stat", 1024, &text) || !parse_stat(text, &f)) return info;
  // A zombie has exited; only its parent has not collected it yet.
  if (f.state == 'Z' || f.state == 'X') return info;
  if (start_boottime_ns != 0) {
    const uint64_t tick_ns = 1000000000ull / static_cast<uint64_t>(ticks_per_sec_);
    const uint64_t proc_ns = f.start_ticks * tick_ns;
    const uint64_t diff =
        proc_ns > start_boottime_ns ? proc_ns - start_boottime_ns : start_boottime_ns - proc_ns;
    if (diff > tick_ns) {
      info.status = ProcessStatus::kPidReused;
      return info;
    }
  }
  info.status = ProcessStatus::kLive;

  char buf[PATH_MAX];
  const ssize_t n = ::readlinkat(dir.get(), "exe", buf, sizeof(buf));
  if (n > 0) info.exe.assign(buf, static_cast<size_t>(n));

  std::string cmd;
  if (read_at(dir.get(), "cmdline", opts_.max_cmdline + 1, &cmd)) {
    while (!cmd.empty() && cmd.back() == '\0') cmd.pop_back();
    for (char& c : cmd) {
      if (c == '\0') c = ' ';
    }
    if (cmd.size() > opts_.max_cmdline) cmd.resize(opts_.max_cmdline);
    info.cmdline = std::move(cmd);
  }
  return info;
}

std::string ProcessInfoResolver::cgroup_path(uint64_t id) {
  cgroup2_mount();
  std::lock_guard<std::mutex> g(mu_);
  auto it = index_.find(id);
  if (it != index_.end()) {
    ++stats_.hits;
    lru_.splice(lru_.begin(), lru_, it->second);
    return it->second->second;
  }
  ++stats_.misses;
  // Cached also when not found: ids are never reused, a gone cgroup stays gone.
  std::string path = lookup_cgroup(id);
  lru_.emplace_front(id, path);
  index_[id] = lru_.begin();
  while (lru_.size() > opts_.cgroup_cache_entries) {
    index_.erase(lru_.back().first);
    lru_.pop_back();
  }
  return path;
}

std::string ProcessInfoResolver::lookup_cgroup(uint64_t id) {
  if (mount_fd_.get() < 0) return "";
  const std::string& mount = opts_.cgroup2_mount;
  if (opts_.use_file_handles) {
    ++stats_.handle_lookups;
    alignas(file_handle) unsigned char storage[sizeof(file_handle) + sizeof(uint64_t)] = {};
    auto* fh = reinterpret_cast<file_handle*>(storage);
    fh->handle_bytes = sizeof(uint64_t);
    fh->handle_type = kFileIdKernfs;
    std::memcpy(fh->f_handle, &id, sizeof(id));
    OwnedFd fd(::open_by_handle_at(mount_fd_.get(), fh, O_RDONLY | O_CLOEXEC));
    if (fd.get() >= 0) {
      char buf[PATH_MAX];
      const std::string link = "/proc/self/fd/" + std::to_string(fd.get());
      const ssize_t n = ::readlink(link.c_str(), buf, sizeof(buf));
      if (n > 0) {
        const std::string abs(buf, static_cast<size_t>(n));
        if (abs == mount) return "/";
        if (abs.size() > mount.size() && abs.compare(0, mount.size(), mount) == 0 &&
            abs[mount.size()] == '/') {
          return abs.substr(mount.size());
        }
      }
    } else if (errno == ESTALE) {
      return "";  // the kernel knows no cgroup with this id (any more)
    }
    // Not permitted (no CAP_DAC_READ_SEARCH), not supported, or a path
    // outside our view of the mount: walk instead.
  }
  return walk_for(id);
}

std::string ProcessInfoResolver::walk_for(uint64_t id) {
  ++stats_.walks;
  const std::string& mount = opts_.cgroup2_mount;
  struct stat st {};
  if (::stat(mount.c_str(), &st) == 0 && st.st_ino == id) return "/";
  std::error_code ec;
  size_t visited = 0;
  auto it = std::filesystem::recursive_directory_iterator(
      mount, std::filesystem::directory_options::skip_permission_denied, ec);
  for (; !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_directory(ec) || it->is_symlink(ec)) {
      ec.clear();
      continue;
    }
    if (++visited > opts_.max_walk_entries) break;
    if (::lstat(it->path().c_str(), &st) == 0 && st.st_ino == id) {
      return it->path().string().substr(mount.size());
    }
  }
  return "";
}

ProcessInfoResolver::CacheStats ProcessInfoResolver::cache_stats() const {
  std::lock_guard<std::mutex> g(mu_);
  return stats_;
}

}  // namespace tlswall::agent::attribution
