// The event model every decision is reported with, and its JSON rendering.
// Type numbers and names are stable: never reuse or rename one (receivers
// alert on them). The full Thrift schema and the sinks arrive with issue 4.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace tlswall::logging {

enum class EventType : uint16_t {
  kAgentStarted = 1,
  kAgentStopped = 2,
  kPolicyApplied = 3,
  kPolicyRejected = 4,
  kPlaintextReported = 5,  // protected flow, not TLS, monitor mode
  kPlaintextBlocked = 6,   // protected flow, not TLS, enforce mode
  kTlsBelowMinimum = 7,    // ClientHello older than the rule's minimum
  kStateLost = 8,          // protected flow seen mid-stream, passed unjudged
  kEventsDropped = 9,      // events lost before they could be written
  kSocketDestroyFailed = 10,
  kInterfaceDetached = 11,
};

const char* event_type_name(EventType t);

enum class Severity { kInfo, kNotice, kWarning, kError };
const char* severity_name(Severity s);

struct FlowEndpoints {
  int family = 4;
  std::string src;
  uint16_t sport = 0;
  std::string dst;
  uint16_t dport = 0;
};

struct Event {
  EventType type = EventType::kAgentStarted;
  Severity severity = Severity::kInfo;
  std::chrono::system_clock::time_point time = std::chrono::system_clock::now();
  std::optional<FlowEndpoints> flow;
  std::string action;  // "drop" | "report" | "pass"
  std::string reason;  // enum tw_reason name
  std::string mode;    // "monitor" | "enforce"
  std::string boundary;
  std::string rule;
  std::string interface;
  std::string tls_version;  // ClientHello client_version, if any
  std::string policy_version;
  uint64_t policy_generation = 0;
  uint64_t count = 1;  // > 1 for aggregated events
  uint64_t sock_cookie = 0;
  std::string message;  // human detail (errors, reload results)
};

// One JSON object (no trailing newline). Fields that do not apply are left
// out. `host` and `agent_version` are the reporter's.
std::string render_json(const Event& e, const std::string& host, const std::string& agent_version);

// RFC 3339 UTC with milliseconds.
std::string format_time(std::chrono::system_clock::time_point t);

}  // namespace tlswall::logging
