// The proxy in its own process (proxy/worker_process.h), for real: the
// worker binary is re-executed, gets its listener and rules over the
// channel (a root-only key included), runs as nobody with no capabilities
// and no fd of ours but what we passed, proxies, reports events and
// counters, is restarted when killed, and refuses to start when it
// misbehaves. Needs root (to drop from).
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "proxy/worker_process.h"
#include "tests/proxy/proxy_test_support.h"

namespace tlswall::proxy::testing {
namespace {

using std::chrono::milliseconds;
constexpr uint32_t kNobody = 65534;

std::string proc_status_field(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) {
      std::string v = line.substr(field.size() + 1);
      v.erase(0, v.find_first_not_of(" \t"));
      return v;
    }
  }
  return "";
}

// What each open fd of pid points at ("socket:[..]", "anon_inode:bpf-map", ...).
std::vector<std::string> fd_targets(pid_t pid) {
  std::vector<std::string> out;
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    char buf[256] = {};
    const ssize_t n = ::readlink((dir + "/" + e->d_name).c_str(), buf, sizeof(buf) - 1);
    out.push_back(std::string(e->d_name) + " -> " + (n > 0 ? std::string(buf, n) : "?"));
  }
  ::closedir(d);
  return out;
}

class ProxyWorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_FAIL() << "the worker drops privileges from root: run as root";
    // A copy of the server key only root may read: the worker (nobody)
    // gets its contents from us.
    const Pki& pki = Pki::get();
    key_ = dir_.file("client-key-root-only.pem");
    std::ifstream in(pki.client_key);
    std::ofstream(key_) << in.rdbuf();
    ASSERT_EQ(::chmod(key_.c_str(), 0600), 0);
  }

  WorkerProcessOptions options(const std::string& args = "--proxy-worker") {
    WorkerProcessOptions o;
    o.executable = TLSWALL_PROXY_WORKER_EXE;
    o.args = {args};
    o.hello.uid = kNobody;
    o.hello.gid = kNobody;
    o.hello.workers = 1;
    o.on_event = events_.callback();
    o.resolve = [this](const SocketAddress&, const SocketAddress&) {
      std::lock_guard<std::mutex> l(mu_);
      return destination_;
    };
    o.on_worker_died = [this](const std::string& how) {
      std::lock_guard<std::mutex> l(mu_);
      deaths_.push_back(how);
    };
    o.request_timeout = milliseconds(5000);
    return o;
  }

  ProxyConfig config(const std::string& server_name = "server.test") {
    const Pki& pki = Pki::get();
    ProxyConfig c;
    UpgradeRule r;
    r.id = "r1";
    r.server_name = server_name;
    r.ca_file = pki.ca_cert;
    r.cert_file = pki.client_cert;
    r.key_file = key_;
    c.upgrade.push_back(r);
    read_pem_files(c);
    return c;
  }

  static TlsServerOptions server_options() {
    TlsServerOptions so;
    so.cert = Pki::get().server_cert;
    so.key = Pki::get().server_key;
    return so;
  }

  // A loopback listener handed to the worker; its address.
  static SocketAddress listen_with(WorkerProcess& w) {
    OwnedFd listener = listen_tcp(*SocketAddress::from_ip("127.0.0.1", 0));
    const SocketAddress addr = SocketAddress::local_of(listener.get());
    w.add_upgrade_listener(std::move(listener));
    return addr;
  }

  void route_to(const SocketAddress& dst) {
    std::lock_guard<std::mutex> l(mu_);
    destination_ = OriginalDestination{dst, "r1"};
  }

  // One plaintext request through the proxy; returns what came back.
  std::string exchange(const SocketAddress& proxy, const std::string& msg) {
    OwnedFd fd = connect_tcp(proxy, std::chrono::seconds(5));
    if (!fd || !send_all(fd.get(), msg)) return "<connect failed>";
    ::shutdown(fd.get(), SHUT_WR);
    int err = 0;
    return read_to_eof(fd.get(), &err);
  }

  TempDir dir_;
  std::string key_;
  EventLog events_;
  std::mutex mu_;
  std::optional<OriginalDestination> destination_;
  std::vector<std::string> deaths_;
};

TEST_F(ProxyWorkerTest, RunsUnprivilegedAndProxiesThroughPassedListener) {
  TlsServerOptions so = server_options();
  so.client_ca = Pki::get().ca_cert;
  so.require_client_cert = true;
  TlsTestServer server(so);
  route_to(server.address());
  WorkerProcess w(options());
  const SocketAddress proxy = listen_with(w);
  w.apply_config(config());

  const WorkerStatus st = w.status();
  ASSERT_TRUE(st.running);
  ASSERT_GT(st.pid, 0);
  EXPECT_EQ(proc_status_field(st.pid, "Uid"), "65534\t65534\t65534\t65534");
  EXPECT_EQ(proc_status_field(st.pid, "Gid"), "65534\t65534\t65534\t65534");
  EXPECT_EQ(proc_status_field(st.pid, "Groups"), "");
  for (const char* caps : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}) {
    EXPECT_EQ(proc_status_field(st.pid, caps), "0000000000000000") << caps;
  }
  EXPECT_EQ(proc_status_field(st.pid, "NoNewPrivs"), "1");
  EXPECT_EQ(proc_status_field(st.pid, "Name"), "tlswall-proxy");
  // Only stdio, the two channels, the listener and the engine's own fds
  // (epoll, eventfd): nothing of ours leaked through the exec.
  for (const std::string& t : fd_targets(st.pid)) {
    const bool expected = t.find("socket:") != std::string::npos ||
                          t.find("anon_inode:[eventpoll]") != std::string::npos ||
                          t.find("anon_inode:[eventfd]") != std::string::npos ||
                          t.find("/dev/") != std::string::npos ||
                          t.find("pipe:") != std::string::npos;
    EXPECT_TRUE(expected) << "unexpected fd in the worker: " << t;
    EXPECT_EQ(t.find(dir_.path()), std::string::npos) << t;
  }

  EXPECT_EQ(exchange(proxy, "through the worker"), "through the workerBYE 18\n");
  ASSERT_TRUE(server.wait_done(1));
  EXPECT_EQ(server.records().at(0).client_subject.find("CN=legacy-client") != std::string::npos,
            true)
      << "the root-only client key reached the worker";
  const auto up = events_.wait_for<Upgraded>();
  ASSERT_TRUE(up);
  EXPECT_EQ(up->rule, "r1");
  EXPECT_EQ(up->destination, server.address());
  EXPECT_EQ(up->bytes_up, 18u);
  const wire::WorkerCounters c = w.counters();
  ASSERT_EQ(c.rules.size(), 1u);
  EXPECT_EQ(c.rules[0].connections, 1u);
  EXPECT_EQ(c.rules[0].bytes_up, 18u);
  EXPECT_EQ(c.events_dropped, 0u);
  EXPECT_EQ(c.resolve_timeouts, 0u);

  // Unknown to the kernel: reset, counted, reported.
  {
    std::lock_guard<std::mutex> l(mu_);
    destination_.reset();
  }
  {
    OwnedFd fd = connect_tcp(proxy, std::chrono::seconds(5));
    ASSERT_TRUE(fd);
    int err = 0;
    EXPECT_EQ(read_to_eof(fd.get(), &err), "");
    EXPECT_EQ(err, ECONNRESET);
  }
  EXPECT_TRUE(events_.wait_for<UpgradeFailure>(
      [](const UpgradeFailure& f) { return f.reason == FailureReason::kUnknownDestination; }));
}

TEST_F(ProxyWorkerTest, BadRulesAreRefusedAndTheOldOnesStay) {
  TlsTestServer server(server_options());
  route_to(server.address());
  WorkerProcess w(options());
  const SocketAddress proxy = listen_with(w);
  w.apply_config(config());

  ProxyConfig bad = config();
  bad.pem_files[key_] = "not a key";
  try {
    w.apply_config(std::move(bad));
    ADD_FAILURE() << "a rule with a broken key was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("key"), std::string::npos) << e.what();
  }
  EXPECT_EQ(exchange(proxy, "still"), "stillBYE 5\n");
}

TEST_F(ProxyWorkerTest, KilledWorkerIsRestartedWithItsListenerAndRules) {
  TlsTestServer server(server_options());
  route_to(server.address());
  WorkerProcess w(options());
  const SocketAddress proxy = listen_with(w);
  w.apply_config(config());
  ASSERT_EQ(exchange(proxy, "before"), "beforeBYE 6\n");

  const pid_t first = w.status().pid;
  // What the worker counted reaches the daemon within wire::kCounterPush.
  std::this_thread::sleep_for(3 * wire::kCounterPush);
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  // The port stays open while no worker runs: a client connecting now
  // waits in the backlog and is served by the next worker.
  EXPECT_EQ(exchange(proxy, "during"), "duringBYE 6\n");
  const WorkerStatus st = w.status();
  EXPECT_TRUE(st.running);
  EXPECT_NE(st.pid, first);
  EXPECT_EQ(st.restarts, 1u);
  EXPECT_NE(st.last_exit.find("signal 9"), std::string::npos) << st.last_exit;
  {
    std::lock_guard<std::mutex> l(mu_);
    ASSERT_EQ(deaths_.size(), 1u);
  }
  EXPECT_EQ(proc_status_field(st.pid, "Uid"), "65534\t65534\t65534\t65534");
  EXPECT_EQ(exchange(proxy, "after"), "afterBYE 5\n");
  // Counters carry over: the dead worker's two connections and the new one's.
  wire::WorkerCounters c;
  for (int i = 0; i < 100; ++i) {  // the last connection's close may still be counting
    c = w.counters();
    if (!c.rules.empty() && c.rules[0].connections == 3 && c.rules[0].active == 0) break;
    std::this_thread::sleep_for(milliseconds(20));
  }
  ASSERT_EQ(c.rules.size(), 1u);
  EXPECT_EQ(c.rules[0].connections, 3u);
  EXPECT_EQ(c.rules[0].bytes_up, 17u);
  EXPECT_EQ(c.rules[0].active, 0u);
}

TEST_F(ProxyWorkerTest, StopEndsTheWorker) {
  pid_t pid = 0;
  {
    WorkerProcess w(options());
    pid = w.status().pid;
    ASSERT_GT(pid, 0);
  }
  EXPECT_NE(::kill(pid, 0), 0) << "the worker outlived its WorkerProcess";
}

TEST_F(ProxyWorkerTest, MisbehavingWorkerFailsTheStartAndIsReaped) {
  try {
    WorkerProcess w(options("--garbage"));
    ADD_FAILURE() << "a worker that sent garbage was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("did not start"), std::string::npos) << e.what();
  }
  WorkerProcessOptions o = options();
  o.hello.uid = 0;
  EXPECT_THROW(WorkerProcess{o}, std::runtime_error);  // never as root
}

}  // namespace
}  // namespace tlswall::proxy::testing
