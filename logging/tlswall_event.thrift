// tlswall event schema: the canonical definition of what tlswalld reports.
//
// Every field is documented in logging/README.md, which also gives the JSON
// name of each field (the JSON rendering carries the same fields; JSON
// names equal the Thrift names except: JSON "time", "first_time",
// "last_time" are RFC 3339 text where Thrift has *_us integers; JSON "type"
// is the name and "type_id" the number of Thrift's type; JSON "interface" is
// Thrift's interface_name, "interface" being reserved in Thrift).
//
// Evolution rules (receivers depend on them):
//  - field ids and enum numbers are never reused or renumbered;
//  - fields are only added, always optional, and SCHEMA_VERSION goes up;
//  - a retired field keeps its id, commented "unused since vN".
//
// The Scribe sink sends either the JSON rendering (format = "json", the
// default) or this struct in TBinaryProtocol, base64-encoded (format =
// "thrift"), one event per LogEntry.message.

namespace cpp tlswall.logging.schema
namespace py tlswall_event
namespace java tlswall.event
namespace go tlswallevent

const i32 SCHEMA_VERSION = 5

enum EventType {
  AGENT_STARTED = 1,
  AGENT_STOPPED = 2,
  POLICY_APPLIED = 3,
  POLICY_REJECTED = 4,
  PLAINTEXT_REPORTED = 5,      // protected flow, not TLS, monitor mode
  PLAINTEXT_BLOCKED = 6,       // protected flow, not TLS, enforce mode
  TLS_BELOW_MINIMUM = 7,       // ClientHello older than the rule's minimum
  STATE_LOST = 8,              // protected flow seen mid-stream, passed unjudged
  EVENTS_DROPPED = 9,          // events lost before delivery: count, reason, sink
  SOCKET_DESTROY_FAILED = 10,
  INTERFACE_DETACHED = 11,
  UPGRADED = 12,               // plaintext client moved onto TLS by the upgrade proxy
  UPGRADE_FAILED = 13,         // the upgrade proxy could not complete TLS
  MODE_CHANGED = 14,           // a rule's mode changed live
  SINK_DEGRADED = 15,          // a sink cannot deliver
  SINK_RECOVERED = 16,         // a degraded sink delivers again
  ATTACHMENT_RESTORED = 17,    // the classifier was removed or replaced; re-attached
  USER_SPACE_GAP = 18,         // no daemon for a while: how long (message), events lost (count)
  TAKEOVER_FAILED = 19,        // a starting daemon could not take over; the previous release stays
  CONTROL_AUDIT = 20,          // a state-changing control call, allowed or denied; the owner is the caller
  INTERFACE_ATTACHED = 21,     // the classifier was attached to an interface that appeared
  RAW_SOCKET_OPENED = 22,      // a process opened an AF_PACKET/AF_XDP socket (egress blind spot)
}

// Syslog severities are derived from these (info 6, notice 5, warning 4,
// error 3).
enum Severity {
  INFO = 0,
  NOTICE = 1,
  WARNING = 2,
  ERROR = 3,
}

struct Event {
  // ---- always present ----
  1: i32 schema_version,
  2: string id,               // "<host_id>-<seq>", unique per host, dedupe key
  3: i64 seq,                 // per-host sequence: increases, never reused
  4: i64 time_us,             // when it happened, microseconds since the Unix epoch (UTC)
  5: string host,             // reporter's host name
  6: string agent_version,
  7: EventType type,
  8: Severity severity,

  // ---- the verdict ----
  10: optional string action,         // drop | report | pass
  11: optional string reason,         // classifier reason name, or drop stage
  12: optional string mode,           // monitor | enforce
  13: optional string previous_mode,   // mode_changed only
  14: optional string evidence,        // which bytes decided a flow verdict: client_hello |
                                     // client_records | server_hello (schema 5)

  // ---- the flow ----
  20: optional i32 family,            // 4 | 6
  21: optional string src,
  22: optional i32 sport,
  23: optional string dst,
  24: optional i32 dport,
  25: optional string protocol,       // tcp or udp
  26: optional string interface_name, // JSON "interface" (a reserved word in Thrift)
  27: optional i64 sock_cookie,       // kernel socket cookie (an unsigned 64-bit value)
  28: optional string tls_version,    // ClientHello client_version: 1.0 .. 1.3, or the
                                     // version the upgrade proxy negotiated
  29: optional string preamble,       // plaintext before the ClientHello that the rule
                                     // allows: postgresql | mysql (schema 4)
  19: optional string server_tls_version, // the version the server chose (ServerHello):
                                     // 1.0 .. 1.3 (schema 5)
  // ---- the upgrade proxy's TLS session ----
  70: optional string server_name,    // verified and sent as SNI toward the server
  71: optional string server_subject, // server certificate subject (RFC 2253)
  72: optional string client_subject, // client certificate subject (RFC 2253), mTLS terminations
  73: optional string cipher,
  74: optional string alpn,
  75: optional i64 bytes_up,          // toward the server / backend
  76: optional i64 bytes_down,        // toward the client

  // ---- the owner (process attribution) ----
  30: optional i64 pid,
  31: optional i64 uid,
  32: optional string comm,
  33: optional string exe,
  34: optional string cgroup,
  35: optional string container,
  36: optional i64 tid,                  // the thread that connected
  37: optional i64 gid,
  38: optional i64 cgroup_id,            // cgroup v2 id (an unsigned 64-bit value)
  39: optional string cmdline,           // NULs as spaces, bounded
  44: optional string unit,              // systemd unit from the cgroup path
  45: optional string attribution,       // recorded | not_recorded | no_socket | not_full_socket
  46: optional string attribution_backend, // kprobe | fentry | tp_btf | sock_ops
  47: optional string process,           // live | exited | pid_reused (at enrichment)
  48: optional string attribution_detail, // why attribution is partial or unavailable

  // ---- the policy ----
  40: optional string boundary,
  41: optional string rule,
  42: optional string policy_version,
  43: optional i64 policy_generation,

  // ---- aggregation and accounting ----
  50: optional i64 count,             // occurrences this event stands for (absent = 1)
  51: optional i64 first_time_us,     // aggregated: first occurrence
  52: optional i64 last_time_us,      // aggregated: last occurrence
  53: optional string sink,           // sink_degraded / sink_recovered / events_dropped
  54: optional i64 total,             // events_dropped: all lost at this stage and sink since start

  // ---- human detail ----
  60: optional string message,
}
