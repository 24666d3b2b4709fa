#include "agent/control/cli_args.h"

#include <cerrno>
#include <cstdlib>
#include <limits>

namespace tlswall::control {

const char kCliUsage[] =
    "Usage: tlswallctl [--socket PATH] [--pin-root PATH] COMMAND [OPTIONS]\n"
    "\n"
    "Commands:\n"
    "  status [--json]         daemon version and uptime, policy (version, hash, path,\n"
    "                          loaded at, last reload error), per-rule mode, interfaces\n"
    "                          and hooks, attribution backends, BPF table versions,\n"
    "                          counters, drops by reason, event loss, event sinks\n"
    "  flows [--verdict pass|report|drop] [--rule NAME] [--pid N] [--limit N] [--json]\n"
    "                          recent verdicts on protected flows with their owner,\n"
    "                          newest first (default limit 50)\n"
    "  events [--follow] [--json|--compact] [--count N]\n"
    "                          the last N events the daemon holds (default 10), one\n"
    "                          JSON object a line (--json, the default) or one short\n"
    "                          line each (--compact); --follow keeps printing new\n"
    "                          events as they come (polls every 200 ms; Ctrl-C stops)\n"
    "  policy show [--json]    the policy in force: rules with their boundary, ports,\n"
    "                          mode and run-time override, exemptions, boundaries\n"
    "  policy check PATH       validate a policy file or directory without a daemon;\n"
    "                          prints file:line:col errors, exits 1 if invalid\n"
    "  policy reload           make the daemon re-read its policy (root); a bad policy\n"
    "                          is rejected and the one in force stays (exit 1)\n"
    "  mode RULE|all monitor|enforce|policy\n"
    "                          switch a rule (or every rule) live (root): monitor and\n"
    "                          enforce override the policy file until the next\n"
    "                          `mode ... policy`, which returns to the file's mode\n"
    "  teardown [--open]       remove everything tlswall attached and pinned (root): asks\n"
    "                          the daemon, or, if none answers, cleans up the pin root\n"
    "                          itself; traffic is no longer judged afterwards. A host with\n"
    "                          fail_mode = \"closed\" refuses unless --open is given\n"
    "\n"
    "Options:\n"
    "  --socket PATH           control socket (default /run/tlswall/control.sock)\n"
    "  --pin-root PATH         pin root for an offline teardown (default /sys/fs/bpf/tlswall)\n"
    "  --help                  this text\n"
    "\n"
    "Read-only commands (status, flows, events, policy show) are for root and the\n"
    "daemon's control group; reload, mode and teardown for root only.\n"
    "\n"
    "Exit status: 0 ok, 1 failure (invalid policy, rejected reload, daemon error),\n"
    "2 usage error, 3 tlswalld not running or not answering, 4 access denied.\n";

namespace {

// Splits "--opt=value"; reads the value of "--opt value" from the next word.
class Words {
 public:
  explicit Words(std::vector<std::string> w) : w_(std::move(w)) {}
  bool done() const { return i_ >= w_.size(); }
  const std::string& peek() const { return w_[i_]; }
  std::string next() { return w_[i_++]; }
  // For an option that takes a value: false if there is none.
  bool value(const std::string& opt, std::string* out) {
    const std::string& cur = w_[i_ - 1];
    if (cur.size() > opt.size() && cur[opt.size()] == '=') {
      *out = cur.substr(opt.size() + 1);
      return true;
    }
    if (done()) return false;
    *out = next();
    return true;
  }

 private:
  std::vector<std::string> w_;
  size_t i_ = 0;
};

bool is_opt(const std::string& word, const std::string& opt) {
  return word == opt || (word.size() > opt.size() && word.compare(0, opt.size(), opt) == 0 &&
                         word[opt.size()] == '=');
}

bool parse_int(const std::string& s, int64_t lo, int64_t hi, int64_t* out) {
  if (s.empty()) return false;
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno || *end || v < lo || v > hi) return false;
  *out = v;
  return true;
}

CliParse usage(const std::string& why) {
  CliParse p;
  p.error = why;
  return p;
}

}  // namespace

CliParse parse_cli(const std::vector<std::string>& args) {
  CliParse r;
  CliCommand& c = r.command;
  // Pass 1: global options anywhere; the rest are the command's words.
  std::vector<std::string> rest;
  {
    Words w(args);
    while (!w.done()) {
      const std::string a = w.next();
      if (a == "--help" || a == "-h") {
        c.kind = CliCommand::Kind::kHelp;
        r.ok = true;
        return r;
      } else if (is_opt(a, "--socket")) {
        if (!w.value("--socket", &c.socket) || c.socket.empty())
          return usage("--socket needs a path");
      } else if (is_opt(a, "--pin-root")) {
        if (!w.value("--pin-root", &c.pin_root) || c.pin_root.empty())
          return usage("--pin-root needs a path");
      } else {
        rest.push_back(a);
      }
    }
  }
  if (rest.empty()) return usage("no command given");
  Words w(rest);
  const std::string cmd = w.next();
  auto unknown = [&](const std::string& word) {
    return usage("'" + cmd + "' does not take '" + word + "'");
  };

  if (cmd == "status") {
    c.kind = CliCommand::Kind::kStatus;
    while (!w.done()) {
      const std::string a = w.next();
      if (a == "--json") {
        c.json = true;
      } else {
        return unknown(a);
      }
    }
  } else if (cmd == "flows") {
    c.kind = CliCommand::Kind::kFlows;
    while (!w.done()) {
      const std::string a = w.next();
      std::string v;
      int64_t n;
      if (a == "--json") {
        c.json = true;
      } else if (is_opt(a, "--verdict")) {
        if (!w.value("--verdict", &v) || (v != "pass" && v != "report" && v != "drop"))
          return usage("--verdict takes pass, report or drop");
        c.verdict = v;
      } else if (is_opt(a, "--rule")) {
        if (!w.value("--rule", &v) || v.empty()) return usage("--rule needs a rule name");
        c.rule = v;
      } else if (is_opt(a, "--pid")) {
        if (!w.value("--pid", &v) || !parse_int(v, 1, std::numeric_limits<int32_t>::max(), &n))
          return usage("--pid needs a process id");
        c.pid = n;
      } else if (is_opt(a, "--limit")) {
        if (!w.value("--limit", &v) || !parse_int(v, 1, 100000, &n))
          return usage("--limit needs a number from 1 to 100000");
        c.limit = static_cast<int32_t>(n);
      } else {
        return unknown(a);
      }
    }
  } else if (cmd == "events") {
    c.kind = CliCommand::Kind::kEvents;
    bool json = false;
    while (!w.done()) {
      const std::string a = w.next();
      std::string v;
      int64_t n;
      if (a == "--follow" || a == "-f") {
        c.follow = true;
      } else if (a == "--json") {
        json = true;
      } else if (a == "--compact") {
        c.compact = true;
      } else if (is_opt(a, "--count")) {
        if (!w.value("--count", &v) || !parse_int(v, 0, 100000, &n))
          return usage("--count needs a number from 0 to 100000");
        c.count = static_cast<int32_t>(n);
      } else {
        return unknown(a);
      }
    }
    if (json && c.compact) return usage("--json and --compact exclude each other");
    c.json = !c.compact;
  } else if (cmd == "policy") {
    if (w.done()) return usage("policy needs show, check PATH or reload");
    const std::string sub = w.next();
    if (sub == "show") {
      c.kind = CliCommand::Kind::kPolicyShow;
      while (!w.done()) {
        const std::string a = w.next();
        if (a != "--json") return unknown(a);
        c.json = true;
      }
    } else if (sub == "check") {
      c.kind = CliCommand::Kind::kPolicyCheck;
      if (w.done()) return usage("policy check needs a PATH");
      c.path = w.next();
      if (!w.done()) return unknown(w.peek());
    } else if (sub == "reload") {
      c.kind = CliCommand::Kind::kPolicyReload;
      if (!w.done()) return unknown(w.peek());
    } else {
      return usage("policy needs show, check PATH or reload, not '" + sub + "'");
    }
  } else if (cmd == "mode") {
    c.kind = CliCommand::Kind::kMode;
    if (w.done()) return usage("mode needs RULE|all and monitor|enforce|policy");
    c.mode_rule = w.next();
    if (w.done()) return usage("mode needs RULE|all and monitor|enforce|policy");
    c.mode = w.next();
    if (c.mode != "monitor" && c.mode != "enforce" && c.mode != "policy")
      return usage("mode takes monitor, enforce or policy, not '" + c.mode + "'");
    if (!w.done()) return unknown(w.peek());
  } else if (cmd == "teardown") {
    c.kind = CliCommand::Kind::kTeardown;
    while (!w.done()) {
      const std::string a = w.next();
      if (a != "--open") return unknown(a);
      c.open = true;
    }
  } else {
    return usage("unknown command '" + cmd + "'");
  }
  r.ok = true;
  return r;
}

}  // namespace tlswall::control
