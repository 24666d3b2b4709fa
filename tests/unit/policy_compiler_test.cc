// compile_policy: index spaces, LPM rows with folded covering prefixes, rule
// and exemption rows, expiry handling and table limits.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <cstring>
#include <ctime>
#include <stdexcept>
#include <string>

#include "policy/policy.h"
#include "policy_test_support.h"

namespace tlswall::policy {
namespace {

using std::chrono::system_clock;

const auto kNow = Utc(2026, 11, 21);

Policy MustLoad(const std::string& text, system_clock::time_point now = kNow) {
  const auto r = load_policy_text("p.toml", text, now);
  EXPECT_TRUE(r.ok()) << All(r);
  if (!r.ok()) throw std::runtime_error("policy did not load");
  return *r.policy;
}

bool Bit(const __u64 mask[TW_MASK_WORDS], unsigned bit) {
  return (mask[bit / 64] >> (bit % 64)) & 1;
}

// Masks as bit strings, lowest index first, e.g. "011" = indices 1 and 2.
std::string Bits(const __u64 mask[TW_MASK_WORDS], size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) s += Bit(mask, static_cast<unsigned>(i)) ? '1' : '0';
  return s;
}

const LpmRow4* Row4(const CompiledPolicy& c, const char* addr, uint8_t len) {
  uint8_t a[4];
  EXPECT_EQ(inet_pton(AF_INET, addr, a), 1);
  for (const auto& row : c.v4) {
    if (row.prefix_len == len && std::memcmp(row.addr, a, 4) == 0) return &row;
  }
  return nullptr;
}

const LpmRow6* Row6(const CompiledPolicy& c, const char* addr, uint8_t len) {
  uint8_t a[16];
  EXPECT_EQ(inet_pton(AF_INET6, addr, a), 1);
  for (const auto& row : c.v6) {
    if (row.prefix_len == len && std::memcmp(row.addr, a, 16) == 0) return &row;
  }
  return nullptr;
}

// What the kernel's LPM trie returns for an IPv4 address.
const LpmRow4* Lookup4(const CompiledPolicy& c, const char* addr) {
  uint8_t a[4];
  EXPECT_EQ(inet_pton(AF_INET, addr, a), 1);
  const uint32_t x = (uint32_t{a[0]} << 24) | (a[1] << 16) | (a[2] << 8) | a[3];
  const LpmRow4* best = nullptr;
  for (const auto& row : c.v4) {
    const uint32_t r =
        (uint32_t{row.addr[0]} << 24) | (row.addr[1] << 16) | (row.addr[2] << 8) | row.addr[3];
    const uint32_t mask = row.prefix_len == 0 ? 0 : ~uint32_t{0} << (32 - row.prefix_len);
    if ((x & mask) == r && (!best || row.prefix_len > best->prefix_len)) best = &row;
  }
  return best;
}

const std::string kNested = R"(version = "nested-1"
[boundaries.outer]
cidrs = ["10.0.0.0/8", "2001:db8::/32"]
[boundaries.inner]
cidrs = ["10.1.0.0/16", "10.1.2.0/24"]
[boundaries.apart]
cidrs = ["192.0.2.0/24"]

[[rules]]
name = "r-outer"
boundary = "outer"
ports = [443]
mode = "enforce"
[[rules]]
name = "r-inner"
boundary = "inner"
ports = [443]
mode = "enforce"
[[rules]]
name = "r-apart"
boundary = "apart"
ports = [80]

[[exemptions]]
name = "e-narrow"
cidrs = ["10.1.2.128/25", "2001:db8:0:1::/64"]
ports = [443]
reason = "r"
owner = "o"
)";

TEST(PolicyCompiler, NamesAreSortedIndexSpaces) {
  const auto c = compile_policy(MustLoad(kNested), kNow);
  EXPECT_EQ(c.version, "nested-1");
  EXPECT_EQ(c.boundary_names, (std::vector<std::string>{"apart", "inner", "outer"}));
  EXPECT_EQ(c.rule_names, (std::vector<std::string>{"r-apart", "r-inner", "r-outer"}));
  EXPECT_EQ(c.rule_modes, (std::vector<std::string>{"monitor", "enforce", "enforce"}));
  EXPECT_EQ(c.exemption_names, (std::vector<std::string>{"e-narrow"}));
  EXPECT_FALSE(c.next_expiry.has_value());
}

TEST(PolicyCompiler, NestedCidrsFoldCoveringPrefixes) {
  const auto c = compile_policy(MustLoad(kNested), kNow);
  ASSERT_EQ(c.v4.size(), 5u);
  ASSERT_EQ(c.v6.size(), 2u);
  struct Want {
    const char* addr;
    uint8_t len;
    const char* boundaries;  // apart, inner, outer
    const char* exempt;
  };
  for (const Want& w : {Want{"10.0.0.0", 8, "001", "0"}, Want{"10.1.0.0", 16, "011", "0"},
                        Want{"10.1.2.0", 24, "011", "0"}, Want{"10.1.2.128", 25, "011", "1"},
                        Want{"192.0.2.0", 24, "100", "0"}}) {
    const LpmRow4* row = Row4(c, w.addr, w.len);
    ASSERT_NE(row, nullptr) << w.addr << "/" << int(w.len);
    EXPECT_EQ(Bits(row->cls.boundary_mask, 3), w.boundaries) << w.addr << "/" << int(w.len);
    EXPECT_EQ(Bits(row->cls.exempt_mask, 1), w.exempt) << w.addr << "/" << int(w.len);
    EXPECT_EQ(row->cls.boundary_mask[1], 0u);
  }
  const LpmRow6* wide = Row6(c, "2001:db8::", 32);
  const LpmRow6* narrow = Row6(c, "2001:db8:0:1::", 64);
  ASSERT_NE(wide, nullptr);
  ASSERT_NE(narrow, nullptr);
  EXPECT_EQ(Bits(wide->cls.boundary_mask, 3), "001");
  EXPECT_EQ(Bits(wide->cls.exempt_mask, 1), "0");
  EXPECT_EQ(Bits(narrow->cls.boundary_mask, 3), "001");
  EXPECT_EQ(Bits(narrow->cls.exempt_mask, 1), "1");
}

TEST(PolicyCompiler, LongestMatchIsExact) {
  const auto c = compile_policy(MustLoad(kNested), kNow);
  struct Probe {
    const char* addr;
    const char* boundaries;
    const char* exempt;
  };
  for (const Probe& p : {Probe{"10.1.2.200", "011", "1"}, Probe{"10.1.2.1", "011", "0"},
                         Probe{"10.1.3.1", "011", "0"}, Probe{"10.2.0.1", "001", "0"},
                         Probe{"192.0.2.255", "100", "0"}}) {
    const LpmRow4* row = Lookup4(c, p.addr);
    ASSERT_NE(row, nullptr) << p.addr;
    EXPECT_EQ(Bits(row->cls.boundary_mask, 3), p.boundaries) << p.addr;
    EXPECT_EQ(Bits(row->cls.exempt_mask, 1), p.exempt) << p.addr;
  }
  EXPECT_EQ(Lookup4(c, "8.8.8.8"), nullptr);
  EXPECT_EQ(Lookup4(c, "11.0.0.1"), nullptr);
}

TEST(PolicyCompiler, RowsAreInAddressOrderAndNetworkByteOrder) {
  const auto c = compile_policy(MustLoad(kNested), kNow);
  ASSERT_EQ(c.v4.size(), 5u);
  EXPECT_EQ(c.v4[0].addr[0], 10);
  EXPECT_EQ(c.v4[0].prefix_len, 8);
  EXPECT_EQ(c.v4[3].addr[3], 128);
  EXPECT_EQ(c.v4[3].prefix_len, 25);
  EXPECT_EQ(c.v4[4].addr[0], 192);
  EXPECT_EQ(c.v6[0].addr[0], 0x20);
  EXPECT_EQ(c.v6[0].addr[1], 0x01);
  EXPECT_EQ(c.v6[0].addr[2], 0x0d);
  EXPECT_EQ(c.v6[0].addr[3], 0xb8);
}

TEST(PolicyCompiler, RuleEntriesPerPortRangeEnforceFirst) {
  const auto c = compile_policy(MustLoad(R"(version = "t"
[boundaries.remote]
cidrs = ["198.18.128.0/17"]
[boundaries.db]
cidrs = ["198.18.0.0/24"]
[[rules]]
name = "b-web"
boundary = "remote"
ports = [80, "8000-8099"]
mode = "enforce"
[[rules]]
name = "a-db"
boundary = "db"
ports = ["5432"]
min_tls = "1.0"
)"),
                                kNow);
  EXPECT_EQ(c.rule_names, (std::vector<std::string>{"a-db", "b-web"}));
  EXPECT_EQ(c.rule_modes, (std::vector<std::string>{"monitor", "enforce"}));
  EXPECT_EQ(c.boundary_names, (std::vector<std::string>{"db", "remote"}));
  ASSERT_EQ(c.rules.size(), 3u);
  // Enforce rows first (see policy_compiler.cc), then rule_id order.
  EXPECT_EQ(c.rules[0].rule_id, 1);
  EXPECT_EQ(c.rules[0].boundary, 1);
  EXPECT_EQ(c.rules[0].port_lo, 80);
  EXPECT_EQ(c.rules[0].port_hi, 80);
  EXPECT_EQ(c.rules[0].min_tls, 0x0303);
  EXPECT_EQ(c.rules[0].mode, TW_MODE_ENFORCE);
  EXPECT_EQ(c.rules[1].rule_id, 1);
  EXPECT_EQ(c.rules[1].port_lo, 8000);
  EXPECT_EQ(c.rules[1].port_hi, 8099);
  EXPECT_EQ(c.rules[2].rule_id, 0);
  EXPECT_EQ(c.rules[2].boundary, 0);
  EXPECT_EQ(c.rules[2].port_lo, 5432);
  EXPECT_EQ(c.rules[2].port_hi, 5432);
  EXPECT_EQ(c.rules[2].min_tls, 0x0301);
  EXPECT_EQ(c.rules[2].mode, TW_MODE_MONITOR);
  EXPECT_EQ(c.rules[2].owner_group, TW_NO_OWNER_GROUP);
}

TEST(PolicyCompiler, ExemptionWithoutCidrsCoversEverything) {
  const auto c = compile_policy(MustLoad(R"(version = "t"
[boundaries.remote]
cidrs = ["198.18.128.0/17", "2001:db8:2::/48"]
[[rules]]
name = "r"
boundary = "remote"
ports = [443, 9100]
[[exemptions]]
name = "metrics-anywhere"
ports = [9100, "9200-9300"]
reason = "r"
owner = "o"
[[exemptions]]
name = "box"
cidrs = ["198.18.130.7/32"]
reason = "r"
owner = "o"
)"),
                                kNow);
  EXPECT_EQ(c.exemption_names, (std::vector<std::string>{"box", "metrics-anywhere"}));
  ASSERT_NE(Row4(c, "0.0.0.0", 0), nullptr);
  ASSERT_NE(Row6(c, "::", 0), nullptr);
  EXPECT_EQ(Bits(Row4(c, "0.0.0.0", 0)->cls.boundary_mask, 1), "0");
  EXPECT_EQ(Bits(Row4(c, "0.0.0.0", 0)->cls.exempt_mask, 2), "01");
  EXPECT_EQ(Bits(Row4(c, "198.18.128.0", 17)->cls.exempt_mask, 2), "01");
  EXPECT_EQ(Bits(Row4(c, "198.18.128.0", 17)->cls.boundary_mask, 1), "1");
  EXPECT_EQ(Bits(Row4(c, "198.18.130.7", 32)->cls.exempt_mask, 2), "11");
  EXPECT_EQ(Bits(Row4(c, "198.18.130.7", 32)->cls.boundary_mask, 1), "1");
  EXPECT_EQ(Bits(Row6(c, "2001:db8:2::", 48)->cls.exempt_mask, 2), "01");
  EXPECT_EQ(c.v4.size(), 3u);
  EXPECT_EQ(c.v6.size(), 2u);

  ASSERT_EQ(c.exempts.size(), 3u);
  // "box" (index 0) has no ports: every port.
  EXPECT_EQ(c.exempts[0].exemption, 0);
  EXPECT_EQ(c.exempts[0].port_lo, 1);
  EXPECT_EQ(c.exempts[0].port_hi, 65535);
  EXPECT_EQ(c.exempts[1].exemption, 1);
  EXPECT_EQ(c.exempts[1].port_lo, 9100);
  EXPECT_EQ(c.exempts[1].port_hi, 9100);
  EXPECT_EQ(c.exempts[2].exemption, 1);
  EXPECT_EQ(c.exempts[2].port_lo, 9200);
  EXPECT_EQ(c.exempts[2].port_hi, 9300);
}

const std::string kExpiring = R"(version = "t"
[boundaries.remote]
cidrs = ["198.18.128.0/17"]
[[rules]]
name = "r"
boundary = "remote"
ports = [443]
[[exemptions]]
name = "a-soon"
cidrs = ["198.18.200.0/24"]
reason = "r"
owner = "o"
expires = 2026-12-01
[[exemptions]]
name = "b-later"
cidrs = ["198.18.201.0/24"]
reason = "r"
owner = "o"
expires = "2027-03-01"
[[exemptions]]
name = "c-never"
ports = [443]
reason = "r"
owner = "o"
)";

TEST(PolicyCompiler, NextExpiryIsTheEndOfTheEarliestDay) {
  const Policy p = MustLoad(kExpiring);
  const auto c = compile_policy(p, kNow);
  EXPECT_EQ(c.exemption_names, (std::vector<std::string>{"a-soon", "b-later", "c-never"}));
  ASSERT_TRUE(c.next_expiry.has_value());
  EXPECT_EQ(*c.next_expiry, Utc(2026, 12, 2, 0, 0, 0));
  // Last second of the expiry day: still in.
  const auto last = compile_policy(p, Utc(2026, 12, 1, 23, 59, 59));
  EXPECT_EQ(last.exemption_names.size(), 3u);
}

// Found by the policy_loader fuzzer (tests/fuzz/regressions/policy_loader/):
// a TOML date may be as late as 9999-12-31, beyond what the nanosecond clock
// holds (2262); such an expiry is "never", not a signed overflow.
TEST(PolicyCompiler, ExpiryBeyondTheClockIsNever) {
  const Policy p = MustLoad(R"(version = "1"
[boundaries.b]
cidrs = ["198.18.0.0/15"]
[[exemptions]]
name = "far"
ports = [443]
reason = "r"
owner = "o"
expires = 9999-12-31
)");
  const auto c = compile_policy(p, kNow);
  ASSERT_TRUE(c.next_expiry.has_value());
  EXPECT_EQ(*c.next_expiry, std::chrono::system_clock::time_point::max());
  EXPECT_EQ(c.exemption_names.size(), 1u);
}

TEST(PolicyCompiler, ExpiredExemptionsAreLeftOut) {
  const Policy p = MustLoad(kExpiring);
  const auto c = compile_policy(p, Utc(2026, 12, 2, 0, 0, 0));
  EXPECT_EQ(c.exemption_names, (std::vector<std::string>{"b-later", "c-never"}));
  ASSERT_TRUE(c.next_expiry.has_value());
  EXPECT_EQ(*c.next_expiry, Utc(2027, 3, 2, 0, 0, 0));
  EXPECT_EQ(Row4(c, "198.18.200.0", 24), nullptr);  // a-soon's prefix is gone
  ASSERT_NE(Row4(c, "198.18.201.0", 24), nullptr);
  EXPECT_EQ(Bits(Row4(c, "198.18.201.0", 24)->cls.exempt_mask, 2), "11");  // b-later is index 0
  ASSERT_EQ(c.exempts.size(), 2u);
  EXPECT_EQ(c.exempts[0].exemption, 0);
  EXPECT_EQ(c.exempts[1].exemption, 1);
  EXPECT_EQ(c.exempts[1].port_lo, 443);

  const auto later = compile_policy(p, Utc(2027, 3, 2, 0, 0, 0));
  EXPECT_EQ(later.exemption_names, (std::vector<std::string>{"c-never"}));
  EXPECT_FALSE(later.next_expiry.has_value());
}

TEST(PolicyCompiler, HighBoundaryIndexUsesSecondMaskWord) {
  std::string text = "version = \"t\"\n";
  for (int i = 0; i < 70; ++i) {
    char name[8];
    std::snprintf(name, sizeof(name), "b%02d", i);
    text += "[boundaries." + std::string(name) + "]\ncidrs = [\"10." + std::to_string(i) +
            ".0.0/16\"]\n";
  }
  text += "[boundaries.all]\ncidrs = [\"10.0.0.0/8\"]\n";
  text += "[[rules]]\nname = \"r\"\nboundary = \"b69\"\nports = [443]\n";
  const auto c = compile_policy(MustLoad(text), kNow);
  ASSERT_EQ(c.boundary_names.size(), 71u);
  EXPECT_EQ(c.boundary_names[0], "all");
  EXPECT_EQ(c.boundary_names[70], "b69");
  const LpmRow4* row = Row4(c, "10.69.0.0", 16);
  ASSERT_NE(row, nullptr);
  EXPECT_EQ(row->cls.boundary_mask[0], 1u);                        // "all" (index 0) covers it
  EXPECT_EQ(row->cls.boundary_mask[1], uint64_t{1} << (70 - 64));  // b69 = index 70
  EXPECT_EQ(c.rules[0].boundary, 70);
}

TEST(PolicyCompiler, IsDeterministic) {
  const auto a = compile_policy(MustLoad(kNested), kNow);
  const auto b = compile_policy(MustLoad(kNested), kNow);
  ASSERT_EQ(a.v4.size(), b.v4.size());
  EXPECT_EQ(std::memcmp(a.v4.data(), b.v4.data(), a.v4.size() * sizeof(LpmRow4)), 0);
  ASSERT_EQ(a.rules.size(), b.rules.size());
  EXPECT_EQ(std::memcmp(a.rules.data(), b.rules.data(), a.rules.size() * sizeof(tw_rule_entry)), 0);
}

// ---- limits: compile_policy refuses what the kernel tables cannot hold ----

Cidr V4(uint8_t a, uint8_t b, uint8_t c, uint8_t d, uint8_t len) {
  Cidr x;
  x.family = 4;
  x.addr[0] = a;
  x.addr[1] = b;
  x.addr[2] = c;
  x.addr[3] = d;
  x.prefix_len = len;
  return x;
}

Policy Base() {
  Policy p;
  p.version = "t";
  Boundary b;
  b.name = "b";
  b.cidrs.push_back(V4(10, 0, 0, 0, 8));
  p.boundaries.push_back(b);
  return p;
}

void ExpectThrows(const Policy& p, const std::string& fragment) {
  try {
    compile_policy(p, kNow);
    ADD_FAILURE() << "no exception; wanted " << fragment;
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(PolicyCompiler, TooManyBoundariesThrows) {
  Policy p = Base();
  for (int i = 1; i < TW_MAX_BOUNDARIES; ++i) {
    Boundary b;
    b.name = "b" + std::to_string(i);
    b.cidrs.push_back(V4(10, static_cast<uint8_t>(i), 0, 0, 16));
    p.boundaries.push_back(b);
  }
  EXPECT_NO_THROW(compile_policy(p, kNow));
  p.boundaries.push_back(p.boundaries.back());
  p.boundaries.back().name = "one-too-many";
  ExpectThrows(p,
               "policy needs 129 boundaries, the kernel tables hold at most 128 "
               "(TW_MAX_BOUNDARIES)");
}

TEST(PolicyCompiler, TooManyRuleEntriesThrows) {
  Policy p = Base();
  Rule r;
  r.name = "r";
  r.boundary = "b";
  for (int i = 1; i <= TW_MAX_RULE_ENTRIES; ++i) {
    r.ports.push_back({static_cast<uint16_t>(i), static_cast<uint16_t>(i), {}});
  }
  p.rules.push_back(r);
  EXPECT_NO_THROW(compile_policy(p, kNow));
  p.rules[0].ports.push_back({1000, 1000, {}});
  ExpectThrows(p, "(TW_MAX_RULE_ENTRIES)");
}

TEST(PolicyCompiler, TooManyExemptionsAndEntriesThrow) {
  Policy p = Base();
  for (int i = 0; i < TW_MAX_EXEMPTIONS + 1; ++i) {
    Exemption x;
    x.name = "x" + std::to_string(i);
    x.ports.push_back({443, 443, {}});
    p.exemptions.push_back(x);
  }
  ExpectThrows(p, "(TW_MAX_EXEMPTIONS)");
  p.exemptions.resize(2);
  for (int i = 0; i < TW_MAX_EXEMPT_ENTRIES; ++i) {
    p.exemptions[1].ports.push_back(
        {static_cast<uint16_t>(i + 1), static_cast<uint16_t>(i + 1), {}});
  }
  ExpectThrows(p, "policy needs 258 exemption entries");
}

TEST(PolicyCompiler, ExpiredExemptionsDoNotCountTowardsLimits) {
  Policy p = Base();
  for (int i = 0; i < TW_MAX_EXEMPTIONS + 1; ++i) {
    Exemption x;
    x.name = "x" + std::to_string(i);
    x.ports.push_back({443, 443, {}});
    if (i == 0) x.expires = Date{2026, 1, 1};
    p.exemptions.push_back(x);
  }
  EXPECT_NO_THROW(compile_policy(p, kNow));
}

TEST(PolicyCompiler, TooManyPrefixesThrows) {
  Policy p = Base();
  for (int i = 0; i < TW_MAX_PREFIXES; ++i) {  // + 10.0.0.0/8 = one too many
    p.boundaries[0].cidrs.push_back(
        V4(11, static_cast<uint8_t>(i / 256), static_cast<uint8_t>(i % 256), 0, 24));
  }
  ExpectThrows(p,
               "policy needs 16385 distinct IPv4 prefixes, the kernel tables hold at most 16384 "
               "(TW_MAX_PREFIXES)");
  p.boundaries[0].cidrs.erase(p.boundaries[0].cidrs.begin());
  EXPECT_NO_THROW(compile_policy(p, kNow));
}

TEST(PolicyCompiler, UnknownBoundaryThrows) {
  Policy p = Base();
  Rule r;
  r.name = "r";
  r.boundary = "missing";
  r.ports.push_back({443, 443, {}});
  p.rules.push_back(r);
  ExpectThrows(p, "rule \"r\" names unknown boundary \"missing\"");
}

}  // namespace
}  // namespace tlswall::policy
