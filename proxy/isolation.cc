#include "proxy/isolation.h"

#include <grp.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

namespace tlswall::proxy {

namespace {

[[noreturn]] void throw_errno(const char* what) {
  throw std::system_error(errno, std::generic_category(), what);
}

int capget_raw(__user_cap_header_struct* h, __user_cap_data_struct* d) {
  return static_cast<int>(syscall(SYS_capget, h, d));
}
int capset_raw(__user_cap_header_struct* h, const __user_cap_data_struct* d) {
  return static_cast<int>(syscall(SYS_capset, h, d));
}

int last_cap() {
  // /proc knows the running kernel's last capability; fall back to headers.
  FILE* f = std::fopen("/proc/sys/kernel/cap_last_cap", "re");
  int v = CAP_LAST_CAP;
  if (f != nullptr) {
    if (std::fscanf(f, "%d", &v) != 1) v = CAP_LAST_CAP;
    std::fclose(f);
  }
  return v;
}

}  // namespace

void drop_privileges(uid_t uid, gid_t gid) {
  if (uid == 0) throw std::system_error(EINVAL, std::generic_category(), "drop to uid 0");
  // The bounding set can only shrink while we still hold CAP_SETPCAP.
  if (geteuid() == 0) {
    for (int cap = 0; cap <= last_cap(); ++cap) {
      if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) {
        throw_errno("PR_CAPBSET_DROP");
      }
    }
  }
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
    throw_errno("PR_CAP_AMBIENT_CLEAR_ALL");
  }
  if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0) throw_errno("PR_SET_KEEPCAPS");
  if (getuid() == 0 || geteuid() == 0) {
    if (setgroups(0, nullptr) != 0) throw_errno("setgroups");
  }
  if (setresgid(gid, gid, gid) != 0) throw_errno("setresgid");
  if (setresuid(uid, uid, uid) != 0) throw_errno("setresuid");
  // Leaving uid 0 cleared the sets already; make it explicit for non-root
  // callers that held file capabilities.
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (capset_raw(&hdr, data) != 0) throw_errno("capset");
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) throw_errno("PR_SET_NO_NEW_PRIVS");
  // Verify: there must be no way back.
  if (setresuid(0, 0, 0) == 0) {
    throw std::system_error(EPERM, std::generic_category(), "could regain uid 0 after drop");
  }
  if (!has_no_capabilities()) {
    throw std::system_error(EPERM, std::generic_category(), "capabilities left after drop");
  }
}

bool has_no_capabilities() {
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (capget_raw(&hdr, data) != 0) return false;
  for (const auto& d : data) {
    if (d.effective != 0 || d.permitted != 0 || d.inheritable != 0) return false;
  }
  return true;
}

}  // namespace tlswall::proxy
