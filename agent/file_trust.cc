#include "agent/file_trust.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

namespace tlswall::agent {
namespace {

namespace fs = std::filesystem;

std::string mode_text(mode_t m) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "%04o", static_cast<unsigned>(m & 07777));
  return buf;
}

// One path component (already resolved): owner and write bits. A sticky
// directory may be writable by others when it is only on the way
// (sticky_ok), not when it is the policy directory itself.
std::optional<std::string> check_one(const fs::path& p, bool sticky_ok) {
  struct stat st {};
  if (::lstat(p.c_str(), &st) != 0) return std::nullopt;  // gone meanwhile: the loader says so
  const uid_t me = ::geteuid();
  if (st.st_uid != 0 && st.st_uid != me) {
    return p.string() + " is owned by uid " + std::to_string(st.st_uid) +
           ", not root: refused (chown root " + p.string() + ")";
  }
  const bool sticky_dir = S_ISDIR(st.st_mode) && (st.st_mode & S_ISVTX);
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(sticky_dir && sticky_ok)) {
    return p.string() + " is writable by " +
           ((st.st_mode & S_IWOTH) ? std::string("everyone") : std::string("its group")) +
           " (mode " + mode_text(st.st_mode) + "): refused (chmod go-w " + p.string() + ")";
  }
  return std::nullopt;
}

// The resolved file and every directory above it.
std::optional<std::string> check_chain(const fs::path& target) {
  std::error_code ec;
  const fs::path real = fs::canonical(target, ec);
  if (ec) return std::nullopt;
  if (auto bad = check_one(real, false)) return bad;
  for (fs::path p = real.parent_path(); !p.empty(); p = p.parent_path()) {
    if (auto bad = check_one(p, true)) return bad;
    if (p == p.root_path()) break;
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> untrusted_policy_path(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) return std::nullopt;
  if (!fs::is_directory(st)) return check_chain(path);
  // The directory itself may not be sticky-and-writable: policy files
  // placed there by others would be read.
  if (auto bad = check_chain(path)) return bad;
  for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string base = it->path().filename().string();
    if (base.size() > 5 && base[0] != '.' && base.compare(base.size() - 5, 5, ".toml") == 0) {
      if (auto bad = check_chain(it->path())) return bad;
    }
  }
  return std::nullopt;
}

}  // namespace tlswall::agent
