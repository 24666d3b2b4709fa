// What tlswalld reports about itself: the `tlswallctl status` snapshot and
// the Prometheus text of the same counters.
#include "agent/daemon.h"
#include "agent/metrics/metrics_text.h"
#include "logging/log.h"

namespace tlswall::agent {

std::string Daemon::render_metrics() const {
  const StatusReport s = status();
  MetricsText m;
  m.family("tlswall_up", MetricType::kGauge, "1 while tlswalld runs").sample(1);
  m.family("tlswall_uptime_seconds", MetricType::kGauge, "seconds since tlswalld started")
      .sample(s.uptime_s);
  m.family("tlswall_policy_generation", MetricType::kGauge, "policy generation in force")
      .sample({{"version", s.policy_version}, {"hash", s.policy_hash}}, s.policy_generation);
  m.family("tlswall_classifier_total", MetricType::kCounter,
           "kernel classifier counters (flows seen, TLS, plaintext reported/blocked, exempt, "
           "state lost, ...)");
  for (uint32_t i = 0; i < TW_CNT_MAX; ++i) {
    if (const char* name = counter_name(i)) m.sample({{"counter", name}}, s.counters[i]);
  }
  m.family("tlswall_dropped_packets_total", MetricType::kCounter,
           "packets dropped by the classifier, by reason");
  for (uint32_t i = 0; i < TW_REASON_MAX; ++i) {
    if (s.drops_by_reason[i]) m.sample({{"reason", reason_name(i)}}, s.drops_by_reason[i]);
  }
  m.family("tlswall_interface_attached", MetricType::kGauge,
           "1 if the classifier is attached to the interface");
  for (const auto& i : s.interfaces) m.sample({{"interface", i.name}}, i.attached ? 1 : 0);
  m.family("tlswall_events_received_total", MetricType::kCounter, "kernel events read")
      .sample(s.events_received);
  m.family("tlswall_events_lost_total", MetricType::kCounter,
           "events lost: kernel ring buffer full (stage=ring_buffer) or in the pipeline")
      .sample({{"stage", "ring_buffer"}}, s.counters[TW_CNT_EVENTS_LOST])
      .sample({{"stage", "pipeline_queue"}}, s.event_pipeline.dropped_queue);
  m.family("tlswall_sink_dropped_total", MetricType::kCounter, "events a sink lost, all reasons");
  for (const auto& k : s.event_pipeline.sinks) m.sample({{"sink", k.name}}, k.dropped);
  m.family("tlswall_sink_backlog", MetricType::kGauge, "events waiting for a sink (memory + disk)");
  for (const auto& k : s.event_pipeline.sinks) m.sample({{"sink", k.name}}, k.backlog);
  m.family("tlswall_sockets_destroyed_total", MetricType::kCounter,
           "blocked sockets destroyed (sock_diag)")
      .sample(s.sockets_destroyed);
  m.family("tlswall_attribution_backend_active", MetricType::kGauge,
           "1 for the attribution probe backend that runs");
  if (owner_probes_) {
    for (const auto& b : owner_probes_->report()) {
      m.sample({{"backend", b.name}}, b.state == attribution::BackendState::kActive ? 1 : 0);
    }
    m.family("tlswall_attribution_probe_failures_total", MetricType::kCounter,
             "connections whose owner a probe failed to record")
        .sample(owner_probes_->probe_failures());
  }
  m.family("tlswall_raw_sockets_opened_total", MetricType::kCounter,
           "AF_PACKET/AF_XDP sockets opened by processes (egress blind spots)")
      .sample(s.attribution.raw_sockets_opened);
  m.family("tlswall_raw_socket_events_lost_total", MetricType::kCounter,
           "raw socket reports lost (ring buffer full)")
      .sample(s.attribution.raw_socket_events_lost);
  if (upgrade_) {
    const auto counters = upgrade_->proxy_counters();
    const auto& rules = counters.rules;
    m.family("tlswall_upgrade_redirected_total", MetricType::kCounter,
             "connects the kernel redirected to the upgrade proxy")
        .sample(upgrade_->redirected());
    m.family("tlswall_upgrade_connections_total", MetricType::kCounter,
             "connections the proxy handled, per upgrade rule or termination");
    for (const auto& r : rules) {
      m.sample({{"rule", r.rule}, {"side", r.terminator ? "server" : "client"}}, r.connections);
    }
    m.family("tlswall_upgrade_active", MetricType::kGauge, "connections open through the proxy");
    for (const auto& r : rules) m.sample({{"rule", r.rule}}, r.active);
    m.family("tlswall_upgrade_bytes_total", MetricType::kCounter,
             "plaintext bytes through the proxy (up: toward the server or backend)");
    for (const auto& r : rules) {
      m.sample({{"rule", r.rule}, {"direction", "up"}}, r.bytes_up);
      m.sample({{"rule", r.rule}, {"direction", "down"}}, r.bytes_down);
    }
    m.family("tlswall_upgrade_failures_total", MetricType::kCounter,
             "connections the proxy failed closed, by reason");
    for (const auto& r : rules) {
      for (size_t i = 0; i < r.failures.size(); ++i) {
        if (!r.failures[i]) continue;
        m.sample(
            {{"rule", r.rule}, {"reason", proxy::to_string(static_cast<proxy::FailureReason>(i))}},
            r.failures[i]);
      }
    }
    m.family("tlswall_upgrade_worker_restarts_total", MetricType::kCounter,
             "proxy worker processes started after one died")
        .sample(upgrade_->worker_restarts());
    m.family("tlswall_upgrade_worker_events_dropped_total", MetricType::kCounter,
             "proxy events the worker could not hand to the daemon (queue full)")
        .sample(counters.events_dropped);
  }
  return m.str();
}

StatusReport Daemon::status() const {
  StatusReport s;
  s.version = TLSWALL_VERSION;
  s.host = host_;
  s.uptime_s = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started_)
          .count());
  s.policy_path = config_.policy_path;
  if (policy_) {
    s.policy_version = policy_->model.version;
    s.policy_hash = policy_->model.hash;
    s.policy_generation = policy_->generation;
    s.policy_loaded_at = logging::format_time(policy_->loaded_at);
    const auto& c = *policy_->compiled;
    for (const auto& r : policy_->model.rules) {
      RuleStatus rs(r.name, policy::mode_name(effective_mode(r)));
      rs.boundary = r.boundary;
      rs.policy_mode = policy::mode_name(r.mode);
      rs.overridden = overridden(r);
      s.rules.push_back(std::move(rs));
    }
    s.exemptions_active = c.exemption_names;
  }
  s.policy_last_error = last_error_;
  if (!last_error_.empty()) s.policy_last_error_at = logging::format_time(last_error_at_);
  if (classifier_) {
    std::map<int, std::string> patterns;
    if (links_) {
      for (const auto& l : links_->matching()) patterns[l.ifindex] = l.pattern;
    }
    for (const auto& a : classifier_->attachments()) {
      InterfaceStatus i(a.ifname, a.ifindex, classifier_->still_attached(a), a.created_qdisc,
                        a.kind == LinkKind::kL3 ? "tc egress (L3)" : "tc egress");
      i.pattern = patterns[a.ifindex];
      i.hooks = {i.hook};
      s.interfaces.push_back(std::move(i));
    }
    s.tables = classifier_->table_schemas();
    s.tables_adopted = adoption_summary_;
    s.last_gap = gap_message_;
    s.flow_reaper = classifier_->flow_reaper();
    s.counters = classifier_->counters();
    s.drops_by_reason = classifier_->drops_by_reason();
  }
  if (upgrade_) {
    s.upgrade.running = true;
    const auto counters = upgrade_->proxy_counters();
    s.upgrade.summary = upgrade_->summary(counters);
    s.upgrade.redirected = upgrade_->redirected();
    for (const auto& r : counters.rules) {
      UpgradeRuleStatus u;
      u.name = r.rule;
      u.side = r.terminator ? "server" : "client";
      u.connections = r.connections;
      u.active = r.active;
      u.bytes_up = r.bytes_up;
      u.bytes_down = r.bytes_down;
      u.passthrough = r.passthrough;
      u.plaintext = r.plaintext;
      u.resumed = r.resumed;
      for (size_t k = 0; k < r.failures.size(); ++k) {
        if (r.failures[k]) {
          u.failures[proxy::to_string(static_cast<proxy::FailureReason>(k))] = r.failures[k];
        }
      }
      s.upgrade.rules.push_back(std::move(u));
    }
  }
  s.started_at =
      logging::format_time(std::chrono::system_clock::now() - std::chrono::seconds(s.uptime_s));
  if (owner_probes_) {
    if (owner_probes_->active()) {
      s.attribution.active_backend = attribution::backend_name(*owner_probes_->active());
    }
    for (const auto& b : owner_probes_->report()) {
      s.attribution.backends.push_back({b.name, attribution::backend_state_name(b.state), b.why});
    }
  } else {
    for (const auto& b : config_.attribution_backends) {
      s.attribution.backends.push_back({b, "unavailable", "attribution is off in the config"});
    }
  }
  if (raw_sockets_) {
    s.attribution.raw_socket_backend = raw_sockets_->active();
    if (s.attribution.raw_socket_backend.empty()) {
      for (const auto& b : raw_sockets_->report()) {
        s.attribution.raw_socket_reason +=
            (s.attribution.raw_socket_reason.empty() ? "" : "; ") + b.name + ": " + b.why;
      }
    }
    const auto rc = raw_sockets_->counters();
    s.attribution.raw_sockets_opened = rc.seen;
    s.attribution.raw_socket_events_lost = rc.lost;
  }
  s.policy_watch = policy_watcher_ ? policy_watcher_->status() : "";
  s.metrics_listen = metrics_ ? config_.metrics_listen : "";
  s.bpffs = bpffs_;
  s.pin_root = config_.pin_root;
  s.cgroup2 = cgroup2_;
  s.events_received = events_received_;
  if (events_) {
    s.event_pipeline = events_->health();
    for (const auto& k : s.event_pipeline.sinks) {
      if (k.kind == "json") {
        s.events_path = k.target;
        s.events_written = k.delivered;
        break;
      }
    }
    s.events_write_failed = s.event_pipeline.dropped_queue;
    for (const auto& k : s.event_pipeline.sinks) s.events_write_failed += k.dropped;
  }
  s.sockets_destroyed = sockets_destroyed_;
  s.socket_destroy_failed = socket_destroy_failed_;
  return s;
}

}  // namespace tlswall::agent
