#include "agent/watch/policy_watcher.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <memory>
#include <vector>

namespace tlswall::agent {
namespace {

using Clock = std::chrono::steady_clock;

// Events that mean "something may be ready": never IN_MODIFY (a write in
// progress), and IN_CREATE only for what is complete when created (see
// created_complete()).
constexpr uint32_t kDirMask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE |
                              IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;
// Events after which the set of watched directories may have to change.
constexpr uint32_t kStructural = IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE |
                                 IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED | IN_Q_OVERFLOW;
constexpr int kMaxSymlinkHops = 40;

std::string errstr(int e) { return std::strerror(e); }

bool is_policy_name(const std::string& base) {
  // The loader's rule (policy/policy_loader.cc): hidden files are not policy.
  return base.size() > 5 && base[0] != '.' && base.compare(base.size() - 5, 5, ".toml") == 0;
}

std::string join(const std::string& dir, const std::string& name) {
  return dir == "/" ? "/" + name : dir + "/" + name;
}

std::string parent_of(const std::string& p) {
  const auto slash = p.find_last_of('/');
  if (slash == std::string::npos || slash == 0) return "/";
  return p.substr(0, slash);
}

std::string base_of(const std::string& p) {
  const auto slash = p.find_last_of('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

std::deque<std::string> split(const std::string& p) {
  std::deque<std::string> out;
  size_t i = 0;
  while (i <= p.size()) {
    const size_t j = std::min(p.find('/', i), p.size());
    if (j > i) out.push_back(p.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

std::string make_absolute(const std::string& p) {
  if (!p.empty() && p[0] == '/') return p;
  char buf[4096];
  if (::getcwd(buf, sizeof(buf)) == nullptr) return "/" + p;
  return join(buf, p);
}

bool read_link(const std::string& p, std::string& out) {
  char buf[4096];
  const ssize_t n = ::readlink(p.c_str(), buf, sizeof(buf));
  if (n < 0 || static_cast<size_t>(n) >= sizeof(buf)) return false;
  out.assign(buf, static_cast<size_t>(n));
  return true;
}

// Directories to watch and, in each, the names that matter.
class WatchPlan {
 public:
  void note(const std::string& dir, const std::string& name) {
    auto& e = dirs_[dir];
    if (!e.all) e.names.insert(name);
  }
  void note_all(const std::string& dir) {
    auto& e = dirs_[dir];
    e.all = true;
    e.names.clear();
  }
  struct Entry {
    bool all = false;
    std::set<std::string> names;
  };
  const std::map<std::string, Entry>& dirs() const { return dirs_; }

  // Resolves `abs` component by component (as the kernel does), noting the
  // directory of every symlink met, of the final component, and of the
  // first missing component. Returns the real path, or nullopt when a
  // component is missing or the symlinks loop.
  std::optional<std::string> resolve(const std::string& abs) {
    std::deque<std::string> todo = split(abs);
    std::string cur = "/";
    int hops = 0;
    while (!todo.empty()) {
      const std::string c = todo.front();
      todo.pop_front();
      if (c == ".") continue;
      if (c == "..") {
        cur = parent_of(cur);
        continue;
      }
      const std::string next = join(cur, c);
      struct stat st {};
      if (::lstat(next.c_str(), &st) != 0) {
        note(cur, c);
        return std::nullopt;
      }
      if (S_ISLNK(st.st_mode)) {
        note(cur, c);
        std::string target;
        if (++hops > kMaxSymlinkHops || !read_link(next, target)) return std::nullopt;
        std::deque<std::string> t = split(target);
        todo.insert(todo.begin(), t.begin(), t.end());
        if (!target.empty() && target[0] == '/') cur = "/";
        continue;
      }
      if (todo.empty()) note(cur, c);
      cur = next;
    }
    return cur;
  }

 private:
  std::map<std::string, Entry> dirs_;
};

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new(), &EVP_MD_CTX_free) {
    ok_ = ctx_ && EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) == 1;
  }
  void update(const void* p, size_t n) { ok_ = ok_ && EVP_DigestUpdate(ctx_.get(), p, n) == 1; }
  void update(const std::string& s) { update(s.data(), s.size()); }
  // "" when OpenSSL failed (never expected; the fingerprint then never matches).
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!ok_ || EVP_DigestFinal_ex(ctx_.get(), md, &len) != 1) return "";
    static const char kHex[] = "0123456789abcdef";
    std::string out;
    for (unsigned int i = 0; i < len; ++i) {
      out += kHex[md[i] >> 4];
      out += kHex[md[i] & 15];
    }
    return out;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx_;
  bool ok_ = false;
};

// Reads a regular file (following symlinks). Returns 0 or an errno.
int read_regular(const std::string& path, std::string& bytes) {
  OwnedFd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (f.get() < 0) return errno;
  struct stat st {};
  if (::fstat(f.get(), &st) != 0) return errno;
  if (!S_ISREG(st.st_mode)) return EINVAL;
  bytes.clear();
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(f.get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) break;
    bytes.append(buf, static_cast<size_t>(n));
  }
  return 0;
}

}  // namespace

PolicyFingerprint fingerprint_policy_path(const std::string& path) {
  PolicyFingerprint fp;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int e = errno;
    if (e == ENOENT || e == ENOTDIR) {
      fp.missing = true;
      return fp;
    }
    // Exists but cannot be examined (permissions, a symlink loop): hash the
    // error so that it changes when the error goes away.
    Sha256 h;
    h.update("\0error\0" + errstr(e));
    fp.hash = h.hex();
    fp.unreadable = 1;
    return fp;
  }
  std::vector<std::pair<std::string, std::string>> files;  // base name, path
  if (S_ISDIR(st.st_mode)) {
    fp.directory = true;
    std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(path.c_str()), &::closedir);
    if (!d) {
      Sha256 h;
      h.update("\0error\0" + errstr(errno));
      fp.hash = h.hex();
      fp.unreadable = 1;
      return fp;
    }
    while (const dirent* e = ::readdir(d.get())) {
      const std::string base = e->d_name;
      if (is_policy_name(base)) files.emplace_back(base, join(path, base));
    }
    std::sort(files.begin(), files.end());
  } else {
    files.emplace_back(base_of(path), path);
  }
  Sha256 h;
  std::string bytes;
  for (const auto& [base, p] : files) {
    const int err = read_regular(p, bytes);
    if (err != 0) {
      // Never equal to any readable content: the name is followed by a
      // second NUL where a length would stand.
      h.update(base.data(), base.size());
      h.update("\0\0error ", 8);
      h.update(errstr(err));
      ++fp.unreadable;
    } else {
      const std::string len = std::to_string(bytes.size());
      h.update(base.data(), base.size());
      h.update("\0", 1);
      h.update(len);
      h.update("\0", 1);
      h.update(bytes);
    }
  }
  fp.files = files.size();
  fp.hash = h.hex();
  return fp;
}

PolicyWatcher::PolicyWatcher(std::string path, PolicyWatcherOptions options)
    : path_(make_absolute(path)), options_(options) {
  if (options_.use_inotify) inotify_ = OwnedFd(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (options_.use_inotify && inotify_.get() < 0) {
    init_error_ = "inotify_init1: " + errstr(errno);
    degraded_reason_ = init_error_;
  }
  const Clock::time_point now = Clock::now();
  next_poll_ = now + options_.poll_interval;
  rearm();
  const PolicyFingerprint fp = fingerprint_policy_path(path_);
  ++stats_.checks;
  missing_ = fp.missing;
  fingerprint_ = fp.hash;
  files_ = fp.files;
  unreadable_ = fp.unreadable;
  is_directory_ = fp.directory;
}

void PolicyWatcher::rearm() {
  ++stats_.rearms;
  if (inotify_.get() < 0) return;
  WatchPlan plan;
  if (const auto real = plan.resolve(path_)) {
    struct stat st {};
    if (::stat(real->c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
      plan.note_all(*real);
      if (std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(real->c_str()), &::closedir); d) {
        std::vector<std::string> names;
        while (const dirent* e = ::readdir(d.get())) {
          if (is_policy_name(e->d_name)) names.push_back(e->d_name);
        }
        // Each file may lead through symlinks (`x.toml -> ..data/x.toml`).
        for (const auto& n : names) plan.resolve(join(*real, n));
      }
    }
  }
  std::map<int, Interest> fresh;
  std::string failure;
  for (const auto& [dir, entry] : plan.dirs()) {
    const int wd = ::inotify_add_watch(inotify_.get(), dir.c_str(), kDirMask);
    if (wd < 0) {
      const int e = errno;
      // A directory that vanished since the plan was made is not an error:
      // its parent's events bring the next re-arm.
      if (e == ENOENT || e == ENOTDIR) continue;
      ++stats_.watch_errors;
      if (failure.empty()) failure = "inotify_add_watch " + dir + ": " + errstr(e);
      continue;
    }
    // Two paths to one directory (bind mounts) share a watch descriptor.
    Interest& in = fresh[wd];
    in.dir = dir;
    if (entry.all || in.all) {
      in.all = true;
      in.names.clear();
    } else {
      in.names.insert(entry.names.begin(), entry.names.end());
    }
  }
  for (const auto& [wd, in] : watches_) {
    if (!fresh.count(wd)) ::inotify_rm_watch(inotify_.get(), wd);
  }
  watches_ = std::move(fresh);
  degraded_reason_ = init_error_.empty() ? failure : init_error_;
}

void PolicyWatcher::mark_pending(Clock::time_point now) {
  if (!pending_) first_event_ = now;
  pending_ = true;
  last_event_ = now;
  ++stats_.events;
}

void PolicyWatcher::on_readable(Clock::time_point now) {
  if (inotify_.get() < 0) return;
  alignas(inotify_event) char buf[65536];
  bool need_rearm = false;
  for (;;) {
    const ssize_t n = ::read(inotify_.get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      break;  // EAGAIN: drained. Anything else: nothing more to read now.
    }
    if (n == 0) break;
    for (ssize_t off = 0; off + static_cast<ssize_t>(sizeof(inotify_event)) <= n;) {
      const auto* ev = reinterpret_cast<const inotify_event*>(buf + off);
      off += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
      if (ev->mask & IN_Q_OVERFLOW) {
        // Events were lost: anything may have changed.
        ++stats_.overflows;
        mark_pending(now);
        need_rearm = true;
        continue;
      }
      const auto it = watches_.find(ev->wd);
      if (it == watches_.end()) continue;  // a watch removed by a re-arm
      const std::string name = ev->len ? std::string(ev->name) : std::string();
      const bool self =
          name.empty() || (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) != 0;
      if (!self && !it->second.all && !it->second.names.count(name)) continue;
      if (ev->mask & IN_CREATE) {
        // A regular file being created is still being written: its
        // IN_CLOSE_WRITE says when it is ready. A symlink, a directory or
        // a new hard link is complete as soon as it exists.
        struct stat st {};
        const std::string p = join(it->second.dir, name);
        const bool complete = (ev->mask & IN_ISDIR) ||
                              (::lstat(p.c_str(), &st) == 0 &&
                               (S_ISLNK(st.st_mode) || (S_ISREG(st.st_mode) && st.st_nlink > 1)));
        if (!complete) continue;
      }
      if (ev->mask & IN_IGNORED) watches_.erase(it);
      if (ev->mask & kStructural) need_rearm = true;
      mark_pending(now);
    }
  }
  if (need_rearm) rearm();
}

std::optional<Clock::time_point> PolicyWatcher::next_deadline() const {
  std::optional<Clock::time_point> d;
  if (pending_) d = std::min(last_event_ + options_.quiet, first_event_ + options_.max_delay);
  if (polling()) d = d ? std::min(*d, next_poll_) : next_poll_;
  return d;
}

bool PolicyWatcher::take_change(Clock::time_point now) {
  const bool settled =
      pending_ && now >= std::min(last_event_ + options_.quiet, first_event_ + options_.max_delay);
  const bool poll = polling() && now >= next_poll_;
  if (!settled && !poll) return false;
  if (settled) pending_ = false;
  if (poll) next_poll_ = now + options_.poll_interval;
  // Re-arm first: a write into a newly watched directory after this point
  // brings a new event, one before it is in the fingerprint below.
  rearm();
  const PolicyFingerprint fp = fingerprint_policy_path(path_);
  ++stats_.checks;
  if (fp.missing == missing_ && fp.hash == fingerprint_) return false;
  missing_ = fp.missing;
  fingerprint_ = fp.hash;
  files_ = fp.files;
  unreadable_ = fp.unreadable;
  is_directory_ = fp.directory;
  ++stats_.changes;
  return true;
}

std::string PolicyWatcher::status() const {
  std::string watched;
  for (const auto& [wd, in] : watches_) watched += (watched.empty() ? "" : ", ") + in.dir;
  std::string out;
  if (missing_) {
    out = "missing: " + path_ + " does not exist; keeping the last good policy";
    if (!watched.empty()) out += ", watching " + watched + " for it";
  } else {
    out = "watching " + path_ + " (" + (is_directory_ ? "directory, " : "file, ") +
          std::to_string(files_) + (files_ == 1 ? " file" : " files");
    if (unreadable_) out += ", " + std::to_string(unreadable_) + " unreadable";
    out += ", hash " + fingerprint_.substr(0, 12) + "), " + std::to_string(watches_.size()) +
           (watches_.size() == 1 ? " watch" : " watches");
  }
  const std::string every = std::to_string(options_.poll_interval.count()) + " ms";
  if (degraded()) {
    out = "degraded: " + degraded_reason_ + "; polling every " + every + "; " + out;
  } else if (!options_.use_inotify) {
    out += "; polling every " + every + " (inotify off)";
  }
  return out;
}

}  // namespace tlswall::agent
