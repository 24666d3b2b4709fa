// Policy by owner: `cgroups`, `users` and `comms` on rules and exemptions,
// from TOML through validation and compilation to the kernel's owner
// tables (tw_owner_groups, tw_owner_uids/comms/cgroups, tw_slot_meta, and
// tw_port_verdict.owner_groups / has_rule).
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "policy/policy.h"
#include "policy_test_support.h"

namespace tlswall::policy {
namespace {

const auto kNow = Utc(2026, 11, 21);

const char* kHead = R"(
version = "owners-1"
[boundaries.remote]
cidrs = ["198.18.128.0/17"]
)";

LoadResult Load(const std::string& body) {
  return load_policy_text("owners.toml", std::string(kHead) + body, kNow);
}

// A resolver with fixed answers: users "alice" = 1001, "bob" unknown;
// cgroups "/svc" = 100, "/svc/a.service" = 101, everything else unknown.
OwnerResolver FakeResolver() {
  OwnerResolver r;
  r.uid = [](const std::string& name) -> std::optional<uint32_t> {
    if (name == "alice") return 1001;
    return std::nullopt;
  };
  r.cgroup_id = [](const std::string& path) -> std::optional<uint64_t> {
    if (path == "/svc") return 100;
    if (path == "/svc/a.service") return 101;
    return std::nullopt;
  };
  return r;
}

// The verdict row for port `port` in the only class that has port rows.
const KernelPortRow* RowFor(const KernelTables& t, uint16_t port) {
  const KernelPortRow* best = nullptr;
  for (const auto& r : t.ports) {
    const uint32_t span = 1u << (16 - r.prefix_len);
    if (port >= r.port && port < r.port + span && (!best || r.prefix_len > best->prefix_len)) {
      best = &r;
    }
  }
  return best;
}

// ---- parsing and validation ----

TEST(PolicyOwnerSelectors, ParsesEverySelectorKind) {
  const auto r = Load(R"(
[[rules]]
name = "billing-redis"
boundary = "remote"
ports = [6379]
mode = "enforce"
cgroups = ["/system.slice/billing.service"]
users = ["alice", 1001]
comms = ["redis-cli"]
)");
  ASSERT_TRUE(r.ok()) << All(r);
  const Rule& rule = r.policy->rules.at(0);
  ASSERT_EQ(rule.owners.cgroups.size(), 1u);
  EXPECT_EQ(rule.owners.cgroups[0], "/system.slice/billing.service");
  ASSERT_EQ(rule.owners.users.size(), 2u);
  EXPECT_EQ(rule.owners.users[0].name, "alice");
  EXPECT_FALSE(rule.owners.users[0].uid.has_value());
  EXPECT_EQ(rule.owners.users[1].uid.value(), 1001u);
  EXPECT_EQ(rule.owners.comms, std::vector<std::string>{"redis-cli"});
  EXPECT_EQ(rule.owners.describe(),
            "cgroups=[/system.slice/billing.service] users=[alice,1001] comms=[redis-cli]");
}

TEST(PolicyOwnerSelectors, RejectsBadSelectorsWithTheirPosition) {
  struct Case {
    std::string line;
    std::string fragment;
  };
  const Case cases[] = {
      {R"(cgroups = ["system.slice"])", "must be an absolute cgroup path"},
      {R"(cgroups = ["/a//b"])", "empty, \".\" or \"..\" component"},
      {R"(cgroups = ["/a/../b"])", "empty, \".\" or \"..\" component"},
      {R"(cgroups = ["/a/"])", "must not end with"},
      {R"(cgroups = ["/"])", "would select every process"},
      {R"(cgroups = ["/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16"])", "levels deep"},
      {R"(comms = ["a-very-long-process-name"])", "1 to 15 bytes"},
      {R"(comms = [""])", "1 to 15 bytes"},
      {R"(users = [-1])", "out of range"},
      {R"(users = [4294967295])", "out of range"},
      {R"(users = ["bad name"])", "is not a user name"},
      {R"(users = [1.5])", "a user name or a uid"},
      {R"(users = [])", "is empty; remove the key"},
      {R"(cgroups = "/svc")", "must be an array"},
  };
  for (const Case& c : cases) {
    const auto r =
        Load("[[rules]]\nname = \"r\"\nboundary = \"remote\"\nports = [443]\n" + c.line + "\n");
    EXPECT_FALSE(r.ok()) << c.line;
    // The value sits on line 9 of the file (kHead is 4 lines + 4 rule lines).
    EXPECT_TRUE(HasDiag(r, "owners.toml:9:", c.fragment)) << c.line;
  }
}

TEST(PolicyOwnerSelectors, ExemptionMayLimitOnlyByOwner) {
  const auto ok = Load(R"(
[[rules]]
name = "r"
boundary = "remote"
ports = [443]
[[exemptions]]
name = "backup-agent"
users = [34]
reason = "the backup agent's transport is wrapped in IPsec"
owner = "storage-team"
)");
  EXPECT_TRUE(ok.ok()) << All(ok);
  const auto bad = Load(R"(
[[rules]]
name = "r"
boundary = "remote"
ports = [443]
[[exemptions]]
name = "everything"
reason = "x"
owner = "y"
)");
  EXPECT_FALSE(bad.ok());
  EXPECT_TRUE(HasDiag(bad, "owners.toml:", "must limit cidrs, ports or owners"));
}

TEST(PolicyOwnerSelectors, SelectorRuleMayOverlapAPlainRuleButNotAnotherSelectorRule) {
  const std::string plain = R"(
[[rules]]
name = "all-monitor"
boundary = "remote"
ports = [443]
mode = "monitor"
)";
  const auto ok = Load(plain + R"(
[[rules]]
name = "billing-enforce"
boundary = "remote"
ports = [443]
mode = "enforce"
cgroups = ["/svc"]
)");
  EXPECT_TRUE(ok.ok()) << All(ok);
  const auto bad = Load(plain + R"(
[[rules]]
name = "a"
boundary = "remote"
ports = [443]
mode = "enforce"
cgroups = ["/svc"]
[[rules]]
name = "b"
boundary = "remote"
ports = [443]
mode = "monitor"
users = [1001]
)");
  EXPECT_FALSE(bad.ok());
  EXPECT_TRUE(HasDiag(bad, "owners.toml:", "conflicts with rule"));
}

TEST(PolicyOwnerSelectors, UnknownUserNameIsAWarningNotAnError) {
  const auto r = Load(R"(
[[rules]]
name = "r"
boundary = "remote"
ports = [443]
users = ["no-such-user-tlswall-test"]
)");
  ASSERT_TRUE(r.ok()) << All(r);
  EXPECT_TRUE(HasDiag(r, "owners.toml:10:10: warning: ", "does not exist on this host"));
}

TEST(PolicyOwnerSelectors, MoreThan64SelectorEntriesAreRejected) {
  std::string body;
  for (int i = 0; i < TW_MAX_OWNER_GROUPS + 1; ++i) {
    body += "[[rules]]\nname = \"r" + std::to_string(i) +
            "\"\nboundary = \"remote\"\nports = [443]\nusers = [" + std::to_string(2000 + i) +
            "]\n";
  }
  const auto r = Load(body);
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(HasDiag(r, "owners.toml:", "TW_MAX_OWNER_GROUPS"));
}

// ---- compilation into the kernel tables ----

CompiledPolicy Compile(const std::string& body) {
  const auto r = Load(body);
  EXPECT_TRUE(r.ok()) << All(r);
  return compile_policy(*r.policy, kNow);
}

TEST(PolicyOwnerSelectors, GroupsPutExemptionsFirstThenEnforceRules) {
  const auto c = Compile(R"(
[[rules]]
name = "a-monitor"
boundary = "remote"
ports = [80]
mode = "monitor"
comms = ["curl"]
[[rules]]
name = "b-enforce"
boundary = "remote"
ports = [443]
mode = "enforce"
cgroups = ["/svc"]
[[exemptions]]
name = "z-exempt"
cidrs = ["198.18.200.0/24"]
users = ["alice"]
reason = "r"
owner = "o"
)");
  ASSERT_EQ(c.owner_groups.size(), 3u);
  EXPECT_TRUE(c.owner_groups[0].is_exemption);
  EXPECT_FALSE(c.owner_groups[1].is_exemption);
  EXPECT_EQ(c.rule_names.at(c.owner_groups[1].index), "b-enforce");
  EXPECT_EQ(c.owner_groups[1].mode, TW_MODE_ENFORCE);
  EXPECT_EQ(c.rule_names.at(c.owner_groups[2].index), "a-monitor");
}

TEST(PolicyOwnerSelectors, PlainRuleDecidesForEveryoneSelectorRuleIsListed) {
  const auto c = Compile(R"(
[[rules]]
name = "all-monitor"
boundary = "remote"
ports = [443]
mode = "monitor"
[[rules]]
name = "svc-enforce"
boundary = "remote"
ports = [443, 8443]
mode = "enforce"
cgroups = ["/svc/a.service"]
)");
  const KernelTables t = build_kernel_tables(c, FakeResolver());
  const KernelPortRow* r443 = RowFor(t, 443);
  ASSERT_NE(r443, nullptr);
  EXPECT_EQ(r443->verdict.has_rule, 1);
  EXPECT_EQ(c.rule_names.at(r443->verdict.rule_id), "all-monitor");
  EXPECT_EQ(r443->verdict.mode, TW_MODE_MONITOR);
  EXPECT_EQ(r443->verdict.owner_groups, 1u);
  // 8443: only the selector rule covers it, so there is a row without a
  // rule for everyone.
  const KernelPortRow* r8443 = RowFor(t, 8443);
  ASSERT_NE(r8443, nullptr);
  EXPECT_EQ(r8443->verdict.has_rule, 0);
  EXPECT_EQ(r8443->verdict.owner_groups, 1u);
  EXPECT_EQ(RowFor(t, 80), nullptr);

  ASSERT_EQ(t.owners.groups.size(), 1u);
  EXPECT_EQ(c.rule_names.at(t.owners.groups[0].rule_id), "svc-enforce");
  EXPECT_EQ(t.owners.groups[0].mode, TW_MODE_ENFORCE);
  EXPECT_EQ(t.owners.cgroups, (std::map<uint64_t, uint64_t>{{101, 1}}));
  EXPECT_EQ(t.owners.meta.groups, 1u);
  EXPECT_EQ(t.owners.meta.uid_free, 1u);
  EXPECT_EQ(t.owners.meta.comm_free, 1u);
  EXPECT_EQ(t.owners.meta.cgroup_free, 0u);
  EXPECT_EQ(t.owners.meta.cgroup_levels, 1u << 2) << "/svc/a.service is level 2";
  // An enforce rule for some owners does not make fragments to the
  // address droppable: they carry no owner.
  ASSERT_FALSE(t.v4.empty());
  for (const auto& row : t.v4) EXPECT_FALSE(row.value.flags & TW_DEST_ANY_ENFORCE);
}

TEST(PolicyOwnerSelectors, SelectorExemptionIsAGroupNotAnExemptionForEveryone) {
  const auto c = Compile(R"(
[[rules]]
name = "r"
boundary = "remote"
ports = [443]
mode = "enforce"
[[exemptions]]
name = "alice-anywhere"
users = ["alice", "bob", 7]
reason = "r"
owner = "o"
)");
  const KernelTables t = build_kernel_tables(c, FakeResolver());
  const KernelPortRow* row = RowFor(t, 443);
  ASSERT_NE(row, nullptr);
  EXPECT_EQ(row->verdict.exempt, 0);
  EXPECT_EQ(row->verdict.owner_groups, 1u);
  EXPECT_EQ(t.owners.meta.exempt_groups, 1u);
  EXPECT_EQ(t.owners.uids, (std::map<uint32_t, uint64_t>{{7, 1}, {1001, 1}}));
  ASSERT_EQ(t.owners.unresolved.size(), 1u);
  EXPECT_NE(t.owners.unresolved[0].find("user \"bob\""), std::string::npos);
}

TEST(PolicyOwnerSelectors, SeveralKindsInOneEntryAreAllRequired) {
  const auto c = Compile(R"(
[[rules]]
name = "r"
boundary = "remote"
ports = [443]
cgroups = ["/svc", "/nowhere"]
comms = ["psql"]
)");
  const KernelTables t = build_kernel_tables(c, FakeResolver());
  EXPECT_EQ(t.owners.meta.uid_free, 1u);
  EXPECT_EQ(t.owners.meta.comm_free, 0u);
  EXPECT_EQ(t.owners.meta.cgroup_free, 0u);
  EXPECT_EQ(t.owners.comms, (std::map<std::string, uint64_t>{{"psql", 1}}));
  EXPECT_EQ(t.owners.cgroups, (std::map<uint64_t, uint64_t>{{100, 1}}));
  ASSERT_EQ(t.owners.unresolved.size(), 1u);
  EXPECT_NE(t.owners.unresolved[0].find("/nowhere"), std::string::npos);
}

TEST(PolicyOwnerSelectors, OwnerTablesCompareEqualOnlyWhenTheResolutionIsTheSame) {
  const auto c = Compile(R"(
[[rules]]
name = "r"
boundary = "remote"
ports = [443]
cgroups = ["/later"]
)");
  OwnerResolver before = FakeResolver();
  OwnerResolver after = FakeResolver();
  after.cgroup_id = [](const std::string& p) -> std::optional<uint64_t> {
    if (p == "/later") return 555;
    return std::nullopt;
  };
  EXPECT_TRUE(build_owner_tables(c, before) == build_owner_tables(c, before));
  EXPECT_FALSE(build_owner_tables(c, before) == build_owner_tables(c, after));
}

TEST(PolicyOwnerSelectors, CgroupLevelCountsComponents) {
  EXPECT_EQ(cgroup_level("/"), 0u);
  EXPECT_EQ(cgroup_level("/a"), 1u);
  EXPECT_EQ(cgroup_level("/a/b.service"), 2u);
}

TEST(PolicyOwnerSelectors, HostResolverFindsRootAndTheCgroupRoot) {
  const OwnerResolver host = host_owner_resolver("/proc/self");
  EXPECT_EQ(host.uid("root").value_or(99), 0u);
  EXPECT_FALSE(host.uid("no-such-user-tlswall-test").has_value());
  // Any directory stands in for a cgroup mount: its inode is the id.
  EXPECT_TRUE(host.cgroup_id("/fd").has_value());
  EXPECT_FALSE(host.cgroup_id("/no-such-dir").has_value());
}

}  // namespace
}  // namespace tlswall::policy
