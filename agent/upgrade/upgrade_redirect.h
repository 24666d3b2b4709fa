// Transparent TLS upgrade, kernel side: loads bpf/upgrade_redirect.bpf.c,
// attaches it to one cgroup v2 directory, publishes which connects are
// upgraded, and lets the proxy recover the original destination of a
// connection it accepted.
//
//   connect4/connect6   a selected TCP connect() is rewritten to the proxy:
//                       127.0.0.1:port_v4, [::1]:port_v6, and an IPv4-mapped
//                       destination to ::ffff:127.0.0.1:port_v4
//   sock_ops            records the connection under the client's (address,
//                       port) as the proxy's getpeername() shows it
//   getpeername4/6      the client still sees its original peer
//
// Connects of the proxy worker's uid are never redirected. A selected
// connect whose record cannot be written fails (EPERM): fail closed.
//
// How the daemon drives it:
//   1. UpgradeRedirect r({.cgroup = "/sys/fs/cgroup/unified/app.slice",
//                         .proxy_port_v4 = P4, .proxy_port_v6 = P6,
//                         .proxy_uid = U, .pin_dir = "/sys/fs/bpf/tlswall"});
//      (the proxy worker runs as uid U, which nothing else uses, and listens
//      on 127.0.0.1:P4 and [::1]:P6 in the daemon's network namespace)
//   2. r.publish(selection) on start and on every policy reload; the swap
//      is atomic, a throw leaves the previous selection in force.
//   3. The proxy, for each accepted socket: getpeername() -> r.take(peer);
//      nullopt means "not ours / unknown": close it (fail closed).
//   4. r.counters() for status; remove_pins(pin_dir) on teardown.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/owned_fd.h"

extern "C" {
#include "abi/tlswall_upgrade_abi.h"
}

struct upgrade_redirect;  // generated skeleton
struct bpf_link;

namespace tlswall::agent::upgrade {

// ---- what to upgrade ----

struct PortRange {
  uint16_t first = 0;
  uint16_t last = 0;  // inclusive
};

struct UpgradeRuleSpec {
  uint32_t rule_id = 0;  // unique in a selection; reported back by take()
  // "198.18.0.0/15", "2001:db8::/32", or a bare address (a host). Host bits
  // are ignored. IPv4-mapped IPv6 prefixes are refused: write them as IPv4
  // (a mapped destination is judged as IPv4).
  std::vector<std::string> cidrs;
  std::vector<PortRange> ports;
  std::vector<uint32_t> uids;      // empty: any uid
  std::vector<std::string> comms;  // empty: any comm; 1..15 bytes each
  // Cgroups whose tasks (and their descendants') connects the rule takes:
  // (cgroup id, level: "/" is 0, "/a" 1). Empty with cgroup_filter false:
  // any cgroup. With cgroup_filter true and none listed (none of the named
  // cgroups exists on this host), the rule selects nobody.
  std::vector<std::pair<uint64_t, uint32_t>> cgroups;
  bool cgroup_filter = false;
  // Executables whose processes' connects the rule takes: (device in the
  // kernel's encoding, major << 20 | minor; inode). With exe_filter true
  // and none listed (no such file here), the rule selects nobody.
  std::vector<std::pair<uint32_t, uint64_t>> exes;
  bool exe_filter = false;
};

// Where rules overlap (same destination and port), the earlier rule owns
// the connection; if its owner filters do not match, it is not upgraded.
struct UpgradeSelection {
  std::vector<UpgradeRuleSpec> rules;
};

// The kernel rows of a selection (no slot yet). Pure; tested without root.
struct CompiledSelection {
  struct Dest4 {
    uint8_t addr[4];
    uint8_t prefix_len;
    uint16_t class_id;
  };
  struct Dest6 {
    uint8_t addr[16];
    uint8_t prefix_len;
    uint16_t class_id;
  };
  struct Port {
    uint16_t class_id;
    uint16_t port;       // first port of the prefix
    uint8_t prefix_len;  // 0..16
    twu_rule rule;
  };
  std::vector<Dest4> v4;
  std::vector<Dest6> v6;
  std::vector<Port> ports;
  std::vector<std::pair<uint32_t, uint32_t>> uids;      // (rule_id, uid)
  std::vector<std::pair<uint32_t, std::string>> comms;  // (rule_id, comm)
  std::vector<std::pair<uint32_t, uint64_t>> cgroups;   // (rule_id, cgroup id)
  struct Exe {
    uint32_t rule_id, dev;
    uint64_t ino;
  };
  std::vector<Exe> exes;
};
// Throws std::invalid_argument naming the rule and the bad item, or when
// the tables exceed the kernel's sizes (TWU_MAX_*).
CompiledSelection compile_selection(const UpgradeSelection& sel);

// ---- what the proxy learns ----

struct OriginalDestination {
  sockaddr_storage destination{};  // AF_INET (also for IPv4-mapped clients) or AF_INET6
  uint32_t rule_id = 0;
  uint64_t generation = 0;  // selection generation that chose the rule
  uint32_t pid = 0;         // tgid of the connecting task
  uint32_t tid = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::string comm;
  uint64_t cgroup_id = 0;           // cgroup v2 id of the connecting task
  uint64_t socket_cookie = 0;       // the client socket's cookie
  bool client_v4_mapped = false;    // the client used an IPv4-mapped IPv6 address
  std::chrono::nanoseconds age{0};  // since the connect() (CLOCK_MONOTONIC)
};

struct UpgradeRedirectCounters {
  uint64_t redirected = 0;      // connects rewritten to the proxy
  uint64_t proxy_own = 0;       // selected but the proxy worker's own connect: left alone
  uint64_t map_full = 0;        // a connection record could not be written
  uint64_t owner_filtered = 0;  // destination selected, uid/comm filter not matched
  uint64_t peer_recorded = 0;   // proxy-side records written
  uint64_t getpeername = 0;     // getpeername answers rewritten
  uint64_t refused = 0;         // selected connects refused (no record: fail closed)
  uint64_t other_netns = 0;     // redirected outside the proxy's netns (no proxy-side record)
};

struct UpgradeRedirectOptions {
  // Absolute cgroup v2 directory; its whole subtree is subject to the
  // redirect. Required: there is no default (never the root by accident).
  std::string cgroup;
  uint16_t proxy_port_v4 = 0;  // required: 127.0.0.1 / ::ffff:127.0.0.1 listener
  uint16_t proxy_port_v6 = 0;  // required: [::1] listener
  // Required, nonzero: the proxy worker's uid (dedicated to it). Its
  // connects are left alone; it has no CAP_NET_ADMIN to set SO_MARK.
  uint32_t proxy_uid = 0;
  // Only sockets of the netns the UpgradeRedirect is created in get a
  // proxy-side record (others meet no proxy; their connect fails).
  bool proxy_netns_only = true;
  // Existing bpffs directory: maps pinned as "<map>_v<TWU_SCHEMA>" (a
  // restarted daemon adopts them: the selection and live records survive),
  // links as "upgrade_link_<program>_v1". "" pins nothing.
  std::string pin_dir;
  uint32_t max_connections = TWU_DEFAULT_CONNS;  // twu_conns / twu_peers size
};

class UpgradeRedirect {
 public:
  // Loads and attaches all five programs, or throws std::runtime_error with
  // nothing of this instance attached and no link pin of it left (map pins,
  // created or adopted, stay: they are data). Throws std::invalid_argument
  // for bad options. With pin_dir, pinned maps of a previous daemon are
  // adopted (same layout and max_connections, else the load fails) and its
  // pinned links are replaced once this instance's links are attached.
  explicit UpgradeRedirect(const UpgradeRedirectOptions& opts);
  // Detaches unless the links are pinned (then they keep redirecting for
  // the next daemon; remove_pins() is the teardown).
  ~UpgradeRedirect();
  UpgradeRedirect(const UpgradeRedirect&) = delete;
  UpgradeRedirect& operator=(const UpgradeRedirect&) = delete;

  // Writes `sel` into the idle slot and flips the active generation with
  // one store: every connect sees the old or the new selection, never a
  // mix or none. Returns the new generation. Throws std::invalid_argument
  // (compile) or std::runtime_error (map write); the active selection is
  // then unchanged. Not thread-safe against itself.
  uint64_t publish(const UpgradeSelection& sel);
  uint64_t generation() const;
  // Stops redirecting new connects (generation flips to an empty slot).
  uint64_t clear() { return publish(UpgradeSelection{}); }

  // For the proxy: the record of the accepted connection whose peer (from
  // getpeername() on the accepted socket) is `peer`, deleted as it is read
  // (a second call returns nullopt). AF_INET or AF_INET6 (IPv4-mapped
  // accepted). Thread-safe. Never throws.
  // Lifetime of a record: written at the client's TCP_CONNECT_CB; removed
  // by take(), by LRU eviction, or when the client socket closes before the
  // connection was established. A client that connects, sends and closes
  // before the proxy calls take() still has its record. A record never
  // taken (the proxy did not accept) can be found by a later connection
  // from the same (address, port) that was not redirected; `age` lets the
  // proxy refuse stale ones.
  std::optional<OriginalDestination> take(const sockaddr_storage& peer);

  UpgradeRedirectCounters counters() const;
  // Program names attached, and the pins this instance made.
  const std::vector<std::string>& attached_programs() const { return attached_; }
  const std::vector<std::string>& pins() const { return pins_; }
  const std::string& cgroup() const { return opts_.cgroup; }

  // "upgrade_link_<program>_v1" (bpffs forbids dots).
  static std::string link_pin_name(const std::string& program);
  // Teardown: detaches and removes every upgrade link pin and removes the
  // map pins (twu_*) under pin_dir. Returns the paths removed. Never throws.
  static std::vector<std::string> remove_pins(const std::string& pin_dir);

  struct SkelDeleter {
    void operator()(upgrade_redirect* s) const;
  };
  struct LinkDeleter {
    void operator()(bpf_link* l) const;
  };
  // Minimum time between two flips, so a connect that read the previous
  // generation has finished before its slot is rewritten.
  static constexpr std::chrono::milliseconds kSlotQuiesce{50};

 private:
  void attach_all();
  void pin_links();
  void clear_slot(uint32_t slot);

  UpgradeRedirectOptions opts_;
  std::unique_ptr<upgrade_redirect, SkelDeleter> skel_;
  std::vector<std::unique_ptr<bpf_link, LinkDeleter>> links_;
  std::vector<std::string> attached_;
  std::vector<std::string> pins_;
  uint64_t* generation_word_ = nullptr;  // mmapped twu_state element 0
  size_t generation_map_len_ = 0;
  std::chrono::steady_clock::time_point last_flip_{};
};

}  // namespace tlswall::agent::upgrade
