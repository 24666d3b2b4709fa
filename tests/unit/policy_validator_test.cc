// Cross-entry checks: duplicates, references, conflicting overlaps, expiry,
// reachability warnings and the kernel table limits.
#include <gtest/gtest.h>

#include <ctime>
#include <string>

#include "policy/policy.h"
#include "policy_test_support.h"

namespace tlswall::policy {
namespace {

const auto kNow = Utc(2026, 11, 21);

LoadResult Load(const std::string& text, std::chrono::system_clock::time_point now = kNow) {
  return load_policy_text("p.toml", text, now);
}

size_t Count(const LoadResult& r, Diagnostic::Severity s) {
  size_t n = 0;
  for (const auto& d : r.diagnostics) n += d.severity == s;
  return n;
}
size_t Warnings(const LoadResult& r) { return Count(r, Diagnostic::Severity::kWarning); }

// Lines 1-6.
const std::string kHead = R"(version = "t-1"
[boundaries.remote]
cidrs = ["198.18.128.0/17", "2001:db8:2::/48"]
[boundaries.inner]
cidrs = ["198.18.200.0/24"]
[boundaries.other]
cidrs = ["203.0.113.0/24"]
)";

std::string RuleText(const std::string& name, const std::string& boundary, const std::string& ports,
                     const std::string& extra = "") {
  return "[[rules]]\nname = \"" + name + "\"\nboundary = \"" + boundary + "\"\nports = " + ports +
         "\n" + extra;
}

// ---- duplicates and references ----

TEST(PolicyValidator, DuplicateRuleName) {
  const auto r = Load(kHead + RuleText("a", "remote", "[443]") + RuleText("a", "other", "[443]"));
  EXPECT_TRUE(HasDiag(
      r, "p.toml:13:8: error: ", "duplicate rule name \"a\"; it is already defined at p.toml:9:8"))
      << All(r);
  EXPECT_EQ(Errors(r), 1u) << All(r);
}

TEST(PolicyValidator, DuplicateExemptionName) {
  const std::string x =
      "[[exemptions]]\nname = \"x\"\nports = [443]\nreason = \"r\"\nowner = \"o\"\n";
  const auto r = Load(kHead + RuleText("a", "remote", "[443]") + x + x);
  EXPECT_TRUE(HasDiag(r, "p.toml:18:8: error: ",
                      "duplicate exemption name \"x\"; it is already defined at p.toml:13:8"))
      << All(r);
}

TEST(PolicyValidator, UnknownBoundarySuggests) {
  const auto r = Load(kHead + RuleText("a", "remote-regoin", "[443]"));
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(HasDiag(r, "p.toml:10:12: error: ",
                      "rule \"a\" names unknown boundary \"remote-regoin\"; defined boundaries: "
                      "inner, other, remote"))
      << All(r);
  const auto typo = Load(kHead + RuleText("a", "remot", "[443]"));
  EXPECT_TRUE(HasDiag(typo, "p.toml:10:12: error: ", "(did you mean \"remote\"?)")) << All(typo);
}

TEST(PolicyValidator, UnknownBoundaryWhenNoneDefined) {
  const auto r = Load("version = \"t\"\n" + RuleText("a", "nowhere", "[443]"));
  EXPECT_TRUE(
      HasDiag(r, "p.toml:4:12: error: ", "no boundaries are defined (add [boundaries.nowhere])"))
      << All(r);
}

// ---- overlaps ----

TEST(PolicyValidator, OverlapWithDifferentModeIsAnError) {
  const auto r = Load(kHead + RuleText("a", "remote", "[443, \"8000-8100\"]") +
                      RuleText("b", "inner", "[\"8050-9000\"]", "mode = \"enforce\"\n"));
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(HasDiag(r, "p.toml:12:1: error: ",
                      "rule \"b\" conflicts with rule \"a\" (at p.toml:8:1): both cover "
                      "198.18.200.0/24 port 8050-8100, but \"b\" is enforce with min_tls 1.2 and "
                      "\"a\" is monitor with min_tls 1.2"))
      << All(r);
  EXPECT_EQ(Errors(r), 1u) << All(r);
}

TEST(PolicyValidator, OverlapWithDifferentMinTlsIsAnError) {
  const auto r = Load(kHead + RuleText("a", "remote", "[443]", "min_tls = \"1.0\"\n") +
                      RuleText("b", "remote", "[\"400-500\"]"));
  EXPECT_TRUE(HasDiag(r, "p.toml:13:1: error: ",
                      "rule \"b\" conflicts with rule \"a\" (at p.toml:8:1): both cover "
                      "198.18.128.0/17 port 443, but \"b\" is monitor with min_tls 1.2 and \"a\" "
                      "is monitor with min_tls 1.0"))
      << All(r);
}

TEST(PolicyValidator, OverlapThroughCoveringIpv6Prefix) {
  const auto r = Load(
      "version = \"t\"\n[boundaries.wide]\ncidrs = [\"2001:db8::/32\"]\n[boundaries.narrow]\ncidrs "
      "= [\"10.0.0.0/8\", \"2001:db8:2:3::/64\"]\n" +
      RuleText("a", "wide", "[443]", "mode = \"enforce\"\n") + RuleText("b", "narrow", "[443]"));
  EXPECT_TRUE(HasDiag(r, "p.toml:11:1: error: ", "both cover 2001:db8:2:3::/64 port 443"))
      << All(r);
}

TEST(PolicyValidator, OverlapWithSameSettingsIsFine) {
  const auto r = Load(kHead + RuleText("a", "remote", "[443]", "mode = \"enforce\"\n") +
                      RuleText("b", "inner", "[443]", "mode = \"enforce\"\n"));
  EXPECT_TRUE(r.ok()) << All(r);
  EXPECT_TRUE(r.diagnostics.empty()) << All(r);
}

TEST(PolicyValidator, DifferentSettingsWithoutOverlapAreFine) {
  // Same addresses, disjoint ports; and overlapping ports, disjoint addresses.
  const auto r = Load(kHead + RuleText("a", "remote", "[443]", "mode = \"enforce\"\n") +
                      RuleText("b", "inner", "[\"444-500\"]") + RuleText("c", "other", "[443]"));
  EXPECT_TRUE(r.ok()) << All(r);
}

TEST(PolicyValidator, DefaultModeDecidesConflicts) {
  const std::string rules =
      RuleText("a", "remote", "[443]", "mode = \"enforce\"\n") + RuleText("b", "inner", "[443]");
  EXPECT_FALSE(Load(kHead + rules).ok());
  EXPECT_TRUE(Load("default_mode = \"enforce\"\n" + kHead + rules).ok());
}

// ---- expiry ----

const std::string kExpiring =
    "[[exemptions]]\nname = \"legacy-ldap\"\ncidrs = [\"198.18.200.0/24\"]\nports = "
    "[389]\nreason = \"r\"\nowner = \"o\"\nexpires = 2026-01-01\n";  // lines 12-18

TEST(PolicyValidator, ExpiredExemptionIsAnError) {
  const auto r = Load(kHead + RuleText("a", "remote", "[389]") + kExpiring);
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(HasDiag(r, "p.toml:18:11: error: ",
                      "exemption \"legacy-ldap\" expired on 2026-01-01; remove it or extend "
                      "expires"))
      << All(r);
  EXPECT_EQ(Errors(r), 1u) << All(r);
}

TEST(PolicyValidator, ExemptionIsActiveThroughItsExpiryDay) {
  const std::string text = kHead + RuleText("a", "remote", "[389]") + kExpiring;
  EXPECT_TRUE(Load(text, Utc(2026, 1, 1, 0, 0, 0)).ok());
  EXPECT_TRUE(Load(text, Utc(2026, 1, 1, 23, 59, 59)).ok());
  EXPECT_FALSE(Load(text, Utc(2026, 1, 2, 0, 0, 0)).ok());
}

TEST(PolicyValidator, ExpiredStringDate) {
  const auto r = Load(kHead + RuleText("a", "remote", "[389]") +
                      "[[exemptions]]\nname = \"x\"\nports = [389]\nreason = \"r\"\nowner = "
                      "\"o\"\nexpires = \"2025-06-30\"\n");
  EXPECT_TRUE(HasDiag(r, "p.toml:17:11: error: ", "exemption \"x\" expired on 2025-06-30"))
      << All(r);
}

// ---- warnings ----

TEST(PolicyValidator, NoRulesIsAWarning) {
  const auto r = Load(kHead);
  ASSERT_TRUE(r.ok()) << All(r);
  EXPECT_TRUE(HasDiag(r, "p.toml:1:1: warning: ", "the policy has no rules")) << All(r);
  EXPECT_EQ(Warnings(r), 1u);
}

TEST(PolicyValidator, UnreachableExemptionIsAWarning) {
  const std::string rule = RuleText("a", "remote", "[443]");
  // Wrong port.
  auto r = Load(kHead + rule +
                "[[exemptions]]\nname = \"x\"\ncidrs = [\"198.18.200.0/24\"]\nports = "
                "[389]\nreason = \"r\"\nowner = \"o\"\n");
  ASSERT_TRUE(r.ok()) << All(r);
  EXPECT_TRUE(HasDiag(r, "p.toml:12:1: warning: ",
                      "exemption \"x\" can never apply: no rule covers any of its destinations and "
                      "ports"))
      << All(r);
  // Addresses outside every ruled boundary ("other" has no rule).
  r = Load(kHead + rule +
           "[[exemptions]]\nname = \"x\"\ncidrs = [\"203.0.113.0/25\", \"2001:db8:3::/48\"]\n"
           "reason = \"r\"\nowner = \"o\"\n");
  EXPECT_TRUE(HasDiag(r, "p.toml:12:1: warning: ", "can never apply")) << All(r);
  // Covering the boundary from outside (wider prefix) does apply.
  r = Load(kHead + rule +
           "[[exemptions]]\nname = \"x\"\ncidrs = [\"198.0.0.0/8\"]\nreason = \"r\"\nowner = "
           "\"o\"\n");
  EXPECT_EQ(Warnings(r), 0u) << All(r);
  // Any destination, matching port.
  r = Load(kHead + rule +
           "[[exemptions]]\nname = \"x\"\nports = [\"400-500\"]\nreason = \"r\"\nowner = \"o\"\n");
  EXPECT_EQ(Warnings(r), 0u) << All(r);
}

// ---- limits ----

TEST(PolicyValidator, TooManyBoundaries) {
  std::string text = "version = \"t\"\n";
  for (int i = 0; i < TW_MAX_BOUNDARIES + 1; ++i) {
    char name[16];
    std::snprintf(name, sizeof(name), "b%03d", i);
    text += "[boundaries." + std::string(name) + "]\ncidrs = [\"10." + std::to_string(i) +
            ".0.0/16\"]\n";
  }
  text += RuleText("a", "b000", "[443]");
  const auto r = Load(text);
  EXPECT_FALSE(r.ok());
  // The 129th boundary (b128) is on line 2 + 128*2.
  EXPECT_TRUE(HasDiag(r, "p.toml:258:13: error: ",
                      "too many boundaries: the policy needs 129, the kernel tables hold at most "
                      "128 (TW_MAX_BOUNDARIES)"))
      << All(r);
  EXPECT_EQ(Errors(r), 1u);
}

TEST(PolicyValidator, TooManyRuleEntries) {
  std::string ports = "[";
  for (int i = 1; i <= 200; ++i) ports += std::to_string(i) + ",";
  ports += "]";
  std::string ports2 = "[";
  for (int i = 1001; i <= 1057; ++i) ports2 += std::to_string(i) + ",";
  ports2 += "]";
  const auto r = Load(kHead + RuleText("a", "remote", ports) + RuleText("b", "remote", ports2));
  EXPECT_TRUE(HasDiag(r, "p.toml:12:1: error: ",
                      "too many rule entries (one per rule and port range): the policy needs 257, "
                      "the kernel tables hold at most 256 (TW_MAX_RULE_ENTRIES)"))
      << All(r);
  // One fewer fits.
  ports2 = "[";
  for (int i = 1001; i <= 1056; ++i) ports2 += std::to_string(i) + ",";
  ports2 += "]";
  EXPECT_TRUE(Load(kHead + RuleText("a", "remote", ports) + RuleText("b", "remote", ports2)).ok());
}

TEST(PolicyValidator, TooManyExemptionsAndEntries) {
  std::string text = kHead + RuleText("a", "remote", "[\"1-65535\"]");
  for (int i = 0; i < TW_MAX_EXEMPTIONS + 1; ++i) {
    text += "[[exemptions]]\nname = \"x" + std::to_string(i) +
            "\"\nports = [1, 2]\nreason = \"r\"\nowner = \"o\"\n";
  }
  const auto r = Load(text);
  // Exemption 129 (x128) starts at line 12 + 128*5.
  EXPECT_TRUE(HasDiag(r, "p.toml:652:1: error: ",
                      "too many exemptions: the policy needs 129, the kernel tables hold at most "
                      "128 (TW_MAX_EXEMPTIONS)"))
      << All(r);
  // 2 entries each: the 129th exemption (x128) needs entries 257-258.
  EXPECT_TRUE(HasDiag(r, "p.toml:652:1: error: ",
                      "too many exemption entries (one per exemption and port range): the policy "
                      "needs 258, the kernel tables hold at most 256 (TW_MAX_EXEMPT_ENTRIES)"))
      << All(r);
}

TEST(PolicyValidator, ExpiredExemptionsDoNotCountTowardsLimits) {
  // 128 active + 1 expired: only the expiry is reported.
  std::string text = kHead + RuleText("a", "remote", "[443]");
  for (int i = 0; i < TW_MAX_EXEMPTIONS; ++i) {
    text += "[[exemptions]]\nname = \"x" + std::to_string(i) +
            "\"\nports = [443]\nreason = \"r\"\nowner = \"o\"\n";
  }
  text +=
      "[[exemptions]]\nname = \"old\"\nports = [443]\nreason = \"r\"\nowner = \"o\"\nexpires = "
      "2020-01-01\n";
  const auto r = Load(text);
  EXPECT_EQ(Errors(r), 1u) << All(r);
  EXPECT_TRUE(HasDiag(r, "p.toml:", "exemption \"old\" expired on 2020-01-01")) << All(r);
}

TEST(PolicyValidator, TooManyPrefixes) {
  std::string text = "version = \"t\"\n[boundaries.big]\ncidrs = [\n";
  // TW_MAX_PREFIXES + 1 distinct /32s, one per line (lines 4..).
  for (int i = 0; i < TW_MAX_PREFIXES + 1; ++i) {
    text += "\"10." + std::to_string(i / 256) + "." + std::to_string(i % 256) + ".1/32\",\n";
  }
  text += "]\n" + RuleText("a", "big", "[443]");
  const auto r = Load(text);
  EXPECT_TRUE(HasDiag(r, "p.toml:16388:1: error: ",
                      "too many distinct IPv4 prefixes: the policy needs 16385, the kernel tables "
                      "hold at most 16384 (TW_MAX_PREFIXES)"))
      << All(r);
  EXPECT_EQ(Errors(r), 1u);
}

TEST(PolicyValidator, RepeatedPrefixesCountOnce) {
  // The same prefix in two boundaries is one LPM row.
  std::string a = "[", b = "[";
  for (int i = 0; i < 9000; ++i) {
    const std::string c =
        "\"10." + std::to_string(i / 256) + "." + std::to_string(i % 256) + ".0/24\",";
    a += c;
    b += c;
  }
  const auto r =
      Load("version = \"t\"\n[boundaries.a]\ncidrs = " + a + "]\n[boundaries.b]\ncidrs = " + b +
           "]\n" + RuleText("a", "a", "[443]") + RuleText("b", "b", "[443]"));
  EXPECT_TRUE(r.ok()) << All(r).substr(0, 2000);
}

TEST(PolicyValidator, OverlapWithDifferentPreamblesIsAnError) {
  const auto r = Load(kHead + RuleText("a", "remote", "[5432]", "preambles = [\"postgresql\"]\n") +
                      RuleText("b", "remote", "[\"5000-6000\"]"));
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(HasDiag(r, "p.toml:13:1: error: ",
                      "\"a\" is monitor with min_tls 1.2 and preambles postgresql; give "
                      "overlapping rules the same mode, min_tls, preambles and udp"))
      << All(r);
  const auto same =
      Load(kHead + RuleText("a", "remote", "[5432]", "preambles = [\"postgresql\"]\n") +
           RuleText("b", "remote", "[\"5000-6000\"]", "preambles = [\"postgresql\"]\n"));
  EXPECT_TRUE(same.ok()) << All(same);
}

TEST(PolicyValidator, OverlapWithDifferentUdpVerdictsIsAnError) {
  const auto r = Load(kHead + RuleText("a", "remote", "[443]", "udp = \"quic\"\n") +
                      RuleText("b", "remote", "[\"400-500\"]"));
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(HasDiag(r, "p.toml:13:1: error: ",
                      "\"a\" is monitor with min_tls 1.2 and udp quic; give overlapping rules "
                      "the same mode, min_tls, preambles and udp"))
      << All(r);
  // Written out or left to its default, allow is allow.
  const auto same = Load(kHead + RuleText("a", "remote", "[443]", "udp = \"allow\"\n") +
                         RuleText("b", "remote", "[\"400-500\"]"));
  EXPECT_TRUE(same.ok()) << All(same);
  const auto disjoint = Load(kHead + RuleText("a", "remote", "[443]", "udp = \"block\"\n") +
                             RuleText("b", "remote", "[\"444-500\"]", "udp = \"quic\"\n"));
  EXPECT_TRUE(disjoint.ok()) << All(disjoint);
}

}  // namespace
}  // namespace tlswall::policy
