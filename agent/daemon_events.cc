// tlswalld's inputs from the kernel: classifier events (decoded, owners
// enriched, blocked sockets destroyed) and interfaces appearing, vanishing or
// being renamed.
#include <arpa/inet.h>
#include <net/if.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "agent/daemon.h"
#include "logging/log.h"

namespace tlswall::agent {
namespace {

using logging::Event;
using logging::EventType;
using logging::Severity;
using logging::Subsystem;

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

}  // namespace

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
  f.protocol = fe.flow.proto == IPPROTO_UDP ? "udp" : "tcp";
  e.flow = f;
  e.reason = reason_name(fe.reason);
  e.mode = fe.mode == TW_MODE_ENFORCE ? "enforce" : "monitor";
  e.action = action_name(fe.action);
  e.interface = ifname_of(fe.ifindex);
  e.policy_generation = fe.policy_generation;
  e.sock_cookie = fe.sock_cookie;
  if (fe.hello_version) e.tls_version = policy::tls_version_to_string(fe.hello_version);
  if (fe.preamble) e.preamble = policy::preamble_name(fe.preamble);
  if (fe.server_version) e.server_tls_version = policy::tls_version_to_string(fe.server_version);
  if (hdr.type == TW_EV_FLOW_VERDICT) e.evidence = evidence_name(fe.evidence);
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

  // A UDP socket is not destroyed: it may be unconnected and send to
  // other, allowed destinations too; its blocked datagrams are dropped.
  if (hdr.type == TW_EV_FLOW_VERDICT && fe.action == TW_ACTION_DROP &&
      fe.flow.proto == IPPROTO_TCP) {
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
    case TW_OWNER_UNKNOWN:
      o.attribution = "not_looked_up";
      o.detail =
          "decided on the server's answer at tc ingress, where the packet has no socket yet; the "
          "flow's client-side events name its owner";
      return o;
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

void Daemon::on_raw_socket(const tw_raw_socket_event& r) {
  using attribution::RawSocketProbes;
  Event e;
  e.type = EventType::kRawSocketOpened;
  e.severity = Severity::kWarning;
  e.action = "report";
  e.reason = "af_" + RawSocketProbes::family_name(r.family);
  logging::Owner o;
  o.attribution = "recorded";
  o.pid = r.tgid;
  o.tid = r.pid;
  o.uid = r.uid;
  o.gid = r.gid;
  o.comm.assign(r.comm, strnlen(r.comm, sizeof(r.comm)));
  o.cgroup_id = r.cgroup_id;
  o.backend = RawSocketProbes::backend_name(r.backend);
  if (process_info_) {
    const attribution::ProcessInfo info = process_info_->resolve(r.tgid, 0, r.cgroup_id);
    o.cgroup = info.cgroup_path;
    o.container = info.origin.container_id;
    o.unit = info.origin.systemd_unit;
    if (info.status == attribution::ProcessStatus::kLive) {
      o.process = "live";
      o.exe = info.exe;
      o.cmdline = info.cmdline;
    } else {
      o.process = "exited";
    }
  }
  e.owner = std::move(o);
  e.message = "opened an AF_" + std::string(r.family == TW_AF_XDP ? "XDP" : "PACKET") +
              " socket (type " + RawSocketProbes::type_name(r.type) + ", protocol " +
              std::to_string(r.protocol) + ", netns " + std::to_string(r.netns_ino) +
              "): frames sent through it can bypass the tc egress classifier";
  logging::get(Subsystem::kAgent)
      .info("raw socket: {} pid {} ({}) uid {} {}", e.reason, r.tgid, e.owner->comm, r.uid,
            e.message);
  emit(std::move(e));
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

}  // namespace tlswall::agent
