#include "agent/path_trust.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <vector>

namespace tlswall::agent {
namespace {

namespace fs = std::filesystem;

std::string mode_text(mode_t m) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "%04o", static_cast<unsigned>(m & 07777));
  return buf;
}

bool trusted_owner(uid_t uid) { return uid == 0 || uid == ::geteuid(); }

// Owner and write bits of one path (its lstat or fstat). A sticky directory
// may be writable by others when it is only on the way (sticky_ok), not
// when it is the policy directory or one the daemon writes into.
std::optional<std::string> judge(const std::string& p, const struct stat& st, bool sticky_ok) {
  if (!trusted_owner(st.st_uid)) {
    return p + " is owned by uid " + std::to_string(st.st_uid) +
           ", not root: refused (chown root " + p + ")";
  }
  const bool sticky_dir = S_ISDIR(st.st_mode) && (st.st_mode & S_ISVTX);
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(sticky_dir && sticky_ok)) {
    return p + " is writable by " +
           ((st.st_mode & S_IWOTH) ? std::string("everyone") : std::string("its group")) +
           " (mode " + mode_text(st.st_mode) + "): refused (chmod go-w " + p + ")";
  }
  return std::nullopt;
}

// One path component (already resolved).
std::optional<std::string> check_one(const fs::path& p, bool sticky_ok) {
  struct stat st {};
  if (::lstat(p.c_str(), &st) != 0) return std::nullopt;  // gone meanwhile: the loader says so
  return judge(p.string(), st, sticky_ok);
}

// The resolved file and every directory above it.
std::optional<std::string> check_chain(const fs::path& target, bool target_sticky_ok) {
  std::error_code ec;
  const fs::path real = fs::canonical(target, ec);
  if (ec) return std::nullopt;
  if (auto bad = check_one(real, target_sticky_ok)) return bad;
  for (fs::path p = real.parent_path(); !p.empty(); p = p.parent_path()) {
    if (auto bad = check_one(p, true)) return bad;
    if (p == p.root_path()) break;
  }
  return std::nullopt;
}

std::string link_target(int dirfd, const std::string& name) {
  char buf[4096];
  const ssize_t n = ::readlinkat(dirfd, name.c_str(), buf, sizeof(buf) - 1);
  return n < 0 ? std::string("?") : std::string(buf, static_cast<size_t>(n));
}

[[noreturn]] void refuse(const std::string& what, const std::string& line) {
  throw std::runtime_error(what + " " + line);
}

}  // namespace

std::optional<std::string> untrusted_policy_path(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) return std::nullopt;
  if (!fs::is_directory(st)) return check_chain(path, false);
  // The directory itself may not be sticky-and-writable: policy files
  // placed there by others would be read.
  if (auto bad = check_chain(path, false)) return bad;
  for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string base = it->path().filename().string();
    if (base.size() > 5 && base[0] != '.' && base.compare(base.size() - 5, 5, ".toml") == 0) {
      if (auto bad = check_chain(it->path(), false)) return bad;
    }
  }
  return std::nullopt;
}

OwnedFd open_private_dir(const std::string& dir, mode_t mode, MissingDir missing,
                         const std::string& what) {
  std::error_code ec;
  const fs::path abs = fs::absolute(dir, ec).lexically_normal();
  if (ec) refuse(what, dir + ": " + ec.message());
  std::vector<std::string> parts;
  for (const auto& c : abs.relative_path()) {
    if (!c.empty() && c != ".") parts.push_back(c.string());
  }
  OwnedFd cur(::open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (cur.get() < 0) refuse(what, std::string("/: ") + std::strerror(errno));
  std::string shown = "/";  // the path as configured, up to the current level
  struct stat st {};
  if (::fstat(cur.get(), &st) != 0) refuse(what, "/: " + std::string(std::strerror(errno)));
  if (auto bad = judge(shown, st, !parts.empty())) refuse(what, *bad);
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string& name = parts[i];
    const bool last = i + 1 == parts.size();
    shown = (fs::path(shown) / name).string();
    if (::fstatat(cur.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno != ENOENT) refuse(what, shown + ": " + std::strerror(errno));
      if (missing == MissingDir::kLeave) return OwnedFd();
      if (::mkdirat(cur.get(), name.c_str(), last ? mode : 0755) != 0 && errno != EEXIST) {
        if (missing == MissingDir::kTryCreate) return OwnedFd();
        refuse(what, "cannot create " + shown + ": " + std::strerror(errno));
      }
    } else if (S_ISLNK(st.st_mode)) {
      if (last) {
        refuse(what, shown + " is a symlink (to " + link_target(cur.get(), name) +
                         "): refused (tlswalld does not follow a symlink at its own directory: "
                         "make " +
                         shown + " a directory owned by root, or configure the real path)");
      }
      // A symlink on the way (/var/run -> /run): only one root or the daemon
      // made, to a place nobody else can change.
      if (!trusted_owner(st.st_uid)) {
        refuse(what, shown + " is a symlink owned by uid " + std::to_string(st.st_uid) +
                         ", not root: refused (configure the real path, or rm " + shown + ")");
      }
      if (auto bad = check_chain(shown, true)) refuse(what, *bad);
      OwnedFd next(::openat(cur.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (next.get() < 0) refuse(what, shown + ": " + std::strerror(errno));
      if (::fstat(next.get(), &st) != 0) refuse(what, shown + ": " + std::strerror(errno));
      if (auto bad = judge(shown, st, true)) refuse(what, *bad);
      cur = std::move(next);
      continue;
    }
    // Opened without following: a symlink swapped in after the fstatat or
    // the mkdirat fails here (ELOOP) instead of leading elsewhere.
    OwnedFd next(
        ::openat(cur.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (next.get() < 0) {
      if (errno == ELOOP) {
        refuse(what, shown + " is a symlink (to " + link_target(cur.get(), name) +
                         "): refused (make it a directory owned by root)");
      }
      if (errno == ENOTDIR) {
        refuse(what, shown + " is not a directory: refused (remove it, or configure another path)");
      }
      refuse(what, shown + ": " + std::strerror(errno));
    }
    if (::fstat(next.get(), &st) != 0) refuse(what, shown + ": " + std::strerror(errno));
    if (auto bad = judge(shown, st, !last)) refuse(what, *bad);
    cur = std::move(next);
  }
  return cur;
}

std::optional<std::string> foreign_entry(int dirfd, const std::string& dir,
                                         const std::function<bool(const std::string&)>& wanted,
                                         const std::string& what) {
  const int dup = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dup < 0) return what + " " + dir + ": " + std::strerror(errno);
  DIR* d = ::fdopendir(dup);
  if (!d) {
    ::close(dup);
    return what + " " + dir + ": " + std::strerror(errno);
  }
  std::optional<std::string> out;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == ".." || (wanted && !wanted(name))) continue;
    struct stat st {};
    if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // gone
    const std::string path = (fs::path(dir) / name).string();
    if (S_ISLNK(st.st_mode)) {
      out = what + " " + path + " is a symlink (to " + link_target(dirfd, name) +
            "): refused (tlswalld does not follow symlinks in its own directories: rm " + path +
            ")";
      break;
    }
    if (!trusted_owner(st.st_uid)) {
      out = what + " " + path + " is owned by uid " + std::to_string(st.st_uid) +
            ", not root: refused (chown root " + path + ", or remove it)";
      break;
    }
  }
  ::closedir(d);
  return out;
}

std::optional<std::string> unusable_socket_path(int dirfd, const std::string& name,
                                                const std::string& path, const std::string& what) {
  struct stat st {};
  if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return std::nullopt;
    return what + " " + path + ": " + std::strerror(errno);
  }
  if (S_ISLNK(st.st_mode)) {
    return what + " " + path + " is a symlink (to " + link_target(dirfd, name) +
           "): refused (tlswalld binds only a path of its own: rm " + path + ")";
  }
  if (!S_ISSOCK(st.st_mode)) {
    return what + " " + path + " exists and is not a socket: refused, it is not replaced (check " +
           "[control] socket, or rm " + path + ")";
  }
  if (!trusted_owner(st.st_uid)) {
    return what + " " + path + " is a socket of uid " + std::to_string(st.st_uid) +
           ", not root: refused, it is not replaced (rm " + path + " if it is stale)";
  }
  return std::nullopt;
}

OwnedFd open_socket_dir(const std::string& path, std::string* name) {
  const fs::path p(path);
  *name = p.filename().string();
  OwnedFd dir = open_private_dir(p.has_parent_path() ? p.parent_path().string() : ".", 0755,
                                 MissingDir::kCreate, "control socket directory");
  if (auto bad = unusable_socket_path(dir.get(), *name, path, "control socket")) {
    throw std::runtime_error(*bad);
  }
  return dir;
}

}  // namespace tlswall::agent
