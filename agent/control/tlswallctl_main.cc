// tlswallctl: the operator CLI of tlswall. Talks to tlswalld over the
// control API (agent/control/tlswall_control.thrift); `policy check` and a
// teardown without a daemon work locally.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <deque>
#include <string>
#include <thread>
#include <vector>

#include <thrift/TOutput.h>

#include "agent/bpf_classifier.h"
#include "agent/control/cli_args.h"
#include "agent/control/cli_render.h"
#include "agent/control/control_client.h"
#include "agent/control/status_convert.h"
#include "agent/status_report.h"
#include "logging/log.h"
#include "policy/policy.h"

namespace {

using tlswall::control::CliCommand;
using tlswall::control::ControlClient;
using tlswall::control::ControlClientError;
namespace api = tlswall::control::api;
namespace ctl = tlswall::control;

int exit_for(const ControlClientError& e) {
  std::fprintf(stderr, "tlswallctl: %s\n", e.what());
  switch (e.kind()) {
    case ControlClientError::Kind::kNotRunning:
    case ControlClientError::Kind::kUnreachable:
      return ctl::kExitUnreachable;
    case ControlClientError::Kind::kPermissionDenied:
    case ControlClientError::Kind::kAccessDenied:
      return ctl::kExitDenied;
    default:
      return ctl::kExitError;
  }
}

void print(const std::string& s) { std::fwrite(s.data(), 1, s.size(), stdout); }

int policy_check(const std::string& path) {
  using namespace tlswall::policy;
  const LoadResult r = load_policy(path, std::chrono::system_clock::now());
  size_t errors = 0, warnings = 0;
  for (const auto& d : r.diagnostics) {
    std::fprintf(stderr, "%s\n", d.render().c_str());
    (d.severity == Diagnostic::Severity::kError ? errors : warnings)++;
  }
  if (!r.ok()) {
    std::fprintf(stderr, "%s: invalid: %zu error(s), %zu warning(s)\n", path.c_str(), errors,
                 warnings);
    return ctl::kExitError;
  }
  const Policy& p = *r.policy;
  try {
    const CompiledPolicy c = compile_policy(p, std::chrono::system_clock::now());
    std::printf("%s: ok: version %s, hash %s\n", path.c_str(), p.version.c_str(), p.hash.c_str());
    std::printf(
        "  %zu file(s), %zu boundaries, %zu rules, %zu exemptions in force, %zu warning(s)\n",
        p.files.size(), p.boundaries.size(), p.rules.size(), c.exemption_names.size(), warnings);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: invalid: %s\n", path.c_str(), e.what());
    return ctl::kExitError;
  }
  return ctl::kExitOk;
}

int status(ControlClient& c, bool json) {
  const tlswall::agent::StatusReport s = ctl::from_thrift(c.status());
  print(json ? tlswall::agent::render_status_json(s) + "\n"
             : tlswall::agent::render_status_text(s));
  return ctl::kExitOk;
}

int flows(ControlClient& c, const CliCommand& cmd) {
  api::FlowsQuery q;
  if (cmd.verdict) q.__set_verdict(*cmd.verdict);
  if (cmd.rule) q.__set_rule(*cmd.rule);
  if (cmd.pid) q.__set_pid(*cmd.pid);
  q.__set_limit(cmd.limit);
  const auto f = c.flows(q);
  print(cmd.json ? ctl::render_flows_json(f) : ctl::render_flows_table(f));
  return ctl::kExitOk;
}

void print_events(const std::vector<api::EventLine>& events, bool json) {
  for (const auto& e : events) print((json ? e.json : ctl::render_event_compact(e.json)) + "\n");
  std::fflush(stdout);
}

int events(ControlClient& c, const CliCommand& cmd) {
  constexpr int32_t kPage = 1000;
  // The last `count` events the daemon holds: after_seq 0 asks for the
  // newest (sequence numbers have gaps, so no arithmetic on them here).
  const api::EventsReply first =
      c.events(0, static_cast<int32_t>(std::min<int64_t>(cmd.count, kPage)));
  print_events(first.events, cmd.json);
  int64_t after = first.next_seq;
  if (!cmd.follow) return ctl::kExitOk;
  bool retried = false;
  for (;;) {
    api::EventsReply r;
    try {
      r = c.events(after, kPage);
      retried = false;
    } catch (const ControlClientError& e) {
      // One reconnect (a daemon restart, an idle cut); then give up.
      if (e.kind() != ControlClientError::Kind::kUnreachable || retried) throw;
      retried = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      continue;
    }
    if (r.skipped > 0) {
      std::fprintf(stderr,
                   "tlswallctl: %lld event(s) fell out of the daemon's buffer before they "
                   "could be read\n",
                   static_cast<long long>(r.skipped));
    }
    print_events(r.events, cmd.json);
    after = r.next_seq;
    if (r.events.size() < static_cast<size_t>(kPage)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
}

int policy_show(ControlClient& c, bool json) {
  const api::PolicyShowReply p = c.policy_show();
  print(json ? ctl::render_policy_json(p) : ctl::render_policy_text(p));
  return ctl::kExitOk;
}

int reload(ControlClient& c) {
  const api::ReloadReply r = c.reload();
  if (!r.ok) {
    std::fprintf(stderr, "tlswallctl: %s", ctl::render_reload(r).c_str());
    return ctl::kExitError;
  }
  print(ctl::render_reload(r));
  return ctl::kExitOk;
}

int teardown(const CliCommand& cmd) {
  // libbpf reports "no such filter/qdisc" for interfaces already cleaned up;
  // only real errors should reach the operator.
  tlswall::logging::init("error");
  tlswall::agent::route_libbpf_logs();
  if (::geteuid() != 0) {
    std::fprintf(stderr, "tlswallctl: teardown is for root only\n");
    return ctl::kExitDenied;
  }
  try {
    ControlClient c(cmd.socket);
    print(c.teardown(cmd.open).message + "\n");
    return ctl::kExitOk;
  } catch (const ControlClientError& e) {
    if (e.kind() != ControlClientError::Kind::kNotRunning &&
        e.kind() != ControlClientError::Kind::kUnreachable) {
      return exit_for(e);
    }
    std::fprintf(stderr, "tlswallctl: no daemon answers (%s); tearing down %s directly\n", e.what(),
                 cmd.pin_root.c_str());
  }
  try {
    for (const auto& line : tlswall::agent::teardown_pinned(cmd.pin_root, cmd.open)) {
      std::printf("%s\n", line.c_str());
    }
    return ctl::kExitOk;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tlswallctl: teardown: %s\n", e.what());
    return ctl::kExitError;
  }
}

int run(const CliCommand& cmd) {
  using Kind = CliCommand::Kind;
  switch (cmd.kind) {
    case Kind::kHelp:
      std::fputs(ctl::kCliUsage, stdout);
      return ctl::kExitOk;
    case Kind::kPolicyCheck:
      return policy_check(cmd.path);
    case Kind::kTeardown:
      return teardown(cmd);
    default:
      break;
  }
  try {
    ControlClient c(cmd.socket);
    switch (cmd.kind) {
      case Kind::kStatus:
        return status(c, cmd.json);
      case Kind::kFlows:
        return flows(c, cmd);
      case Kind::kEvents:
        return events(c, cmd);
      case Kind::kPolicyShow:
        return policy_show(c, cmd.json);
      case Kind::kPolicyReload:
        return reload(c);
      case Kind::kMode:
        print(ctl::render_mode(c.set_mode(cmd.mode_rule, cmd.mode), cmd.mode_rule, cmd.mode));
        return ctl::kExitOk;
      default:
        return ctl::kExitUsage;
    }
  } catch (const ControlClientError& e) {
    return exit_for(e);
  }
}

}  // namespace

int main(int argc, char** argv) {
  // Thrift prints transport errors itself; ours are one line each.
  apache::thrift::GlobalOutput.setOutputFunction([](const char*) {});
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    std::fputs(ctl::kCliUsage, stderr);
    return ctl::kExitUsage;
  }
  const ctl::CliParse p = ctl::parse_cli(args);
  if (!p.ok) {
    std::fprintf(stderr, "tlswallctl: %s (see --help)\n", p.error.c_str());
    return ctl::kExitUsage;
  }
  return run(p.command);
}
