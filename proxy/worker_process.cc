// The daemon's side of the proxy worker: start, supervise, talk to it.
// The worker's side is proxy/worker_main.cc.
#include "proxy/worker_process.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <future>
#include <map>
#include <mutex>
#include <system_error>
#include <thread>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

namespace tlswall::proxy {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kFirstBackoff{100};
constexpr milliseconds kMaxBackoff{5000};
constexpr milliseconds kHealthyAfter{60000};  // a worker that lived this long resets the backoff
constexpr milliseconds kExitWait{3000};

std::string exit_text(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return std::string("killed by signal ") + std::to_string(WTERMSIG(status)) + " (" +
           ::strsignal(WTERMSIG(status)) + ")";
  }
  return "ended (status " + std::to_string(status) + ")";
}

// Waits for pid to end, at most `wait`, then SIGKILLs it. Returns how it ended.
std::string reap(pid_t pid, milliseconds wait) {
  const auto deadline = Clock::now() + wait;
  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return exit_text(status);
    if (r < 0 && errno != EINTR) return std::string("waitpid: ") + std::strerror(errno);
    if (Clock::now() >= deadline) break;
    std::this_thread::sleep_for(milliseconds(10));
  }
  ::kill(pid, SIGKILL);
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return exit_text(status) + " after SIGKILL (it did not exit in time)";
}

// Socket buffers big enough for the largest message (a config with its PEM
// files): SEQPACKET refuses a message larger than the sender's buffer.
void size_buffers(int fd) {
  const int bytes = static_cast<int>(wire::kMaxMessageBytes + 4096);
  if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof(bytes)) != 0) {
    (void)::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
  }
}

// a + b, rule by rule; `active` is a gauge and comes from b alone.
wire::WorkerCounters add_counters(const wire::WorkerCounters& a, const wire::WorkerCounters& b) {
  wire::WorkerCounters out = b;
  for (const RuleCounters& r : a.rules) {
    auto it = std::find_if(out.rules.begin(), out.rules.end(), [&](const RuleCounters& x) {
      return x.rule == r.rule && x.terminator == r.terminator;
    });
    if (it == out.rules.end()) {
      it = out.rules.insert(out.rules.end(), r);
      it->active = 0;
      continue;
    }
    it->connections += r.connections;
    it->bytes_up += r.bytes_up;
    it->bytes_down += r.bytes_down;
    it->passthrough += r.passthrough;
    it->plaintext += r.plaintext;
    it->resumed += r.resumed;
    it->truncated += r.truncated;
    for (size_t i = 0; i < r.failures.size(); ++i) it->failures[i] += r.failures[i];
  }
  out.engine.accepted += a.engine.accepted;
  out.engine.unknown_destination += a.engine.unknown_destination;
  out.engine.capacity_rejected += a.engine.capacity_rejected;
  out.engine.accept_errors += a.engine.accept_errors;
  out.events_dropped += a.events_dropped;
  out.resolve_timeouts += a.resolve_timeouts;
  return out;
}

struct Pending {
  bool done = false;
  bool ok = false;
  bool worker_died = false;  // no answer: the worker ended first
  std::string error;
  wire::WorkerCounters counters;
};

}  // namespace

struct WorkerProcess::Impl {
  WorkerProcessOptions opts;
  OwnedFd exe;                      // the binary the worker runs, opened once
  std::vector<std::string> argv_s;  // argv as strings (kept for the pointers)
  std::vector<char*> argv;
  std::vector<char*> envp;
  OwnedFd wake_r, wake_w;  // wakes the supervisor from poll

  mutable std::mutex mu;
  std::condition_variable cv;
  // Guarded by mu.
  bool stopping = false;
  pid_t pid = 0;
  bool running = false;
  uint64_t restarts = 0;
  std::string last_exit;
  OwnedFd control, resolve;  // daemon ends, valid while a worker runs
  uint64_t next_seq = 1;
  std::map<uint64_t, Pending> pending;
  struct KeptListener {
    wire::Listener what;
    OwnedFd fd;
  };
  std::vector<KeptListener> listeners;  // passed to every worker
  std::optional<ProxyConfig> config;    // last accepted, with its PEM files
  // Counters: what dead workers counted, and the running one's latest (it
  // pushes them when they change, at most every wire::kCounterPush).
  wire::WorkerCounters base, last;

  std::thread supervisor;

  spdlog::logger* log() const { return opts.logger; }

  // ---- starting a worker (supervisor thread, mu held) ----

  pid_t fork_exec(int child_control, int child_resolve) {
    const pid_t parent = ::getpid();
    const int exe_fd = exe.get();
    char** const av = argv.data();
    char** const ev = envp.data();
    const pid_t child = ::fork();
    if (child != 0) return child;
    // Child of a multi-threaded process: async-signal-safe calls only.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (::getppid() != parent) ::_exit(126);
    const int c = ::fcntl(child_control, F_DUPFD, 10);
    const int r = ::fcntl(child_resolve, F_DUPFD, 10);
    const int e = ::fcntl(exe_fd, F_DUPFD_CLOEXEC, 10);
    if (c < 0 || r < 0 || e < 0 || ::dup2(c, 3) != 3 || ::dup2(r, 4) != 4) ::_exit(126);
    // Nothing else of the daemon survives the exec.
    if (::syscall(SYS_close_range, 5U, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
      for (int fd = 5; fd < 65536; ++fd) {
        if (fd != e) ::close(fd);
      }
    }
    ::syscall(SYS_execveat, e, "", av, ev, AT_EMPTY_PATH);
    ::_exit(127);
  }

  // Sends a request during start-up and waits for its reply (no events can
  // arrive before the engine starts).
  void startup_request(const std::string& message, uint64_t seq, const char* what) {
    wire::send_message(control.get(), message);
    auto m = wire::recv_message(control.get(), opts.request_timeout, 0);
    if (!m) throw std::runtime_error(std::string("the worker closed its channel during ") + what);
    const auto reply = wire::decode<wire::Reply>(m->bytes, wire::Msg::kReply);
    if (reply.seq != seq) throw std::runtime_error("reply out of order at start-up");
    if (!reply.ok) throw std::runtime_error(std::string(what) + ": " + reply.error);
  }

  // Starts one worker with everything it needs; running on success. Throws
  // with the worker killed and reaped on failure.
  void spawn_locked() {
    int ctl[2], res[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ctl) != 0) {
      throw std::system_error(errno, std::generic_category(), "socketpair");
    }
    OwnedFd ctl_d(ctl[0]), ctl_w(ctl[1]);
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, res) != 0) {
      throw std::system_error(errno, std::generic_category(), "socketpair");
    }
    OwnedFd res_d(res[0]), res_w(res[1]);
    size_buffers(ctl_d.get());
    size_buffers(ctl_w.get());
    const pid_t child = fork_exec(ctl_w.get(), res_w.get());
    if (child < 0) throw std::system_error(errno, std::generic_category(), "fork");
    ctl_w.reset();
    res_w.reset();
    pid = child;
    control = std::move(ctl_d);
    resolve = std::move(res_d);
    try {
      wire::send_message(control.get(), wire::encode(wire::Msg::kHello, opts.hello));
      for (const KeptListener& l : listeners) {
        wire::send_message(control.get(), wire::encode(wire::Msg::kListener, l.what), {l.fd.get()});
      }
      if (config) {
        const uint64_t seq = next_seq++;
        std::string message = wire::encode(wire::Msg::kConfig, wire::Config{seq, *config});
        startup_request(message, seq, "rules");
        OPENSSL_cleanse(message.data(), message.size());
      }
      const uint64_t seq = next_seq++;
      startup_request(wire::encode(wire::Msg::kStart, wire::Request{seq}), seq, "start");
    } catch (const std::exception& ex) {
      control.reset();
      resolve.reset();
      const std::string how = reap(pid, milliseconds(500));
      pid = 0;
      throw std::runtime_error(std::string("proxy worker did not start: ") + ex.what() + " (" +
                               how + ")");
    }
    running = true;
    cv.notify_all();
  }

  // ---- a worker ended (supervisor thread) ----

  void worker_gone(const std::string& why) {
    std::string how;
    {
      std::lock_guard<std::mutex> l(mu);
      running = false;
      control.reset();
      resolve.reset();
      base = add_counters(base, last);  // counters survive the worker
      last = {};
      for (auto& [seq, p] : pending) {
        p.done = true;
        p.ok = false;
        p.worker_died = true;
        p.error = "the proxy worker died";
      }
      cv.notify_all();
    }
    if (pid > 0) {
      if (!why.empty()) ::kill(pid, SIGKILL);
      how = reap(pid, milliseconds(2000));
    }
    {
      std::lock_guard<std::mutex> l(mu);
      last_exit = why.empty() ? how : why + "; " + how;
      pid = 0;
    }
    if (log() != nullptr) log()->error("proxy worker {}", last_exit);
    if (opts.on_worker_died) opts.on_worker_died(last_exit);
  }

  // ---- messages from the worker (supervisor thread) ----

  void on_control(wire::Message& m) {
    switch (wire::Reader(m.bytes).type()) {
      case wire::Msg::kEvent: {
        const auto ev = wire::decode<ProxyEvent>(m.bytes, wire::Msg::kEvent);
        if (opts.on_event) opts.on_event(ev);
        return;
      }
      case wire::Msg::kReply: {
        auto reply = wire::decode<wire::Reply>(m.bytes, wire::Msg::kReply);
        Pending got;
        got.ok = reply.ok;
        got.error = std::move(reply.error);
        deliver(reply.seq, std::move(got));
        return;
      }
      case wire::Msg::kCounters: {
        auto c = wire::decode<wire::Counters>(m.bytes, wire::Msg::kCounters);
        Pending got;
        got.ok = true;
        got.counters = std::move(c.counters);
        std::lock_guard<std::mutex> l(mu);
        last = got.counters;  // asked for or pushed: the latest
        deliver_locked(c.seq, std::move(got));
        return;
      }
      default:
        throw wire::WireError("unexpected message type from the worker");
    }
  }

  // Hands a reply to the request waiting for it, if it still waits.
  void deliver(uint64_t seq, Pending got) {
    std::lock_guard<std::mutex> l(mu);
    deliver_locked(seq, std::move(got));
  }
  void deliver_locked(uint64_t seq, Pending got) {
    auto it = pending.find(seq);
    if (it == pending.end()) return;  // pushed, or its requester gave up
    got.done = true;
    it->second = std::move(got);
    cv.notify_all();
  }

  void on_resolve(wire::Message& m) {
    const auto q = wire::decode<wire::Resolve>(m.bytes, wire::Msg::kResolve);
    std::optional<OriginalDestination> o;
    if (opts.resolve) o = opts.resolve(q.peer, q.local);
    wire::Resolved a;
    a.seq = q.seq;
    if (o) {
      a.found = true;
      a.destination = o->address;
      a.rule = o->rule_id;
    }
    wire::send_message(resolve.get(), wire::encode(wire::Msg::kResolved, a));
  }

  // Reads one message from fd and handles it; false when the worker closed
  // the channel (then it is reaped).
  bool take(int fd, void (Impl::*handle)(wire::Message&)) {
    auto m = wire::recv_message(fd, milliseconds(0), 0);
    if (!m) {
      worker_gone("");
      return false;
    }
    (this->*handle)(*m);
    return true;
  }

  // Serves one worker until it ends or we stop. Returns false when stopping.
  bool serve() {
    for (;;) {
      pollfd p[3] = {
          {wake_r.get(), POLLIN, 0}, {control.get(), POLLIN, 0}, {resolve.get(), POLLIN, 0}};
      if (::poll(p, 3, -1) < 0) {
        if (errno == EINTR) continue;
        worker_gone(std::string("poll: ") + std::strerror(errno));
        return true;
      }
      if (p[0].revents != 0) {
        char buf[64];
        while (::read(wake_r.get(), buf, sizeof(buf)) > 0) {
        }
        std::lock_guard<std::mutex> l(mu);
        if (stopping) return false;
      }
      try {
        // Requests first: a worker thread waits on each. A closed channel:
        // the worker ended.
        if (p[2].revents != 0 && !take(resolve.get(), &Impl::on_resolve)) return true;
        if (p[1].revents != 0 && !take(control.get(), &Impl::on_control)) return true;
      } catch (const wire::WireError& ex) {
        // Never trust the worker: a malformed message ends it.
        worker_gone(std::string("sent a malformed message (") + ex.what() + "), killed");
        return true;
      } catch (const std::system_error& ex) {
        worker_gone(std::string("channel error: ") + ex.what());
        return true;
      }
    }
  }

  // Waits `d` unless told to stop. Returns false when stopping.
  bool pause(milliseconds d) {
    std::unique_lock<std::mutex> l(mu);
    return !cv.wait_for(l, d, [&] { return stopping; });
  }

  void supervise(std::promise<void> first) {
    {
      std::lock_guard<std::mutex> l(mu);
      try {
        spawn_locked();
        first.set_value();
      } catch (...) {
        first.set_exception(std::current_exception());
        return;
      }
    }
    milliseconds backoff = kFirstBackoff;
    for (;;) {
      const auto started = Clock::now();
      if (!serve()) break;
      if (Clock::now() - started >= kHealthyAfter) backoff = kFirstBackoff;
      for (;;) {
        if (!pause(backoff)) return stop_worker();
        backoff = std::min(backoff * 2, kMaxBackoff);
        std::lock_guard<std::mutex> l(mu);
        if (stopping) break;
        try {
          spawn_locked();
          ++restarts;
          if (log() != nullptr) log()->warn("proxy worker restarted (pid {})", pid);
          break;
        } catch (const std::exception& ex) {
          last_exit = ex.what();
          if (log() != nullptr) log()->error("{}", ex.what());
        }
      }
    }
    stop_worker();
  }

  // Closing the channels tells the worker to stop: it resets its live
  // connections and exits.
  void stop_worker() {
    pid_t p;
    {
      std::lock_guard<std::mutex> l(mu);
      running = false;
      control.reset();
      resolve.reset();
      p = pid;
      pid = 0;
      cv.notify_all();
    }
    if (p > 0) reap(p, kExitWait);
  }

  // ---- requests (caller threads) ----

  // Waits until a worker runs; throws if none does within the timeout.
  void await_running(std::unique_lock<std::mutex>& l) {
    if (!cv.wait_for(l, opts.request_timeout, [&] { return running || stopping; }) || stopping) {
      throw std::runtime_error("proxy worker not running" +
                               (last_exit.empty() ? std::string() : ": last one " + last_exit));
    }
  }

  Pending request(const std::string& message, uint64_t seq, std::unique_lock<std::mutex>& l) {
    pending[seq];
    try {
      wire::send_message(control.get(), message);
    } catch (const std::system_error& ex) {
      pending.erase(seq);
      throw std::runtime_error(std::string("proxy worker channel: ") + ex.what());
    }
    const bool answered = cv.wait_for(l, opts.request_timeout, [&] { return pending[seq].done; });
    Pending p = std::move(pending[seq]);
    pending.erase(seq);
    if (!answered) throw std::runtime_error("proxy worker did not answer in time");
    return p;
  }

  void add_listener(bool terminator, const std::string& id, OwnedFd fd) {
    std::lock_guard<std::mutex> l(mu);
    listeners.push_back({{terminator, id}, std::move(fd)});
    if (!running) return;  // the next worker gets it
    try {
      wire::send_message(control.get(), wire::encode(wire::Msg::kListener, listeners.back().what),
                         {listeners.back().fd.get()});
    } catch (const std::system_error& ex) {
      // The worker is going away; its successor gets the listener.
      if (log() != nullptr) log()->warn("passing a listener to the proxy worker: {}", ex.what());
    }
  }
};

WorkerProcess::WorkerProcess(WorkerProcessOptions options) : impl_(std::make_unique<Impl>()) {
  Impl& d = *impl_;
  d.opts = std::move(options);
  if (d.opts.hello.uid == 0 || d.opts.hello.gid == 0) {
    throw std::runtime_error("proxy worker: refusing to run it as root (uid or gid 0)");
  }
  const std::string exe = d.opts.executable.empty() ? "/proc/self/exe" : d.opts.executable;
  d.exe = OwnedFd(::open(exe.c_str(), O_RDONLY | O_CLOEXEC));
  if (!d.exe) throw std::runtime_error("proxy worker: open " + exe + ": " + std::strerror(errno));
  d.argv_s.push_back(d.opts.executable.empty() ? "tlswalld" : d.opts.executable);
  for (const auto& a : d.opts.args) d.argv_s.push_back(a);
  for (auto& a : d.argv_s) d.argv.push_back(a.data());
  d.argv.push_back(nullptr);
  static char kPath[] = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
  d.envp = {kPath, nullptr};
  int wp[2];
  if (::pipe2(wp, O_CLOEXEC | O_NONBLOCK) != 0) {
    throw std::runtime_error(std::string("proxy worker: pipe: ") + std::strerror(errno));
  }
  d.wake_r = OwnedFd(wp[0]);
  d.wake_w = OwnedFd(wp[1]);
  std::promise<void> first;
  auto started = first.get_future();
  d.supervisor = std::thread([&d, p = std::move(first)]() mutable { d.supervise(std::move(p)); });
  try {
    started.get();
  } catch (...) {
    d.supervisor.join();
    throw;
  }
}

WorkerProcess::~WorkerProcess() {
  {
    std::lock_guard<std::mutex> l(impl_->mu);
    impl_->stopping = true;
    impl_->cv.notify_all();
  }
  (void)!::write(impl_->wake_w.get(), "x", 1);
  if (impl_->supervisor.joinable()) impl_->supervisor.join();
}

void WorkerProcess::add_upgrade_listener(OwnedFd listen_fd) {
  impl_->add_listener(false, "", std::move(listen_fd));
}

void WorkerProcess::add_terminator_listener(OwnedFd listen_fd, const std::string& terminator_id) {
  impl_->add_listener(true, terminator_id, std::move(listen_fd));
}

void WorkerProcess::apply_config(ProxyConfig config) {
  Impl& d = *impl_;
  std::unique_lock<std::mutex> l(d.mu);
  d.await_running(l);
  const uint64_t seq = d.next_seq++;
  wire::Config message{seq, std::move(config)};
  std::string bytes = wire::encode(wire::Msg::kConfig, message);
  config = std::move(message.config);
  Pending p = d.request(bytes, seq, l);
  OPENSSL_cleanse(bytes.data(), bytes.size());
  if (!p.ok) {
    wipe_pem_files(config);
    if (p.worker_died) throw std::runtime_error(p.error);
    throw ConfigError(p.error);
  }
  if (d.config) wipe_pem_files(*d.config);
  d.config = std::move(config);
}

wire::WorkerCounters WorkerProcess::counters() {
  Impl& d = *impl_;
  std::unique_lock<std::mutex> l(d.mu);
  d.await_running(l);
  const uint64_t seq = d.next_seq++;
  Pending p = d.request(wire::encode(wire::Msg::kCountersQuery, wire::Request{seq}), seq, l);
  if (!p.ok) throw std::runtime_error(p.error);
  return add_counters(d.base, p.counters);
}

WorkerStatus WorkerProcess::status() const {
  std::lock_guard<std::mutex> l(impl_->mu);
  WorkerStatus s;
  s.pid = impl_->pid;
  s.running = impl_->running;
  s.restarts = impl_->restarts;
  s.last_exit = impl_->last_exit;
  return s;
}

}  // namespace tlswall::proxy
