// The event model every decision is reported with, and its JSON rendering.
// The canonical schema is logging/tlswall_event.thrift (documented field by
// field in logging/README.md); this struct is its in-process form and
// render_json() its JSON form. Type numbers and names are stable: never
// reuse or rename one (receivers alert on them); new types get new numbers.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace tlswall::logging {

// Version of the event schema (tlswall_event.thrift SCHEMA_VERSION, JSON
// "schema_version"). Bumped when a field is added; fields are never removed
// or renamed. Version 1 was the JSON of tlswall 0.1 before event ids.
inline constexpr int kSchemaVersion = 5;

enum class EventType : uint16_t {
  kAgentStarted = 1,
  kAgentStopped = 2,
  kPolicyApplied = 3,
  kPolicyRejected = 4,
  kPlaintextReported = 5,  // protected flow, not TLS, monitor mode
  kPlaintextBlocked = 6,   // protected flow, not TLS, enforce mode
  kTlsBelowMinimum = 7,    // ClientHello older than the rule's minimum
  kStateLost = 8,          // protected flow seen mid-stream, passed unjudged
  kEventsDropped = 9,      // events lost before they could be delivered (count, reason, sink)
  kSocketDestroyFailed = 10,
  kInterfaceDetached = 11,
  kUpgraded = 12,            // plaintext client moved onto TLS by the upgrade proxy
  kUpgradeFailed = 13,       // the upgrade proxy could not complete TLS for a flow
  kModeChanged = 14,         // a rule's mode changed live (mode, previous_mode)
  kSinkDegraded = 15,        // a sink cannot deliver (sink, reason, message)
  kSinkRecovered = 16,       // a degraded sink delivers again (sink)
  kAttachmentRestored = 17,  // our tc filter was removed/replaced; re-attached (interface)
  kUserSpaceGap = 18,        // a start after a stop/crash: how long, how many events lost (count)
  kTakeoverFailed = 19,      // a starting daemon could not take over; the previous one stays
  kControlAudit = 20,        // a state-changing control call (allowed or denied), by whom
  kInterfaceAttached = 21,   // the classifier was attached to an interface that appeared
  kRawSocketOpened = 22,     // a process opened an AF_PACKET/AF_XDP socket (egress blind spot)
};
inline constexpr uint16_t kEventTypeMax = 22;  // highest number in use

// "unknown" for a number that is not a type.
const char* event_type_name(EventType t);

// How the pipeline treats a type when queues fill up (README "Floods").
//  kControl:  agent lifecycle, policy, mode changes, attachment repairs,
//             drop and sink reports: rare, never pushed out by floods
//             (the last reserved slots).
//  kSecurity: plaintext_*, tls_below_minimum, upgrade_failed: what alerts
//             fire on; have a reserved share of every queue.
//  kOther:    state_lost, upgraded, socket_destroy_failed: may only use the
//             unreserved part of a queue.
enum class EventClass : uint8_t { kControl = 0, kSecurity = 1, kOther = 2 };
EventClass event_class(EventType t);
const char* event_class_name(EventClass c);

enum class Severity { kInfo, kNotice, kWarning, kError };
const char* severity_name(Severity s);

struct FlowEndpoints {
  int family = 4;
  std::string src;
  uint16_t sport = 0;
  std::string dst;
  uint16_t dport = 0;
  std::string protocol = "tcp";
};

// Who owned the socket (filled by attribution, issue 3). Every part is
// optional: kernel attribution can miss (flow started before the agent,
// short-lived process gone before enrichment).
struct Owner {
  std::optional<uint32_t> pid;  // process (tgid)
  std::optional<uint32_t> uid;
  std::string comm;             // task comm (15 bytes max in the kernel)
  std::string exe;              // /proc/PID/exe target
  std::string cgroup;           // cgroup v2 path
  std::string container;        // container id, if the cgroup names one
  std::optional<uint32_t> tid;  // the thread that connected
  std::optional<uint32_t> gid;
  uint64_t cgroup_id = 0;
  std::string cmdline;      // /proc/PID/cmdline, NULs as spaces (bounded)
  std::string unit;         // systemd unit (*.service / *.scope) from the cgroup path
  std::string attribution;  // recorded | not_recorded | no_socket | not_full_socket
  std::string backend;      // probe that recorded the owner: kprobe | fentry | tp_btf | sock_ops
  std::string process;      // live | exited | pid_reused: the process at enrichment time
  std::string detail;       // why attribution is partial or unavailable, in words
};

struct Event {
  EventType type = EventType::kAgentStarted;
  Severity severity = Severity::kInfo;
  std::chrono::system_clock::time_point time = std::chrono::system_clock::now();
  // Stamped by the pipeline when it emits the event (README "Event ids"):
  // `seq` increases per host and is never reused, `id` = "<host_id>-<seq>".
  std::string id;
  uint64_t seq = 0;
  std::optional<FlowEndpoints> flow;
  std::optional<Owner> owner;
  std::string action;         // "drop" | "report" | "pass"
  std::string reason;         // enum tw_reason name, or the stage of an events_dropped
  std::string mode;           // "monitor" | "enforce"
  std::string previous_mode;  // mode_changed only
  std::string boundary;
  std::string rule;
  std::string interface;
  std::string tls_version;  // ClientHello client_version, or the version a proxy negotiated
  std::string preamble;     // plaintext preamble before the ClientHello ("postgresql", "mysql")
  std::string server_tls_version;  // the version the server chose (ServerHello), if seen
  std::string evidence;  // which bytes decided: client_hello | client_records | server_hello
  // Upgrade proxy events: the TLS session and who was on the other side.
  std::string server_name;     // the name verified (and sent as SNI) toward the server
  std::string server_subject;  // server certificate subject (RFC 2253), client side
  std::string client_subject;  // client certificate subject (RFC 2253), server side (mTLS)
  std::string cipher;
  std::string alpn;
  uint64_t bytes_up = 0;    // toward the server / backend
  uint64_t bytes_down = 0;  // toward the client
  std::string policy_version;
  uint64_t policy_generation = 0;
  uint64_t count = 1;  // occurrences this event stands for (> 1: aggregated or a drop count)
  // Aggregated events: time of the first and last occurrence they stand for.
  std::optional<std::chrono::system_clock::time_point> first_time;
  std::optional<std::chrono::system_clock::time_point> last_time;
  // events_dropped: everything lost at this stage (reason) and sink since
  // the agent started; exact even when earlier reports were lost.
  uint64_t total = 0;
  uint64_t sock_cookie = 0;
  std::string sink;     // sink_degraded / sink_recovered / events_dropped at a sink
  std::string message;  // human detail (errors, reload results)
};

// One JSON object (no trailing newline). Fields that do not apply are left
// out. `host` and `agent_version` are the reporter's.
std::string render_json(const Event& e, const std::string& host, const std::string& agent_version);

// RFC 3339 UTC with milliseconds.
std::string format_time(std::chrono::system_clock::time_point t);

// Microseconds since the Unix epoch.
int64_t to_unix_us(std::chrono::system_clock::time_point t);

}  // namespace tlswall::logging
