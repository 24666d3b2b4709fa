#include "logging/event.h"

#include <cstdio>
#include <ctime>

#include "logging/json.h"

namespace tlswall::logging {

const char* event_type_name(EventType t) {
  switch (t) {
    case EventType::kAgentStarted:
      return "agent_started";
    case EventType::kAgentStopped:
      return "agent_stopped";
    case EventType::kPolicyApplied:
      return "policy_applied";
    case EventType::kPolicyRejected:
      return "policy_rejected";
    case EventType::kPlaintextReported:
      return "plaintext_reported";
    case EventType::kPlaintextBlocked:
      return "plaintext_blocked";
    case EventType::kTlsBelowMinimum:
      return "tls_below_minimum";
    case EventType::kStateLost:
      return "state_lost";
    case EventType::kEventsDropped:
      return "events_dropped";
    case EventType::kSocketDestroyFailed:
      return "socket_destroy_failed";
    case EventType::kInterfaceDetached:
      return "interface_detached";
    case EventType::kUpgraded:
      return "upgraded";
    case EventType::kUpgradeFailed:
      return "upgrade_failed";
    case EventType::kModeChanged:
      return "mode_changed";
    case EventType::kSinkDegraded:
      return "sink_degraded";
    case EventType::kSinkRecovered:
      return "sink_recovered";
    case EventType::kAttachmentRestored:
      return "attachment_restored";
    case EventType::kUserSpaceGap:
      return "user_space_gap";
    case EventType::kTakeoverFailed:
      return "takeover_failed";
    case EventType::kControlAudit:
      return "control_audit";
    case EventType::kInterfaceAttached:
      return "interface_attached";
    case EventType::kRawSocketOpened:
      return "raw_socket_opened";
  }
  return "unknown";
}

EventClass event_class(EventType t) {
  switch (t) {
    case EventType::kPlaintextReported:
    case EventType::kPlaintextBlocked:
    case EventType::kTlsBelowMinimum:
    case EventType::kUpgradeFailed:
    case EventType::kRawSocketOpened:
      return EventClass::kSecurity;
    case EventType::kStateLost:
    case EventType::kSocketDestroyFailed:
    case EventType::kUpgraded:
      return EventClass::kOther;
    case EventType::kAgentStarted:
    case EventType::kAgentStopped:
    case EventType::kPolicyApplied:
    case EventType::kPolicyRejected:
    case EventType::kModeChanged:
    case EventType::kEventsDropped:
    case EventType::kInterfaceDetached:
    case EventType::kSinkDegraded:
    case EventType::kSinkRecovered:
    case EventType::kAttachmentRestored:
    case EventType::kUserSpaceGap:
    case EventType::kTakeoverFailed:
    case EventType::kControlAudit:
    case EventType::kInterfaceAttached:
      return EventClass::kControl;
  }
  return EventClass::kOther;
}

const char* event_class_name(EventClass c) {
  switch (c) {
    case EventClass::kControl:
      return "control";
    case EventClass::kSecurity:
      return "security";
    case EventClass::kOther:
      return "other";
  }
  return "other";
}

const char* severity_name(Severity s) {
  switch (s) {
    case Severity::kInfo:
      return "info";
    case Severity::kNotice:
      return "notice";
    case Severity::kWarning:
      return "warning";
    case Severity::kError:
      return "error";
  }
  return "info";
}

std::string format_time(std::chrono::system_clock::time_point t) {
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  const size_t n = std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof(buf) - n, ".%03dZ", static_cast<int>(ms % 1000));
  return buf;
}

int64_t to_unix_us(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

std::string render_json(const Event& e, const std::string& host, const std::string& agent_version) {
  JsonObject o;
  o.add("time", format_time(e.time));
  o.add("host", host);
  o.add("agent_version", agent_version);
  o.add("type", event_type_name(e.type));
  o.add("type_id", static_cast<unsigned>(e.type));
  o.add("severity", severity_name(e.severity));
  auto opt = [&o](const char* k, const std::string& v) {
    if (!v.empty()) o.add(k, v);
  };
  opt("action", e.action);
  opt("reason", e.reason);
  opt("mode", e.mode);
  if (e.flow) {
    o.add("family", e.flow->family);
    o.add("src", e.flow->src);
    o.add("sport", static_cast<unsigned>(e.flow->sport));
    o.add("dst", e.flow->dst);
    o.add("dport", static_cast<unsigned>(e.flow->dport));
    o.add("protocol", e.flow->protocol.empty() ? std::string("tcp") : e.flow->protocol);
  }
  opt("boundary", e.boundary);
  opt("rule", e.rule);
  opt("interface", e.interface);
  opt("tls_version", e.tls_version);
  opt("preamble", e.preamble);
  opt("server_tls_version", e.server_tls_version);
  opt("evidence", e.evidence);
  opt("server_name", e.server_name);
  opt("server_subject", e.server_subject);
  opt("client_subject", e.client_subject);
  opt("cipher", e.cipher);
  opt("alpn", e.alpn);
  if (e.bytes_up) o.add("bytes_up", e.bytes_up);
  if (e.bytes_down) o.add("bytes_down", e.bytes_down);
  opt("policy_version", e.policy_version);
  if (e.policy_generation) o.add("policy_generation", e.policy_generation);
  if (e.count != 1) o.add("count", e.count);
  if (e.sock_cookie) o.add("sock_cookie", e.sock_cookie);
  opt("message", e.message);
  // Schema version 2 fields.
  o.add("schema_version", kSchemaVersion);
  opt("id", e.id);
  if (e.seq) o.add("seq", e.seq);
  if (e.owner) {
    const Owner& w = *e.owner;
    if (w.pid) o.add("pid", static_cast<uint64_t>(*w.pid));
    if (w.uid) o.add("uid", static_cast<uint64_t>(*w.uid));
    opt("comm", w.comm);
    opt("exe", w.exe);
    opt("cgroup", w.cgroup);
    opt("container", w.container);
    if (w.tid) o.add("tid", static_cast<uint64_t>(*w.tid));
    if (w.gid) o.add("gid", static_cast<uint64_t>(*w.gid));
    if (w.cgroup_id) o.add("cgroup_id", w.cgroup_id);
    opt("cmdline", w.cmdline);
    opt("unit", w.unit);
    opt("attribution", w.attribution);
    opt("attribution_backend", w.backend);
    opt("process", w.process);
    opt("attribution_detail", w.detail);
  }
  opt("previous_mode", e.previous_mode);
  if (e.first_time) o.add("first_time", format_time(*e.first_time));
  if (e.last_time) o.add("last_time", format_time(*e.last_time));
  opt("sink", e.sink);
  if (e.total) o.add("total", e.total);
  return o.str();
}

}  // namespace tlswall::logging
