// Transparent upgrade inside tlswalld: the policy's [[upgrades]] drive the
// kernel redirect (agent/upgrade/upgrade_redirect.h: selected connect()s go
// to the local proxy) and the proxy engine (proxy/: re-originates them with
// TLS, verified). One object owns both and keeps them in step on reload.
//
// Also serves the policy's [[terminations]] (server side): their ports
// accept TLS for a plaintext backend on loopback.
//
// The proxy runs in a worker process (proxy/worker_process.h) as the
// configured unprivileged user, with no capabilities and no BPF object: it
// asks this service, over its channel, for the kernel's record of each
// connection it accepts. The kernel leaves that user's connects alone.
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
#include "proxy/worker_protocol.h"

namespace tlswall::proxy {
class WorkerProcess;
}

namespace tlswall::agent::upgrade {

class UpgradeRedirect;
class RedirectResolver;

struct UpgradeServiceOptions {
  // Absolute cgroup v2 directory the redirect attaches to; "" = no client
  // side (no redirect, [[upgrades]] ignored): terminations only.
  std::string cgroup_dir;
  uint16_t port = 0;  // proxy listener on 127.0.0.1 and [::1]
  // The proxy worker's user (never root; dedicated: its connects are never
  // redirected).
  uint32_t proxy_uid = 0;
  uint32_t proxy_gid = 0;
  unsigned workers = 2;
  std::string log_level = "info";  // the worker's log level
  std::string pin_dir;             // bpffs directory for the redirect's pins ("" = none)
  policy::OwnerResolver owners;    // user names -> uids
  // Called from the worker's supervisor thread: must be thread-safe (the
  // event pipeline's submit is).
  std::function<void(logging::Event)> emit;
};

class UpgradeService {
 public:
  // Attaches the redirect and starts the proxy worker with no rule selected.
  // Throws std::runtime_error with one line.
  explicit UpgradeService(UpgradeServiceOptions options);
  ~UpgradeService();
  UpgradeService(const UpgradeService&) = delete;
  UpgradeService& operator=(const UpgradeService&) = delete;

  // The policy's [[upgrades]]: proxy contexts first, then the kernel
  // selection (so no connection is redirected to a rule the proxy lacks).
  // Throws std::runtime_error (the previous rules stay in force).
  void apply(const policy::Policy& p);

  // What the proxy worker counts, per rule (upgrade and termination:
  // connections, active, bytes, failures by reason) and for itself (events
  // it could not hand over, ...): one round trip to the worker, empty if it
  // does not answer.
  proxy::wire::WorkerCounters proxy_counters() const;

  // "N rules; redirected R, proxied P, failed F; worker pid W" for status
  // and logs, from `counters` (or a fresh proxy_counters()).
  std::string summary(const proxy::wire::WorkerCounters& counters) const;
  std::string summary() const { return summary(proxy_counters()); }

  uint64_t redirected() const;
  // Workers started after one died.
  uint64_t worker_restarts() const;

  // True if, since apply(), a cgroup or executable an [[upgrades]] selector
  // names appeared, went away or (a file) was replaced, or a certificate,
  // key or CA file of a rule or termination changed: the caller applies `p`
  // again (the proxy rebuilds its contexts; live connections keep theirs).
  bool host_changed(const policy::Policy& p) const;

 private:
  // (rule, cgroup path) -> its id on this host (nullopt: no such cgroup).
  // "rule cgroup PATH" -> (cgroup id, 0), "rule exe PATH" -> (device,
  // inode), "rule file PATH" -> (inode, mtime ^ size) on this host;
  // nullopt: no such cgroup or file.
  using OwnerResolution =
      std::vector<std::pair<std::string, std::optional<std::pair<uint64_t, uint64_t>>>>;
  OwnerResolution resolve_owners(const policy::Policy& p) const;
  UpgradeServiceOptions opts_;
  std::unique_ptr<UpgradeRedirect> redirect_;
  std::unique_ptr<proxy::WorkerProcess> worker_;
  std::shared_ptr<RedirectResolver> resolver_;  // kernel record -> rule name, for the proxy
  size_t rules_ = 0;
  size_t terminations_ = 0;
  std::set<uint16_t> listening_;    // termination ports with a listener
  OwnerResolution applied_owners_;  // as the last apply() resolved them
};

}  // namespace tlswall::agent::upgrade
