#include "agent/status_report.h"

#include <cstdio>
#include <sstream>

#include "logging/json.h"

namespace tlswall::agent {

using logging::JsonArray;
using logging::JsonObject;

const char* counter_name(uint32_t c) {
  switch (c) {
    case TW_CNT_PACKETS:
      return "packets";
    case TW_CNT_FLOWS_SEEN:
      return "flows_seen";
    case TW_CNT_FLOWS_TLS:
      return "flows_tls";
    case TW_CNT_FLOWS_NOT_TLS:
      return "flows_not_tls";
    case TW_CNT_PLAINTEXT_REPORTED:
      return "plaintext_reported";
    case TW_CNT_PLAINTEXT_BLOCKED:
      return "plaintext_blocked";
    case TW_CNT_EXEMPT:
      return "exempt";
    case TW_CNT_STATE_LOST:
      return "state_lost";
    case TW_CNT_PACKETS_DROPPED:
      return "packets_dropped";
    case TW_CNT_EVENTS_LOST:
      return "events_lost";
    case TW_CNT_HELD_OUT_OF_WINDOW:
      return "held_out_of_window";
    case TW_CNT_FRAGMENTS:
      return "opaque_to_boundary";
    case TW_CNT_FLOW_TABLE_FULL:
      return "flow_table_full";
    case TW_CNT_PARSE_ERRORS:
      return "parse_errors";
    case TW_CNT_TLS_BELOW_MINIMUM:
      return "tls_below_minimum";
    case TW_CNT_FLOWS_INBOUND:
      return "flows_inbound";
    case TW_CNT_FLOWS_REAPED:
      return "flows_reaped";
    case TW_CNT_FLOWS_KEPT:
      return "flows_kept_after_close";
    case TW_CNT_SERVERS_CHECKED:
      return "servers_answered_tls";
    case TW_CNT_SERVERS_NOT_TLS:
      return "servers_not_tls";
    case TW_CNT_SERVER_VERSION_UNKNOWN:
      return "server_version_unknown";
    case TW_CNT_BAD_RECORDS:
      return "bad_later_records";
    case TW_CNT_UDP_FLOWS:
      return "udp_flows";
    case TW_CNT_UDP_NOT_ALLOWED:
      return "udp_not_allowed";
    default:
      return nullptr;
  }
}

std::string reason_name(uint32_t r) {
  switch (r) {
    case TW_REASON_NONE:
      return "none";
    case TW_REASON_NOT_HANDSHAKE_RECORD:
      return "not_handshake_record";
    case TW_REASON_BAD_RECORD_VERSION:
      return "bad_record_version";
    case TW_REASON_BAD_RECORD_LENGTH:
      return "bad_record_length";
    case TW_REASON_NOT_CLIENT_HELLO:
      return "not_client_hello";
    case TW_REASON_BAD_HANDSHAKE_LENGTH:
      return "bad_handshake_length";
    case TW_REASON_BAD_CLIENT_VERSION:
      return "bad_client_version";
    case TW_REASON_TLS_BELOW_MINIMUM:
      return "tls_below_minimum";
    case TW_REASON_OVERLAP_MISMATCH:
      return "overlap_mismatch";
    case TW_REASON_UNDECIDABLE:
      return "undecidable";
    case TW_REASON_FRAGMENTED:
      return "fragmented";
    case TW_REASON_STATE_LOST:
      return "state_lost";
    case TW_REASON_OUT_OF_WINDOW:
      return "out_of_window";
    case TW_REASON_OPAQUE_HEADERS:
      return "opaque_headers";
    case TW_REASON_BAD_PREAMBLE:
      return "bad_preamble";
    case TW_REASON_PREAMBLE_NOT_ALLOWED:
      return "preamble_not_allowed";
    case TW_REASON_BAD_RECORD:
      return "bad_record";
    case TW_REASON_SERVER_NOT_TLS:
      return "server_not_tls";
    case TW_REASON_UDP_NOT_ALLOWED:
      return "udp_not_allowed";
    case TW_REASON_NOT_QUIC:
      return "not_quic";
    default:
      return "reason_" + std::to_string(r);
  }
}

const char* class_name(uint32_t c) {
  switch (c) {
    case TW_CLASS_PENDING:
      return "pending";
    case TW_CLASS_TLS:
      return "tls";
    case TW_CLASS_NOT_TLS:
      return "not_tls";
    case TW_CLASS_UNTRACKED:
      return "untracked";
    case TW_CLASS_INBOUND:
      return "inbound";
    default:
      return "unknown";
  }
}

const char* evidence_name(uint32_t e) {
  switch (e) {
    case TW_EVIDENCE_CLIENT_RECORDS:
      return "client_records";
    case TW_EVIDENCE_SERVER_HELLO:
      return "server_hello";
    default:
      return "client_hello";
  }
}

const char* action_name(uint32_t a) {
  switch (a) {
    case TW_ACTION_PASS:
      return "pass";
    case TW_ACTION_REPORT:
      return "report";
    case TW_ACTION_DROP:
      return "drop";
    default:
      return "unknown";
  }
}

std::string overall_mode(const StatusReport& s) {
  bool mon = false, enf = false;
  for (const auto& r : s.rules) (r.mode == "enforce" ? enf : mon) = true;
  if (mon && enf) return "mixed";
  if (enf) return "enforce";
  if (mon) return "monitor";
  return "none";
}

namespace {

// The schema-version keys of the first release's "bpf" object, from the
// tables the daemon reported; a key is left out if its table is not.
const std::pair<const char*, const char*> kLegacySchemaKeys[] = {
    {"schema_flows", "flows"},
    {"schema_policy", "lpm4"},
    {"schema_counters", "counters"},
    {"schema_events", "events"},
};

std::string policy_mode_of(const RuleStatus& r) {
  return r.policy_mode.empty() ? r.mode : r.policy_mode;
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (const auto& x : v) out += (out.empty() ? "" : sep) + x;
  return out;
}

}  // namespace

std::string render_status_json(const StatusReport& s) {
  JsonObject policy;
  policy.add("path", s.policy_path)
      .add("version", s.policy_version)
      .add("hash", s.policy_hash)
      .add("generation", s.policy_generation)
      .add("loaded_at", s.policy_loaded_at)
      .add("last_error", s.policy_last_error)
      .add("last_error_at", s.policy_last_error_at)
      .add("watch", s.policy_watch);
  JsonArray rules;
  for (const auto& r : s.rules) {
    rules.add_raw(JsonObject()
                      .add("name", r.name)
                      .add("mode", r.mode)
                      .add("boundary", r.boundary)
                      .add("policy_mode", policy_mode_of(r))
                      .add_bool("overridden", r.overridden)
                      .str());
  }
  JsonArray exemptions;
  for (const auto& e : s.exemptions_active) exemptions.add(e);
  JsonArray ifaces;
  for (const auto& i : s.interfaces) {
    JsonArray hooks;
    for (const auto& h : i.hooks) hooks.add(h);
    ifaces.add_raw(JsonObject()
                       .add("name", i.name)
                       .add("ifindex", i.ifindex)
                       .add("hook", i.hook)
                       .add_bool("attached", i.attached)
                       .add_bool("created_qdisc", i.created_qdisc)
                       .add("pattern", i.pattern)
                       .add_raw("hooks", hooks.str())
                       .str());
  }
  JsonObject counters;
  for (uint32_t c = 0; c < TW_CNT_MAX; ++c) {
    if (const char* n = counter_name(c)) counters.add(n, s.counters[c]);
  }
  JsonObject drops;
  for (uint32_t r = 1; r < TW_REASON_MAX; ++r) {
    if (s.drops_by_reason[r]) drops.add(reason_name(r), s.drops_by_reason[r]);
  }
  JsonObject events;
  events.add("path", s.events_path)
      .add("received", s.events_received)
      .add("written", s.events_written)
      .add("write_failed", s.events_write_failed)
      .add("lost_in_kernel", s.counters[TW_CNT_EVENTS_LOST]);
  JsonObject bpf;
  bpf.add("abi_version", s.abi_version)
      .add("bpffs", s.bpffs)
      .add("pin_root", s.pin_root)
      .add("cgroup2", s.cgroup2)
      .add("tables", s.tables_adopted);
  for (const auto& [key, table] : kLegacySchemaKeys) {
    const auto it = s.tables.find(table);
    if (it != s.tables.end()) bpf.add(key, it->second);
  }
  bpf.add("last_gap", s.last_gap);
  bpf.add("flow_reaper", s.flow_reaper);
  JsonObject tables;
  for (const auto& [name, schema] : s.tables) tables.add(name, schema);
  JsonArray backends;
  for (const auto& b : s.attribution.backends) {
    backends.add_raw(
        JsonObject().add("name", b.name).add("state", b.state).add("reason", b.reason).str());
  }
  JsonArray upgrade_rules;
  for (const auto& u : s.upgrade.rules) {
    JsonObject failures;
    for (const auto& [reason, n] : u.failures) failures.add(reason, n);
    upgrade_rules.add_raw(JsonObject()
                              .add("name", u.name)
                              .add("side", u.side)
                              .add("connections", u.connections)
                              .add("active", u.active)
                              .add("bytes_up", u.bytes_up)
                              .add("bytes_down", u.bytes_down)
                              .add("passthrough", u.passthrough)
                              .add("plaintext", u.plaintext)
                              .add("resumed", u.resumed)
                              .add_raw("failures", failures.str())
                              .str());
  }
  JsonObject o;
  o.add("version", s.version)
      .add("host", s.host)
      .add("uptime_s", s.uptime_s)
      .add("started_at", s.started_at)
      .add("mode", overall_mode(s))
      .add_raw("policy", policy.str())
      .add_raw("rules", rules.str())
      .add_raw("exemptions_active", exemptions.str())
      .add_raw("interfaces", ifaces.str())
      .add_raw("attribution",
               JsonObject()
                   .add("active_backend", s.attribution.active_backend)
                   .add_raw("backends", backends.str())
                   .add("raw_socket_backend", s.attribution.raw_socket_backend)
                   .add("raw_socket_reason", s.attribution.raw_socket_reason)
                   .add("raw_sockets_opened", s.attribution.raw_sockets_opened)
                   .add("raw_socket_events_lost", s.attribution.raw_socket_events_lost)
                   .str())
      .add_raw("upgrade", JsonObject()
                              .add_bool("running", s.upgrade.running)
                              .add("summary", s.upgrade.summary)
                              .add("redirected", s.upgrade.redirected)
                              .add_raw("rules", upgrade_rules.str())
                              .str())
      .add_raw("bpf", bpf.str())
      .add_raw("tables", tables.str())
      .add_raw("counters", counters.str())
      .add_raw("drops_by_reason", drops.str())
      .add_raw("events", events.str())
      .add_raw("event_pipeline", logging::render_health_json(s.event_pipeline))
      .add_raw("sockets", JsonObject()
                              .add("destroyed", s.sockets_destroyed)
                              .add("destroy_failed", s.socket_destroy_failed)
                              .str())
      .add("metrics_listen", s.metrics_listen);
  return o.str();
}

std::string render_status_text(const StatusReport& s) {
  std::ostringstream o;
  auto row = [&](const std::string& k, const std::string& v) {
    o << "  " << k;
    if (k.size() < 22) o << std::string(22 - k.size(), ' ');
    o << ' ' << v << '\n';
  };
  o << "tlswalld " << s.version << " on " << s.host << ", up " << s.uptime_s << "s";
  if (!s.started_at.empty()) o << " (since " << s.started_at << ")";
  o << "\n";
  o << "Policy\n";
  row("mode", overall_mode(s));
  row("version", s.policy_version);
  row("hash", s.policy_hash);
  row("path", s.policy_path);
  row("watch", s.policy_watch.empty() ? "not watched (reload: SIGHUP or tlswallctl policy reload)"
                                      : s.policy_watch);
  row("generation", std::to_string(s.policy_generation));
  row("loaded at", s.policy_loaded_at);
  row("last reload error",
      s.policy_last_error.empty() ? "none" : s.policy_last_error_at + " " + s.policy_last_error);
  o << "Rules\n";
  for (const auto& r : s.rules) {
    std::string v = r.mode;
    if (!r.boundary.empty()) v += ", boundary " + r.boundary;
    if (r.overridden) v += ", run-time override (policy: " + policy_mode_of(r) + ")";
    row(r.name, v);
  }
  if (!s.exemptions_active.empty()) {
    o << "Exemptions in force\n";
    for (const auto& e : s.exemptions_active) row(e, "active");
  }
  o << "Attached\n";
  for (const auto& i : s.interfaces) {
    std::string v = i.hook + (i.attached ? ", attached" : ", NOT ATTACHED") +
                    (i.created_qdisc ? " (clsact ours)" : " (clsact pre-existing)");
    if (!i.pattern.empty() && i.pattern != i.name) v += ", matched by '" + i.pattern + "'";
    row(i.name, v);
    if (!i.hooks.empty()) row("  hooks", join(i.hooks, ", "));
  }
  row("bpffs", s.bpffs + " (pin root " + s.pin_root + ")");
  row("cgroup v2", s.cgroup2.empty() ? "not mounted" : s.cgroup2);
  std::vector<std::string> tables;
  for (const auto& [name, schema] : s.tables)
    tables.push_back(name + "_v" + std::to_string(schema));
  row("table ABI",
      std::to_string(s.abi_version) + (tables.empty() ? "" : " (" + join(tables, ", ") + ")"));
  row("pins at start", s.tables_adopted);
  if (!s.last_gap.empty()) row("last restart gap", s.last_gap);
  row("flow reaper", s.flow_reaper);
  o << "Attribution\n";
  row("backend", s.attribution.active_backend.empty() ? "none (flows carry no owner)"
                                                      : s.attribution.active_backend);
  for (const auto& b : s.attribution.backends) {
    row("  " + b.name, b.state + (b.reason.empty() ? "" : ": " + b.reason));
  }
  row("raw sockets", s.attribution.raw_socket_backend.empty()
                         ? "unwatched (" + s.attribution.raw_socket_reason + ")"
                         : std::to_string(s.attribution.raw_sockets_opened) +
                               " AF_PACKET/AF_XDP opened (" + s.attribution.raw_socket_backend +
                               " probe, " + std::to_string(s.attribution.raw_socket_events_lost) +
                               " lost)");
  if (s.upgrade.running || !s.upgrade.rules.empty()) {
    o << "Upgrade proxy\n";
    row("listeners", s.upgrade.summary);
    row("redirected connects", std::to_string(s.upgrade.redirected));
    for (const auto& u : s.upgrade.rules) {
      std::string v = std::to_string(u.connections) + " connections, " + std::to_string(u.active) +
                      " active, " + std::to_string(u.bytes_up) + " B up, " +
                      std::to_string(u.bytes_down) + " B down";
      if (u.passthrough) v += ", " + std::to_string(u.passthrough) + " passed through (TLS)";
      if (u.plaintext) v += ", " + std::to_string(u.plaintext) + " plaintext (permissive)";
      if (u.resumed) v += ", " + std::to_string(u.resumed) + " resumed";
      std::vector<std::string> f;
      for (const auto& [reason, n] : u.failures) f.push_back(reason + " " + std::to_string(n));
      v += f.empty() ? ", no failures" : ", failed closed: " + join(f, ", ");
      row("  " + u.name + " (" + u.side + ")", v);
    }
  }
  o << "Counters\n";
  for (uint32_t c = 0; c < TW_CNT_MAX; ++c) {
    if (const char* n = counter_name(c)) row(n, std::to_string(s.counters[c]));
  }
  bool any_drop = false;
  for (uint32_t r = 1; r < TW_REASON_MAX; ++r) {
    if (!s.drops_by_reason[r]) continue;
    if (!any_drop) o << "Drops by reason\n";
    any_drop = true;
    row(reason_name(r), std::to_string(s.drops_by_reason[r]));
  }
  o << "Events\n";
  row("file", s.events_path);
  row("received", std::to_string(s.events_received));
  row("written", std::to_string(s.events_written));
  row("lost (ring buffer)", std::to_string(s.counters[TW_CNT_EVENTS_LOST]));
  row("lost (pipeline)", std::to_string(s.events_write_failed));
  row("sockets destroyed", std::to_string(s.sockets_destroyed) + " (failed " +
                               std::to_string(s.socket_destroy_failed) + ")");
  row("metrics endpoint", s.metrics_listen.empty() ? "off" : s.metrics_listen);
  o << "Event sinks\n";
  for (const auto& [k, v] : logging::health_rows(s.event_pipeline)) row(k, v);
  return o.str();
}

}  // namespace tlswall::agent
