// tlswall control API: what tlswallctl (or any other client) asks tlswalld
// over the control Unix socket (default /run/tlswall/control.sock), framed
// transport, binary protocol. The same IDL technology as the event schema
// (logging/tlswall_event.thrift).
//
// This file is an API. Clients and daemons of different releases talk to
// each other, so:
//  - method names, field ids and enum numbers are never reused or
//    renumbered; fields and methods are only appended;
//  - a new field's default value must mean "unknown / not reported" to a
//    reader, since an older daemon does not send it;
//  - a retired field keeps its id, commented "unused since API vN";
//  - API_VERSION goes up with every change; ping() returns it.
//
// Access (enforced in one place, agent/control/control_server.cc, by method
// name before any handler runs): ping, status, flows, events and
// policy_show are read-only and allowed for root and for members of the
// configured control group; reload, set_mode and teardown change state and
// are allowed for root (uid 0) only. Every call of a state-changing method,
// allowed or denied, is audited. A call that is not allowed is answered
// with AccessDenied.
//
// Unsigned 64-bit counters travel as i64 (the bit pattern).

namespace cpp tlswall.control.api
namespace py tlswall_control

const i32 API_VERSION = 1

// The caller may not make this call (not root for a state change; not in
// the control group).
exception AccessDenied {
  1: string message,
}

// The daemon could not do what was asked (unknown rule, bad mode, no
// policy loaded, fail_mode "closed" without open, ...).
exception ControlError {
  1: string message,
}

struct PingReply {
  1: string version,      // daemon release, e.g. "0.1.0"
  2: i32 api_version,     // API_VERSION the daemon was built with
  3: i64 pid,             // daemon process id
}

// ---- status ----

struct InterfaceStatus {
  1: string name,
  2: i32 ifindex,
  3: bool attached,        // our filter is in place right now
  4: bool created_qdisc,   // the clsact qdisc is ours
  5: string hook,          // main hook, e.g. "tc egress", "tc egress (L3)"
  6: string pattern,       // the configured interface pattern that matched it
  7: list<string> hooks,   // every hook attached on this interface
}

struct RuleStatus {
  1: string name,
  2: string boundary,
  3: string mode,          // effective: monitor | enforce
  4: string policy_mode,   // as the policy file says
  5: bool overridden,      // mode set at run time (set_mode), differs from the file
}

struct BackendStatus {
  1: string name,          // kprobe | fentry | tp_btf | sock_ops
  2: string state,         // active | standby | unavailable | failed
  3: string reason,        // why not active, "" if active
}

struct AttributionStatus {
  1: string active_backend,        // "" = none: flows carry no owner
  2: list<BackendStatus> backends,
  3: string raw_socket_backend,    // "" = none: AF_PACKET/AF_XDP sockets go unreported
  4: string raw_socket_reason,     // why none runs
  5: i64 raw_sockets_opened,
  6: i64 raw_socket_events_lost,
}

// One upgrade rule (client side) or termination (server side), as the
// upgrade proxy counts it.
struct UpgradeRuleStatus {
  1: string name,
  2: string side,                  // client (upgrade) | server (termination)
  3: i64 connections,
  4: i64 active,
  5: i64 bytes_up,                 // toward the server / backend
  6: i64 bytes_down,               // toward the client
  7: i64 passthrough,              // client side: TLS clients passed through
  8: i64 plaintext,                // server side: permissive plaintext connections
  9: i64 resumed,                  // TLS sessions resumed toward servers
  10: map<string, i64> failures,   // failed closed, by reason (nonzero only)
}

struct UpgradeStatus {
  1: bool running,                 // the upgrade proxy runs
  2: string summary,               // listeners and rules, one line
  3: i64 redirected,               // connects the kernel sent to the proxy
  4: list<UpgradeRuleStatus> rules,
}

struct SinkHealth {
  1: string name,
  2: string kind,                  // scribe | syslog | json
  3: string target,
  4: string state,                 // "ok" or why it is degraded
  5: bool connected,
  6: i64 backlog,
  7: i64 buffered,
  8: i64 buffer_bytes,
  9: bool buffer_writable,
  10: i64 delivered,
  11: i64 dropped,
  12: i64 dropped_queue_full,
  13: i64 dropped_buffer_cap,
  14: i64 dropped_buffer_corrupt,
  15: i64 dropped_shutdown,
  16: i64 quarantined_segments,
  17: i64 send_failures,
  18: i64 try_later,
  19: string last_error,
  20: string last_error_at,
  21: string buffer_error,
}

struct PipelineHealth {
  1: list<SinkHealth> sinks,
  2: i64 submitted,
  3: i64 emitted,
  4: i64 aggregated,
  5: i64 dropped_queue,
  6: i64 dropped_queue_security,
  7: i64 intake_backlog,
  8: bool ids_persistent,
  9: string host_id,
  10: i64 next_seq,
  11: string last_error,
}

struct StatusReply {
  // daemon
  1: string version,
  2: i64 uptime_s,
  3: string host,
  4: string started_at,              // RFC 3339, UTC
  // policy
  10: string policy_path,
  11: string policy_version,
  12: string policy_hash,
  13: i64 policy_generation,
  14: string policy_loaded_at,
  15: string policy_last_error,      // last rejected reload, "" if none
  16: string policy_last_error_at,
  17: list<RuleStatus> rules,
  18: list<string> exemptions_active,
  19: string policy_watch,           // how the policy path is watched, "" = not watched
  // kernel side
  30: list<InterfaceStatus> interfaces,
  31: string bpffs,
  32: string pin_root,
  33: string cgroup2,
  34: string tables_adopted,         // what the start found under the pin root
  35: string last_gap,               // the user-space gap this start closed
  36: list<i64> counters,            // index = TW_CNT_* (bpf/abi/tlswall_abi.h)
  37: list<i64> drops_by_reason,     // index = TW_REASON_*
  38: i32 abi_version,
  39: map<string, i32> tables,       // pinned table -> schema version
  40: AttributionStatus attribution,
  41: string flow_reaper,            // "tp_btf/tcp_destroy_sock", or "off: <why>"
  42: UpgradeStatus upgrade,
  // events
  50: i64 events_received,
  51: i64 events_written,
  52: i64 events_write_failed,
  53: i64 sockets_destroyed,
  54: i64 socket_destroy_failed,
  55: string events_path,
  56: PipelineHealth event_pipeline,
  57: string metrics_listen,         // Prometheus endpoint address, "" = off
}

// ---- flows ----

// Every set filter must match (AND). Unset = any.
struct FlowsQuery {
  1: optional string verdict,  // the action: pass | report | drop
  2: optional string rule,
  3: optional i64 pid,
  4: optional i32 limit,       // newest first; the daemon caps it
}

// One recent verdict on a protected flow, with its owner.
struct FlowRecord {
  1: i64 time_us,              // microseconds since the Unix epoch, UTC
  2: string action,            // pass | report | drop
  3: string reason,            // classifier reason name
  4: string mode,              // monitor | enforce (the rule's, at the time)
  5: string rule,
  6: string boundary,
  7: i32 family,               // 4 | 6
  8: string src,
  9: i32 sport,
  10: string dst,
  11: i32 dport,
  12: string interface_name,
  13: string tls_version,      // ClientHello version, "" if none
  14: optional i64 pid,        // unset: unknown
  15: optional i64 uid,        // unset: unknown
  16: string comm,
  17: string exe,
  18: string cgroup,
  19: string container,
  20: string owner_status,     // recorded | not_recorded | no_socket | not_full_sock | unknown
  21: i64 policy_generation,
  22: string exemption,        // exemption that covered it, "" if none
  23: i64 count,               // flows this record stands for (aggregated), >= 1
}

// ---- events ----

struct EventLine {
  1: i64 seq,                  // the event's sequence number (increasing)
  2: string json,              // the event as one JSON object (logging/README.md)
}

// events(after_seq, max): the events held with seq > after_seq, oldest
// first, at most max (the daemon may cap it; max = 0 asks only for the
// seq fields). after_seq 0 (a new reader) asks for the newest max events.
// An after_seq beyond newest_seq (a restarted daemon whose numbers went
// elsewhere) is answered as if it were 0.
struct EventsReply {
  1: list<EventLine> events,
  2: i64 next_seq,             // pass as after_seq in the next call: the seq of the
                               // last event returned, else after_seq (or 0, see above)
  3: i64 skipped,              // events after after_seq that fell out of the
                               // daemon's buffer before this call
  4: i64 oldest_seq,           // oldest event held, 0 if none
  5: i64 newest_seq,           // newest event held, 0 if none
}

// ---- policy ----

// One entry of a rule's or an exemption's owner selector. Entries of one
// kind: any matches; across kinds: all given must match; none = any owner.
struct OwnerSelector {
  1: string kind,              // cgroup | user | comm
  2: string value,             // "/system.slice/x.service", "backup" or "1001", "pg_dump"
}

struct PolicyRule {
  1: string name,
  2: string boundary,
  3: list<string> ports,       // "443", "8000-8099"
  4: string mode,              // as the policy file says
  5: string effective_mode,    // what the kernel applies now
  6: bool overridden,          // a run-time override (set_mode) is in force
  7: string min_tls,           // "1.2"
  8: list<OwnerSelector> owners,  // empty = every owner
  9: list<string> preambles,   // allowed before the ClientHello: "postgresql", "mysql"
  10: string udp,              // UDP to its boundary and ports: "allow", "quic", "block"
}

struct PolicyExemption {
  1: string name,
  2: string reason,
  3: string owner,             // the person or team accountable
  4: string expires,           // "YYYY-MM-DD" (end of that day, UTC), "" = never
  5: bool active,              // in force now (not expired)
  6: list<string> cidrs,       // empty = any destination
  7: list<string> ports,       // empty = any port
  8: list<OwnerSelector> owners,  // empty = any process
}

struct PolicyBoundary {
  1: string name,
  2: string description,
  3: list<string> cidrs,
}

struct PolicyShowReply {
  1: string path,
  2: string version,
  3: string hash,
  4: string loaded_at,         // RFC 3339, UTC
  5: i64 generation,
  6: list<PolicyRule> rules,
  7: list<PolicyExemption> exemptions,
  8: list<PolicyBoundary> boundaries,
  9: string default_mode,
  10: list<string> files,
}

struct ReloadReply {
  1: bool ok,                  // false: rejected, the policy in force stays
  2: string error,             // why it was rejected (file:line:col: ...)
  3: string version,           // the policy in force after the call
  4: string hash,
  5: i64 generation,
  6: bool changed,             // a new generation was published
}

// ---- mode ----

struct ModeChange {
  1: string rule,
  2: string previous_mode,     // effective, before
  3: string mode,              // effective, after
  4: bool overridden,          // a run-time override is in force now
}

struct ModeReply {
  1: list<ModeChange> changed,  // only rules whose effective mode or override changed
  2: i64 generation,            // policy generation in force after the call
}

struct TeardownReply {
  1: string message,
}

service TlswallControl {
  // Read-only (root or the control group).
  PingReply ping() throws (1: AccessDenied denied),
  StatusReply status() throws (1: AccessDenied denied, 2: ControlError error),
  list<FlowRecord> flows(1: FlowsQuery query)
      throws (1: AccessDenied denied, 2: ControlError error),
  // No long poll: a follower calls again (tlswallctl: every 200 ms).
  EventsReply events(1: i64 after_seq, 2: i32 max)
      throws (1: AccessDenied denied, 2: ControlError error),
  PolicyShowReply policy_show() throws (1: AccessDenied denied, 2: ControlError error),

  // State-changing (root only, audited).
  // Re-reads the policy path; a bad policy is rejected (ok = false) and the
  // one in force stays.
  ReloadReply reload() throws (1: AccessDenied denied, 2: ControlError error),
  // rule: a rule name or "all"; mode: "monitor" | "enforce" (run-time
  // override) | "policy" (drop the override: back to the file's mode).
  ModeReply set_mode(1: string rule, 2: string mode)
      throws (1: AccessDenied denied, 2: ControlError error),
  // Detach everywhere and remove the pins, then the daemon exits. With
  // fail_mode "closed", refused (ControlError) unless open is true.
  TeardownReply teardown(1: bool open) throws (1: AccessDenied denied, 2: ControlError error),
}
