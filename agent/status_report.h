// What `tlswallctl status` shows: a plain snapshot the daemon fills, and its
// human and JSON renderings (unit-tested without a daemon). The daemon sends
// it over the control API (agent/control/status_convert.h converts to and
// from the Thrift StatusReply); tlswallctl renders what it received.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "logging/event_pipeline.h"

extern "C" {
#include "abi/tlswall_abi.h"
}

namespace tlswall::agent {

struct InterfaceStatus {
  InterfaceStatus() = default;
  // The shape of the first release's interface list.
  InterfaceStatus(std::string if_name, int if_index, bool is_attached, bool qdisc_ours,
                  std::string main_hook)
      : name(std::move(if_name)),
        ifindex(if_index),
        attached(is_attached),
        created_qdisc(qdisc_ours),
        hook(std::move(main_hook)) {}
  std::string name;
  int ifindex = 0;
  bool attached = false;
  bool created_qdisc = false;
  std::string hook = "tc egress";  // the main hook
  std::string pattern;             // the configured interface pattern that matched it
  std::vector<std::string> hooks;  // every hook attached there (empty: just `hook`)
};

// A policy rule as the kernel applies it now.
struct RuleStatus {
  RuleStatus() = default;
  // (name, effective mode): the shape of the first release's rule list.
  RuleStatus(std::string rule_name, std::string effective_mode)
      : name(std::move(rule_name)), mode(std::move(effective_mode)) {}
  std::string name;
  std::string mode;  // effective: "monitor" | "enforce"
  std::string boundary;
  std::string policy_mode;  // as the policy file says; "" = same as mode
  bool overridden = false;  // a run-time override (tlswallctl mode) is in force
};

// One way of recording who owns a socket (bpf/abi: tw_owner_backend).
struct BackendStatus {
  std::string name;    // "kprobe" | "fentry" | "tp_btf" | "sock_ops"
  std::string state;   // "active" | "standby" | "unavailable" | "failed"
  std::string reason;  // why it is not active, "" if it is
};

struct AttributionStatus {
  std::string active_backend;  // "" = none: flows carry no owner
  std::vector<BackendStatus> backends;
  // Blind spots: the probe reporting AF_PACKET/AF_XDP sockets ("" = none).
  std::string raw_socket_backend;
  std::string raw_socket_reason;  // why none runs, if none
  uint64_t raw_sockets_opened = 0;
  uint64_t raw_socket_events_lost = 0;
};

// One upgrade rule or termination as the upgrade proxy counts it.
struct UpgradeRuleStatus {
  std::string name;
  std::string side;  // "client" (upgrade) | "server" (termination)
  uint64_t connections = 0;
  uint64_t active = 0;
  uint64_t bytes_up = 0;    // toward the server / backend
  uint64_t bytes_down = 0;  // toward the client
  uint64_t passthrough = 0;
  uint64_t plaintext = 0;
  uint64_t resumed = 0;
  std::map<std::string, uint64_t> failures;  // by reason, nonzero only
};

struct UpgradeStatus {
  bool running = false;
  std::string summary;
  uint64_t redirected = 0;
  std::vector<UpgradeRuleStatus> rules;
};

struct StatusReport {
  std::string version;
  uint64_t uptime_s = 0;
  std::string started_at;  // RFC 3339, UTC
  std::string host;
  // policy
  std::string policy_path;
  std::string policy_version;
  std::string policy_hash;
  uint64_t policy_generation = 0;
  std::string policy_loaded_at;
  std::string policy_last_error;
  std::string policy_last_error_at;
  std::vector<RuleStatus> rules;
  std::vector<std::string> exemptions_active;
  std::string policy_watch;  // how the policy path is watched, "" = not watched
  // kernel side
  std::vector<InterfaceStatus> interfaces;
  std::string bpffs;
  std::string pin_root;
  std::string cgroup2;
  std::string tables_adopted;  // what the start found under the pin root
  std::string last_gap;        // the user-space gap this start closed, if any
  std::array<uint64_t, TW_CNT_MAX> counters{};
  std::array<uint64_t, TW_REASON_MAX> drops_by_reason{};
  uint32_t abi_version = TW_ABI_VERSION;
  // Pinned table -> schema version, as this daemon built them (e.g. "flows"
  // -> TW_SCHEMA_FLOWS). The daemon fills it: the schema depends on the
  // release that pinned the tables, not on whoever renders the report.
  std::map<std::string, uint32_t> tables;
  AttributionStatus attribution;
  // Frees flow state when its socket is destroyed: the hook, or "off: <why>".
  std::string flow_reaper;
  UpgradeStatus upgrade;
  // events
  uint64_t events_received = 0;
  uint64_t events_written = 0;
  uint64_t events_write_failed = 0;
  uint64_t sockets_destroyed = 0;
  uint64_t socket_destroy_failed = 0;
  std::string events_path;
  logging::PipelineHealth event_pipeline;
  std::string metrics_listen;  // Prometheus endpoint address, "" = off
};

// "monitor", "enforce", "mixed" or "none" over the rules.
std::string overall_mode(const StatusReport& s);

std::string render_status_json(const StatusReport& s);
std::string render_status_text(const StatusReport& s);

// Stable lower-case names used in events and status.
const char* counter_name(uint32_t counter);  // nullptr for unused slots
std::string reason_name(uint32_t reason);    // "reason_N" for unknown
const char* class_name(uint32_t cls);
const char* action_name(uint32_t action);
// enum tw_evidence: "client_hello", "client_records", "server_hello".
const char* evidence_name(uint32_t evidence);

}  // namespace tlswall::agent
