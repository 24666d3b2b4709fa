// The policies shipped in configs/ must validate and compile.
#include <gtest/gtest.h>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "policy/policy.h"
#include "policy_test_support.h"

#ifndef TLSWALL_SOURCE_DIR
#error "TLSWALL_SOURCE_DIR must be defined by the build (tests/unit/CMakeLists.txt)"
#endif

namespace tlswall::policy {
namespace {

namespace fs = std::filesystem;

// A fixed "today": the shipped exemptions must not be expired at it.
std::chrono::system_clock::time_point Now() {
  std::tm tm{};
  tm.tm_year = 2026 - 1900;
  tm.tm_mon = 10;
  tm.tm_mday = 21;
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

void ExpectLoadsAndCompiles(const std::string& path) {
  SCOPED_TRACE(path);
  const auto r = load_policy(path, Now());
  for (const auto& d : r.diagnostics) {
    EXPECT_NE(d.severity, Diagnostic::Severity::kError) << d.render();
  }
  ASSERT_TRUE(r.ok()) << All(r);
  EXPECT_FALSE(r.policy->rules.empty());
  EXPECT_NO_THROW(compile_policy(*r.policy, Now()));
}

// Only the policy directories: other rooms keep other TOML files in configs/.
std::vector<std::string> ShippedPolicyFiles() {
  std::vector<std::string> files;
  for (const char* sub : {"configs/policy.d", "configs/examples"}) {
    const fs::path dir = fs::path(TLSWALL_SOURCE_DIR) / sub;
    for (const auto& e : fs::recursive_directory_iterator(dir)) {
      if (e.is_regular_file() && e.path().extension() == ".toml") files.push_back(e.path());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

TEST(PolicyConfigs, EveryShippedFileValidates) {
  const auto files = ShippedPolicyFiles();
  ASSERT_GE(files.size(), 3u);  // default.toml and at least two examples
  for (const auto& f : files) ExpectLoadsAndCompiles(f);
}

TEST(PolicyConfigs, PolicyDirectoryValidatesAsAWhole) {
  ExpectLoadsAndCompiles(std::string(TLSWALL_SOURCE_DIR) + "/configs/policy.d");
}

TEST(PolicyConfigs, DemoPolicyIsWhatTheSandboxExpects) {
  const auto r = load_policy(std::string(TLSWALL_SOURCE_DIR) + "/configs/policy.d", Now());
  ASSERT_TRUE(r.ok()) << All(r);
  const auto c = compile_policy(*r.policy, Now());
  EXPECT_EQ(c.version, "demo-1");
  EXPECT_EQ(c.boundary_names, std::vector<std::string>{"remote-region"});
  EXPECT_EQ(c.rule_names,
            (std::vector<std::string>{"remote-region-databases", "remote-region-tls"}));
  EXPECT_EQ(c.rule_modes, (std::vector<std::string>{"enforce", "enforce"}));
  EXPECT_EQ(c.exemption_names, std::vector<std::string>{"legacy-metrics"});
  // The databases rule (id 0): 3306 and 5432, after a PostgreSQL or MySQL
  // preamble. The TLS rule (id 1): five rows, no preamble.
  ASSERT_EQ(c.rules.size(), 7u);
  EXPECT_EQ(c.rules[0].port_lo, 3306);
  EXPECT_EQ(c.rules[1].port_lo, 5432);
  EXPECT_EQ(c.rules[5].port_lo, 8000);
  EXPECT_EQ(c.rules[5].port_hi, 8099);
  EXPECT_EQ(c.rules[6].port_lo, 9100);  // the exempted metrics port is covered
  EXPECT_EQ(c.rules[6].port_hi, 9100);
  for (const auto& e : c.rules) {
    EXPECT_EQ(e.mode, TW_MODE_ENFORCE);
    EXPECT_EQ(e.min_tls, 0x0303);
    EXPECT_EQ(e.preambles, e.rule_id == 0 ? TW_PREAMBLE_BIT(TW_PREAMBLE_POSTGRESQL) |
                                                TW_PREAMBLE_BIT(TW_PREAMBLE_MYSQL)
                                          : 0u)
        << e.port_lo;
  }
  ASSERT_EQ(c.exempts.size(), 1u);
  EXPECT_EQ(c.exempts[0].port_lo, 9100);
  ASSERT_EQ(c.v4.size(), 2u);  // 198.18.128.0/17 and 198.18.200.0/24
  EXPECT_EQ(c.v4[1].prefix_len, 24);
  EXPECT_EQ(c.v4[1].cls.boundary_mask[0], 1u);
  EXPECT_EQ(c.v4[1].cls.exempt_mask[0], 1u);
  ASSERT_EQ(c.v6.size(), 1u);
}

// The examples that use `udp` say what their comments say; the demo policy
// leaves UDP as it always was (allow).
TEST(PolicyConfigs, ExamplesUdpVerdicts) {
  const auto udp_of = [](const std::string& file) {
    const auto r = load_policy(std::string(TLSWALL_SOURCE_DIR) + "/configs/" + file, Now());
    std::map<std::string, std::string> out;
    if (!r.ok()) {
      ADD_FAILURE() << file << ": " << All(r);
      return out;
    }
    for (const Rule& rule : r.policy->rules) out[rule.name] = udp_verdict_name(rule.udp);
    return out;
  };
  const auto internet = udp_of("examples/internet-monitor-first.toml");
  EXPECT_EQ(internet.at("internet-https"), "quic");
  EXPECT_EQ(internet.at("internet-dns-over-tls"), "quic");
  EXPECT_EQ(internet.at("internet-mail-tls"), "allow");
  EXPECT_EQ(udp_of("examples/partner-network.toml").at("acme-apis"), "block");
  for (const auto& [name, udp] : udp_of("policy.d")) EXPECT_EQ(udp, "allow") << name;
}

}  // namespace
}  // namespace tlswall::policy
