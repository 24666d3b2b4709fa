// The proxy engine in its own unprivileged process (proxy/README.md,
// "Isolation"). The daemon keeps a WorkerProcess; it re-executes the
// running binary in worker mode (fork + execveat of the daemon's own
// executable, opened once at construction, so a binary replaced on disk by
// a package upgrade is not what runs), with only the two channel sockets
// of proxy/worker_protocol.h inherited: no BPF object, no control socket,
// no other fd of the daemon reaches it. The worker receives its listeners
// and rules (certificate and key contents, read by the daemon: the worker
// cannot open root-only files), drops to the configured uid/gid with no
// capabilities (proxy/isolation.h), and only then starts the engine, i.e.
// reads network input.
//
// Supervision: if the worker dies, its live connections are reset by the
// kernel (never plaintext), an event says so, and a new worker is started
// (backoff 0.1 s doubling to 5 s) with the same listener fds and the last
// accepted rules: the listening ports never close, connections that arrive
// meanwhile wait in the backlog.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "proxy/address.h"
#include "proxy/config.h"
#include "proxy/engine.h"
#include "proxy/events.h"
#include "proxy/owned.h"
#include "proxy/worker_protocol.h"

namespace spdlog {
class logger;
}

namespace tlswall::proxy {

// The kernel's answer for an accepted connection (peer and local address as
// the worker saw them); runs on the supervisor thread, must not block long.
using RemoteResolve = std::function<std::optional<OriginalDestination>(const SocketAddress& peer,
                                                                       const SocketAddress& local)>;

struct WorkerProcessOptions {
  std::string executable;                              // "" = the running binary (/proc/self/exe)
  std::vector<std::string> args = {"--proxy-worker"};  // argv[1..] that select worker mode
  wire::Hello hello;       // uid/gid (never 0) and engine knobs for the worker
  EventCallback on_event;  // supervisor thread; must be quick
  RemoteResolve resolve;   // null: every connection is unknown (terminations only)
  // Called on the supervisor thread when a worker died (exit text, e.g.
  // "killed by signal 9"), before the next one is started.
  std::function<void(const std::string& exit)> on_worker_died;
  spdlog::logger* logger = nullptr;
  std::chrono::milliseconds request_timeout{5000};  // config, counters, start-up
};

struct WorkerStatus {
  pid_t pid = 0;          // 0 while none runs
  bool running = false;   // started, unprivileged, engine running
  uint64_t restarts = 0;  // workers started after the first one died
  std::string last_exit;  // how the last worker ended ("" if none did)
};

class WorkerProcess {
 public:
  // Starts the first worker and waits until it runs unprivileged. Throws
  // std::runtime_error with one line (bad options, exec failed, the worker
  // could not drop privileges, ...); then no worker is left running.
  explicit WorkerProcess(WorkerProcessOptions options);
  // Closes the channels (the worker resets its connections and exits),
  // waits up to 3 s, then SIGKILLs it.
  ~WorkerProcess();
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  // Listeners are kept (for restarts) and passed to the running worker.
  // Throws std::runtime_error if no worker runs to take it (it is still
  // kept and passed to the next one).
  void add_upgrade_listener(OwnedFd listen_fd);
  void add_terminator_listener(OwnedFd listen_fd, const std::string& terminator_id);

  // Sends the rules to the worker, which compiles them: a bad rule throws
  // ConfigError (the worker's message) and the previous rules stay. Throws
  // std::runtime_error if no worker answers within request_timeout. The
  // accepted config is kept for restarts. `config` should carry its PEM
  // files (read_pem_files); it is wiped here.
  void apply_config(ProxyConfig config);

  // The counters of every worker so far (what a worker counted in its last
  // wire::kCounterPush before dying may be missing); throws
  // std::runtime_error if the running worker does not answer.
  wire::WorkerCounters counters();

  WorkerStatus status() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Worker mode: the whole life of the worker process, on the channel fds it
// inherited. Returns the process exit code (0 when the daemon closed the
// channel).
int run_proxy_worker(int control_fd, int resolve_fd);

}  // namespace tlswall::proxy
