#include "agent/attribution/owner_probes.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "agent/bpf_classifier.h"
#include "agent/owned_fd.h"
#include "logging/log.h"
#include "owner_probes.skel.h"

namespace tlswall::agent::attribution {
namespace {

constexpr int kENOTSUPP = 524;  // kernel-internal "not supported", seen by user space
constexpr const char* kPinPrefix = "owner_link_";
constexpr uint32_t kLinkPinVersion = 1;

struct BackendDef {
  OwnerBackend backend;
  const char* name;
  std::vector<const char*> programs;  // all attached, or none
};

const std::vector<BackendDef>& backend_defs() {
  static const std::vector<BackendDef> defs = {
      {OwnerBackend::kKprobe, "kprobe", {"owner_kprobe"}},
      {OwnerBackend::kFentry, "fentry", {"owner_fentry"}},
      {OwnerBackend::kTpBtf, "tp_btf", {"owner_tp_btf"}},
      {OwnerBackend::kSockOps, "sock_ops", {"owner_sock_ops"}},
  };
  return defs;
}

const BackendDef& def_of(OwnerBackend b) {
  for (const auto& d : backend_defs()) {
    if (d.backend == b) return d;
  }
  throw std::invalid_argument("unknown owner backend " + std::to_string(static_cast<int>(b)));
}

// "ENOENT", or the number when the C library has no name for it.
std::string errno_name(int err) {
  if (err == kENOTSUPP) return "ENOTSUPP";
  const char* n = ::strerrorname_np(err);
  return n ? n : "errno " + std::to_string(err);
}

bool path_exists(const char* p) {
  struct stat st {};
  return ::stat(p, &st) == 0;
}

// What an errno most likely means for this backend at this step.
std::string explain(OwnerBackend b, bool at_load, int err) {
  if (b == OwnerBackend::kKprobe && !at_load &&
      (err == ENOENT || err == EOPNOTSUPP || err == kENOTSUPP)) {
    if (!path_exists("/sys/bus/event_source/devices/kprobe") &&
        !path_exists("/sys/kernel/tracing/kprobe_events") &&
        !path_exists("/sys/kernel/debug/tracing/kprobe_events")) {
      return "kernel has no kprobes: CONFIG_KPROBES off?";
    }
    return "tcp_connect cannot be probed (not found, inlined or blacklisted)";
  }
  if (b == OwnerBackend::kFentry) {
    if (err == EPERM) return "fentry/BPF trampolines not permitted here";
    if (err == kENOTSUPP || err == EOPNOTSUPP) return "kernel has no BPF trampolines";
    if (err == ESRCH || err == ENOENT) return "tcp_connect not in the kernel's BTF";
  }
  if (b == OwnerBackend::kTpBtf && (err == ESRCH || err == ENOENT)) {
    return "kernel BTF has no inet_sock_set_state tracepoint";
  }
  if (b == OwnerBackend::kSockOps && !at_load && err == EBADF) {
    return "not a cgroup v2 directory";
  }
  if (at_load && (err == EACCES || err == EINVAL || err == E2BIG)) {
    return "rejected by the verifier; its log is in the bpf logger";
  }
  if (err == EPERM) return "not permitted: needs CAP_BPF and CAP_PERFMON (root)";
  return std::strerror(err);
}

std::string failure(const char* step, OwnerBackend b, bool at_load, int err) {
  return std::string(step) + ": " + errno_name(err) + " (" + explain(b, at_load, err) + ")";
}

// Pin file names: final "owner_link_<backend>[_<i>]_v1"; during a start-up
// "owner_link_<backend>[_<i>]_new_v1" (still an owner-link pin, so a crash
// in between leaves nothing remove_pins() would miss).
std::string pin_stem(OwnerBackend b, size_t i) {
  std::string s = std::string(kPinPrefix) + backend_name(b);
  if (i > 0) s += "_" + std::to_string(i);
  return s;
}
std::string final_pin(const std::string& dir, OwnerBackend b, size_t i) {
  return dir + "/" + pin_stem(b, i) + "_v" + std::to_string(kLinkPinVersion);
}
std::string temp_pin(const std::string& dir, OwnerBackend b, size_t i) {
  return dir + "/" + pin_stem(b, i) + "_new_v" + std::to_string(kLinkPinVersion);
}

// Unpins one owner link and detaches it where the link type supports
// BPF_LINK_DETACH (cgroup links do; tracing and perf links do not: those
// end when their last holder, e.g. an old daemon, closes them).
void remove_link_pin(const std::string& path) {
  OwnedFd fd(bpf_obj_get(path.c_str()));
  ::unlink(path.c_str());
  if (fd.get() >= 0) bpf_link_detach(fd.get());
}

std::vector<std::string> owner_pins_in(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.path().filename().string().rfind(kPinPrefix, 0) == 0) out.push_back(e.path().string());
  }
  return out;
}

}  // namespace

const char* backend_name(OwnerBackend b) {
  for (const auto& d : backend_defs()) {
    if (d.backend == b) return d.name;
  }
  return "unknown";
}

std::optional<OwnerBackend> parse_backend(std::string_view name) {
  for (const auto& d : backend_defs()) {
    if (name == d.name) return d.backend;
  }
  return std::nullopt;
}

std::vector<OwnerBackend> default_backend_preference() {
  return {OwnerBackend::kKprobe, OwnerBackend::kFentry, OwnerBackend::kTpBtf,
          OwnerBackend::kSockOps};
}

const char* backend_state_name(BackendState s) {
  switch (s) {
    case BackendState::kActive:
      return "active";
    case BackendState::kAvailableNotChosen:
      return "available-not-chosen";
    case BackendState::kUnavailable:
      return "unavailable";
  }
  return "unknown";
}

void OwnerProbes::SkelDeleter::operator()(owner_probes* s) const { owner_probes__destroy(s); }
void OwnerProbes::LinkDeleter::operator()(bpf_link* l) const { bpf_link__destroy(l); }

std::string OwnerProbes::pin_name(OwnerBackend b) {
  return pin_stem(b, 0) + "_v" + std::to_string(kLinkPinVersion);
}

std::vector<std::string> OwnerProbes::remove_pins(const std::string& pin_dir) {
  std::vector<std::string> removed;
  if (pin_dir.empty()) return removed;
  for (const auto& p : owner_pins_in(pin_dir)) {
    remove_link_pin(p);
    removed.push_back(p);
  }
  return removed;
}

OwnerProbes::OwnerProbes(const OwnerProbesOptions& opts) : opts_(opts) {
  if (opts_.owners_fd < 0 || opts_.owner_tuples_fd < 0) {
    throw std::invalid_argument("owner probes need the fds of tw_owners and tw_owner_tuples");
  }
  for (const std::string* p : {&opts_.sock_ops_cgroup, &opts_.pin_dir}) {
    if (!p->empty() && (*p)[0] != '/') {
      throw std::invalid_argument("owner probes: path must be absolute: " + *p);
    }
  }
  route_libbpf_logs();
  auto& log = logging::get(logging::Subsystem::kBpf);

  // The preference list without repeats, then the backends it leaves out.
  std::vector<OwnerBackend> order;
  auto add = [&order](OwnerBackend b) {
    if (std::find(order.begin(), order.end(), b) == order.end()) order.push_back(b);
  };
  for (OwnerBackend b : opts_.preference) add(def_of(b).backend);
  const size_t configured = order.size();
  for (const auto& d : backend_defs()) add(d.backend);

  for (size_t i = 0; i < order.size(); ++i) {
    const OwnerBackend b = order[i];
    BackendReport r;
    r.backend = b;
    r.name = backend_name(b);
    if (i >= configured) {
      r.why = "not in the configured backend list";
      report_.push_back(r);
      continue;
    }
    std::string why;
    std::optional<Attached> a = try_backend(b, &why);
    if (!a) {
      r.why = why;
    } else if (active_) {
      // Probed only to report it: detached again when `a` goes.
      r.state = BackendState::kAvailableNotChosen;
      r.why = std::string("loads and attaches; ") + backend_name(*active_) + " is preferred";
    } else if (!pin_and_take_over(b, *a, &why)) {
      r.why = why;
    } else {
      attached_ = std::move(*a);
      active_ = b;
      r.state = BackendState::kActive;
      r.why = "attached";
      if (!pins_.empty()) r.why += ", pinned as " + pins_.front();
      if (!unpinned_why_.empty()) r.why += ", not pinned: " + unpinned_why_;
      if (!replaced_.empty()) {
        r.why += ", took over from " + std::to_string(replaced_.size()) + " old owner link(s)";
      }
    }
    report_.push_back(r);
  }

  for (const auto& r : report_) {
    if (r.state == BackendState::kActive) {
      log.info("owner probes: {} active ({})", r.name, r.why);
    } else {
      log.info("owner probes: {} {}: {}", r.name, backend_state_name(r.state), r.why);
    }
  }
  if (!active_) log.warn("owner probes: no backend attached; connections have no owner records");
}

OwnerProbes::~OwnerProbes() = default;

std::optional<OwnerProbes::Attached> OwnerProbes::try_backend(OwnerBackend b,
                                                              std::string* why) const {
  const BackendDef& def = def_of(b);
  if (b == OwnerBackend::kSockOps && opts_.sock_ops_cgroup.empty()) {
    *why = "no cgroup configured";
    return std::nullopt;
  }
  Attached a;
  a.skel.reset(owner_probes__open());
  if (!a.skel) {
    *why = "open failed: " + errno_name(errno);
    return std::nullopt;
  }
  bpf_program* prog = nullptr;
  bpf_object__for_each_program(prog, a.skel->obj) {
    bool wanted = false;
    for (const char* n : def.programs)
      wanted = wanted || std::strcmp(bpf_program__name(prog), n) == 0;
    bpf_program__set_autoload(prog, wanted);
  }
  int err = bpf_map__reuse_fd(a.skel->maps.tw_owners, opts_.owners_fd);
  if (!err) err = bpf_map__reuse_fd(a.skel->maps.tw_owner_tuples, opts_.owner_tuples_fd);
  if (err) {
    *why = "cannot use the owner tables: " + errno_name(-err);
    return std::nullopt;
  }
  err = owner_probes__load(a.skel.get());
  if (err) {
    *why = failure("load failed", b, true, -err);
    return std::nullopt;
  }

  OwnedFd cgroup;
  if (b == OwnerBackend::kSockOps) {
    cgroup = OwnedFd(::open(opts_.sock_ops_cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (cgroup.get() < 0) {
      *why = "cannot open cgroup " + opts_.sock_ops_cgroup + ": " + errno_name(errno);
      return std::nullopt;
    }
  }
  for (const char* n : def.programs) {
    bpf_program* p = bpf_object__find_program_by_name(a.skel->obj, n);
    if (!p) {
      *why = std::string("program ") + n + " missing from the object";
      return std::nullopt;  // links attached so far go with `a`
    }
    bpf_link* l = b == OwnerBackend::kSockOps ? bpf_program__attach_cgroup(p, cgroup.get())
                                              : bpf_program__attach(p);
    if (!l) {
      const int e = errno;
      *why = failure("attach failed", b, false, e);
      if (b == OwnerBackend::kSockOps) *why += " on " + opts_.sock_ops_cgroup;
      return std::nullopt;  // links attached so far go with `a`
    }
    a.links.emplace_back(l);
  }
  return a;
}

bool OwnerProbes::pin_and_take_over(OwnerBackend b, Attached& a, std::string* why) {
  if (opts_.pin_dir.empty()) return true;
  const std::string& dir = opts_.pin_dir;
  struct statfs fs {};
  if (::statfs(dir.c_str(), &fs) != 0) {
    *why = "pin failed: " + dir + ": " + errno_name(errno);
    return false;
  }
  if (static_cast<unsigned long>(fs.f_type) != BPF_FS_MAGIC) {
    *why = "pin failed: " + dir + " is not on bpffs";
    return false;
  }

  // Before Linux 5.15 a kprobe attachment is a perf event, not a BPF link
  // (libbpf then hands out the perf event fd): it cannot be pinned. The
  // backend still runs, unpinned (an old daemon's attachment of that kind
  // ends with that daemon, so there is nothing to take over either).
  for (const auto& l : a.links) {
    bpf_link_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(bpf_link__fd(l.get()), &info, &len) != 0) {
      unpinned_why_ =
          "this kernel attaches it as a perf event, not a BPF link (BPF perf-event links "
          "came with Linux 5.15): recording pauses while the daemon restarts";
      logging::get(logging::Subsystem::kBpf)
          .warn("owner probes: {} {}", backend_name(b), unpinned_why_);
      return true;
    }
  }
  // 1. Ours under temporary names (old links keep recording meanwhile).
  std::vector<std::string> temps;
  for (size_t i = 0; i < a.links.size(); ++i) {
    const std::string t = temp_pin(dir, b, i);
    ::unlink(t.c_str());  // a crashed start-up's leftover
    if (bpf_obj_pin(bpf_link__fd(a.links[i].get()), t.c_str()) != 0) {
      const int e = errno;
      for (const auto& done : temps) ::unlink(done.c_str());
      *why = "pin failed: " + t + ": " + errno_name(e);
      return false;
    }
    temps.push_back(t);
  }
  // 2. Ours run: retire every other owner link pinned here.
  for (const auto& p : owner_pins_in(dir)) {
    bool ours = false;
    for (const auto& t : temps) ours = ours || p == t;
    if (ours) continue;
    remove_link_pin(p);
    replaced_.push_back(p);
  }
  // 3. Final names. Should a rename fail, the temporary pin still holds the
  // link (and is found by the next daemon and by teardown).
  for (size_t i = 0; i < temps.size(); ++i) {
    const std::string f = final_pin(dir, b, i);
    if (::rename(temps[i].c_str(), f.c_str()) == 0) {
      pins_.push_back(f);
    } else {
      logging::get(logging::Subsystem::kBpf)
          .warn("owner probes: cannot rename {} to {}: {}", temps[i], f, std::strerror(errno));
      pins_.push_back(temps[i]);
    }
  }
  return true;
}

OwnerProbeCounters OwnerProbes::counters() const {
  OwnerProbeCounters c;
  if (!active_ || !attached_.skel) return c;
  uint64_t v[TW_OWNER_CNT_MAX] = {};
  read_percpu_u64_array(bpf_map__fd(attached_.skel->maps.owner_counters), v, TW_OWNER_CNT_MAX);
  c.recorded = v[TW_OWNER_CNT_RECORDED];
  c.storage_failures = v[TW_OWNER_CNT_STORAGE_FAIL];
  c.tuple_failures = v[TW_OWNER_CNT_TUPLE_FAIL];
  c.unsupported_family = v[TW_OWNER_CNT_FAMILY];
  c.no_socket = v[TW_OWNER_CNT_NO_SOCK];
  return c;
}

}  // namespace tlswall::agent::attribution
