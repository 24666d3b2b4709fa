// Attribution probes: loads and attaches the one backend of
// bpf/owner_probes.bpf.c that this kernel supports best, so every connecting
// TCP socket gets an owner record (struct tw_owner: pid, uid, comm, cgroup)
// before its SYN leaves. The record goes into the owner tables the daemon
// created with the classifier (tw_owners, tw_owner_tuples); this class only
// borrows their fds.
//
// Backends, in DESIGN order (the default preference):
//   kprobe   kprobe/tcp_connect            -> tw_owner_tuples (flow key)
//   fentry   fentry/tcp_connect            -> tw_owners (socket storage)
//   tp_btf   tp_btf/inet_sock_set_state    -> tw_owners (on SYN_SENT)
//   sock_ops sock_ops TCP_CONNECT_CB       -> tw_owners (one cgroup subtree)
// Each is probed by loading only its programs and attaching them; the first
// that fully attaches (and is pinned) becomes active. A backend is never
// left half-attached: a failed step undoes the steps before it. Backends
// after the active one are probed too (attached, then detached at once) so
// the report says which are available; none of them can drop or redirect
// traffic.
//
// Restart continuity: the active backend's link is pinned under pin_dir as
// "owner_link_<backend>_v1". A starting daemon attaches and pins its own
// link first, then unpins (and, where the kernel allows, detaches) the
// owner links a previous daemon pinned, so recording never stops; both run
// for a moment, which is harmless (they write the same record). Destroying
// an OwnerProbes closes its fds but leaves its pinned link recording for the
// next daemon; remove_pins() is the teardown. A kernel that attaches the
// backend as something other than a BPF link (kprobes before Linux 5.15 are
// perf events) cannot pin it: the backend then runs unpinned and report()
// says so.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

extern "C" {
#include "abi/owner_probes_abi.h"
#include "abi/tlswall_abi.h"
}

struct owner_probes;  // generated skeleton
struct bpf_link;

namespace tlswall::agent::attribution {

enum class OwnerBackend : uint8_t {
  kKprobe = TW_BACKEND_KPROBE,
  kFentry = TW_BACKEND_FENTRY,
  kTpBtf = TW_BACKEND_TP_BTF,
  kSockOps = TW_BACKEND_SOCK_OPS,
};

// "kprobe", "fentry", "tp_btf", "sock_ops": the names in configs, status and
// pin names.
const char* backend_name(OwnerBackend b);
// The inverse of backend_name(); nullopt for any other text.
std::optional<OwnerBackend> parse_backend(std::string_view name);
// kprobe, fentry, tp_btf, sock_ops.
std::vector<OwnerBackend> default_backend_preference();

enum class BackendState {
  kActive,              // attached and recording
  kAvailableNotChosen,  // loads and attaches here, but a preferred one is active
  kUnavailable,         // cannot run here (or not configured): see why
};
// "active", "available-not-chosen", "unavailable".
const char* backend_state_name(BackendState s);

struct BackendReport {
  OwnerBackend backend = OwnerBackend::kKprobe;
  std::string name;  // backend_name(backend)
  BackendState state = BackendState::kUnavailable;
  // Why it is in that state, for `tlswallctl status`, e.g.
  // "attach failed: ENOENT (kernel has no kprobes: CONFIG_KPROBES off?)".
  std::string why;
};

// The probes' counters (bpf/abi/owner_probes_abi.h), summed over CPUs.
struct OwnerProbeCounters {
  uint64_t recorded = 0;            // owner records written
  uint64_t storage_failures = 0;    // socket storage could not be allocated
  uint64_t tuple_failures = 0;      // tw_owner_tuples update failed
  uint64_t unsupported_family = 0;  // kprobe: neither AF_INET nor AF_INET6
  uint64_t no_socket = 0;           // sock_ops: callback without a socket
  // Connections whose owner was not recorded because a probe failed.
  uint64_t failures() const {
    return storage_failures + tuple_failures + unsupported_family + no_socket;
  }
};

struct OwnerProbesOptions {
  int owners_fd = -1;        // tw_owners (SK_STORAGE map), borrowed
  int owner_tuples_fd = -1;  // tw_owner_tuples (LRU hash), borrowed
  // Tried in this order; backends not listed are reported unavailable
  // ("not in the configured backend list") and never loaded.
  std::vector<OwnerBackend> preference = default_backend_preference();
  // Absolute cgroup v2 directory the sock_ops program is attached to (it
  // records sockets of that subtree only); "" makes sock_ops unavailable.
  std::string sock_ops_cgroup;
  // Existing bpffs directory for the active link's pin; "" pins nothing (no
  // restart continuity, and old owner links are left alone).
  std::string pin_dir;
};

class OwnerProbes {
 public:
  // Probes the backends and attaches the best. Never throws because a
  // backend cannot run: if none can, active() is nullopt and report() says
  // why for each. Throws std::invalid_argument for a negative map fd, an
  // unknown backend in the preference, or a relative sock_ops_cgroup /
  // pin_dir.
  explicit OwnerProbes(const OwnerProbesOptions& opts);
  ~OwnerProbes();
  OwnerProbes(const OwnerProbes&) = delete;
  OwnerProbes& operator=(const OwnerProbes&) = delete;

  // The backend recording now; nullopt if none attached.
  std::optional<OwnerBackend> active() const { return active_; }
  // One entry per backend: the preference list's order, then the others.
  std::vector<BackendReport> report() const { return report_; }
  // Pins of the active link(s) (absolute paths); empty without pin_dir.
  const std::vector<std::string>& pins() const { return pins_; }
  // Owner-link pins of a previous daemon this one replaced at start.
  const std::vector<std::string>& replaced_pins() const { return replaced_; }

  // Zero when nothing is active. Reads the per-CPU counter array.
  OwnerProbeCounters counters() const;
  uint64_t probe_failures() const { return counters().failures(); }

  // "owner_link_<backend>_v1" (bpffs forbids dots; our pins are <name>_v<N>).
  static std::string pin_name(OwnerBackend b);
  // Teardown: removes every owner-link pin under pin_dir (any backend,
  // any version, also half-done start-ups), detaching the links where the
  // kernel supports it. Returns the paths removed. Never throws.
  static std::vector<std::string> remove_pins(const std::string& pin_dir);

  struct SkelDeleter {
    void operator()(owner_probes* s) const;
  };
  struct LinkDeleter {
    void operator()(bpf_link* l) const;
  };
  using Skel = std::unique_ptr<owner_probes, SkelDeleter>;
  using Link = std::unique_ptr<bpf_link, LinkDeleter>;

 private:
  struct Attached {
    Skel skel;
    std::vector<Link> links;
  };
  // Loads and attaches `b`; on failure returns nullopt with the reason.
  std::optional<Attached> try_backend(OwnerBackend b, std::string* why) const;
  // Pins `a` (temporary names, old owner links removed, then final names).
  // On failure `a`'s pins are removed again and the old links stay.
  bool pin_and_take_over(OwnerBackend b, Attached& a, std::string* why);

  OwnerProbesOptions opts_;
  std::optional<OwnerBackend> active_;
  Attached attached_;
  std::vector<BackendReport> report_;
  std::vector<std::string> pins_;
  std::vector<std::string> replaced_;
  // Why the active backend runs without a pin ("" when pinned or no pin_dir).
  std::string unpinned_why_;
};

}  // namespace tlswall::agent::attribution
