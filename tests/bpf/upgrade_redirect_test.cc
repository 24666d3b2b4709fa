// The upgrade redirect against the real kernel (root): connect4/6,
// sock_ops keying, getpeername4/6 and the loader, in a private network
// namespace (the test's main thread moves into a fresh one and back) and a
// child cgroup created per test. The "proxy" is a pair of plain listeners
// on 127.0.0.1 and [::1] in that namespace. Destinations are in
// 198.18.0.0/15 and 2001:db8::/32; the namespace has no route to them, so a
// connect that is not redirected fails at once with ENETUNREACH, and one
// that is lands on the listener. Never a skip.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <bpf/bpf.h>
#include <gtest/gtest.h>

#include "agent/owned_fd.h"
#include "agent/upgrade/upgrade_redirect.h"
#include "tests/bpf/owner_test_support.h"

namespace tlswall {
namespace {

using agent::OwnedFd;
using agent::upgrade::compile_selection;
using agent::upgrade::OriginalDestination;
using agent::upgrade::UpgradeRedirect;
using agent::upgrade::UpgradeRedirectOptions;
using agent::upgrade::UpgradeRuleSpec;
using agent::upgrade::UpgradeSelection;

constexpr uid_t kProxyUid = 54321;  // stands in for the proxy worker's dedicated uid
constexpr const char* kDest4 = "198.18.130.10";
constexpr const char* kDest6 = "2001:db8::10";

std::string errstr(int e) { return std::strerror(e); }

sockaddr_storage make_addr(const std::string& ip, uint16_t port, bool v4_mapped = false) {
  sockaddr_storage ss{};
  if (v4_mapped) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    a->sin6_addr.s6_addr[10] = a->sin6_addr.s6_addr[11] = 0xff;
    EXPECT_EQ(inet_pton(AF_INET, ip.c_str(), &a->sin6_addr.s6_addr[12]), 1);
  } else if (ip.find(':') == std::string::npos) {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    EXPECT_EQ(inet_pton(AF_INET, ip.c_str(), &a->sin_addr), 1);
  } else {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    EXPECT_EQ(inet_pton(AF_INET6, ip.c_str(), &a->sin6_addr), 1);
  }
  return ss;
}

socklen_t addr_len(const sockaddr_storage& ss) {
  return ss.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
}

// "198.18.130.10:80", "[2001:db8::10]:443", "[::ffff:198.18.130.10]:80".
std::string to_string(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, buf, sizeof(buf));
    return std::string(buf) + ":" + std::to_string(ntohs(a->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof(buf));
    return "[" + std::string(buf) + "]:" + std::to_string(ntohs(a->sin6_port));
  }
  return "family " + std::to_string(ss.ss_family);
}

// The main thread in a fresh network namespace (lo up) for the fixture's
// life; back in the original one on destruction, also on failure.
class PrivateNetns {
 public:
  PrivateNetns() {
    orig_ = OwnedFd(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    if (orig_.get() < 0) throw std::runtime_error("open own netns: " + errstr(errno));
    if (::unshare(CLONE_NEWNET) != 0) throw std::runtime_error("unshare: " + errstr(errno));
    OwnedFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    if (s.get() < 0 || ::ioctl(s.get(), SIOCGIFFLAGS, &ifr) != 0) {
      throw std::runtime_error("lo flags: " + errstr(errno));
    }
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
    if (::ioctl(s.get(), SIOCSIFFLAGS, &ifr) != 0) throw std::runtime_error("lo up");
  }
  ~PrivateNetns() {
    if (::setns(orig_.get(), CLONE_NEWNET) != 0) {
      std::fprintf(stderr, "FATAL: cannot return to the original netns: %s\n",
                   std::strerror(errno));
      std::abort();
    }
  }

 private:
  OwnedFd orig_;
};

OwnedFd listen_on(const std::string& ip, uint16_t* port) {
  sockaddr_storage ss = make_addr(ip, 0);
  OwnedFd s(::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  const int one = 1;
  if (ss.ss_family == AF_INET6) ::setsockopt(s.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  ::setsockopt(s.get(), IPPROTO_TCP, TCP_FASTOPEN, &one, sizeof(one));
  socklen_t len = addr_len(ss);
  if (s.get() < 0 || ::bind(s.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0 ||
      ::listen(s.get(), 4096) != 0 ||
      ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    throw std::runtime_error("listen on " + ip + ": " + errstr(errno));
  }
  *port = ntohs(ss.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&ss)->sin_port
                                        : reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return s;
}

// An accepted connection and its peer as the proxy sees it.
struct Accepted {
  OwnedFd sock;
  sockaddr_storage peer{};
};

std::optional<Accepted> accept_within(int lst, int timeout_ms) {
  pollfd p{lst, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) != 1) return std::nullopt;
  Accepted a;
  socklen_t len = sizeof(a.peer);
  a.sock = OwnedFd(::accept4(lst, reinterpret_cast<sockaddr*>(&a.peer), &len, SOCK_CLOEXEC));
  if (a.sock.get() < 0) return std::nullopt;
  return a;
}

enum class How { kConnect, kFastOpenSendto, kFastOpenConnect };

struct ClientSpec {
  sockaddr_storage dest{};
  int domain = 0;  // 0: dest's family
  std::string comm = "twu-client";
  uid_t uid = 0;
  std::string cgroup;  // "" = stay outside
  How how = How::kConnect;
  bool own_netns = false;  // unshare a network namespace of its own (lo up) first
  int repeat = 1;          // connect, getpeername, close; until told to stop (repeat > 1)
};

// What the client saw: connect's errno, getpeername, its own pid.
struct ClientReport {
  int step = 0;  // 0 ok; 1 join cgroup, 2 creds, 3 socket, 4 connect/sendto, 5 getpeername
  int err = 0;
  pid_t pid = 0;
  int attempts = 0;
  int failures = 0;
  sockaddr_storage peer{};
};

// A forked client process. Its report comes back over a socketpair; it
// stays alive (its pid valid, socket open) until destruction.
class Client {
 public:
  explicit Client(const ClientSpec& spec) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) throw std::bad_alloc();
    char procs[512] = {};
    if (!spec.cgroup.empty()) {
      std::snprintf(procs, sizeof(procs), "%s/cgroup.procs", spec.cgroup.c_str());
    }
    const int domain = spec.domain ? spec.domain : spec.dest.ss_family;
    const socklen_t dlen = addr_len(spec.dest);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(sv[0]);
      run(sv[1], spec, procs, domain, dlen);
    }
    ::close(sv[1]);
    ctl_ = OwnedFd(sv[0]);
  }
  ~Client() {
    if (pid_ <= 0) return;
    ctl_.reset();
    for (int i = 0; i < 500; ++i) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  pid_t pid() const { return pid_; }
  void stop() { (void)!::send(ctl_.get(), "s", 1, MSG_NOSIGNAL); }
  // Waits for the report.
  ClientReport report(int timeout_ms = 10000) {
    ClientReport r{};
    r.step = -1;
    pollfd p{ctl_.get(), POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) == 1 && ::recv(ctl_.get(), &r, sizeof(r), 0) == sizeof(r)) {
      return r;
    }
    r.step = -1;
    return r;
  }

 private:
  [[noreturn]] static void run(int ctl, const ClientSpec& spec, const char* procs, int domain,
                               socklen_t dlen) {
    ClientReport r{};
    r.pid = ::getpid();
    auto finish = [&](int step, int err) {
      r.step = step;
      r.err = err;
      (void)!::send(ctl, &r, sizeof(r), MSG_NOSIGNAL);
      char b;
      while (::read(ctl, &b, 1) < 0 && errno == EINTR) {
      }
      ::_exit(0);
    };
    if (procs[0]) {
      const int fd = ::open(procs, O_WRONLY | O_CLOEXEC);
      char buf[32];
      const int n = std::snprintf(buf, sizeof(buf), "%d\n", static_cast<int>(::getpid()));
      if (fd < 0 || ::write(fd, buf, static_cast<size_t>(n)) != n) finish(1, errno);
      ::close(fd);
    }
    if (spec.own_netns) {
      if (::unshare(CLONE_NEWNET) != 0) finish(1, errno);
      const int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      ifreq ifr{};
      std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
      if (s < 0 || ::ioctl(s, SIOCGIFFLAGS, &ifr) != 0) finish(1, errno);
      ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
      if (::ioctl(s, SIOCSIFFLAGS, &ifr) != 0) finish(1, errno);
      ::close(s);
    }
    ::prctl(PR_SET_NAME, spec.comm.c_str(), 0, 0, 0);
    if (spec.uid != 0 && (::setresgid(spec.uid, spec.uid, spec.uid) != 0 ||
                          ::setresuid(spec.uid, spec.uid, spec.uid) != 0)) {
      finish(2, errno);
    }
    for (int i = 0; i < spec.repeat; ++i) {
      if (spec.repeat > 1) {
        char b;
        if (::recv(ctl, &b, 1, MSG_DONTWAIT) == 1) break;
      }
      ++r.attempts;
      const int s = ::socket(domain, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (s < 0) finish(3, errno);
      const auto* d = reinterpret_cast<const sockaddr*>(&spec.dest);
      int rc = 0;
      if (spec.how == How::kFastOpenSendto) {
        rc = ::sendto(s, "tfo", 3, MSG_FASTOPEN | MSG_NOSIGNAL, d, dlen) == 3 ? 0 : -1;
      } else if (spec.how == How::kFastOpenConnect) {
        const int one = 1;
        ::setsockopt(s, IPPROTO_TCP, TCP_FASTOPEN_CONNECT, &one, sizeof(one));
        rc = ::connect(s, d, dlen);
        if (rc == 0) rc = ::send(s, "tfo", 3, MSG_NOSIGNAL) == 3 ? 0 : -1;
      } else {
        rc = ::connect(s, d, dlen);
      }
      if (rc != 0) {
        if (spec.repeat == 1) finish(4, errno);
        ++r.failures;
        ::close(s);
        continue;
      }
      socklen_t plen = sizeof(r.peer);
      if (::getpeername(s, reinterpret_cast<sockaddr*>(&r.peer), &plen) != 0) finish(5, errno);
      if (spec.repeat == 1) finish(0, 0);  // keeps the socket open
      ::close(s);
    }
    finish(0, 0);
    ::_exit(0);  // finish() does not return
  }

  pid_t pid_ = -1;
  OwnedFd ctl_;
};

UpgradeRuleSpec rule(uint32_t id, std::vector<std::string> cidrs, uint16_t first, uint16_t last) {
  UpgradeRuleSpec r;
  r.rule_id = id;
  r.cidrs = std::move(cidrs);
  r.ports = {{first, last}};
  return r;
}

class UpgradeRedirectTest : public ::testing::Test {
 protected:
  UpgradeRedirectTest() {
    lst4_ = listen_on("127.0.0.1", &port4_);
    lst6_ = listen_on("::1", &port6_);
  }

  UpgradeRedirectOptions options() const {
    UpgradeRedirectOptions o;
    o.cgroup = cgroup_.path();
    o.proxy_port_v4 = port4_;
    o.proxy_port_v6 = port6_;
    o.proxy_uid = kProxyUid;
    return o;
  }
  UpgradeRedirect& redirect() {
    if (!redirect_) redirect_ = std::make_unique<UpgradeRedirect>(options());
    return *redirect_;
  }
  // The default selection: rule 7 upgrades 198.18.130.0/24 and
  // 2001:db8::/64 on ports 80 and 8000-8100.
  void publish_default() {
    UpgradeRuleSpec r = rule(7, {"198.18.130.0/24", "2001:db8::/64"}, 80, 80);
    r.ports.push_back({8000, 8100});
    redirect().publish(UpgradeSelection{{r}});
  }
  ClientSpec in_cgroup(const sockaddr_storage& dest) const {
    ClientSpec s;
    s.dest = dest;
    s.cgroup = cgroup_.path();
    return s;
  }
  // Runs a client expected to be redirected; returns what take() gives for
  // the connection the listener accepted.
  std::optional<OriginalDestination> expect_redirected(const ClientSpec& spec, int lst,
                                                       const std::string& want_peer,
                                                       pid_t* pid = nullptr) {
    Client c(spec);
    const ClientReport r = c.report();
    EXPECT_EQ(r.step, 0) << "client failed at step " << r.step << ": " << errstr(r.err);
    if (r.step != 0) return std::nullopt;
    EXPECT_EQ(to_string(r.peer), want_peer) << "the client's getpeername()";
    auto a = accept_within(lst, 2000);
    EXPECT_TRUE(a) << "nothing arrived at the proxy listener";
    if (!a) return std::nullopt;
    if (pid) *pid = r.pid;
    return redirect().take(a->peer);
  }
  // Runs a client expected not to be redirected: its connect fails with
  // ENETUNREACH (no route in the namespace) and nothing reaches the proxy.
  void expect_not_redirected(const ClientSpec& spec) {
    Client c(spec);
    const ClientReport r = c.report();
    EXPECT_EQ(r.step, 4) << "connect should have failed (not redirected)";
    EXPECT_EQ(r.err, ENETUNREACH) << errstr(r.err);
    EXPECT_FALSE(accept_within(lst4_.get(), 0));
    EXPECT_FALSE(accept_within(lst6_.get(), 0));
  }

  PrivateNetns netns_;
  ownertest::TestCgroup cgroup_;
  OwnedFd lst4_, lst6_;
  uint16_t port4_ = 0, port6_ = 0;
  std::unique_ptr<UpgradeRedirect> redirect_;
};

TEST_F(UpgradeRedirectTest, ConnectV4IsRedirectedAndTheProxyLearnsTheOriginalDestination) {
  publish_default();
  ClientSpec spec = in_cgroup(make_addr(kDest4, 80));
  spec.comm = "twu-v4-client";
  pid_t pid = 0;
  auto o = expect_redirected(spec, lst4_.get(), "198.18.130.10:80", &pid);
  ASSERT_TRUE(o);
  EXPECT_EQ(to_string(o->destination), "198.18.130.10:80");
  EXPECT_EQ(o->rule_id, 7u);
  EXPECT_EQ(o->pid, static_cast<uint32_t>(pid));
  EXPECT_EQ(o->tid, static_cast<uint32_t>(pid));
  EXPECT_EQ(o->uid, 0u);
  EXPECT_EQ(o->comm, "twu-v4-client");
  EXPECT_EQ(o->cgroup_id, cgroup_.id());
  EXPECT_NE(o->socket_cookie, 0u);
  EXPECT_EQ(o->generation, redirect().generation());
  EXPECT_FALSE(o->client_v4_mapped);
  EXPECT_LT(o->age, std::chrono::seconds(10));
  const auto c = redirect().counters();
  EXPECT_EQ(c.redirected, 1u);
  EXPECT_EQ(c.peer_recorded, 1u);
  EXPECT_EQ(c.getpeername, 1u);
  EXPECT_EQ(c.refused, 0u);
  EXPECT_EQ(c.other_netns, 0u);
}

TEST_F(UpgradeRedirectTest, TakeDeletesTheRecord) {
  publish_default();
  Client c(in_cgroup(make_addr(kDest4, 8050)));
  ASSERT_EQ(c.report().step, 0);
  auto a = accept_within(lst4_.get(), 2000);
  ASSERT_TRUE(a);
  auto first = redirect().take(a->peer);
  ASSERT_TRUE(first);
  EXPECT_EQ(to_string(first->destination), "198.18.130.10:8050");
  EXPECT_FALSE(redirect().take(a->peer)) << "a record is handed out once";
}

TEST_F(UpgradeRedirectTest, ConnectV6IsRedirected) {
  publish_default();
  ClientSpec spec = in_cgroup(make_addr(kDest6, 80));
  auto o = expect_redirected(spec, lst6_.get(), "[2001:db8::10]:80");
  ASSERT_TRUE(o);
  EXPECT_EQ(to_string(o->destination), "[2001:db8::10]:80");
  EXPECT_EQ(o->rule_id, 7u);
  EXPECT_EQ(o->comm, "twu-client");
  EXPECT_FALSE(o->client_v4_mapped);
}

TEST_F(UpgradeRedirectTest, V4MappedConnectIsJudgedAsV4AndLandsOnTheV4Listener) {
  publish_default();
  ClientSpec spec = in_cgroup(make_addr(kDest4, 80, /*v4_mapped=*/true));
  auto o = expect_redirected(spec, lst4_.get(), "[::ffff:198.18.130.10]:80");
  ASSERT_TRUE(o);
  EXPECT_EQ(to_string(o->destination), "198.18.130.10:80");
  EXPECT_TRUE(o->client_v4_mapped);
  EXPECT_EQ(o->rule_id, 7u);
}

TEST_F(UpgradeRedirectTest, V4MappedPrefixInTheV6TableDoesNotSelect) {
  // Only an IPv6 rule for 2001:db8::/64: a mapped 198.18.130.10 is IPv4 and
  // not selected; nor is a v4 rule reachable through the v6 table.
  redirect().publish(UpgradeSelection{{rule(3, {"2001:db8::/64"}, 80, 80)}});
  expect_not_redirected(in_cgroup(make_addr(kDest4, 80, true)));
  expect_not_redirected(in_cgroup(make_addr(kDest4, 80)));
}

TEST_F(UpgradeRedirectTest, UnselectedDestinationOrPortIsNotRedirected) {
  publish_default();
  expect_not_redirected(in_cgroup(make_addr(kDest4, 81)));
  expect_not_redirected(in_cgroup(make_addr(kDest4, 8101)));
  expect_not_redirected(in_cgroup(make_addr("198.18.131.10", 80)));
  expect_not_redirected(in_cgroup(make_addr("2001:db8:1::10", 80)));
  EXPECT_EQ(redirect().counters().redirected, 0u);
}

TEST_F(UpgradeRedirectTest, NothingIsRedirectedBeforeTheFirstPublish) {
  redirect();
  expect_not_redirected(in_cgroup(make_addr(kDest4, 80)));
  publish_default();
  EXPECT_TRUE(expect_redirected(in_cgroup(make_addr(kDest4, 80)), lst4_.get(), "198.18.130.10:80"));
  redirect().clear();
  expect_not_redirected(in_cgroup(make_addr(kDest4, 80)));
}

TEST_F(UpgradeRedirectTest, ProcessOutsideTheCgroupIsNotRedirected) {
  publish_default();
  ClientSpec spec = in_cgroup(make_addr(kDest4, 80));
  spec.cgroup.clear();
  expect_not_redirected(spec);
}

TEST_F(UpgradeRedirectTest, ConnectOfTheProxyUidIsNotRedirected) {
  publish_default();
  ClientSpec spec = in_cgroup(make_addr(kDest4, 80));
  spec.uid = kProxyUid;
  expect_not_redirected(spec);
  EXPECT_EQ(redirect().counters().proxy_own, 1u);
  spec.uid = kProxyUid + 1;  // another uid is not the proxy's
  EXPECT_TRUE(expect_redirected(spec, lst4_.get(), "198.18.130.10:80"));
  spec.uid = 0;
  EXPECT_TRUE(expect_redirected(spec, lst4_.get(), "198.18.130.10:80"));
  EXPECT_EQ(redirect().counters().proxy_own, 1u);
}

TEST_F(UpgradeRedirectTest, UidFilterSelectsOnlyListedUids) {
  UpgradeRuleSpec r = rule(11, {"198.18.130.0/24"}, 80, 80);
  r.uids = {12345};
  redirect().publish(UpgradeSelection{{r}});
  ClientSpec spec = in_cgroup(make_addr(kDest4, 80));
  spec.uid = 12345;
  auto o = expect_redirected(spec, lst4_.get(), "198.18.130.10:80");
  ASSERT_TRUE(o);
  EXPECT_EQ(o->uid, 12345u);
  EXPECT_EQ(o->gid, 12345u);
  EXPECT_EQ(o->rule_id, 11u);
  spec.uid = 23456;
  expect_not_redirected(spec);
  spec.uid = 0;
  expect_not_redirected(spec);
  EXPECT_EQ(redirect().counters().owner_filtered, 2u);
}

// (device in the kernel's encoding, inode) of a file, as the connect hook
// reads task->mm->exe_file.
std::pair<uint32_t, uint64_t> exe_id(const char* path) {
  struct stat st {};
  EXPECT_EQ(::stat(path, &st), 0) << path;
  return {static_cast<uint32_t>((major(st.st_dev) << 20) | minor(st.st_dev)),
          static_cast<uint64_t>(st.st_ino)};
}

TEST_F(UpgradeRedirectTest, ExecutableFilterSelectsOnlyThatFile) {
  // The client is a fork of this test binary: it runs /proc/self/exe.
  UpgradeRuleSpec r = rule(13, {"198.18.130.0/24", "2001:db8::/64"}, 80, 80);
  r.exe_filter = true;
  r.exes = {exe_id("/proc/self/exe"), exe_id("/bin/true")};
  redirect().publish(UpgradeSelection{{r}});
  auto o = expect_redirected(in_cgroup(make_addr(kDest4, 80)), lst4_.get(), "198.18.130.10:80");
  ASSERT_TRUE(o);
  EXPECT_EQ(o->rule_id, 13u);

  r.exes = {exe_id("/bin/true")};  // another file
  redirect().publish(UpgradeSelection{{r}});
  expect_not_redirected(in_cgroup(make_addr(kDest6, 80)));
  r.exes.clear();  // the named executables do not exist here: nobody
  redirect().publish(UpgradeSelection{{r}});
  expect_not_redirected(in_cgroup(make_addr(kDest4, 80)));
  EXPECT_EQ(redirect().counters().owner_filtered, 2u);
  EXPECT_THROW(compile_selection(UpgradeSelection{{[] {
                 UpgradeRuleSpec x = rule(14, {"198.18.130.0/24"}, 80, 80);
                 x.exes = {{1, 2}};  // rows without the filter flag
                 return x;
               }()}}),
               std::invalid_argument);
}

TEST_F(UpgradeRedirectTest, CommFilterSelectsOnlyListedComms) {
  UpgradeRuleSpec r = rule(12, {"198.18.130.0/24", "2001:db8::/64"}, 80, 80);
  r.comms = {"twu-legacy"};
  redirect().publish(UpgradeSelection{{r}});
  ClientSpec spec = in_cgroup(make_addr(kDest6, 80));
  spec.comm = "twu-legacy";
  auto o = expect_redirected(spec, lst6_.get(), "[2001:db8::10]:80");
  ASSERT_TRUE(o);
  EXPECT_EQ(o->comm, "twu-legacy");
  spec.comm = "twu-legacy2";
  expect_not_redirected(spec);
  spec.comm = "twu-legac";
  spec.dest = make_addr(kDest4, 80);
  expect_not_redirected(spec);
}

TEST_F(UpgradeRedirectTest, CgroupFilterSelectsTheSubtreeOnly) {
  // Declared parents first: destroyed children first.
  ownertest::TestCgroup sel(cgroup_.path(), "twu-selected");
  ownertest::TestCgroup deeper(sel.path(), "deeper");
  ownertest::TestCgroup other(cgroup_.path(), "twu-other");
  UpgradeRuleSpec r = rule(13, {"198.18.130.0/24", "2001:db8::/64"}, 80, 80);
  r.cgroup_filter = true;
  r.cgroups = {{sel.id(), sel.level()}};
  redirect().publish(UpgradeSelection{{r}});

  ClientSpec spec = in_cgroup(make_addr(kDest4, 80));
  spec.cgroup = sel.path();
  auto o = expect_redirected(spec, lst4_.get(), "198.18.130.10:80");
  ASSERT_TRUE(o);
  EXPECT_EQ(o->rule_id, 13u);
  spec.cgroup = deeper.path();  // below the selected cgroup
  spec.dest = make_addr(kDest6, 80);
  EXPECT_TRUE(expect_redirected(spec, lst6_.get(), "[2001:db8::10]:80"));
  const uint64_t filtered = redirect().counters().owner_filtered;
  spec.cgroup = other.path();  // a sibling
  expect_not_redirected(spec);
  spec.cgroup = cgroup_.path();  // the attach cgroup itself, above the selector
  spec.dest = make_addr(kDest4, 80);
  expect_not_redirected(spec);
  EXPECT_EQ(redirect().counters().owner_filtered, filtered + 2);

  // Named cgroups that do not exist on this host: the rule keeps its
  // destinations and selects nobody.
  r.cgroups.clear();
  redirect().publish(UpgradeSelection{{r}});
  spec.cgroup = sel.path();
  expect_not_redirected(spec);
}

TEST_F(UpgradeRedirectTest, EarlierRuleOwnsAnOverlapAndItsFiltersDecide) {
  UpgradeRuleSpec narrow = rule(1, {"198.18.130.10/32"}, 80, 80);
  narrow.comms = {"twu-only"};
  UpgradeRuleSpec wide = rule(2, {"198.18.0.0/16"}, 1, 65535);
  redirect().publish(UpgradeSelection{{narrow, wide}});
  ClientSpec spec = in_cgroup(make_addr(kDest4, 80));
  spec.comm = "twu-only";
  auto o = expect_redirected(spec, lst4_.get(), "198.18.130.10:80");
  ASSERT_TRUE(o);
  EXPECT_EQ(o->rule_id, 1u);
  spec.comm = "twu-other";
  expect_not_redirected(spec);  // rule 1 owns :80 of that host
  spec.dest = make_addr(kDest4, 81);
  o = expect_redirected(spec, lst4_.get(), "198.18.130.10:81");
  ASSERT_TRUE(o);
  EXPECT_EQ(o->rule_id, 2u);
  spec.dest = make_addr("198.18.7.7", 80);
  o = expect_redirected(spec, lst4_.get(), "198.18.7.7:80");
  ASSERT_TRUE(o);
  EXPECT_EQ(o->rule_id, 2u);
}

TEST_F(UpgradeRedirectTest, DirectConnectionToTheProxyHasNoRecord) {
  publish_default();
  // The test process (outside the cgroup) connects to the listener itself.
  sockaddr_storage d = make_addr("127.0.0.1", port4_);
  OwnedFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_EQ(::connect(s.get(), reinterpret_cast<sockaddr*>(&d), addr_len(d)), 0) << errstr(errno);
  auto a = accept_within(lst4_.get(), 2000);
  ASSERT_TRUE(a);
  EXPECT_FALSE(redirect().take(a->peer));
}

// sendto(MSG_FASTOPEN) on an unconnected socket goes through the connect
// hook on this kernel (the pre_connect call sits in __inet_stream_connect,
// which TCP Fast Open uses too): it is redirected, and the data arrives.
TEST_F(UpgradeRedirectTest, FastOpenSendtoIsRedirected) {
  publish_default();
  ClientSpec spec = in_cgroup(make_addr(kDest4, 80));
  spec.how = How::kFastOpenSendto;
  Client c(spec);
  const ClientReport r = c.report();
  ASSERT_EQ(r.step, 0) << "sendto(MSG_FASTOPEN) failed: " << errstr(r.err);
  EXPECT_EQ(to_string(r.peer), "198.18.130.10:80");
  auto a = accept_within(lst4_.get(), 2000);
  ASSERT_TRUE(a);
  auto o = redirect().take(a->peer);
  ASSERT_TRUE(o);
  EXPECT_EQ(to_string(o->destination), "198.18.130.10:80");
  char buf[8] = {};
  pollfd p{a->sock.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 2000), 1);
  EXPECT_EQ(::recv(a->sock.get(), buf, sizeof(buf), 0), 3);
  EXPECT_STREQ(buf, "tfo");
}

TEST_F(UpgradeRedirectTest, FastOpenSendtoV6AndDeferredConnectAreRedirected) {
  publish_default();
  ClientSpec spec = in_cgroup(make_addr(kDest6, 8000));
  spec.how = How::kFastOpenSendto;
  auto o = expect_redirected(spec, lst6_.get(), "[2001:db8::10]:8000");
  ASSERT_TRUE(o);
  EXPECT_EQ(to_string(o->destination), "[2001:db8::10]:8000");
  // TCP_FASTOPEN_CONNECT: connect() returns before the SYN, which leaves
  // with the first send().
  spec = in_cgroup(make_addr(kDest4, 8001));
  spec.how = How::kFastOpenConnect;
  o = expect_redirected(spec, lst4_.get(), "198.18.130.10:8001");
  ASSERT_TRUE(o);
  EXPECT_EQ(to_string(o->destination), "198.18.130.10:8001");
}

// Selections flip while a client connects in a loop: every connect sees the
// old or the new selection (both redirect, with different rule ids), never
// none (which would fail with ENETUNREACH).
TEST_F(UpgradeRedirectTest, AtomicSwapNeverLeavesAConnectUnselected) {
  UpgradeSelection a{{rule(21, {"198.18.130.0/24"}, 80, 80)}};
  UpgradeSelection b{{rule(22, {"198.18.128.0/17"}, 80, 80), rule(23, {"2001:db8::/32"}, 1, 9)}};
  redirect().publish(a);
  ClientSpec spec = in_cgroup(make_addr(kDest4, 80));
  spec.repeat = 100000;
  std::atomic<bool> done{false};
  std::set<uint32_t> rules;
  size_t taken = 0, untaken = 0;
  std::thread acceptor([&] {
    while (true) {
      auto acc = accept_within(lst4_.get(), 100);
      if (!acc) {
        if (done) return;
        continue;
      }
      auto o = redirect().take(acc->peer);
      if (o) {
        ++taken;
        rules.insert(o->rule_id);
      } else {
        ++untaken;
      }
    }
  });
  Client c(spec);
  for (int i = 0; i < 12; ++i) redirect().publish(i % 2 ? a : b);
  c.stop();
  const ClientReport r = c.report();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  done = true;
  acceptor.join();
  ASSERT_EQ(r.step, 0) << errstr(r.err);
  EXPECT_GT(r.attempts, 50);
  EXPECT_EQ(r.failures, 0) << "connects that saw no selection";
  EXPECT_EQ(taken, static_cast<size_t>(r.attempts));
  EXPECT_EQ(untaken, 0u);
  EXPECT_EQ(rules, (std::set<uint32_t>{21, 22}));
}

// Entries of a pinned map (key size `key_size`).
size_t pinned_entries(const std::string& path, size_t key_size) {
  OwnedFd fd(bpf_obj_get(path.c_str()));
  EXPECT_GE(fd.get(), 0) << path << ": " << errstr(errno);
  std::vector<uint8_t> key(key_size), next(key_size);
  size_t n = 0;
  void* prev = nullptr;
  while (bpf_map_get_next_key(fd.get(), prev, next.data()) == 0) {
    ++n;
    key = next;
    prev = key.data();
  }
  return n;
}

// Removes the upgrade pins (detaching the links) when a test ends, also on
// failure, before the private bpffs goes.
struct PinGuard {
  std::string dir;
  ~PinGuard() { UpgradeRedirect::remove_pins(dir); }
};

size_t programs_on(const std::string& cgroup, bpf_attach_type t) {
  OwnedFd fd(::open(cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  __u32 ids[8];
  __u32 cnt = 8;
  __u32 flags = 0;
  EXPECT_EQ(bpf_prog_query(fd.get(), t, 0, &flags, ids, &cnt), 0) << errstr(errno);
  return cnt;
}

// The proxy is down: a selected connect is still redirected and fails at
// once (ECONNREFUSED), never goes out in plaintext; no record is left.
TEST_F(UpgradeRedirectTest, ProxyDownFailsClosedAndLeavesNoRecord) {
  ownertest::PrivateBpffs bpffs;
  PinGuard guard{bpffs.path()};
  UpgradeRedirectOptions o = options();
  o.pin_dir = bpffs.path();
  redirect_ = std::make_unique<UpgradeRedirect>(o);
  publish_default();
  lst4_.reset();
  Client c(in_cgroup(make_addr(kDest4, 80)));
  const ClientReport r = c.report();
  EXPECT_EQ(r.step, 4);
  EXPECT_EQ(r.err, ECONNREFUSED) << errstr(r.err);
  const auto n = redirect().counters();
  EXPECT_EQ(n.redirected, 1u);
  EXPECT_EQ(n.peer_recorded, 1u);
  EXPECT_EQ(pinned_entries(bpffs.path() + "/twu_peers_v1", sizeof(twu_peer_key)), 0u);
  EXPECT_EQ(pinned_entries(bpffs.path() + "/twu_conns_v1", sizeof(uint64_t)), 0u);
  redirect_.reset();
}

// A redirected client of another network namespace meets no proxy there
// (its connect fails) and gets no proxy-side record that could be confused
// with a local client of the same address and port.
TEST_F(UpgradeRedirectTest, ClientInAnotherNetnsGetsNoProxySideRecord) {
  publish_default();
  ClientSpec spec = in_cgroup(make_addr(kDest4, 80));
  spec.own_netns = true;
  Client c(spec);
  const ClientReport r = c.report();
  EXPECT_EQ(r.step, 4);
  EXPECT_EQ(r.err, ECONNREFUSED) << errstr(r.err);
  const auto n = redirect().counters();
  EXPECT_EQ(n.redirected, 1u);
  EXPECT_EQ(n.other_netns, 1u);
  EXPECT_EQ(n.peer_recorded, 0u);
}

// Pinned links keep redirecting after the loader is gone; a new loader
// adopts the pinned maps (selection and records survive), replaces the
// old links, and remove_pins() detaches everything.
TEST_F(UpgradeRedirectTest, PinnedLinksAndMapsSurviveAndAreTakenOver) {
  ownertest::PrivateBpffs bpffs;
  PinGuard guard{bpffs.path()};
  UpgradeRedirectOptions o = options();
  o.pin_dir = bpffs.path();
  auto first = std::make_unique<UpgradeRedirect>(o);
  UpgradeRuleSpec r = rule(31, {"198.18.130.0/24"}, 80, 80);
  first->publish(UpgradeSelection{{r}});
  EXPECT_EQ(first->pins().size(), 5u);
  for (const char* p :
       {"twu_connect4", "twu_connect6", "twu_sock_ops", "twu_getpeername4", "twu_getpeername6"}) {
    EXPECT_TRUE(ownertest::path_exists(bpffs.path() + "/" + UpgradeRedirect::link_pin_name(p)))
        << p;
  }
  EXPECT_TRUE(ownertest::path_exists(bpffs.path() + "/twu_state_v1"));
  first.reset();
  EXPECT_EQ(programs_on(cgroup_.path(), BPF_CGROUP_INET4_CONNECT), 1u);

  // Redirected with no loader alive; the record waits in the pinned map.
  Client c(in_cgroup(make_addr(kDest4, 80)));
  ASSERT_EQ(c.report().step, 0);
  auto a = accept_within(lst4_.get(), 2000);
  ASSERT_TRUE(a);

  UpgradeRedirect second(o);
  EXPECT_EQ(second.generation(), 1u) << "the pinned selection was adopted";
  EXPECT_EQ(programs_on(cgroup_.path(), BPF_CGROUP_INET4_CONNECT), 1u) << "old link replaced";
  EXPECT_EQ(programs_on(cgroup_.path(), BPF_CGROUP_SOCK_OPS), 1u);
  auto orig = second.take(a->peer);
  ASSERT_TRUE(orig);
  EXPECT_EQ(orig->rule_id, 31u);
  EXPECT_EQ(to_string(orig->destination), "198.18.130.10:80");
  EXPECT_EQ(second.publish(UpgradeSelection{}), 2u);

  const auto removed = UpgradeRedirect::remove_pins(bpffs.path());
  EXPECT_EQ(removed.size(), 5u + 12u);  // five links, twelve maps
  EXPECT_EQ(programs_on(cgroup_.path(), BPF_CGROUP_INET4_CONNECT), 0u);
  EXPECT_EQ(programs_on(cgroup_.path(), BPF_CGROUP_SOCK_OPS), 0u);
  EXPECT_EQ(programs_on(cgroup_.path(), BPF_CGROUP_INET6_GETPEERNAME), 0u);
}

TEST(UpgradeRedirectAttach, FailureMidwayLeavesNothingAttached) {
  PrivateNetns netns;
  ownertest::TestCgroup cg;
  // An exclusive (non-multi) sock_ops program on the cgroup: our connect
  // hooks attach, our sock_ops cannot; the constructor must undo the rest.
  const bpf_insn prog[] = {
      {BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 1},
      {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
  };
  OwnedFd pfd(bpf_prog_load(BPF_PROG_TYPE_SOCK_OPS, "twu_blocker", "GPL", prog, 2, nullptr));
  ASSERT_GE(pfd.get(), 0) << errstr(errno);
  OwnedFd cgfd(::open(cg.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_EQ(bpf_prog_attach(pfd.get(), cgfd.get(), BPF_CGROUP_SOCK_OPS, 0), 0) << errstr(errno);

  auto count = [&](bpf_attach_type t) {
    __u32 ids[8];
    __u32 cnt = 8;
    __u32 flags = 0;
    EXPECT_EQ(bpf_prog_query(cgfd.get(), t, 0, &flags, ids, &cnt), 0);
    return cnt;
  };
  UpgradeRedirectOptions o;
  o.cgroup = cg.path();
  o.proxy_port_v4 = 1;
  o.proxy_port_v6 = 1;
  o.proxy_uid = kProxyUid;
  try {
    UpgradeRedirect r(o);
    ADD_FAILURE() << "attach should have failed";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("twu_sock_ops"), std::string::npos) << e.what();
  }
  EXPECT_EQ(count(BPF_CGROUP_INET4_CONNECT), 0u);
  EXPECT_EQ(count(BPF_CGROUP_INET6_CONNECT), 0u);
  EXPECT_EQ(count(BPF_CGROUP_INET4_GETPEERNAME), 0u);
  EXPECT_EQ(count(BPF_CGROUP_INET6_GETPEERNAME), 0u);
  EXPECT_EQ(count(BPF_CGROUP_SOCK_OPS), 1u);  // only the blocker
  bpf_prog_detach2(pfd.get(), cgfd.get(), BPF_CGROUP_SOCK_OPS);

  // Without the blocker all five attach; gone again with the object.
  {
    UpgradeRedirect r(o);
    EXPECT_EQ(r.attached_programs().size(), 5u);
    EXPECT_EQ(count(BPF_CGROUP_INET4_CONNECT), 1u);
    EXPECT_EQ(count(BPF_CGROUP_SOCK_OPS), 1u);
  }
  EXPECT_EQ(count(BPF_CGROUP_INET4_CONNECT), 0u);
  EXPECT_EQ(count(BPF_CGROUP_SOCK_OPS), 0u);
}

TEST(UpgradeRedirectAttach, BadOptionsAreRefused) {
  UpgradeRedirectOptions o;
  o.proxy_port_v4 = o.proxy_port_v6 = 1;
  o.proxy_uid = 1;
  EXPECT_THROW(UpgradeRedirect{o}, std::invalid_argument);  // no cgroup: never a guess
  o.cgroup = "sys/fs/cgroup";
  EXPECT_THROW(UpgradeRedirect{o}, std::invalid_argument);
  o.cgroup = "/tmp";
  o.proxy_uid = 0;  // root is never the proxy
  EXPECT_THROW(UpgradeRedirect{o}, std::invalid_argument);
  o.proxy_uid = 1;
  EXPECT_THROW(UpgradeRedirect{o}, std::runtime_error);  // not a cgroup
}

// ---- the compile step (no kernel) ----

TEST(UpgradeSelectionCompile, ClassesCoverNestedPrefixesAndPortsBecomePrefixes) {
  UpgradeRuleSpec a = rule(1, {"10.0.0.0/8"}, 80, 80);
  UpgradeRuleSpec b = rule(2, {"10.1.0.0/16", "2001:db8::/32"}, 8000, 8003);
  b.uids = {5, 5, 6};
  b.comms = {"curl"};
  const auto c = compile_selection(UpgradeSelection{{a, b}});
  ASSERT_EQ(c.v4.size(), 2u);
  ASSERT_EQ(c.v6.size(), 1u);
  EXPECT_NE(c.v4[0].class_id, c.v4[1].class_id);
  // 10.1/16 is in both rules' class: it has rows for :80 (rule 1) and 8000-8003 (rule 2).
  size_t rows_of_inner = 0;
  for (const auto& p : c.ports) {
    if (p.class_id != c.v4[1].class_id) continue;
    ++rows_of_inner;
    if (p.port == 80) {
      EXPECT_EQ(p.rule.rule_id, 1u);
      EXPECT_EQ(p.prefix_len, 16);
      EXPECT_EQ(p.rule.flags, 0u);
    } else {
      EXPECT_EQ(p.port, 8000);
      EXPECT_EQ(p.prefix_len, 14);
      EXPECT_EQ(p.rule.rule_id, 2u);
      EXPECT_EQ(p.rule.flags, static_cast<uint32_t>(TWU_RULE_UID | TWU_RULE_COMM));
    }
  }
  EXPECT_EQ(rows_of_inner, 2u);
  EXPECT_EQ(c.uids.size(), 2u);
  EXPECT_EQ(c.comms.size(), 1u);
}

TEST(UpgradeSelectionCompile, RefusesBadRules) {
  auto bad = [](UpgradeRuleSpec r) {
    EXPECT_THROW(compile_selection(UpgradeSelection{{r}}), std::invalid_argument);
  };
  bad(rule(1, {"198.18.0.0/33"}, 80, 80));
  bad(rule(1, {"::ffff:198.18.0.0/112"}, 80, 80));
  bad(rule(1, {"example.com"}, 80, 80));
  bad(rule(1, {}, 80, 80));
  bad(rule(1, {"198.18.0.0/15"}, 90, 80));
  UpgradeRuleSpec r = rule(1, {"198.18.0.0/15"}, 80, 80);
  r.comms = {"a-name-that-is-too-long"};
  bad(r);
  EXPECT_THROW(compile_selection(UpgradeSelection{
                   {rule(1, {"198.18.0.0/15"}, 80, 80), rule(1, {"2001:db8::/32"}, 80, 80)}}),
               std::invalid_argument);
}

}  // namespace
}  // namespace tlswall
