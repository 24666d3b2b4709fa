// The syslog sink against a real rsyslog started by the test (its own
// config in a temporary directory, in the foreground, TCP on 127.0.0.1 with
// a kernel-chosen port), and the alerting examples of logging/README.md
// run for real: the rsyslog rule inside that rsyslog, the jq filter on a
// JSON-lines file. Skipped when rsyslogd or jq is not installed.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "logging/event_pipeline.h"
#include "tests/logging/logging_pipeline_harness.h"

namespace tlswall::testing {
namespace {

using namespace std::chrono_literals;
using logging::EventType;

const char* kRsyslogd = "/usr/sbin/rsyslogd";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> Lines(const std::string& path) {
  std::vector<std::string> out;
  std::ifstream in(path);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// The fenced code block that follows "<!-- tested: NAME -->" in the README.
std::string ReadmeBlock(const std::string& name) {
  const std::string readme = ReadFile(std::string(TLSWALL_SOURCE_DIR) + "/logging/README.md");
  const size_t marker = readme.find("<!-- tested: " + name + " ");
  if (marker == std::string::npos) return "";
  const size_t open = readme.find("```", marker);
  const size_t body = readme.find('\n', open) + 1;
  const size_t close = readme.find("\n```", body);
  return readme.substr(body, close - body + 1);
}

std::string Replace(std::string s, const std::string& from, const std::string& to) {
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) {
    s.replace(p, from.size(), to);
  }
  return s;
}

bool CanConnect(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  ::close(fd);
  return ok;
}

// rsyslogd in the foreground with a config of ours; stopped with SIGTERM.
class Rsyslog {
 public:
  explicit Rsyslog(const TempDir& dir) : dir_(dir.str()) {}
  ~Rsyslog() { Stop(); }

  // port 0: the kernel chooses (read back from the port file).
  bool Start(int port, const std::string& extra_rules) {
    const std::string conf = dir_ + "/rsyslog.conf";
    std::ofstream(conf) << "global(workDirectory=\"" << dir_ << "\" maxMessageSize=\"64k\")\n"
                        << "module(load=\"imtcp\")\n"
                        << "input(type=\"imtcp\" address=\"127.0.0.1\" port=\"" << port
                        << "\" listenPortFileName=\"" << dir_ << "/port\")\n"
                        << "template(name=\"fields\" type=\"string\" string=\"%msgid%\\t%app-name%"
                           "\\t%hostname%\\t%procid%\\t%syslogfacility-text%\\t"
                           "%syslogseverity-text%\\t%msg%\\n\")\n"
                        << extra_rules << "\n"
                        << "action(type=\"omfile\" file=\"" << dir_
                        << "/all.log\" template=\"fields\")\n";
    std::remove((dir_ + "/port").c_str());
    const std::string pidfile = dir_ + "/rsyslog.pid";
    const std::string log = dir_ + "/rsyslogd.out";
    pid_ = ::fork();
    if (pid_ == 0) {
      // Dies with the test, even if the test crashes.
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      ::execl(kRsyslogd, kRsyslogd, "-n", "-f", conf.c_str(), "-i", pidfile.c_str(),
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    const int rc = pid_ > 0 ? 0 : -1;
    if (rc != 0) return false;
    if (port != 0) {  // rsyslog writes the port file only for port 0
      port_ = port;
      return eventually([&] { return CanConnect(port); }, 10s);
    }
    const bool up = eventually([&] { return !ReadFile(dir_ + "/port").empty(); }, 10s);
    if (up) port_ = std::stoi(ReadFile(dir_ + "/port"));
    return up;
  }
  void Stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int status;
    if (!eventually([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; }, 10s)) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
    }
    pid_ = -1;
  }
  int port() const { return port_; }
  std::string out() const { return ReadFile(dir_ + "/rsyslogd.out"); }

 private:
  std::string dir_;
  pid_t pid_ = -1;
  int port_ = 0;
};

logging::PipelineConfig SyslogConfig(const TempDir& t, int port) {
  logging::PipelineConfig c = TestPipelineConfig(t, 0, /*with_json=*/true);
  logging::SyslogSinkConfig s;
  s.common.name = "syslog";
  s.host = "127.0.0.1";
  s.port = port;
  s.facility = "local3";
  s.common.batch_delay_ms = 5;
  s.common.retry_min_ms = 20;
  s.common.retry_max_ms = 200;
  s.timeout_ms = 2000;
  c.syslog.push_back(s);
  return c;
}

class RsyslogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access(kRsyslogd, X_OK) != 0) GTEST_SKIP() << "rsyslog is not installed";
  }
};

TEST_F(RsyslogTest, ReceivesRfc5424FramesAndTheReadmeAlertRuleFires) {
  TempDir t;
  Rsyslog rsyslog(t);
  const std::string rule = ReadmeBlock("rsyslog-alert-rule");
  ASSERT_FALSE(rule.empty()) << "README lost its tested rsyslog rule";
  ASSERT_TRUE(rsyslog.Start(0, Replace(rule, "/var/log/tlswall/alerts.log", t.str("alerts.log"))))
      << rsyslog.out();
  auto p = logging::make_event_pipeline(SyslogConfig(t, rsyslog.port()));
  for (int i = 0; i < 50; ++i) {
    p->submit(flow_event(i % 2 ? EventType::kPlaintextBlocked : EventType::kPlaintextReported, i));
  }
  logging::Event applied;
  applied.type = EventType::kPolicyApplied;
  applied.severity = logging::Severity::kNotice;
  applied.message = "synthetic 50";
  p->submit(applied);
  ASSERT_TRUE(p->flush(10000)) << logging::render_health_json(p->health());
  ASSERT_TRUE(eventually([&] { return Lines(t.str("all.log")).size() >= 51; }, 10s))
      << rsyslog.out();

  const auto lines = Lines(t.str("all.log"));
  ASSERT_EQ(lines.size(), 51u);
  std::vector<int> synthetic;
  for (const auto& l : lines) {
    std::vector<std::string> f;
    std::stringstream ss(l);
    for (std::string part; std::getline(ss, part, '\t');) f.push_back(part);
    ASSERT_EQ(f.size(), 7u) << l;
    const auto m = parse_flat_json(f[6].substr(f[6].find('{')));
    EXPECT_EQ(f[0], m.at("type")) << "MSGID is the event type";
    EXPECT_EQ(f[1], "tlswalld");
    EXPECT_EQ(f[2], "test-host");
    EXPECT_EQ(f[3], std::to_string(::getpid()));
    EXPECT_EQ(f[4], "local3");
    EXPECT_EQ(f[5], m.at("type") == "policy_applied" ? "notice" : "warning");
    synthetic.push_back(std::stoi(m.at("message").substr(10)));
  }
  EXPECT_EQ(synthetic, Range(0, 51)) << "every frame arrived whole and in order";

  // The README rule picked exactly the plaintext_blocked events.
  const auto alerts = Lines(t.str("alerts.log"));
  EXPECT_EQ(alerts.size(), 25u);
  for (const auto& a : alerts) {
    EXPECT_NE(a.find("plaintext_blocked rule=db-tls dst=198.18.130.10:5432"), std::string::npos)
        << a;
    EXPECT_NE(a.find("id=testhost-"), std::string::npos) << a;
  }
  EXPECT_EQ(p->health().sinks.at(1).delivered, 51u);
}

TEST_F(RsyslogTest, ReconnectsAfterTheReceiverRestarts) {
  TempDir t;
  auto rsyslog = std::make_unique<Rsyslog>(t);
  ASSERT_TRUE(rsyslog->Start(0, "")) << rsyslog->out();
  const int port = rsyslog->port();
  auto p = logging::make_event_pipeline(SyslogConfig(t, port));
  SubmitPaced(*p, 0, 20, 0);
  ASSERT_TRUE(p->flush(10000));
  ASSERT_TRUE(eventually([&] { return Lines(t.str("all.log")).size() >= 20; }, 10s));

  rsyslog->Stop();
  SubmitPaced(*p, 20, 20, 0);
  ASSERT_TRUE(eventually([&] { return p->health().sinks.at(1).state == "unreachable"; }, 10s));
  EXPECT_FALSE(p->flush(200)) << "nothing can be delivered while rsyslog is down";
  ASSERT_TRUE(rsyslog->Start(port, "")) << rsyslog->out();
  ASSERT_TRUE(p->flush(15000)) << logging::render_health_json(p->health());
  ASSERT_TRUE(eventually([&] { return Lines(t.str("all.log")).size() >= 40; }, 10s));
  std::vector<int> got;
  for (const auto& l : Lines(t.str("all.log"))) {
    const auto m = parse_flat_json(l.substr(l.find('{')));
    if (m.at("message").rfind("synthetic ", 0) == 0)
      got.push_back(std::stoi(m.at("message").substr(10)));
  }
  EXPECT_EQ(got, Range(0, 40)) << "events held while the receiver was down arrive after it returns";
  EXPECT_TRUE(eventually([&] { return p->health().sinks.at(1).state == "ok"; }, 5s));
}

TEST(ReadmeJq, AlertFilterSelectsPlaintextAndDedupesById) {
  if (::access("/usr/bin/jq", X_OK) != 0) GTEST_SKIP() << "jq is not installed";
  TempDir t;
  const std::string filter = ReadmeBlock("jq-alert-filter");
  ASSERT_FALSE(filter.empty()) << "README lost its tested jq filter";
  {
    auto p = logging::make_event_pipeline(TestPipelineConfig(t, 0, true));
    for (int i = 0; i < 30; ++i) {
      p->submit(flow_event(i % 3 == 0 ? EventType::kPlaintextBlocked : EventType::kStateLost, i));
    }
    ASSERT_TRUE(p->flush(10000));
  }
  // At-least-once delivery: the same events twice must still alert once each.
  const std::string file = t.str("events.jsonl");
  const std::string once = ReadFile(file);
  std::ofstream(file, std::ios::app) << once;
  const std::string script = t.str("filter.sh");
  std::ofstream(script) << "set -e\ncd " << t.str() << "\n"
                        << Replace(filter, "/var/log/tlswall/events.jsonl", file);
  const std::string out = t.str("jq.out");
  ASSERT_EQ(std::system(("/bin/sh " + script + " > " + out + " 2>&1").c_str()), 0) << ReadFile(out);
  const auto lines = Lines(out);
  ASSERT_EQ(lines.size(), 10u) << ReadFile(out);
  for (const auto& l : lines) {
    const auto m = parse_flat_json(l);
    EXPECT_EQ(m.at("type"), "plaintext_blocked");
    EXPECT_EQ(m.at("rule"), "db-tls");
    EXPECT_EQ(m.at("count"), "1");
  }
}

}  // namespace
}  // namespace tlswall::testing
