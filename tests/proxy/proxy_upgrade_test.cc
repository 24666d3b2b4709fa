// Client-side upgrader end to end on loopback: a plaintext client through
// the engine to a real OpenSSL server, verification and fail-closed paths,
// passthrough, backpressure, half-close, timeouts, capacity, mTLS, ALPN,
// versions, resumption and reload.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>
#include <vector>

#include "tests/proxy/proxy_test_fixture.h"

namespace tlswall::proxy::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

ProxyConfig config_of(const UpgradeRule& r) {
  ProxyConfig c;
  c.upgrade.push_back(r);
  return c;
}

// An upper bound of what the kernel may buffer on the four sockets of a
// proxied path (client send, proxy receive + send, server receive).
size_t kernel_buffer_bound() {
  auto max_of = [](const char* path) -> size_t {
    std::ifstream f(path);
    size_t lo = 0, def = 0, max = 0;
    f >> lo >> def >> max;
    return max > 0 ? max : 8u << 20;
  };
  size_t r = max_of("/proc/sys/net/ipv4/tcp_rmem");
  size_t w = max_of("/proc/sys/net/ipv4/tcp_wmem");
  return 2 * (r + w) + (1u << 20);
}

// Asserts the connection was reset (not closed cleanly) within `within`.
void expect_reset(int fd, std::chrono::milliseconds within = 2000ms) {
  auto t0 = Clock::now();
  int err = 0;
  std::string got = read_to_eof(fd, &err);
  auto took = Clock::now() - t0;
  EXPECT_EQ(err, ECONNRESET) << "read returned '" << got << "' errno " << err;
  EXPECT_EQ(got, "") << "no byte may reach a client that is being failed";
  EXPECT_LT(took, within);
}

class UpgradeTest : public EngineFixture {};

TEST_F(UpgradeTest, PlaintextClientIsUpgradedAndEchoedBothWays) {
  TlsTestServer server(server_options());
  start_upgrade(config_of(upgrade_rule()), server.address());

  OwnedFd fd = connect_tcp(proxy_addr);
  ASSERT_TRUE(fd);
  const std::string request = "GET / HTTP/1.0\r\nHost: server.test\r\n\r\n";
  ASSERT_TRUE(send_all(fd.get(), request));
  // Client half-close: the server must see EOF (close_notify) and can still
  // answer after it.
  ASSERT_EQ(::shutdown(fd.get(), SHUT_WR), 0);
  int err = 0;
  std::string got = read_to_eof(fd.get(), &err);
  EXPECT_EQ(err, 0);
  const std::string bye = "BYE " + std::to_string(request.size()) + "\n";
  EXPECT_EQ(got, request + bye);

  ASSERT_TRUE(server.wait_done(1));
  auto rec = server.records().at(0);
  EXPECT_TRUE(rec.handshake_ok);
  EXPECT_EQ(rec.sni, "server.test");
  EXPECT_EQ(rec.received, request);
  EXPECT_EQ(rec.version, "TLSv1.3");

  auto ev = events.wait_for<Upgraded>();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->rule, "r1");
  EXPECT_EQ(ev->destination, server.address());
  EXPECT_EQ(ev->server_name, "server.test");
  EXPECT_EQ(ev->tls_version, "TLSv1.3");
  EXPECT_FALSE(ev->cipher.empty());
  EXPECT_NE(ev->peer_subject.find("CN=server.test"), std::string::npos) << ev->peer_subject;
  EXPECT_EQ(ev->bytes_up, request.size());
  EXPECT_EQ(ev->bytes_down, request.size() + bye.size());
  EXPECT_EQ(ev->error, "");
  EXPECT_FALSE(ev->resumed);

  ASSERT_TRUE(wait_idle());
  auto c = counters("r1");
  EXPECT_EQ(c.connections, 1u);
  EXPECT_EQ(c.active, 0u);
  EXPECT_EQ(c.bytes_up, request.size());
  EXPECT_EQ(c.bytes_down, request.size() + bye.size());
  EXPECT_EQ(c.passthrough, 0u);
}

TEST_F(UpgradeTest, WorksOverIpv6) {
  TlsTestServer server(server_options(), "::1");
  start_upgrade(config_of(upgrade_rule()), server.address(), default_options(), "::1");
  OwnedFd fd = connect_tcp(proxy_addr);
  ASSERT_TRUE(fd);
  ASSERT_TRUE(send_all(fd.get(), "six"));
  ::shutdown(fd.get(), SHUT_WR);
  int err = 0;
  EXPECT_EQ(read_to_eof(fd.get(), &err), "sixBYE 3\n");
  EXPECT_EQ(err, 0);
  auto ev = events.wait_for<Upgraded>();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->destination.family(), AF_INET6);
}

TEST_F(UpgradeTest, ServerClosesFirstAndClientKeepsSending) {
  // Also a server-speaks-first protocol: the client says nothing until the
  // greeting, so the proxy must decide "TLS" after first_bytes_wait.
  auto opts = server_options();
  opts.behavior = TlsServerOptions::Behavior::kServerClosesFirst;
  TlsTestServer server(opts);
  start_upgrade(config_of(upgrade_rule()), server.address());

  OwnedFd fd = connect_tcp(proxy_addr);
  ASSERT_TRUE(fd);
  int err = 0;
  // The server's close_notify reaches the client as a FIN: read returns EOF.
  EXPECT_EQ(read_to_eof(fd.get(), &err), "HELLO\n");
  EXPECT_EQ(err, 0);
  // The other direction is still open.
  ASSERT_TRUE(send_all(fd.get(), "after the server's EOF"));
  ::shutdown(fd.get(), SHUT_WR);
  ASSERT_TRUE(server.wait_done(1));
  EXPECT_EQ(server.records().at(0).received, "after the server's EOF");
  auto ev = events.wait_for<Upgraded>();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->error, "");
  EXPECT_EQ(ev->bytes_up, 22u);
  EXPECT_EQ(ev->bytes_down, 6u);
}

TEST_F(UpgradeTest, SlowServerBackpressuresTheClientAndDataArrivesIntact) {
  auto opts = server_options();
  opts.behavior = TlsServerOptions::Behavior::kGatedSink;
  TlsTestServer server(opts);
  auto eopts = default_options();
  eopts.buffer_bytes = 16 * 1024;
  start_upgrade(config_of(upgrade_rule()), server.address(), eopts);

  const size_t bound = kernel_buffer_bound();
  const std::string data = pattern(2 * bound + (8u << 20));
  OwnedFd fd = connect_tcp(proxy_addr);
  ASSERT_TRUE(fd);
  ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) | O_NONBLOCK);
  size_t off = 0;
  for (;;) {
    ssize_t n = ::send(fd.get(), data.data() + off, std::min<size_t>(65536, data.size() - off),
                       MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<size_t>(n);
      if (off == data.size()) break;
      continue;
    }
    ASSERT_TRUE(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) << strerror(errno);
    pollfd p{fd.get(), POLLOUT, 0};
    if (::poll(&p, 1, 500) == 0) break;  // stalled: the proxy stopped reading
  }
  EXPECT_LT(off, data.size()) << "the proxy swallowed everything: no backpressure";
  EXPECT_LT(off, bound) << "more buffered than the kernel buffers can explain";
  EXPECT_EQ(server.records().at(0).received_count, 0u);

  server.open_gate();
  ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);
  ASSERT_TRUE(send_all(fd.get(), data.substr(off)));
  ::shutdown(fd.get(), SHUT_WR);
  int err = 0;
  std::string reply = read_to_eof(fd.get(), &err);
  EXPECT_EQ(err, 0);
  EXPECT_EQ(reply, std::to_string(data.size()) + " " + std::to_string(fnv1a(data)) + "\n");
}

TEST_F(UpgradeTest, SlowClientBackpressuresTheServerAndDataArrivesIntact) {
  const size_t bound = kernel_buffer_bound();
  auto opts = server_options();
  opts.behavior = TlsServerOptions::Behavior::kSource;
  opts.source_bytes = 2 * bound + (8u << 20);
  TlsTestServer server(opts);
  auto eopts = default_options();
  eopts.buffer_bytes = 16 * 1024;
  start_upgrade(config_of(upgrade_rule()), server.address(), eopts);

  OwnedFd fd = connect_tcp(proxy_addr);
  ASSERT_TRUE(fd);
  // The client says nothing (the server would reset on close with unread
  // bytes); the proxy takes it for server-speaks-first. Do not read for a while: the server must
  // get stuck.
  uint64_t before = 0;
  for (int i = 0; i < 40; ++i) {
    std::this_thread::sleep_for(50ms);
    uint64_t now = server.sent_so_far();
    if (now == before && now > 0) break;
    before = now;
  }
  EXPECT_LT(server.sent_so_far(), bound);
  EXPECT_LT(server.sent_so_far(), opts.source_bytes);
  int err = 0;
  std::string got = read_to_eof(fd.get(), &err);
  EXPECT_EQ(err, 0);
  EXPECT_EQ(got.size(), opts.source_bytes);
  EXPECT_TRUE(got == pattern(opts.source_bytes)) << "payload corrupted";
}

struct BadServerCase {
  const char* name;
  std::string Pki::*cert;
  std::string Pki::*key;
  FailureReason reason;
  const char* detail_has;
};

class BadServerTest : public EngineFixture, public ::testing::WithParamInterface<BadServerCase> {};

TEST_P(BadServerTest, FailsClosedWithResetAndReason) {
  const auto& p = GetParam();
  TlsServerOptions opts;
  opts.cert = pki().*(p.cert);
  opts.key = pki().*(p.key);
  TlsTestServer server(opts);
  start_upgrade(config_of(upgrade_rule()), server.address());

  OwnedFd fd = connect_tcp(proxy_addr);
  ASSERT_TRUE(fd);
  ASSERT_TRUE(send_all(fd.get(), "secret plaintext"));
  expect_reset(fd.get());

  auto ev = events.wait_for<UpgradeFailure>();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->reason, p.reason) << to_string(ev->reason) << ": " << ev->detail;
  EXPECT_NE(ev->detail.find(p.detail_has), std::string::npos) << ev->detail;
  EXPECT_EQ(ev->rule, "r1");
  EXPECT_EQ(ev->destination, server.address());
  ASSERT_TRUE(server.wait_done(1));
  EXPECT_FALSE(server.records().at(0).handshake_ok);
  EXPECT_EQ(server.records().at(0).received_count, 0u);
  EXPECT_EQ(events.count<Upgraded>(), 0u);
  ASSERT_TRUE(wait_idle());
  EXPECT_EQ(failures(counters("r1"), p.reason), 1u);
}

INSTANTIATE_TEST_SUITE_P(
    Certificates, BadServerTest,
    ::testing::Values(BadServerCase{"WrongName", &Pki::wrong_name_cert, &Pki::wrong_name_key,
                                    FailureReason::kHostname, "mismatch"},
                      BadServerCase{"Expired", &Pki::expired_cert, &Pki::expired_key,
                                    FailureReason::kCertificate, "expired"},
                      BadServerCase{"SelfSigned", &Pki::self_signed_cert, &Pki::self_signed_key,
                                    FailureReason::kCertificate, "self-signed"}),
    [](const auto& info) { return std::string(info.param.name); });

const std::string kPgSslRequest("\x00\x00\x00\x08\x04\xd2\x16\x2f", 8);

UpgradeRule pg_rule(UpgradeRule r) {
  r.preamble = UpgradePreamble::kPostgresql;
  return r;
}

TEST_F(UpgradeTest, PostgresqlServerGetsSslRequestThenTls) {
  TlsServerOptions opts = server_options();
  opts.pg_answer = 'S';
  TlsTestServer server(opts);
  start_upgrade(config_of(pg_rule(upgrade_rule())), server.address());
  OwnedFd fd = connect_tcp(proxy_addr);
  ASSERT_TRUE(fd);
  const std::string startup("\x00\x00\x00\x10\x00\x03\x00\x00user\x00pg\x00\x00", 16);
  ASSERT_TRUE(send_all(fd.get(), startup));
  ::shutdown(fd.get(), SHUT_WR);
  int err = 0;
  EXPECT_EQ(read_to_eof(fd.get(), &err), startup + "BYE 16\n");
  EXPECT_EQ(err, 0);
  ASSERT_TRUE(server.wait_done(1));
  const auto rec = server.records().at(0);
  EXPECT_EQ(rec.preamble, kPgSslRequest);  // in plaintext, before the handshake
  EXPECT_TRUE(rec.handshake_ok);
  EXPECT_EQ(rec.received, startup);  // the client's bytes, inside TLS
  EXPECT_TRUE(events.wait_for<Upgraded>());
}

TEST_F(UpgradeTest, PostgresqlClientsOwnSslRequestIsAnsweredNo) {
  // psql's default sslmode=prefer asks first: the proxy declines for the
  // server, the client goes on in plaintext, the wire is the proxy's TLS.
  TlsServerOptions opts = server_options();
  opts.pg_answer = 'S';
  TlsTestServer server(opts);
  start_upgrade(config_of(pg_rule(upgrade_rule())), server.address());
  OwnedFd fd = connect_tcp(proxy_addr);
  ASSERT_TRUE(fd);
  ASSERT_TRUE(send_all(fd.get(), kPgSslRequest.substr(0, 3)));  // split: still recognised
  std::this_thread::sleep_for(50ms);
  ASSERT_TRUE(send_all(fd.get(), kPgSslRequest.substr(3)));
  char answer = 0;
  ASSERT_EQ(::recv(fd.get(), &answer, 1, 0), 1);
  EXPECT_EQ(answer, 'N');
  ASSERT_TRUE(send_all(fd.get(), "startup"));
  ::shutdown(fd.get(), SHUT_WR);
  int err = 0;
  EXPECT_EQ(read_to_eof(fd.get(), &err), "startupBYE 7\n");
  ASSERT_TRUE(server.wait_done(1));
  EXPECT_EQ(server.records().at(0).preamble, kPgSslRequest);
  EXPECT_EQ(server.records().at(0).received, "startup");  // not the client's SSLRequest
}

TEST_F(UpgradeTest, PostgresqlServerRefusingTlsFailsClosed) {
  TlsServerOptions opts = server_options();
  opts.pg_answer = 'N';
  TlsTestServer server(opts);
  start_upgrade(config_of(pg_rule(upgrade_rule())), server.address());
  OwnedFd fd = connect_tcp(proxy_addr);
  ASSERT_TRUE(fd);
  ASSERT_TRUE(send_all(fd.get(), "secret startup"));
  expect_reset(fd.get());
  auto ev = events.wait_for<UpgradeFailure>();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->reason, FailureReason::kProtocol);
  EXPECT_NE(ev->detail.find("refused TLS"), std::string::npos) << ev->detail;
  ASSERT_TRUE(server.wait_done(1));
  EXPECT_FALSE(server.records().at(0).handshake_ok);
  EXPECT_EQ(server.records().at(0).received_count, 0u);
}

TEST_F(UpgradeTest, TlsClientIsPassedThroughUnchanged) {
  TlsTestServer server(server_options());
  start_upgrade(config_of(upgrade_rule()), server.address());

  OwnedFd fd = connect_tcp(proxy_addr);
  ASSERT_TRUE(fd);
  // The client's own name: a re-wrapping proxy would send server.test.
  TlsClient cli(fd.get(), {pki().ca_cert, "client-chosen.test", "", ""});
  ASSERT_TRUE(cli.ok()) << cli.error();
  ASSERT_TRUE(cli.write("ping"));
  cli.shutdown_write();
  EXPECT_EQ(cli.read_to_close(), "pingBYE 4\n");
  fd.reset();  // TCP end of the client: the passthrough closes with it

  ASSERT_TRUE(server.wait_done(1));
  EXPECT_EQ(server.records().at(0).sni, "client-chosen.test");
  auto ev = events.wait_for<PassedThrough>();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->rule, "r1");
  EXPECT_GT(ev->bytes_up, 100u);  // the ClientHello itself went through
  EXPECT_EQ(events.count<Upgraded>(), 0u);
  ASSERT_TRUE(wait_idle());
  EXPECT_EQ(counters("r1").passthrough, 1u);
}

TEST_F(UpgradeTest, UnknownOriginalDestinationIsReset) {
  TlsTestServer server(server_options());
  start_upgrade(config_of(upgrade_rule()), server.address());
  resolver->clear();
  OwnedFd fd = connect_tcp(proxy_addr);
  ASSERT_TRUE(fd);
  // No send: the reset comes at accept, a send could already consume it.
  expect_reset(fd.get());
  auto ev = events.wait_for<UpgradeFailure>();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->reason, FailureReason::kUnknownDestination);

  // A destination with a rule id the engine does not know: also reset.
  resolver->set(server.address(), "no-such-rule");
  OwnedFd fd2 = connect_tcp(proxy_addr);
  ASSERT_TRUE(fd2);
  expect_reset(fd2.get());
  EXPECT_EQ(engine->engine_counters().unknown_destination, 2u);
  EXPECT_EQ(server.accepted(), 0u);
}

TEST_F(UpgradeTest, HandshakeTimeoutResetsTheClient) {
  // A listener nobody accepts on: TCP completes, TLS never answers.
  OwnedFd black_hole = listen_tcp(*SocketAddress::from_ip("127.0.0.1", 0));
  auto opts = default_options();
  opts.handshake_timeout = 300ms;
  start_upgrade(config_of(upgrade_rule()), SocketAddress::local_of(black_hole.get()), opts);
  OwnedFd fd = connect_tcp(proxy_addr);
  ASSERT_TRUE(fd);
  ASSERT_TRUE(send_all(fd.get(), "hello"));
  auto t0 = Clock::now();
  expect_reset(fd.get(), 1500ms);
  EXPECT_GE(Clock::now() - t0, 200ms);
  auto ev = events.wait_for<UpgradeFailure>();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->reason, FailureReason::kTimeout) << ev->detail;
}

TEST_F(UpgradeTest, ConnectRefusedResetsTheClient) {
  SocketAddress closed;
  {
    OwnedFd tmp = listen_tcp(*SocketAddress::from_ip("127.0.0.1", 0));
    closed = SocketAddress::local_of(tmp.get());
  }
  start_upgrade(config_of(upgrade_rule()), closed);
  OwnedFd fd = connect_tcp(proxy_addr);
  ASSERT_TRUE(fd);
  expect_reset(fd.get());
  auto ev = events.wait_for<UpgradeFailure>();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->reason, FailureReason::kConnect) << ev->detail;
}

TEST_F(UpgradeTest, CapacityCapResetsTheExtraClient) {
  TlsTestServer server(server_options());
  auto opts = default_options();
  opts.max_connections = 1;
  start_upgrade(config_of(upgrade_rule()), server.address(), opts);

  OwnedFd first = connect_tcp(proxy_addr);
  ASSERT_TRUE(first);
  ASSERT_TRUE(send_all(first.get(), "one"));
  int err = 0;
  ASSERT_EQ(read_until(first.get(), "one", &err), "one");

  OwnedFd second = connect_tcp(proxy_addr);
  ASSERT_TRUE(second);
  expect_reset(second.get());
  auto ev = events.wait_for<UpgradeFailure>();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->reason, FailureReason::kCapacity);
  EXPECT_EQ(engine->engine_counters().capacity_rejected, 1u);

  first.reset();
  ASSERT_TRUE(wait_idle());
  OwnedFd third = connect_tcp(proxy_addr);
  ASSERT_TRUE(third);
  ASSERT_TRUE(send_all(third.get(), "three"));
  EXPECT_EQ(read_until(third.get(), "three", &err), "three");
}

TEST_F(UpgradeTest, MutualTlsPresentsTheRuleClientCertificate) {
  auto sopts = server_options();
  sopts.client_ca = pki().ca_cert;
  sopts.require_client_cert = true;
  TlsTestServer server(sopts);
  auto with_cert = upgrade_rule("mtls");
  with_cert.cert_file = pki().client_cert;
  with_cert.key_file = pki().client_key;
  ProxyConfig cfg;
  cfg.upgrade = {with_cert, upgrade_rule("no-cert")};
  start_upgrade(cfg, server.address(), default_options(), "127.0.0.1", "mtls");

  OwnedFd fd = connect_tcp(proxy_addr);
  ASSERT_TRUE(fd);
  ASSERT_TRUE(send_all(fd.get(), "who am i"));
  ::shutdown(fd.get(), SHUT_WR);
  int err = 0;
  EXPECT_EQ(read_to_eof(fd.get(), &err), "who am iBYE 8\n");
  ASSERT_TRUE(server.wait_done(1));
  EXPECT_NE(server.records().at(0).client_subject.find("CN=legacy-client"), std::string::npos);

  // Without the certificate the server refuses; the client must not get a
  // clean end of stream.
  resolver->set(server.address(), "no-cert");
  OwnedFd fd2 = connect_tcp(proxy_addr);
  ASSERT_TRUE(fd2);
  ASSERT_TRUE(send_all(fd2.get(), "who am i"));
  std::string got = read_to_eof(fd2.get(), &err);
  EXPECT_EQ(got, "");
  EXPECT_EQ(err, ECONNRESET);
}

TEST_F(UpgradeTest, AlpnIsOfferedAndReported) {
  auto sopts = server_options();
  sopts.alpn = {"http/1.1"};
  TlsTestServer server(sopts);
  auto r = upgrade_rule();
  r.alpn = {"h2", "http/1.1"};
  start_upgrade(config_of(r), server.address());
  OwnedFd fd = connect_tcp(proxy_addr);
  ASSERT_TRUE(fd);
  ASSERT_TRUE(send_all(fd.get(), "x"));
  ::shutdown(fd.get(), SHUT_WR);
  int err = 0;
  EXPECT_EQ(read_to_eof(fd.get(), &err), "xBYE 1\n");
  ASSERT_TRUE(server.wait_done(1));
  EXPECT_EQ(server.records().at(0).alpn, "http/1.1");
  auto ev = events.wait_for<Upgraded>();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->alpn, "http/1.1");
}

TEST_F(UpgradeTest, MinimumTls13IsEnforced) {
  auto sopts = server_options();
  sopts.max_version = TLS1_2_VERSION;
  TlsTestServer server(sopts);
  start_upgrade(config_of(upgrade_rule()), server.address());

  // Default minimum 1.2: works, at 1.2.
  OwnedFd fd = connect_tcp(proxy_addr);
  ASSERT_TRUE(send_all(fd.get(), "v"));
  ::shutdown(fd.get(), SHUT_WR);
  int err = 0;
  EXPECT_EQ(read_to_eof(fd.get(), &err), "vBYE 1\n");
  auto ok = events.wait_for<Upgraded>();
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->tls_version, "TLSv1.2");

  auto r = upgrade_rule();
  r.min_version = TlsVersion::kTls13;
  engine->apply_config(config_of(r));
  OwnedFd fd2 = connect_tcp(proxy_addr);
  ASSERT_TRUE(send_all(fd2.get(), "v"));
  expect_reset(fd2.get());
  auto ev = events.wait_for<UpgradeFailure>();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->reason, FailureReason::kVersion) << ev->detail;
}

TEST_F(UpgradeTest, SecondConnectionResumesTheSession) {
  for (int version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
    SCOPED_TRACE(version == TLS1_3_VERSION ? "TLS 1.3" : "TLS 1.2");
    auto sopts = server_options();
    sopts.max_version = version;
    TlsTestServer server(sopts);
    start_upgrade(config_of(upgrade_rule()), server.address());
    for (int i = 0; i < 2; ++i) {
      OwnedFd fd = connect_tcp(proxy_addr);
      ASSERT_TRUE(send_all(fd.get(), "hi"));
      ::shutdown(fd.get(), SHUT_WR);
      int err = 0;
      EXPECT_EQ(read_to_eof(fd.get(), &err), "hiBYE 2\n");
      ASSERT_TRUE(server.wait_done(static_cast<size_t>(i + 1)));
    }
    auto recs = server.records();
    EXPECT_FALSE(recs.at(0).resumed);
    EXPECT_TRUE(recs.at(1).resumed);
    ASSERT_TRUE(wait_idle());
    EXPECT_EQ(counters("r1").resumed, 1u);
    auto second = events.wait_for<Upgraded>([](const Upgraded& u) { return u.resumed; });
    EXPECT_TRUE(second);
    engine.reset();
  }
}

TEST_F(UpgradeTest, ReloadSwapsContextsAndLiveConnectionSurvives) {
  TlsTestServer server(server_options());
  start_upgrade(config_of(upgrade_rule()), server.address());
  OwnedFd live = connect_tcp(proxy_addr);
  ASSERT_TRUE(send_all(live.get(), "one;"));
  int err = 0;
  ASSERT_EQ(read_until(live.get(), "one;", &err), "one;");

  // New generation trusts another CA only: new connections must fail...
  auto r = upgrade_rule();
  r.ca_file = pki().other_ca_cert;
  engine->apply_config(config_of(r));
  OwnedFd fresh = connect_tcp(proxy_addr);
  ASSERT_TRUE(send_all(fresh.get(), "x"));
  expect_reset(fresh.get());
  auto ev = events.wait_for<UpgradeFailure>();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->reason, FailureReason::kCertificate);

  // ...while the live one keeps its old context and keeps working.
  ASSERT_TRUE(send_all(live.get(), "two"));
  ::shutdown(live.get(), SHUT_WR);
  EXPECT_EQ(read_to_eof(live.get(), &err), "twoBYE 7\n");
  EXPECT_EQ(err, 0);
  auto up = events.wait_for<Upgraded>();
  ASSERT_TRUE(up);
  EXPECT_EQ(up->error, "");
  ASSERT_TRUE(wait_idle());
  auto c = counters("r1");  // same rule id: counters carried over
  EXPECT_EQ(c.connections, 2u);
  EXPECT_EQ(failures(c, FailureReason::kCertificate), 1u);
}

TEST_F(UpgradeTest, OutboundSocketHookSeesEverySocketAndCanVeto) {
  TlsTestServer server(server_options());
  std::atomic<int> calls{0};
  std::atomic<int> veto{0};
  SocketAddress seen;
  std::mutex mu;
  auto opts = default_options();
  opts.outbound_socket_hook = [&](int fd, const SocketAddress& dst) {
    int type = 0;
    socklen_t len = sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) return EBADF;
    if (SocketAddress::peer_of(fd).empty() == false) return EISCONN;  // must be before connect
    int prio = 3;  // stands in for SO_MARK, which needs CAP_NET_ADMIN
    setsockopt(fd, SOL_SOCKET, SO_PRIORITY, &prio, sizeof(prio));
    std::lock_guard<std::mutex> lock(mu);
    seen = dst;
    calls++;
    return veto.load();
  };
  start_upgrade(config_of(upgrade_rule()), server.address(), opts);
  OwnedFd fd = connect_tcp(proxy_addr);
  ASSERT_TRUE(send_all(fd.get(), "m"));
  ::shutdown(fd.get(), SHUT_WR);
  int err = 0;
  EXPECT_EQ(read_to_eof(fd.get(), &err), "mBYE 1\n");
  EXPECT_EQ(calls.load(), 1);
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(seen, server.address());
  }
  veto = EACCES;
  OwnedFd fd2 = connect_tcp(proxy_addr);
  expect_reset(fd2.get());
  auto ev = events.wait_for<UpgradeFailure>();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->reason, FailureReason::kConnect);
  EXPECT_EQ(server.accepted(), 1u);
}

TEST_F(UpgradeTest, PerDestinationServerNameMapping) {
  TlsTestServer server(server_options());
  auto r = upgrade_rule();
  r.server_name = "";  // only the mapping names servers
  r.server_names[server.address().to_string()] = "client-chosen.test";
  start_upgrade(config_of(r), server.address());
  OwnedFd fd = connect_tcp(proxy_addr);
  ASSERT_TRUE(send_all(fd.get(), "m"));
  ::shutdown(fd.get(), SHUT_WR);
  int err = 0;
  EXPECT_EQ(read_to_eof(fd.get(), &err), "mBYE 1\n");
  ASSERT_TRUE(server.wait_done(1));
  EXPECT_EQ(server.records().at(0).sni, "client-chosen.test");

  // A destination the mapping does not cover fails closed (no guessing).
  OwnedFd other = listen_tcp(*SocketAddress::from_ip("127.0.0.1", 0));
  resolver->set(SocketAddress::local_of(other.get()), "r1");
  OwnedFd fd2 = connect_tcp(proxy_addr);
  expect_reset(fd2.get());
  auto ev = events.wait_for<UpgradeFailure>();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->reason, FailureReason::kHostname);
}

TEST_F(UpgradeTest, IdleConnectionIsAbortedAndReported) {
  TlsTestServer server(server_options());
  auto opts = default_options();
  opts.idle_timeout = 300ms;
  start_upgrade(config_of(upgrade_rule()), server.address(), opts);
  OwnedFd fd = connect_tcp(proxy_addr);
  ASSERT_TRUE(send_all(fd.get(), "ping"));
  int err = 0;
  ASSERT_EQ(read_until(fd.get(), "ping", &err), "ping");
  auto t0 = Clock::now();
  EXPECT_EQ(read_to_eof(fd.get(), &err), "");
  EXPECT_EQ(err, ECONNRESET);
  EXPECT_GE(Clock::now() - t0, 200ms);
  EXPECT_LT(Clock::now() - t0, 2000ms);
  auto ev = events.wait_for<Upgraded>();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->error, "idle timeout");
}

TEST_F(UpgradeTest, ManyConcurrentClientsAcrossWorkers) {
  TlsTestServer server(server_options());
  auto opts = default_options();
  opts.workers = 3;
  start_upgrade(config_of(upgrade_rule()), server.address(), opts);
  constexpr int kClients = 40;
  std::vector<std::thread> clients;
  std::atomic<int> good{0};
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&, i] {
      OwnedFd fd = connect_tcp(proxy_addr);
      const std::string msg = pattern(1000 + static_cast<size_t>(i) * 997, static_cast<size_t>(i));
      if (!fd || !send_all(fd.get(), msg)) return;
      ::shutdown(fd.get(), SHUT_WR);
      int err = 0;
      if (read_to_eof(fd.get(), &err) == msg + "BYE " + std::to_string(msg.size()) + "\n") good++;
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(good.load(), kClients);
  ASSERT_TRUE(wait_idle());
  auto c = counters("r1");
  EXPECT_EQ(c.connections, static_cast<uint64_t>(kClients));
  EXPECT_EQ(c.active, 0u);
  EXPECT_EQ(events.count<Upgraded>(), static_cast<size_t>(kClients));
}

}  // namespace
}  // namespace tlswall::proxy::testing
