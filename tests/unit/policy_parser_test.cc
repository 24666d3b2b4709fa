// Per-value checks of policy files: syntax, types, keys, CIDRs, ports, TLS
// versions, names, dates. Every test pins the exact file:line:col.
#include <gtest/gtest.h>

#include <ctime>
#include <ostream>
#include <string>

#include "policy/policy.h"
#include "policy_test_support.h"

namespace tlswall::policy {
namespace {

const auto kNow = Utc(2026, 11, 21);

LoadResult Load(const std::string& text) { return load_policy_text("p.toml", text, kNow); }

// A valid policy; tests append to it or replace parts of it.
const std::string kHead = R"(version = "t-1"
[boundaries.remote]
cidrs = ["198.18.128.0/17"]
)";
// Line 4 onwards.
const std::string kRule = R"([[rules]]
name = "remote-tls"
boundary = "remote"
ports = [443]
)";

TEST(PolicyParser, GoodPolicyLoads) {
  const auto r = Load(kHead + kRule);
  ASSERT_TRUE(r.ok()) << All(r);
  EXPECT_TRUE(r.diagnostics.empty()) << All(r);
  ASSERT_EQ(r.policy->boundaries.size(), 1u);
  ASSERT_EQ(r.policy->rules.size(), 1u);
  EXPECT_EQ(r.policy->version, "t-1");
  EXPECT_EQ(r.policy->rules[0].mode, Mode::kMonitor);
  EXPECT_EQ(r.policy->rules[0].min_tls, 0x0303);
}

TEST(PolicyParser, SyntaxErrorHasPosition) {
  const auto r = Load("version = \"t-1\"\nrules = [1,\n");
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(HasDiag(r, "p.toml:2:13: error: syntax error:", "end-of-file")) << All(r);
  EXPECT_EQ(Errors(r), 1u) << All(r);  // no "no version"/"no rules" echoes
}

TEST(PolicyParser, SyntaxErrorRedefinedTable) {
  const auto r = Load(kHead + "[boundaries.remote]\ncidrs = [\"10.0.0.0/8\"]\n");
  EXPECT_TRUE(HasDiag(r, "p.toml:4:1: error: syntax error:", "remote")) << All(r);
}

TEST(PolicyParser, VersionWrongType) {
  const auto r = Load("version = 5\n[boundaries.remote]\ncidrs = [\"198.18.128.0/17\"]\n" + kRule);
  EXPECT_TRUE(HasDiag(r, "p.toml:1:11: error: ", "version must be a string, not an integer"))
      << All(r);
  EXPECT_EQ(Errors(r), 1u) << All(r);  // not also "the policy has no version"
}

TEST(PolicyParser, VersionEmpty) {
  const auto r = Load("version = \"  \"\n");
  EXPECT_TRUE(HasDiag(r, "p.toml:1:11: error: ", "version must not be empty")) << All(r);
}

TEST(PolicyParser, MissingVersion) {
  const auto r = Load("[boundaries.remote]\ncidrs = [\"198.18.128.0/17\"]\n" + kRule);
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(HasDiag(r, "p.toml:1:1: error: ", "the policy has no version")) << All(r);
}

TEST(PolicyParser, UnknownTopLevelKeySuggests) {
  const auto r = Load("verison = \"x\"\n" + kHead + kRule);
  EXPECT_TRUE(HasDiag(r, "p.toml:1:1: error: ",
                      "unknown key \"verison\" at the top level (did you mean \"version\"?); "
                      "accepted keys: version, default_mode, default_min_tls, boundaries, rules, "
                      "exemptions"))
      << All(r);
}

TEST(PolicyParser, UnknownKeyInRule) {
  const auto r = Load(kHead + kRule + "prot = [80]\n");
  EXPECT_TRUE(HasDiag(r, "p.toml:8:1: error: ",
                      "unknown key \"prot\" in rule \"remote-tls\" (did you mean \"ports\"?); "
                      "accepted keys: name, boundary, ports, mode, min_tls"))
      << All(r);
}

TEST(PolicyParser, UnknownKeyInBoundary) {
  const auto r = Load(kHead + "color = \"red\"\n" + kRule);
  EXPECT_TRUE(HasDiag(r, "p.toml:4:1: error: ",
                      "unknown key \"color\" in boundary \"remote\"; accepted keys: description, "
                      "cidrs"))
      << All(r);
}

TEST(PolicyParser, UnknownKeyInExemption) {
  const auto r = Load(kHead + kRule +
                      "[[exemptions]]\nname = \"x\"\nports = [443]\nreason = \"r\"\nowner = "
                      "\"o\"\nexpiry = 2027-01-01\n");
  EXPECT_TRUE(HasDiag(r, "p.toml:13:1: error: ",
                      "unknown key \"expiry\" in exemption \"x\" (did you mean \"expires\"?); "
                      "accepted keys: name, cidrs, ports, reason, owner, expires"))
      << All(r);
}

TEST(PolicyParser, RulesMustBeArrayOfTables) {
  const auto r = Load(kHead + "[rules]\nname = \"a\"\n");
  EXPECT_TRUE(HasDiag(r, "p.toml:4:1: error: ",
                      "rules must be an array of tables: write each entry as [[rules]], not a "
                      "table"))
      << All(r);
}

TEST(PolicyParser, BoundariesMustBeTable) {
  const auto r = Load("version = \"t\"\nboundaries = [\"10.0.0.0/8\"]\n");
  EXPECT_TRUE(HasDiag(r, "p.toml:2:14: error: ", "boundaries must be a table of boundaries"))
      << All(r);
}

TEST(PolicyParser, RuleMissingName) {
  const auto r = Load(kHead + "[[rules]]\nboundary = \"remote\"\nports = [443]\n");
  EXPECT_TRUE(HasDiag(r, "p.toml:4:1: error: ", "rule is missing required key \"name\"")) << All(r);
}

TEST(PolicyParser, RuleMissingBoundary) {
  const auto r = Load(kHead + "[[rules]]\nname = \"a\"\nports = [443]\n");
  EXPECT_TRUE(HasDiag(r, "p.toml:4:1: error: ", "rule \"a\" is missing required key \"boundary\""))
      << All(r);
  EXPECT_EQ(Errors(r), 1u) << All(r);
}

TEST(PolicyParser, RuleMissingPorts) {
  const auto r = Load(kHead + "[[rules]]\nname = \"a\"\nboundary = \"remote\"\n");
  EXPECT_TRUE(HasDiag(r, "p.toml:4:1: error: ", "rule \"a\" is missing required key \"ports\""))
      << All(r);
}

TEST(PolicyParser, RuleNameWrongType) {
  const auto r = Load(kHead + "[[rules]]\nname = 7\nboundary = \"remote\"\nports = [443]\n");
  EXPECT_TRUE(HasDiag(r, "p.toml:5:8: error: ", "rule name must be a string, not an integer"))
      << All(r);
}

TEST(PolicyParser, InvalidBoundaryName) {
  const auto r = Load("version = \"t\"\n[boundaries.\"bad name\"]\ncidrs = [\"10.0.0.0/8\"]\n");
  EXPECT_TRUE(HasDiag(r, "p.toml:2:13: error: ",
                      "boundary name \"bad name\" is invalid: use 1-63 characters from A-Z a-z "
                      "0-9 _ . -"))
      << All(r);
}

TEST(PolicyParser, BoundaryNameTooLong) {
  const std::string name(64, 'a');
  const auto r = Load("version = \"t\"\n[boundaries." + name + "]\ncidrs = [\"10.0.0.0/8\"]\n");
  EXPECT_TRUE(HasDiag(r, "p.toml:2:13: error: ", "is invalid: use 1-63 characters")) << All(r);
}

// ---- CIDRs ----

struct CidrCase {
  const char* text;
  const char* fragment;
};
void PrintTo(const CidrCase& c, std::ostream* os) { *os << c.text; }

class PolicyParserBadCidr : public ::testing::TestWithParam<CidrCase> {};

TEST_P(PolicyParserBadCidr, IsRejectedAtTheValue) {
  const auto r = Load("version = \"t\"\n[boundaries.b]\ncidrs = [\"10.0.0.0/8\", \"" +
                      std::string(GetParam().text) + "\"]\n");
  EXPECT_FALSE(r.ok());
  // Column 24: the second array element.
  EXPECT_TRUE(HasDiag(r, "p.toml:3:24: error: ", GetParam().fragment)) << All(r);
}

INSTANTIATE_TEST_SUITE_P(
    All, PolicyParserBadCidr,
    ::testing::Values(
        CidrCase{"198.18.0/16",
                 "\"198.18.0/16\" is not a valid CIDR: \"198.18.0\" is not an IPv4 "
                 "address"},
        CidrCase{"bogus", "\"bogus\" is not a valid CIDR"},
        CidrCase{"2001:db8::g/32", "\"2001:db8::g\" is not an IPv6 address"},
        CidrCase{"198.18.0.0/33", "prefix length /33 is out of range for IPv4 (0-32)"},
        CidrCase{"2001:db8::/129", "prefix length /129 is out of range for IPv6 (0-128)"},
        CidrCase{"198.18.0.0/x", "the prefix length \"x\" is not a number from 0 to 32"},
        CidrCase{"198.18.0.0/", "the prefix length \"\" is not a number"},
        CidrCase{"198.18.0.1/16",
                 "\"198.18.0.1/16\" has host bits set after the /16 prefix; did you mean "
                 "\"198.18.0.0/16\"?"},
        CidrCase{"2001:db8:2::1/48", "did you mean \"2001:db8:2::/48\"?"},
        CidrCase{"::ffff:198.18.0.0/112",
                 "is an IPv4-mapped IPv6 CIDR, which tlswall does not accept; write it as IPv4: "
                 "\"198.18.0.0/16\""},
        CidrCase{"::ffff:198.18.0.7/128", "write it as IPv4: \"198.18.0.7/32\""},
        CidrCase{"198.18.0.1",
                 "the prefix length is missing; for a single host write "
                 "\"198.18.0.1/32\""}));

TEST(PolicyParser, CidrWrongType) {
  const auto r = Load("version = \"t\"\n[boundaries.b]\ncidrs = [10]\n");
  EXPECT_TRUE(HasDiag(r, "p.toml:3:10: error: ",
                      "each of cidrs of boundary \"b\" must be a CIDR string such as "
                      "\"198.18.0.0/16\", not an integer"))
      << All(r);
}

TEST(PolicyParser, CidrsNotAnArray) {
  const auto r = Load("version = \"t\"\n[boundaries.b]\ncidrs = \"10.0.0.0/8\"\n");
  EXPECT_TRUE(HasDiag(r, "p.toml:3:9: error: ", "cidrs of boundary \"b\" must be an array"))
      << All(r);
}

TEST(PolicyParser, GoodCidrsParse) {
  const auto r = Load(
      "version = \"t\"\n[boundaries.b]\ncidrs = [\"0.0.0.0/0\", \"::/0\", "
      "\"198.18.0.7/32\", \"2001:db8:2::/48\"]\n" +
      std::string("[[rules]]\nname = \"r\"\nboundary = \"b\"\nports = [443]\n"));
  ASSERT_TRUE(r.ok()) << All(r);
  const auto& c = r.policy->boundaries[0].cidrs;
  ASSERT_EQ(c.size(), 4u);
  EXPECT_EQ(c[2].family, 4);
  EXPECT_EQ(c[2].prefix_len, 32);
  EXPECT_EQ(c[2].addr[0], 198);
  EXPECT_EQ(c[2].addr[3], 7);
  EXPECT_EQ(c[3].family, 6);
  EXPECT_EQ(c[3].prefix_len, 48);
  EXPECT_EQ(c[3].addr[0], 0x20);
  EXPECT_EQ(c[3].addr[5], 0x02);
  EXPECT_EQ(c[3].where.line, 3u);
  EXPECT_EQ(c[3].where.column, 48u);
}

TEST(PolicyParser, EmptyBoundaryList) {
  const auto r = Load("version = \"t\"\n[boundaries.b]\ncidrs = []\n");
  EXPECT_TRUE(HasDiag(r, "p.toml:3:9: error: ", "boundary \"b\" is empty: list at least one CIDR"))
      << All(r);
}

TEST(PolicyParser, BoundaryWithoutCidrs) {
  const auto r = Load("version = \"t\"\n[boundaries.b]\ndescription = \"nothing\"\n");
  EXPECT_TRUE(HasDiag(r, "p.toml:2:13: error: ", "boundary \"b\" is empty: it has no cidrs"))
      << All(r);
}

// ---- ports ----

struct PortCase {
  const char* value;  // TOML text of one array element
  const char* fragment;
};
void PrintTo(const PortCase& c, std::ostream* os) { *os << c.value; }

class PolicyParserBadPort : public ::testing::TestWithParam<PortCase> {};

TEST_P(PolicyParserBadPort, IsRejectedAtTheElement) {
  const auto r = Load(kHead + "[[rules]]\nname = \"a\"\nboundary = \"remote\"\nports = [443, " +
                      GetParam().value + "]\n");
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(HasDiag(r, "p.toml:7:15: error: ", GetParam().fragment)) << All(r);
  EXPECT_EQ(Errors(r), 1u) << All(r);
}

INSTANTIATE_TEST_SUITE_P(
    All, PolicyParserBadPort,
    ::testing::Values(
        PortCase{"0", "port 0 is out of range; ports are 1-65535"},
        PortCase{"65536", "port 65536 is out of range; ports are 1-65535"},
        PortCase{"-5", "port -5 is out of range"},
        PortCase{"\"0\"", "port \"0\" is out of range; ports are 1-65535"},
        PortCase{"\"70000\"", "port \"70000\" is out of range"},
        PortCase{"\"1-65536\"", "port \"1-65536\" is out of range"},
        PortCase{"\"9000-8000\"",
                 "port range \"9000-8000\" is reversed (9000 > 8000); did you mean "
                 "\"8000-9000\"?"},
        PortCase{"\"http\"",
                 "port \"http\" is malformed; write a number (443) or a range string "
                 "(\"8000-8100\")"},
        PortCase{"\"1-2-3\"", "port \"1-2-3\" is malformed"},
        PortCase{"\"80-\"", "port \"80-\" is malformed"},
        PortCase{"\" 80\"", "port \" 80\" is malformed"},
        PortCase{"\"\"", "port \"\" is malformed"},
        PortCase{"true",
                 "each of ports of rule \"a\" must be a port number or a \"LO-HI\" range string, "
                 "not a boolean"},
        PortCase{"4.5", "not a floating-point number"}));

TEST(PolicyParser, EmptyPortsList) {
  const auto r = Load(kHead + "[[rules]]\nname = \"a\"\nboundary = \"remote\"\nports = []\n");
  EXPECT_TRUE(HasDiag(
      r, "p.toml:7:9: error: ", "ports of rule \"a\" is empty; list at least one port, e.g. [443]"))
      << All(r);
}

TEST(PolicyParser, PortsNotAnArray) {
  const auto r = Load(kHead + "[[rules]]\nname = \"a\"\nboundary = \"remote\"\nports = 443\n");
  EXPECT_TRUE(HasDiag(r, "p.toml:7:9: error: ",
                      "ports of rule \"a\" must be an array of ports, e.g. [443, \"8000-8100\"], "
                      "not an integer"))
      << All(r);
}

TEST(PolicyParser, GoodPortsParse) {
  const auto r = Load(kHead +
                      "[[rules]]\nname = \"a\"\nboundary = \"remote\"\nports = [443, \"5432\", "
                      "\"8000-8100\", 65535, \"1-65535\"]\n");
  ASSERT_TRUE(r.ok()) << All(r);
  const auto& p = r.policy->rules[0].ports;
  ASSERT_EQ(p.size(), 5u);
  EXPECT_EQ(p[0].lo, 443);
  EXPECT_EQ(p[0].hi, 443);
  EXPECT_EQ(p[1].lo, 5432);
  EXPECT_EQ(p[1].hi, 5432);
  EXPECT_EQ(p[2].lo, 8000);
  EXPECT_EQ(p[2].hi, 8100);
  EXPECT_EQ(p[2].where.column, 23u);
  EXPECT_EQ(p[3].lo, 65535);
  EXPECT_EQ(p[4].lo, 1);
  EXPECT_EQ(p[4].hi, 65535);
}

// ---- modes and TLS versions ----

// A minimum of TLS 1.3 is held against the version the server chooses
// (the classifier's ingress check), so it is accepted.
TEST(PolicyParser, MinTls13IsAccepted) {
  const auto r = Load(kHead + kRule + "min_tls = \"1.3\"\n");
  ASSERT_TRUE(r.policy) << All(r);
  EXPECT_EQ(r.policy->rules.at(0).min_tls, 0x0304);
}

TEST(PolicyParser, DefaultMinTls13IsAccepted) {
  const auto r = Load("default_min_tls = \"1.3\"\n" + kHead + kRule);
  ASSERT_TRUE(r.policy) << All(r);
  EXPECT_EQ(r.policy->rules.at(0).min_tls, 0x0304);
}

TEST(PolicyParser, UnknownTlsVersion) {
  const auto r = Load(kHead + kRule + "min_tls = \"1.4\"\n");
  EXPECT_TRUE(HasDiag(r, "p.toml:8:11: error: ",
                      "unknown TLS version \"1.4\" in min_tls; accepted: \"1.0\", \"1.1\", "
                      "\"1.2\", \"1.3\""))
      << All(r);
}

TEST(PolicyParser, TlsVersionAsNumber) {
  const auto r = Load(kHead + kRule + "min_tls = 1.2\n");
  EXPECT_TRUE(HasDiag(r, "p.toml:8:11: error: ",
                      "min_tls must be a quoted string such as \"1.2\", not a floating-point "
                      "number"))
      << All(r);
}

TEST(PolicyParser, AcceptedTlsVersions) {
  for (const auto& [text, wire] :
       {std::pair<std::string, uint16_t>{"1.0", 0x0301}, {"1.1", 0x0302}, {"1.2", 0x0303}}) {
    const auto r = Load(kHead + kRule + "min_tls = \"" + text + "\"\n");
    ASSERT_TRUE(r.ok()) << text << "\n" << All(r);
    EXPECT_EQ(r.policy->rules[0].min_tls, wire) << text;
  }
}

TEST(PolicyParser, UnknownMode) {
  const auto r = Load(kHead + kRule + "mode = \"block\"\n");
  EXPECT_TRUE(HasDiag(
      r, "p.toml:8:8: error: ", "unknown mode \"block\"; accepted: \"monitor\", \"enforce\""))
      << All(r);
}

TEST(PolicyParser, UnknownDefaultMode) {
  const auto r = Load("default_mode = \"Enforce\"\n" + kHead + kRule);
  EXPECT_TRUE(HasDiag(r, "p.toml:1:16: error: ", "unknown default_mode \"Enforce\"")) << All(r);
}

TEST(PolicyParser, DefaultsApplyToRulesWithoutSettings) {
  const auto r = Load("default_mode = \"enforce\"\ndefault_min_tls = \"1.1\"\n" + kHead + kRule +
                      "[[rules]]\nname = \"other\"\nboundary = \"remote\"\nports = [80]\nmode = "
                      "\"enforce\"\nmin_tls = \"1.2\"\n");
  ASSERT_TRUE(r.ok()) << All(r);
  EXPECT_EQ(r.policy->default_mode, Mode::kEnforce);
  EXPECT_EQ(r.policy->default_min_tls, 0x0302);
  EXPECT_EQ(r.policy->rules[0].mode, Mode::kEnforce);
  EXPECT_EQ(r.policy->rules[0].min_tls, 0x0302);
  EXPECT_EQ(r.policy->rules[1].min_tls, 0x0303);
}

// ---- exemptions ----

const std::string kExemptionHead = "[[exemptions]]\nname = \"x\"\n";  // lines 8-9

TEST(PolicyParser, ExemptionMissingReasonAndOwner) {
  const auto r = Load(kHead + kRule + kExemptionHead + "ports = [443]\n");
  EXPECT_TRUE(
      HasDiag(r, "p.toml:8:1: error: ", "exemption \"x\" is missing required key \"reason\""))
      << All(r);
  EXPECT_TRUE(
      HasDiag(r, "p.toml:8:1: error: ", "exemption \"x\" is missing required key \"owner\""))
      << All(r);
}

TEST(PolicyParser, ExemptionEmptyReason) {
  const auto r =
      Load(kHead + kRule + kExemptionHead + "ports = [443]\nreason = \" \"\nowner = \"o\"\n");
  EXPECT_TRUE(HasDiag(r, "p.toml:11:10: error: ", "reason of exemption \"x\" must not be empty"))
      << All(r);
}

TEST(PolicyParser, ExemptionNeedsCidrsOrPorts) {
  const auto r = Load(kHead + kRule + kExemptionHead + "reason = \"r\"\nowner = \"o\"\n");
  EXPECT_TRUE(
      HasDiag(r, "p.toml:8:1: error: ", "exemption \"x\" must limit cidrs, ports or owners"))
      << All(r);
}

TEST(PolicyParser, ExemptionEmptyCidrs) {
  const auto r = Load(kHead + kRule + kExemptionHead +
                      "cidrs = []\nports = [443]\nreason = \"r\"\nowner = \"o\"\n");
  EXPECT_TRUE(HasDiag(r, "p.toml:10:9: error: ",
                      "cidrs of exemption \"x\" is empty; remove the key to exempt any "
                      "destination"))
      << All(r);
}

TEST(PolicyParser, ExemptionBadCidr) {
  const auto r = Load(kHead + kRule + kExemptionHead +
                      "cidrs = [\"198.18.200.1/24\"]\nreason = \"r\"\nowner = \"o\"\n");
  EXPECT_TRUE(HasDiag(r, "p.toml:10:10: error: ", "did you mean \"198.18.200.0/24\"?")) << All(r);
}

TEST(PolicyParser, ExemptionBadDateString) {
  const auto r = Load(kHead + kRule + kExemptionHead +
                      "ports = [443]\nreason = \"r\"\nowner = \"o\"\nexpires = \"2027-02-30\"\n");
  EXPECT_TRUE(HasDiag(r, "p.toml:13:11: error: ",
                      "expires of exemption \"x\" \"2027-02-30\" is not a valid date; write "
                      "YYYY-MM-DD"))
      << All(r);
}

TEST(PolicyParser, ExemptionDateTimeRejected) {
  const auto r = Load(kHead + kRule + kExemptionHead +
                      "ports = [443]\nreason = \"r\"\nowner = \"o\"\nexpires = "
                      "2027-01-31T10:00:00Z\n");
  EXPECT_TRUE(HasDiag(r, "p.toml:13:11: error: ",
                      "expires of exemption \"x\" must be a date such as 2027-01-31 (no time of "
                      "day), not a date-time"))
      << All(r);
}

TEST(PolicyParser, ExemptionDateForms) {
  for (const std::string v : {"2027-01-31", "\"2027-01-31\""}) {
    const auto r = Load(kHead + kRule + kExemptionHead +
                        "ports = [443]\nreason = \"r\"\nowner = \"o\"\nexpires = " + v + "\n");
    ASSERT_TRUE(r.ok()) << v << "\n" << All(r);
    const auto& x = r.policy->exemptions[0];
    ASSERT_TRUE(x.expires.has_value());
    EXPECT_EQ(x.expires->year, 2027);
    EXPECT_EQ(x.expires->month, 1);
    EXPECT_EQ(x.expires->day, 31);
    EXPECT_EQ(x.reason, "r");
    EXPECT_EQ(x.owner, "o");
    EXPECT_TRUE(x.cidrs.empty());
  }
}

// ---- collecting everything ----

TEST(PolicyParser, CollectsAllErrorsInOrder) {
  const auto r = Load(R"(version = "t"
[boundaries.b]
cidrs = ["10.0.0.1/8", "10.0.0.0/40"]
[[rules]]
name = "a"
boundary = "b"
ports = [0, "9-1"]
mode = "block"
min_tls = "1.4"
)");
  ASSERT_FALSE(r.ok());
  ASSERT_EQ(Errors(r), 6u) << All(r);
  EXPECT_EQ(r.diagnostics[0].render().substr(0, 20), "p.toml:3:10: error: ");
  EXPECT_EQ(r.diagnostics[1].render().substr(0, 20), "p.toml:3:24: error: ");
  EXPECT_EQ(r.diagnostics[2].render().substr(0, 20), "p.toml:7:10: error: ");
  EXPECT_EQ(r.diagnostics[3].render().substr(0, 20), "p.toml:7:13: error: ");
  EXPECT_EQ(r.diagnostics[4].render().substr(0, 19), "p.toml:8:8: error: ");
  EXPECT_EQ(r.diagnostics[5].render().substr(0, 20), "p.toml:9:11: error: ");
}

TEST(PolicyParser, RenderFormats) {
  Diagnostic d;
  d.where = {"a.toml", 3, 7};
  d.message = "boom";
  EXPECT_EQ(d.render(), "a.toml:3:7: error: boom");
  d.severity = Diagnostic::Severity::kWarning;
  EXPECT_EQ(d.render(), "a.toml:3:7: warning: boom");
  d.where = {"/etc/tlswall/policy.d", 0, 0};
  EXPECT_EQ(d.render(), "/etc/tlswall/policy.d: warning: boom");
}

TEST(PolicyParser, TlsVersionNames) {
  EXPECT_EQ(tls_version_from_string("1.0"), 0x0301);
  EXPECT_EQ(tls_version_from_string("1.3"), 0x0304);
  EXPECT_EQ(tls_version_from_string("TLS1.2"), 0);
  EXPECT_EQ(tls_version_to_string(0x0302), "1.1");
  EXPECT_EQ(tls_version_to_string(0x0304), "1.3");
  EXPECT_EQ(tls_version_to_string(0x7f1c), "0x7f1c");
  EXPECT_STREQ(mode_name(Mode::kEnforce), "enforce");
  EXPECT_STREQ(mode_name(Mode::kMonitor), "monitor");
}

// ---- preambles ----

TEST(PolicyParser, PreamblesAreParsedIntoTheRulesMask) {
  const auto r = Load(kHead + kRule + "preambles = [\"mysql\", \"postgresql\"]\n");
  ASSERT_TRUE(r.ok()) << All(r);
  EXPECT_EQ(r.policy->rules[0].preambles,
            TW_PREAMBLE_BIT(TW_PREAMBLE_POSTGRESQL) | TW_PREAMBLE_BIT(TW_PREAMBLE_MYSQL));
  const auto none = Load(kHead + kRule);
  ASSERT_TRUE(none.ok()) << All(none);
  EXPECT_EQ(none.policy->rules[0].preambles, 0);
}

TEST(PolicyParser, UnknownPreambleNamesTheAcceptedOnesAndStartTls) {
  const auto r = Load(kHead + kRule + "preambles = [\"postgresql\", \"smtp\"]\n");
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(HasDiag(r, "p.toml:8:28: error: ",
                      "unknown preamble \"smtp\" in preambles of rule \"remote-tls\"; accepted: "
                      "\"postgresql\", \"mysql\" (SMTP STARTTLS"))
      << All(r);
  EXPECT_EQ(Errors(r), 1u) << All(r);
}

TEST(PolicyParser, PreamblesMustBeANonEmptyListOfDistinctNames) {
  const auto text = Load(kHead + kRule + "preambles = \"postgresql\"\n");
  EXPECT_FALSE(text.ok());
  EXPECT_TRUE(HasDiag(text, "p.toml:8:13: error: ", "preambles of rule \"remote-tls\""))
      << All(text);
  const auto empty = Load(kHead + kRule + "preambles = []\n");
  EXPECT_TRUE(
      HasDiag(empty, "p.toml:8:13: error: ", "is empty; remove the key to allow no preamble"))
      << All(empty);
  const auto twice = Load(kHead + kRule + "preambles = [\"mysql\", \"mysql\"]\n");
  EXPECT_TRUE(HasDiag(twice, "p.toml:8:23: error: ", "lists \"mysql\" twice")) << All(twice);
  const auto number = Load(kHead + kRule + "preambles = [5432]\n");
  EXPECT_TRUE(HasDiag(number, "p.toml:8:14: error: ", "each entry of preambles")) << All(number);
}

TEST(PolicyParser, PreambleNamesRoundTrip) {
  EXPECT_EQ(preamble_from_string("postgresql"), TW_PREAMBLE_POSTGRESQL);
  EXPECT_EQ(preamble_from_string("mysql"), TW_PREAMBLE_MYSQL);
  EXPECT_EQ(preamble_from_string("none"), TW_PREAMBLE_NONE);
  EXPECT_EQ(preamble_from_string("MySQL"), TW_PREAMBLE_NONE);
  EXPECT_EQ(preambles_to_string(0), "none");
  EXPECT_EQ(preambles_to_string(TW_PREAMBLE_BIT(TW_PREAMBLE_MYSQL) |
                                TW_PREAMBLE_BIT(TW_PREAMBLE_POSTGRESQL)),
            "postgresql, mysql");
}

// ---- udp ----

TEST(PolicyParser, UdpVerdictIsParsedAndDefaultsToAllow) {
  for (const auto& [text, want] : {std::pair<const char*, uint8_t>{"allow", TW_UDP_ALLOW},
                                   {"quic", TW_UDP_QUIC},
                                   {"block", TW_UDP_BLOCK}}) {
    const auto r = Load(kHead + kRule + "udp = \"" + text + "\"\n");
    ASSERT_TRUE(r.ok()) << All(r);
    EXPECT_EQ(r.policy->rules[0].udp, want) << text;
  }
  const auto absent = Load(kHead + kRule);
  ASSERT_TRUE(absent.ok()) << All(absent);
  EXPECT_EQ(absent.policy->rules[0].udp, TW_UDP_ALLOW);
}

TEST(PolicyParser, UnknownUdpVerdictNamesTheAcceptedOnes) {
  const auto r = Load(kHead + kRule + "udp = \"deny\"\n");
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(HasDiag(r, "p.toml:8:7: error: ",
                      "unknown udp of rule \"remote-tls\" \"deny\"; accepted: \"allow\", "
                      "\"quic\", \"block\""))
      << All(r);
  EXPECT_EQ(Errors(r), 1u) << All(r);
  const auto type = Load(kHead + kRule + "udp = true\n");
  EXPECT_FALSE(type.ok());
  EXPECT_TRUE(HasDiag(type, "p.toml:8:7: error: ", "udp of rule \"remote-tls\"")) << All(type);
  const auto list = Load(kHead + kRule + "udp = [\"quic\"]\n");
  EXPECT_FALSE(list.ok()) << All(list);
}

TEST(PolicyParser, UdpVerdictNamesRoundTrip) {
  for (uint8_t u = 0; u < TW_UDP_MAX; ++u)
    EXPECT_EQ(udp_verdict_from_string(udp_verdict_name(u)), u);
  EXPECT_EQ(udp_verdict_from_string("QUIC"), TW_UDP_MAX);
  EXPECT_STREQ(udp_verdict_name(TW_UDP_MAX), "unknown");
}

}  // namespace
}  // namespace tlswall::policy
