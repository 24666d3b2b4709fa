// tlswallctl's command line: parsed into a CliCommand (unit-tested without
// a daemon), then run by tlswallctl_main.cc.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tlswall::control {

// Exit statuses of tlswallctl.
enum CliExit : int {
  kExitOk = 0,
  kExitError = 1,        // failed: invalid policy, daemon error, rejected reload
  kExitUsage = 2,        // bad command line
  kExitUnreachable = 3,  // tlswalld is not running or does not answer
  kExitDenied = 4,       // not allowed: socket permissions or AccessDenied
};

extern const char kCliUsage[];

struct CliCommand {
  enum class Kind {
    kHelp,
    kStatus,
    kFlows,
    kEvents,
    kPolicyShow,
    kPolicyCheck,
    kPolicyReload,
    kMode,
    kTeardown,
  };
  Kind kind = Kind::kHelp;
  std::string socket = "/run/tlswall/control.sock";
  std::string pin_root = "/sys/fs/bpf/tlswall";
  bool json = false;
  // flows
  std::optional<std::string> verdict;
  std::optional<std::string> rule;
  std::optional<int64_t> pid;
  int32_t limit = 50;
  // events
  bool follow = false;
  bool compact = false;
  int32_t count = 10;
  // policy check
  std::string path;
  // mode
  std::string mode_rule;  // a rule name or "all"
  std::string mode;       // monitor | enforce | policy
  // teardown
  bool open = false;
};

struct CliParse {
  bool ok = false;
  CliCommand command;
  std::string error;  // one line, when !ok
};

// args: argv[1..]. Global options (--socket, --pin-root, --help) may
// appear anywhere; "--opt=value" and "--opt value" are both accepted.
CliParse parse_cli(const std::vector<std::string>& args);

}  // namespace tlswall::control
