#include "agent/sys_mounts.h"

#include <sys/mount.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace tlswall::agent {
namespace {

std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      const std::string oct = s.substr(i + 1, 3);
      if (oct.size() == 3 && oct.find_first_not_of("01234567") == std::string::npos) {
        out += static_cast<char>(std::stoi(oct, nullptr, 8));
        i += 3;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

bool is_under(const std::string& path, const std::string& mount) {
  if (mount == "/") return true;
  return path == mount || (path.size() > mount.size() &&
                           path.compare(0, mount.size(), mount) == 0 && path[mount.size()] == '/');
}

}  // namespace

std::vector<MountEntry> parse_mounts(const std::string& text) {
  std::vector<MountEntry> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    MountEntry e;
    if (ls >> e.source >> e.target >> e.fstype) {
      e.source = unescape(e.source);
      e.target = unescape(e.target);
      out.push_back(e);
    }
  }
  return out;
}

std::vector<std::string> find_mounts(const std::string& fstype) {
  std::ifstream in("/proc/self/mounts");
  std::stringstream ss;
  ss << in.rdbuf();
  std::vector<std::string> out;
  for (const auto& e : parse_mounts(ss.str())) {
    if (e.fstype == fstype) out.push_back(e.target);
  }
  return out;
}

BpffsResult ensure_bpffs(const std::string& pin_root) {
  const std::string root = std::filesystem::path(pin_root).lexically_normal().string();
  std::string best;
  for (const auto& m : find_mounts("bpf")) {
    if (is_under(root, m) && m.size() > best.size()) best = m;
  }
  if (!best.empty()) return {best, false, false};

  // The conventional place when the pins live there (as Cilium does), else
  // the pin root itself, so nothing else of the file system is shadowed.
  const std::string target = is_under(root, "/sys/fs/bpf") ? std::string("/sys/fs/bpf") : root;
  std::error_code ec;
  std::filesystem::create_directories(target, ec);
  if (ec) throw std::runtime_error("cannot create " + target + " for bpffs: " + ec.message());
  if (::mount("bpf", target.c_str(), "bpf", 0, "mode=0700") != 0) {
    throw std::runtime_error("cannot mount bpffs at " + target + ": " + std::strerror(errno));
  }
  return {target, true, target == root};
}

std::string find_cgroup2() {
  const auto m = find_mounts("cgroup2");
  return m.empty() ? std::string() : m.front();
}

std::string ensure_tracefs() {
  for (const std::string& m : find_mounts("tracefs")) {
    if (m == "/sys/kernel/tracing" || m == "/sys/kernel/debug/tracing") return m;
  }
  const char* target = "/sys/kernel/tracing";
  if (::mount("tracefs", target, "tracefs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) {
    throw std::runtime_error(std::string("no tracefs mounted and cannot mount one at ") + target +
                             ": " + std::strerror(errno));
  }
  return target;
}

Cgroup2Result ensure_cgroup2(const std::string& fallback) {
  const std::string found = find_cgroup2();
  if (!found.empty()) return {found, false};
  std::error_code ec;
  std::filesystem::create_directories(fallback, ec);
  if (ec) throw std::runtime_error("cannot create " + fallback + " for cgroup2: " + ec.message());
  if (::mount("cgroup2", fallback.c_str(), "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) !=
      0) {
    throw std::runtime_error("no cgroup v2 mount found and cannot mount one at " + fallback + ": " +
                             std::strerror(errno));
  }
  return {fallback, true};
}

}  // namespace tlswall::agent
