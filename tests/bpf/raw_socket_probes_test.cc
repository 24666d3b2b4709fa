// Raw-socket probes against the real kernel (root): the backend this kernel
// supports attaches, and every AF_PACKET / AF_XDP socket this process opens
// is reported with its owner, while other sockets and failed socket() calls
// are not. The probes only observe; nothing is attached that can drop or
// redirect traffic. Never a skip: no working backend is a failure.
#include <gtest/gtest.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "agent/attribution/raw_socket_probes.h"

namespace tlswall::agent::attribution {
namespace {

class RawSocketProbesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(geteuid(), 0u) << "needs root (CAP_BPF, CAP_PERFMON, CAP_NET_RAW)";
    probes_ = std::make_unique<RawSocketProbes>(
        [this](const tw_raw_socket_event& e) { records_.push_back(e); });
    std::string why;
    for (const auto& b : probes_->report()) why += b.name + ": " + b.state + " " + b.why + "; ";
    ASSERT_FALSE(probes_->active().empty()) << "no raw socket probe attaches here: " << why;
  }

  // Records of this process, waiting up to 2 s for at least `want`.
  std::vector<tw_raw_socket_event> mine(size_t want) {
    std::vector<tw_raw_socket_event> out;
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    do {
      probes_->consume();
      out.clear();
      for (const auto& r : records_) {
        if (r.tgid == static_cast<uint32_t>(getpid())) out.push_back(r);
      }
      if (out.size() >= want) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    } while (std::chrono::steady_clock::now() < end);
    return out;
  }

  std::unique_ptr<RawSocketProbes> probes_;
  std::vector<tw_raw_socket_event> records_;
};

int open_socket(int family, int type) {
  const int fd = ::socket(family, type | SOCK_CLOEXEC, 0);
  EXPECT_GE(fd, 0) << "socket(" << family << ", " << type << "): " << std::strerror(errno);
  return fd;
}

TEST_F(RawSocketProbesTest, ReportsPacketAndXdpSocketsWithTheirOwner) {
  ASSERT_EQ(prctl(PR_SET_NAME, "tw-rawtest", 0, 0, 0), 0);
  const auto before = probes_->counters().seen;
  std::vector<int> fds = {open_socket(AF_INET, SOCK_STREAM), open_socket(AF_PACKET, SOCK_RAW),
                          open_socket(AF_XDP, SOCK_RAW), open_socket(AF_INET6, SOCK_DGRAM),
                          open_socket(AF_PACKET, SOCK_DGRAM)};
  const auto got = mine(3);
  for (int fd : fds) ::close(fd);
  ASSERT_EQ(got.size(), 3u) << "records of this process";
  const int want[3][2] = {{AF_PACKET, SOCK_RAW}, {AF_XDP, SOCK_RAW}, {AF_PACKET, SOCK_DGRAM}};
  struct stat ns {};
  ASSERT_EQ(::stat("/proc/self/ns/net", &ns), 0);
  for (size_t i = 0; i < 3; ++i) {
    SCOPED_TRACE("record " + std::to_string(i));
    EXPECT_EQ(got[i].family, want[i][0]);
    EXPECT_EQ(got[i].type, want[i][1]);  // SOCK_CLOEXEC masked off
    EXPECT_EQ(got[i].protocol, 0);
    EXPECT_EQ(got[i].pid, static_cast<uint32_t>(gettid()));
    EXPECT_EQ(got[i].uid, 0u);
    EXPECT_EQ(got[i].gid, getgid());
    EXPECT_STREQ(got[i].comm, "tw-rawtest");
    EXPECT_EQ(got[i].netns_ino, static_cast<uint32_t>(ns.st_ino));
    EXPECT_NE(got[i].cgroup_id, 0u);
    EXPECT_EQ(got[i].version, TW_RAW_SOCKET_EVENT_VERSION);
    EXPECT_EQ(got[i].size, sizeof(tw_raw_socket_event));
  }
  EXPECT_GE(probes_->counters().seen - before, 3u);
  EXPECT_EQ(probes_->counters().lost, 0u);
}

TEST_F(RawSocketProbesTest, AFailedSocketCallIsNotReported) {
  // An invalid type for AF_PACKET: socket() fails, nothing was opened.
  ASSERT_LT(::socket(AF_PACKET, SOCK_STREAM, 0), 0);
  // A marker after it, so the wait below knows the records are in.
  const int marker = open_socket(AF_XDP, SOCK_RAW);
  const auto got = mine(1);
  ::close(marker);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].family, AF_XDP);
}

TEST_F(RawSocketProbesTest, ReportNamesEveryBackendAndExactlyOneIsActive) {
  const auto& r = probes_->report();
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].name, "fentry");
  EXPECT_EQ(r[1].name, "kprobe");
  EXPECT_EQ(r[2].name, "tracepoint");
  int active = 0;
  for (const auto& b : r) {
    EXPECT_FALSE(b.why.empty()) << b.name;
    active += b.state == "active";
  }
  EXPECT_EQ(active, 1);
  EXPECT_EQ(RawSocketProbes::family_name(AF_PACKET), "packet");
  EXPECT_EQ(RawSocketProbes::family_name(AF_XDP), "xdp");
  EXPECT_EQ(RawSocketProbes::type_name(SOCK_RAW), "raw");
}

}  // namespace
}  // namespace tlswall::agent::attribution
