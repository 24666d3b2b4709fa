// StatusReport (what the daemon fills, what tlswallctl renders) to and from
// the control API's StatusReply. Every field of one has its field in the
// other; tests/unit/agent_control_status_test.cc fails if one is forgotten.
#pragma once

#include "agent/status_report.h"
#include "tlswall_control_types.h"

namespace tlswall::control {

api::StatusReply to_thrift(const agent::StatusReport& s);

// Counters and reasons beyond this build's TW_CNT_MAX / TW_REASON_MAX (a
// newer daemon) are left out; missing ones (an older daemon) stay 0.
agent::StatusReport from_thrift(const api::StatusReply& r);

}  // namespace tlswall::control
