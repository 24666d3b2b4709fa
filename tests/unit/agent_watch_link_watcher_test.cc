// LinkWatcher against real rtnetlink, inside a network namespace each test
// creates (unshare(CLONE_NEWNET) of this thread) and leaves again: veth
// pairs appear, vanish, are renamed, go up, join and leave a bridge, and a
// burst overruns a deliberately tiny socket buffer. The namespace, and every
// interface in it, disappears with its last reference when the test ends,
// also when it fails. Host interfaces are never touched: without the
// privilege to make a namespace the tests skip.
//
// InterfacePatterns tests need no privilege.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "agent/owned_fd.h"
#include "agent/watch/link_watcher.h"
#include "tests/unit/agent_watch_netns.h"

namespace tlswall::agent {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using K = LinkChange::Kind;

TEST(InterfacePatternsTest, GlobsExactNamesAndExclusions) {
  InterfacePatterns p({"eth*", "veth*", "bond0", "!veth-test*", "en?[0-9]"});
  EXPECT_EQ(p.match("eth0").value_or("-"), "eth*");
  EXPECT_EQ(p.match("veth12").value_or("-"), "veth*");
  EXPECT_EQ(p.match("bond0").value_or("-"), "bond0");
  EXPECT_EQ(p.match("eno1").value_or("-"), "en?[0-9]");
  EXPECT_FALSE(p.match("bond1"));
  EXPECT_FALSE(p.match("lo"));
  EXPECT_FALSE(p.match("veth-test3")) << "an exclusion wins";
  EXPECT_FALSE(p.match("enoX"));
  // Order does not matter for exclusions.
  InterfacePatterns q({"!eth1", "eth*"});
  EXPECT_FALSE(q.match("eth1"));
  EXPECT_TRUE(q.match("eth2"));
}

TEST(InterfacePatternsTest, RejectsPatternsThatCanNeverWork) {
  for (const std::vector<std::string>& bad : std::vector<std::vector<std::string>>{
           {""},
           {"!"},
           {"eth0", "!"},
           {"averyveryverylongname0"},  // an exact name over 15 bytes
           {"eth0/1"},
           {"eth 0"},
           {"eth0:1"},
           {"!eth*"},  // only exclusions
           {}}) {
    EXPECT_THROW(InterfacePatterns{bad}, std::invalid_argument)
        << (bad.empty() ? std::string("(none)") : bad.front());
  }
  EXPECT_NO_THROW(InterfacePatterns({"averyveryverylongname*"})) << "a glob may be long";
}

int sh(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  return rc == -1 ? -1 : WEXITSTATUS(rc);
}

std::string describe(const std::vector<LinkChange>& cs) {
  std::string out;
  for (const auto& c : cs) {
    out += std::string(link_change_kind_name(c.kind)) + " " + std::to_string(c.ifindex) + " " +
           c.name + (c.old_name.empty() ? "" : " (was " + c.old_name + ")") + " [" + c.pattern +
           "]\n";
  }
  return out.empty() ? "(no changes)" : out;
}

class LinkWatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to create a network namespace";
    if (sh("command -v ip >/dev/null 2>&1") != 0) GTEST_SKIP() << "iproute2 (ip) not installed";
    ns_ = std::make_unique<watch_test::ScopedNetns>();
    if (!ns_->ok()) GTEST_SKIP() << "no private network namespace: " << ns_->error();
  }
  void TearDown() override {
    watcher_.reset();  // its socket holds the namespace
    ns_.reset();
  }

  LinkWatcher& make(std::vector<std::string> patterns, LinkWatcherOptions o = {}) {
    watcher_ = std::make_unique<LinkWatcher>(InterfacePatterns(std::move(patterns)), o);
    return *watcher_;
  }

  // Collects changes until `want` of them arrived or `within` passed, then
  // for `settle` more to catch extras.
  std::vector<LinkChange> collect(LinkWatcher& w, size_t want, milliseconds within,
                                  milliseconds settle = milliseconds(150)) {
    std::vector<LinkChange> out;
    Clock::time_point end = Clock::now() + within;
    bool extended = false;
    for (;;) {
      const Clock::time_point now = Clock::now();
      if (out.size() >= want && !extended) {
        end = now + settle;
        extended = true;
      }
      if (now >= end) break;
      pollfd p{w.fd(), POLLIN, 0};
      const int ms = static_cast<int>(std::chrono::ceil<milliseconds>(end - now).count());
      if (::poll(&p, 1, ms) > 0) {
        auto c = w.on_readable();
        out.insert(out.end(), c.begin(), c.end());
      }
    }
    return out;
  }

  std::unique_ptr<watch_test::ScopedNetns> ns_;
  std::unique_ptr<LinkWatcher> watcher_;
};

TEST_F(LinkWatcherTest, InitialDumpListsMatchingLinksDownOnesIncluded) {
  ASSERT_EQ(sh("ip link add veth0 type veth peer name veth1"), 0);
  ASSERT_EQ(sh("ip link add other0 type veth peer name other1"), 0);
  LinkWatcher& w = make({"veth*"});
  const auto links = w.initial_dump();
  ASSERT_EQ(links.size(), 2u);
  for (const auto& l : links) {
    EXPECT_TRUE(l.name == "veth0" || l.name == "veth1") << l.name;
    EXPECT_EQ(l.ifindex, static_cast<int>(::if_nametoindex(l.name.c_str())));
    EXPECT_EQ(l.kind, "veth");
    EXPECT_FALSE(l.up) << "down, and still listed: tc attaches to down links";
    EXPECT_EQ(l.pattern, "veth*");
  }
  EXPECT_NE(w.status().find("watching links: 2 of 5 match [veth*]"), std::string::npos)
      << w.status();
  EXPECT_FALSE(w.degraded());
  EXPECT_FALSE(w.next_deadline());
}

TEST_F(LinkWatcherTest, AddedWithinASecondNonMatchingIgnoredDeletedRemoved) {
  LinkWatcher& w = make({"veth*"});
  ASSERT_TRUE(w.initial_dump().empty());
  ASSERT_EQ(sh("ip link add other0 type veth peer name other1"), 0);
  const Clock::time_point t0 = Clock::now();
  ASSERT_EQ(sh("ip link add veth0 type veth peer name veth1"), 0);
  auto cs = collect(w, 2, milliseconds(1000));
  const auto took = Clock::now() - t0;
  ASSERT_EQ(cs.size(), 2u) << describe(cs);
  for (const auto& c : cs) {
    EXPECT_EQ(c.kind, K::kAdded) << describe(cs);
    EXPECT_TRUE(c.name == "veth0" || c.name == "veth1") << describe(cs);
    EXPECT_EQ(c.ifindex, static_cast<int>(::if_nametoindex(c.name.c_str())));
    EXPECT_EQ(c.pattern, "veth*");
  }
  EXPECT_LT(took, milliseconds(1000));
  EXPECT_EQ(w.matching().size(), 2u);

  const int idx0 = static_cast<int>(::if_nametoindex("veth0"));
  ASSERT_EQ(sh("ip link del other0"), 0);
  ASSERT_EQ(sh("ip link del veth0"), 0);  // takes veth1 with it
  cs = collect(w, 2, milliseconds(1000));
  ASSERT_EQ(cs.size(), 2u) << describe(cs);
  bool saw0 = false;
  for (const auto& c : cs) {
    EXPECT_EQ(c.kind, K::kRemoved) << describe(cs);
    if (c.ifindex == idx0) saw0 = c.name == "veth0";
  }
  EXPECT_TRUE(saw0) << describe(cs);
  EXPECT_TRUE(w.matching().empty());
}

TEST_F(LinkWatcherTest, RenamesInsideIntoAndOutOfThePatterns) {
  ASSERT_EQ(sh("ip link add veth0 type veth peer name peer0"), 0);
  LinkWatcher& w = make({"veth*"});
  ASSERT_EQ(w.initial_dump().size(), 1u);
  const int idx = static_cast<int>(::if_nametoindex("veth0"));

  ASSERT_EQ(sh("ip link set dev veth0 name veth9"), 0);
  auto cs = collect(w, 1, milliseconds(1000));
  ASSERT_EQ(cs.size(), 1u) << describe(cs);
  EXPECT_EQ(cs[0].kind, K::kRenamed);
  EXPECT_EQ(cs[0].ifindex, idx);
  EXPECT_EQ(cs[0].name, "veth9");
  EXPECT_EQ(cs[0].old_name, "veth0");
  EXPECT_EQ(cs[0].pattern, "veth*");

  ASSERT_EQ(sh("ip link set dev veth9 name uplink9"), 0);
  cs = collect(w, 1, milliseconds(1000));
  ASSERT_EQ(cs.size(), 1u) << describe(cs);
  EXPECT_EQ(cs[0].kind, K::kRemoved);
  EXPECT_EQ(cs[0].ifindex, idx);
  EXPECT_EQ(cs[0].old_name, "veth9");
  EXPECT_TRUE(w.matching().empty());

  ASSERT_EQ(sh("ip link set dev uplink9 name veth7"), 0);
  cs = collect(w, 1, milliseconds(1000));
  ASSERT_EQ(cs.size(), 1u) << describe(cs);
  EXPECT_EQ(cs[0].kind, K::kAdded);
  EXPECT_EQ(cs[0].ifindex, idx);
  EXPECT_EQ(cs[0].name, "veth7");
  EXPECT_EQ(cs[0].old_name, "uplink9");
}

TEST_F(LinkWatcherTest, StateChangesAndBridgePortsAreNotLinkChanges) {
  ASSERT_EQ(sh("ip link add veth0 type veth peer name veth1"), 0);
  ASSERT_EQ(sh("ip link add br0 type bridge"), 0);
  LinkWatcher& w = make({"veth*"});
  ASSERT_EQ(w.initial_dump().size(), 2u);
  ASSERT_EQ(sh("ip link set veth0 up && ip link set veth1 up && ip link set br0 up"), 0);
  // A port joining and leaving a bridge sends AF_BRIDGE RTM_NEWLINK and
  // RTM_DELLINK: not a vanished interface.
  ASSERT_EQ(sh("ip link set veth0 master br0 && ip link set veth0 nomaster"), 0);
  ASSERT_EQ(sh("ip link set veth0 down"), 0);
  const auto cs = collect(w, 1, milliseconds(600));
  EXPECT_TRUE(cs.empty()) << describe(cs);
  EXPECT_EQ(w.matching().size(), 2u);
  EXPECT_GT(w.stats().messages, 0u) << "notifications did arrive";
}

TEST_F(LinkWatcherTest, OverrunIsRepairedByADumpAndADiff) {
  LinkWatcherOptions o;
  o.rcvbuf_bytes = 1;  // the kernel's minimum: a burst overruns it
  LinkWatcher& w = make({"veth*", "!veth-x*"}, o);
  ASSERT_TRUE(w.initial_dump().empty());
  ASSERT_EQ(sh("ip link add veth-gone type veth peer name veth-gone-p"), 0);
  std::string batch;
  for (int i = 0; i < 20; ++i) {
    batch += "link add veth" + std::to_string(i) + "a type veth peer name veth" +
             std::to_string(i) + "b\n";
  }
  batch += "link add veth-x0 type veth peer name veth-x1\n";
  batch += "link del veth-gone\n";
  ASSERT_EQ(sh("printf '" + batch + "' | ip -batch -"), 0);
  // One read: everything queued so far, the overrun, the re-dump.
  auto cs = collect(w, 40, milliseconds(2000));
  EXPECT_GE(w.stats().overruns, 1u);
  EXPECT_GE(w.stats().dumps, 2u);
  // Net effect: 40 added, none twice, the vanished pair not left behind.
  std::map<int, int> added;
  for (const auto& c : cs) {
    if (c.kind == K::kAdded) ++added[c.ifindex];
    if (c.kind == K::kRemoved) --added[c.ifindex];
  }
  int live = 0;
  for (const auto& [idx, n] : added) {
    EXPECT_TRUE(n == 0 || n == 1) << "ifindex " << idx << ": " << n << "\n" << describe(cs);
    live += n;
  }
  EXPECT_EQ(live, 40) << describe(cs);
  const auto m = w.matching();
  EXPECT_EQ(m.size(), 40u);
  for (const auto& l : m) EXPECT_EQ(l.name.rfind("veth-", 0), std::string::npos) << l.name;
  EXPECT_NE(w.status().find("overrun"), std::string::npos) << w.status();
}

}  // namespace
}  // namespace tlswall::agent
