// MetricsHttpServer with real TCP clients on loopback, port 0, in one
// thread: the test drives the server's fd as the daemon's loop would while
// its client sockets talk to it. Covers the exposition round trip, status
// codes, the request size limit, slow and silent clients, a client that
// never reads, the client cap, render failures, and the listen-address
// policy (loopback only unless allowed).
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "agent/metrics/metrics_http.h"
#include "agent/metrics/metrics_text.h"
#include "agent/owned_fd.h"
#include "tests/unit/agent_metrics_exposition_parser.h"
#include "tests/unit/agent_watch_netns.h"

namespace tlswall::agent {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

OwnedFd connect_to(uint16_t port, int family = AF_INET) {
  OwnedFd fd(::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) throw std::runtime_error("socket");
  int rc;
  if (family == AF_INET) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    rc = ::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a));
  } else {
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(port);
    a.sin6_addr = in6addr_loopback;
    rc = ::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a));
  }
  if (rc != 0 && errno != EINPROGRESS) throw std::runtime_error("connect");
  return fd;
}

void send_text(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    pollfd p{fd, POLLOUT, 0};
    ::poll(&p, 1, 1000);
    const ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN) throw std::runtime_error("send");
    if (n > 0) off += static_cast<size_t>(n);
  }
}

// Runs the server for `d` without reading any client.
void pump(MetricsHttpServer& s, milliseconds d) {
  const Clock::time_point end = Clock::now() + d;
  for (Clock::time_point now = Clock::now(); now < end; now = Clock::now()) {
    pollfd p{s.fd(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(std::chrono::ceil<milliseconds>(end - now).count())) > 0) {
      s.on_readable();
    }
  }
}

struct Reply {
  bool closed = false;  // the server closed the connection (EOF or reset)
  std::string raw;
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

// Runs the server and reads `c` until the server closes it or `limit` passes.
Reply read_reply(MetricsHttpServer& s, int c, milliseconds limit = milliseconds(2000)) {
  Reply r;
  const Clock::time_point end = Clock::now() + limit;
  while (!r.closed) {
    const Clock::time_point now = Clock::now();
    if (now >= end) break;
    pollfd p[2] = {{s.fd(), POLLIN, 0}, {c, POLLIN, 0}};
    ::poll(p, 2, static_cast<int>(std::chrono::ceil<milliseconds>(end - now).count()));
    if (p[0].revents & POLLIN) s.on_readable();
    if (p[1].revents) {
      char buf[65536];
      const ssize_t n = ::recv(c, buf, sizeof(buf), 0);
      if (n > 0) {
        r.raw.append(buf, static_cast<size_t>(n));
      } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        r.closed = true;
      }
    }
  }
  const size_t head_end = r.raw.find("\r\n\r\n");
  if (head_end == std::string::npos) return r;
  const std::string head = r.raw.substr(0, head_end);
  r.body = r.raw.substr(head_end + 4);
  size_t pos = head.find("\r\n");
  const std::string status_line = head.substr(0, pos);
  if (status_line.rfind("HTTP/1.1 ", 0) == 0) r.status = std::atoi(status_line.c_str() + 9);
  while (pos != std::string::npos) {
    const size_t next = head.find("\r\n", pos + 2);
    const std::string line = head.substr(pos + 2, next - pos - 2);
    const size_t colon = line.find(':');
    if (colon != std::string::npos) {
      std::string k = line.substr(0, colon);
      std::transform(k.begin(), k.end(), k.begin(),
                     [](unsigned char ch) { return std::tolower(ch); });
      r.headers[k] = line.substr(line.find_first_not_of(' ', colon + 1));
    }
    pos = next;
  }
  return r;
}

Reply request(MetricsHttpServer& s, const std::string& req) {
  OwnedFd c = connect_to(s.port());
  send_text(c.get(), req);
  return read_reply(s, c.get());
}

std::string sample_metrics() {
  MetricsText m;
  m.family("tlswall_packets_total", MetricType::kCounter, "Packets judged.")
      .sample({{"interface", "eth0"}}, 42)
      .sample({{"interface", "we\"ird\\name\n"}}, 1);
  m.family("tlswall_policy_generation", MetricType::kGauge, "Generation in force.").sample(3);
  return m.str();
}

MetricsHttpOptions loopback_any_port() {
  MetricsHttpOptions o;
  o.listen = "127.0.0.1:0";
  return o;
}

TEST(MetricsHttpTest, ServesTheExpositionToARealClient) {
  int renders = 0;
  MetricsHttpServer s(loopback_any_port(), [&] {
    ++renders;
    return sample_metrics();
  });
  ASSERT_NE(s.port(), 0);
  EXPECT_EQ(s.address(), "127.0.0.1:" + std::to_string(s.port()));
  Reply r = request(s, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\n\r\n");
  EXPECT_TRUE(r.closed) << "Connection: close";
  EXPECT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(r.headers["connection"], "close");
  EXPECT_EQ(r.headers["content-length"], std::to_string(r.body.size()));
  EXPECT_EQ(r.body, sample_metrics());
  EXPECT_EQ(renders, 1);
  const auto parsed = metrics_test::parse_exposition(r.body);
  ASSERT_EQ(parsed.order,
            (std::vector<std::string>{"tlswall_packets_total", "tlswall_policy_generation"}));
  const auto& packets = parsed.families.at("tlswall_packets_total");
  EXPECT_EQ(packets.type, "counter");
  ASSERT_EQ(packets.samples.size(), 2u);
  EXPECT_EQ(packets.samples[0].value, "42");
  EXPECT_EQ(packets.samples[1].labels[0].second, "we\"ird\\name\n");
  EXPECT_EQ(s.stats().scrapes, 1u);
  EXPECT_NE(s.status().find("serving http://127.0.0.1:"), std::string::npos) << s.status();
}

TEST(MetricsHttpTest, AnswersEachKindOfRequestWithItsStatus) {
  int renders = 0;
  MetricsHttpServer s(loopback_any_port(), [&] {
    ++renders;
    return sample_metrics();
  });
  struct Case {
    std::string request;
    int status;
  };
  const std::vector<Case> cases = {
      {"GET /metrics HTTP/1.0\r\n\r\n", 200},
      {"GET /metrics?name[]=x HTTP/1.1\r\n\r\n", 200},
      {"GET /metrics HTTP/1.1\n\n", 200},  // bare LF, as some tools send
      {"GET / HTTP/1.1\r\n\r\n", 404},
      {"GET /metrics/ HTTP/1.1\r\n\r\n", 404},
      {"GET /metricsx HTTP/1.1\r\n\r\n", 404},
      {"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nab", 405},
      {"DELETE /metrics HTTP/1.1\r\n\r\n", 405},
      {"GET /metrics HTTP/2.0\r\n\r\n", 505},
      {"GET /metrics\r\n\r\n", 400},
      {"GET  /metrics HTTP/1.1\r\n\r\n", 400},
      {"G(T /metrics HTTP/1.1\r\n\r\n", 400},
      {std::string("\x16\x03\x01\x02\x00\r\n\r\n", 9), 400},  // TLS record bytes, a NUL
  };
  for (const auto& c : cases) {
    Reply r = request(s, c.request);
    EXPECT_EQ(r.status, c.status) << c.request << "\n--- got:\n" << r.raw;
    EXPECT_TRUE(r.closed) << c.request;
    EXPECT_EQ(r.headers["connection"], "close") << c.request;
    if (c.status == 405) {
      EXPECT_EQ(r.headers["allow"], "GET, HEAD");
    }
  }
  EXPECT_EQ(renders, 3) << "rendered for the 200s only";
  Reply head = request(s, "HEAD /metrics HTTP/1.1\r\n\r\n");
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.body, "");
  EXPECT_EQ(head.headers["content-length"], std::to_string(sample_metrics().size()));
}

TEST(MetricsHttpTest, OversizedRequestIsRefused) {
  MetricsHttpOptions o = loopback_any_port();
  o.max_request_bytes = 1024;
  MetricsHttpServer s(o, sample_metrics);
  Reply r = request(s, "GET /metrics HTTP/1.1\r\nX-Filler: " + std::string(4000, 'a'));
  EXPECT_EQ(r.status, 431) << r.raw;
  EXPECT_TRUE(r.closed);
  // Under the limit with headers is fine.
  const Reply ok =
      request(s, "GET /metrics HTTP/1.1\r\nX-Filler: " + std::string(900, 'a') + "\r\n\r\n");
  EXPECT_EQ(ok.status, 200);
}

TEST(MetricsHttpTest, SlowAndSilentClientsAreCutOff) {
  MetricsHttpOptions o = loopback_any_port();
  o.client_timeout = milliseconds(200);
  MetricsHttpServer s(o, sample_metrics);
  OwnedFd silent = connect_to(s.port());
  OwnedFd slow = connect_to(s.port());
  send_text(slow.get(), "GET /met");
  const Clock::time_point t0 = Clock::now();
  const Reply r1 = read_reply(s, slow.get(), milliseconds(1500));
  const auto took = Clock::now() - t0;
  EXPECT_TRUE(r1.closed);
  EXPECT_EQ(r1.raw, "") << "no answer to half a request";
  EXPECT_GE(took, milliseconds(150));
  EXPECT_LT(took, milliseconds(1000));
  const Reply r2 = read_reply(s, silent.get(), milliseconds(500));
  EXPECT_TRUE(r2.closed);
  EXPECT_EQ(s.stats().timed_out, 2u);
  // A request in pieces that completes in time is answered.
  OwnedFd pieces = connect_to(s.port());
  send_text(pieces.get(), "GE");
  pump(s, milliseconds(40));
  send_text(pieces.get(), "T /metrics HTTP/1.1\r\n");
  pump(s, milliseconds(40));
  send_text(pieces.get(), "\r\n");
  EXPECT_EQ(read_reply(s, pieces.get()).status, 200);
}

TEST(MetricsHttpTest, ClientThatNeverReadsIsCutOff) {
  MetricsHttpOptions o = loopback_any_port();
  o.client_timeout = milliseconds(200);
  const std::string big(16 << 20, 'x');  // more than the socket buffers hold
  MetricsHttpServer s(o, [&] { return "# HELP a b\n# TYPE a gauge\na 1\n#" + big + "\n"; });
  OwnedFd c = connect_to(s.port());
  int small = 4096;
  ::setsockopt(c.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  send_text(c.get(), "GET /metrics HTTP/1.1\r\n\r\n");
  pump(s, milliseconds(500));
  EXPECT_EQ(s.stats().timed_out, 1u);
  // The server is still fine for the next client.
  EXPECT_EQ(request(s, "HEAD /metrics HTTP/1.1\r\n\r\n").status, 200);
}

TEST(MetricsHttpTest, ClientsBeyondTheCapAreClosed) {
  MetricsHttpOptions o = loopback_any_port();
  o.max_clients = 2;
  MetricsHttpServer s(o, sample_metrics);
  OwnedFd a = connect_to(s.port());
  pump(s, milliseconds(30));
  OwnedFd b = connect_to(s.port());
  pump(s, milliseconds(30));
  OwnedFd c = connect_to(s.port());
  const Reply rc = read_reply(s, c.get(), milliseconds(500));
  EXPECT_TRUE(rc.closed);
  EXPECT_EQ(rc.raw, "");
  EXPECT_EQ(s.stats().refused, 1u);
  send_text(a.get(), "GET /metrics HTTP/1.1\r\n\r\n");
  send_text(b.get(), "GET /metrics HTTP/1.1\r\n\r\n");
  EXPECT_EQ(read_reply(s, a.get()).status, 200);
  EXPECT_EQ(read_reply(s, b.get()).status, 200);
}

TEST(MetricsHttpTest, RenderFailureIsA500AndCounted) {
  MetricsHttpServer s(loopback_any_port(),
                      []() -> std::string { throw std::invalid_argument("bad metric name"); });
  Reply r = request(s, "GET /metrics HTTP/1.1\r\n\r\n");
  EXPECT_EQ(r.status, 500);
  EXPECT_NE(r.body.find("bad metric name"), std::string::npos) << r.body;
  EXPECT_EQ(s.stats().render_errors, 1u);
}

TEST(MetricsHttpTest, ListenAddressesAreLoopbackOnlyUnlessAllowed) {
  for (const char* a : {"127.0.0.1:9464", "127.0.0.2:0", "[::1]:9464", "[::ffff:127.0.0.1]:1"}) {
    EXPECT_TRUE(parse_listen_address(a, false).loopback) << a;
  }
  for (const char* a : {"0.0.0.0:9464", "[::]:9464", "198.18.0.1:9464", "[2001:db8::1]:9464"}) {
    EXPECT_THROW(parse_listen_address(a, false), std::invalid_argument) << a;
    EXPECT_FALSE(parse_listen_address(a, true).loopback) << a;
  }
  for (const char* a : {"", "localhost:9464", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536",
                        "127.0.0.1:x", "::1:9464", "[::1]9464", "[::1]:", "127.0.0.1:-1"}) {
    EXPECT_THROW(parse_listen_address(a, true), std::invalid_argument) << a;
  }
  MetricsHttpOptions o;
  o.listen = "0.0.0.0:0";
  EXPECT_THROW((MetricsHttpServer(o, sample_metrics)), std::invalid_argument);
  o.listen = "[::]:0";
  EXPECT_THROW((MetricsHttpServer(o, sample_metrics)), std::invalid_argument);
}

TEST(MetricsHttpTest, NonLoopbackBindWhenAllowedInsideANamespace) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for a private network namespace";
  watch_test::ScopedNetns ns;
  if (!ns.ok()) GTEST_SKIP() << ns.error();
  ASSERT_EQ(std::system("ip link set lo up"), 0);
  MetricsHttpOptions o;
  o.listen = "0.0.0.0:0";
  o.allow_non_loopback = true;
  MetricsHttpServer s(o, sample_metrics);
  EXPECT_EQ(s.address(), "0.0.0.0:" + std::to_string(s.port()));
  EXPECT_EQ(request(s, "GET /metrics HTTP/1.1\r\n\r\n").status, 200);
}

TEST(MetricsHttpTest, ServesOverIpv6Loopback) {
  MetricsHttpOptions o;
  o.listen = "[::1]:0";
  std::unique_ptr<MetricsHttpServer> s;
  try {
    s = std::make_unique<MetricsHttpServer>(o, sample_metrics);
  } catch (const std::runtime_error& e) {
    GTEST_SKIP() << "no IPv6 loopback here: " << e.what();
  }
  EXPECT_EQ(s->address(), "[::1]:" + std::to_string(s->port()));
  OwnedFd c = connect_to(s->port(), AF_INET6);
  send_text(c.get(), "GET /metrics HTTP/1.1\r\n\r\n");
  EXPECT_EQ(read_reply(*s, c.get()).status, 200);
}

TEST(MetricsHttpTest, PortInUseIsAStartUpError) {
  MetricsHttpServer first(loopback_any_port(), sample_metrics);
  MetricsHttpOptions o;
  o.listen = "127.0.0.1:" + std::to_string(first.port());
  EXPECT_THROW((MetricsHttpServer(o, sample_metrics)), std::runtime_error);
}

}  // namespace
}  // namespace tlswall::agent
