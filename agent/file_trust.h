// Whether the daemon may trust a file it reads as root (the policy): its
// content decides what is blocked, so anybody who can change it controls
// the agent. Trusted: the file (after symlinks, as ConfigMap-style `..data`
// swaps use them) and every directory on the way to it from / are owned by
// root or by the daemon's own user, and writable by nobody else: no group
// or other write bit, except on a directory with the sticky bit (such as
// /tmp: others cannot rename or remove what they do not own there). The
// same rule as sshd's StrictModes, with the sticky exception.
#pragma once

#include <optional>
#include <string>

namespace tlswall::agent {

// nullopt if `path` (a file, or a directory and its *.toml files) is
// trusted; else one line saying which path is wrong and how to fix it.
// A path that does not exist is not this function's business (nullopt):
// the loader reports it.
std::optional<std::string> untrusted_policy_path(const std::string& path);

}  // namespace tlswall::agent
