// Owner selectors meet the host: user names -> uids, cgroup paths -> ids.
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vector>

#include "policy/policy.h"

namespace tlswall::policy {

OwnerResolver host_owner_resolver(const std::string& cgroup2_root) {
  OwnerResolver r;
  r.uid = [](const std::string& name) -> std::optional<uint32_t> {
    long size = ::sysconf(_SC_GETPW_R_SIZE_MAX);
    std::vector<char> buf(size > 0 ? static_cast<size_t>(size) : 16384);
    passwd pw{};
    passwd* found = nullptr;
    if (::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found) != 0 || !found) {
      return std::nullopt;
    }
    return static_cast<uint32_t>(found->pw_uid);
  };
  r.cgroup_id = [root = cgroup2_root](const std::string& path) -> std::optional<uint64_t> {
    if (root.empty()) return std::nullopt;
    struct stat st {};
    // A cgroup v2 directory's inode number is its cgroup id (kernfs node id).
    if (::stat((root + (path == "/" ? "" : path)).c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return std::nullopt;
    }
    return static_cast<uint64_t>(st.st_ino);
  };
  return r;
}

}  // namespace tlswall::policy
