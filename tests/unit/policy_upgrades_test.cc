// Transparent upgrade in the policy (issue 5): [[upgrades]] (client side:
// which connections the proxy re-originates with TLS, and how it verifies
// the server) and [[terminations]] (server side: local ports that accept
// TLS for a legacy plaintext server). Parsing and validation only; the
// daemon builds the proxy's contexts from the model.
#include <gtest/gtest.h>

#include <string>

#include "policy/policy.h"
#include "policy_test_support.h"

namespace tlswall::policy {
namespace {

const auto kNow = Utc(2026, 11, 21);

const char* kHead = R"(version = "upg-1"
[boundaries.db]
cidrs = ["198.18.160.0/20"]
)";

LoadResult Load(const std::string& body) {
  return load_policy_text("upg.toml", std::string(kHead) + body, kNow);
}

TEST(PolicyUpgrades, ParsesAClientSideUpgradeWithEverySetting) {
  const auto r = Load(R"([[upgrades]]
name = "billing-db"
boundary = "db"
ports = [5432, "6379"]
server_name = "db.example.internal"
server_names = { "198.18.160.10/32" = "db1.example.internal" }
ca_file = "/etc/tlswall/ca.pem"
client_cert = "/etc/tlswall/client.pem"
client_key = "/etc/tlswall/client.key"
alpn = ["postgresql"]
min_tls = "1.3"
cgroups = ["/system.slice/billing.service"]
users = ["postgres"]
executables = ["/usr/bin/psql", "/opt/billing/bin/exporter"]
)");
  ASSERT_TRUE(r.ok()) << All(r);
  ASSERT_EQ(r.policy->upgrades.size(), 1u);
  const UpgradeRule& u = r.policy->upgrades[0];
  EXPECT_EQ(u.name, "billing-db");
  EXPECT_EQ(u.boundary, "db");
  ASSERT_EQ(u.ports.size(), 2u);
  EXPECT_EQ(u.server_name, "db.example.internal");
  ASSERT_EQ(u.server_names.size(), 1u);
  EXPECT_EQ(u.server_names[0].first.text, "198.18.160.10/32");
  EXPECT_EQ(u.server_names[0].second, "db1.example.internal");
  EXPECT_EQ(u.ca_file, "/etc/tlswall/ca.pem");
  EXPECT_EQ(u.client_cert, "/etc/tlswall/client.pem");
  EXPECT_EQ(u.client_key, "/etc/tlswall/client.key");
  EXPECT_EQ(u.alpn, std::vector<std::string>{"postgresql"});
  EXPECT_EQ(u.min_tls, 0x0304) << "1.3 is a valid minimum for an upgrade";
  EXPECT_EQ(u.owners.cgroups.size(), 1u);
  EXPECT_EQ(u.owners.users.size(), 1u);
  EXPECT_EQ(u.owners.executables,
            (std::vector<std::string>{"/usr/bin/psql", "/opt/billing/bin/exporter"}));
}

TEST(PolicyUpgrades, VerificationIsNeverOff) {
  const auto none = Load(R"([[upgrades]]
name = "u"
boundary = "db"
ports = [5432]
)");
  EXPECT_FALSE(none.ok());
  EXPECT_TRUE(HasDiag(none, "upg.toml:4:1: error: ", "needs server_name"));
  for (const char* bad : {"\"\"", "\"198.18.160.300\"", "\"-bad.example\"", "\"a..b\""}) {
    const auto r =
        Load(std::string("[[upgrades]]\nname = \"u\"\nboundary = \"db\"\nports = [5432]\n"
                         "server_name = ") +
             bad + "\n");
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_TRUE(HasDiag(r, "upg.toml:8:", "")) << bad << "\n" << All(r);
  }
}

TEST(PolicyUpgrades, AnIpLiteralIsVerifiedAgainstIpSans) {
  const auto r = Load(R"([[upgrades]]
name = "u"
boundary = "db"
ports = [5432]
server_name = "198.18.160.10"
server_names = { "198.18.160.11/32" = "2001:db8::11" }
)");
  ASSERT_TRUE(r.ok()) << All(r);
  EXPECT_EQ(r.policy->upgrades[0].server_name, "198.18.160.10");
}

TEST(PolicyUpgrades, RejectsBadSettingsAtTheirPosition) {
  struct Case {
    std::string line;
    std::string fragment;
  };
  const Case cases[] = {
      {R"(ca_file = "certs/ca.pem")", "must be an absolute path"},
      {R"(client_cert = "/etc/c.pem")", "only one of client_cert and client_key"},
      {R"(min_tls = "1.1")", "not allowed for an upgrade"},
      {R"(alpn = "h2")", "an array of protocol names"},
      {R"(server_names = { "198.18.160.300/32" = "x.example" })", "server_names of upgrade"},
      {R"(verify = false)", "unknown key \"verify\""},
      {R"(executables = ["bin/psql"])", "must be an absolute path"},
      {R"(executables = [])", "executables of upgrade"},
      {R"(executables = "/usr/bin/psql")", "an array of absolute paths"},
  };
  for (const Case& c : cases) {
    const auto r = Load(
        "[[upgrades]]\nname = \"u\"\nboundary = \"db\"\nports = [5432]\n"
        "server_name = \"db.example\"\n" +
        c.line + "\n");
    EXPECT_FALSE(r.ok()) << c.line;
    EXPECT_TRUE(HasDiag(r, "upg.toml:", c.fragment)) << c.line;
  }
}

// Enforcement rules match owners through the attribution records, which
// carry no executable: only [[upgrades]] select by executable.
TEST(PolicyUpgrades, PostgresqlPreambleIsTheOnlyOne) {
  const std::string head =
      "[[upgrades]]\nname = \"u\"\nboundary = \"db\"\nports = [5432]\nserver_name = \"db\"\n";
  const auto ok = Load(head + "preamble = \"postgresql\"\n");
  ASSERT_TRUE(ok.ok()) << All(ok);
  EXPECT_EQ(ok.policy->upgrades.at(0).preamble, "postgresql");
  const auto none = Load(head);
  ASSERT_TRUE(none.ok()) << All(none);
  EXPECT_EQ(none.policy->upgrades.at(0).preamble, "");
  const auto bad = Load(head + "preamble = \"mysql\"\n");
  EXPECT_FALSE(bad.ok());
  EXPECT_TRUE(HasDiag(bad, "upg.toml:9:12: error: ", "unknown preamble \"mysql\"")) << All(bad);
  const auto wrong = Load(head + "preamble = [\"postgresql\"]\n");
  EXPECT_FALSE(wrong.ok());
}

TEST(PolicyUpgrades, ExecutablesAreForUpgradesOnly) {
  const auto r = Load(R"([[rules]]
name = "r"
boundary = "db"
ports = [5432]
executables = ["/usr/bin/psql"]
)");
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(HasDiag(r, "upg.toml:8:1: error: ", "unknown key \"executables\"")) << All(r);
}

TEST(PolicyUpgrades, UnknownBoundaryAndDuplicateNames) {
  const auto r = Load(R"([[upgrades]]
name = "u"
boundary = "dbz"
ports = [5432]
server_name = "db.example"
[[upgrades]]
name = "u"
boundary = "db"
ports = [6379]
server_name = "db.example"
)");
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(
      HasDiag(r, "upg.toml:4:1: error: ", "unknown boundary \"dbz\" (did you mean \"db\"?)"));
  EXPECT_TRUE(HasDiag(r, "upg.toml:9:1: error: ", "duplicate upgrade name \"u\""));
}

TEST(PolicyUpgrades, ParsesTerminationsStrictByDefault) {
  const auto r = Load(R"([[terminations]]
name = "legacy-app"
port = 8443
backend = "127.0.0.1:8080"
cert = "/etc/tlswall/app.pem"
key = "/etc/tlswall/app.key"
[[terminations]]
name = "migrating"
port = 9443
backend = "[::1]:9080"
cert = "/etc/tlswall/m.pem"
key = "/etc/tlswall/m.key"
client_ca = "/etc/tlswall/clients.pem"
mode = "permissive"
)");
  ASSERT_TRUE(r.ok()) << All(r);
  ASSERT_EQ(r.policy->terminations.size(), 2u);
  EXPECT_TRUE(r.policy->terminations[0].strict);
  EXPECT_EQ(r.policy->terminations[0].port, 8443);
  EXPECT_FALSE(r.policy->terminations[1].strict);
  EXPECT_EQ(r.policy->terminations[1].client_ca, "/etc/tlswall/clients.pem");
}

TEST(PolicyUpgrades, TerminationBackendStaysOnTheHost) {
  const auto r = Load(R"([[terminations]]
name = "t"
port = 8443
backend = "198.18.0.5:8080"
cert = "/c.pem"
key = "/k.pem"
)");
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(HasDiag(r, "upg.toml:7:11: error: ", "must be a loopback address"));
}

TEST(PolicyUpgrades, TerminationsNeedTheirKeysAndUniquePorts) {
  const auto missing = Load(R"([[terminations]]
name = "t"
port = 8443
)");
  EXPECT_FALSE(missing.ok());
  EXPECT_TRUE(HasDiag(missing, "upg.toml:4:1: error: ", "missing required key \"backend\""));
  EXPECT_TRUE(HasDiag(missing, "upg.toml:4:1: error: ", "missing required key \"cert\""));
  const auto dup = Load(R"([[terminations]]
name = "a"
port = 8443
backend = "127.0.0.1:1"
cert = "/c"
key = "/k"
[[terminations]]
name = "b"
port = 8443
backend = "127.0.0.1:2"
cert = "/c"
key = "/k"
)");
  EXPECT_FALSE(dup.ok());
  EXPECT_TRUE(HasDiag(dup, "upg.toml:", "already uses"));
  const auto mode = Load(R"([[terminations]]
name = "a"
port = 8443
backend = "127.0.0.1:1"
cert = "/c"
key = "/k"
mode = "lenient"
)");
  EXPECT_FALSE(mode.ok());
  EXPECT_TRUE(HasDiag(mode, "upg.toml:10:8: error: ", "\"lenient\" is unknown"));
}

}  // namespace
}  // namespace tlswall::policy
