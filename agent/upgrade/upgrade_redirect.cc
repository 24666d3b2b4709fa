#include "agent/upgrade/upgrade_redirect.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <stdexcept>
#include <thread>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "agent/bpf_classifier.h"
#include "logging/log.h"
#include "upgrade_redirect.skel.h"

namespace tlswall::agent::upgrade {
namespace {

constexpr const char* kLinkPinPrefix = "upgrade_link_";
constexpr const char* kMapPinPrefix = "twu_";
constexpr uint32_t kLinkPinVersion = 1;
#ifndef SO_NETNS_COOKIE
constexpr int SO_NETNS_COOKIE = 71;
#endif

std::string errstr(int e) { return std::strerror(e); }

// ---- compile ----

struct Prefix {
  int family;  // 4 or 6
  uint8_t addr[16];
  uint8_t len;
};

void mask_to(uint8_t* addr, size_t bytes, uint8_t len) {
  for (size_t i = 0; i < bytes; ++i) {
    const int keep = std::clamp(static_cast<int>(len) - static_cast<int>(i * 8), 0, 8);
    addr[i] &= static_cast<uint8_t>(keep == 8 ? 0xff : (0xff00 >> keep) & 0xff);
  }
}

Prefix parse_cidr(const std::string& text, uint32_t rule_id) {
  auto bad = [&](const std::string& why) {
    return std::invalid_argument("upgrade rule " + std::to_string(rule_id) + ": destination \"" +
                                 text + "\": " + why);
  };
  Prefix p{};
  const auto slash = text.find('/');
  const std::string addr = text.substr(0, slash);
  int max_len = 0;
  if (inet_pton(AF_INET, addr.c_str(), p.addr) == 1) {
    p.family = 4;
    max_len = 32;
  } else if (inet_pton(AF_INET6, addr.c_str(), p.addr) == 1) {
    p.family = 6;
    max_len = 128;
    in6_addr a{};
    std::memcpy(&a, p.addr, 16);
    if (IN6_IS_ADDR_V4MAPPED(&a)) throw bad("IPv4-mapped prefix: write it as IPv4");
  } else {
    throw bad("not an IPv4 or IPv6 address");
  }
  int len = max_len;
  if (slash != std::string::npos) {
    const std::string l = text.substr(slash + 1);
    if (l.empty() || l.size() > 3 || !std::all_of(l.begin(), l.end(), ::isdigit)) {
      throw bad("bad prefix length");
    }
    len = std::stoi(l);
    if (len > max_len) throw bad("prefix length above " + std::to_string(max_len));
  }
  p.len = static_cast<uint8_t>(len);
  mask_to(p.addr, p.family == 4 ? 4 : 16, p.len);
  return p;
}

// Does prefix `outer` contain prefix `inner` (same family)?
bool contains(const Prefix& outer, const Prefix& inner) {
  if (outer.len > inner.len) return false;
  uint8_t a[16];
  std::memcpy(a, inner.addr, 16);
  mask_to(a, outer.family == 4 ? 4 : 16, outer.len);
  return std::memcmp(a, outer.addr, outer.family == 4 ? 4 : 16) == 0;
}

// [first, last] as the fewest (port, prefix length) prefixes.
void range_to_prefixes(uint32_t first, uint32_t last,
                       std::vector<std::pair<uint16_t, uint8_t>>* out) {
  while (first <= last) {
    uint32_t size = 1;
    uint8_t len = 16;
    while (len > 0 && (first & (size * 2 - 1)) == 0 && first + size * 2 - 1 <= last) {
      size *= 2;
      --len;
    }
    out->emplace_back(static_cast<uint16_t>(first), len);
    first += size;
  }
}

}  // namespace

CompiledSelection compile_selection(const UpgradeSelection& sel) {
  CompiledSelection out;
  std::set<uint32_t> ids;
  struct Entry {
    Prefix p;
    size_t rule;
  };
  std::vector<Entry> entries;
  for (size_t i = 0; i < sel.rules.size(); ++i) {
    const UpgradeRuleSpec& r = sel.rules[i];
    const std::string name = "upgrade rule " + std::to_string(r.rule_id);
    if (!ids.insert(r.rule_id).second) throw std::invalid_argument(name + ": rule id used twice");
    if (r.cidrs.empty()) throw std::invalid_argument(name + ": no destination");
    if (r.ports.empty()) throw std::invalid_argument(name + ": no port");
    for (const auto& pr : r.ports) {
      if (pr.first > pr.last) {
        throw std::invalid_argument(name + ": port range " + std::to_string(pr.first) + "-" +
                                    std::to_string(pr.last) + " is backwards");
      }
    }
    for (const auto& c : r.comms) {
      if (c.empty() || c.size() >= TWU_COMM_LEN || c.find('\0') != std::string::npos) {
        throw std::invalid_argument(name + ": comm \"" + c + "\" must be 1..15 bytes");
      }
    }
    for (const auto& [id, level] : r.cgroups) {
      if (level >= TWU_MAX_CGROUP_LEVEL) {
        throw std::invalid_argument(name + ": cgroup at level " + std::to_string(level) +
                                    " is deeper than the " +
                                    std::to_string(TWU_MAX_CGROUP_LEVEL - 1) + " levels supported");
      }
      if (id == 0) throw std::invalid_argument(name + ": cgroup id 0");
    }
    if (!r.cgroups.empty() && !r.cgroup_filter) {
      throw std::invalid_argument(name + ": cgroups listed without cgroup_filter");
    }
    if (!r.exes.empty() && !r.exe_filter) {
      throw std::invalid_argument(name + ": executables listed without exe_filter");
    }
    for (const auto& c : r.cidrs) entries.push_back({parse_cidr(c, r.rule_id), i});
  }

  // Destination classes: every distinct prefix maps to the set of rules
  // whose prefixes contain it (the LPM answers the longest, so it must
  // stand for every shorter one that also matches).
  std::map<std::vector<size_t>, uint16_t> classes;
  std::set<std::tuple<int, std::vector<uint8_t>, uint8_t>> seen;
  for (const Entry& e : entries) {
    const size_t bytes = e.p.family == 4 ? 4 : 16;
    if (!seen.emplace(e.p.family, std::vector<uint8_t>(e.p.addr, e.p.addr + bytes), e.p.len)
             .second) {
      continue;
    }
    std::set<size_t> rules;
    for (const Entry& o : entries) {
      if (o.p.family == e.p.family && contains(o.p, e.p)) rules.insert(o.rule);
    }
    const std::vector<size_t> key(rules.begin(), rules.end());
    auto it = classes.find(key);
    if (it == classes.end()) {
      if (classes.size() >= TWU_MAX_CLASSES) {
        throw std::invalid_argument("upgrade selection: more than 65535 destination classes");
      }
      it = classes.emplace(key, static_cast<uint16_t>(classes.size())).first;
    }
    if (e.p.family == 4) {
      CompiledSelection::Dest4 d{};
      std::memcpy(d.addr, e.p.addr, 4);
      d.prefix_len = e.p.len;
      d.class_id = it->second;
      out.v4.push_back(d);
    } else {
      CompiledSelection::Dest6 d{};
      std::memcpy(d.addr, e.p.addr, 16);
      d.prefix_len = e.p.len;
      d.class_id = it->second;
      out.v6.push_back(d);
    }
  }
  if (out.v4.size() > TWU_MAX_PREFIXES || out.v6.size() > TWU_MAX_PREFIXES) {
    throw std::invalid_argument("upgrade selection: more than " + std::to_string(TWU_MAX_PREFIXES) +
                                " prefixes in one family");
  }

  // Ports of each class: the earliest rule of the class that lists the
  // port owns it; runs of one owner become port prefixes.
  std::vector<int> owner(65536);
  for (const auto& [rules, class_id] : classes) {
    std::fill(owner.begin(), owner.end(), -1);
    for (auto it = rules.rbegin(); it != rules.rend(); ++it) {  // earliest written last
      for (const auto& pr : sel.rules[*it].ports) {
        for (uint32_t p = pr.first; p <= pr.last; ++p) owner[p] = static_cast<int>(*it);
      }
    }
    uint32_t start = 0;
    while (start < 65536) {
      uint32_t end = start;
      while (end + 1 < 65536 && owner[end + 1] == owner[start]) ++end;
      if (owner[start] >= 0) {
        const UpgradeRuleSpec& r = sel.rules[static_cast<size_t>(owner[start])];
        twu_rule v{};
        v.rule_id = r.rule_id;
        v.flags = (r.uids.empty() ? 0 : TWU_RULE_UID) | (r.comms.empty() ? 0 : TWU_RULE_COMM);
        if (r.cgroup_filter) {
          v.flags |= TWU_RULE_CGROUP;
          for (const auto& [id, level] : r.cgroups) v.flags |= 1u << (TWU_RULE_LEVEL_SHIFT + level);
        }
        if (r.exe_filter) v.flags |= TWU_RULE_EXE;
        std::vector<std::pair<uint16_t, uint8_t>> prefixes;
        range_to_prefixes(start, end, &prefixes);
        for (const auto& [port, len] : prefixes) out.ports.push_back({class_id, port, len, v});
      }
      start = end + 1;
    }
  }
  if (out.ports.size() > TWU_MAX_PORT_ROWS) {
    throw std::invalid_argument("upgrade selection: more than " +
                                std::to_string(TWU_MAX_PORT_ROWS) + " port rows");
  }
  for (const auto& r : sel.rules) {
    for (uint32_t uid : std::set<uint32_t>(r.uids.begin(), r.uids.end())) {
      out.uids.emplace_back(r.rule_id, uid);
    }
    for (const auto& c : std::set<std::string>(r.comms.begin(), r.comms.end())) {
      out.comms.emplace_back(r.rule_id, c);
    }
    std::set<uint64_t> ids_seen;
    for (const auto& [id, level] : r.cgroups) {
      if (ids_seen.insert(id).second) out.cgroups.emplace_back(r.rule_id, id);
    }
    for (const auto& [dev, ino] :
         std::set<std::pair<uint32_t, uint64_t>>(r.exes.begin(), r.exes.end())) {
      out.exes.push_back({r.rule_id, dev, ino});
    }
  }
  if (out.uids.size() > TWU_MAX_OWNER_KEYS || out.comms.size() > TWU_MAX_OWNER_KEYS ||
      out.cgroups.size() > TWU_MAX_OWNER_KEYS || out.exes.size() > TWU_MAX_OWNER_KEYS) {
    throw std::invalid_argument("upgrade selection: more than " +
                                std::to_string(TWU_MAX_OWNER_KEYS) +
                                " uid, comm, cgroup or executable rows");
  }
  return out;
}

// ---- loader ----

void UpgradeRedirect::SkelDeleter::operator()(upgrade_redirect* s) const {
  upgrade_redirect__destroy(s);
}
void UpgradeRedirect::LinkDeleter::operator()(bpf_link* l) const { bpf_link__destroy(l); }

std::string UpgradeRedirect::link_pin_name(const std::string& program) {
  return kLinkPinPrefix + program + "_v" + std::to_string(kLinkPinVersion);
}

std::vector<std::string> UpgradeRedirect::remove_pins(const std::string& pin_dir) {
  std::vector<std::string> removed;
  if (pin_dir.empty()) return removed;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(pin_dir, ec)) {
    const std::string name = e.path().filename().string();
    const std::string path = e.path().string();
    if (name.rfind(kLinkPinPrefix, 0) == 0) {
      OwnedFd fd(bpf_obj_get(path.c_str()));
      ::unlink(path.c_str());
      if (fd.get() >= 0) bpf_link_detach(fd.get());
      removed.push_back(path);
    } else if (name.rfind(kMapPinPrefix, 0) == 0) {
      ::unlink(path.c_str());
      removed.push_back(path);
    }
  }
  return removed;
}

UpgradeRedirect::UpgradeRedirect(const UpgradeRedirectOptions& opts) : opts_(opts) {
  if (opts_.cgroup.empty() || opts_.cgroup[0] != '/') {
    throw std::invalid_argument("upgrade redirect: cgroup must be an absolute path, got \"" +
                                opts_.cgroup + "\"");
  }
  if (!opts_.pin_dir.empty() && opts_.pin_dir[0] != '/') {
    throw std::invalid_argument("upgrade redirect: pin_dir must be absolute: " + opts_.pin_dir);
  }
  if (opts_.proxy_port_v4 == 0 || opts_.proxy_port_v6 == 0) {
    throw std::invalid_argument("upgrade redirect: both proxy ports are required");
  }
  if (opts_.proxy_uid == 0) {
    throw std::invalid_argument("upgrade redirect: the proxy's uid is required (never root)");
  }
  if (opts_.max_connections == 0) {
    throw std::invalid_argument("upgrade redirect: max_connections must be positive");
  }
  route_libbpf_logs();
  auto& log = logging::get(logging::Subsystem::kBpf);

  if (!opts_.pin_dir.empty()) {
    struct statfs fs {};
    if (::statfs(opts_.pin_dir.c_str(), &fs) != 0 ||
        static_cast<unsigned long>(fs.f_type) != BPF_FS_MAGIC) {
      throw std::runtime_error("upgrade redirect: pin dir " + opts_.pin_dir + " is not on bpffs");
    }
  }

  skel_.reset(upgrade_redirect__open());
  if (!skel_) throw std::runtime_error("upgrade redirect: open failed: " + errstr(errno));
  skel_->rodata->proxy_port4 = opts_.proxy_port_v4;
  skel_->rodata->proxy_port6 = opts_.proxy_port_v6;
  skel_->rodata->proxy_uid = opts_.proxy_uid;
  if (opts_.proxy_netns_only) {
    OwnedFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    uint64_t cookie = 0;
    socklen_t len = sizeof(cookie);
    if (s.get() >= 0 && ::getsockopt(s.get(), SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) == 0) {
      skel_->rodata->proxy_netns_cookie = cookie;
    } else {
      log.warn("upgrade redirect: no SO_NETNS_COOKIE ({}); proxy-side records in every netns",
               errstr(errno));
    }
  }
  bpf_map__set_max_entries(skel_->maps.twu_conns, opts_.max_connections);
  bpf_map__set_max_entries(skel_->maps.twu_peers, opts_.max_connections);
  if (!opts_.pin_dir.empty()) {
    bpf_map* m = nullptr;
    bpf_object__for_each_map(m, skel_->obj) {
      const std::string name = bpf_map__name(m);
      if (name.rfind(kMapPinPrefix, 0) != 0) continue;  // .rodata
      const std::string path = opts_.pin_dir + "/" + name + "_v" + std::to_string(TWU_SCHEMA);
      if (bpf_map__set_pin_path(m, path.c_str()) != 0) {
        throw std::runtime_error("upgrade redirect: cannot set pin path " + path);
      }
    }
  }
  if (int err = upgrade_redirect__load(skel_.get()); err != 0) {
    throw std::runtime_error("upgrade redirect: load failed: " + errstr(-err) +
                             " (the verifier log is in the bpf logger)");
  }

  generation_map_len_ = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  void* mem = ::mmap(nullptr, generation_map_len_, PROT_READ | PROT_WRITE, MAP_SHARED,
                     bpf_map__fd(skel_->maps.twu_state), 0);
  if (mem == MAP_FAILED) {
    throw std::runtime_error("upgrade redirect: cannot mmap twu_state: " + errstr(errno));
  }
  generation_word_ = static_cast<uint64_t*>(mem);

  try {
    attach_all();
    pin_links();
  } catch (...) {
    links_.clear();  // detaches whatever was attached
    attached_.clear();
    for (const auto& p : pins_) ::unlink(p.c_str());
    pins_.clear();
    ::munmap(generation_word_, generation_map_len_);
    generation_word_ = nullptr;
    throw;
  }
  log.info("upgrade redirect: attached to {} (proxy 127.0.0.1:{}, [::1]:{}, proxy uid {})",
           opts_.cgroup, opts_.proxy_port_v4, opts_.proxy_port_v6, opts_.proxy_uid);
}

UpgradeRedirect::~UpgradeRedirect() {
  links_.clear();
  if (generation_word_) ::munmap(generation_word_, generation_map_len_);
}

void UpgradeRedirect::attach_all() {
  OwnedFd cg(::open(opts_.cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (cg.get() < 0) {
    throw std::runtime_error("upgrade redirect: cannot open cgroup " + opts_.cgroup + ": " +
                             errstr(errno));
  }
  bpf_program* progs[] = {skel_->progs.twu_connect4, skel_->progs.twu_connect6,
                          skel_->progs.twu_sock_ops, skel_->progs.twu_getpeername4,
                          skel_->progs.twu_getpeername6};
  for (bpf_program* p : progs) {
    bpf_link* l = bpf_program__attach_cgroup(p, cg.get());
    if (!l) {
      const int e = errno;
      throw std::runtime_error(std::string("upgrade redirect: attach ") + bpf_program__name(p) +
                               " to " + opts_.cgroup + " failed: " + errstr(e) +
                               (e == EBADF ? " (not a cgroup v2 directory?)" : ""));
    }
    links_.emplace_back(l);
    attached_.push_back(bpf_program__name(p));
  }
}

// Pins this instance's links (temporary names first), then retires the
// upgrade links a previous daemon pinned, then takes the final names. Both
// run for a moment, which is harmless: the second connect hook sees the
// proxy address, which no selection holds.
void UpgradeRedirect::pin_links() {
  if (opts_.pin_dir.empty()) return;
  std::vector<std::string> temps;
  for (size_t i = 0; i < links_.size(); ++i) {
    const std::string t = opts_.pin_dir + "/" + kLinkPinPrefix + attached_[i] + "_new_v" +
                          std::to_string(kLinkPinVersion);
    ::unlink(t.c_str());
    if (bpf_obj_pin(bpf_link__fd(links_[i].get()), t.c_str()) != 0) {
      const int e = errno;
      for (const auto& done : temps) ::unlink(done.c_str());
      throw std::runtime_error("upgrade redirect: pin " + t + " failed: " + errstr(e));
    }
    temps.push_back(t);
  }
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(opts_.pin_dir, ec)) {
    const std::string path = e.path().string();
    if (e.path().filename().string().rfind(kLinkPinPrefix, 0) != 0) continue;
    if (std::find(temps.begin(), temps.end(), path) != temps.end()) continue;
    OwnedFd fd(bpf_obj_get(path.c_str()));
    ::unlink(path.c_str());
    if (fd.get() >= 0) bpf_link_detach(fd.get());
  }
  for (size_t i = 0; i < temps.size(); ++i) {
    const std::string f = opts_.pin_dir + "/" + link_pin_name(attached_[i]);
    pins_.push_back(::rename(temps[i].c_str(), f.c_str()) == 0 ? f : temps[i]);
  }
}

uint64_t UpgradeRedirect::generation() const {
  return __atomic_load_n(generation_word_, __ATOMIC_ACQUIRE);
}

void UpgradeRedirect::clear_slot(uint32_t slot) {
  auto sweep = [slot](int fd, size_t key_size, auto slot_of) {
    std::vector<uint8_t> key(key_size), next(key_size);
    std::vector<std::vector<uint8_t>> doomed;
    void* prev = nullptr;
    while (bpf_map_get_next_key(fd, prev, next.data()) == 0) {
      if (slot_of(next.data()) == slot) doomed.push_back(next);
      key = next;
      prev = key.data();
    }
    for (auto& k : doomed) bpf_map_delete_elem(fd, k.data());
  };
  auto byte4 = [](const uint8_t* k) { return static_cast<uint32_t>(k[4]); };
  auto word0 = [](const uint8_t* k) {
    uint32_t s;
    std::memcpy(&s, k, 4);
    return s;
  };
  sweep(bpf_map__fd(skel_->maps.twu_lpm4), sizeof(twu_lpm4_key), byte4);
  sweep(bpf_map__fd(skel_->maps.twu_lpm6), sizeof(twu_lpm6_key), byte4);
  sweep(bpf_map__fd(skel_->maps.twu_ports), sizeof(twu_port_key), byte4);
  sweep(bpf_map__fd(skel_->maps.twu_uids), sizeof(twu_uid_key), word0);
  sweep(bpf_map__fd(skel_->maps.twu_comms), sizeof(twu_comm_key), word0);
  sweep(bpf_map__fd(skel_->maps.twu_cgroups), sizeof(twu_cgroup_key), word0);
  sweep(bpf_map__fd(skel_->maps.twu_exes), sizeof(twu_exe_key), word0);
}

uint64_t UpgradeRedirect::publish(const UpgradeSelection& sel) {
  const CompiledSelection c = compile_selection(sel);  // throws before any write
  const uint64_t next = generation() + 1;
  const uint32_t slot = TWU_SLOT_OF(next);
  if (last_flip_ != std::chrono::steady_clock::time_point{}) {
    const auto since = std::chrono::steady_clock::now() - last_flip_;
    if (since < kSlotQuiesce) std::this_thread::sleep_for(kSlotQuiesce - since);
  }
  auto put = [](int fd, const void* k, const void* v, const char* what) {
    if (bpf_map_update_elem(fd, k, v, BPF_ANY) != 0) {
      throw std::runtime_error(std::string("upgrade redirect: cannot write ") + what + ": " +
                               errstr(errno));
    }
  };
  // Invalidate the idle slot first: a half-written slot is never used.
  const twu_slot_meta empty{};
  put(bpf_map__fd(skel_->maps.twu_slots), &slot, &empty, "slot table");
  clear_slot(slot);
  for (const auto& d : c.v4) {
    twu_lpm4_key k{};
    k.prefixlen = 8u + d.prefix_len;
    k.slot = static_cast<__u8>(slot);
    std::memcpy(k.addr, d.addr, 4);
    const twu_dest_value v{d.class_id, {}};
    put(bpf_map__fd(skel_->maps.twu_lpm4), &k, &v, "IPv4 destinations");
  }
  for (const auto& d : c.v6) {
    twu_lpm6_key k{};
    k.prefixlen = 8u + d.prefix_len;
    k.slot = static_cast<__u8>(slot);
    std::memcpy(k.addr, d.addr, 16);
    const twu_dest_value v{d.class_id, {}};
    put(bpf_map__fd(skel_->maps.twu_lpm6), &k, &v, "IPv6 destinations");
  }
  for (const auto& p : c.ports) {
    twu_port_key k{};
    k.prefixlen = 8u + 16u + p.prefix_len;
    k.slot = static_cast<__u8>(slot);
    k.class_id[0] = static_cast<__u8>(p.class_id >> 8);
    k.class_id[1] = static_cast<__u8>(p.class_id & 0xff);
    k.port[0] = static_cast<__u8>(p.port >> 8);
    k.port[1] = static_cast<__u8>(p.port & 0xff);
    put(bpf_map__fd(skel_->maps.twu_ports), &k, &p.rule, "ports");
  }
  const uint8_t one = 1;
  for (const auto& [rule, uid] : c.uids) {
    const twu_uid_key k{slot, rule, uid};
    put(bpf_map__fd(skel_->maps.twu_uids), &k, &one, "uid filter");
  }
  for (const auto& [rule, comm] : c.comms) {
    twu_comm_key k{};
    k.slot = slot;
    k.rule_id = rule;
    std::memcpy(k.comm, comm.data(), comm.size());
    put(bpf_map__fd(skel_->maps.twu_comms), &k, &one, "comm filter");
  }
  for (const auto& [rule, id] : c.cgroups) {
    const twu_cgroup_key k{slot, rule, id};
    put(bpf_map__fd(skel_->maps.twu_cgroups), &k, &one, "cgroup filter");
  }
  for (const auto& e : c.exes) {
    const twu_exe_key k{slot, e.rule_id, e.ino, e.dev, 0};
    put(bpf_map__fd(skel_->maps.twu_exes), &k, &one, "executable filter");
  }
  const twu_slot_meta meta{next};
  put(bpf_map__fd(skel_->maps.twu_slots), &slot, &meta, "slot table");
  __atomic_store_n(generation_word_, next, __ATOMIC_RELEASE);
  last_flip_ = std::chrono::steady_clock::now();
  return next;
}

std::optional<OriginalDestination> UpgradeRedirect::take(const sockaddr_storage& peer) {
  twu_peer_key k{};
  if (peer.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&peer);
    k.addr[10] = k.addr[11] = 0xff;
    std::memcpy(k.addr + 12, &a->sin_addr, 4);
    k.port = a->sin_port;
  } else if (peer.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&peer);
    std::memcpy(k.addr, &a->sin6_addr, 16);
    k.port = a->sin6_port;
  } else {
    return std::nullopt;
  }
  twu_conn c{};
  if (bpf_map_lookup_and_delete_elem(bpf_map__fd(skel_->maps.twu_peers), &k, &c) != 0) {
    return std::nullopt;
  }
  OriginalDestination o;
  if (c.family == 4) {
    auto* d = reinterpret_cast<sockaddr_in*>(&o.destination);
    d->sin_family = AF_INET;
    std::memcpy(&d->sin_addr, c.daddr + 12, 4);
    d->sin_port = c.dport;
  } else {
    auto* d = reinterpret_cast<sockaddr_in6*>(&o.destination);
    d->sin6_family = AF_INET6;
    std::memcpy(&d->sin6_addr, c.daddr, 16);
    d->sin6_port = c.dport;
  }
  o.rule_id = c.rule_id;
  o.generation = c.generation;
  o.pid = c.pid;
  o.tid = c.tid;
  o.uid = c.uid;
  o.gid = c.gid;
  o.comm.assign(c.comm, strnlen(c.comm, sizeof(c.comm)));
  o.cgroup_id = c.cgroup_id;
  o.socket_cookie = c.cookie;
  o.client_v4_mapped = (c.flags & TWU_CONN_V4MAPPED) != 0;
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  const uint64_t now_ns =
      static_cast<uint64_t>(now.tv_sec) * 1000000000ull + static_cast<uint64_t>(now.tv_nsec);
  o.age = std::chrono::nanoseconds(now_ns > c.connect_ns ? now_ns - c.connect_ns : 0);
  return o;
}

UpgradeRedirectCounters UpgradeRedirect::counters() const {
  UpgradeRedirectCounters c;
  uint64_t v[TWU_CNT_MAX] = {};
  read_percpu_u64_array(bpf_map__fd(skel_->maps.twu_counters), v, TWU_CNT_MAX);
  c.redirected = v[TWU_CNT_REDIRECTED];
  c.proxy_own = v[TWU_CNT_PROXY_OWN];
  c.map_full = v[TWU_CNT_MAP_FULL];
  c.owner_filtered = v[TWU_CNT_OWNER_FILTERED];
  c.peer_recorded = v[TWU_CNT_PEER_RECORDED];
  c.getpeername = v[TWU_CNT_GETPEERNAME];
  c.refused = v[TWU_CNT_REFUSED];
  c.other_netns = v[TWU_CNT_OTHER_NETNS];
  return c;
}

}  // namespace tlswall::agent::upgrade
