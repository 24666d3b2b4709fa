// Whether the daemon may trust a path it reads or writes as root. Two rules,
// one owner/mode test (root or the daemon's own user; no group or other
// write bit, except a sticky directory such as /tmp *on the way*: others
// cannot rename or remove what they do not own there). The same rule as
// sshd's StrictModes, with the sticky exception.
//
// - The policy (read): its content decides what is blocked, so anybody who
//   can change it controls the agent. Symlinks are followed (ConfigMap-style
//   `..data` swaps use them) and judged by what they point at.
// - The paths the daemon creates or writes at start (control socket, pin
//   root, state and disk-buffer directories, the events file's directory):
//   someone who can plant a symlink or a file of their own there makes a
//   root process write, pin or listen where they choose. Such a directory
//   (and an entry the daemon will reuse in it) must not be a symlink, and is
//   created level by level with mkdirat and checked through the opened fd
//   (O_NOFOLLOW), so a symlink swapped in meanwhile is refused, not followed.
//
// Every refusal is one line: "<path> <what is wrong>: refused (<the fix>)".
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>

#include "agent/owned_fd.h"

namespace tlswall::agent {

// nullopt if `path` (a file, or a directory and its *.toml files) is
// trusted; else one line saying which path is wrong and how to fix it.
// A path that does not exist is not this function's business (nullopt):
// the loader reports it.
std::optional<std::string> untrusted_policy_path(const std::string& path);

// ---- paths the daemon owns ----

// What open_private_dir does about levels that do not exist yet.
enum class MissingDir {
  kLeave,      // nothing: returns an empty OwnedFd (checked again once made)
  kCreate,     // creates them; failing to is a start error
  kTryCreate,  // creates them; failing to (a read-only file system) returns
               // an empty OwnedFd: the writer reports it and runs degraded
};

// The directory `dir` (absolute, or relative to the working directory),
// checked and made: every existing directory on the way is owned by root
// or the daemon's user and not writable by others (sticky ones excepted); a
// symlink on the way is followed only if root or the daemon owns it, and
// its target is checked the same way. `dir` itself must be a real
// directory (not a symlink, whoever owns it) owned by root or the daemon
// and writable by nobody else, sticky or not. Missing levels are created
// (0755, `dir` itself with `mode`) with mkdirat and checked through the fd
// they are opened as.
//
// Returns the directory opened O_DIRECTORY|O_NOFOLLOW, or an empty OwnedFd
// as `missing` says. Throws std::runtime_error with one line starting with
// `what` ("pin root /x/tlswall is a symlink (to /y): refused (...)").
OwnedFd open_private_dir(const std::string& dir, mode_t mode, MissingDir missing,
                         const std::string& what);

// The first entry of the checked directory `dirfd` (named `dir` in the
// message) that `wanted` selects and that is a symlink or owned by anybody
// but root and the daemon's user: one line as above, or nullopt. A file
// the daemon will open again (a pin it adopts, a buffer segment it
// replays) must be its own. `wanted` empty: every entry.
std::optional<std::string> foreign_entry(int dirfd, const std::string& dir,
                                         const std::function<bool(const std::string&)>& wanted,
                                         const std::string& what);

// What is at `name` in the checked directory `dirfd` where the daemon will
// bind a Unix socket (`path` names it in the message): nullopt if nothing
// or a socket the daemon may replace (its own or root's, stale); else one
// line: a symlink, not a socket, or another user's socket (never replaced).
std::optional<std::string> unusable_socket_path(int dirfd, const std::string& name,
                                                const std::string& path, const std::string& what);

// Both of the above for the control socket at `path`: its directory
// checked and made (0755), then what is at the path. Returns the
// directory's fd and sets `name` to the socket's name in it; throws
// std::runtime_error with one line.
OwnedFd open_socket_dir(const std::string& path, std::string* name);

}  // namespace tlswall::agent
