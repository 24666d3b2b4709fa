// What lets the proxy handle network input without privileges: listeners
// are created (and fds passed) by the privileged daemon, then the worker
// process that runs the Engine drops to an unprivileged uid/gid with no
// capabilities. See proxy/README.md for the process design.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "proxy/owned.h"

namespace tlswall::proxy {

// Irreversibly drops the calling process to uid/gid: supplementary groups
// cleared, every capability dropped (effective, permitted, inheritable,
// ambient and the bounding set), PR_SET_NO_NEW_PRIVS set. Call it while the
// process is single-threaded (capability sets are per thread), i.e. before
// Engine::start(). Throws std::system_error; on a throw the caller must exit.
void drop_privileges(uid_t uid, gid_t gid);

// True if the calling thread has empty effective, permitted and inheritable
// capability sets.
bool has_no_capabilities();

// Passes fds (listeners) with a short tag ("upgrade", "terminator:<id>")
// over a connected AF_UNIX socket with SCM_RIGHTS. Throws std::system_error.
void send_fds(int unix_fd, const std::string& tag, const std::vector<int>& fds);

struct ReceivedFds {
  std::string tag;  // empty with no fds: the peer closed the socket
  std::vector<OwnedFd> fds;
};
// Receives one send_fds() message (at most max_fds fds). Throws
// std::system_error; a truncated message closes what arrived and throws.
ReceivedFds recv_fds(int unix_fd, size_t max_fds = 16);

}  // namespace tlswall::proxy
