// tlswalld: the tlswall agent daemon.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>

#include "agent/agent_config.h"
#include "agent/daemon.h"
#include "logging/log.h"
#include "proxy/worker_process.h"

namespace {

const char kUsage[] =
    "Usage: tlswalld [options]\n"
    "\n"
    "Watches TCP egress on the configured interfaces with a tc BPF classifier and\n"
    "reports (monitor) or blocks (enforce) flows to protected boundaries whose first\n"
    "bytes are not a TLS ClientHello. Runs in the foreground; SIGHUP reloads the\n"
    "policy; SIGTERM/SIGINT stop the daemon and leave the kernel enforcing the last\n"
    "policy (on_stop = \"detach\" removes the filters; `tlswallctl teardown` removes\n"
    "everything).\n"
    "\n"
    "Options:\n"
    "  --config PATH          agent config (TOML); default: the embedded default\n"
    "                         (configs/tlswalld.toml with policy /etc/tlswall/policy.d)\n"
    "  --interface IF         watch IF instead of the config's interfaces (repeatable)\n"
    "  --policy PATH          policy file or directory instead of the config's\n"
    "  --control-socket PATH  control socket instead of the config's\n"
    "  --events PATH          JSON-lines events file (\"-\" = stdout) instead of the config's\n"
    "  --pin-root PATH        bpffs pin root instead of the config's\n"
    "  --upgrade-cgroup PATH  cgroup (under the cgroup v2 mount) whose clients the\n"
    "                         policy's [[upgrades]] may redirect, instead of [upgrade] cgroup\n"
    "  --log-level LEVEL      trace|debug|info|warn|error (default: config's)\n"
    "  --check-config         validate config and policy, print them, exit\n"
    "  --version              print the version\n"
    "  --proxy-worker         (internal) run as the upgrade proxy's worker process on\n"
    "                         inherited fds 3 and 4; tlswalld starts it itself\n"
    "  --help                 this text\n"
    "\n"
    "tlswalld refuses to start (exit 1, one line naming the path) if the control\n"
    "socket, the pin root, the state or disk-buffer directories or the events\n"
    "file's directory are symlinks, belong to another user or are writable by\n"
    "others, or another user's socket is at the control socket path.\n";

}  // namespace

int main(int argc, char** argv) {
  using namespace tlswall;
  // The upgrade proxy's worker process: the daemon re-executes itself with
  // only its two channel sockets (fds 3 and 4); see proxy/worker_process.h.
  if (argc == 2 && std::strcmp(argv[1], "--proxy-worker") == 0) {
    return proxy::run_proxy_worker(3, 4);
  }
  std::string config_path, policy, control, events, pin_root, level, upgrade_cgroup;
  std::vector<std::string> interfaces;
  bool check_only = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* name) -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "tlswalld: %s needs a value\n", name);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--version") {
      std::printf("tlswalld %s\n", TLSWALL_VERSION);
      return 0;
    } else if (a == "--config") {
      config_path = value("--config");
    } else if (a == "--interface") {
      interfaces.push_back(value("--interface"));
    } else if (a == "--policy") {
      policy = value("--policy");
    } else if (a == "--control-socket") {
      control = value("--control-socket");
    } else if (a == "--events") {
      events = value("--events");
    } else if (a == "--pin-root") {
      pin_root = value("--pin-root");
    } else if (a == "--upgrade-cgroup") {
      upgrade_cgroup = value("--upgrade-cgroup");
    } else if (a == "--log-level") {
      level = value("--log-level");
    } else if (a == "--check-config") {
      check_only = true;
    } else {
      std::fprintf(stderr, "tlswalld: unknown option '%s' (see --help)\n", a.c_str());
      return 2;
    }
  }
  try {
    agent::AgentConfig cfg = config_path.empty() ? agent::embedded_default_config()
                                                 : agent::load_agent_config(config_path);
    if (!interfaces.empty()) cfg.interfaces = interfaces;
    if (!policy.empty()) cfg.policy_path = policy;
    if (!control.empty()) cfg.control_socket = control;
    if (!events.empty()) {
      cfg.events_json = events;
      logging::override_json_path(cfg.events, events);
    }
    if (!pin_root.empty()) cfg.pin_root = pin_root;
    if (!upgrade_cgroup.empty()) {
      if (upgrade_cgroup[0] != '/') {
        std::fprintf(stderr, "tlswalld: --upgrade-cgroup wants a path such as /system.slice\n");
        return 2;
      }
      cfg.upgrade_cgroup = upgrade_cgroup;
    }
    if (!level.empty()) cfg.log_level = level;
    logging::init(cfg.log_level);
    if (check_only) {
      std::string ifs;
      for (const auto& i : cfg.interfaces) ifs += (ifs.empty() ? "" : ", ") + i;
      std::printf("config %s: interfaces [%s], policy %s, control %s, events %s, pin root %s\n",
                  cfg.source.c_str(), ifs.c_str(), cfg.policy_path.c_str(),
                  cfg.control_socket.c_str(), cfg.events_json.c_str(), cfg.pin_root.c_str());
      return 0;
    }
    if (::geteuid() != 0) {
      std::fprintf(stderr, "tlswalld: must run as root (needs CAP_BPF, CAP_NET_ADMIN)\n");
      return 1;
    }
    // Block the signals the daemon handles (signalfd) before any thread
    // exists: threads inherit the mask, so none can take SIGTERM's default.
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &mask, nullptr);
    agent::Daemon d(std::move(cfg));
    return d.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tlswalld: %s\n", e.what());
    return 1;
  }
}
