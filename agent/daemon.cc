#include "agent/daemon.h"

#include <arpa/inet.h>
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
#include <fstream>
#include <stdexcept>

#include <bpf/libbpf.h>

#include "agent/attribution/owner_probes.h"
#include "agent/attribution/process_info.h"
#include "agent/metrics/metrics_text.h"
#include "agent/owned_fd.h"
#include "agent/sock_destroy.h"
#include "agent/sys_mounts.h"
#include "logging/log.h"

namespace tlswall::agent {
namespace {

using logging::Event;
using logging::EventType;
using logging::Severity;
using logging::Subsystem;

constexpr size_t kGenerationHistory = 8;

std::string hostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) return "unknown";
  return buf;
}

std::string addr_to_string(const uint8_t addr[16], int family) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (family == 4) {
    ::inet_ntop(AF_INET, addr + 12, buf, sizeof(buf));
  } else {
    ::inet_ntop(AF_INET6, addr, buf, sizeof(buf));
  }
  return buf;
}

std::string ifname_of(uint32_t ifindex) {
  char buf[IF_NAMESIZE] = {};
  return ::if_indextoname(ifindex, buf) ? std::string(buf) : std::to_string(ifindex);
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

std::string join_diagnostics(const std::vector<policy::Diagnostic>& diags, bool errors_only) {
  std::string out;
  for (const auto& d : diags) {
    if (errors_only && d.severity != policy::Diagnostic::Severity::kError) continue;
    if (!out.empty()) out += "; ";
    out += d.render();
  }
  return out;
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
  std::error_code ec;
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
  if (!std::filesystem::exists(config_.pin_root)) {
    std::filesystem::create_directories(config_.pin_root, ec);
    if (ec)
      throw std::runtime_error("cannot create pin root " + config_.pin_root + ": " + ec.message());
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

void Daemon::apply_policy(bool initial) {
  auto& log = logging::get(Subsystem::kPolicy);
  const auto now = std::chrono::system_clock::now();
  policy::LoadResult r = policy::load_policy(config_.policy_path, now);
  for (const auto& d : r.diagnostics) {
    if (d.severity == policy::Diagnostic::Severity::kWarning) log.warn("{}", d.render());
  }
  std::shared_ptr<const policy::CompiledPolicy> compiled;
  std::string error;
  if (r.ok()) {
    try {
      compiled = compile(*r.policy, now);
    } catch (const std::exception& e) {
      error = e.what();
    }
  } else {
    error = join_diagnostics(r.diagnostics, true);
  }
  if (!compiled) {
    if (initial)
      throw std::runtime_error("policy " + config_.policy_path + " is invalid: " + error);
    last_error_ = error;
    last_error_at_ = now;
    log.error("policy reload rejected, generation {} stays in force: {}",
              policy_ ? policy_->generation : 0, error);
    Event e;
    e.type = EventType::kPolicyRejected;
    e.severity = Severity::kError;
    e.message = error;
    if (policy_) {
      e.policy_version = policy_->model.version;
      e.policy_generation = policy_->generation;
    }
    emit(std::move(e));
    return;
  }
  if (initial) {
    policy_ = PolicyState{std::move(*r.policy), compiled, 0, now};
    return;
  }
  try {
    publish(std::move(*r.policy), compiled, "reload");
    last_error_.clear();
  } catch (const std::exception& ex) {
    last_error_ = ex.what();
    last_error_at_ = now;
    log.error("policy reload failed while writing tables, generation {} stays in force: {}",
              policy_->generation, ex.what());
    Event e;
    e.type = EventType::kPolicyRejected;
    e.severity = Severity::kError;
    e.message = ex.what();
    emit(std::move(e));
  }
}

void Daemon::publish(policy::Policy model, std::shared_ptr<const policy::CompiledPolicy> compiled,
                     const std::string& why) {
  const uint64_t gen = publisher_->publish(*compiled);
  for (const auto& u : publisher_->unresolved()) {
    logging::get(Subsystem::kPolicy).warn("owner selector: {}", u);
  }
  history_[gen] = compiled;
  while (history_.size() > kGenerationHistory) history_.erase(history_.begin());
  policy_ = PolicyState{std::move(model), compiled, gen, std::chrono::system_clock::now()};
  apply_upgrades();
  logging::get(Subsystem::kPolicy)
      .info("policy '{}' ({}) in force as generation {} [{}]: {} rule rows, {} prefixes",
            compiled->version, compiled->hash.substr(0, 12), gen, why, compiled->rules.size(),
            compiled->v4.size() + compiled->v6.size());
  Event e;
  e.type = EventType::kPolicyApplied;
  e.severity = Severity::kNotice;
  e.policy_version = compiled->version;
  e.policy_generation = gen;
  e.message = why + "; hash " + compiled->hash;
  emit(std::move(e));
}

std::shared_ptr<const policy::CompiledPolicy> Daemon::compile(
    const policy::Policy& model, std::chrono::system_clock::time_point now) const {
  policy::Policy effective = model;
  for (auto& r : effective.rules) {
    auto it = mode_overrides_.find(r.name);
    if (it != mode_overrides_.end()) r.mode = it->second;
  }
  return std::make_shared<const policy::CompiledPolicy>(policy::compile_policy(effective, now));
}

std::vector<std::string> Daemon::set_mode(const std::string& rule, const std::string& mode) {
  if (!policy_) throw std::invalid_argument("no policy is loaded");
  if (mode != "monitor" && mode != "enforce" && mode != "policy") {
    throw std::invalid_argument(
        "mode must be monitor, enforce or policy (drop the override), not '" + mode + "'");
  }
  std::vector<const policy::Rule*> targets;
  for (const auto& r : policy_->model.rules) {
    if (rule == "all" || r.name == rule) targets.push_back(&r);
  }
  if (targets.empty()) {
    std::string names;
    for (const auto& r : policy_->model.rules) names += (names.empty() ? "" : ", ") + r.name;
    throw std::invalid_argument("no rule named '" + rule + "' in policy " + policy_->model.version +
                                " (rules: " + names + ")");
  }
  auto effective = [&](const policy::Rule& r) {
    auto it = mode_overrides_.find(r.name);
    return it == mode_overrides_.end() ? r.mode : it->second;
  };
  std::vector<std::pair<std::string, policy::Mode>> changed;  // rule, previous mode
  const auto previous = mode_overrides_;
  for (const policy::Rule* r : targets) {
    const policy::Mode before = effective(*r);
    if (mode == "policy") {
      mode_overrides_.erase(r->name);
    } else {
      mode_overrides_[r->name] =
          mode == "enforce" ? policy::Mode::kEnforce : policy::Mode::kMonitor;
    }
    if (effective(*r) != before) changed.emplace_back(r->name, before);
  }
  save_mode_overrides();
  if (changed.empty()) return {};
  try {
    publish(policy_->model, compile(policy_->model, std::chrono::system_clock::now()),
            "mode " + rule + " " + mode);
  } catch (...) {
    mode_overrides_ = previous;  // nothing changed in the kernel
    save_mode_overrides();
    throw;
  }
  std::vector<std::string> names;
  for (const auto& [name, before] : changed) {
    Event e;
    e.type = EventType::kModeChanged;
    e.severity = Severity::kNotice;
    e.rule = name;
    e.previous_mode = policy::mode_name(before);
    for (const auto& r : policy_->model.rules) {
      if (r.name == name) e.mode = policy::mode_name(effective(r));
    }
    e.policy_version = policy_->model.version;
    e.policy_generation = policy_->generation;
    e.message = mode == "policy" ? "run-time override dropped: the policy file's mode applies"
                                 : "run-time override (tlswallctl mode)";
    emit(std::move(e));
    names.push_back(name);
  }
  return names;
}

namespace {
std::string overrides_path(const AgentConfig& c) {
  return c.events.state_dir.empty() ? "" : c.events.state_dir + "/mode_overrides";
}
}  // namespace

void Daemon::load_mode_overrides() {
  const std::string path = overrides_path(config_);
  if (path.empty()) return;
  std::ifstream in(path);
  std::string name, mode;
  while (in >> name >> mode) {
    if (mode == "enforce") mode_overrides_[name] = policy::Mode::kEnforce;
    if (mode == "monitor") mode_overrides_[name] = policy::Mode::kMonitor;
  }
  for (const auto& [n, m] : mode_overrides_) {
    logging::get(Subsystem::kPolicy)
        .warn("run-time mode override kept from before the restart: rule {} is {}", n,
              policy::mode_name(m));
  }
}

void Daemon::save_mode_overrides() const {
  const std::string path = overrides_path(config_);
  if (path.empty()) return;
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    for (const auto& [n, m] : mode_overrides_) out << n << " " << policy::mode_name(m) << "\n";
    if (!out) {
      logging::get(Subsystem::kPolicy).error("cannot write {}: mode overrides not persisted", tmp);
      return;
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    logging::get(Subsystem::kPolicy).error("cannot rename {}: {}", tmp, std::strerror(errno));
  }
}

void Daemon::start_upgrade() {
  upgrade::UpgradeServiceOptions uo;
  if (!config_.upgrade_cgroup.empty()) uo.cgroup_dir = cgroup2_ + config_.upgrade_cgroup;
  uo.port = config_.upgrade_port;
  uo.mark = config_.upgrade_mark;
  uo.workers = config_.upgrade_workers;
  uo.pin_dir = config_.pin_root;
  uo.owners = policy::host_owner_resolver(cgroup2_);
  uo.emit = [this](Event e) { emit(std::move(e)); };
  upgrade_ = std::make_unique<upgrade::UpgradeService>(std::move(uo));
}

void Daemon::apply_upgrades() {
  auto& log = logging::get(Subsystem::kProxy);
  if (!policy_) return;
  const auto& ups = policy_->model.upgrades;
  if (!ups.empty() && config_.upgrade_cgroup.empty()) {
    log.warn(
        "{} [[upgrades]] in the policy are not applied: set [upgrade] cgroup in the agent "
        "config to say which clients the redirect may take",
        ups.size());
  }
  if (!upgrade_ && !policy_->model.terminations.empty()) {
    try {
      start_upgrade();  // terminations only: no redirect without [upgrade] cgroup
    } catch (const std::exception& ex) {
      log.error("cannot start the proxy for [[terminations]]: {}", ex.what());
      return;
    }
  }
  if (!upgrade_) return;
  try {
    upgrade_->apply(policy_->model);
    log.info("upgrade: {}", upgrade_->summary());
  } catch (const std::exception& ex) {
    log.error("upgrade rules not applied, the previous ones stay: {}", ex.what());
    Event e;
    e.type = EventType::kPolicyRejected;
    e.severity = Severity::kError;
    e.message = std::string("[[upgrades]] not applied: ") + ex.what();
    emit(std::move(e));
  }
}

void Daemon::recompile_for_expiry() {
  if (!policy_ || !policy_->compiled->next_expiry) return;
  const auto now = std::chrono::system_clock::now();
  if (now < *policy_->compiled->next_expiry) return;
  try {
    publish(policy_->model, compile(policy_->model, now), "exemption expired");
  } catch (const std::exception& ex) {
    logging::get(Subsystem::kPolicy).error("recompiling after an exemption expired: {}", ex.what());
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

void Daemon::on_kernel_event(const void* data, size_t size) {
  auto& log = logging::get(Subsystem::kAgent);
  ++events_received_;
  tw_event_hdr hdr;
  if (size < sizeof(hdr)) return;
  std::memcpy(&hdr, data, sizeof(hdr));
  // Version 1 events (96 bytes, no owner) still come from a previous
  // release's program during an upgrade.
  if ((hdr.type != TW_EV_FLOW_VERDICT && hdr.type != TW_EV_FLOW_UNTRACKED) ||
      size < TW_EV_FLOW_V1_SIZE) {
    log.warn("unknown kernel event type {} version {} size {}", hdr.type, hdr.version, size);
    return;
  }
  tw_flow_event fe{};
  std::memcpy(&fe, data, std::min(size, sizeof(fe)));
  const bool has_owner = hdr.version >= 2 && size >= sizeof(tw_flow_event);

  Event e;
  const auto names = names_for(fe.policy_generation);
  logging::FlowEndpoints f;
  f.family = fe.flow.family;
  f.src = addr_to_string(fe.flow.saddr, fe.flow.family);
  f.dst = addr_to_string(fe.flow.daddr, fe.flow.family);
  f.sport = ntohs(fe.flow.sport);
  f.dport = ntohs(fe.flow.dport);
  e.flow = f;
  e.reason = reason_name(fe.reason);
  e.mode = fe.mode == TW_MODE_ENFORCE ? "enforce" : "monitor";
  e.action = action_name(fe.action);
  e.interface = ifname_of(fe.ifindex);
  e.policy_generation = fe.policy_generation;
  e.sock_cookie = fe.sock_cookie;
  if (fe.hello_version) e.tls_version = policy::tls_version_to_string(fe.hello_version);
  if (has_owner) e.owner = owner_of(fe);
  if (names) {
    e.policy_version = names->version;
    if (fe.rule_id < names->rule_names.size()) e.rule = names->rule_names[fe.rule_id];
    if (fe.boundary < names->boundary_names.size()) e.boundary = names->boundary_names[fe.boundary];
  }
  if (hdr.type == TW_EV_FLOW_UNTRACKED) {
    e.type = EventType::kStateLost;
    e.severity = Severity::kWarning;
    e.action = "pass";
    e.message =
        "flow seen mid-stream (started before attach, or its state was evicted): passed unjudged";
  } else if (fe.reason == TW_REASON_TLS_BELOW_MINIMUM) {
    e.type = EventType::kTlsBelowMinimum;
    e.severity = Severity::kWarning;
  } else {
    e.type =
        fe.action == TW_ACTION_DROP ? EventType::kPlaintextBlocked : EventType::kPlaintextReported;
    e.severity = Severity::kWarning;
  }

  if (hdr.type == TW_EV_FLOW_VERDICT && fe.action == TW_ACTION_DROP) {
    const int rc = destroyer_.destroy(fe.flow, fe.sock_cookie);
    if (rc == 0) {
      ++sockets_destroyed_;
    } else if (rc != -ENOENT) {
      // Not fatal: the flow stays blocked in the kernel; the client only
      // fails slower (TCP timeout).
      ++socket_destroy_failed_;
      log.warn("could not destroy blocked socket {}:{} -> {}:{}: {}", f.src, f.sport, f.dst,
               f.dport, std::strerror(-rc));
    }
  }
  // Per flow at debug: the event itself is the record (a flood must not
  // become a journald flood).
  log.debug("{} {} {}:{} -> {}:{} rule={} reason={}", logging::event_type_name(e.type), e.action,
            f.src, f.sport, f.dst, f.dport, e.rule, e.reason);
  emit(std::move(e));
}

logging::Owner Daemon::owner_of(const tw_flow_event& fe) {
  logging::Owner o;
  const tw_owner& k = fe.owner;
  switch (fe.owner_status) {
    case TW_OWNER_RECORDED: {
      o.attribution = "recorded";
      o.pid = k.tgid;
      o.tid = k.pid;
      o.uid = k.uid;
      o.gid = k.gid;
      o.comm.assign(k.comm, strnlen(k.comm, sizeof(k.comm)));
      if (k.backend > TW_BACKEND_NONE && k.backend < TW_BACKEND_MAX) {
        o.backend = attribution::backend_name(static_cast<attribution::OwnerBackend>(k.backend));
      }
      break;
    }
    case TW_OWNER_NOT_RECORDED:
      o.attribution = "not_recorded";
      o.uid = k.uid;
      o.detail = owner_probes_ && !owner_probes_->active()
                     ? "no attribution probe is attached (see tlswallctl status)"
                     : "the socket has no owner record: it was opened before the probes ran";
      break;
    case TW_OWNER_NO_SOCKET:
      o.attribution = "no_socket";
      o.detail =
          "no local socket at this host's egress: forwarded or routed traffic (e.g. a container "
          "in its own network namespace); only the addresses are known";
      return o;
    default:
      o.attribution = "not_full_socket";
      o.detail = "the packet's socket is a request or time-wait socket: no owner";
      return o;
  }
  o.cgroup_id = k.cgroup_id;
  if (!process_info_) return o;
  const attribution::ProcessInfo info = process_info_->resolve(
      fe.owner_status == TW_OWNER_RECORDED ? k.tgid : 0, k.start_boottime_ns, k.cgroup_id);
  o.cgroup = info.cgroup_path;
  o.container = info.origin.container_id;
  o.unit = info.origin.systemd_unit;
  if (fe.owner_status == TW_OWNER_RECORDED) {
    switch (info.status) {
      case attribution::ProcessStatus::kLive:
        o.process = "live";
        o.exe = info.exe;
        o.cmdline = info.cmdline;
        break;
      case attribution::ProcessStatus::kExited:
        o.process = "exited";
        break;
      case attribution::ProcessStatus::kPidReused:
        o.process = "pid_reused";
        break;
    }
  }
  return o;
}

void Daemon::emit(Event e) {
  if (events_) events_->submit(std::move(e));  // never blocks, never throws
}

void Daemon::on_link_changes(const std::vector<LinkChange>& changes) {
  auto& log = logging::get(Subsystem::kBpf);
  for (const LinkChange& c : changes) {
    Event e;
    e.interface = c.name;
    switch (c.kind) {
      case LinkChange::Kind::kAdded:
        try {
          if (!classifier_->attach(c.name, c.ifindex)) continue;
          e.type = EventType::kInterfaceAttached;
          e.severity = Severity::kNotice;
          e.message = "appeared (matches \"" + c.pattern + "\"): classifier attached";
        } catch (const std::exception& ex) {
          log.error("cannot attach to new interface {}: {}", c.name, ex.what());
          e.type = EventType::kInterfaceDetached;
          e.severity = Severity::kError;
          e.message = std::string("appeared but the classifier could not attach: ") + ex.what();
        }
        break;
      case LinkChange::Kind::kRemoved:
        if (!classifier_->forget(c.ifindex)) continue;
        e.type = EventType::kInterfaceDetached;
        e.severity = Severity::kNotice;
        e.message = "interface vanished" +
                    (c.old_name.empty() ? "" : " (renamed from " + c.old_name + ")") +
                    "; its filter went with it";
        break;
      case LinkChange::Kind::kRenamed:
        classifier_->renamed(c.ifindex, c.name);
        log.info("interface {} renamed to {}; the filter stays", c.old_name, c.name);
        continue;
    }
    log.info("{}: {}", c.name, e.message);
    emit(std::move(e));
  }
}

std::string Daemon::render_metrics() const {
  const StatusReport s = status();
  MetricsText m;
  m.family("tlswall_up", MetricType::kGauge, "1 while tlswalld runs").sample(1);
  m.family("tlswall_uptime_seconds", MetricType::kGauge, "seconds since tlswalld started")
      .sample(s.uptime_s);
  m.family("tlswall_policy_generation", MetricType::kGauge, "policy generation in force")
      .sample({{"version", s.policy_version}, {"hash", s.policy_hash}}, s.policy_generation);
  m.family("tlswall_classifier_total", MetricType::kCounter,
           "kernel classifier counters (flows seen, TLS, plaintext reported/blocked, exempt, "
           "state lost, ...)");
  for (uint32_t i = 0; i < TW_CNT_MAX; ++i) {
    if (const char* name = counter_name(i)) m.sample({{"counter", name}}, s.counters[i]);
  }
  m.family("tlswall_dropped_packets_total", MetricType::kCounter,
           "packets dropped by the classifier, by reason");
  for (uint32_t i = 0; i < TW_REASON_MAX; ++i) {
    if (s.drops_by_reason[i]) m.sample({{"reason", reason_name(i)}}, s.drops_by_reason[i]);
  }
  m.family("tlswall_interface_attached", MetricType::kGauge,
           "1 if the classifier is attached to the interface");
  for (const auto& i : s.interfaces) m.sample({{"interface", i.name}}, i.attached ? 1 : 0);
  m.family("tlswall_events_received_total", MetricType::kCounter, "kernel events read")
      .sample(s.events_received);
  m.family("tlswall_events_lost_total", MetricType::kCounter,
           "events lost: kernel ring buffer full (stage=ring_buffer) or in the pipeline")
      .sample({{"stage", "ring_buffer"}}, s.counters[TW_CNT_EVENTS_LOST])
      .sample({{"stage", "pipeline_queue"}}, s.event_pipeline.dropped_queue);
  m.family("tlswall_sink_dropped_total", MetricType::kCounter, "events a sink lost, all reasons");
  for (const auto& k : s.event_pipeline.sinks) m.sample({{"sink", k.name}}, k.dropped);
  m.family("tlswall_sink_backlog", MetricType::kGauge, "events waiting for a sink (memory + disk)");
  for (const auto& k : s.event_pipeline.sinks) m.sample({{"sink", k.name}}, k.backlog);
  m.family("tlswall_sockets_destroyed_total", MetricType::kCounter,
           "blocked sockets destroyed (sock_diag)")
      .sample(s.sockets_destroyed);
  m.family("tlswall_attribution_backend_active", MetricType::kGauge,
           "1 for the attribution probe backend that runs");
  if (owner_probes_) {
    for (const auto& b : owner_probes_->report()) {
      m.sample({{"backend", b.name}}, b.state == attribution::BackendState::kActive ? 1 : 0);
    }
    m.family("tlswall_attribution_probe_failures_total", MetricType::kCounter,
             "connections whose owner a probe failed to record")
        .sample(owner_probes_->probe_failures());
  }
  if (upgrade_) {
    const auto rules = upgrade_->rule_counters();
    m.family("tlswall_upgrade_redirected_total", MetricType::kCounter,
             "connects the kernel redirected to the upgrade proxy")
        .sample(upgrade_->redirected());
    m.family("tlswall_upgrade_connections_total", MetricType::kCounter,
             "connections the proxy handled, per upgrade rule or termination");
    for (const auto& r : rules) {
      m.sample({{"rule", r.rule}, {"side", r.terminator ? "server" : "client"}}, r.connections);
    }
    m.family("tlswall_upgrade_active", MetricType::kGauge, "connections open through the proxy");
    for (const auto& r : rules) m.sample({{"rule", r.rule}}, r.active);
    m.family("tlswall_upgrade_bytes_total", MetricType::kCounter,
             "plaintext bytes through the proxy (up: toward the server or backend)");
    for (const auto& r : rules) {
      m.sample({{"rule", r.rule}, {"direction", "up"}}, r.bytes_up);
      m.sample({{"rule", r.rule}, {"direction", "down"}}, r.bytes_down);
    }
    m.family("tlswall_upgrade_failures_total", MetricType::kCounter,
             "connections the proxy failed closed, by reason");
    for (const auto& r : rules) {
      for (size_t i = 0; i < r.failures.size(); ++i) {
        if (!r.failures[i]) continue;
        m.sample(
            {{"rule", r.rule}, {"reason", proxy::to_string(static_cast<proxy::FailureReason>(i))}},
            r.failures[i]);
      }
    }
  }
  return m.str();
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

StatusReport Daemon::status() const {
  StatusReport s;
  s.version = TLSWALL_VERSION;
  s.host = host_;
  s.uptime_s = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started_)
          .count());
  s.policy_path = config_.policy_path;
  if (policy_) {
    s.policy_version = policy_->model.version;
    s.policy_hash = policy_->model.hash;
    s.policy_generation = policy_->generation;
    s.policy_loaded_at = logging::format_time(policy_->loaded_at);
    const auto& c = *policy_->compiled;
    for (const auto& r : policy_->model.rules) {
      RuleStatus rs(r.name, effective_mode(r.name));
      rs.boundary = r.boundary;
      rs.policy_mode = policy::mode_name(r.mode);
      rs.overridden = mode_overrides_.count(r.name) > 0;
      s.rules.push_back(std::move(rs));
    }
    s.exemptions_active = c.exemption_names;
  }
  s.policy_last_error = last_error_;
  if (!last_error_.empty()) s.policy_last_error_at = logging::format_time(last_error_at_);
  if (classifier_) {
    std::map<int, std::string> patterns;
    if (links_) {
      for (const auto& l : links_->matching()) patterns[l.ifindex] = l.pattern;
    }
    for (const auto& a : classifier_->attachments()) {
      InterfaceStatus i(a.ifname, a.ifindex, classifier_->still_attached(a), a.created_qdisc,
                        a.kind == LinkKind::kL3 ? "tc egress (L3)" : "tc egress");
      i.pattern = patterns[a.ifindex];
      i.hooks = {i.hook};
      s.interfaces.push_back(std::move(i));
    }
    s.tables = classifier_->table_schemas();
    s.tables_adopted = adoption_summary_;
    s.last_gap = gap_message_;
    s.counters = classifier_->counters();
    s.drops_by_reason = classifier_->drops_by_reason();
  }
  s.started_at =
      logging::format_time(std::chrono::system_clock::now() - std::chrono::seconds(s.uptime_s));
  if (owner_probes_) {
    if (owner_probes_->active()) {
      s.attribution.active_backend = attribution::backend_name(*owner_probes_->active());
    }
    for (const auto& b : owner_probes_->report()) {
      s.attribution.backends.push_back({b.name, attribution::backend_state_name(b.state), b.why});
    }
  } else {
    for (const auto& b : config_.attribution_backends) {
      s.attribution.backends.push_back({b, "unavailable", "attribution is off in the config"});
    }
  }
  s.policy_watch = policy_watcher_ ? policy_watcher_->status() : "";
  s.metrics_listen = metrics_ ? config_.metrics_listen : "";
  s.bpffs = bpffs_;
  s.pin_root = config_.pin_root;
  s.cgroup2 = cgroup2_;
  s.events_received = events_received_;
  if (events_) {
    s.event_pipeline = events_->health();
    for (const auto& k : s.event_pipeline.sinks) {
      if (k.kind == "json") {
        s.events_path = k.target;
        s.events_written = k.delivered;
        break;
      }
    }
    s.events_write_failed = s.event_pipeline.dropped_queue;
    for (const auto& k : s.event_pipeline.sinks) s.events_write_failed += k.dropped;
  }
  s.sockets_destroyed = sockets_destroyed_;
  s.socket_destroy_failed = socket_destroy_failed_;
  return s;
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
