#include "agent/bpf_classifier.h"

#include <net/if.h>
#include <net/if_arp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstring>
#include <stdexcept>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "logging/log.h"
#include "tc_classifier.skel.h"

namespace tlswall::agent {
namespace {

// 'T','W' in the handle makes our filter recognisable in `tc filter show`.
constexpr uint32_t kTcHandle = 0x7477;
constexpr uint32_t kTcPriority = 1;

std::string errstr(int err) { return std::strerror(err < 0 ? -err : err); }

int libbpf_print(enum libbpf_print_level level, const char* fmt, va_list args) {
  // Verifier logs are long: size the buffer, then log line by line.
  va_list copy;
  va_copy(copy, args);
  const int n = std::vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  if (n <= 0) return 0;
  std::string msg(static_cast<size_t>(n) + 1, '\0');
  std::vsnprintf(msg.data(), msg.size(), fmt, args);
  msg.resize(static_cast<size_t>(n));
  auto& log = logging::get(logging::Subsystem::kBpf);
  size_t start = 0;
  while (start < msg.size()) {
    size_t end = msg.find('\n', start);
    if (end == std::string::npos) end = msg.size();
    const std::string line = msg.substr(start, end - start);
    start = end + 1;
    if (line.empty()) continue;
    switch (level) {
      case LIBBPF_WARN:
        log.warn("{}", line);
        break;
      case LIBBPF_INFO:
        log.info("{}", line);
        break;
      default:
        log.debug("{}", line);
        break;
    }
  }
  return n;
}

}  // namespace

void route_libbpf_logs() {
  static std::atomic<bool> done{false};
  if (!done.exchange(true)) libbpf_set_print(libbpf_print);
}

TcAttachment::TcAttachment(std::string ifname, int ifindex, int prog_fd)
    : ifname_(std::move(ifname)), ifindex_(ifindex), prog_fd_(prog_fd) {
  DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex_, .attach_point = BPF_TC_EGRESS);
  int err = bpf_tc_hook_create(&hook);
  if (err == 0) {
    created_qdisc_ = true;
  } else if (err != -EEXIST) {
    throw std::runtime_error("cannot create clsact qdisc on " + ifname_ + ": " + errstr(err));
  }
  DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = prog_fd_, .flags = BPF_TC_F_REPLACE,
                      .handle = kTcHandle, .priority = kTcPriority);
  err = bpf_tc_attach(&hook, &opts);
  if (err) {
    if (created_qdisc_) {
      hook.attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS);
      bpf_tc_hook_destroy(&hook);
    }
    throw std::runtime_error("cannot attach tc egress filter on " + ifname_ + ": " + errstr(err));
  }
  handle_ = opts.handle;
  priority_ = opts.priority;
}

bool TcAttachment::still_attached() const {
  DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex_, .attach_point = BPF_TC_EGRESS);
  DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .handle = handle_, .priority = priority_);
  if (bpf_tc_query(&hook, &opts) != 0) return false;
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(prog_fd_, &info, &len) != 0) return false;
  return opts.prog_id == info.id;
}

TcAttachment::~TcAttachment() {
  DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex_, .attach_point = BPF_TC_EGRESS);
  DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .handle = handle_, .priority = priority_);
  auto& log = logging::get(logging::Subsystem::kBpf);
  int err = bpf_tc_detach(&hook, &opts);
  if (err && err != -ENOENT && err != -ENODEV) {
    log.warn("detaching tc filter from {}: {}", ifname_, errstr(err));
  }
  if (created_qdisc_) {
    hook.attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS);
    err = bpf_tc_hook_destroy(&hook);
    if (err && err != -ENOENT && err != -ENODEV && err != -EINVAL) {
      log.warn("removing clsact qdisc from {}: {}", ifname_, errstr(err));
    }
  }
  log.info("detached from {}{}", ifname_,
           created_qdisc_ ? " (removed the clsact qdisc we added)" : "");
}

void TcClassifier::SkelDeleter::operator()(tc_classifier* s) const { tc_classifier__destroy(s); }

TcClassifier::TcClassifier(const ClassifierOptions& opts) {
  route_libbpf_logs();
  tc_classifier* raw = tc_classifier__open();
  if (!raw) throw std::runtime_error(std::string("cannot open BPF object: ") + errstr(errno));
  skel_.reset(raw);
  int err = bpf_map__set_max_entries(skel_->maps.tw_flows, opts.flow_table_entries);
  if (!err) err = bpf_map__set_max_entries(skel_->maps.tw_events, opts.ringbuf_bytes);
  if (err) throw std::runtime_error("cannot size BPF maps: " + errstr(err));
  err = tc_classifier__load(skel_.get());
  if (err) {
    throw std::runtime_error("cannot load the tc classifier into the kernel: " + errstr(err) +
                             " (details in the bpf log above)");
  }
}

TcClassifier::~TcClassifier() { detach_all(); }

LinkKind link_kind(const std::string& ifname) {
  ifreq ifr{};
  if (ifname.size() >= sizeof(ifr.ifr_name)) {
    throw std::runtime_error("interface name too long: " + ifname);
  }
  std::memcpy(ifr.ifr_name, ifname.c_str(), ifname.size() + 1);
  const int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) throw std::runtime_error("socket: " + errstr(errno));
  const int rc = ::ioctl(s, SIOCGIFHWADDR, &ifr);
  const int err = errno;
  ::close(s);
  if (rc != 0) throw std::runtime_error("cannot read link type of " + ifname + ": " + errstr(err));
  switch (ifr.ifr_hwaddr.sa_family) {
    case ARPHRD_ETHER:
    case ARPHRD_LOOPBACK:
      return LinkKind::kEthernet;
    case ARPHRD_NONE:
    case ARPHRD_RAWIP:
    case ARPHRD_TUNNEL:
    case ARPHRD_TUNNEL6:
    case ARPHRD_SIT:
    case ARPHRD_IPGRE:
    case ARPHRD_PPP:
      return LinkKind::kL3;
    default:
      throw std::runtime_error("interface " + ifname + " has link type " +
                               std::to_string(ifr.ifr_hwaddr.sa_family) +
                               ", which the classifier cannot parse (Ethernet or L3 only)");
  }
}

void TcClassifier::attach_egress(const std::string& ifname) {
  const unsigned idx = if_nametoindex(ifname.c_str());
  if (idx == 0) throw std::runtime_error("interface '" + ifname + "' not found");
  const LinkKind kind = link_kind(ifname);
  const int prog = kind == LinkKind::kEthernet ? egress_prog_fd()
                                               : bpf_program__fd(skel_->progs.tlswall_egress_l3);
  attachments_.push_back(std::make_unique<TcAttachment>(ifname, static_cast<int>(idx), prog));
  attachments_.back()->set_kind(kind);
  logging::get(logging::Subsystem::kBpf)
      .info("attached tc egress classifier to {} (ifindex {}){}", ifname, idx,
            attachments_.back()->created_qdisc() ? ", clsact qdisc created" : "");
}

void TcClassifier::detach_all() {
  while (!attachments_.empty()) attachments_.pop_back();
}

void TcClassifier::set_generation(uint64_t generation) {
  __atomic_store_n(&skel_->bss->tw_policy_generation, generation, __ATOMIC_SEQ_CST);
}

uint64_t TcClassifier::generation() const {
  return __atomic_load_n(&skel_->bss->tw_policy_generation, __ATOMIC_SEQ_CST);
}

bool read_percpu_u64_array(int map_fd, uint64_t* out, uint32_t n) {
  const int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) return false;
  std::vector<uint64_t> vals(static_cast<size_t>(ncpu));
  bool ok = true;
  for (uint32_t k = 0; k < n; ++k) {
    out[k] = 0;
    if (bpf_map_lookup_elem(map_fd, &k, vals.data()) != 0) {
      ok = false;
      continue;
    }
    for (uint64_t v : vals) out[k] += v;
  }
  return ok;
}

std::array<uint64_t, TW_CNT_MAX> TcClassifier::counters() const {
  std::array<uint64_t, TW_CNT_MAX> out{};
  read_percpu_u64_array(counters_fd(), out.data(), TW_CNT_MAX);
  return out;
}

std::array<uint64_t, TW_REASON_MAX> TcClassifier::drops_by_reason() const {
  std::array<uint64_t, TW_REASON_MAX> out{};
  read_percpu_u64_array(bpf_map__fd(skel_->maps.tw_drop_reasons), out.data(), TW_REASON_MAX);
  return out;
}

int TcClassifier::egress_prog_fd() const { return bpf_program__fd(skel_->progs.tlswall_egress); }
int TcClassifier::flows_fd() const { return bpf_map__fd(skel_->maps.tw_flows); }
int TcClassifier::lpm4_fd() const { return bpf_map__fd(skel_->maps.tw_lpm4); }
int TcClassifier::lpm6_fd() const { return bpf_map__fd(skel_->maps.tw_lpm6); }
int TcClassifier::ports_fd() const { return bpf_map__fd(skel_->maps.tw_ports); }
int TcClassifier::slots_fd() const { return bpf_map__fd(skel_->maps.tw_slots); }
int TcClassifier::counters_fd() const { return bpf_map__fd(skel_->maps.tw_counters); }
int TcClassifier::events_fd() const { return bpf_map__fd(skel_->maps.tw_events); }

}  // namespace tlswall::agent
