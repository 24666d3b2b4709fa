// tlswalld's lifecycle: start-up (config, policy, BPF load, attach), the
// event loop (signals, ring buffer, control socket, timers) and teardown
// that removes only what it created.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "agent/agent_config.h"
#include "agent/attribution/owner_probes.h"
#include "agent/attribution/process_info.h"
#include "agent/attribution/raw_socket_probes.h"
#include "agent/bpf_classifier.h"
#include "agent/control/control_server.h"
#include "agent/control/recent_events.h"
#include "agent/metrics/metrics_http.h"
#include "agent/policy_tables.h"
#include "agent/sock_destroy.h"
#include "agent/status_report.h"
#include "agent/upgrade/upgrade_service.h"
#include "agent/watch/link_watcher.h"
#include "agent/watch/policy_watcher.h"
#include "logging/event_pipeline.h"
#include "policy/policy.h"

struct ring_buffer;

namespace tlswall::agent {

class Daemon {
 public:
  // Everything that can fail at start-up happens here and throws
  // std::runtime_error with one clear line; nothing stays attached then.
  explicit Daemon(AgentConfig config);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Runs until SIGTERM/SIGINT. Returns the process exit code.
  int run();

 private:
  struct PolicyState {
    policy::Policy model;
    std::shared_ptr<const policy::CompiledPolicy> compiled;
    uint64_t generation = 0;
    std::chrono::system_clock::time_point loaded_at;
  };

  // Every path the daemon creates or writes (control socket, state and
  // disk-buffer directories, the events file's directory; the pin root is
  // checked here and made after bpffs is mounted): checked and made before
  // anything is read from them, pinned or attached (agent/path_trust.h).
  // Throws std::runtime_error with one line.
  void prepare_paths() const;
  void apply_policy(bool initial);
  void report_adoption();
  void recompile_for_expiry();
  void publish(policy::Policy model, std::shared_ptr<const policy::CompiledPolicy> compiled,
               const std::string& why);
  void on_kernel_event(const void* data, size_t size);
  // The owner part of a flow event, enriched from /proc and the cgroup fs.
  logging::Owner owner_of(const tw_flow_event& fe);
  // Compiles `model` with the run-time mode overrides applied.
  std::shared_ptr<const policy::CompiledPolicy> compile(
      const policy::Policy& model, std::chrono::system_clock::time_point now) const;
  // `tlswallctl mode`: sets (or, with "policy", drops) the run-time mode of
  // one rule or "all" and publishes a new generation. Returns the rules
  // whose effective mode changed. Throws std::invalid_argument for an
  // unknown rule or mode.
  struct ModeChange {
    std::string rule;
    policy::Mode previous, mode;  // effective, before and after
    bool overridden;              // a run-time override is in force now
  };
  std::vector<ModeChange> set_mode(const std::string& rule, const std::string& mode);
  void load_mode_overrides();
  void save_mode_overrides() const;
  void periodic();
  // Interfaces that appeared, vanished or were renamed (link watcher).
  void on_link_changes(const std::vector<LinkChange>& changes);
  // The Prometheus text of the same counters `tlswallctl status` shows.
  std::string render_metrics() const;
  // The control API (daemon_control.cc).
  class ControlApi;
  friend class ControlApi;
  void start_control();
  void audit(const control::AuditRecord& a);
  // The mode the kernel applies to `r`: its run-time override, else the file's.
  policy::Mode effective_mode(const policy::Rule& r) const;
  bool overridden(const policy::Rule& r) const { return mode_overrides_.count(r.name) > 0; }
  StatusReport status() const;
  void emit(logging::Event e);
  std::shared_ptr<const policy::CompiledPolicy> names_for(uint64_t generation) const;

  static int ring_callback(void* ctx, void* data, size_t size);

  AgentConfig config_;
  std::string host_;
  std::chrono::steady_clock::time_point started_;
  std::string bpffs_;
  bool bpffs_mounted_at_pin_root_ = false;
  std::string cgroup2_;
  bool cgroup2_mounted_by_us_ = false;
  std::unique_ptr<logging::EventPipeline> events_;
  std::unique_ptr<TcClassifier> classifier_;
  std::unique_ptr<BpfPolicyMaps> maps_;
  std::unique_ptr<PolicyPublisher> publisher_;
  std::shared_ptr<control::RecentEvents> recent_;  // shared with the pipeline's tap
  std::unique_ptr<control::ControlHandler> api_;   // a ControlApi
  std::unique_ptr<control::ControlServer> control_;
  std::unique_ptr<LinkWatcher> links_;
  std::unique_ptr<PolicyWatcher> policy_watcher_;
  std::unique_ptr<MetricsHttpServer> metrics_;
  std::unique_ptr<attribution::OwnerProbes> owner_probes_;
  std::unique_ptr<attribution::RawSocketProbes> raw_sockets_;
  void on_raw_socket(const tw_raw_socket_event& r);
  std::unique_ptr<upgrade::UpgradeService> upgrade_;
  void apply_upgrades();
  void start_upgrade();
  std::unique_ptr<attribution::ProcessInfoResolver> process_info_;
  // Run-time rule modes (`tlswallctl mode`), by rule name; kept across
  // reloads and restarts (state_dir/mode_overrides) until set back to
  // "policy" or the rule leaves the policy.
  std::map<std::string, policy::Mode> mode_overrides_;
  std::chrono::steady_clock::time_point next_owner_check_{};
  ring_buffer* ring_ = nullptr;
  SocketDestroyer destroyer_;
  std::optional<PolicyState> policy_;
  // Compiled policies of recent generations, to name rules in late events.
  std::map<uint64_t, std::shared_ptr<const policy::CompiledPolicy>> history_;
  std::string last_error_;
  std::chrono::system_clock::time_point last_error_at_;
  uint64_t events_received_ = 0;
  uint64_t sockets_destroyed_ = 0;
  uint64_t socket_destroy_failed_ = 0;
  uint64_t kernel_events_lost_seen_ = 0;
  bool teardown_requested_ = false;
  std::string adoption_summary_;
  std::string gap_message_;
};

}  // namespace tlswall::agent
