// Isolation helpers: the privilege drop, and the engine at its fd limit.
// The worker process itself: proxy_worker_test.cc.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proxy/engine.h"
#include "proxy/isolation.h"
#include "tests/proxy/proxy_test_support.h"

namespace tlswall::proxy::testing {
namespace {

constexpr uid_t kNobody = 65534;

TEST(ProxyIsolationTest, DropPrivilegesLeavesNoWayBack) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to drop from";
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int code = 0;
    try {
      drop_privileges(kNobody, kNobody);
      if (getuid() != kNobody || geteuid() != kNobody)
        code = 2;
      else if (getgid() != kNobody)
        code = 3;
      else if (!has_no_capabilities())
        code = 4;
      else if (setuid(0) == 0)
        code = 5;
      else if (getgroups(0, nullptr) != 0)
        code = 6;
    } catch (...) {
      code = 1;
    }
    _exit(code);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// Out of file descriptors: the pending client must be shed with a reset
// (not left hanging while the listener spins).
TEST(ProxyResourceTest, AcceptAtFdLimitResetsTheClient) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  OwnedFd parent_end(sv[0]), child_end(sv[1]);
  OwnedFd listener = listen_tcp(*SocketAddress::from_ip("127.0.0.1", 0));
  const SocketAddress proxy_addr = SocketAddress::local_of(listener.get());
  const Pki& pki = Pki::get();
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    parent_end.reset();
    int code = 0;
    try {
      EngineOptions o;
      o.workers = 1;
      Engine engine(o);
      ProxyConfig cfg;
      UpgradeRule r;
      r.id = "r1";
      r.server_name = "server.test";
      r.ca_file = pki.ca_cert;
      cfg.upgrade.push_back(r);
      engine.apply_config(cfg);
      engine.add_upgrade_listener(
          std::move(listener),
          std::make_shared<FakeResolver>(*SocketAddress::parse("127.0.0.1:9"), "r1"));
      engine.start();
      // Leave no free fd: the next accept() fails with EMFILE.
      rlimit lim{};
      getrlimit(RLIMIT_NOFILE, &lim);
      int highest = 0;
      for (int fd = 0; fd < 4096; ++fd) {
        if (fcntl(fd, F_GETFD) != -1) highest = fd;
      }
      std::vector<OwnedFd> fillers;
      for (int fd = 0; fd <= highest; ++fd) {
        if (fcntl(fd, F_GETFD) == -1) fillers.emplace_back(::open("/dev/null", O_RDONLY));
      }
      lim.rlim_cur = static_cast<rlim_t>(highest + 1);
      if (setrlimit(RLIMIT_NOFILE, &lim) != 0) _exit(20);
      char ready = 'R';
      if (::send(child_end.get(), &ready, 1, MSG_NOSIGNAL) != 1) _exit(21);
      char buf;
      (void)::recv(child_end.get(), &buf, 1, 0);
      code = engine.engine_counters().accept_errors > 0 ? 0 : 22;
      engine.stop();
    } catch (...) {
      code = 23;
    }
    _exit(code);
  }
  child_end.reset();
  listener.reset();
  char ready = 0;
  ASSERT_EQ(::recv(parent_end.get(), &ready, 1, 0), 1);
  OwnedFd fd = connect_tcp(proxy_addr, std::chrono::seconds(3));
  ASSERT_TRUE(fd);
  int err = 0;
  EXPECT_EQ(read_to_eof(fd.get(), &err), "");
  EXPECT_EQ(err, ECONNRESET);
  parent_end.reset();
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace tlswall::proxy::testing
