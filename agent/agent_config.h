// tlswalld's own configuration (not the policy): which interfaces, where the
// policy lives, pins, control socket, events, log level, table sizes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "logging/event_pipeline.h"

namespace tlswall::agent {

struct AgentConfig {
  std::string source;  // file it was read from, or "<embedded default>"
  std::vector<std::string> interfaces;
  std::string policy_path;
  std::string pin_root = "/sys/fs/bpf/tlswall";
  std::string control_socket = "/run/tlswall/control.sock";
  std::string control_group;                                  // "" = root only
  std::string events_json = "/var/log/tlswall/events.jsonl";  // first JSON sink, "" if none
  logging::PipelineConfig events = logging::default_events_config();
  std::string log_level = "info";
  // What SIGTERM leaves behind: "keep-enforcing" (filters and pinned tables
  // stay, the kernel goes on judging with the last policy) or "detach".
  std::string on_stop = "keep-enforcing";
  // Whether removing tlswall opens the host: "open" (teardown removes
  // enforcement) or "closed" (teardown refuses unless told --open; pair it
  // with configs/systemd/fail-closed.conf so networking waits for the agent).
  std::string fail_mode = "open";
  uint32_t flow_table_entries = 131072;
  uint32_t ringbuf_bytes = 1u << 20;
};

// Parses agent config TOML. Relative paths are resolved against `base_dir`.
// Throws std::runtime_error("file:line:col: message") on any error,
// including unknown keys.
AgentConfig parse_agent_config(const std::string& text, const std::string& name,
                               const std::string& base_dir);

// Reads and parses a config file.
AgentConfig load_agent_config(const std::string& path);

// The configuration used when --config is not given (configs/tlswalld.toml
// as shipped, with its policy under /etc/tlswall/policy.d).
AgentConfig embedded_default_config();

}  // namespace tlswall::agent
