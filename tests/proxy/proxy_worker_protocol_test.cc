// The daemon <-> proxy worker wire (proxy/worker_protocol.h): every message
// survives a round trip field for field, fds travel with their message, and
// a malformed message is refused, never read past its end.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include "proxy/worker_protocol.h"
#include "tests/proxy/proxy_test_support.h"

namespace tlswall::proxy::testing {
namespace {

using std::chrono::milliseconds;

ProxyConfig full_config() {
  ProxyConfig c;
  UpgradeRule u;
  u.id = "db";
  u.server_name = "db.internal";
  u.server_names = {{"198.18.130.10", "a.internal"}, {"[2001:db8::1]:5432", "b.internal"}};
  u.ca_file = "/etc/tlswall/ca.pem";
  u.ca_dir = "/etc/ssl/certs";
  u.cert_file = "/etc/tlswall/client.pem";
  u.key_file = "/etc/tlswall/client.key";
  u.alpn = {"postgresql", "http/1.1"};
  u.min_version = TlsVersion::kTls13;
  u.session_cache_entries = 77;
  c.upgrade.push_back(u);
  TerminatorRule t;
  t.id = "t-8443";
  t.cert_file = "/etc/tlswall/server.pem";
  t.key_file = "/etc/tlswall/server.key";
  t.client_ca_file = "/etc/tlswall/clients.pem";
  t.require_client_cert = true;
  t.mode = TerminatorMode::kPermissive;
  t.backend = *SocketAddress::parse("[::1]:8080");
  t.alpn = {"h2"};
  c.terminators.push_back(t);
  c.pem_files = {{"/etc/tlswall/ca.pem", "-----BEGIN CERTIFICATE-----\n..."},
                 {"/etc/tlswall/client.key", std::string("key\0bytes", 9)}};
  return c;
}

template <typename T>
T round_trip(const T& in, wire::Msg type) {
  return wire::decode<T>(wire::encode(type, in), type);
}

TEST(ProxyWorkerProtocolTest, ConfigRoundTripsFieldForField) {
  const ProxyConfig in = full_config();
  const ProxyConfig out = round_trip(in, wire::Msg::kConfig);
  ASSERT_EQ(out.upgrade.size(), 1u);
  const UpgradeRule& u = out.upgrade[0];
  EXPECT_EQ(u.id, "db");
  EXPECT_EQ(u.server_name, "db.internal");
  EXPECT_EQ(u.server_names, in.upgrade[0].server_names);
  EXPECT_EQ(u.ca_file, in.upgrade[0].ca_file);
  EXPECT_EQ(u.ca_dir, in.upgrade[0].ca_dir);
  EXPECT_EQ(u.cert_file, in.upgrade[0].cert_file);
  EXPECT_EQ(u.key_file, in.upgrade[0].key_file);
  EXPECT_EQ(u.alpn, in.upgrade[0].alpn);
  EXPECT_EQ(u.min_version, TlsVersion::kTls13);
  EXPECT_EQ(u.session_cache_entries, 77u);
  ASSERT_EQ(out.terminators.size(), 1u);
  const TerminatorRule& t = out.terminators[0];
  EXPECT_EQ(t.id, "t-8443");
  EXPECT_EQ(t.cert_file, in.terminators[0].cert_file);
  EXPECT_EQ(t.key_file, in.terminators[0].key_file);
  EXPECT_EQ(t.client_ca_file, in.terminators[0].client_ca_file);
  EXPECT_TRUE(t.require_client_cert);
  EXPECT_EQ(t.mode, TerminatorMode::kPermissive);
  EXPECT_EQ(t.backend, in.terminators[0].backend);
  EXPECT_EQ(t.alpn, in.terminators[0].alpn);
  EXPECT_EQ(out.pem_files, in.pem_files);
}

TEST(ProxyWorkerProtocolTest, EveryEventTypeRoundTrips) {
  const SocketAddress client = *SocketAddress::parse("127.0.0.1:40000");
  const SocketAddress dst = *SocketAddress::parse("[2001:db8::7]:443");
  Upgraded up;
  up.conn_id = 9;
  up.rule = "web";
  up.client = client;
  up.destination = dst;
  up.server_name = "web.test";
  up.tls_version = "TLSv1.3";
  up.cipher = "TLS_AES_128_GCM_SHA256";
  up.alpn = "http/1.1";
  up.peer_subject = "CN=web.test";
  up.resumed = true;
  up.bytes_up = 1u << 20;
  up.bytes_down = 1ull << 40;
  up.duration = milliseconds(1234);
  up.error = "reset by peer";
  auto got = round_trip(ProxyEvent(up), wire::Msg::kEvent);
  const auto* u = std::get_if<Upgraded>(&got);
  ASSERT_NE(u, nullptr);
  EXPECT_EQ(u->conn_id, 9u);
  EXPECT_EQ(u->client, client);
  EXPECT_EQ(u->destination, dst);
  EXPECT_EQ(u->cipher, up.cipher);
  EXPECT_EQ(u->peer_subject, up.peer_subject);
  EXPECT_TRUE(u->resumed);
  EXPECT_EQ(u->bytes_down, 1ull << 40);
  EXPECT_EQ(u->duration, milliseconds(1234));
  EXPECT_EQ(u->error, up.error);

  UpgradeFailure f;
  f.rule = "web";
  f.reason = FailureReason::kHostname;
  f.detail = "name mismatch";
  f.client = client;  // destination left empty
  got = round_trip(ProxyEvent(f), wire::Msg::kEvent);
  ASSERT_TRUE(std::holds_alternative<UpgradeFailure>(got));
  EXPECT_EQ(std::get<UpgradeFailure>(got).reason, FailureReason::kHostname);
  EXPECT_TRUE(std::get<UpgradeFailure>(got).destination.empty());

  Terminated t;
  t.rule = "t";
  t.tls = false;
  t.client_subject = "CN=legacy-client";
  t.local = dst;
  t.backend = client;
  got = round_trip(ProxyEvent(t), wire::Msg::kEvent);
  ASSERT_TRUE(std::holds_alternative<Terminated>(got));
  EXPECT_FALSE(std::get<Terminated>(got).tls);
  EXPECT_EQ(std::get<Terminated>(got).client_subject, "CN=legacy-client");
  EXPECT_EQ(std::get<Terminated>(got).local, dst);

  EXPECT_TRUE(std::holds_alternative<PassedThrough>(
      round_trip(ProxyEvent(PassedThrough{}), wire::Msg::kEvent)));
  EXPECT_TRUE(std::holds_alternative<TerminatorFailure>(
      round_trip(ProxyEvent(TerminatorFailure{}), wire::Msg::kEvent)));
  EXPECT_TRUE(std::holds_alternative<PlaintextAccepted>(
      round_trip(ProxyEvent(PlaintextAccepted{}), wire::Msg::kEvent)));
}

TEST(ProxyWorkerProtocolTest, CountersAndHelloRoundTrip) {
  wire::WorkerCounters c;
  RuleCounters r;
  r.rule = "web";
  r.terminator = true;
  r.connections = 5;
  r.active = 2;
  r.bytes_up = 10;
  r.bytes_down = 20;
  r.truncated = 3;
  r.failures[static_cast<size_t>(FailureReason::kPlaintext)] = 4;
  c.rules = {r, RuleCounters{}};
  c.engine.accepted = 8;
  c.engine.unknown_destination = 1;
  c.events_dropped = 6;
  c.resolve_timeouts = 7;
  const auto out = round_trip(c, wire::Msg::kCounters);
  ASSERT_EQ(out.rules.size(), 2u);
  EXPECT_EQ(out.rules[0].rule, "web");
  EXPECT_TRUE(out.rules[0].terminator);
  EXPECT_EQ(out.rules[0].truncated, 3u);
  EXPECT_EQ(out.rules[0].failures, r.failures);
  EXPECT_EQ(out.engine.accepted, 8u);
  EXPECT_EQ(out.events_dropped, 6u);
  EXPECT_EQ(out.resolve_timeouts, 7u);

  wire::Hello h;
  h.uid = 999;
  h.gid = 998;
  h.workers = 3;
  h.idle_timeout = milliseconds(42);
  h.log_level = "debug";
  const auto hh = round_trip(h, wire::Msg::kHello);
  EXPECT_EQ(hh.version, wire::kVersion);
  EXPECT_EQ(hh.uid, 999u);
  EXPECT_EQ(hh.gid, 998u);
  EXPECT_EQ(hh.workers, 3u);
  EXPECT_EQ(hh.idle_timeout, milliseconds(42));
  EXPECT_EQ(hh.log_level, "debug");
}

// Every prefix of a valid message is refused, as is a forged count, a bad
// enum and trailing bytes: the daemon reads what a compromised worker sends.
TEST(ProxyWorkerProtocolTest, MalformedMessagesAreRefused) {
  wire::Writer w(wire::Msg::kConfig);
  wire::put(w, full_config());
  const std::string good = w.bytes();
  for (size_t n = 1; n < good.size(); ++n) {
    const std::string prefix = good.substr(0, n);
    wire::Reader r(prefix);
    ProxyConfig c;
    EXPECT_THROW(
        {
          wire::get(r, c);
          r.finish();
        },
        wire::WireError)
        << "prefix of " << n << " bytes";
  }
  const std::string empty;
  EXPECT_THROW(wire::Reader{empty}, wire::WireError);
  {
    const std::string longer = good + "x";
    wire::Reader r(longer);
    ProxyConfig c;
    wire::get(r, c);
    EXPECT_THROW(r.finish(), wire::WireError);
  }
  {
    wire::Writer f(wire::Msg::kConfig);
    f(static_cast<uint32_t>(0xffffffffu));  // four billion upgrade rules
    wire::Reader r(f.bytes());
    ProxyConfig c;
    EXPECT_THROW(wire::get(r, c), wire::WireError);
  }
  {
    wire::Writer f(wire::Msg::kEvent);
    f(static_cast<uint8_t>(0));  // UpgradeFailure
    f(static_cast<uint64_t>(1));
    f(std::string("r"));
    f(static_cast<uint8_t>(200));  // no such FailureReason
    wire::Reader r(f.bytes());
    ProxyEvent e;
    EXPECT_THROW(wire::get(r, e), wire::WireError);
  }
  {
    wire::Writer f(wire::Msg::kEvent);
    f(static_cast<uint8_t>(17));  // no such event
    wire::Reader r(f.bytes());
    ProxyEvent e;
    EXPECT_THROW(wire::get(r, e), wire::WireError);
  }
  {
    wire::Writer f(wire::Msg::kResolved);
    f(static_cast<uint8_t>(4));  // an IPv4 address with an IPv6 sockaddr inside
    sockaddr_in6 s6{};
    s6.sin6_family = AF_INET6;
    std::string bytes = f.bytes();
    bytes.append(reinterpret_cast<const char*>(&s6), sizeof(sockaddr_in));
    wire::Reader r(bytes);
    SocketAddress a;
    EXPECT_THROW(r(a), wire::WireError);
  }
}

TEST(ProxyWorkerProtocolTest, FdTravelsWithItsMessageAndEofIsSeen) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  OwnedFd a(sv[0]), b(sv[1]);
  OwnedFd listener = listen_tcp(*SocketAddress::from_ip("127.0.0.1", 0));
  const SocketAddress addr = SocketAddress::local_of(listener.get());
  wire::Writer w(wire::Msg::kListener);
  w(static_cast<uint8_t>(0));
  w(std::string());
  ASSERT_TRUE(wire::send_message(a.get(), w.bytes(), {listener.get()}));
  listener.reset();  // only the passed copy remains
  auto m = wire::recv_message(b.get(), milliseconds(1000), 1);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->bytes, w.bytes());
  ASSERT_EQ(m->fds.size(), 1u);
  EXPECT_EQ(SocketAddress::local_of(m->fds[0].get()), addr);
  EXPECT_TRUE(connect_tcp(addr)) << "the received fd is the live listener";

  // A message with more fds than the receiver takes is refused (and closed).
  OwnedFd extra = listen_tcp(*SocketAddress::from_ip("127.0.0.1", 0));
  ASSERT_TRUE(wire::send_message(a.get(), w.bytes(), {extra.get(), extra.get()}));
  EXPECT_THROW(wire::recv_message(b.get(), milliseconds(1000), 1), wire::WireError);

  // Nothing within the timeout: ETIMEDOUT; the peer gone: end of stream.
  EXPECT_THROW(wire::recv_message(b.get(), milliseconds(20), 1), std::system_error);
  a.reset();
  EXPECT_FALSE(wire::recv_message(b.get(), milliseconds(1000), 1));
}

}  // namespace
}  // namespace tlswall::proxy::testing
