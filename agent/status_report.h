// What `tlswallctl status` shows: a plain snapshot the daemon fills, and its
// human and JSON renderings (unit-tested without a daemon).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "logging/event_pipeline.h"

extern "C" {
#include "abi/tlswall_abi.h"
}

namespace tlswall::agent {

struct InterfaceStatus {
  std::string name;
  int ifindex = 0;
  bool attached = false;
  bool created_qdisc = false;
  std::string hook = "tc egress";
};

struct StatusReport {
  std::string version;
  uint64_t uptime_s = 0;
  std::string host;
  // policy
  std::string policy_path;
  std::string policy_version;
  std::string policy_hash;
  uint64_t policy_generation = 0;
  std::string policy_loaded_at;
  std::string policy_last_error;
  std::string policy_last_error_at;
  std::vector<std::pair<std::string, std::string>> rules;  // name, mode
  std::vector<std::string> exemptions_active;
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
  // events
  uint64_t events_received = 0;
  uint64_t events_written = 0;
  uint64_t events_write_failed = 0;
  uint64_t sockets_destroyed = 0;
  uint64_t socket_destroy_failed = 0;
  std::string events_path;
  logging::PipelineHealth event_pipeline;
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

}  // namespace tlswall::agent
