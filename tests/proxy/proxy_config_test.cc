// Rule validation: what the proxy refuses to build, and that a refused
// generation leaves the running one in force.
#include <gtest/gtest.h>

#include "proxy/engine.h"
#include "proxy/tls_context.h"
#include "tests/proxy/proxy_test_support.h"

namespace tlswall::proxy::testing {
namespace {

UpgradeRule good() {
  UpgradeRule r;
  r.id = "r1";
  r.server_name = "server.test";
  r.ca_file = Pki::get().ca_cert;
  return r;
}

TEST(ProxyConfigTest, GoodRuleBuilds) { EXPECT_NO_THROW(ClientRuleContext::build(good())); }

TEST(ProxyConfigTest, EmptyServerNameIsRefused) {
  auto r = good();
  r.server_name = "";
  EXPECT_THROW(ClientRuleContext::build(r), ConfigError);
}

TEST(ProxyConfigTest, EmptyMappedServerNameIsRefused) {
  auto r = good();
  r.server_names["192.0.2.1:443"] = "";
  EXPECT_THROW(ClientRuleContext::build(r), ConfigError);
}

TEST(ProxyConfigTest, BadMappingKeyIsRefused) {
  auto r = good();
  r.server_names["not-an-address"] = "x.test";
  EXPECT_THROW(ClientRuleContext::build(r), ConfigError);
}

TEST(ProxyConfigTest, MappingPicksPerDestinationThenDefault) {
  auto r = good();
  r.server_names["192.0.2.1:443"] = "exact.test";
  r.server_names["192.0.2.2"] = "any-port.test";
  r.server_names["[2001:db8::1]:443"] = "v6.test";
  auto ctx = ClientRuleContext::build(r);
  EXPECT_EQ(*ctx->server_name_for(*SocketAddress::parse("192.0.2.1:443")), "exact.test");
  EXPECT_EQ(*ctx->server_name_for(*SocketAddress::parse("192.0.2.2:8443")), "any-port.test");
  EXPECT_EQ(*ctx->server_name_for(*SocketAddress::parse("[2001:db8::1]:443")), "v6.test");
  EXPECT_EQ(*ctx->server_name_for(*SocketAddress::parse("192.0.2.1:444")), "server.test");
  r.server_name = "";
  ctx = ClientRuleContext::build(r);
  EXPECT_EQ(ctx->server_name_for(*SocketAddress::parse("192.0.2.9:443")), nullptr);
}

TEST(ProxyConfigTest, NameWithSpaceIsRefused) {
  auto r = good();
  r.server_name = "server test";
  EXPECT_THROW(ClientRuleContext::build(r), ConfigError);
}

TEST(ProxyConfigTest, CertWithoutKeyIsRefused) {
  auto r = good();
  r.cert_file = Pki::get().client_cert;
  EXPECT_THROW(ClientRuleContext::build(r), ConfigError);
}

TEST(ProxyConfigTest, MismatchedKeyIsRefused) {
  auto r = good();
  r.cert_file = Pki::get().client_cert;
  r.key_file = Pki::get().server_key;
  EXPECT_THROW(ClientRuleContext::build(r), ConfigError);
}

TEST(ProxyConfigTest, MissingCaFileIsRefused) {
  auto r = good();
  r.ca_file = "/nonexistent/ca.pem";
  EXPECT_THROW(ClientRuleContext::build(r), ConfigError);
}

TEST(ProxyConfigTest, BadAlpnIsRefused) {
  auto r = good();
  r.alpn = {"h2", ""};
  EXPECT_THROW(ClientRuleContext::build(r), ConfigError);
}

TEST(ProxyConfigTest, TerminatorNeedsCertKeyBackendAndClientCa) {
  TerminatorRule t;
  t.id = "t1";
  t.cert_file = Pki::get().server_cert;
  t.key_file = Pki::get().server_key;
  t.backend = *SocketAddress::parse("127.0.0.1:8080");
  EXPECT_NO_THROW(ServerRuleContext::build(t));
  auto no_backend = t;
  no_backend.backend = SocketAddress();
  EXPECT_THROW(ServerRuleContext::build(no_backend), ConfigError);
  auto no_ca = t;
  no_ca.require_client_cert = true;
  EXPECT_THROW(ServerRuleContext::build(no_ca), ConfigError);
  auto no_key = t;
  no_key.key_file = "";
  EXPECT_THROW(ServerRuleContext::build(no_key), ConfigError);
}

TEST(ProxyConfigTest, RefusedGenerationLeavesTheOldOneInForce) {
  Engine engine(EngineOptions{});
  ProxyConfig cfg;
  cfg.upgrade.push_back(good());
  engine.apply_config(cfg);
  ProxyConfig bad;
  auto r2 = good();
  r2.id = "r2";
  auto broken = good();
  broken.id = "r3";
  broken.server_name = "";
  bad.upgrade = {r2, broken};
  EXPECT_THROW(engine.apply_config(bad), ConfigError);
  auto counters = engine.rule_counters();
  ASSERT_EQ(counters.size(), 1u);
  EXPECT_EQ(counters[0].rule, "r1");
  ProxyConfig dup;
  dup.upgrade = {good(), good()};
  EXPECT_THROW(engine.apply_config(dup), ConfigError);
}

TEST(ProxyAddressTest, ParsesAndPrints) {
  EXPECT_EQ(SocketAddress::parse("127.0.0.1:443")->to_string(), "127.0.0.1:443");
  EXPECT_EQ(SocketAddress::parse("[::1]:8443")->to_string(), "[::1]:8443");
  EXPECT_FALSE(SocketAddress::parse("::1:443"));
  EXPECT_FALSE(SocketAddress::parse("127.0.0.1:65536"));
  EXPECT_FALSE(SocketAddress::parse("host.test:443"));
  EXPECT_EQ(*SocketAddress::parse("[::ffff:192.0.2.1]:1"),
            *SocketAddress::parse("[::ffff:192.0.2.1]:1"));
  EXPECT_NE(*SocketAddress::parse("127.0.0.1:1"), *SocketAddress::parse("127.0.0.1:2"));
}

}  // namespace
}  // namespace tlswall::proxy::testing
