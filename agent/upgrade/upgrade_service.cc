#include "agent/upgrade/upgrade_service.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <variant>

#include "agent/upgrade/upgrade_redirect.h"
#include "logging/log.h"
#include "policy/policy_internal.h"
#include "proxy/worker_process.h"

namespace tlswall::agent::upgrade {
namespace {

using logging::Event;
using logging::EventType;
using logging::Severity;

// A redirect record older than this is not trusted: a later connection
// from the same address and port may have been redirected without one.
constexpr auto kMaxRecordAge = std::chrono::seconds(10);

Event to_event(const proxy::ProxyEvent& pe) {
  Event e;
  // Server-side events: dst is the termination's address and port the
  // client connected to (the backend is in the message).
  auto flow = [&](const proxy::SocketAddress& client, const proxy::SocketAddress& dst) {
    logging::FlowEndpoints f;
    f.family = (dst.empty() ? client : dst).family() == AF_INET6 ? 6 : 4;
    f.src = client.ip_string();
    f.sport = client.port();
    if (!dst.empty()) {
      f.dst = dst.ip_string();
      f.dport = dst.port();
    }
    e.flow = f;
  };
  if (const auto* u = std::get_if<proxy::Upgraded>(&pe)) {
    e.type = EventType::kUpgraded;
    e.severity = Severity::kInfo;
    e.action = "upgrade";
    e.rule = u->rule;
    e.tls_version = u->tls_version;
    e.server_name = u->server_name;
    e.server_subject = u->peer_subject;
    e.cipher = u->cipher;
    e.alpn = u->alpn;
    e.bytes_up = u->bytes_up;
    e.bytes_down = u->bytes_down;
    flow(u->client, u->destination);
    e.message = "upgraded to " + u->tls_version + " " + u->cipher + ", server " + u->server_name +
                " (" + u->peer_subject + "), " + std::to_string(u->bytes_up) + " bytes up, " +
                std::to_string(u->bytes_down) + " down" +
                (u->error.empty() ? "" : "; ended: " + u->error);
  } else if (const auto* f = std::get_if<proxy::UpgradeFailure>(&pe)) {
    e.type = EventType::kUpgradeFailed;
    e.severity = Severity::kWarning;
    e.action = "drop";
    e.rule = f->rule;
    e.reason = proxy::to_string(f->reason);
    flow(f->client, f->destination);
    e.message = "upgrade failed closed (client reset, nothing sent in plaintext): " + f->detail;
  } else if (const auto* p = std::get_if<proxy::PassedThrough>(&pe)) {
    e.type = EventType::kUpgraded;
    e.severity = Severity::kInfo;
    e.action = "pass";
    e.rule = p->rule;
    e.reason = "client_speaks_tls";
    e.bytes_up = p->bytes_up;
    e.bytes_down = p->bytes_down;
    flow(p->client, p->destination);
    e.message = "the client spoke TLS itself: passed through unchanged";
  } else if (const auto* t = std::get_if<proxy::Terminated>(&pe)) {
    e.type = EventType::kUpgraded;
    e.severity = Severity::kInfo;
    e.action = t->tls ? "terminate" : "report";
    e.rule = t->rule;
    e.tls_version = t->tls_version;
    e.client_subject = t->client_subject;
    e.cipher = t->cipher;
    e.alpn = t->alpn;
    e.bytes_up = t->bytes_in;
    e.bytes_down = t->bytes_out;
    flow(t->client, t->local);
    e.message = t->tls
                    ? "inbound TLS " + t->tls_version + " " + t->cipher +
                          " terminated for the plaintext backend " + t->backend.to_string() +
                          (t->client_subject.empty() ? std::string(", no client certificate")
                                                     : ", client certificate " + t->client_subject)
                    : std::string("inbound plaintext passed to the backend (permissive)");
  } else if (const auto* pa = std::get_if<proxy::PlaintextAccepted>(&pe)) {
    e.type = EventType::kPlaintextReported;
    e.severity = Severity::kWarning;
    e.action = "report";
    e.mode = "permissive";
    e.rule = pa->rule;
    e.reason = "inbound_plaintext";
    e.message = "inbound plaintext accepted by a permissive termination (migration)";
    flow(pa->client, pa->local);
  } else if (const auto* tf = std::get_if<proxy::TerminatorFailure>(&pe)) {
    const bool plaintext = tf->reason == proxy::FailureReason::kPlaintext;
    e.type = plaintext ? EventType::kPlaintextBlocked : EventType::kUpgradeFailed;
    e.severity = Severity::kWarning;
    e.action = "drop";
    e.mode = plaintext ? "strict" : "";
    e.rule = tf->rule;
    e.reason = plaintext ? "inbound_plaintext" : proxy::to_string(tf->reason);
    flow(tf->client, tf->local);
    e.message = (plaintext ? "inbound plaintext refused by a strict termination: "
                           : "inbound TLS refused: ") +
                tf->detail;
  }
  return e;
}

std::string worker_text(const proxy::WorkerStatus& w, uint32_t uid) {
  std::string s = w.running ? "pid " + std::to_string(w.pid) + " as uid " + std::to_string(uid)
                            : std::string("not running");
  if (w.restarts > 0) s += ", restarted " + std::to_string(w.restarts) + "x";
  if (!w.last_exit.empty()) s += " (last: " + w.last_exit + ")";
  return s;
}

}  // namespace

// The proxy worker asks (over its channel) where an accepted connection was
// going; the answer is the connect hook's record, which only we can read.
class RedirectResolver {
 public:
  explicit RedirectResolver(UpgradeRedirect& r) : redirect_(r) {}

  void set_names(std::shared_ptr<const std::vector<std::string>> names) {
    std::lock_guard<std::mutex> l(mu_);
    names_ = std::move(names);
  }

  std::optional<proxy::OriginalDestination> resolve(const proxy::SocketAddress& peer) {
    sockaddr_storage ss{};
    std::memcpy(&ss, peer.sa(), peer.len());
    const auto o = redirect_.take(ss);
    if (!o || o->age > kMaxRecordAge) return std::nullopt;
    std::shared_ptr<const std::vector<std::string>> names;
    {
      std::lock_guard<std::mutex> l(mu_);
      names = names_;
    }
    if (!names || o->rule_id == 0 || o->rule_id > names->size()) return std::nullopt;
    const socklen_t len =
        o->destination.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
    return proxy::OriginalDestination{
        proxy::SocketAddress(reinterpret_cast<const sockaddr*>(&o->destination), len),
        (*names)[o->rule_id - 1]};
  }

 private:
  UpgradeRedirect& redirect_;
  std::mutex mu_;
  std::shared_ptr<const std::vector<std::string>> names_;
};

UpgradeService::UpgradeService(UpgradeServiceOptions options) : opts_(std::move(options)) {
  UpgradeRedirectOptions ro;
  ro.cgroup = opts_.cgroup_dir;
  ro.proxy_port_v4 = opts_.port;
  ro.proxy_port_v6 = opts_.port;
  ro.proxy_uid = opts_.proxy_uid;
  ro.pin_dir = opts_.pin_dir;
  if (!opts_.cgroup_dir.empty()) redirect_ = std::make_unique<UpgradeRedirect>(ro);
  if (redirect_) resolver_ = std::make_shared<RedirectResolver>(*redirect_);

  proxy::WorkerProcessOptions wo;
  wo.hello.uid = opts_.proxy_uid;
  wo.hello.gid = opts_.proxy_gid;
  wo.hello.workers = opts_.workers;
  wo.hello.log_level = opts_.log_level;
  wo.logger = &logging::get(logging::Subsystem::kProxy);
  auto emit = opts_.emit;
  wo.on_event = [emit](const proxy::ProxyEvent& pe) {
    if (emit) emit(to_event(pe));
  };
  wo.on_worker_died = [emit](const std::string& how) {
    if (!emit) return;
    Event e;
    e.type = EventType::kUpgradeFailed;
    e.severity = Severity::kError;
    e.action = "restart";
    e.reason = "proxy_worker_died";
    e.message = "the upgrade proxy worker " + how +
                "; its connections were reset (never passed in plaintext), restarting it";
    emit(std::move(e));
  };
  if (resolver_) {
    auto resolver = resolver_;
    wo.resolve = [resolver](const proxy::SocketAddress& peer, const proxy::SocketAddress&) {
      return resolver->resolve(peer);
    };
  }
  worker_ = std::make_unique<proxy::WorkerProcess>(std::move(wo));
  if (redirect_) {
    for (const char* ip : {"127.0.0.1", "::1"}) {
      const auto addr = proxy::SocketAddress::from_ip(ip, opts_.port);
      worker_->add_upgrade_listener(proxy::listen_tcp(*addr));
    }
  }
}

UpgradeService::~UpgradeService() = default;

UpgradeService::OwnerResolution UpgradeService::resolve_owners(const policy::Policy& p) const {
  OwnerResolution out;
  // Certificate, key and CA files: the worker has their contents, so a
  // rotated file (new inode or mtime) means building the contexts again.
  auto file = [&](const std::string& what, const std::string& path) {
    struct stat st {};
    if (path.empty()) return;
    if (::stat(path.c_str(), &st) != 0) {
      out.emplace_back(what + " file " + path, std::nullopt);
      return;
    }
    const uint64_t mtime_ns = static_cast<uint64_t>(st.st_mtim.tv_sec) * 1000000000ull +
                              static_cast<uint64_t>(st.st_mtim.tv_nsec);
    out.emplace_back(what + " file " + path,
                     std::make_pair(static_cast<uint64_t>(st.st_ino), mtime_ns ^ st.st_size));
  };
  for (const policy::Termination& t : p.terminations) {
    file(t.name, t.cert);
    file(t.name, t.key);
    file(t.name, t.client_ca);
  }
  if (!redirect_) return out;
  for (const policy::UpgradeRule& u : p.upgrades) {
    file(u.name, u.ca_file);
    file(u.name, u.client_cert);
    file(u.name, u.client_key);
    for (const auto& path : u.owners.cgroups) {
      const auto id = opts_.owners.cgroup_id ? opts_.owners.cgroup_id(path) : std::nullopt;
      out.emplace_back(u.name + " cgroup " + path,
                       id ? std::make_optional(std::make_pair(*id, uint64_t{0})) : std::nullopt);
    }
    for (const auto& path : u.owners.executables) {
      // What the kernel sees as task->mm->exe_file: the file itself, with
      // its superblock's device in the kernel's encoding.
      struct stat st {};
      std::optional<std::pair<uint64_t, uint64_t>> id;
      if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
        const uint64_t dev = (static_cast<uint64_t>(major(st.st_dev)) << 20) | minor(st.st_dev);
        id = std::make_pair(dev, static_cast<uint64_t>(st.st_ino));
      }
      out.emplace_back(u.name + " exe " + path, id);
    }
  }
  return out;
}

bool UpgradeService::host_changed(const policy::Policy& p) const {
  return resolve_owners(p) != applied_owners_;
}

void UpgradeService::apply(const policy::Policy& p) {
  const OwnerResolution owners = resolve_owners(p);  // once: what is published is what is kept
  const std::map<std::string, std::optional<std::pair<uint64_t, uint64_t>>> owner_ids(
      owners.begin(), owners.end());
  proxy::ProxyConfig pc;
  UpgradeSelection sel;
  auto names = std::make_shared<std::vector<std::string>>();
  // Without a redirect ([upgrade] cgroup unset) no client reaches the proxy.
  const std::vector<policy::UpgradeRule> none;
  for (const policy::UpgradeRule& u : redirect_ ? p.upgrades : none) {
    proxy::UpgradeRule r;
    r.id = u.name;
    r.server_name = u.server_name;
    for (const auto& [cidr, name] : u.server_names) {
      if (cidr.prefix_len != (cidr.family == 4 ? 32 : 128)) {
        throw std::runtime_error("upgrade \"" + u.name + "\": server_names " + cidr.text +
                                 ": only single addresses (/32, /128) are supported yet");
      }
      r.server_names[cidr.text.substr(0, cidr.text.find('/'))] = name;
    }
    r.ca_file = u.ca_file;
    r.cert_file = u.client_cert;
    r.key_file = u.client_key;
    r.alpn = u.alpn;
    r.preamble = u.preamble == "postgresql" ? proxy::UpgradePreamble::kPostgresql
                                            : proxy::UpgradePreamble::kNone;
    r.min_version = u.min_tls >= 0x0304 ? proxy::TlsVersion::kTls13 : proxy::TlsVersion::kTls12;
    pc.upgrade.push_back(r);

    UpgradeRuleSpec spec;
    spec.rule_id = static_cast<uint32_t>(names->size() + 1);
    for (const auto& b : p.boundaries) {
      if (b.name != u.boundary) continue;
      for (const auto& c : b.cidrs) spec.cidrs.push_back(c.text);
    }
    for (const auto& pr : u.ports) spec.ports.push_back({pr.lo, pr.hi});
    for (const auto& user : u.owners.users) {
      std::optional<uint32_t> uid = user.uid;
      if (!uid && opts_.owners.uid) uid = opts_.owners.uid(user.name);
      if (uid) spec.uids.push_back(*uid);
    }
    if (!u.owners.users.empty() && spec.uids.empty()) continue;  // no such user here: nobody
    spec.comms = u.owners.comms;
    // Cgroups narrow the attach cgroup's clients to those subtrees. A rule
    // whose cgroups do not exist here keeps its destinations and selects
    // nobody (re-resolved every second: host_changed()).
    spec.cgroup_filter = !u.owners.cgroups.empty();
    for (const auto& path : u.owners.cgroups) {
      const auto it = owner_ids.find(u.name + " cgroup " + path);
      if (it != owner_ids.end() && it->second) {
        spec.cgroups.emplace_back(it->second->first, policy::cgroup_level(path));
      }
    }
    // Executables likewise: a file missing here selects nobody; a replaced
    // one (new inode) is picked up within a second.
    spec.exe_filter = !u.owners.executables.empty();
    for (const auto& path : u.owners.executables) {
      const auto it = owner_ids.find(u.name + " exe " + path);
      if (it != owner_ids.end() && it->second) {
        spec.exes.emplace_back(static_cast<uint32_t>(it->second->first), it->second->second);
      }
    }
    sel.rules.push_back(spec);
    names->push_back(u.name);
  }
  // Server side: each termination's port accepts TLS (dual-stack) for its
  // plaintext backend on loopback.
  std::vector<std::pair<uint16_t, std::string>> new_ports;
  for (const policy::Termination& t : p.terminations) {
    proxy::TerminatorRule r;
    r.id = t.name;
    r.cert_file = t.cert;
    r.key_file = t.key;
    r.client_ca_file = t.client_ca;
    r.require_client_cert = !t.client_ca.empty();
    r.mode = t.strict ? proxy::TerminatorMode::kStrict : proxy::TerminatorMode::kPermissive;
    const auto backend = proxy::SocketAddress::parse(t.backend);
    if (!backend) {
      throw std::runtime_error("termination \"" + t.name + "\": backend " + t.backend +
                               " is not an address:port");
    }
    r.backend = *backend;
    pc.terminators.push_back(r);
    if (!listening_.count(t.port)) new_ports.emplace_back(t.port, t.name);
  }
  try {
    proxy::read_pem_files(pc);             // the worker cannot open root-only keys itself
    worker_->apply_config(std::move(pc));  // validates: a bad rule throws, the old stays
  } catch (const std::exception& ex) {
    throw std::runtime_error(std::string("upgrade proxy: ") + ex.what());
  }
  for (const auto& [port, name] : new_ports) {
    // A port whose termination is removed later keeps its listener and
    // resets what arrives (no rule): nothing reaches the backend unjudged.
    const auto any = proxy::SocketAddress::from_ip("::", port);
    try {
      worker_->add_terminator_listener(proxy::listen_tcp(*any), name);
    } catch (const std::exception& ex) {
      throw std::runtime_error("termination \"" + name + "\": cannot listen on port " +
                               std::to_string(port) + ": " + ex.what());
    }
    listening_.insert(port);
  }
  terminations_ = p.terminations.size();
  if (redirect_) {
    resolver_->set_names(names);
    redirect_->publish(sel);
  }
  rules_ = sel.rules.size();
  applied_owners_ = owners;
}

proxy::wire::WorkerCounters UpgradeService::proxy_counters() const {
  try {
    return worker_->counters();
  } catch (const std::exception& ex) {
    logging::get(logging::Subsystem::kProxy).warn("proxy worker counters: {}", ex.what());
    return {};
  }
}

uint64_t UpgradeService::worker_restarts() const { return worker_->status().restarts; }

uint64_t UpgradeService::redirected() const {
  return redirect_ ? redirect_->counters().redirected : 0;
}

std::string UpgradeService::summary(const proxy::wire::WorkerCounters& counters) const {
  const UpgradeRedirectCounters c = redirect_ ? redirect_->counters() : UpgradeRedirectCounters{};
  uint64_t connections = 0, failures = 0, active = 0;
  for (const auto& r : counters.rules) {
    connections += r.connections;
    active += r.active;
    for (uint64_t f : r.failures) failures += f;
  }
  return std::to_string(rules_) + " upgrade rule(s)" +
         (redirect_ ? " on 127.0.0.1/[::1]:" + std::to_string(opts_.port)
                    : " (no [upgrade] cgroup)") +
         ", " + std::to_string(terminations_) + " termination(s); redirected " +
         std::to_string(c.redirected) + ", proxied " + std::to_string(connections) + " (" +
         std::to_string(active) + " active), failed closed " + std::to_string(failures) +
         "; worker " + worker_text(worker_->status(), opts_.proxy_uid);
}

}  // namespace tlswall::agent::upgrade
