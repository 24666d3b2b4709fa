#include "agent/bpf_classifier.h"

#include <fcntl.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "logging/log.h"
#include "tc_classifier.skel.h"

extern "C" {
#include "abi/tlswall_abi_history.h"
}

namespace tlswall::agent {
namespace {

std::string errstr(int err) { return std::strerror(err < 0 ? -err : err); }

uint64_t unix_ns() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

spdlog::logger& log() { return logging::get(logging::Subsystem::kBpf); }

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

// A test seam: TLSWALL_FAULT_INJECT=<point> makes that step fail, to prove
// that a failed upgrade leaves the previous release enforcing.
void maybe_fail(const char* point) {
  const char* f = std::getenv("TLSWALL_FAULT_INJECT");
  if (f && std::strcmp(f, point) == 0) {
    throw std::runtime_error(std::string("injected failure at ") + point);
  }
}

struct NetnsId {
  uint64_t dev = 0, ino = 0;
  bool operator==(const NetnsId& o) const { return dev == o.dev && ino == o.ino; }
};

NetnsId netns_of(const char* path) {
  struct stat st {};
  if (::stat(path, &st) != 0) return {};
  return {static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
}

NetnsId current_netns() { return netns_of("/proc/self/ns/net"); }

uint32_t prog_id_of(int prog_fd) {
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  return bpf_obj_get_info_by_fd(prog_fd, &info, &len) == 0 ? info.id : 0;
}

bool map_compatible(int fd, const bpf_map* want) {
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) return false;
  return info.type == bpf_map__type(want) && info.key_size == bpf_map__key_size(want) &&
         info.value_size == bpf_map__value_size(want) &&
         info.max_entries == bpf_map__max_entries(want) &&
         info.map_flags == bpf_map__map_flags(want);
}

}  // namespace

void route_libbpf_logs() {
  static std::atomic<bool> done{false};
  if (!done.exchange(true)) libbpf_set_print(libbpf_print);
}

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

// The tc programs and their pin names.
struct TcProg {
  const char* pin;
  LinkKind kind;
  TcDirection dir;
};
constexpr TcProg kTcProgs[] = {
    {"prog_egress", LinkKind::kEthernet, TcDirection::kEgress},
    {"prog_ingress", LinkKind::kEthernet, TcDirection::kIngress},
    {"prog_egress_l3", LinkKind::kL3, TcDirection::kEgress},
    {"prog_ingress_l3", LinkKind::kL3, TcDirection::kIngress},
};

struct TcClassifier::Table {
  std::string name;
  bpf_map* map;
  uint32_t schema;
};

std::vector<TcClassifier::Table> TcClassifier::tables() {
  auto& m = skel_->maps;
  return {{"flows", m.tw_flows, TW_SCHEMA_FLOWS},
          {"tls_checks", m.tw_tls_checks, TW_SCHEMA_CHECKS},
          {"lpm4", m.tw_lpm4, TW_SCHEMA_POLICY},
          {"lpm6", m.tw_lpm6, TW_SCHEMA_POLICY},
          {"ports", m.tw_ports, TW_SCHEMA_POLICY},
          {"slots", m.tw_slots, TW_SCHEMA_POLICY},
          {"owner_groups", m.tw_owner_groups, TW_SCHEMA_POLICY},
          {"owner_uids", m.tw_owner_uids, TW_SCHEMA_POLICY},
          {"owner_comms", m.tw_owner_comms, TW_SCHEMA_POLICY},
          {"owner_cgroups", m.tw_owner_cgroups, TW_SCHEMA_POLICY},
          {"owners", m.tw_owners, TW_SCHEMA_OWNERS},
          {"owner_tuples", m.tw_owner_tuples, TW_SCHEMA_OWNERS},
          {"state", m.tw_state, TW_SCHEMA_STATE},
          {"counters", m.tw_counters, TW_SCHEMA_COUNTERS},
          {"drop_reasons", m.tw_drop_reasons, TW_SCHEMA_COUNTERS},
          {"events", m.tw_events, TW_SCHEMA_EVENTS}};
}

void TcClassifier::SkelDeleter::operator()(tc_classifier* s) const { tc_classifier__destroy(s); }

TcClassifier::TcClassifier(const ClassifierOptions& opts) : opts_(opts) {
  route_libbpf_logs();
  tc_classifier* raw = tc_classifier__open();
  if (!raw) throw std::runtime_error(std::string("cannot open BPF object: ") + errstr(errno));
  skel_.reset(raw);
  int err = bpf_map__set_max_entries(skel_->maps.tw_flows, opts.flow_table_entries);
  if (!err) err = bpf_map__set_max_entries(skel_->maps.tw_tls_checks, opts.flow_table_entries);
  if (!err) err = bpf_map__set_max_entries(skel_->maps.tw_events, opts.ringbuf_bytes);
  if (err) throw std::runtime_error("cannot size BPF maps: " + errstr(err));

  records_ = std::make_unique<PinnedRecords>(opts.pin_root);
  report_.previous = records_->previous();

  OwnedFd old_flows, old_counters, old_drops;
  uint32_t old_flows_schema = 0;
  for (const Table& t : tables()) {
    const std::string want = pin_path(opts.pin_root, t.name, t.schema);
    OwnedFd cur = open_pin(want);
    if (cur.get() >= 0 && map_compatible(cur.get(), t.map)) {
      err = bpf_map__reuse_fd(t.map, cur.get());
      if (err) throw std::runtime_error("cannot adopt " + want + ": " + errstr(err));
      report_.reused.push_back(t.name + "_v" + std::to_string(t.schema));
      continue;
    }
    report_.created.push_back(t.name + "_v" + std::to_string(t.schema));
    to_pin_.push_back(t.name);
    // What the new table replaces: the newest pin of any schema.
    const auto old = find_table_pins(opts.pin_root, t.name);
    for (const auto& [schema, path] : old) retire_.push_back(path);
    if (old.empty()) continue;
    OwnedFd newest = open_pin(old.back().second);
    if (t.name == "flows") {
      old_flows = std::move(newest);
      old_flows_schema = old.back().first;
    } else if (t.name == "counters") {
      old_counters = std::move(newest);
    } else if (t.name == "drop_reasons") {
      old_drops = std::move(newest);
    } else if (t.name == "events") {
      replaced_events_ = std::move(newest);
    }
  }

  if (old_flows.get() >= 0) {
    // The new program reads the old table on a miss (no flow is lost in
    // the switch); that needs the old table to have the previous layout.
    bpf_map_info info{};
    uint32_t len = sizeof(info);
    bpf_obj_get_info_by_fd(old_flows.get(), &info, &len);
    const bool adjacent =
        old_flows_schema == TW_SCHEMA_FLOWS || old_flows_schema + 1 == TW_SCHEMA_FLOWS;
    if (!adjacent || info.value_size != sizeof(tw_flow_state_prev) ||
        info.key_size != sizeof(tw_flow_key)) {
      throw std::runtime_error("no migration step from flows_v" + std::to_string(old_flows_schema) +
                               " to flows_v" + std::to_string(TW_SCHEMA_FLOWS) +
                               "; the running release stays in force");
    }
    err = bpf_map__reuse_fd(skel_->maps.tw_flows_prev, old_flows.get());
    if (err) throw std::runtime_error("cannot attach the previous flow table: " + errstr(err));
  }

  err = tc_classifier__load(skel_.get());
  if (err) {
    throw std::runtime_error("cannot load the tc classifier into the kernel: " + errstr(err) +
                             " (details in the bpf log above)");
  }
  for (const TcProg& p : kTcProgs) {
    prog_ids_[prog_index(p.kind, p.dir)] = prog_id_of(prog_fd_for(p.kind, p.dir));
  }
  generation_map_len_ = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  void* mem = mmap(nullptr, generation_map_len_, PROT_READ | PROT_WRITE, MAP_SHARED,
                   bpf_map__fd(skel_->maps.tw_state), 0);
  if (mem == MAP_FAILED) throw std::runtime_error("cannot mmap the state table: " + errstr(errno));
  generation_word_ = static_cast<uint64_t*>(mem);

  // The flow copy waits until after the switch (take_over): copied now, a
  // flow that progresses under the old program before the switch would keep
  // a stale copy here. Until the copy, the new program reads misses from the
  // old table.
  old_flows_ = std::move(old_flows);
  old_flows_schema_ = old_flows_schema;
  if (old_counters.get() >= 0 || old_drops.get() >= 0) {
    migrate_counters(old_counters.get(), old_drops.get());
  }

  if (report_.previous) {
    const uint64_t now = unix_ns();
    const uint64_t hb = report_.previous->heartbeat_unix_ns;
    report_.gap_ns = now > hb ? now - hb : 0;
    const uint64_t lost = counter(TW_CNT_EVENTS_LOST);
    const uint64_t seen = report_.previous->events_lost_reported;
    report_.events_lost_in_gap = lost > seen ? lost - seen : 0;
  }
}

TcClassifier::~TcClassifier() {
  if (reaper_link_) bpf_link__destroy(reaper_link_);
  if (generation_word_) munmap(generation_word_, generation_map_len_);
}

void TcClassifier::start_flow_reaper() {
  if (reaper_link_) return;
  bpf_link* link = bpf_program__attach(skel_->progs.tlswall_flow_reap);
  const int err = libbpf_get_error(link);
  if (err) {
    flow_reaper_ = "off: cannot attach tp_btf/tcp_destroy_sock: " + errstr(err);
    log().warn("flow reaper {}; finished flows stay until the flow table evicts them",
               flow_reaper_);
    return;
  }
  reaper_link_ = link;
  flow_reaper_ = "tp_btf/tcp_destroy_sock";
  log().info("flow reaper attached (tp_btf/tcp_destroy_sock)");
}

void TcClassifier::migrate_flows(int old_fd, uint32_t old_schema) {
  // Bulk copy now; the classifier's miss path covers what changes until
  // the switch. One conversion per schema step (abi/tlswall_abi_history.h).
  tw_flow_key key{}, next{};
  tw_flow_key* prev = nullptr;
  uint64_t copied = 0, failed = 0;
  const int new_fd = flows_fd();
  while (bpf_map_get_next_key(old_fd, prev, &next) == 0) {
    key = next;
    prev = &key;
    tw_flow_state_prev old{};
    if (bpf_map_lookup_elem(old_fd, &key, &old) != 0) continue;
    tw_flow_state cur{};
    tw_flow_from_prev(&cur, &old);
    if (bpf_map_update_elem(new_fd, &key, &cur, BPF_NOEXIST) == 0) {
      ++copied;
    } else if (errno != EEXIST) {
      ++failed;
    }
  }
  report_.migrated.push_back("flows_v" + std::to_string(old_schema) + " -> flows_v" +
                             std::to_string(TW_SCHEMA_FLOWS) + ": " + std::to_string(copied) +
                             " entries" +
                             (failed ? ", " + std::to_string(failed) + " did not fit" : ""));
}

void TcClassifier::migrate_counters(int old_counters_fd, int old_drops_fd) {
  // Counters carry over so totals stay monotonic across releases: the old
  // per-CPU values are added to this CPU slot of the new table. A release
  // with fewer counters has a shorter array: its counters are carried.
  auto carry = [](int from, int to, uint32_t n) {
    bpf_map_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(from, &info, &len) != 0) return;
    n = std::min(n, info.max_entries);
    std::vector<uint64_t> old(n, 0);
    if (!read_percpu_u64_array(from, old.data(), n)) return;
    const int ncpu = libbpf_num_possible_cpus();
    std::vector<uint64_t> vals(static_cast<size_t>(ncpu));
    for (uint32_t k = 0; k < n; ++k) {
      if (bpf_map_lookup_elem(to, &k, vals.data()) != 0) continue;
      vals[0] += old[k];
      bpf_map_update_elem(to, &k, vals.data(), BPF_ANY);
    }
  };
  if (old_counters_fd >= 0) carry(old_counters_fd, counters_fd(), TW_CNT_MAX);
  if (old_drops_fd >= 0) {
    carry(old_drops_fd, bpf_map__fd(skel_->maps.tw_drop_reasons), TW_REASON_MAX);
  }
  report_.migrated.push_back("counters carried over");
}

void TcClassifier::attach_one(Attachment& a, const std::vector<tw_iface_rec>& recorded) {
  bool created_before = false;
  for (const auto& r : recorded) {
    if (static_cast<int>(r.ifindex) == a.ifindex) created_before = r.created_qdisc;
  }
  // Egress first: the classifier judges every flow; ingress only answers
  // the flows egress put under deeper checks.
  bool created = false;
  for (const TcDirection dir : {TcDirection::kEgress, TcDirection::kIngress}) {
    created = tc_attach_or_replace(a.ifindex, a.ifname, prog_fd_for(a.kind, dir), dir) || created;
  }
  a.created_qdisc = created || created_before;
  tw_iface_rec rec{};
  rec.ifindex = static_cast<uint32_t>(a.ifindex);
  rec.created_qdisc = a.created_qdisc;
  rec.l3 = a.kind == LinkKind::kL3;
  std::strncpy(rec.name, a.ifname.c_str(), sizeof(rec.name) - 1);
  const NetnsId ns = current_netns();
  rec.netns_dev = ns.dev;
  rec.netns_ino = ns.ino;
  records_->put_iface(rec);
  log().info("tc egress and ingress on {} (ifindex {}): {}{}", a.ifname, a.ifindex,
             report_.previous ? "programs replaced in place" : "attached",
             a.created_qdisc ? ", clsact qdisc ours" : "");
}

bool TcClassifier::attach(const std::string& ifname, int ifindex) {
  for (const auto& a : attachments_) {
    if (a.ifindex == ifindex) return false;
  }
  Attachment a{ifname, ifindex, link_kind(ifname), false};
  attach_one(a, records_->ifaces());
  attachments_.push_back(a);
  return true;
}

bool TcClassifier::forget(int ifindex) {
  for (auto it = attachments_.begin(); it != attachments_.end(); ++it) {
    if (it->ifindex != ifindex) continue;
    records_->remove_iface(static_cast<uint32_t>(ifindex));
    log().info("{} (ifindex {}) is gone: its filter went with it", it->ifname, ifindex);
    attachments_.erase(it);
    return true;
  }
  return false;
}

void TcClassifier::renamed(int ifindex, const std::string& name) {
  for (auto& a : attachments_) {
    if (a.ifindex == ifindex) a.ifname = name;
  }
}

void TcClassifier::take_over(const std::vector<std::string>& ifnames,
                             const std::string& agent_version) {
  // Validate everything before touching any interface.
  std::vector<Attachment> want;
  for (const auto& ifn : ifnames) {
    const unsigned idx = if_nametoindex(ifn.c_str());
    if (idx == 0) throw std::runtime_error("interface '" + ifn + "' not found");
    want.push_back({ifn, static_cast<int>(idx), link_kind(ifn), false});
  }
  const auto recorded = records_->ifaces();
  maybe_fail("before-switch");

  // The switch: per interface one atomic filter replacement.
  std::vector<Attachment> done;
  try {
    for (auto& a : want) {
      attach_one(a, recorded);
      done.push_back(a);
    }
  } catch (...) {
    // Interfaces already switched run the new program with tables that are
    // complete; nothing is unpinned yet, so a retry (or the old release)
    // finds everything in place.
    attachments_ = done;
    throw;
  }
  attachments_ = done;

  // Interfaces the previous configuration named and this one does not (only
  // in this network namespace: an ifindex means nothing in another).
  const NetnsId here = current_netns();
  for (const auto& r : recorded) {
    if (!(NetnsId{r.netns_dev, r.netns_ino} == here)) continue;
    bool keep = false;
    for (const auto& a : attachments_) keep = keep || a.ifindex == static_cast<int>(r.ifindex);
    if (keep) continue;
    tc_detach(static_cast<int>(r.ifindex), r.name, r.created_qdisc);
    records_->remove_iface(r.ifindex);
    log().info("detached from {}: no longer configured", r.name);
  }

  // Pin what is new, then retire what it replaced.
  for (const Table& t : tables()) {
    const std::string path = pin_path(opts_.pin_root, t.name, t.schema);
    bool is_new = false;
    for (const auto& n : to_pin_) is_new = is_new || n == t.name;
    if (!is_new) continue;
    pin_replace(bpf_map__fd(t.map), path);
  }
  for (const auto& path : retire_) {
    bool current = false;
    for (const Table& t : tables()) {
      current = current || path == pin_path(opts_.pin_root, t.name, t.schema);
    }
    if (!current) ::unlink(path.c_str());
  }
  if (old_flows_.get() >= 0) {
    // Only entries the new table lacks: a flow the new program has already
    // seen (or converted on a miss) is newer than the old table's copy.
    migrate_flows(old_flows_.get(), old_flows_schema_);
  }
  for (const TcProg& p : kTcProgs) {
    pin_replace(prog_fd_for(p.kind, p.dir), pin_path(opts_.pin_root, p.pin, 1));
  }

  tw_meta m = report_.previous.value_or(tw_meta{});
  m.magic = TW_META_MAGIC;
  m.meta_schema = TW_SCHEMA_META;
  m.schema_flows = TW_SCHEMA_FLOWS;
  m.schema_policy = TW_SCHEMA_POLICY;
  m.schema_state = TW_SCHEMA_STATE;
  m.schema_counters = TW_SCHEMA_COUNTERS;
  m.schema_events = TW_SCHEMA_EVENTS;
  if (!report_.previous) m.first_started_unix_ns = unix_ns();
  m.heartbeat_unix_ns = unix_ns();
  std::memset(m.agent_version, 0, sizeof(m.agent_version));
  std::strncpy(m.agent_version, agent_version.c_str(), sizeof(m.agent_version) - 1);
  records_->write_meta(m);
}

bool TcClassifier::still_attached(const Attachment& a) const {
  for (const TcDirection dir : {TcDirection::kEgress, TcDirection::kIngress}) {
    if (!attached_here(a, dir)) return false;
  }
  return true;
}

bool TcClassifier::attached_here(const Attachment& a, TcDirection dir) const {
  const uint32_t id = tc_attached_prog_id(a.ifindex, dir);
  return id != 0 && id == prog_ids_[prog_index(a.kind, dir)];
}

bool TcClassifier::repair_attachments(
    const std::function<void(const std::string&, const std::string&)>& restored) {
  bool ok = true;
  for (auto& a : attachments_) {
    for (const TcDirection dir : {TcDirection::kEgress, TcDirection::kIngress}) {
      ok = repair_one(a, dir, restored) && ok;
    }
  }
  return ok;
}

bool TcClassifier::repair_one(
    Attachment& a, TcDirection dir,
    const std::function<void(const std::string&, const std::string&)>& restored) {
  const std::string side = tc_direction_name(dir);
  const int prog = prog_fd_for(a.kind, dir);
  if (attached_here(a, dir)) {
    // In place, but does another filter run before ours? It would see
    // (and could pass) every packet first.
    std::vector<TcFilterEntry> chain;
    try {
      chain = list_filters(a.ifindex, dir);
    } catch (const std::exception& e) {
      log().warn("cannot read the {} filters of {}: {}", side, a.ifname, e.what());
      return true;
    }
    const TcFilterEntry* first = first_filter(chain);
    if (!first ||
        (first->priority == TcFilterId::kPriority && first->handle == TcFilterId::kHandle)) {
      return true;
    }
    char handle[16];
    std::snprintf(handle, sizeof(handle), "%x", first->handle);
    const std::string why = "a foreign " + first->kind + " " + side + " filter (prio " +
                            std::to_string(first->priority) + ", handle 0x" + handle +
                            ") was put in front of ours";
    try {
      // A filter added at a priority goes first among its peers: take ours
      // out and put it back in front.
      tc_detach_one(a.ifindex, a.ifname, dir);
      tc_attach_or_replace(a.ifindex, a.ifname, prog, dir);
      const TcFilterEntry* now = first_filter(list_filters(a.ifindex, dir));
      if (now && now->priority == TcFilterId::kPriority && now->handle == TcFilterId::kHandle) {
        restored(a.ifname, why + "; ours runs first again");
        return true;
      }
      restored(a.ifname, why +
                             "; ours could NOT be moved in front (it runs at a lower "
                             "priority number?): remove the foreign filter");
    } catch (const std::exception& e) {
      log().error("cannot move the classifier in front on {} ({}): {}", a.ifname, side, e.what());
    }
    return false;
  }
  const unsigned idx = if_nametoindex(a.ifname.c_str());
  if (idx == 0) return false;  // the interface is gone; nothing to attach to
  const std::string why = tc_attached_prog_id(a.ifindex, dir) == 0
                              ? "our " + side + " filter (or its clsact qdisc) was removed"
                              : "another program replaced our " + side + " filter";
  try {
    a.ifindex = static_cast<int>(idx);
    if (tc_attach_or_replace(a.ifindex, a.ifname, prog, dir)) a.created_qdisc = true;
    restored(a.ifname, why);
    return true;
  } catch (const std::exception& e) {
    log().error("cannot restore the classifier on {} ({}): {}", a.ifname, side, e.what());
    return false;
  }
}

void TcClassifier::detach_all() {
  for (const auto& a : attachments_) {
    tc_detach(a.ifindex, a.ifname, a.created_qdisc);
    records_->remove_iface(static_cast<uint32_t>(a.ifindex));
    log().info("detached from {}{}", a.ifname,
               a.created_qdisc ? " (removed the clsact qdisc we added)" : "");
  }
  attachments_.clear();
}

void TcClassifier::set_generation(uint64_t generation) {
  __atomic_store_n(generation_word_, generation, __ATOMIC_SEQ_CST);
}

uint64_t TcClassifier::generation() const {
  return __atomic_load_n(generation_word_, __ATOMIC_SEQ_CST);
}

void TcClassifier::set_fail_closed(bool closed) {
  tw_meta m = records_->read_meta();
  m.fail_closed = closed ? 1 : 0;
  records_->write_meta(m);
}

void TcClassifier::heartbeat(uint64_t events_lost_reported, const std::string& policy_hash) {
  tw_meta m = records_->read_meta();
  m.heartbeat_unix_ns = unix_ns();
  m.events_lost_reported = events_lost_reported;
  m.policy_generation = generation();
  std::memset(m.policy_hash, 0, sizeof(m.policy_hash));
  std::strncpy(m.policy_hash, policy_hash.c_str(), sizeof(m.policy_hash) - 1);
  records_->write_meta(m);
}

// Sums element `key` of a per-CPU u64 array over all CPUs.
static bool sum_percpu_u64(int map_fd, uint32_t key, uint64_t* out) {
  static const int ncpu = libbpf_num_possible_cpus();
  *out = 0;
  if (ncpu <= 0) return false;
  std::vector<uint64_t> vals(static_cast<size_t>(ncpu));
  if (bpf_map_lookup_elem(map_fd, &key, vals.data()) != 0) return false;
  for (uint64_t v : vals) *out += v;
  return true;
}

bool read_percpu_u64_array(int map_fd, uint64_t* out, uint32_t n) {
  bool ok = true;
  for (uint32_t k = 0; k < n; ++k) ok = sum_percpu_u64(map_fd, k, &out[k]) && ok;
  return ok;
}

std::array<uint64_t, TW_CNT_MAX> TcClassifier::counters() const {
  std::array<uint64_t, TW_CNT_MAX> out{};
  read_percpu_u64_array(counters_fd(), out.data(), TW_CNT_MAX);
  return out;
}

uint64_t TcClassifier::counter(uint32_t which) const {
  uint64_t v = 0;
  if (which < TW_CNT_MAX) sum_percpu_u64(counters_fd(), which, &v);
  return v;
}

std::array<uint64_t, TW_REASON_MAX> TcClassifier::drops_by_reason() const {
  std::array<uint64_t, TW_REASON_MAX> out{};
  read_percpu_u64_array(bpf_map__fd(skel_->maps.tw_drop_reasons), out.data(), TW_REASON_MAX);
  return out;
}

int TcClassifier::egress_prog_fd() const { return prog_fd_for(LinkKind::kEthernet); }

int TcClassifier::prog_fd_for(LinkKind kind, TcDirection dir) const {
  const auto& p = skel_->progs;
  const bool eth = kind == LinkKind::kEthernet;
  if (dir == TcDirection::kEgress) {
    return bpf_program__fd(eth ? p.tlswall_egress : p.tlswall_egress_l3);
  }
  return bpf_program__fd(eth ? p.tlswall_ingress : p.tlswall_ingress_l3);
}

int TcClassifier::flows_fd() const { return bpf_map__fd(skel_->maps.tw_flows); }
int TcClassifier::tls_checks_fd() const { return bpf_map__fd(skel_->maps.tw_tls_checks); }
std::map<std::string, uint32_t> TcClassifier::table_schemas() {
  std::map<std::string, uint32_t> out;
  for (const Table& t : tables()) out[t.name] = t.schema;
  return out;
}

BpfPolicyMaps::Fds TcClassifier::policy_fds() const {
  const auto& m = skel_->maps;
  return {bpf_map__fd(m.tw_lpm4),         bpf_map__fd(m.tw_lpm6),
          bpf_map__fd(m.tw_ports),        bpf_map__fd(m.tw_slots),
          bpf_map__fd(m.tw_owner_groups), bpf_map__fd(m.tw_owner_uids),
          bpf_map__fd(m.tw_owner_comms),  bpf_map__fd(m.tw_owner_cgroups)};
}
int TcClassifier::owners_fd() const { return bpf_map__fd(skel_->maps.tw_owners); }
int TcClassifier::owner_tuples_fd() const { return bpf_map__fd(skel_->maps.tw_owner_tuples); }
int TcClassifier::counters_fd() const { return bpf_map__fd(skel_->maps.tw_counters); }
int TcClassifier::events_fd() const { return bpf_map__fd(skel_->maps.tw_events); }

namespace {

// Runs fn inside the network namespace `ns` (found among the named ones in
// /run/netns), then returns to ours. False if no such namespace is found.
bool in_netns(const NetnsId& ns, const std::function<void()>& fn) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/run/netns", ec)) {
    if (!(netns_of(e.path().c_str()) == ns)) continue;
    const int target = ::open(e.path().c_str(), O_RDONLY | O_CLOEXEC);
    const int home = ::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    bool ok = false;
    if (target >= 0 && home >= 0 && ::setns(target, CLONE_NEWNET) == 0) {
      fn();
      ok = ::setns(home, CLONE_NEWNET) == 0;
      if (!ok) throw std::runtime_error("cannot return to the original network namespace");
    }
    if (target >= 0) ::close(target);
    if (home >= 0) ::close(home);
    return ok;
  }
  return false;
}

}  // namespace

std::vector<std::string> teardown_pinned(const std::string& pin_root, bool open) {
  std::vector<std::string> out;
  {
    PinnedRecords records(pin_root);
    if (records.previous() && records.previous()->fail_closed && !open) {
      throw std::runtime_error(
          "this host is configured fail_mode = \"closed\": a teardown would stop all "
          "enforcement. Run `tlswallctl teardown --open` to remove it anyway.");
    }
    const NetnsId here = current_netns();
    for (const auto& r : records.ifaces()) {
      const NetnsId ns{r.netns_dev, r.netns_ino};
      const std::string what = std::string("detached from ") + r.name +
                               (r.created_qdisc ? " (and removed our clsact qdisc)" : "");
      auto detach = [&] { tc_detach(static_cast<int>(r.ifindex), r.name, r.created_qdisc); };
      if (ns.ino == 0) {
        out.push_back(std::string("not touching ") + r.name + ": its network namespace is unknown");
      } else if (ns == here) {
        detach();
        out.push_back(what);
      } else if (in_netns(ns, detach)) {
        out.push_back(what + " in its network namespace");
      } else {
        // Not among the named namespaces: gone (and the filter with it), or
        // unnamed. An ifindex here would name some other interface.
        out.push_back(std::string("not touching ") + r.name +
                      ": its network namespace is not here (gone, or unnamed)");
      }
    }
  }
  for (const auto& p : remove_all_pins(pin_root)) out.push_back("unpinned " + p);
  return out;
}

}  // namespace tlswall::agent
