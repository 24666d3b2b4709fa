// build_kernel_tables / port_range_prefixes (policy_kernel_tables.cc): the
// compiled rows turned into the classifier's two loop-free lookups,
//   address --LPM--> class (tw_dest_value), (class, port) --LPM--> verdict.
//
// The main check is a reference model: for several policies and many
// (address, port) pairs, the decision the kernel tables give (longest
// address prefix, then the longest port prefix of that class, as
// bpf/lib/policy.bpf.h looks them up) must equal the decision the compiled
// rows give directly (first rule row of the longest-matching prefix's
// boundaries whose range holds the port; exempt if an exemption row of that
// prefix holds it), and agree with the policy as written (boundaries,
// rules, exemptions containing the address and port). The decisions are
// those for an owner that no selector matches (e.g. forwarded traffic):
// rules and exemptions with owner selectors are left out of them, and
// their own tables are tested in policy_owner_selectors_test.cc.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "policy/policy.h"
#include "policy_test_support.h"

#ifndef TLSWALL_SOURCE_DIR
#error "TLSWALL_SOURCE_DIR must be defined by the build (tests/unit/CMakeLists.txt)"
#endif

namespace tlswall::policy {
namespace {

// ---- the compiler's intermediate rows (policy/compiled_rows.h) ----
// User space only since the kernel stopped scanning rule rows; no kernel
// map holds them, so this is no ABI, just the compiler's own invariants.
static_assert(TW_MAX_BOUNDARIES == 64 * TW_MASK_WORDS, "one mask bit per boundary");
static_assert(TW_MAX_EXEMPTIONS == 64 * TW_MASK_WORDS, "one mask bit per exemption");
static_assert(sizeof(tw_dest_class) == 2 * TW_MASK_WORDS * sizeof(__u64));
static_assert(offsetof(tw_rule_entry, port_lo) < offsetof(tw_rule_entry, port_hi));
static_assert(sizeof(tw_rule_entry::rule_id) == sizeof(tw_port_verdict::rule_id),
              "rule ids pass unchanged into the kernel verdict");
static_assert(sizeof(tw_rule_entry::boundary) == sizeof(tw_port_verdict::boundary));
static_assert(sizeof(tw_exempt_entry::exemption) == sizeof(tw_port_verdict::exemption));
// Every class comes from an address row, so the class limit can never be
// the binding one while the prefix limit holds.
static_assert(2 * TW_MAX_PREFIXES <= TW_MAX_CLASSES);

using Prefixes = std::vector<std::pair<uint16_t, uint8_t>>;
using std::chrono::system_clock;

system_clock::time_point Now() {
  std::tm tm{};
  tm.tm_year = 2026 - 1900;
  tm.tm_mon = 10;
  tm.tm_mday = 21;
  tm.tm_hour = 12;
  return system_clock::from_time_t(timegm(&tm));
}

Policy MustLoad(const std::string& text) {
  const auto r = load_policy_text("kt.toml", text, Now());
  if (!r.ok()) throw std::runtime_error("policy does not load:\n" + All(r));
  for (const auto& d : r.diagnostics) {
    EXPECT_NE(d.severity, Diagnostic::Severity::kError) << d.render();
  }
  return *r.policy;
}

// ============================ port_range_prefixes ============================

// The canonical cover: the maximal aligned blocks inside [lo, hi], found by
// walking the 16-bit port trie. It is the unique smallest prefix cover.
void Canonical(uint32_t first, int len, uint32_t lo, uint32_t hi, Prefixes& out) {
  const uint32_t last = first + (1u << (16 - len)) - 1;
  if (last < lo || first > hi) return;
  if (first >= lo && last <= hi) {
    out.emplace_back(static_cast<uint16_t>(first), static_cast<uint8_t>(len));
    return;
  }
  const uint32_t half = 1u << (15 - len);
  Canonical(first, len + 1, lo, hi, out);
  Canonical(first + half, len + 1, lo, hi, out);
}

Prefixes CanonicalCover(uint16_t lo, uint16_t hi) {
  Prefixes out;
  Canonical(0, 0, lo, hi, out);
  return out;
}

uint32_t BlockSize(uint8_t len) { return 1u << (16 - len); }

// Exact cover of [lo, hi]: aligned prefixes, in order, each starting where
// the previous ended (so no gap and no overlap), from lo to hi, and as few
// as the canonical cover.
void ExpectExactCover(uint16_t lo, uint16_t hi) {
  SCOPED_TRACE("[" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  const Prefixes got = port_range_prefixes(lo, hi);
  ASSERT_FALSE(got.empty());
  uint32_t next = lo;
  for (const auto& [first, len] : got) {
    ASSERT_LE(len, 16);
    ASSERT_EQ(first % BlockSize(len), 0u) << first << "/" << int{len} << " is not aligned";
    ASSERT_EQ(first, next) << "gap or overlap before " << first << "/" << int{len};
    next = first + BlockSize(len);
  }
  EXPECT_EQ(next, uint32_t{hi} + 1) << "the cover does not end at hi";
  EXPECT_EQ(got, CanonicalCover(lo, hi)) << "not the minimal cover";
}

TEST(PortRangePrefixes, KnownCases) {
  EXPECT_EQ(port_range_prefixes(0, 65535), (Prefixes{{0, 0}}));
  EXPECT_EQ(port_range_prefixes(443, 443), (Prefixes{{443, 16}}));
  EXPECT_EQ(port_range_prefixes(0, 0), (Prefixes{{0, 16}}));
  EXPECT_EQ(port_range_prefixes(65535, 65535), (Prefixes{{65535, 16}}));
  EXPECT_EQ(port_range_prefixes(32768, 65535), (Prefixes{{32768, 1}}));
  EXPECT_EQ(port_range_prefixes(8000, 8099), (Prefixes{{8000, 10}, {8064, 11}, {8096, 14}}));
  EXPECT_EQ(port_range_prefixes(6000, 6009), (Prefixes{{6000, 13}, {6008, 15}}));
  EXPECT_EQ(port_range_prefixes(80, 81), (Prefixes{{80, 15}}));
  EXPECT_EQ(port_range_prefixes(81, 82), (Prefixes{{81, 16}, {82, 16}}));

  // [1, 65535]: one block of every size 1, 2, 4, ... 32768.
  const Prefixes all_but_zero = port_range_prefixes(1, 65535);
  ASSERT_EQ(all_but_zero.size(), 16u);
  for (uint8_t i = 0; i < 16; ++i) {
    EXPECT_EQ(all_but_zero[i].first, 1u << i);
    EXPECT_EQ(all_but_zero[i].second, 16 - i);
  }
  EXPECT_EQ(port_range_prefixes(1024, 65535).size(), 6u);
  // The worst case over 16 bits: 2 * 16 - 2.
  EXPECT_EQ(port_range_prefixes(1, 65534).size(), 30u);
}

TEST(PortRangePrefixes, EveryRangeWithinALowWindowIsExact) {
  for (uint32_t lo = 0; lo < 300; ++lo) {
    for (uint32_t hi = lo; hi < 300; ++hi) {
      ExpectExactCover(static_cast<uint16_t>(lo), static_cast<uint16_t>(hi));
      if (HasFailure()) return;
    }
  }
}

TEST(PortRangePrefixes, RangesAtTheTopAndAroundPowersOfTwo) {
  std::vector<uint32_t> edges = {0, 1, 65534, 65535};
  for (int b = 1; b < 16; ++b) {
    for (int d : {-2, -1, 0, 1, 2}) edges.push_back(static_cast<uint32_t>((1 << b) + d));
  }
  for (uint32_t lo : edges) {
    for (uint32_t hi : edges) {
      if (lo <= hi && hi <= 65535) {
        ExpectExactCover(static_cast<uint16_t>(lo), static_cast<uint16_t>(hi));
      }
    }
  }
}

TEST(PortRangePrefixes, RandomRangesCoverExactlyTheirPorts) {
  std::mt19937 rng(20261121);
  std::uniform_int_distribution<uint32_t> port(0, 65535);
  std::vector<uint8_t> hits(65536);
  for (int i = 0; i < 3000; ++i) {
    uint32_t lo = port(rng), hi = port(rng);
    if (i % 3 == 0) hi = std::min<uint32_t>(65535, lo + port(rng) % 200);  // short ranges too
    if (lo > hi) std::swap(lo, hi);
    ExpectExactCover(static_cast<uint16_t>(lo), static_cast<uint16_t>(hi));
    if (i % 20 != 0) continue;
    // Independently, port by port: every port of the range in exactly one
    // prefix, no port outside it in any.
    std::fill(hits.begin(), hits.end(), 0);
    for (const auto& [first, len] :
         port_range_prefixes(static_cast<uint16_t>(lo), static_cast<uint16_t>(hi))) {
      for (uint32_t p = first; p < first + BlockSize(len); ++p) ++hits[p];
    }
    for (uint32_t p = 0; p < 65536; ++p) {
      ASSERT_EQ(hits[p], (p >= lo && p <= hi) ? 1 : 0)
          << "port " << p << " of [" << lo << ", " << hi << "]";
    }
  }
}

// ============================ build_kernel_tables ============================

// One address of either family, network order (IPv4 in the first 4 bytes).
struct Addr {
  int family = 4;
  std::array<uint8_t, 16> b{};

  int bytes() const { return family == 4 ? 4 : 16; }
  std::string str() const {
    char buf[INET6_ADDRSTRLEN];
    inet_ntop(family == 4 ? AF_INET : AF_INET6, b.data(), buf, sizeof(buf));
    return buf;
  }
};

bool InPrefix(const Addr& a, int family, const uint8_t* net, int len) {
  if (a.family != family) return false;
  for (int i = 0; i < len; ++i) {
    const int byte = i / 8, bit = 7 - i % 8;
    if (((a.b[byte] >> bit) & 1) != ((net[byte] >> bit) & 1)) return false;
  }
  return true;
}

// a + delta (delta = +1 or -1), wrapping within the family's width.
Addr Step(Addr a, int delta) {
  for (int i = a.bytes() - 1; i >= 0; --i) {
    const int v = a.b[i] + delta;
    a.b[i] = static_cast<uint8_t>(v & 0xff);
    if (v >= 0 && v <= 0xff) break;
  }
  return a;
}

Addr FromCidr(const Cidr& c, bool last) {
  Addr a;
  a.family = c.family;
  std::copy(c.addr, c.addr + 16, a.b.begin());
  if (last) {
    for (int i = c.prefix_len; i < a.bytes() * 8; ++i) a.b[i / 8] |= 1 << (7 - i % 8);
  }
  return a;
}

Addr RandomIn(const Cidr& c, std::mt19937& rng) {
  Addr a = FromCidr(c, false);
  for (int i = c.prefix_len; i < a.bytes() * 8; ++i) {
    if (rng() & 1) a.b[i / 8] |= 1 << (7 - i % 8);
  }
  return a;
}

bool MaskHas(const __u64 mask[TW_MASK_WORDS], uint32_t bit) {
  return bit < 64 * TW_MASK_WORDS && ((mask[bit / 64] >> (bit % 64)) & 1);
}

// The decision for one (address, port).
struct Decision {
  bool dest = false;  // some address row matched
  uint8_t flags = 0;  // TW_DEST_*
  bool protected_ = false;
  uint16_t rule_id = 0, boundary = 0, min_tls = 0;
  uint8_t mode = 0;
  uint8_t udp = 0;  // enum tw_udp_verdict
  bool exempt = false;
  uint16_t exemption = 0;

  bool operator==(const Decision& o) const {
    if (dest != o.dest || flags != o.flags || protected_ != o.protected_) return false;
    if (!protected_) return true;
    return rule_id == o.rule_id && boundary == o.boundary && min_tls == o.min_tls &&
           mode == o.mode && udp == o.udp && exempt == o.exempt &&
           (!exempt || exemption == o.exemption);
  }
  std::string str() const {
    std::ostringstream o;
    o << "{dest " << dest << " flags " << int{flags};
    if (protected_) {
      o << " rule " << rule_id << " boundary " << boundary << " min_tls 0x" << std::hex << min_tls
        << std::dec << " mode " << int{mode} << " udp " << int{udp};
      if (exempt) o << " exempt " << exemption;
    } else {
      o << " unprotected";
    }
    return o.str() + "}";
  }
};

// ---- model 1: the kernel's two lookups over the built tables ----
class KernelModel {
 public:
  explicit KernelModel(const KernelTables& t) : t_(t) {
    for (const auto& r : t.ports) by_class_[r.class_id].push_back(&r);
  }

  Decision decide(const Addr& a, uint16_t port) const {
    Decision d;
    const tw_dest_value* v = nullptr;
    int best = -1;
    if (a.family == 4) {
      for (const auto& r : t_.v4) {
        if (r.prefix_len > best && InPrefix(a, 4, r.addr, r.prefix_len)) {
          best = r.prefix_len;
          v = &r.value;
        }
      }
    } else {
      for (const auto& r : t_.v6) {
        if (r.prefix_len > best && InPrefix(a, 6, r.addr, r.prefix_len)) {
          best = r.prefix_len;
          v = &r.value;
        }
      }
    }
    if (!v) return d;
    d.dest = true;
    d.flags = v->flags;
    // policy.bpf.h tw_decide(): no port lookup unless some rule covers it.
    if (!(v->flags & TW_DEST_ANY_RULE)) return d;
    const KernelPortRow* row = port_row(v->class_id, port);
    if (!row || !row->verdict.has_rule) return d;
    d.protected_ = true;
    d.rule_id = row->verdict.rule_id;
    d.boundary = row->verdict.boundary;
    d.min_tls = row->verdict.min_tls;
    d.mode = row->verdict.mode;
    d.udp = row->verdict.udp;
    d.exempt = row->verdict.exempt != 0;
    d.exemption = row->verdict.exemption;
    return d;
  }

  // The longest port prefix of `class_id` holding `port`.
  const KernelPortRow* port_row(uint16_t class_id, uint16_t port) const {
    auto it = by_class_.find(class_id);
    if (it == by_class_.end()) return nullptr;
    const KernelPortRow* best = nullptr;
    for (const KernelPortRow* r : it->second) {
      const uint32_t size = BlockSize(r->prefix_len);
      if (port / size == r->port / size && (!best || r->prefix_len > best->prefix_len)) best = r;
    }
    return best;
  }

 private:
  const KernelTables& t_;
  std::map<uint16_t, std::vector<const KernelPortRow*>> by_class_;
};

// ---- model 2: the compiled rows, directly ----
Decision FromClass(const CompiledPolicy& c, const tw_dest_class& cls, uint16_t port) {
  Decision d;
  d.dest = true;
  for (const auto& r : c.rules) {
    if (!MaskHas(cls.boundary_mask, r.boundary)) continue;
    d.flags |= TW_DEST_ANY_RULE;
    if (r.mode == TW_MODE_ENFORCE && r.owner_group == TW_NO_OWNER_GROUP) {
      d.flags |= TW_DEST_ANY_ENFORCE;
    }
    if (r.udp != TW_UDP_ALLOW) {
      d.flags |= TW_DEST_ANY_UDP_RULE;
      if (r.mode == TW_MODE_ENFORCE && r.owner_group == TW_NO_OWNER_GROUP) {
        d.flags |= TW_DEST_ANY_UDP_ENFORCE;
      }
    }
  }
  for (const auto& r : c.rules) {
    if (r.owner_group != TW_NO_OWNER_GROUP) continue;
    if (MaskHas(cls.boundary_mask, r.boundary) && port >= r.port_lo && port <= r.port_hi) {
      d.protected_ = true;
      d.rule_id = r.rule_id;
      d.boundary = r.boundary;
      d.min_tls = r.min_tls;
      d.mode = r.mode;
      d.udp = r.udp;
      break;
    }
  }
  for (const auto& x : c.exempts) {
    if (x.owner_group != TW_NO_OWNER_GROUP) continue;
    if (MaskHas(cls.exempt_mask, x.exemption) && port >= x.port_lo && port <= x.port_hi) {
      d.exempt = true;
      d.exemption = x.exemption;
      break;
    }
  }
  return d;
}

const tw_dest_class* LongestCompiledRow(const CompiledPolicy& c, const Addr& a) {
  const tw_dest_class* cls = nullptr;
  int best = -1;
  if (a.family == 4) {
    for (const auto& r : c.v4) {
      if (r.prefix_len > best && InPrefix(a, 4, r.addr, r.prefix_len)) {
        best = r.prefix_len;
        cls = &r.cls;
      }
    }
  } else {
    for (const auto& r : c.v6) {
      if (r.prefix_len > best && InPrefix(a, 6, r.addr, r.prefix_len)) {
        best = r.prefix_len;
        cls = &r.cls;
      }
    }
  }
  return cls;
}

Decision CompiledDecision(const CompiledPolicy& c, const Addr& a, uint16_t port) {
  const tw_dest_class* cls = LongestCompiledRow(c, a);
  return cls ? FromClass(c, *cls, port) : Decision{};
}

// ---- model 3: the policy as written ----
bool CidrHolds(const Cidr& c, const Addr& a) { return InPrefix(a, c.family, c.addr, c.prefix_len); }

bool PortsHold(const std::vector<PortRange>& ports, uint16_t port) {
  for (const auto& p : ports) {
    if (port >= p.lo && port <= p.hi) return true;
  }
  return false;
}

// Checks `got` (the kernel tables' decision) against the written policy:
// which rules and exemptions cover (address, port). Rule ids may pick any
// covering rule (the validator makes overlapping rules agree on mode and
// min_tls), but it must be one that covers the pair.
void ExpectMatchesPolicy(const Policy& p, const CompiledPolicy& c, const Addr& a, uint16_t port,
                         const Decision& got) {
  std::set<std::string> in;  // boundaries holding the address
  for (const auto& b : p.boundaries) {
    for (const auto& cidr : b.cidrs) {
      if (CidrHolds(cidr, a)) in.insert(b.name);
    }
  }
  uint8_t flags = 0;
  std::vector<const Rule*> covering;
  for (const auto& r : p.rules) {
    if (!in.count(r.boundary)) continue;
    flags |= TW_DEST_ANY_RULE;
    if (r.udp != TW_UDP_ALLOW) flags |= TW_DEST_ANY_UDP_RULE;
    if (!r.owners.empty()) continue;  // only for the owners it selects
    if (r.mode == Mode::kEnforce) flags |= TW_DEST_ANY_ENFORCE;
    if (r.mode == Mode::kEnforce && r.udp != TW_UDP_ALLOW) flags |= TW_DEST_ANY_UDP_ENFORCE;
    if (PortsHold(r.ports, port)) covering.push_back(&r);
  }
  std::set<std::string> exempting;
  for (const auto& x : p.exemptions) {
    if (!x.owners.empty()) continue;
    bool cidr_ok = x.cidrs.empty();
    for (const auto& cidr : x.cidrs) cidr_ok = cidr_ok || CidrHolds(cidr, a);
    if (cidr_ok && (x.ports.empty() || PortsHold(x.ports, port))) exempting.insert(x.name);
  }
  EXPECT_EQ(got.flags, flags) << "flags";
  ASSERT_EQ(got.protected_, !covering.empty()) << "protected";
  if (covering.empty()) return;
  ASSERT_LT(got.rule_id, c.rule_names.size());
  const std::string& rule = c.rule_names[got.rule_id];
  const Rule* chosen = nullptr;
  for (const Rule* r : covering) {
    if (r->name == rule) chosen = r;
  }
  ASSERT_NE(chosen, nullptr) << "rule " << rule << " does not cover the address and port";
  ASSERT_LT(got.boundary, c.boundary_names.size());
  EXPECT_EQ(c.boundary_names[got.boundary], chosen->boundary);
  EXPECT_EQ(got.mode, chosen->mode == Mode::kEnforce ? TW_MODE_ENFORCE : TW_MODE_MONITOR);
  EXPECT_EQ(got.min_tls, chosen->min_tls);
  EXPECT_EQ(got.udp, chosen->udp);
  for (const Rule* r : covering) {
    EXPECT_EQ(r->mode, chosen->mode) << "covering rules disagree (validator)";
    EXPECT_EQ(r->min_tls, chosen->min_tls) << "covering rules disagree (validator)";
    EXPECT_EQ(r->udp, chosen->udp) << "covering rules disagree (validator)";
  }
  EXPECT_EQ(got.exempt, !exempting.empty()) << "exempt";
  if (got.exempt) {
    ASSERT_LT(got.exemption, c.exemption_names.size());
    EXPECT_EQ(exempting.count(c.exemption_names[got.exemption]), 1u)
        << "exemption " << c.exemption_names[got.exemption] << " does not cover it";
  }
}

// Every address row, the ports of every rule and exemption edge, and some
// random ones: the probes of one policy.
std::vector<Addr> ProbeAddresses(const Policy& p, std::mt19937& rng) {
  std::vector<Cidr> cidrs;
  for (const auto& b : p.boundaries) cidrs.insert(cidrs.end(), b.cidrs.begin(), b.cidrs.end());
  for (const auto& x : p.exemptions) cidrs.insert(cidrs.end(), x.cidrs.begin(), x.cidrs.end());
  std::vector<Addr> out;
  for (const Cidr& c : cidrs) {
    const Addr first = FromCidr(c, false), last = FromCidr(c, true);
    for (const Addr& a : {first, last, Step(first, -1), Step(last, +1)}) out.push_back(a);
    for (int i = 0; i < 3; ++i) out.push_back(RandomIn(c, rng));
    // Around the middle of the prefix (where a nested prefix often starts).
    if ((c.family == 4 && c.prefix_len < 32) || (c.family == 6 && c.prefix_len < 128)) {
      Addr mid = first;
      mid.b[c.prefix_len / 8] |= static_cast<uint8_t>(1 << (7 - c.prefix_len % 8));
      out.push_back(mid);
      out.push_back(Step(mid, -1));
    }
  }
  for (int i = 0; i < 100; ++i) {
    Addr a;
    a.family = i % 2 ? 6 : 4;
    for (auto& byte : a.b) byte = static_cast<uint8_t>(rng());
    if (a.family == 4) std::fill(a.b.begin() + 4, a.b.end(), 0);
    out.push_back(a);
  }
  return out;
}

std::vector<uint16_t> ProbePorts(const Policy& p, std::mt19937& rng) {
  std::set<uint32_t> ports = {0, 1, 2, 22, 79, 80, 81, 442, 443, 444, 8080, 65534, 65535};
  auto edges = [&](const std::vector<PortRange>& rs) {
    for (const auto& r : rs) {
      for (int64_t v : {int64_t{r.lo} - 1, int64_t{r.lo}, int64_t{r.lo} + 1, int64_t{r.hi} - 1,
                        int64_t{r.hi}, int64_t{r.hi} + 1}) {
        if (v >= 0 && v <= 65535) ports.insert(static_cast<uint32_t>(v));
      }
    }
  };
  for (const auto& r : p.rules) edges(r.ports);
  for (const auto& x : p.exemptions) edges(x.ports);
  for (int i = 0; i < 40; ++i) ports.insert(rng() % 65536);
  return std::vector<uint16_t>(ports.begin(), ports.end());
}

// Structure of the tables: rows 1:1 with the compiled rows, class ids dense
// and one per distinct (boundary mask, exemption mask), flags from the
// mask, and per class a port table that is, for every one of the 65536
// ports, the compiled rows' decision, with no overlapping rows and no more
// rows than the fewest prefixes of its runs of equal decisions.
void ExpectWellFormed(const CompiledPolicy& c, const KernelTables& t) {
  ASSERT_EQ(t.v4.size(), c.v4.size());
  ASSERT_EQ(t.v6.size(), c.v6.size());
  std::map<std::vector<__u64>, uint16_t> class_of_mask;
  std::map<uint16_t, const tw_dest_class*> mask_of_class;
  auto check_row = [&](const tw_dest_class& cls, const tw_dest_value& v, const std::string& what) {
    SCOPED_TRACE(what);
    std::vector<__u64> key(cls.boundary_mask, cls.boundary_mask + TW_MASK_WORDS);
    key.insert(key.end(), cls.exempt_mask, cls.exempt_mask + TW_MASK_WORDS);
    auto [it, fresh] = class_of_mask.emplace(key, v.class_id);
    EXPECT_EQ(it->second, v.class_id) << "one mask, two classes";
    auto [it2, fresh2] = mask_of_class.emplace(v.class_id, &cls);
    EXPECT_EQ(std::memcmp(it2->second, &cls, sizeof(cls)), 0) << "one class, two masks";
    EXPECT_EQ(v.flags, FromClass(c, cls, 0).flags) << "flags";
    EXPECT_EQ(v.pad, 0);
    (void)fresh;
    (void)fresh2;
  };
  for (size_t i = 0; i < c.v4.size(); ++i) {
    EXPECT_EQ(std::memcmp(t.v4[i].addr, c.v4[i].addr, 4), 0);
    EXPECT_EQ(t.v4[i].prefix_len, c.v4[i].prefix_len);
    check_row(c.v4[i].cls, t.v4[i].value, "v4 row " + std::to_string(i));
  }
  for (size_t i = 0; i < c.v6.size(); ++i) {
    EXPECT_EQ(std::memcmp(t.v6[i].addr, c.v6[i].addr, 16), 0);
    EXPECT_EQ(t.v6[i].prefix_len, c.v6[i].prefix_len);
    check_row(c.v6[i].cls, t.v6[i].value, "v6 row " + std::to_string(i));
  }
  EXPECT_EQ(t.classes, class_of_mask.size()) << "class count = distinct masks";
  for (const auto& [id, cls] : mask_of_class) EXPECT_LT(id, t.classes) << "class ids are dense";

  // Per class, port by port.
  std::map<uint16_t, std::vector<const KernelPortRow*>> rows;
  for (const auto& r : t.ports) {
    ASSERT_LT(r.class_id, t.classes);
    ASSERT_LE(r.prefix_len, 16);
    ASSERT_EQ(r.port % BlockSize(r.prefix_len), 0u) << "port prefix not aligned";
    EXPECT_EQ(r.verdict.pad[0] | r.verdict.pad[1], 0);
    rows[r.class_id].push_back(&r);
  }
  for (const auto& [id, cls] : mask_of_class) {
    SCOPED_TRACE("class " + std::to_string(id));
    std::vector<const KernelPortRow*> table(65536, nullptr);
    for (const KernelPortRow* r : rows[id]) {
      for (uint32_t p = r->port; p < r->port + BlockSize(r->prefix_len); ++p) {
        ASSERT_EQ(table[p], nullptr) << "overlapping port rows at " << p;
        table[p] = r;
      }
    }
    size_t minimal = 0;
    Decision run_decision;
    uint32_t run_start = 0;
    bool in_run = false;
    for (uint32_t p = 0; p <= 65536; ++p) {
      Decision want;
      if (p < 65536) {
        want = FromClass(c, *cls, static_cast<uint16_t>(p));
        Decision got;
        got.dest = true;
        got.flags = want.flags;
        if (table[p] && (want.flags & TW_DEST_ANY_RULE)) {
          got.protected_ = true;
          got.rule_id = table[p]->verdict.rule_id;
          got.boundary = table[p]->verdict.boundary;
          got.min_tls = table[p]->verdict.min_tls;
          got.mode = table[p]->verdict.mode;
          got.udp = table[p]->verdict.udp;
          got.exempt = table[p]->verdict.exempt != 0;
          got.exemption = table[p]->verdict.exemption;
        }
        ASSERT_TRUE(got == want) << "port " << p << ": tables " << got.str() << ", rows "
                                 << want.str();
        if (table[p] && !(want.flags & TW_DEST_ANY_RULE)) {
          ADD_FAILURE() << "a port row for a class no rule covers (port " << p << ")";
          return;
        }
      }
      // Runs of one protected decision: the fewest prefixes that can
      // express this class's port table.
      const bool same = in_run && p < 65536 && want == run_decision;
      if (in_run && !same) {
        minimal +=
            port_range_prefixes(static_cast<uint16_t>(run_start), static_cast<uint16_t>(p - 1))
                .size();
        in_run = false;
      }
      if (!in_run && p < 65536 && want.protected_) {
        in_run = true;
        run_start = p;
        run_decision = want;
      }
    }
    EXPECT_EQ(rows[id].size(), minimal) << "port rows of the class";
  }
}

struct Probed {
  size_t pairs = 0;
  size_t protected_ = 0;
  size_t exempt = 0;
  std::set<uint8_t> modes;
};

Probed CheckPolicy(const Policy& p, uint32_t seed) {
  Probed out;
  const CompiledPolicy c = compile_policy(p, Now());
  const KernelTables t = build_kernel_tables(c);
  {
    SCOPED_TRACE("structure");
    ExpectWellFormed(c, t);
  }
  if (::testing::Test::HasFatalFailure()) return out;
  const KernelModel kernel(t);
  std::mt19937 rng(seed);
  const std::vector<Addr> addrs = ProbeAddresses(p, rng);
  const std::vector<uint16_t> ports = ProbePorts(p, rng);
  int failures = 0;
  for (const Addr& a : addrs) {
    for (uint16_t port : ports) {
      const Decision k = kernel.decide(a, port);
      const Decision r = CompiledDecision(c, a, port);
      ++out.pairs;
      if (k.protected_) {
        ++out.protected_;
        out.modes.insert(k.mode);
        if (k.exempt) ++out.exempt;
      }
      if (!(k == r)) {
        ADD_FAILURE() << a.str() << " port " << port << ": kernel tables " << k.str()
                      << ", compiled rows " << r.str();
        if (++failures > 20) return out;
        continue;
      }
      SCOPED_TRACE(a.str() + " port " + std::to_string(port) + " " + k.str());
      ExpectMatchesPolicy(p, c, a, port, k);
      if (::testing::Test::HasFailure() && ++failures > 20) return out;
    }
  }
  // Building is deterministic: the same rows give the same tables.
  const KernelTables again = build_kernel_tables(c);
  EXPECT_EQ(again.classes, t.classes);
  EXPECT_EQ(again.ports.size(), t.ports.size());
  for (size_t i = 0; i < std::min(again.ports.size(), t.ports.size()); ++i) {
    EXPECT_EQ(std::memcmp(&again.ports[i], &t.ports[i], sizeof(KernelPortRow)), 0) << i;
  }
  return out;
}

// Nested CIDRs across boundaries (wide > mid > core, side-inner inside
// side), rules in both modes on different ports, different minimums, two
// agreeing rules on one port, a rule on 1-65535, and exemptions with and
// without cidrs and ports, one wider than the boundaries it narrows.
const char* const kNestedPolicy = R"(
version = "kt-nested"
default_mode = "monitor"
default_min_tls = "1.2"

[boundaries.wide]
cidrs = ["10.0.0.0/8", "2001:db8::/32"]

[boundaries.mid]
cidrs = ["10.1.0.0/16", "10.2.0.0/15", "2001:db8:1::/48"]

[boundaries.core]
cidrs = ["10.1.2.0/24", "10.1.2.128/25", "10.3.0.0/16", "2001:db8:1:2::/64"]

[boundaries.side]
cidrs = ["192.0.2.0/24", "198.51.100.0/24", "2001:db8:5::/48"]

[boundaries.side-inner]
cidrs = ["198.51.100.128/25", "198.51.100.200/32"]

[[rules]]
name = "wide-web"
boundary = "wide"
ports = [80, 443]
mode = "enforce"

[[rules]]
name = "mid-db"
boundary = "mid"
ports = [5432, "8000-8099"]
mode = "monitor"

[[rules]]
name = "core-tls11"
boundary = "core"
ports = [8443, "6000-6999"]
mode = "enforce"
min_tls = "1.1"

[[rules]]
name = "side-all"
boundary = "side"
ports = ["1-65535"]
mode = "enforce"

[[rules]]
name = "a-side-inner-web"
boundary = "side-inner"
ports = [443, "8000-8100"]
mode = "enforce"

[[exemptions]]
name = "core-batch"
cidrs = ["10.1.2.0/25"]
ports = ["6000-6099"]
reason = "batch jobs"
owner = "kt"
expires = 2099-12-31

[[exemptions]]
name = "side-host"
cidrs = ["198.51.100.200/29", "2001:db8:5::/64"]
reason = "legacy host, every port"
owner = "kt"
expires = 2099-12-31

[[exemptions]]
name = "plain-80-everywhere"
ports = [80]
reason = "redirectors"
owner = "kt"
expires = 2099-12-31

[[exemptions]]
name = "wider-than-boundaries"
cidrs = ["10.0.0.0/7"]
ports = [5432, 65535]
reason = "database proxies"
owner = "kt"
expires = 2099-12-31

[[exemptions]]
name = "v6-core"
cidrs = ["2001:db8:1:2::/64"]
ports = [8443]
reason = "v6 test"
owner = "kt"
expires = 2099-12-31
)";

// One boundary with a monitor rule on every port, another with rules of
// both modes on different ports and minimums (a rule on every port
// conflicts with any other rule of other settings on a shared address, so
// the two boundaries are disjoint), a boundary no rule names nested in the
// second, an exemption without ports and one without cidrs.
const char* const kModesPolicy = R"(
version = "kt-modes"
default_min_tls = "1.2"

[boundaries.watched]
cidrs = ["198.18.0.0/15", "::/0"]

[boundaries.locked]
cidrs = ["203.0.113.0/24", "0.0.0.0/1"]

[boundaries.dormant]
cidrs = ["203.0.113.64/26", "100.64.0.0/10"]

[[rules]]
name = "watch-everything"
boundary = "watched"
ports = ["1-65535"]
mode = "monitor"

[[rules]]
name = "lock-web"
boundary = "locked"
ports = [443, "1024-2047"]
mode = "enforce"

[[rules]]
name = "lock-db"
boundary = "locked"
ports = [5432, "2048-4095"]
mode = "enforce"
min_tls = "1.1"

[[rules]]
name = "lock-old"
boundary = "locked"
ports = [21, "990-1000"]
mode = "monitor"
min_tls = "1.0"

[[exemptions]]
name = "lab"
cidrs = ["198.19.0.0/16"]
reason = "lab network"
owner = "kt"
expires = 2099-12-31

[[exemptions]]
name = "ftp-everywhere"
ports = ["990-995"]
reason = "ftps control"
owner = "kt"
expires = 2099-12-31
)";

TEST(BuildKernelTables, NestedBoundariesMatchTheReferenceModel) {
  const Policy p = MustLoad(kNestedPolicy);
  const Probed r = CheckPolicy(p, 1);
  // The probes reached what they are meant to.
  EXPECT_GT(r.pairs, 10000u);
  EXPECT_GT(r.protected_, 500u);
  EXPECT_GT(r.exempt, 50u);
  EXPECT_EQ(r.modes.size(), 2u) << "both modes seen";
}

TEST(BuildKernelTables, MonitorEnforceAndAllPortsMatchTheReferenceModel) {
  const Policy p = MustLoad(kModesPolicy);
  const Probed r = CheckPolicy(p, 2);
  EXPECT_GT(r.protected_, 500u);
  EXPECT_GT(r.exempt, 20u);
  EXPECT_EQ(r.modes.size(), 2u);
}

TEST(BuildKernelTables, ShippedPoliciesMatchTheReferenceModel) {
  namespace fs = std::filesystem;
  int n = 0;
  for (const char* sub : {"configs/policy.d", "configs/examples"}) {
    for (const auto& e : fs::recursive_directory_iterator(fs::path(TLSWALL_SOURCE_DIR) / sub)) {
      if (!e.is_regular_file() || e.path().extension() != ".toml") continue;
      SCOPED_TRACE(e.path().string());
      const auto r = load_policy(e.path().string(), Now());
      ASSERT_TRUE(r.ok()) << All(r);
      CheckPolicy(*r.policy, 3 + n++);
    }
  }
  EXPECT_GT(n, 0);
}

// Direct checks on small, hand-made compiled rows.
void SetBit(__u64 mask[TW_MASK_WORDS], unsigned bit) { mask[bit / 64] |= __u64{1} << (bit % 64); }

LpmRow4 V4Row(uint8_t a, uint8_t b, uint8_t len, std::vector<unsigned> boundaries,
              std::vector<unsigned> exemptions = {}) {
  LpmRow4 r{};
  r.addr[0] = a;
  r.addr[1] = b;
  r.prefix_len = len;
  for (unsigned i : boundaries) SetBit(r.cls.boundary_mask, i);
  for (unsigned i : exemptions) SetBit(r.cls.exempt_mask, i);
  return r;
}

tw_rule_entry RuleRow(uint16_t boundary, uint16_t lo, uint16_t hi, uint16_t id, uint8_t mode) {
  tw_rule_entry e{};
  e.boundary = boundary;
  e.port_lo = lo;
  e.port_hi = hi;
  e.rule_id = id;
  e.min_tls = 0x0303;
  e.mode = mode;
  return e;
}

TEST(BuildKernelTables, ClassesAreDistinctMasksAndFlagsFollowTheRules) {
  CompiledPolicy c;
  c.v4 = {
      V4Row(10, 0, 8, {0}),        // class 0: enforce rule
      V4Row(10, 1, 16, {0, 1}),    // class 1: enforce + monitor
      V4Row(11, 0, 8, {1}),        // class 2: monitor only
      V4Row(12, 0, 8, {2}),        // class 3: a boundary no rule names
      V4Row(13, 0, 8, {}, {0}),    // class 4: an exemption only
      V4Row(14, 0, 8, {0}),        // class 0 again
      V4Row(15, 0, 8, {1}),        // class 2 again
      V4Row(16, 0, 8, {0}, {0}),   // class 5: same boundaries as 0, plus an exemption
      V4Row(17, 0, 8, {127}, {}),  // class 6: the last mask bit
  };
  c.rules = {RuleRow(0, 443, 443, 0, TW_MODE_ENFORCE), RuleRow(1, 8080, 8080, 1, TW_MODE_MONITOR),
             RuleRow(127, 1, 65535, 2, TW_MODE_MONITOR)};
  tw_exempt_entry x{};
  x.exemption = 0;
  x.port_lo = 443;
  x.port_hi = 443;
  c.exempts = {x};
  const KernelTables t = build_kernel_tables(c);
  ASSERT_EQ(t.v4.size(), c.v4.size());
  EXPECT_EQ(t.classes, 7u);
  const std::vector<uint16_t> want_class = {0, 1, 2, 3, 4, 0, 2, 5, 6};
  const std::vector<uint8_t> want_flags = {3, 3, 1, 0, 0, 3, 1, 3, 1};
  for (size_t i = 0; i < t.v4.size(); ++i) {
    EXPECT_EQ(t.v4[i].value.class_id, want_class[i]) << "row " << i;
    EXPECT_EQ(t.v4[i].value.flags, want_flags[i]) << "row " << i;
  }
  // Port rows: classes 0 and 5 one row each for 443 (5 exempt), class 1
  // 443 and 8080, class 2 8080, class 6 the 16 prefixes of 1-65535;
  // classes 3 and 4 none.
  std::map<uint16_t, std::vector<const KernelPortRow*>> by_class;
  for (const auto& r : t.ports) by_class[r.class_id].push_back(&r);
  EXPECT_EQ(by_class[0].size(), 1u);
  EXPECT_EQ(by_class[1].size(), 2u);
  EXPECT_EQ(by_class[2].size(), 1u);
  EXPECT_EQ(by_class.count(3), 0u);
  EXPECT_EQ(by_class.count(4), 0u);
  ASSERT_EQ(by_class[5].size(), 1u);
  EXPECT_EQ(by_class[5][0]->verdict.exempt, 1);
  EXPECT_EQ(by_class[0][0]->verdict.exempt, 0);
  EXPECT_EQ(by_class[6].size(), 16u);
  EXPECT_EQ(t.ports.size(), 1u + 2 + 1 + 1 + 16);
  ExpectWellFormed(c, t);
}

TEST(BuildKernelTables, FirstRuleRowDecidesAndAdjacentEqualVerdictsMerge) {
  CompiledPolicy c;
  c.v4 = {V4Row(10, 0, 8, {0, 1})};
  // Boundary 0: 1000-1999 (rule 0); boundary 1: 1500-2999 (rule 1) and
  // 3000-3999 (rule 1 again, a second row: merges with 2000-2999).
  c.rules = {RuleRow(0, 1000, 1999, 0, TW_MODE_ENFORCE), RuleRow(1, 1500, 2999, 1, TW_MODE_ENFORCE),
             RuleRow(1, 3000, 3999, 1, TW_MODE_ENFORCE)};
  const KernelTables t = build_kernel_tables(c);
  const KernelModel k(t);
  Addr a;
  a.b = {10, 9, 9, 9};
  EXPECT_FALSE(k.decide(a, 999).protected_);
  EXPECT_EQ(k.decide(a, 1000).rule_id, 0);
  EXPECT_EQ(k.decide(a, 1999).rule_id, 0) << "the first row wins where both hold";
  EXPECT_EQ(k.decide(a, 2000).rule_id, 1);
  EXPECT_EQ(k.decide(a, 3999).rule_id, 1);
  EXPECT_FALSE(k.decide(a, 4000).protected_);
  size_t want = port_range_prefixes(1000, 1999).size() + port_range_prefixes(2000, 3999).size();
  EXPECT_EQ(t.ports.size(), want) << "2000-2999 and 3000-3999 are one run";
  ExpectWellFormed(c, t);
}

TEST(BuildKernelTables, NoRowsNoTables) {
  const KernelTables t = build_kernel_tables(CompiledPolicy{});
  EXPECT_TRUE(t.v4.empty());
  EXPECT_TRUE(t.v6.empty());
  EXPECT_TRUE(t.ports.empty());
  EXPECT_EQ(t.classes, 0u);
}

// ---- limits ----

TEST(BuildKernelTables, PrefixLimitPerFamily) {
  for (int family : {4, 6}) {
    SCOPED_TRACE("IPv" + std::to_string(family));
    CompiledPolicy c;
    auto add = [&](int i) {
      if (family == 4) {
        LpmRow4 r = V4Row(10, static_cast<uint8_t>(i >> 8), 24, {0});
        r.addr[2] = static_cast<uint8_t>(i);
        c.v4.push_back(r);
      } else {
        LpmRow6 r{};
        r.addr[0] = 0x20;
        r.addr[6] = static_cast<uint8_t>(i >> 8);
        r.addr[7] = static_cast<uint8_t>(i);
        r.prefix_len = 64;
        SetBit(r.cls.boundary_mask, 0);
        c.v6.push_back(r);
      }
    };
    for (int i = 0; i < TW_MAX_PREFIXES; ++i) add(i);
    c.rules = {RuleRow(0, 443, 443, 0, TW_MODE_ENFORCE)};
    KernelTables t;
    EXPECT_NO_THROW(t = build_kernel_tables(c)) << "exactly TW_MAX_PREFIXES fits";
    EXPECT_EQ(t.classes, 1u);
    add(TW_MAX_PREFIXES);
    try {
      build_kernel_tables(c);
      ADD_FAILURE() << "TW_MAX_PREFIXES + 1 rows accepted";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("TW_MAX_PREFIXES"), std::string::npos) << e.what();
    }
  }
}

// `classes` classes (distinct exemption masks), each protected on
// `ports_per_class` single odd ports: classes * ports_per_class port rows.
CompiledPolicy ManyPortRows(int classes, int ports_per_class) {
  CompiledPolicy c;
  for (int i = 0; i < classes; ++i) {
    LpmRow4 r = V4Row(10, static_cast<uint8_t>(i >> 8), 24, {0});
    r.addr[2] = static_cast<uint8_t>(i);
    r.cls.exempt_mask[0] = static_cast<__u64>(i);
    c.v4.push_back(r);
  }
  for (int p = 0; p < ports_per_class; ++p) {
    const auto port = static_cast<uint16_t>(2 * p + 1);
    c.rules.push_back(RuleRow(0, port, port, 0, TW_MODE_ENFORCE));
  }
  return c;
}

TEST(BuildKernelTables, PortRowLimit) {
  ASSERT_EQ(256 * 256, TW_MAX_PORT_ROWS);
  KernelTables t;
  EXPECT_NO_THROW(t = build_kernel_tables(ManyPortRows(256, 256)));
  EXPECT_EQ(t.ports.size(), static_cast<size_t>(TW_MAX_PORT_ROWS));
  EXPECT_EQ(t.classes, 256u);
  try {
    build_kernel_tables(ManyPortRows(257, 256));
    ADD_FAILURE() << "TW_MAX_PORT_ROWS + 256 port rows accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("TW_MAX_PORT_ROWS"), std::string::npos) << e.what();
  }
}

// A policy within every limit the validator checks (128 exemptions, 4161
// prefixes, 129 rule and exemption entries) whose kernel tables need more
// than TW_MAX_PORT_ROWS port rows: 4161 destination classes (nested
// exemption CIDRs), each with ~23 port prefixes (1-65535 split around the
// exempt 443).
std::string PolicyOverThePortRowLimit() {
  std::string t = R"(
version = "kt-too-many-port-rows"
default_min_tls = "1.2"

[boundaries.net10]
cidrs = ["10.0.0.0/8"]

[[rules]]
name = "everything"
boundary = "net10"
ports = ["1-65535"]
mode = "enforce"
)";
  for (int a = 0; a < 64; ++a) {
    t += "\n[[exemptions]]\nname = \"outer-" + std::to_string(a) + "\"\ncidrs = [\"10." +
         std::to_string(a) + ".0.0/16\"]\n";
    t += "ports = [443]\nreason = \"r\"\nowner = \"o\"\nexpires = 2099-12-31\n";
  }
  for (int b = 0; b < 64; ++b) {
    t += "\n[[exemptions]]\nname = \"inner-" + std::to_string(b) + "\"\ncidrs = [";
    for (int a = 0; a < 64; ++a) {
      t += std::string(a ? ", " : "") + "\"10." + std::to_string(a) + "." + std::to_string(b) +
           ".0/24\"";
    }
    t += "]\nports = [443]\nreason = \"r\"\nowner = \"o\"\nexpires = 2099-12-31\n";
  }
  return t;
}

// `tlswallctl policy check` (load_policy + compile_policy) must not call a
// policy fine that the daemon then cannot publish: either the validator
// reports the kernel table limit, or the tables fit.
TEST(BuildKernelTables, APolicyTheValidatorAcceptsFitsTheKernelTables) {
  const auto r = load_policy_text("kt.toml", PolicyOverThePortRowLimit(), Now());
  if (!r.ok()) {
    bool named = false;
    for (const auto& d : r.diagnostics) {
      named = named || d.render().find("TW_MAX_PORT_ROWS") != std::string::npos;
    }
    EXPECT_TRUE(named) << "rejected, but not for the port row limit:\n" << All(r);
    return;
  }
  const CompiledPolicy c = compile_policy(*r.policy, Now());
  EXPECT_EQ(c.v4.size(), 4161u);
  try {
    const KernelTables t = build_kernel_tables(c);
    EXPECT_LE(t.ports.size(), static_cast<size_t>(TW_MAX_PORT_ROWS));
  } catch (const std::runtime_error& e) {
    ADD_FAILURE() << "the validator accepted the policy (no error diagnostic), compile_policy "
                     "accepted it, but build_kernel_tables (the daemon's publish) rejects it: "
                  << e.what();
  }
}

TEST(BuildKernelTables, ClassLimitIsNeverTheBindingOne) {
  // Every class comes from an address row, and the rows are limited per
  // family: TW_MAX_CLASSES cannot be exceeded by any input the prefix
  // limit lets through (see the static_assert above). The most classes the
  // tables can hold: every row its own mask.
  CompiledPolicy c;
  for (int i = 0; i < TW_MAX_PREFIXES; ++i) {
    LpmRow4 r = V4Row(10, static_cast<uint8_t>(i >> 8), 24, {});
    r.addr[2] = static_cast<uint8_t>(i);
    r.cls.exempt_mask[0] = static_cast<__u64>(i) + 1;
    c.v4.push_back(r);
    LpmRow6 r6{};
    r6.addr[0] = 0x20;
    r6.addr[6] = static_cast<uint8_t>(i >> 8);
    r6.addr[7] = static_cast<uint8_t>(i);
    r6.prefix_len = 64;
    r6.cls.exempt_mask[1] = static_cast<__u64>(i) + 1;
    c.v6.push_back(r6);
  }
  KernelTables t;
  ASSERT_NO_THROW(t = build_kernel_tables(c));
  EXPECT_EQ(t.classes, 2u * TW_MAX_PREFIXES);
  EXPECT_LE(t.classes, static_cast<size_t>(TW_MAX_CLASSES));
}

// ============================ preambles ============================

TEST(BuildKernelTables, PreamblesReachThePortVerdictsAndOwnerGroups) {
  const Policy p = MustLoad(R"(
version = "kt-preambles"
[boundaries.db]
cidrs = ["10.9.0.0/16"]

[[rules]]
name = "db-tls"
boundary = "db"
ports = [443, 3306, 5432]
mode = "enforce"
preambles = ["postgresql"]

[[rules]]
name = "db-mysql-app"
boundary = "db"
ports = [3306]
mode = "enforce"
comms = ["app"]
preambles = ["mysql", "postgresql"]
)");
  const CompiledPolicy c = compile_policy(p, Now());
  const KernelTables t = build_kernel_tables(c);
  size_t rows = 0;
  for (const auto& row : t.ports) {
    ASSERT_TRUE(row.verdict.has_rule);
    EXPECT_EQ(row.verdict.preambles, TW_PREAMBLE_BIT(TW_PREAMBLE_POSTGRESQL)) << row.port;
    EXPECT_EQ(row.verdict.udp, TW_UDP_ALLOW) << row.port;
    for (uint8_t b : row.verdict.pad) EXPECT_EQ(b, 0);
    ++rows;
  }
  EXPECT_GE(rows, 3u);
  ASSERT_EQ(t.owners.groups.size(), 1u);
  EXPECT_EQ(t.owners.groups[0].preambles,
            TW_PREAMBLE_BIT(TW_PREAMBLE_POSTGRESQL) | TW_PREAMBLE_BIT(TW_PREAMBLE_MYSQL));
  EXPECT_EQ(t.owners.groups[0].udp, TW_UDP_ALLOW);
}

// ============================ udp ============================

TEST(BuildKernelTables, UdpVerdictsReachThePortVerdictsOwnerGroupsAndDestFlags) {
  const Policy p = MustLoad(R"(
version = "kt-udp"
[boundaries.remote]
cidrs = ["10.9.0.0/16"]
[boundaries.staging]
cidrs = ["10.8.0.0/16"]
[boundaries.open]
cidrs = ["10.7.0.0/16"]

[[rules]]
name = "web"
boundary = "remote"
ports = [443]
mode = "enforce"
udp = "quic"

[[rules]]
name = "dns"
boundary = "remote"
ports = [53]
mode = "enforce"
udp = "block"

[[rules]]
name = "web-app"
boundary = "remote"
ports = [8443]
mode = "monitor"
comms = ["app"]
udp = "block"

[[rules]]
name = "staging"
boundary = "staging"
ports = [443]
udp = "block"

[[rules]]
name = "open"
boundary = "open"
ports = [443]
)");
  const CompiledPolicy c = compile_policy(p, Now());
  const KernelTables t = build_kernel_tables(c);
  std::map<std::string, uint8_t> udp_by_rule;
  for (const auto& row : t.ports) {
    if (!row.verdict.has_rule) continue;
    udp_by_rule[c.rule_names.at(row.verdict.rule_id)] = row.verdict.udp;
    for (uint8_t b : row.verdict.pad) EXPECT_EQ(b, 0);
  }
  EXPECT_EQ(udp_by_rule["web"], TW_UDP_QUIC);
  EXPECT_EQ(udp_by_rule["dns"], TW_UDP_BLOCK);
  EXPECT_EQ(udp_by_rule["staging"], TW_UDP_BLOCK);
  EXPECT_EQ(udp_by_rule["open"], TW_UDP_ALLOW);
  ASSERT_EQ(t.owners.groups.size(), 1u);
  EXPECT_EQ(t.owners.groups[0].udp, TW_UDP_BLOCK);
  // Dest flags: UDP fragments meet only boundaries whose rules restrict UDP.
  std::map<uint8_t, uint8_t> flags_by_octet;  // second octet -> flags
  for (const auto& row : t.v4) {
    if (row.prefix_len == 16) flags_by_octet[row.addr[1]] = row.value.flags;
  }
  EXPECT_EQ(flags_by_octet[9] & (TW_DEST_ANY_UDP_RULE | TW_DEST_ANY_UDP_ENFORCE),
            TW_DEST_ANY_UDP_RULE | TW_DEST_ANY_UDP_ENFORCE);
  EXPECT_EQ(flags_by_octet[8] & (TW_DEST_ANY_UDP_RULE | TW_DEST_ANY_UDP_ENFORCE),
            TW_DEST_ANY_UDP_RULE);  // monitor
  EXPECT_EQ(flags_by_octet[7] & (TW_DEST_ANY_UDP_RULE | TW_DEST_ANY_UDP_ENFORCE), 0);
  EXPECT_EQ(flags_by_octet[7] & TW_DEST_ANY_RULE, TW_DEST_ANY_RULE);
}

}  // namespace
}  // namespace tlswall::policy
