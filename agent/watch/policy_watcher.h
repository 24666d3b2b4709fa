// PolicyWatcher: hot reload of the policy path (a file or a directory of
// *.toml) with inotify, for config management that replaces files by rename
// or, Kubernetes-ConfigMap style, by swapping a `..data` symlink.
//
// It reports a change once per settled change: an event starts a debounce
// (`quiet` of silence, at most `max_delay` after the first event of a
// stream), and when it settles the watcher re-reads the content and reports
// only if the content fingerprint differs from the last one reported. The
// fingerprint is the policy hash (sha256 over base name, NUL, decimal length,
// NUL, bytes of every non-hidden *.toml, sorted by base name; see
// policy/policy_loader.cc), so it equals `tlswallctl status`'s policy hash
// once the daemon has loaded that content.
//
// How the daemon drives it (single-threaded, no timer of its own):
//   - add fd() to epoll for EPOLLIN when fd() >= 0; call on_readable() when
//     it is readable;
//   - wait no longer than next_deadline() (an epoll timeout, or its periodic
//     tick: a tick of 250 ms adds at most 250 ms to the reported change);
//   - after every wake-up call take_change(now); when it returns true, skip
//     the reload if missing() (the path is gone: keep the last good policy)
//     or if fingerprint() equals the policy hash in force, else reload; the
//     normal reload validates and keeps the last good policy on errors.
// Construct it before the initial policy load, so that a change made between
// the load and the first watch cannot be missed.
//
// What it reacts to: IN_CLOSE_WRITE, IN_MOVED_TO/FROM, IN_DELETE, IN_ATTRIB,
// IN_CREATE of symlinks, directories and hard links, the watched directories
// vanishing or moving, and queue overflow; never IN_MODIFY, so a file being
// written in place is not read before the writer closes it. Limitation: a
// file written in place while another change to the policy settles may be
// read half-written (a later close reports the final content); replacing
// files by rename never shows a half-written file.
//
// Watches are re-armed after every structural event (and at every settled
// change): the directory holding the policy path's last component (rename
// replaces the inode, so a file path is watched through its parent), the
// directory holding every symlink met while resolving the path or any policy
// file (so a swapped `..data` or a swapped policy-path symlink is seen), the
// policy directory, and the directory holding each resolved policy file (the
// new `..2026_...` target after a swap). A missing path is watched through
// its nearest existing ancestor until it comes back.
//
// Degraded mode: when inotify cannot be used (no instance left, watch limit,
// permission) the watcher polls the fingerprint every `poll_interval` through
// next_deadline()/take_change(); status() says so. Nothing here throws after
// construction, and the constructor throws nothing either.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>

#include "agent/owned_fd.h"

namespace tlswall::agent {

struct PolicyWatcherOptions {
  // Silence after the last event before a change is taken.
  std::chrono::milliseconds quiet{200};
  // Longest delay after the first event of a continuous stream.
  std::chrono::milliseconds max_delay{2000};
  // Polling period in degraded mode (no usable inotify) and without inotify.
  std::chrono::milliseconds poll_interval{5000};
  // False: poll only, for file systems whose changes inotify does not see
  // (NFS, FUSE, other hosts writing a shared mount).
  bool use_inotify = true;
};

class PolicyWatcher {
 public:
  using Clock = std::chrono::steady_clock;

  // `path`: the policy file or directory (relative paths are made absolute
  // against the current directory). Takes the initial fingerprint; that
  // content counts as already reported.
  explicit PolicyWatcher(std::string path, PolicyWatcherOptions options = {});
  PolicyWatcher(const PolicyWatcher&) = delete;
  PolicyWatcher& operator=(const PolicyWatcher&) = delete;

  // The inotify fd (non-blocking) for epoll, or -1 when inotify is unusable
  // (then only next_deadline()/take_change() polling works).
  int fd() const { return inotify_.get(); }

  // Drains the inotify queue; records relevant events and re-arms watches
  // after structural ones. Never blocks.
  void on_readable(Clock::time_point now = Clock::now());

  // When take_change() has work to do; nullopt when nothing is pending.
  std::optional<Clock::time_point> next_deadline() const;

  // True once when a settled change is due and the content differs from the
  // last one reported (including vanishing and coming back).
  bool take_change(Clock::time_point now = Clock::now());

  // The state as of the last take_change() (or construction).
  bool missing() const { return missing_; }
  // The policy hash of the content last reported ("" while missing).
  const std::string& fingerprint() const { return fingerprint_; }
  // Files in that content (directory: *.toml count; file: 1).
  size_t files() const { return files_; }
  // Inotify unusable or a watch could not be set: polling instead.
  bool degraded() const { return !degraded_reason_.empty(); }
  // Polling (degraded, or use_inotify = false).
  bool polling() const { return degraded() || !options_.use_inotify; }
  const std::string& path() const { return path_; }

  // One line for `tlswallctl status`, e.g.
  //   "watching /etc/tlswall/policy.d (directory, 2 files, hash 1f0c..), 3 watches"
  //   "missing: /etc/tlswall/policy.d; keeping the last good policy, watching /etc/tlswall"
  //   "degraded: inotify_init1: Too many open files; polling every 5000 ms; ..."
  std::string status() const;

  struct Stats {
    uint64_t events = 0;        // relevant inotify events
    uint64_t overflows = 0;     // IN_Q_OVERFLOW
    uint64_t rearms = 0;        // watch sets rebuilt
    uint64_t checks = 0;        // fingerprints taken
    uint64_t changes = 0;       // take_change() == true
    uint64_t watch_errors = 0;  // inotify_add_watch failures
  };
  const Stats& stats() const { return stats_; }

 private:
  struct Interest {
    std::string dir;
    bool all = false;             // every name in the directory matters
    std::set<std::string> names;  // else only these
  };

  void rearm();
  void mark_pending(Clock::time_point now);

  std::string path_;
  PolicyWatcherOptions options_;
  OwnedFd inotify_;
  std::map<int, Interest> watches_;  // by watch descriptor
  std::string degraded_reason_;
  std::string init_error_;  // inotify itself unusable

  bool pending_ = false;
  Clock::time_point first_event_{};
  Clock::time_point last_event_{};
  Clock::time_point next_poll_{};

  bool missing_ = false;
  std::string fingerprint_;
  size_t files_ = 0;
  size_t unreadable_ = 0;
  bool is_directory_ = false;
  Stats stats_;
};

// The policy hash of what is at `path` now, as the loader computes it (empty
// when the path does not exist). Exposed for tests and for callers that want
// to compare without a watcher.
struct PolicyFingerprint {
  bool missing = false;
  bool directory = false;
  std::string hash;       // sha256 hex; "" when missing
  size_t files = 0;       // *.toml files (or 1 for a file path)
  size_t unreadable = 0;  // files that could not be read (their error is hashed instead)
};
PolicyFingerprint fingerprint_policy_path(const std::string& path);

}  // namespace tlswall::agent
