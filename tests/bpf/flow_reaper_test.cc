// The flow reaper (bpf/lib/flow_reap.bpf.h) on real sockets: the classifier's
// flow table gets a state keyed like a loopback connection's flow, with that
// socket's cookie, and the test closes the connection. The reaper is a
// tracepoint program (observes only; nothing is attached to an interface).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include <bpf/bpf.h>

#include "tests/bpf/classifier_harness.h"
#include "tests/bpf/owner_test_support.h"

namespace tlswall::bpftest {
namespace {

using ownertest::Family;

// A connected loopback pair: client and the server's accepted socket.
struct Pair {
  int client = -1;
  int server = -1;
  Pair() = default;
  Pair(const Pair&) = delete;
  Pair& operator=(const Pair&) = delete;
  ~Pair() { close_both(); }
  void close_both() {
    if (client >= 0) ::close(client);
    if (server >= 0) ::close(server);
    client = server = -1;
  }
};

void make_pair(Family fam, Pair& p) {
  const bool v6_listener = fam == Family::kV6;
  const int lfd = ::socket(v6_listener ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(lfd, 0);
  sockaddr_storage ss{};
  socklen_t len;
  if (v6_listener) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_addr = in6addr_loopback;
    len = sizeof(*a);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    len = sizeof(*a);
  }
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&ss), len), 0) << std::strerror(errno);
  ASSERT_EQ(::listen(lfd, 4), 0);
  ASSERT_EQ(::getsockname(lfd, reinterpret_cast<sockaddr*>(&ss), &len), 0);
  const uint16_t port = v6_listener ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                    : reinterpret_cast<sockaddr_in*>(&ss)->sin_port;
  if (fam == Family::kV4) {
    p.client = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_EQ(::connect(p.client, reinterpret_cast<sockaddr*>(&ss), len), 0);
  } else if (fam == Family::kV6) {
    p.client = ::socket(AF_INET6, SOCK_STREAM, 0);
    ASSERT_EQ(::connect(p.client, reinterpret_cast<sockaddr*>(&ss), len), 0);
  } else {
    // An AF_INET6 socket connecting to ::ffff:127.0.0.1 sends IPv4.
    p.client = ::socket(AF_INET6, SOCK_STREAM, 0);
    sockaddr_in6 m{};
    m.sin6_family = AF_INET6;
    m.sin6_port = port;
    ASSERT_EQ(::inet_pton(AF_INET6, "::ffff:127.0.0.1", &m.sin6_addr), 1);
    ASSERT_EQ(::connect(p.client, reinterpret_cast<sockaddr*>(&m), sizeof(m)), 0)
        << std::strerror(errno);
  }
  p.server = ::accept(lfd, nullptr, nullptr);
  ASSERT_GE(p.server, 0);
  ::close(lfd);
}

uint64_t cookie_of(int fd) {
  uint64_t c = 0;
  socklen_t len = sizeof(c);
  EXPECT_EQ(::getsockopt(fd, SOL_SOCKET, SO_COOKIE, &c, &len), 0) << std::strerror(errno);
  return c;
}

// The flow key of what `fd` sends (local -> peer), as the classifier builds it.
tw_flow_key key_of(int fd) {
  sockaddr_storage l{}, r{};
  socklen_t ll = sizeof(l), rl = sizeof(r);
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&l), &ll), 0);
  EXPECT_EQ(::getpeername(fd, reinterpret_cast<sockaddr*>(&r), &rl), 0);
  tw_flow_key k{};
  k.proto = IPPROTO_TCP;
  auto put = [&](const sockaddr_storage& s, __u8* addr, __u16* port) {
    if (s.ss_family == AF_INET) {
      const auto* a = reinterpret_cast<const sockaddr_in*>(&s);
      addr[10] = addr[11] = 0xff;
      std::memcpy(addr + 12, &a->sin_addr, 4);
      *port = a->sin_port;
      k.family = 4;
      return;
    }
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&s);
    std::memcpy(addr, &a->sin6_addr, 16);
    *port = a->sin6_port;
    k.family = IN6_IS_ADDR_V4MAPPED(&a->sin6_addr) ? 4 : 6;
  };
  put(l, k.saddr, &k.sport);
  put(r, k.daddr, &k.dport);
  return k;
}

uint16_t local_port(int fd) { return ntohs(key_of(fd).sport); }

// Whether a full (not TIME_WAIT) TCP socket with this local port is still
// listed in this network namespace.
bool full_socket_alive(uint16_t port) {
  for (const char* path : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string sl, local, remote, st;
      f >> sl >> local >> remote >> st;
      const auto colon = local.rfind(':');
      if (colon == std::string::npos) continue;
      if (std::stoul(local.substr(colon + 1), nullptr, 16) == port && st != "06") return true;
    }
  }
  return false;
}

class FlowReaperTest : public ClassifierTest {
 protected:
  void SetUp() override {
    ClassifierTest::SetUp();
    h().classifier().start_flow_reaper();
    ASSERT_EQ(h().classifier().flow_reaper(), "tp_btf/tcp_destroy_sock");
  }

  // A state for the flow `fd` sends: settled TLS unless told otherwise.
  tw_flow_key put_state(int fd, uint8_t cls, uint32_t cookie_lo, uint8_t protect = 1) {
    const tw_flow_key k = key_of(fd);
    tw_flow_state st{};
    st.cls = cls;
    st.protected_ = protect;
    st.mode = TW_MODE_ENFORCE;
    st.min_tls = 0x0303;
    st.hello_version = cls == TW_CLASS_TLS ? 0x0303 : 0;
    st.reason = cls == TW_CLASS_NOT_TLS ? TW_REASON_NOT_HANDSHAKE_RECORD : 0;
    st.sock_cookie_lo = cookie_lo;
    EXPECT_EQ(bpf_map_update_elem(h().classifier().flows_fd(), &k, &st, BPF_ANY), 0);
    return k;
  }

  bool present(const tw_flow_key& k) {
    tw_flow_state st{};
    return bpf_map_lookup_elem(h().classifier().flows_fd(), &k, &st) == 0;
  }

  // Waits until `pred` holds (2 s at most).
  template <class Pred>
  bool eventually(Pred pred) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (std::chrono::steady_clock::now() < end) {
      if (pred()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return pred();
  }
};

TEST_F(FlowReaperTest, ReapsSettledFlowsOfEveryFamilyWhenTheirSocketGoes) {
  for (Family fam : {Family::kV4, Family::kV6, Family::kV4MappedOnV6}) {
    SCOPED_TRACE(static_cast<int>(fam));
    Pair p;
    make_pair(fam, p);
    const tw_flow_key k = put_state(p.client, TW_CLASS_TLS, uint32_t(cookie_of(p.client)));
    EXPECT_EQ(k.family, fam == Family::kV6 ? 6 : 4);
    const uint64_t before = h().counters()[TW_CNT_FLOWS_REAPED];
    p.close_both();
    EXPECT_TRUE(eventually([&] { return !present(k); })) << "state of a closed TLS flow stayed";
    EXPECT_EQ(h().counters()[TW_CNT_FLOWS_REAPED], before + 1);
  }
}

TEST_F(FlowReaperTest, ReapsTheAcceptedSideOfAnInboundConnection) {
  Pair p;
  make_pair(Family::kV4, p);
  const tw_flow_key k = put_state(p.server, TW_CLASS_INBOUND, uint32_t(cookie_of(p.server)), 0);
  p.close_both();
  EXPECT_TRUE(eventually([&] { return !present(k); }));
}

TEST_F(FlowReaperTest, KeepsViolationsUndecidedFlowsAndOtherSocketsState) {
  Pair witness, violation, pending, other;
  make_pair(Family::kV4, witness);
  make_pair(Family::kV4, violation);
  make_pair(Family::kV4, pending);
  make_pair(Family::kV4, other);
  const tw_flow_key kw =
      put_state(witness.client, TW_CLASS_TLS, uint32_t(cookie_of(witness.client)));
  const tw_flow_key kv =
      put_state(violation.client, TW_CLASS_NOT_TLS, uint32_t(cookie_of(violation.client)));
  const tw_flow_key kp =
      put_state(pending.client, TW_CLASS_PENDING, uint32_t(cookie_of(pending.client)));
  // Same tuple, another socket's cookie (what a socket of another network
  // namespace, or an earlier connection on the tuple, would have).
  const tw_flow_key ko =
      put_state(other.client, TW_CLASS_TLS, uint32_t(cookie_of(other.client)) + 1);
  const uint16_t ports[] = {local_port(violation.client), local_port(pending.client),
                            local_port(other.client), local_port(witness.client)};
  const uint64_t kept_before = h().counters()[TW_CNT_FLOWS_KEPT];
  violation.close_both();
  pending.close_both();
  other.close_both();
  witness.close_both();
  ASSERT_TRUE(eventually([&] { return !present(kw); })) << "the reaper did not run at all";
  ASSERT_TRUE(eventually([&] {
    for (uint16_t port : ports) {
      if (full_socket_alive(port)) return false;
    }
    return true;
  })) << "the test's sockets were not destroyed";
  EXPECT_TRUE(present(kv)) << "a blocked flow's state must outlive its socket";
  EXPECT_TRUE(present(kp)) << "an undecided protected flow's state must outlive its socket";
  EXPECT_TRUE(present(ko)) << "state recorded for another socket was deleted";
  EXPECT_EQ(h().counters()[TW_CNT_FLOWS_KEPT], kept_before + 2);
}

TEST_F(FlowReaperTest, UnprotectedAndExemptFlowsAreReapedWhateverTheirClass) {
  Pair a, b;
  make_pair(Family::kV4, a);
  make_pair(Family::kV4, b);
  const tw_flow_key ka = put_state(a.client, TW_CLASS_NOT_TLS, uint32_t(cookie_of(a.client)), 0);
  tw_flow_key kb = key_of(b.client);
  tw_flow_state st{};
  st.cls = TW_CLASS_PENDING;
  st.protected_ = 1;
  st.exempt = 1;
  st.sock_cookie_lo = uint32_t(cookie_of(b.client));
  ASSERT_EQ(bpf_map_update_elem(h().classifier().flows_fd(), &kb, &st, BPF_ANY), 0);
  a.close_both();
  b.close_both();
  EXPECT_TRUE(eventually([&] { return !present(ka) && !present(kb); }));
}

}  // namespace
}  // namespace tlswall::bpftest
