// LinkWatcher: the network interfaces of the daemon's network namespace that
// match the configured patterns, followed live over rtnetlink
// (NETLINK_ROUTE, RTMGRP_LINK), so the daemon attaches its tc classifier to
// interfaces that appear and forgets those that vanish.
//
// Patterns (InterfacePatterns): each is an exact name ("eth0"), an fnmatch(3)
// glob ("eth*", "veth*", "en?[0-9]") or an exclusion "!glob". A name is
// watched when it matches at least one inclusion and no exclusion; the
// order does not matter (an exclusion always wins). At least one inclusion
// is required.
//
// How the daemon drives it:
//   - construct it (opens and subscribes the socket first), then call
//     initial_dump() for the current set and attach to those;
//   - add fd() to epoll for EPOLLIN; on readable call on_readable() and act
//     on the returned changes in order;
//   - also wait no longer than next_deadline() and then call on_tick(now):
//     only set after a failed re-dump (degraded), to retry it.
// Changes are computed against the watcher's own view of every link, so
// repeated, stale or out-of-order notifications produce no duplicates. An
// interface that is down is still reported (tc can attach to it). Renames
// keep the ifindex (tc filters stay attached); a rename into or out of the
// patterns is reported as added or removed. A netlink overrun (ENOBUFS)
// triggers a full RTM_GETLINK dump and a diff against the view. Bridge-port
// notifications (AF_BRIDGE) are not link changes and are ignored.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "agent/owned_fd.h"

namespace tlswall::agent {

class InterfacePatterns {
 public:
  // Throws std::invalid_argument with a one-line reason for an empty
  // pattern, a bare "!", an exact name longer than 15 bytes (IFNAMSIZ - 1,
  // it could never match), a glob fnmatch rejects, or no inclusion at all.
  explicit InterfacePatterns(std::vector<std::string> patterns);

  // The first inclusion that `name` matches, or nullopt when none matches or
  // an exclusion does.
  std::optional<std::string> match(const std::string& name) const;
  const std::vector<std::string>& patterns() const { return all_; }

 private:
  std::vector<std::string> all_;
  std::vector<std::string> include_;
  std::vector<std::string> exclude_;
};

struct LinkInfo {
  int ifindex = 0;
  std::string name;
  std::string kind;     // IFLA_INFO_KIND ("veth", "bridge", ...), "" for physical
  bool up = false;      // IFF_UP
  std::string pattern;  // the inclusion it matched
};

struct LinkChange {
  enum class Kind { kAdded, kRemoved, kRenamed };
  Kind kind = Kind::kAdded;
  int ifindex = 0;
  std::string name;      // current name (for kRemoved: the last name seen)
  std::string old_name;  // kRenamed, and kAdded/kRemoved caused by a rename
  std::string pattern;   // the inclusion matched by `name`; "" for kRemoved
};
const char* link_change_kind_name(LinkChange::Kind k);  // "added", "removed", "renamed"

struct LinkWatcherOptions {
  // Receive buffer of the notification socket (SO_RCVBUFFORCE, else
  // SO_RCVBUF). Small values only make sense in tests of the overrun path.
  int rcvbuf_bytes = 1 << 20;
  // Retry period of a failed re-dump.
  std::chrono::milliseconds resync_retry{1000};
  // How long one dump may take before it counts as failed.
  std::chrono::milliseconds dump_timeout{2000};
};

class LinkWatcher {
 public:
  using Clock = std::chrono::steady_clock;

  // Opens the NETLINK_ROUTE socket and joins RTMGRP_LINK. Throws
  // std::runtime_error (socket or bind failed): a start-up failure.
  explicit LinkWatcher(InterfacePatterns patterns, LinkWatcherOptions options = {});
  LinkWatcher(const LinkWatcher&) = delete;
  LinkWatcher& operator=(const LinkWatcher&) = delete;

  int fd() const { return sock_.get(); }

  // Dumps every link (RTM_GETLINK), makes it the watcher's view and returns
  // the matching ones, by ifindex. Throws std::runtime_error when the dump
  // fails after retries (a start-up failure).
  std::vector<LinkInfo> initial_dump();

  // Reads every pending notification; returns the changes to the matching
  // set in the order they happened. Never blocks, never throws.
  std::vector<LinkChange> on_readable();

  // Set while a re-dump is owed (it failed); nullopt otherwise.
  std::optional<Clock::time_point> next_deadline() const;
  // Retries an owed re-dump when due; returns its changes.
  std::vector<LinkChange> on_tick(Clock::time_point now = Clock::now());

  // The current matching set, by ifindex.
  std::vector<LinkInfo> matching() const;
  bool degraded() const { return resync_owed_; }
  // One line for `tlswallctl status`, e.g.
  //   "watching links: 2 of 5 match [eth*, veth*, !veth-t*]; 1 overrun re-dumped"
  //   "degraded: re-dump after overrun failed (...); retrying; matching set may be stale"
  std::string status() const;

  struct Stats {
    uint64_t messages = 0;  // link notifications read
    uint64_t overruns = 0;  // ENOBUFS / NLMSG_OVERRUN / truncated reads
    uint64_t dumps = 0;     // successful dumps
    uint64_t dump_failures = 0;
  };
  const Stats& stats() const { return stats_; }

 private:
  struct Link {
    std::string name;
    std::string kind;
    bool up = false;
  };

  // One full dump into `out`; "" or the reason it failed.
  std::string dump(std::map<int, Link>& out);
  // Dump and diff against view_; sets resync_owed_ on failure.
  void resync(std::vector<LinkChange>& changes);
  void apply_new(int ifindex, Link link, std::vector<LinkChange>& changes);
  void apply_del(int ifindex, std::vector<LinkChange>& changes);

  InterfacePatterns patterns_;
  LinkWatcherOptions options_;
  OwnedFd sock_;
  uint32_t dump_seq_ = 1;
  std::map<int, Link> view_;  // every link of the namespace, by ifindex
  bool resync_owed_ = false;
  std::string resync_error_;
  Clock::time_point resync_at_{};
  Stats stats_;
};

}  // namespace tlswall::agent
