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
  // Interface names or fnmatch patterns ("eth*", "veth*"; "!pattern"
  // excludes). A plain name must exist at start-up; interfaces matching a
  // pattern that appear later get the classifier when they appear.
  std::vector<std::string> interfaces;
  std::string policy_path;
  // Reload when the policy path changes (inotify; settled changes only).
  bool watch_policy = true;
  // [attribution]: probe backends in order of preference, and the cgroup
  // (path under the cgroup v2 mount) the sock_ops backend attaches to;
  // "" leaves sock_ops out.
  std::vector<std::string> attribution_backends = {"kprobe", "fentry", "tp_btf", "sock_ops"};
  std::string sock_ops_cgroup;
  // [metrics]: Prometheus text endpoint, "" = off; loopback only unless
  // allow_remote.
  std::string metrics_listen;
  bool metrics_allow_remote = false;
  // [upgrade]: transparent TLS upgrade of the policy's [[upgrades]]. The
  // redirect hooks attach to this cgroup (a path under the cgroup v2
  // mount, e.g. "/system.slice"); "" = upgrade off.
  std::string upgrade_cgroup;
  uint16_t upgrade_port = 15443;  // proxy listener on 127.0.0.1 and [::1]
  // The proxy runs in a worker process as this user (dedicated: its
  // connects are never redirected), with no capabilities.
  std::string upgrade_user = "tlswall-proxy";
  uint32_t upgrade_workers = 2;
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
