// tlswalld's policy: loading and validating it, compiling it with the
// run-time rule modes, publishing generations into the kernel tables, and
// handing the [[upgrades]] / [[terminations]] to the upgrade service.
#include <pwd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <stdexcept>

#include "agent/daemon.h"
#include "agent/path_trust.h"
#include "logging/log.h"

namespace tlswall::agent {
namespace {

using logging::Event;
using logging::EventType;
using logging::Severity;
using logging::Subsystem;

// Compiled policies kept to name the rules of events from older generations.
constexpr size_t kGenerationHistory = 8;

// (uid, gid) of the proxy worker's user. Throws std::runtime_error naming
// the fix when it is missing or privileged.
std::pair<uint32_t, uint32_t> proxy_user(const std::string& name) {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  const int rc = ::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found);
  if (rc != 0 || found == nullptr) {
    throw std::runtime_error(
        "[upgrade] user \"" + name + "\" does not exist" +
        (rc != 0 ? std::string(" (") + std::strerror(rc) + ")" : std::string()) +
        ": the proxy runs as this dedicated unprivileged user; create it with "
        "`useradd --system --no-create-home --shell /usr/sbin/nologin " +
        name + "` (quickstart.sh does)");
  }
  if (pw.pw_uid == 0 || pw.pw_gid == 0) {
    throw std::runtime_error("[upgrade] user \"" + name +
                             "\" has uid or gid 0: the proxy never runs privileged");
  }
  return {pw.pw_uid, pw.pw_gid};
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

std::string overrides_path(const AgentConfig& c) {
  return c.events.state_dir.empty() ? "" : c.events.state_dir + "/mode_overrides";
}

}  // namespace

void Daemon::apply_policy(bool initial) {
  auto& log = logging::get(Subsystem::kPolicy);
  const auto now = std::chrono::system_clock::now();
  policy::LoadResult r;
  if (auto bad = untrusted_policy_path(config_.policy_path)) {
    // Whoever can write the policy controls what is blocked: refused like
    // an invalid policy (the last good one stays; at start: no start).
    r.diagnostics.push_back(policy::Diagnostic{policy::Diagnostic::Severity::kError,
                                               policy::SourceLocation{config_.policy_path, 0, 0},
                                               "untrusted policy: " + *bad});
  } else {
    r = policy::load_policy(config_.policy_path, now);
  }
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
  for (auto& r : effective.rules) r.mode = effective_mode(r);
  return std::make_shared<const policy::CompiledPolicy>(policy::compile_policy(effective, now));
}

std::vector<Daemon::ModeChange> Daemon::set_mode(const std::string& rule, const std::string& mode) {
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
  std::vector<ModeChange> changed;
  const auto previous = mode_overrides_;
  for (const policy::Rule* r : targets) {
    const policy::Mode before = effective_mode(*r);
    if (mode == "policy") {
      mode_overrides_.erase(r->name);
    } else {
      mode_overrides_[r->name] =
          mode == "enforce" ? policy::Mode::kEnforce : policy::Mode::kMonitor;
    }
    if (effective_mode(*r) != before) {
      changed.push_back({r->name, before, effective_mode(*r), overridden(*r)});
    }
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
  for (const ModeChange& c : changed) {
    Event e;
    e.type = EventType::kModeChanged;
    e.severity = Severity::kNotice;
    e.rule = c.rule;
    e.previous_mode = policy::mode_name(c.previous);
    e.mode = policy::mode_name(c.mode);
    e.policy_version = policy_->model.version;
    e.policy_generation = policy_->generation;
    e.message = mode == "policy" ? "run-time override dropped: the policy file's mode applies"
                                 : "run-time override (tlswallctl mode)";
    emit(std::move(e));
  }
  return changed;
}

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
  const auto user = proxy_user(config_.upgrade_user);
  uo.proxy_uid = user.first;
  uo.proxy_gid = user.second;
  uo.workers = config_.upgrade_workers;
  uo.log_level = config_.log_level;
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

policy::Mode Daemon::effective_mode(const policy::Rule& r) const {
  auto it = mode_overrides_.find(r.name);
  return it == mode_overrides_.end() ? r.mode : it->second;
}

}  // namespace tlswall::agent
