#include "agent/daemon.h"

#include <net/if.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include <bpf/libbpf.h>

#include "agent/attribution/owner_probes.h"
#include "agent/attribution/process_info.h"
#include "agent/bpf_pins.h"
#include "agent/owned_fd.h"
#include "agent/path_trust.h"
#include "agent/sock_destroy.h"
#include "agent/sys_mounts.h"
#include "logging/log.h"

namespace tlswall::agent {
namespace {

using logging::Event;
using logging::EventType;
using logging::Severity;
using logging::Subsystem;

std::string hostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) return "unknown";
  return buf;
}

// systemd's readiness protocol (sd_notify), without libsystemd: one datagram
// to $NOTIFY_SOCKET. Does nothing when not started by systemd.
void notify_systemd(const char* state) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (!path || (path[0] != '/' && path[0] != '@')) return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const size_t n = std::strlen(path);
  if (n >= sizeof(addr.sun_path)) return;
  std::memcpy(addr.sun_path, path, n);
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';  // abstract namespace
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  ::sendto(fd, state, std::strlen(state), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr),
           static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + n));
  ::close(fd);
}

bool private_mount_namespace() {
  struct stat self {
  }, init{};
  if (::stat("/proc/self/ns/mnt", &self) != 0 || ::stat("/proc/1/ns/mnt", &init) != 0) return false;
  return self.st_ino != init.st_ino;
}

}  // namespace

Daemon::Daemon(AgentConfig config)
    : config_(std::move(config)), host_(hostname()), started_(std::chrono::steady_clock::now()) {
  auto& log = logging::get(Subsystem::kAgent);
  if (config_.interfaces.empty()) {
    throw std::runtime_error("no interfaces configured (set interfaces = [...] in " +
                             config_.source + ")");
  }
  // A plain name must exist now; patterns may match nothing yet.
  for (const auto& ifn : config_.interfaces) {
    const bool pattern = ifn[0] == '!' || ifn.find_first_of("*?[") != std::string::npos;
    if (!pattern && if_nametoindex(ifn.c_str()) == 0) {
      throw std::runtime_error("interface '" + ifn + "' not found (configured in " +
                               config_.source + ")");
    }
  }
  try {
    links_ = std::make_unique<LinkWatcher>(InterfacePatterns(config_.interfaces));
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error("interfaces in " + config_.source + ": " + e.what());
  }
  std::vector<std::string> initial_ifaces;
  for (const auto& l : links_->initial_dump()) initial_ifaces.push_back(l.name);
  if (!std::filesystem::exists("/sys/kernel/btf/vmlinux")) {
    throw std::runtime_error(
        "kernel BTF missing (/sys/kernel/btf/vmlinux): tlswall needs CONFIG_DEBUG_INFO_BTF=y");
  }

  // Paths first: the mode overrides are read from the state directory.
  prepare_paths();
  // The policy must be valid before anything touches the kernel.
  load_mode_overrides();
  // Watching starts before the first read, so no change can fall between.
  if (config_.watch_policy) policy_watcher_ = std::make_unique<PolicyWatcher>(config_.policy_path);
  apply_policy(/*initial=*/true);

  // After the policy is valid, before the kernel is touched: a JSON file that
  // cannot be opened stops start-up; an unreachable Scribe or syslog does
  // not (it spools and shows as degraded).
  logging::PipelineConfig pc = config_.events;
  pc.host = host_;
  pc.agent_version = TLSWALL_VERSION;
  recent_ = std::make_shared<control::RecentEvents>();
  pc.on_emit = [recent = recent_](const Event& e, const std::string& json) {
    recent->add(e, json);
  };
  events_ = logging::make_event_pipeline(pc);

  const BpffsResult fs = ensure_bpffs(config_.pin_root);
  bpffs_ = fs.mount_point;
  if (fs.mounted_by_us) {
    log.info("mounted bpffs at {}", bpffs_);
    if (private_mount_namespace()) {
      log.warn(
          "bpffs was mounted inside a private mount namespace (e.g. `ip netns exec`): the "
          "pins under {} vanish when this process exits, so a restart cannot adopt them. "
          "Mount bpffs for the pin root in the host mount namespace.",
          config_.pin_root);
    }
    bpffs_mounted_at_pin_root_ = fs.at_pin_root;
  }
  {
    // Checked again on the bpffs now mounted; a pin the classifier would
    // adopt must be root's, not a symlink to another pin.
    const OwnedFd pins = open_private_dir(config_.pin_root, 0755, MissingDir::kCreate, "pin root");
    if (auto bad = foreign_entry(pins.get(), config_.pin_root, is_pin_name, "pin")) {
      throw std::runtime_error(*bad);
    }
  }
  // Attribution (issue 3) reads cgroup ids against this mount. A private
  // mount goes in the run directory beside the control socket.
  const Cgroup2Result cg = ensure_cgroup2(
      (std::filesystem::path(config_.control_socket).parent_path() / "cgroup2").string());
  cgroup2_ = cg.mount_point;
  cgroup2_mounted_by_us_ = cg.mounted_by_us;
  if (cg.mounted_by_us) log.info("no cgroup v2 mount visible; mounted one at {}", cgroup2_);

  // Adopt what a previous run pinned (or build it), load our programs.
  // Nothing attached changes until take_over below.
  classifier_ = std::make_unique<TcClassifier>(
      ClassifierOptions{config_.pin_root, config_.flow_table_entries, config_.ringbuf_bytes});
  const AdoptionReport& ad = classifier_->adoption();
  maps_ = std::make_unique<BpfPolicyMaps>(
      classifier_->policy_fds(), [c = classifier_.get()](uint64_t g) { c->set_generation(g); },
      [c = classifier_.get()]() { return c->generation(); });
  publisher_ = std::make_unique<PolicyPublisher>(*maps_, policy::host_owner_resolver(cgroup2_));

  // Attribution: a probe records who opens each connection (pid, uid, comm,
  // cgroup) before its SYN leaves; the classifier and the events read it.
  attribution::OwnerProbesOptions po;
  po.owners_fd = classifier_->owners_fd();
  po.owner_tuples_fd = classifier_->owner_tuples_fd();
  po.preference.clear();
  for (const auto& b : config_.attribution_backends) {
    po.preference.push_back(*attribution::parse_backend(b));
  }
  if (!config_.sock_ops_cgroup.empty()) po.sock_ops_cgroup = cgroup2_ + config_.sock_ops_cgroup;
  po.pin_dir = config_.pin_root;
  if (!po.preference.empty()) owner_probes_ = std::make_unique<attribution::OwnerProbes>(po);
  for (const auto& b :
       owner_probes_ ? owner_probes_->report() : std::vector<attribution::BackendReport>{}) {
    log.info("attribution backend {}: {}{}{}", b.name, attribution::backend_state_name(b.state),
             b.why.empty() ? "" : " - ", b.why);
  }
  if (!owner_probes_) {
    log.warn("attribution is off ([attribution] backends = []): events name uid and cgroup only");
  } else if (!owner_probes_->active()) {
    log.warn("no attribution backend runs here: events will name uid and cgroup only");
  }
  if (!config_.upgrade_cgroup.empty()) {
    try {
      start_upgrade();
    } catch (const std::exception& ex) {
      throw std::runtime_error(std::string("[upgrade]: ") + ex.what());
    }
  }
  attribution::ProcessInfoOptions pio;
  pio.cgroup2_mount = cgroup2_;
  process_info_ = std::make_unique<attribution::ProcessInfoResolver>(pio);
  // Blind spots: AF_PACKET / AF_XDP sockets can send past the classifier;
  // say who opens one (observe only).
  try {
    ensure_tracefs();  // the tracepoint backend attaches through it
  } catch (const std::exception& ex) {
    log.warn("{}: the tracepoint raw socket probe cannot attach", ex.what());
  }
  raw_sockets_ = std::make_unique<attribution::RawSocketProbes>(
      [this](const tw_raw_socket_event& r) { on_raw_socket(r); });
  for (const auto& b : raw_sockets_->report()) {
    log.info("raw socket probe {}: {}{}{}", b.name, b.state, b.why.empty() ? "" : " - ", b.why);
  }
  if (raw_sockets_->active().empty()) {
    log.warn("no raw socket probe runs here: AF_PACKET/AF_XDP sockets go unreported");
  }
  // Events the kernel queued while no daemon ran carry the previous run's
  // generation: name them with this policy if it is the same one.
  if (ad.previous && policy_->model.hash == ad.previous->policy_hash) {
    history_[ad.previous->policy_generation] = policy_->compiled;
  }
  // Policy in the tables before our programs judge a packet. If the switch
  // below fails, the generation goes back to the one the running programs
  // used (its slot is untouched), so a failed start leaves them as they were.
  const uint64_t generation_before = classifier_->generation();
  publish(policy_->model, policy_->compiled,
          ad.previous ? "start (adopted pins)" : "initial policy");

  ring_ = ring_buffer__new(classifier_->events_fd(), &Daemon::ring_callback, this, nullptr);
  if (!ring_) {
    throw std::runtime_error(std::string("cannot open event ring buffer: ") + std::strerror(errno));
  }
  start_control();

  // The switch: our programs replace whatever ran before, in place.
  try {
    classifier_->take_over(initial_ifaces, TLSWALL_VERSION);
  } catch (const std::exception& ex) {
    if (ad.previous) classifier_->set_generation(generation_before);
    Event e;
    e.type = EventType::kTakeoverFailed;
    e.severity = Severity::kError;
    e.message = std::string(ex.what()) +
                (ad.previous ? "; the running release stays in force" : "; nothing was attached");
    emit(std::move(e));
    throw;
  }
  classifier_->set_fail_closed(config_.fail_mode == "closed");
  classifier_->start_flow_reaper();
  if (!config_.metrics_listen.empty()) {
    MetricsHttpOptions mo;
    mo.listen = config_.metrics_listen;
    mo.allow_non_loopback = config_.metrics_allow_remote;
    metrics_ = std::make_unique<MetricsHttpServer>(mo, [this] { return render_metrics(); });
    log.info("Prometheus metrics on http://{}/metrics", config_.metrics_listen);
  }
  kernel_events_lost_seen_ = classifier_->counter(TW_CNT_EVENTS_LOST);
  report_adoption();
}

void Daemon::prepare_paths() const {
  namespace fs = std::filesystem;
  auto refuse_if = [](const std::optional<std::string>& bad) {
    if (bad) throw std::runtime_error(*bad);
  };
  // The control server checks again when it binds; here so that nothing is
  // pinned before a refusal.
  std::string socket_name;
  open_socket_dir(config_.control_socket, &socket_name);
  // Event ids, mode overrides, undelivered counts; a read-only state
  // directory is a degraded start (the pipeline reports it), not a refusal.
  const fs::path state = fs::path(config_.events.state_dir).lexically_normal();
  const OwnedFd state_fd = open_private_dir(state, 0700, MissingDir::kTryCreate, "state directory");
  for (const auto& s : config_.events.scribe) {
    if (!s.buffer) continue;
    const fs::path dir = s.buffer_dir.empty() ? state / "buffer" / s.common.name
                                              : fs::path(s.buffer_dir).lexically_normal();
    // Every level the daemon makes below the state directory is its own: a
    // symlink is refused at each, not only at the last.
    std::vector<fs::path> levels;
    const fs::path rel = dir.lexically_relative(state);
    if (!rel.empty() && *rel.begin() != ".." && rel != ".") {
      fs::path p = state;
      for (const auto& c : rel) levels.push_back(p /= c);
    } else {
      levels.push_back(dir);
    }
    OwnedFd fd;
    for (const auto& level : levels) {
      fd = open_private_dir(level, 0700, MissingDir::kTryCreate, "disk buffer directory");
      if (fd.get() < 0) break;
    }
    if (fd.get() >= 0) refuse_if(foreign_entry(fd.get(), dir, {}, "disk buffer file"));
  }
  // After the buffer directories, which say more precisely what is wrong
  // with a symlinked or foreign buffer/ in it.
  if (state_fd.get() >= 0) refuse_if(foreign_entry(state_fd.get(), state, {}, "state file"));
  for (const auto& j : config_.events.json) {
    if (j.path.empty() || j.path == "-") continue;
    const fs::path p(j.path);
    open_private_dir(p.has_parent_path() ? p.parent_path().string() : ".", 0755,
                     MissingDir::kTryCreate, "events file directory");
  }
  // bpffs may not be mounted yet: what exists on the way is checked now
  // (a symlink must not decide where bpffs is mounted), the rest once made.
  open_private_dir(config_.pin_root, 0755, MissingDir::kLeave, "pin root");
}

void Daemon::report_adoption() {
  auto& log = logging::get(Subsystem::kAgent);
  const AdoptionReport& ad = classifier_->adoption();
  std::string summary;
  auto join = [](const std::vector<std::string>& v) {
    std::string o;
    for (const auto& x : v) o += (o.empty() ? "" : ", ") + x;
    return o;
  };
  if (!ad.reused.empty()) summary += "adopted " + join(ad.reused);
  if (!ad.created.empty())
    summary += std::string(summary.empty() ? "" : "; ") + "created " + join(ad.created);
  if (!ad.migrated.empty())
    summary += std::string(summary.empty() ? "" : "; ") + "migrated " + join(ad.migrated);
  adoption_summary_ = summary;
  log.info("pins under {}: {}", config_.pin_root, summary);
  if (!ad.previous) return;
  // The kernel kept enforcing while no daemon ran; say how long nobody read
  // its events and what that cost.
  const double gap_s = static_cast<double>(ad.gap_ns) / 1e9;
  Event e;
  e.type = EventType::kUserSpaceGap;
  e.severity = ad.events_lost_in_gap ? Severity::kError : Severity::kNotice;
  e.count = ad.events_lost_in_gap;
  char buf[256];
  std::snprintf(buf, sizeof(buf),
                "no daemon for %.3f s (previous: %s); kernel kept enforcing; %llu event(s) lost "
                "to a full ring buffer in the gap, the rest were kept and follow",
                gap_s, ad.previous->agent_version,
                static_cast<unsigned long long>(ad.events_lost_in_gap));
  e.message = buf;
  gap_message_ = buf;
  log.warn("{}", e.message);
  emit(std::move(e));
}

Daemon::~Daemon() {
  // The kernel side stays (on_stop = "keep-enforcing") unless run() detached
  // it or a teardown removed it.
  if (ring_) ring_buffer__free(ring_);
  control_.reset();
  if (cgroup2_mounted_by_us_) {
    ::umount2(cgroup2_.c_str(), MNT_DETACH);
    std::error_code ec;
    std::filesystem::remove(cgroup2_, ec);
  }
  // The pins must outlive us (the next start adopts them); only a teardown
  // removes the bpffs we mounted for them.
  if (teardown_requested_ && bpffs_mounted_at_pin_root_) {
    ::umount2(config_.pin_root.c_str(), MNT_DETACH);
    std::error_code ec;
    std::filesystem::remove(config_.pin_root, ec);
  }
}

std::shared_ptr<const policy::CompiledPolicy> Daemon::names_for(uint64_t generation) const {
  auto it = history_.find(generation);
  return it == history_.end() ? nullptr : it->second;
}

int Daemon::ring_callback(void* ctx, void* data, size_t size) {
  static_cast<Daemon*>(ctx)->on_kernel_event(data, size);
  return 0;
}

void Daemon::emit(Event e) {
  if (events_) events_->submit(std::move(e));  // never blocks, never throws
}

void Daemon::periodic() {
  recompile_for_expiry();
  if (links_ && links_->next_deadline() &&
      std::chrono::steady_clock::now() >= *links_->next_deadline()) {
    on_link_changes(links_->on_tick());
  }
  if (policy_watcher_ && policy_watcher_->take_change()) {
    auto& plog = logging::get(Subsystem::kPolicy);
    if (policy_watcher_->missing()) {
      plog.warn("{} is gone; generation {} stays in force", config_.policy_path,
                policy_ ? policy_->generation : 0);
    } else if (!policy_ || policy_watcher_->fingerprint() != policy_->model.hash) {
      plog.info("{} changed on disk: reloading", config_.policy_path);
      apply_policy(false);
    }
  }
  // A cgroup a selector names appeared or went away: republish (once a
  // second at most; a stat per selected cgroup).
  const auto mono = std::chrono::steady_clock::now();
  if (policy_ && publisher_ && mono >= next_owner_check_) {
    next_owner_check_ = mono + std::chrono::seconds(1);
    if (publisher_->owners_changed(*policy_->compiled)) {
      try {
        publish(policy_->model, policy_->compiled, "owner selectors re-resolved");
      } catch (const std::exception& ex) {
        logging::get(Subsystem::kPolicy).error("republishing owner selectors: {}", ex.what());
      }
    }
    if (upgrade_ && upgrade_->host_changed(policy_->model)) {
      try {
        upgrade_->apply(policy_->model);
        logging::get(Subsystem::kPolicy)
            .info("upgrade selectors or certificate files changed, re-applied: {}",
                  upgrade_->summary());
      } catch (const std::exception& ex) {
        logging::get(Subsystem::kPolicy).error("re-applying upgrade selectors: {}", ex.what());
      }
    }
  }
  if (!classifier_) return;
  const uint64_t lost = classifier_->counter(TW_CNT_EVENTS_LOST);
  if (lost > kernel_events_lost_seen_) {
    Event e;
    e.type = EventType::kEventsDropped;
    e.severity = Severity::kError;
    e.count = lost - kernel_events_lost_seen_;
    e.total = lost;
    e.reason = "ring_buffer_full";
    e.message = "kernel events lost because the ring buffer was full";
    kernel_events_lost_seen_ = lost;
    emit(std::move(e));
  }
  // Someone removed our filter or qdisc, or put another program in its
  // place: put ours back and say so.
  classifier_->repair_attachments([this](const std::string& ifname, const std::string& why) {
    logging::get(Subsystem::kBpf).error("restored the classifier on {}: {}", ifname, why);
    Event e;
    e.type = EventType::kAttachmentRestored;
    e.severity = Severity::kError;
    e.interface = ifname;
    e.message = why + "; re-attached";
    emit(std::move(e));
  });
  try {
    classifier_->heartbeat(kernel_events_lost_seen_, policy_ ? policy_->model.hash : "");
  } catch (const std::exception& ex) {
    logging::get(Subsystem::kBpf).warn("heartbeat: {}", ex.what());
  }
}

int Daemon::run() {
  auto& log = logging::get(Subsystem::kAgent);
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGHUP);
  if (sigprocmask(SIG_BLOCK, &mask, nullptr) != 0) throw std::runtime_error("sigprocmask failed");
  OwnedFd sfd(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  OwnedFd tfd(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  OwnedFd ep(::epoll_create1(EPOLL_CLOEXEC));
  if (sfd.get() < 0 || tfd.get() < 0 || ep.get() < 0)
    throw std::runtime_error(std::string("event loop: ") + std::strerror(errno));
  // Four ticks a second: a removed filter is back well within a second.
  itimerspec its{{0, 250000000}, {0, 250000000}};
  timerfd_settime(tfd.get(), 0, &its, nullptr);

  const int ring_fd = ring_buffer__epoll_fd(ring_);
  auto add = [&](int fd) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (epoll_ctl(ep.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
      throw std::runtime_error(std::string("epoll_ctl: ") + std::strerror(errno));
  };
  add(sfd.get());
  add(tfd.get());
  add(ring_fd);
  const int raw_fd = raw_sockets_->fd();
  if (raw_fd >= 0) add(raw_fd);
  add(control_->fd());
  add(links_->fd());
  if (policy_watcher_ && policy_watcher_->fd() >= 0) add(policy_watcher_->fd());
  if (metrics_) add(metrics_->fd());

  Event started;
  started.type = EventType::kAgentStarted;
  started.policy_version = policy_->model.version;
  started.policy_generation = policy_->generation;
  std::string ifs;
  for (const auto& i : config_.interfaces) ifs += (ifs.empty() ? "" : ",") + i;
  started.message = "tc egress on " + ifs;
  emit(std::move(started));
  log.info("tlswalld {} running: interfaces {}, policy '{}' generation {}, control {}",
           TLSWALL_VERSION, ifs, policy_->model.version, policy_->generation,
           config_.control_socket);

  if (classifier_->replaced_events_fd() >= 0) {
    // Events the previous release's ring still held.
    ring_buffer* old =
        ring_buffer__new(classifier_->replaced_events_fd(), &Daemon::ring_callback, this, nullptr);
    if (old) {
      ring_buffer__consume(old);
      ring_buffer__free(old);
    }
  }
  notify_systemd("READY=1\nSTATUS=enforcing");
  bool running = true;
  while (running) {
    epoll_event evs[8];
    const int n = epoll_wait(ep.get(), evs, 8, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error(std::string("epoll_wait: ") + std::strerror(errno));
    }
    for (int i = 0; i < n; ++i) {
      const int fd = evs[i].data.fd;
      if (fd == ring_fd) {
        ring_buffer__consume(ring_);
      } else if (raw_fd >= 0 && fd == raw_fd) {
        raw_sockets_->consume();
      } else if (fd == sfd.get()) {
        signalfd_siginfo si;
        while (::read(sfd.get(), &si, sizeof(si)) == sizeof(si)) {
          if (si.ssi_signo == SIGHUP) {
            log.info("SIGHUP: reloading policy from {}", config_.policy_path);
            notify_systemd("RELOADING=1");
            apply_policy(false);
            notify_systemd("READY=1");
          } else {
            log.info("signal {}: stopping", si.ssi_signo);
            running = false;
          }
        }
      } else if (fd == tfd.get()) {
        uint64_t ticks;
        (void)!::read(tfd.get(), &ticks, sizeof(ticks));
        periodic();
      } else if (fd == links_->fd()) {
        on_link_changes(links_->on_readable());
      } else if (policy_watcher_ && fd == policy_watcher_->fd()) {
        policy_watcher_->on_readable();
      } else if (metrics_ && fd == metrics_->fd()) {
        metrics_->on_readable();
      } else if (fd == control_->fd()) {
        control_->dispatch();
        if (teardown_requested_) {
          control_->flush(std::chrono::milliseconds(500));
          running = false;
        }
      }
    }
  }
  ring_buffer__consume(ring_);
  Event stopped;
  stopped.type = EventType::kAgentStopped;
  if (teardown_requested_) {
    classifier_->detach_all();
    for (const auto& line : teardown_pinned(config_.pin_root, /*open=*/true)) {
      log.info("teardown: {}", line);
    }
    stopped.message = "torn down: detached everywhere, pins removed (traffic is not judged now)";
  } else if (config_.on_stop == "detach") {
    classifier_->detach_all();
    stopped.message = "detached (on_stop = detach); pinned tables kept for the next start";
  } else {
    classifier_->heartbeat(kernel_events_lost_seen_, policy_ ? policy_->model.hash : "");
    stopped.message = "user space stopped; the kernel keeps enforcing policy generation " +
                      std::to_string(policy_ ? policy_->generation : 0);
  }
  log.info("{}", stopped.message);
  notify_systemd("STOPPING=1");
  emit(std::move(stopped));
  if (events_) events_->flush(2000);
  return 0;
}

}  // namespace tlswall::agent
