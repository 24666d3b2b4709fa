// The worker's side of the proxy worker (proxy/worker_process.h): the whole
// life of the process the daemon re-executed. Until kStart it only talks to
// the daemon (trusted); at kStart it drops every privilege and only then
// starts the engine, which reads network input.
#include <openssl/crypto.h>
#include <signal.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <future>
#include <mutex>
#include <thread>

#include "proxy/isolation.h"
#include "proxy/worker_process.h"

namespace tlswall::proxy {

namespace {

using std::chrono::milliseconds;

// Set-up messages must come promptly; a daemon that stalls is gone.
constexpr milliseconds kSetupTimeout{10000};
// How long an accepted connection may wait for the kernel's record.
constexpr milliseconds kResolveTimeout{1000};

// Asks the daemon (which holds the BPF map) where an accepted connection
// was going. One request at a time on the resolve channel.
class RemoteResolver : public OriginalDestinationResolver {
 public:
  explicit RemoteResolver(int fd) : fd_(fd) {}

  std::optional<OriginalDestination> resolve(int, const SocketAddress& peer,
                                             const SocketAddress& local) override {
    std::lock_guard<std::mutex> l(mu_);
    const uint64_t seq = ++seq_;
    try {
      wire::send_message(fd_, wire::encode(wire::Msg::kResolve, wire::Resolve{seq, peer, local}));
      const auto deadline = std::chrono::steady_clock::now() + kResolveTimeout;
      for (;;) {
        const auto left =
            std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) break;
        auto m = wire::recv_message(fd_, left, 0);
        if (!m) return std::nullopt;  // daemon gone: fail closed
        const auto a = wire::decode<wire::Resolved>(m->bytes, wire::Msg::kResolved);
        if (a.seq != seq) continue;  // the answer to a request that timed out
        if (!a.found) return std::nullopt;
        return OriginalDestination{a.destination, a.rule};
      }
    } catch (const std::exception&) {
      // timeout or channel error: fail closed below
    }
    timeouts_.fetch_add(1, std::memory_order_relaxed);
    return std::nullopt;
  }

  uint64_t timeouts() const { return timeouts_.load(std::memory_order_relaxed); }

 private:
  int fd_;
  std::mutex mu_;
  uint64_t seq_ = 0;
  std::atomic<uint64_t> timeouts_{0};
};

void reply(int fd, uint64_t seq, bool ok, const std::string& error) {
  wire::send_message(fd, wire::encode(wire::Msg::kReply, wire::Reply{seq, ok, error}));
}

struct Worker {
  int control;
  std::atomic<uint64_t> events_dropped{0};
  std::shared_ptr<RemoteResolver> resolver;
  std::unique_ptr<Engine> engine;  // last: stopped before what its threads use

  std::string counters_message(uint64_t seq) const {
    wire::Counters m{seq, {}};
    m.counters.rules = engine->rule_counters();
    m.counters.engine = engine->engine_counters();
    m.counters.events_dropped = events_dropped.load(std::memory_order_relaxed);
    m.counters.resolve_timeouts = resolver->timeouts();
    return wire::encode(wire::Msg::kCounters, m);
  }

  // Pushes the counters to the daemon when they changed, every
  // kCounterPush, so that they survive this process (the daemon adds a dead
  // worker's last counters to its successor's).
  void push_counters_until(std::future<void> stop) {
    std::string pushed;
    while (stop.wait_for(wire::kCounterPush) == std::future_status::timeout) {
      std::string m = counters_message(0);
      if (m == pushed) continue;
      try {
        if (wire::send_message(control, m, {}, true)) pushed = std::move(m);
      } catch (const std::exception&) {
        return;  // the daemon is gone; the main loop sees it too
      }
    }
  }

  // One message from the daemon; returns true for kStart.
  bool handle(wire::Message& m, const wire::Hello& hello, spdlog::logger& log) {
    switch (wire::Reader(m.bytes).type()) {
      case wire::Msg::kListener: {
        const auto l = wire::decode<wire::Listener>(m.bytes, wire::Msg::kListener);
        if (m.fds.size() != 1) throw wire::WireError("a listener message without its fd");
        if (l.terminator) {
          engine->add_terminator_listener(std::move(m.fds[0]), l.id);
        } else {
          engine->add_upgrade_listener(std::move(m.fds[0]), resolver);
        }
        return false;
      }
      case wire::Msg::kConfig: {
        auto c = wire::decode<wire::Config>(m.bytes, wire::Msg::kConfig);
        OPENSSL_cleanse(m.bytes.data(), m.bytes.size());
        try {
          engine->apply_config(c.config);
          reply(control, c.seq, true, "");
        } catch (const std::exception& ex) {
          reply(control, c.seq, false, ex.what());
        }
        wipe_pem_files(c.config);
        return false;
      }
      case wire::Msg::kStart: {
        const uint64_t seq = wire::decode<wire::Request>(m.bytes, wire::Msg::kStart).seq;
        try {
          drop_privileges(hello.uid, hello.gid);
          // A credential change clears the parent-death signal: set it again.
          ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
          engine->start();
        } catch (const std::exception& ex) {
          reply(control, seq, false, std::string("dropping privileges: ") + ex.what());
          throw;
        }
        log.info("proxy worker {} running as uid {} gid {}, no capabilities", ::getpid(), hello.uid,
                 hello.gid);
        reply(control, seq, true, "");
        return true;
      }
      case wire::Msg::kCountersQuery: {
        const uint64_t seq = wire::decode<wire::Request>(m.bytes, wire::Msg::kCountersQuery).seq;
        wire::send_message(control, counters_message(seq));
        return false;
      }
      default:
        throw wire::WireError("unexpected message type from the daemon");
    }
  }
};

}  // namespace

int run_proxy_worker(int control_fd, int resolve_fd) {
  ::prctl(PR_SET_NAME, "tlswall-proxy", 0, 0, 0);
  auto log =
      std::make_shared<spdlog::logger>("proxy", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  log->set_pattern("%Y-%m-%dT%H:%M:%S.%e [proxy-worker %P] %l: %v");
  try {
    if (::chdir("/") != 0) throw std::system_error(errno, std::generic_category(), "chdir /");
    auto first = wire::recv_message(control_fd, kSetupTimeout, 0);
    if (!first) return 0;
    const auto hello = wire::decode<wire::Hello>(first->bytes, wire::Msg::kHello);
    if (hello.version != wire::kVersion) {
      throw wire::WireError("protocol version " + std::to_string(hello.version) + ", expected " +
                            std::to_string(wire::kVersion));
    }
    log->set_level(spdlog::level::from_str(hello.log_level));

    Worker w;
    w.control = control_fd;
    w.resolver = std::make_shared<RemoteResolver>(resolve_fd);
    EngineOptions eo;
    eo.workers = hello.workers;
    eo.max_connections = hello.max_connections;
    eo.buffer_bytes = hello.buffer_bytes;
    eo.handshake_timeout = hello.handshake_timeout;
    eo.first_bytes_wait = hello.first_bytes_wait;
    eo.idle_timeout = hello.idle_timeout;
    eo.logger = log.get();
    eo.on_event = [&w, control_fd](const ProxyEvent& ev) {
      const std::string m = wire::encode(wire::Msg::kEvent, ev);
      try {
        // Never block a connection on the daemon: a full queue drops (counted).
        if (!wire::send_message(control_fd, m, {}, true)) {
          w.events_dropped.fetch_add(1, std::memory_order_relaxed);
        }
      } catch (const std::exception&) {
        w.events_dropped.fetch_add(1, std::memory_order_relaxed);  // daemon gone
      }
    };
    w.engine = std::make_unique<Engine>(std::move(eo));

    bool started = false;
    while (!started) {
      auto m = wire::recv_message(control_fd, kSetupTimeout, 1);
      if (!m) return 0;
      started = w.handle(*m, hello, *log);
    }
    std::promise<void> stop_pushing;
    std::thread pusher(
        [&w, f = stop_pushing.get_future()]() mutable { w.push_counters_until(std::move(f)); });
    struct Join {
      std::promise<void>& stop;
      std::thread& t;
      ~Join() {
        stop.set_value();
        t.join();
      }
    } join{stop_pushing, pusher};
    for (;;) {
      auto m = wire::recv_message(control_fd, milliseconds(-1), 1);
      if (!m) break;  // the daemon closed the channel: stop
      w.handle(*m, hello, *log);
    }
    w.engine->stop();
    return 0;
  } catch (const std::exception& ex) {
    log->error("proxy worker: {}", ex.what());
    return 1;
  }
}

}  // namespace tlswall::proxy
