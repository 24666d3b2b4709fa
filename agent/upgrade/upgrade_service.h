// Transparent upgrade inside tlswalld: the policy's [[upgrades]] drive the
// kernel redirect (agent/upgrade/upgrade_redirect.h: selected connect()s go
// to the local proxy) and the proxy engine (proxy/: re-originates them with
// TLS, verified). One object owns both and keeps them in step on reload.
//
// Also serves the policy's [[terminations]] (server side): their ports
// accept TLS for a plaintext backend on loopback.
//
// Not done yet (issue 5): the proxy runs in the daemon's process (the
// privilege-dropped worker of proxy/README.md is not wired), and [[upgrades]]
// owner selectors by cgroup are not supported (the [upgrade] cgroup attach
// point selects the clients).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "logging/event.h"
#include "policy/policy.h"

#include "proxy/events.h"

namespace tlswall::proxy {
class Engine;
}

namespace tlswall::agent::upgrade {

class UpgradeRedirect;
class RedirectResolver;

struct UpgradeServiceOptions {
  // Absolute cgroup v2 directory the redirect attaches to; "" = no client
  // side (no redirect, [[upgrades]] ignored): terminations only.
  std::string cgroup_dir;
  uint16_t port = 0;  // proxy listener on 127.0.0.1 and [::1]
  uint32_t mark = 0;  // SO_MARK of the proxy's own sockets (never redirected)
  unsigned workers = 2;
  std::string pin_dir;           // bpffs directory for the redirect's pins ("" = none)
  policy::OwnerResolver owners;  // user names -> uids
  // Called from proxy worker threads: must be thread-safe (the event
  // pipeline's submit is).
  std::function<void(logging::Event)> emit;
};

class UpgradeService {
 public:
  // Attaches the redirect and starts the proxy with no rule selected.
  // Throws std::runtime_error with one line.
  explicit UpgradeService(UpgradeServiceOptions options);
  ~UpgradeService();
  UpgradeService(const UpgradeService&) = delete;
  UpgradeService& operator=(const UpgradeService&) = delete;

  // The policy's [[upgrades]]: proxy contexts first, then the kernel
  // selection (so no connection is redirected to a rule the proxy lacks).
  // Throws std::runtime_error (the previous rules stay in force).
  void apply(const policy::Policy& p);

  // "N rules; redirected R, upgraded U, failed F" for status.
  std::string summary() const;

  // Per rule (upgrade and termination): connections, active, bytes, failures
  // by reason, as the proxy counts them.
  std::vector<proxy::RuleCounters> rule_counters() const;
  uint64_t redirected() const;

  // True if a cgroup an [[upgrades]] selector names appeared or went away
  // since apply(): the caller applies `p` again.
  bool owners_changed(const policy::Policy& p) const;

 private:
  // (rule, cgroup path) -> its id on this host (nullopt: no such cgroup).
  using CgroupResolution = std::vector<std::pair<std::string, std::optional<uint64_t>>>;
  CgroupResolution resolve_cgroups(const policy::Policy& p) const;
  UpgradeServiceOptions opts_;
  std::unique_ptr<UpgradeRedirect> redirect_;
  std::unique_ptr<proxy::Engine> engine_;
  std::shared_ptr<RedirectResolver> resolver_;  // kernel record -> rule name, for the proxy
  size_t rules_ = 0;
  size_t terminations_ = 0;
  std::set<uint16_t> listening_;      // termination ports with a listener
  CgroupResolution applied_cgroups_;  // as the last apply() resolved them
};

}  // namespace tlswall::agent::upgrade
