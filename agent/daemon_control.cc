// The daemon's implementation of the control API (agent/control/
// tlswall_control.thrift). Runs on the daemon's loop thread, inside
// ControlServer::dispatch(), only for callers the server allowed; every
// state-changing call is also an audit event (Daemon::audit).
#include <arpa/inet.h>
#include <unistd.h>

#include <stdexcept>

#include "agent/control/recent_events.h"
#include "agent/control/status_convert.h"
#include "agent/daemon.h"
#include "logging/log.h"
#include "policy/policy_internal.h"
#include "tlswall_control_constants.h"

namespace tlswall::agent {

using logging::Event;
using logging::EventType;
using logging::Severity;
using logging::Subsystem;

namespace {

control::api::ControlError error(const std::string& message) {
  control::api::ControlError e;
  e.message = message;
  return e;
}

std::vector<std::string> port_strings(const std::vector<policy::PortRange>& ports) {
  std::vector<std::string> out;
  for (const auto& p : ports) out.push_back(policy::internal::port_range_string(p.lo, p.hi));
  return out;
}

std::vector<control::api::OwnerSelector> owner_selectors(const policy::OwnerSelector& o) {
  std::vector<control::api::OwnerSelector> out;
  auto add = [&](const char* kind, const std::string& v) {
    control::api::OwnerSelector s;
    s.kind = kind;
    s.value = v;
    out.push_back(s);
  };
  for (const auto& c : o.cgroups) add("cgroup", c);
  for (const auto& u : o.users) add("user", u.text());
  for (const auto& c : o.comms) add("comm", c);
  return out;
}

}  // namespace

class Daemon::ControlApi : public control::ControlHandler {
 public:
  explicit ControlApi(Daemon& d) : d_(d) {}

  void ping(control::api::PingReply& r) override {
    r.version = TLSWALL_VERSION;
    r.api_version = control::api::g_tlswall_control_constants.API_VERSION;
    r.pid = ::getpid();
  }

  void status(control::api::StatusReply& r) override { r = control::to_thrift(d_.status()); }

  void flows(std::vector<control::api::FlowRecord>& out,
             const control::api::FlowsQuery& q) override {
    control::FlowFilter f;
    if (q.__isset.verdict) f.action = q.verdict;
    if (q.__isset.rule) f.rule = q.rule;
    if (q.__isset.pid) f.pid = static_cast<uint32_t>(q.pid);
    if (q.__isset.limit && q.limit > 0) f.limit = std::min<size_t>(q.limit, 1000);
    for (const Event& e : d_.recent_->flows(f)) {
      control::api::FlowRecord r;
      r.time_us = logging::to_unix_us(e.time);
      r.action = e.action;
      r.reason = e.reason;
      r.mode = e.mode;
      r.rule = e.rule;
      r.boundary = e.boundary;
      r.family = e.flow->family;
      r.src = e.flow->src;
      r.sport = e.flow->sport;
      r.dst = e.flow->dst;
      r.dport = e.flow->dport;
      r.interface_name = e.interface;
      r.tls_version = e.tls_version;
      r.policy_generation = static_cast<int64_t>(e.policy_generation);
      r.count = static_cast<int64_t>(e.count);
      r.owner_status = "unknown";
      if (e.owner) {
        const logging::Owner& o = *e.owner;
        if (o.pid) r.__set_pid(*o.pid);
        if (o.uid) r.__set_uid(*o.uid);
        r.comm = o.comm;
        r.exe = o.exe;
        r.cgroup = o.cgroup;
        r.container = o.container;
        if (!o.attribution.empty()) r.owner_status = o.attribution;
      }
      out.push_back(std::move(r));
    }
  }

  void events(control::api::EventsReply& r, int64_t after_seq, int32_t max) override {
    const control::EventsPage p =
        d_.recent_->page(after_seq > 0 ? static_cast<uint64_t>(after_seq) : 0,
                         max > 0 ? std::min<size_t>(static_cast<size_t>(max), 1000) : 100);
    for (const auto& l : p.events) {
      control::api::EventLine e;
      e.seq = static_cast<int64_t>(l.seq);
      e.json = l.json;
      r.events.push_back(std::move(e));
    }
    r.next_seq = static_cast<int64_t>(p.next_seq);
    r.skipped = static_cast<int64_t>(p.skipped);
    r.oldest_seq = static_cast<int64_t>(p.oldest_seq);
    r.newest_seq = static_cast<int64_t>(p.newest_seq);
  }

  void policy_show(control::api::PolicyShowReply& r) override {
    if (!d_.policy_) throw error("no policy is loaded");
    const policy::Policy& m = d_.policy_->model;
    r.path = d_.config_.policy_path;
    r.version = m.version;
    r.hash = m.hash;
    r.loaded_at = logging::format_time(d_.policy_->loaded_at);
    r.generation = static_cast<int64_t>(d_.policy_->generation);
    r.default_mode = policy::mode_name(m.default_mode);
    r.files = m.files;
    for (const auto& rule : m.rules) {
      control::api::PolicyRule pr;
      pr.name = rule.name;
      pr.boundary = rule.boundary;
      pr.ports = port_strings(rule.ports);
      pr.mode = policy::mode_name(rule.mode);
      pr.overridden = d_.overridden(rule);
      pr.effective_mode = policy::mode_name(d_.effective_mode(rule));
      pr.min_tls = policy::tls_version_to_string(rule.min_tls);
      pr.owners = owner_selectors(rule.owners);
      pr.udp = policy::udp_verdict_name(rule.udp);
      for (uint8_t p = TW_PREAMBLE_NONE + 1; p < TW_PREAMBLE_MAX; ++p) {
        if (rule.preambles & TW_PREAMBLE_BIT(p)) pr.preambles.push_back(policy::preamble_name(p));
      }
      r.rules.push_back(std::move(pr));
    }
    const auto now = std::chrono::system_clock::now();
    for (const auto& x : m.exemptions) {
      control::api::PolicyExemption pe;
      pe.name = x.name;
      pe.reason = x.reason;
      pe.owner = x.owner;
      pe.expires = x.expires ? policy::internal::date_to_string(*x.expires) : "";
      pe.active = !policy::internal::is_expired(x, now);
      for (const auto& c : x.cidrs) pe.cidrs.push_back(c.text);
      pe.ports = port_strings(x.ports);
      pe.owners = owner_selectors(x.owners);
      r.exemptions.push_back(std::move(pe));
    }
    for (const auto& b : m.boundaries) {
      control::api::PolicyBoundary pb;
      pb.name = b.name;
      pb.description = b.description;
      for (const auto& c : b.cidrs) pb.cidrs.push_back(c.text);
      r.boundaries.push_back(std::move(pb));
    }
  }

  void reload(control::api::ReloadReply& r) override {
    const uint64_t before = d_.policy_ ? d_.policy_->generation : 0;
    d_.apply_policy(false);
    const uint64_t after = d_.policy_ ? d_.policy_->generation : 0;
    r.changed = after != before;
    r.ok = r.changed;
    if (!r.ok) r.error = d_.last_error_;
    if (d_.policy_) {
      r.version = d_.policy_->model.version;
      r.hash = d_.policy_->model.hash;
      r.generation = static_cast<int64_t>(after);
    }
  }

  void set_mode(control::api::ModeReply& r, const std::string& rule,
                const std::string& mode) override {
    std::vector<Daemon::ModeChange> changed;
    try {
      changed = d_.set_mode(rule, mode);
    } catch (const std::invalid_argument& e) {
      throw error(e.what());
    } catch (const std::exception& e) {
      throw error(std::string("the kernel tables could not be written, nothing changed: ") +
                  e.what());
    }
    for (const Daemon::ModeChange& m : changed) {
      control::api::ModeChange c;
      c.rule = m.rule;
      c.previous_mode = policy::mode_name(m.previous);
      c.mode = policy::mode_name(m.mode);
      c.overridden = m.overridden;
      r.changed.push_back(std::move(c));
    }
    r.generation = static_cast<int64_t>(d_.policy_ ? d_.policy_->generation : 0);
  }

  void teardown(control::api::TeardownReply& r, bool open) override {
    if (d_.config_.fail_mode == "closed" && !open) {
      throw error(
          "fail_mode is \"closed\": a teardown would stop all enforcement; use "
          "`tlswallctl teardown --open` to remove it anyway");
    }
    logging::get(Subsystem::kControl)
        .warn("teardown requested by {}: detaching and removing all pins",
              current_peer().describe());
    d_.teardown_requested_ = true;
    r.message = "tearing down: detaching from every interface and removing " + d_.config_.pin_root;
  }

 private:
  Daemon& d_;
};

void Daemon::start_control() {
  api_ = std::make_unique<ControlApi>(*this);
  control::ControlServerOptions o;
  o.path = config_.control_socket;
  o.group = config_.control_group;
  control_ = std::make_unique<control::ControlServer>(
      o, *api_, [this](const control::AuditRecord& a) { audit(a); });
}

void Daemon::audit(const control::AuditRecord& a) {
  Event e;
  e.type = EventType::kControlAudit;
  e.severity = a.allowed ? Severity::kNotice : Severity::kWarning;
  logging::Owner o;
  o.pid = static_cast<uint32_t>(a.peer.pid);
  o.uid = static_cast<uint32_t>(a.peer.uid);
  o.gid = static_cast<uint32_t>(a.peer.gid);
  o.comm = a.peer.comm;
  e.owner = o;
  e.action = a.allowed ? "allowed" : "denied";
  e.message = a.method + (a.args.empty() ? "" : " " + a.args) + ": " + a.result;
  if (policy_) {
    e.policy_version = policy_->model.version;
    e.policy_generation = policy_->generation;
  }
  logging::get(Subsystem::kControl)
      .info("audit: {} by {}: {}", a.method, a.peer.describe(), a.result);
  emit(std::move(e));
}

}  // namespace tlswall::agent
