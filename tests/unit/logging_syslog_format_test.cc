// RFC 5424 message layout and RFC 6587 octet-counting framing of the syslog
// sink, checked field by field; and the transport against a loopback
// listener: frames arrive whole, a closed peer is reconnected.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "logging/syslog_transport.h"
#include "tests/logging/logging_test_support.h"

namespace tlswall::logging {
namespace {

RenderedEvent Rendered(const Event& e) {
  RenderedEvent r;
  r.event = e;
  r.json = render_json(e, "web-1", "0.2.0");
  r.cls = event_class(e.type);
  return r;
}

SyslogFormat Fmt() {
  SyslogFormat f;
  f.facility = syslog_facility("local0");
  f.hostname = "web-1";
  f.app_name = "tlswalld";
  f.procid = "4242";
  return f;
}

std::vector<std::string> Split(const std::string& s, char sep, size_t max_parts) {
  std::vector<std::string> out;
  size_t start = 0;
  while (out.size() + 1 < max_parts) {
    const size_t p = s.find(sep, start);
    if (p == std::string::npos) break;
    out.push_back(s.substr(start, p - start));
    start = p + 1;
  }
  out.push_back(s.substr(start));
  return out;
}

TEST(SyslogFormat, FacilitiesAndSeverities) {
  EXPECT_EQ(syslog_facility("kern"), 0);
  EXPECT_EQ(syslog_facility("auth"), 4);
  EXPECT_EQ(syslog_facility("authpriv"), 10);
  EXPECT_EQ(syslog_facility("local0"), 16);
  EXPECT_EQ(syslog_facility("local7"), 23);
  EXPECT_EQ(syslog_facility("local8"), -1);
  EXPECT_EQ(syslog_severity(Severity::kError), 3);
  EXPECT_EQ(syslog_severity(Severity::kWarning), 4);
  EXPECT_EQ(syslog_severity(Severity::kNotice), 5);
  EXPECT_EQ(syslog_severity(Severity::kInfo), 6);
}

TEST(SyslogFormat, Rfc5424HeaderThenJson) {
  Event e = testing::flow_event(EventType::kPlaintextBlocked, 3);
  e.time = std::chrono::system_clock::time_point{} + std::chrono::milliseconds(1763720340123);
  e.id = "h-9";
  const RenderedEvent r = Rendered(e);
  const std::string msg = rfc5424_message(r, Fmt(), "0.2.0");
  const auto parts = Split(msg, ' ', 8);
  ASSERT_EQ(parts.size(), 8u) << msg;
  EXPECT_EQ(parts[0], "<132>1");  // local0 (16) * 8 + warning (4)
  EXPECT_EQ(parts[1], "2025-11-21T10:19:00.123Z");
  EXPECT_EQ(parts[2], "web-1");
  EXPECT_EQ(parts[3], "tlswalld");
  EXPECT_EQ(parts[4], "4242");
  EXPECT_EQ(parts[5], "plaintext_blocked");  // MSGID: filter on it without parsing JSON
  EXPECT_EQ(parts[6], "-");                  // no structured data
  EXPECT_EQ(parts[7], r.json);
  EXPECT_EQ(testing::parse_flat_json(parts[7]).at("id"), "h-9");
}

TEST(SyslogFormat, HeaderFieldsAreSanitized) {
  SyslogFormat f = Fmt();
  f.hostname = "bad host\xff";
  f.app_name = "";
  f.procid = "";
  Event e;
  e.type = EventType::kAgentStarted;
  const auto parts = Split(rfc5424_message(Rendered(e), f, "v"), ' ', 8);
  EXPECT_EQ(parts[0], "<134>1");  // local0, info
  EXPECT_EQ(parts[2], "bad_host_");
  EXPECT_EQ(parts[3], "-");
  EXPECT_EQ(parts[4], "-");
}

TEST(SyslogFormat, OverlongMessageIsShortenedButStaysValidJson) {
  Event e = testing::flow_event(EventType::kPolicyRejected, 1);
  e.message = std::string(20000, 'm');
  SyslogFormat f = Fmt();
  f.max_message_bytes = 2048;
  const std::string msg = rfc5424_message(Rendered(e), f, "v");
  EXPECT_LE(msg.size(), 2048u);
  const auto parts = Split(msg, ' ', 8);
  const auto m = testing::parse_flat_json(parts[7]);
  EXPECT_NE(m.at("message").find("[truncated]"), std::string::npos);
  EXPECT_EQ(m.at("type"), "policy_rejected");
}

TEST(SyslogFormat, OctetCountingFrame) {
  EXPECT_EQ(octet_frame("abc"), "3 abc");
  EXPECT_EQ(octet_frame(""), "0 ");
  EXPECT_EQ(octet_frame("\xc3\xa9t\xc3\xa9"), "5 \xc3\xa9t\xc3\xa9");  // octets, not characters
  const std::string big(12345, 'x');
  EXPECT_EQ(octet_frame(big), "12345 " + big);
}

// A loopback listener that reads whatever arrives.
class Listener {
 public:
  Listener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    EXPECT_EQ(::listen(fd_, 4), 0);
    socklen_t len = sizeof(a);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  ~Listener() {
    if (conn_ >= 0) ::close(conn_);
    ::close(fd_);
  }
  int port() const { return port_; }
  // Accepts (if needed) and reads until `n` bytes or 2 s.
  std::string Read(size_t n) {
    if (conn_ < 0) conn_ = ::accept(fd_, nullptr, nullptr);
    std::string out;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (out.size() < n && std::chrono::steady_clock::now() < deadline) {
      pollfd p{conn_, POLLIN, 0};
      if (::poll(&p, 1, 50) != 1) continue;
      char buf[4096];
      const ssize_t r = ::recv(conn_, buf, sizeof(buf), 0);
      if (r <= 0) break;
      out.append(buf, static_cast<size_t>(r));
    }
    return out;
  }
  void DropConnection() {
    ::close(conn_);
    conn_ = -1;
  }

 private:
  int fd_ = -1;
  int conn_ = -1;
  int port_ = 0;
};

TEST(SyslogTransport, SendsOctetCountedFramesAndReconnects) {
  Listener l;
  SyslogTransportOptions o;
  o.host = "127.0.0.1";
  o.port = l.port();
  o.timeout = std::chrono::milliseconds(1000);
  o.format = Fmt();
  SyslogTransport t(o);
  EXPECT_EQ(t.target(), "127.0.0.1:" + std::to_string(l.port()));
  size_t accepted = 0;
  std::string err;
  ASSERT_EQ(t.send({"<14>1 a", "<14>1 bc"}, &accepted, &err), Transport::Status::kOk) << err;
  EXPECT_EQ(accepted, 2u);
  EXPECT_EQ(l.Read(19), "7 <14>1 a8 <14>1 bc");
  // The receiver restarts: the next send notices and reconnects.
  l.DropConnection();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_EQ(t.send({"<14>1 d"}, &accepted, &err), Transport::Status::kOk) << err;
  EXPECT_EQ(l.Read(9), "7 <14>1 d");
}

TEST(SyslogTransport, RefusedConnectionIsAnErrorNotAThrow) {
  int port;
  {
    Listener l;
    port = l.port();
  }
  SyslogTransportOptions o;
  o.port = port;
  o.timeout = std::chrono::milliseconds(500);
  SyslogTransport t(o);
  size_t accepted = 7;
  std::string err;
  EXPECT_EQ(t.send({"x"}, &accepted, &err), Transport::Status::kError);
  EXPECT_EQ(accepted, 0u);
  EXPECT_NE(err.find("127.0.0.1:" + std::to_string(port)), std::string::npos) << err;
  EXPECT_FALSE(t.connected());
}

}  // namespace
}  // namespace tlswall::logging
