#include "agent/control/status_convert.h"

#include <algorithm>

namespace tlswall::control {
namespace {

int64_t i64(uint64_t v) { return static_cast<int64_t>(v); }
uint64_t u64(int64_t v) { return static_cast<uint64_t>(v); }

api::SinkHealth to_thrift(const logging::SinkHealth& s) {
  api::SinkHealth t;
  t.name = s.name;
  t.kind = s.kind;
  t.target = s.target;
  t.state = s.state;
  t.connected = s.connected;
  t.backlog = i64(s.backlog);
  t.buffered = i64(s.buffered);
  t.buffer_bytes = i64(s.buffer_bytes);
  t.buffer_writable = s.buffer_writable;
  t.delivered = i64(s.delivered);
  t.dropped = i64(s.dropped);
  t.dropped_queue_full = i64(s.dropped_queue_full);
  t.dropped_buffer_cap = i64(s.dropped_buffer_cap);
  t.dropped_buffer_corrupt = i64(s.dropped_buffer_corrupt);
  t.dropped_shutdown = i64(s.dropped_shutdown);
  t.quarantined_segments = i64(s.quarantined_segments);
  t.send_failures = i64(s.send_failures);
  t.try_later = i64(s.try_later);
  t.last_error = s.last_error;
  t.last_error_at = s.last_error_at;
  t.buffer_error = s.buffer_error;
  return t;
}

logging::SinkHealth from_thrift(const api::SinkHealth& t) {
  logging::SinkHealth s;
  s.name = t.name;
  s.kind = t.kind;
  s.target = t.target;
  s.state = t.state;
  s.connected = t.connected;
  s.backlog = u64(t.backlog);
  s.buffered = u64(t.buffered);
  s.buffer_bytes = u64(t.buffer_bytes);
  s.buffer_writable = t.buffer_writable;
  s.delivered = u64(t.delivered);
  s.dropped = u64(t.dropped);
  s.dropped_queue_full = u64(t.dropped_queue_full);
  s.dropped_buffer_cap = u64(t.dropped_buffer_cap);
  s.dropped_buffer_corrupt = u64(t.dropped_buffer_corrupt);
  s.dropped_shutdown = u64(t.dropped_shutdown);
  s.quarantined_segments = u64(t.quarantined_segments);
  s.send_failures = u64(t.send_failures);
  s.try_later = u64(t.try_later);
  s.last_error = t.last_error;
  s.last_error_at = t.last_error_at;
  s.buffer_error = t.buffer_error;
  return s;
}

api::PipelineHealth to_thrift(const logging::PipelineHealth& h) {
  api::PipelineHealth t;
  for (const auto& s : h.sinks) t.sinks.push_back(to_thrift(s));
  t.submitted = i64(h.submitted);
  t.emitted = i64(h.emitted);
  t.aggregated = i64(h.aggregated);
  t.dropped_queue = i64(h.dropped_queue);
  t.dropped_queue_security = i64(h.dropped_queue_security);
  t.intake_backlog = i64(h.intake_backlog);
  t.ids_persistent = h.ids_persistent;
  t.host_id = h.host_id;
  t.next_seq = i64(h.next_seq);
  t.last_error = h.last_error;
  return t;
}

logging::PipelineHealth from_thrift(const api::PipelineHealth& t) {
  logging::PipelineHealth h;
  for (const auto& s : t.sinks) h.sinks.push_back(from_thrift(s));
  h.submitted = u64(t.submitted);
  h.emitted = u64(t.emitted);
  h.aggregated = u64(t.aggregated);
  h.dropped_queue = u64(t.dropped_queue);
  h.dropped_queue_security = u64(t.dropped_queue_security);
  h.intake_backlog = u64(t.intake_backlog);
  h.ids_persistent = t.ids_persistent;
  h.host_id = t.host_id;
  h.next_seq = u64(t.next_seq);
  h.last_error = t.last_error;
  return h;
}

template <size_t N>
std::vector<int64_t> to_list(const std::array<uint64_t, N>& a) {
  return std::vector<int64_t>(a.begin(), a.end());
}

template <size_t N>
void from_list(const std::vector<int64_t>& v, std::array<uint64_t, N>* a) {
  a->fill(0);
  std::transform(v.begin(), v.begin() + static_cast<ptrdiff_t>(std::min(v.size(), N)), a->begin(),
                 u64);
}

}  // namespace

api::StatusReply to_thrift(const agent::StatusReport& s) {
  api::StatusReply r;
  r.version = s.version;
  r.uptime_s = i64(s.uptime_s);
  r.host = s.host;
  r.started_at = s.started_at;
  r.policy_path = s.policy_path;
  r.policy_version = s.policy_version;
  r.policy_hash = s.policy_hash;
  r.policy_generation = i64(s.policy_generation);
  r.policy_loaded_at = s.policy_loaded_at;
  r.policy_last_error = s.policy_last_error;
  r.policy_last_error_at = s.policy_last_error_at;
  for (const auto& x : s.rules) {
    api::RuleStatus t;
    t.name = x.name;
    t.boundary = x.boundary;
    t.mode = x.mode;
    t.policy_mode = x.policy_mode;
    t.overridden = x.overridden;
    r.rules.push_back(std::move(t));
  }
  r.exemptions_active = s.exemptions_active;
  r.policy_watch = s.policy_watch;
  for (const auto& i : s.interfaces) {
    api::InterfaceStatus t;
    t.name = i.name;
    t.ifindex = i.ifindex;
    t.attached = i.attached;
    t.created_qdisc = i.created_qdisc;
    t.hook = i.hook;
    t.pattern = i.pattern;
    t.hooks = i.hooks;
    r.interfaces.push_back(std::move(t));
  }
  r.bpffs = s.bpffs;
  r.pin_root = s.pin_root;
  r.cgroup2 = s.cgroup2;
  r.tables_adopted = s.tables_adopted;
  r.last_gap = s.last_gap;
  r.flow_reaper = s.flow_reaper;
  r.counters = to_list(s.counters);
  r.drops_by_reason = to_list(s.drops_by_reason);
  r.abi_version = static_cast<int32_t>(s.abi_version);
  for (const auto& [name, schema] : s.tables) r.tables[name] = static_cast<int32_t>(schema);
  r.attribution.active_backend = s.attribution.active_backend;
  r.attribution.raw_socket_backend = s.attribution.raw_socket_backend;
  r.attribution.raw_socket_reason = s.attribution.raw_socket_reason;
  r.attribution.raw_sockets_opened = i64(s.attribution.raw_sockets_opened);
  r.attribution.raw_socket_events_lost = i64(s.attribution.raw_socket_events_lost);
  for (const auto& b : s.attribution.backends) {
    api::BackendStatus t;
    t.name = b.name;
    t.state = b.state;
    t.reason = b.reason;
    r.attribution.backends.push_back(std::move(t));
  }
  r.upgrade.running = s.upgrade.running;
  r.upgrade.summary = s.upgrade.summary;
  r.upgrade.redirected = i64(s.upgrade.redirected);
  for (const auto& u : s.upgrade.rules) {
    api::UpgradeRuleStatus t;
    t.name = u.name;
    t.side = u.side;
    t.connections = i64(u.connections);
    t.active = i64(u.active);
    t.bytes_up = i64(u.bytes_up);
    t.bytes_down = i64(u.bytes_down);
    t.passthrough = i64(u.passthrough);
    t.plaintext = i64(u.plaintext);
    t.resumed = i64(u.resumed);
    for (const auto& [reason, n] : u.failures) t.failures[reason] = i64(n);
    r.upgrade.rules.push_back(std::move(t));
  }
  r.events_received = i64(s.events_received);
  r.events_written = i64(s.events_written);
  r.events_write_failed = i64(s.events_write_failed);
  r.sockets_destroyed = i64(s.sockets_destroyed);
  r.socket_destroy_failed = i64(s.socket_destroy_failed);
  r.events_path = s.events_path;
  r.event_pipeline = to_thrift(s.event_pipeline);
  r.metrics_listen = s.metrics_listen;
  return r;
}

agent::StatusReport from_thrift(const api::StatusReply& r) {
  agent::StatusReport s;
  s.version = r.version;
  s.uptime_s = u64(r.uptime_s);
  s.host = r.host;
  s.started_at = r.started_at;
  s.policy_path = r.policy_path;
  s.policy_version = r.policy_version;
  s.policy_hash = r.policy_hash;
  s.policy_generation = u64(r.policy_generation);
  s.policy_loaded_at = r.policy_loaded_at;
  s.policy_last_error = r.policy_last_error;
  s.policy_last_error_at = r.policy_last_error_at;
  for (const auto& t : r.rules) {
    agent::RuleStatus x(t.name, t.mode);
    x.boundary = t.boundary;
    x.policy_mode = t.policy_mode;
    x.overridden = t.overridden;
    s.rules.push_back(std::move(x));
  }
  s.exemptions_active = r.exemptions_active;
  s.policy_watch = r.policy_watch;
  for (const auto& t : r.interfaces) {
    agent::InterfaceStatus i;
    i.name = t.name;
    i.ifindex = t.ifindex;
    i.attached = t.attached;
    i.created_qdisc = t.created_qdisc;
    i.hook = t.hook;
    i.pattern = t.pattern;
    i.hooks = t.hooks;
    s.interfaces.push_back(std::move(i));
  }
  s.bpffs = r.bpffs;
  s.pin_root = r.pin_root;
  s.cgroup2 = r.cgroup2;
  s.tables_adopted = r.tables_adopted;
  s.last_gap = r.last_gap;
  s.flow_reaper = r.flow_reaper;
  from_list(r.counters, &s.counters);
  from_list(r.drops_by_reason, &s.drops_by_reason);
  s.abi_version = static_cast<uint32_t>(r.abi_version);
  for (const auto& [name, schema] : r.tables) s.tables[name] = static_cast<uint32_t>(schema);
  s.attribution.active_backend = r.attribution.active_backend;
  s.attribution.raw_socket_backend = r.attribution.raw_socket_backend;
  s.attribution.raw_socket_reason = r.attribution.raw_socket_reason;
  s.attribution.raw_sockets_opened = u64(r.attribution.raw_sockets_opened);
  s.attribution.raw_socket_events_lost = u64(r.attribution.raw_socket_events_lost);
  for (const auto& t : r.attribution.backends) {
    s.attribution.backends.push_back({t.name, t.state, t.reason});
  }
  s.upgrade.running = r.upgrade.running;
  s.upgrade.summary = r.upgrade.summary;
  s.upgrade.redirected = u64(r.upgrade.redirected);
  for (const auto& t : r.upgrade.rules) {
    agent::UpgradeRuleStatus u;
    u.name = t.name;
    u.side = t.side;
    u.connections = u64(t.connections);
    u.active = u64(t.active);
    u.bytes_up = u64(t.bytes_up);
    u.bytes_down = u64(t.bytes_down);
    u.passthrough = u64(t.passthrough);
    u.plaintext = u64(t.plaintext);
    u.resumed = u64(t.resumed);
    for (const auto& [reason, n] : t.failures) u.failures[reason] = u64(n);
    s.upgrade.rules.push_back(std::move(u));
  }
  s.events_received = u64(r.events_received);
  s.events_written = u64(r.events_written);
  s.events_write_failed = u64(r.events_write_failed);
  s.sockets_destroyed = u64(r.sockets_destroyed);
  s.socket_destroy_failed = u64(r.socket_destroy_failed);
  s.events_path = r.events_path;
  s.event_pipeline = from_thrift(r.event_pipeline);
  s.metrics_listen = r.metrics_listen;
  return s;
}

}  // namespace tlswall::control
