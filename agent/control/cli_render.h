// What tlswallctl prints for the control API's replies (status has its own
// renderers in agent/status_report.h). Pure functions, unit-tested.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "tlswall_control_types.h"

namespace tlswall::control {

// "2026-11-21T12:00:00.000Z" (UTC) for microseconds since the epoch.
std::string format_time_us(int64_t time_us);

// A table: TIME, ACTION, REASON, RULE, SRC -> DST, PID, COMM, UID,
// CGROUP/CONTAINER, one flow a line, newest first as given; "no flows" if empty.
std::string render_flows_table(const std::vector<api::FlowRecord>& flows);
// One JSON array of flow objects (field names as in the IDL; "interface"
// for interface_name; pid and uid left out when unknown).
std::string render_flows_json(const std::vector<api::FlowRecord>& flows);

// One short line for an event given as its JSON object:
//   TIME TYPE [ACTION] [rule=R] [SRC:PORT -> DST:PORT] [COMM[PID]] [uid=U]
//   [container=C] [xCOUNT] [MESSAGE]
// A line that is not a JSON object is returned as it is.
std::string render_event_compact(std::string_view json);

std::string render_policy_text(const api::PolicyShowReply& p);
std::string render_policy_json(const api::PolicyShowReply& p);

std::string render_reload(const api::ReloadReply& r);
std::string render_mode(const api::ModeReply& r, const std::string& rule, const std::string& mode);

// Reads the top-level members of a JSON object whose values are strings,
// numbers, booleans or null (nested values are skipped): key -> text
// (strings decoded, others as written). False if `json` is not an object.
bool read_flat_json(std::string_view json, std::map<std::string, std::string>* out);

}  // namespace tlswall::control
