// tlswallctl: the operator CLI of tlswall.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <unistd.h>

#include "agent/bpf_classifier.h"
#include "agent/control_socket.h"
#include "logging/log.h"
#include "policy/policy.h"

namespace {

const char kUsage[] =
    "Usage: tlswallctl [--socket PATH] COMMAND\n"
    "\n"
    "Commands:\n"
    "  status [--json]        mode, policy version/hash/generation, attached interfaces,\n"
    "                         counters, drops by reason, event loss\n"
    "  policy check PATH      validate a policy file or directory without a daemon;\n"
    "                         prints file:line:col errors, exits 1 if invalid\n"
    "  policy reload          make the daemon reload its policy (root); a bad policy is\n"
    "                         rejected and the one in force stays\n"
    "  teardown [--open]      remove everything tlswall attached and pinned (root): asks\n"
    "                         the daemon, or, if none answers, cleans up the pin root\n"
    "                         itself; traffic is no longer judged afterwards. A host with\n"
    "                         fail_mode = \"closed\" refuses unless --open is given\n"
    "\n"
    "Options:\n"
    "  --socket PATH          control socket (default /run/tlswall/control.sock)\n"
    "  --pin-root PATH        pin root for an offline teardown (default /sys/fs/bpf/tlswall)\n"
    "  --help                 this text\n"
    "\n"
    "Exit status: 0 ok, 1 failure (invalid policy, daemon error), 2 usage error.\n";

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
    return 1;
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
    return 1;
  }
  return 0;
}

int call(const std::string& socket, const std::string& command) {
  try {
    const auto rep = tlswall::agent::control_call(socket, command);
    if (!rep.ok) {
      std::fprintf(stderr, "tlswallctl: %s\n", rep.body.c_str());
      return 1;
    }
    std::fputs(rep.body.c_str(), stdout);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tlswallctl: %s\n", e.what());
    return 1;
  }
}

}  // namespace

int teardown(const std::string& socket, const std::string& pin_root, bool open) {
  // libbpf reports "no such filter/qdisc" for interfaces already cleaned up;
  // only real errors should reach the operator.
  tlswall::logging::init("error");
  tlswall::agent::route_libbpf_logs();
  if (::geteuid() != 0) {
    std::fprintf(stderr, "tlswallctl: teardown is for root only\n");
    return 1;
  }
  try {
    const auto rep = tlswall::agent::control_call(socket, open ? "teardown open" : "teardown");
    if (!rep.ok) {
      std::fprintf(stderr, "tlswallctl: %s\n", rep.body.c_str());
      return 1;
    }
    std::fputs(rep.body.c_str(), stdout);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tlswallctl: no daemon answers (%s); tearing down %s directly\n", e.what(),
                 pin_root.c_str());
  }
  try {
    for (const auto& line : tlswall::agent::teardown_pinned(pin_root, open)) {
      std::printf("%s\n", line.c_str());
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tlswallctl: teardown: %s\n", e.what());
    return 1;
  }
}

int main(int argc, char** argv) {
  std::string socket = "/run/tlswall/control.sock";
  std::string pin_root = "/sys/fs/bpf/tlswall";
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--socket") {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "tlswallctl: --socket needs a path\n");
        return 2;
      }
      socket = argv[++i];
    } else if (a == "--pin-root") {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "tlswallctl: --pin-root needs a path\n");
        return 2;
      }
      pin_root = argv[++i];
    } else {
      args.push_back(a);
    }
  }
  if (args.empty()) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  if (args[0] == "status") {
    if (args.size() == 1) return call(socket, "status text");
    if (args.size() == 2 && args[1] == "--json") return call(socket, "status json");
  } else if (args[0] == "teardown" && args.size() == 1) {
    return teardown(socket, pin_root, false);
  } else if (args[0] == "teardown" && args.size() == 2 && args[1] == "--open") {
    return teardown(socket, pin_root, true);
  } else if (args[0] == "policy" && args.size() >= 2) {
    if (args[1] == "check" && args.size() == 3) return policy_check(args[2]);
    if (args[1] == "reload" && args.size() == 2) return call(socket, "reload");
  }
  std::fprintf(stderr, "tlswallctl: unknown command (see --help)\n");
  return 2;
}
