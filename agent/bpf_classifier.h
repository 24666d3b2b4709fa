// Owns the tc classifier: its skeleton (programs + tables, embedded in the
// binary), its pinned tables under the pin root, and its tc filters (egress:
// the classifier; ingress: the server side of its deeper TLS checks).
//
// The kernel side outlives the daemon: tables and programs are pinned, tc
// filters stay attached. A starting daemon adopts the pinned tables whose
// schema and size it shares, builds new ones beside those it does not
// (migrating flow verdicts and counters), loads its programs, and only then
// swaps them into the filters atomically (take_over). Until take_over
// succeeds, whatever ran before keeps enforcing.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/bpf_pins.h"
#include "agent/policy_tables.h"
#include "agent/tc_attach.h"

extern "C" {
#include "abi/tlswall_abi.h"
}

struct tc_classifier;  // generated skeleton
struct bpf_link;

namespace tlswall::agent {

// How a device's packets start: with a MAC header, or with the IP header.
enum class LinkKind { kEthernet, kL3 };

// The link kind of `ifname` (SIOCGIFHWADDR). Throws for link types the
// classifier cannot parse, naming the type.
LinkKind link_kind(const std::string& ifname);

struct Attachment {
  std::string ifname;
  int ifindex = 0;
  LinkKind kind = LinkKind::kEthernet;
  bool created_qdisc = false;
};

struct ClassifierOptions {
  std::string pin_root = "/sys/fs/bpf/tlswall";
  uint32_t flow_table_entries = 131072;
  uint32_t ringbuf_bytes = 1u << 20;
};

// What the classifier found under the pin root and what it did about it.
struct AdoptionReport {
  std::optional<tw_meta> previous;    // the previous owner's record, if any
  std::vector<std::string> reused;    // tables adopted as they were
  std::vector<std::string> created;   // tables built new
  std::vector<std::string> migrated;  // e.g. "flows_v1 -> flows_v2: 42 entries"
  uint64_t gap_ns = 0;                // since the previous owner's last heartbeat
  uint64_t events_lost_in_gap = 0;    // ring buffer overflows while nobody read
};

class TcClassifier {
 public:
  // Opens the embedded object, adopts or prepares to migrate the pinned
  // tables, loads the programs. Attaches nothing. Throws
  // std::runtime_error with the reason (the verifier log goes to the "bpf"
  // logger); the pinned state and running filters are then untouched.
  explicit TcClassifier(const ClassifierOptions& opts);
  ~TcClassifier();
  TcClassifier(const TcClassifier&) = delete;
  TcClassifier& operator=(const TcClassifier&) = delete;

  const AdoptionReport& adoption() const { return report_; }

  // Makes our programs the egress and ingress filters of `ifnames` (replacing the
  // previous release's in place), detaches from recorded interfaces no
  // longer named, pins what is new, retires replaced tables, and records
  // everything. All interfaces are validated before any is touched.
  void take_over(const std::vector<std::string>& ifnames, const std::string& agent_version);

  // After take_over: attaches to one more interface (one that appeared).
  // Returns false if it is attached already. Throws std::runtime_error.
  bool attach(const std::string& ifname, int ifindex);
  // An attached interface vanished (its filter went with it): forgets it.
  // Returns false if it was not attached.
  bool forget(int ifindex);
  // An attached interface was renamed (the filter stays).
  void renamed(int ifindex, const std::string& name);

  // Re-attaches where a filter of ours has gone, runs another program or
  // has a foreign filter in front of it (either side). Calls
  // `restored(ifname, why)` for each. Returns false if some could not be.
  bool repair_attachments(
      const std::function<void(const std::string&, const std::string&)>& restored);

  // Removes our filters from every interface we recorded (and the clsact
  // qdiscs we created). The pins stay. For on_stop = "detach".
  void detach_all();
  const std::vector<Attachment>& attachments() const { return attachments_; }
  bool still_attached(const Attachment& a) const;

  // Publishes the active policy generation (one aligned 64-bit store).
  void set_generation(uint64_t generation);
  uint64_t generation() const;

  // Attaches the flow reaper (bpf/lib/flow_reap.bpf.h): flow state is freed
  // when its socket is destroyed. Not pinned: it lives with this daemon, and
  // without it the flow table's LRU still bounds the state. Never throws;
  // flow_reaper() says what happened.
  void start_flow_reaper();
  // "tp_btf/tcp_destroy_sock" when attached, else "off: <why>".
  const std::string& flow_reaper() const { return flow_reaper_; }

  // Records the fail mode in the pins, where an offline teardown reads it.
  void set_fail_closed(bool closed);

  // The daemon is alive: heartbeat and gap accounting in the metadata.
  void heartbeat(uint64_t events_lost_reported, const std::string& policy_hash);

  std::array<uint64_t, TW_CNT_MAX> counters() const;
  // One counter (summed over CPUs), for the periodic loss check.
  uint64_t counter(uint32_t which) const;
  std::array<uint64_t, TW_REASON_MAX> drops_by_reason() const;

  int egress_prog_fd() const;
  // The program for a link kind (Ethernet or L3) and side.
  int prog_fd_for(LinkKind kind, TcDirection dir = TcDirection::kEgress) const;
  int flows_fd() const;
  int tls_checks_fd() const;
  // Every table this classifier uses, by name, with its schema version.
  std::map<std::string, uint32_t> table_schemas();
  // The policy tables, for BpfPolicyMaps.
  BpfPolicyMaps::Fds policy_fds() const;
  // The owner tables the attribution probes write (bpf/lib/owner_maps.bpf.h).
  int owners_fd() const;
  int owner_tuples_fd() const;
  int counters_fd() const;
  int events_fd() const;
  // Ring buffer of a replaced events table, to drain once after take_over
  // (-1 if none).
  int replaced_events_fd() const { return replaced_events_.get(); }

 private:
  struct SkelDeleter {
    void operator()(tc_classifier* s) const;
  };
  struct Table;
  std::vector<Table> tables();
  void migrate_flows(int old_fd, uint32_t old_schema);
  void attach_one(Attachment& a, const std::vector<tw_iface_rec>& recorded);
  bool attached_here(const Attachment& a, TcDirection dir) const;
  bool repair_one(Attachment& a, TcDirection dir,
                  const std::function<void(const std::string&, const std::string&)>& restored);
  static size_t prog_index(LinkKind kind, TcDirection dir) {
    return (kind == LinkKind::kL3 ? 2 : 0) + (dir == TcDirection::kIngress ? 1 : 0);
  }
  void migrate_counters(int old_counters_fd, int old_drops_fd);

  ClassifierOptions opts_;
  std::unique_ptr<tc_classifier, SkelDeleter> skel_;
  std::unique_ptr<PinnedRecords> records_;
  AdoptionReport report_;
  std::vector<std::string> retire_;  // old pins to remove after take_over
  std::vector<std::string> to_pin_;  // table names (with schema) built new
  OwnedFd replaced_events_;
  OwnedFd old_flows_;  // the replaced flow table, copied after the switch
  uint32_t old_flows_schema_ = 0;
  std::vector<Attachment> attachments_;
  // Program ids by prog_index: they never change after load, so the
  // periodic attachment check compares against these.
  std::array<uint32_t, 4> prog_ids_{};
  uint64_t* generation_word_ = nullptr;  // mmapped tw_state element 0
  bpf_link* reaper_link_ = nullptr;
  std::string flow_reaper_ = "off: not started";
  size_t generation_map_len_ = 0;
};

// Detaches from every interface recorded under pin_root and removes all
// pins there; works without a running daemon. Returns a line per action.
// If the pins record fail_mode "closed", refuses (throws) unless `open`.
std::vector<std::string> teardown_pinned(const std::string& pin_root, bool open);

// Sums a per-CPU u64 array map into `out` (size n). Returns false on error.
bool read_percpu_u64_array(int map_fd, uint64_t* out, uint32_t n);

// Routes libbpf's messages into the "bpf" logger (idempotent).
void route_libbpf_logs();

}  // namespace tlswall::agent
