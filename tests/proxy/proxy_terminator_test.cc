// Server-side terminator: TLS in (optionally with client certificates),
// plaintext to a loopback backend; strict and permissive first-bytes modes.
#include <sys/socket.h>

#include "tests/proxy/proxy_test_fixture.h"

namespace tlswall::proxy::testing {
namespace {

using namespace std::chrono_literals;

class TerminatorTest : public EngineFixture {
 protected:
  TerminatorRule rule(TerminatorMode mode, const SocketAddress& backend) const {
    TerminatorRule r;
    r.id = "t1";
    r.cert_file = pki().server_cert;
    r.key_file = pki().server_key;
    r.client_ca_file = pki().ca_cert;
    r.mode = mode;
    r.backend = backend;
    return r;
  }
  void start(const TerminatorRule& r) {
    ProxyConfig cfg;
    cfg.terminators.push_back(r);
    start_terminator(cfg, r.id);
  }
};

TEST_F(TerminatorTest, TlsClientReachesPlaintextBackendWithItsSubjectReported) {
  PlainEchoServer backend;
  start(rule(TerminatorMode::kStrict, backend.address()));
  OwnedFd fd = connect_tcp(proxy_addr);
  ASSERT_TRUE(fd);
  TlsClient cli(fd.get(), {pki().ca_cert, "server.test", pki().client_cert, pki().client_key});
  ASSERT_TRUE(cli.ok()) << cli.error();
  ASSERT_TRUE(cli.write("hello backend"));
  cli.shutdown_write();
  EXPECT_EQ(cli.read_to_close(), "hello backendBYE 13\n");

  auto ev = events.wait_for<Terminated>();
  ASSERT_TRUE(ev);
  EXPECT_TRUE(ev->tls);
  EXPECT_EQ(ev->rule, "t1");
  EXPECT_EQ(ev->backend, backend.address());
  EXPECT_EQ(ev->local, proxy_addr) << "where the client connected";
  EXPECT_NE(ev->client_subject.find("CN=legacy-client"), std::string::npos) << ev->client_subject;
  EXPECT_EQ(ev->tls_version, "TLSv1.3");
  EXPECT_EQ(ev->bytes_in, 13u);
  EXPECT_EQ(ev->bytes_out, 20u);
  EXPECT_EQ(ev->error, "");
  ASSERT_TRUE(wait_idle());
  auto c = counters("t1");
  EXPECT_TRUE(c.terminator);
  EXPECT_EQ(c.connections, 1u);
  EXPECT_EQ(c.plaintext, 0u);
}

TEST_F(TerminatorTest, StrictRefusesPlaintext) {
  PlainEchoServer backend;
  start(rule(TerminatorMode::kStrict, backend.address()));
  OwnedFd fd = connect_tcp(proxy_addr);
  ASSERT_TRUE(send_all(fd.get(), "GET / HTTP/1.0\r\n\r\n"));
  int err = 0;
  EXPECT_EQ(read_to_eof(fd.get(), &err), "");
  EXPECT_EQ(err, ECONNRESET);
  auto ev = events.wait_for<TerminatorFailure>();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->reason, FailureReason::kPlaintext);
  EXPECT_EQ(ev->local, proxy_addr) << "where the client connected";
  EXPECT_EQ(backend.accepted(), 0u);
  ASSERT_TRUE(wait_idle());
  EXPECT_EQ(failures(counters("t1"), FailureReason::kPlaintext), 1u);
}

TEST_F(TerminatorTest, PermissivePassesPlaintextAndReportsIt) {
  PlainEchoServer backend;
  start(rule(TerminatorMode::kPermissive, backend.address()));
  OwnedFd fd = connect_tcp(proxy_addr);
  ASSERT_TRUE(send_all(fd.get(), "PING\r\n"));
  ::shutdown(fd.get(), SHUT_WR);
  int err = 0;
  EXPECT_EQ(read_to_eof(fd.get(), &err), "PING\r\nBYE 6\n");
  EXPECT_EQ(err, 0);
  auto seen = events.wait_for<PlaintextAccepted>();
  ASSERT_TRUE(seen);
  EXPECT_EQ(seen->rule, "t1");
  auto ev = events.wait_for<Terminated>();
  ASSERT_TRUE(ev);
  EXPECT_FALSE(ev->tls);
  ASSERT_TRUE(wait_idle());
  EXPECT_EQ(counters("t1").plaintext, 1u);

  // TLS still works on the same permissive port.
  OwnedFd fd2 = connect_tcp(proxy_addr);
  TlsClient cli(fd2.get(), {pki().ca_cert, "server.test", "", ""});
  ASSERT_TRUE(cli.ok()) << cli.error();
  ASSERT_TRUE(cli.write("tls"));
  cli.shutdown_write();
  EXPECT_EQ(cli.read_to_close(), "tlsBYE 3\n");
}

TEST_F(TerminatorTest, MissingRequiredClientCertificateIsRefused) {
  PlainEchoServer backend;
  auto r = rule(TerminatorMode::kStrict, backend.address());
  r.require_client_cert = true;
  start(r);
  OwnedFd fd = connect_tcp(proxy_addr);
  TlsClient cli(fd.get(), {pki().ca_cert, "server.test", "", ""});
  // TLS 1.3: the client's handshake may finish before the server says no.
  if (cli.ok()) {
    cli.write("let me in");
    EXPECT_EQ(cli.read_to_close(), "");
  }
  auto ev = events.wait_for<TerminatorFailure>();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->reason, FailureReason::kCertificate) << ev->detail;
  EXPECT_EQ(backend.accepted(), 0u);
}

TEST_F(TerminatorTest, BackendDownFailsClosed) {
  SocketAddress closed;
  {
    OwnedFd tmp = listen_tcp(*SocketAddress::from_ip("127.0.0.1", 0));
    closed = SocketAddress::local_of(tmp.get());
  }
  start(rule(TerminatorMode::kStrict, closed));
  OwnedFd fd = connect_tcp(proxy_addr);
  TlsClient cli(fd.get(), {pki().ca_cert, "server.test", "", ""});
  ASSERT_TRUE(cli.ok()) << cli.error();
  cli.write("x");
  EXPECT_EQ(cli.read_to_close(), "");
  auto ev = events.wait_for<TerminatorFailure>();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->reason, FailureReason::kConnect);
}

}  // namespace
}  // namespace tlswall::proxy::testing
