// The tlswallctl binary against a real ControlServer with a fake handler:
// what each command prints and its exit status (0 ok, 1 error, 2 usage,
// 3 daemon not reachable, 4 access denied), also as other users (root
// only: forks and drops to unused uids).
#include <sys/stat.h>

#include <fstream>

#include "agent_control_test_support.h"
#include "flat_json.h"

namespace tlswall::control::test {
namespace {

using namespace std::chrono_literals;
using tlswall::test_support::FlatJson;

class TlswallctlTest : public ControlServerFixture {
 protected:
  Run Ctl(std::vector<std::string> args, std::optional<uid_t> uid = {}, gid_t gid = 0,
          const std::vector<gid_t>& groups = {}) {
    args.insert(args.begin(), {TLSWALLCTL_PATH, "--socket", path_});
    return Spawn(args, uid, gid, groups);
  }
};

TEST_F(TlswallctlTest, StatusJsonAndText) {
  Start();
  Run r = Ctl({"status", "--json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  std::map<std::string, std::string> j;
  std::string error;
  ASSERT_TRUE(FlatJson::Parse(r.out, &j, &error)) << error << "\n" << r.out;
  EXPECT_EQ(j.at("version"), "\"9.9.9\"");
  EXPECT_EQ(j.at("mode"), "\"mixed\"");
  EXPECT_EQ(j.at("rules.0.name"), "\"db-tls\"");
  EXPECT_EQ(j.at("rules.0.mode"), "\"enforce\"");
  EXPECT_EQ(j.at("bpf.schema_flows"), "1");
  EXPECT_EQ(j.at("counters.flows_seen"), std::to_string(100 + TW_CNT_FLOWS_SEEN));
  EXPECT_EQ(r.out.back(), '\n');

  r = Ctl({"status"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out.rfind("tlswalld 9.9.9 on web-1, up 3600s (since 2026-11-21T11:00:00.000Z)\n", 0),
            0u)
      << r.out;
}

TEST_F(TlswallctlTest, FlowsEventsPolicyModeReloadTeardown) {
  Start();
  api::FlowRecord f;
  f.action = "drop";
  f.rule = "db-tls";
  f.src = "198.18.0.1";
  f.dst = "198.19.0.1";
  f.dport = 5432;
  f.comm = "psql";
  handler_.SetFlows({f});
  Run r = Ctl({"flows", "--verdict", "drop", "--pid", "7"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("198.18.0.1:0 -> 198.19.0.1:5432"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("psql"), std::string::npos) << r.out;
  EXPECT_EQ(handler_.Calls().back().args, "verdict=drop pid=7 limit=50");

  for (int i = 1; i <= 5; ++i) {
    handler_.AddEvent(i, R"({"time":"t)" + std::to_string(i) + R"(","type":"plaintext_reported"})");
  }
  r = Ctl({"events", "--count", "2"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out,
            "{\"time\":\"t4\",\"type\":\"plaintext_reported\"}\n"
            "{\"time\":\"t5\",\"type\":\"plaintext_reported\"}\n");
  r = Ctl({"events", "--compact"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out,
            "t1 plaintext_reported\nt2 plaintext_reported\nt3 plaintext_reported\n"
            "t4 plaintext_reported\nt5 plaintext_reported\n");

  r = Ctl({"policy", "show"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("enforce (override)"), std::string::npos) << r.out;
  r = Ctl({"policy", "show", "--json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("\"effective_mode\":\"enforce\""), std::string::npos) << r.out;

  r = Ctl({"mode", "db-tls", "enforce"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "db-tls: monitor -> enforce (run-time override)\n");
  r = Ctl({"mode", "nope", "enforce"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(r.err, "tlswallctl: no rule named 'nope'\n");

  r = Ctl({"policy", "reload"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "policy generation 8 in force (version 2026-11-21.2, hash ef34567890ab)\n");
  handler_.RejectReload(true);
  r = Ctl({"policy", "reload"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(r.err,
            "tlswallctl: policy rejected, generation 7 stays in force: p.toml:3:1: error: unknown "
            "boundary 'dbs'\n");

  if (IsRoot()) {
    r = Ctl({"teardown", "--open"});
    ASSERT_EQ(r.rc, 0) << r.err;
    EXPECT_EQ(r.out, "tearing down (open)\n");
  }
}

TEST_F(TlswallctlTest, EventsFollowPrintsNewEventsAndReportsSkipped) {
  Start();
  handler_.AddEvent(1, R"({"time":"t1","type":"agent_started"})");
  std::thread feeder([&] {
    std::this_thread::sleep_for(500ms);
    handler_.AddEvent(2, R"({"time":"t2","type":"plaintext_blocked","action":"drop"})");
    std::this_thread::sleep_for(500ms);
    // Events 3 and 4 came and left the buffer before the follower read.
    handler_.DropEventsThrough(2);
    handler_.AddEvent(5, R"({"time":"t5","type":"plaintext_reported"})");
  });
  const Run r = Spawn({TLSWALLCTL_PATH, "--socket", path_, "events", "--follow", "--compact"}, {},
                      0, {}, 10s, [](const std::string& out) {
                        return out.find("t5 plaintext_reported") != std::string::npos;
                      });
  feeder.join();
  EXPECT_EQ(r.rc, -SIGKILL);
  EXPECT_EQ(r.out, "t1 agent_started\nt2 plaintext_blocked drop\nt5 plaintext_reported\n");
  EXPECT_NE(r.err.find("2 event(s) fell out of the daemon's buffer"), std::string::npos) << r.err;
}

TEST_F(TlswallctlTest, NoDaemonIsExit3) {
  const Run r = Ctl({"status"});
  EXPECT_EQ(r.rc, 3);
  EXPECT_EQ(r.err, "tlswallctl: tlswalld is not running (no socket at " + path_ + ")\n");
  EXPECT_EQ(Ctl({"policy", "reload"}).rc, 3);
  EXPECT_EQ(Ctl({"events", "--follow"}).rc, 3);
}

TEST_F(TlswallctlTest, UsageErrorsAreExit2) {
  Run r = Spawn({TLSWALLCTL_PATH});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("Usage: tlswallctl"), std::string::npos);
  r = Ctl({"mode", "all", "block"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_EQ(r.err, "tlswallctl: mode takes monitor, enforce or policy, not 'block' (see --help)\n");
  r = Ctl({"--help"});
  EXPECT_EQ(r.rc, 0);
  EXPECT_NE(r.out.find("Exit status"), std::string::npos);
}

TEST_F(TlswallctlTest, PolicyCheckWorksWithoutADaemon) {
  const std::string good = dir_ + "/good.toml";
  std::ofstream(good) << "version = \"t1\"\n"
                         "[boundaries.b]\ncidrs = [\"198.18.0.0/15\"]\n"
                         "[[rules]]\nname = \"r\"\nboundary = \"b\"\nports = [443]\n";
  Run r = Ctl({"policy", "check", good});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out.rfind(good + ": ok: version t1, hash ", 0), 0u) << r.out;
  const std::string bad = dir_ + "/bad.toml";
  std::ofstream(bad) << "version = \"t1\"\n[[rules]]\nname = \"r\"\nboundary = \"nope\"\n";
  r = Ctl({"policy", "check", bad});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find(bad + ": invalid: "), std::string::npos) << r.err;
}

TEST_F(TlswallctlTest, AccessAsOtherUsers) {
  if (!IsRoot()) GTEST_SKIP() << "needs root to become other users";
  const std::string group = TestGroup();
  if (group.empty()) GTEST_SKIP() << "no users/nogroup group";
  const gid_t gid = GroupId(group);
  ControlServerOptions o;
  o.group = group;
  Start(o);
  // A member reads...
  Run r = Ctl({"status", "--json"}, kMemberUid, kMemberUid, {gid});
  EXPECT_EQ(r.rc, 0) << r.err;
  // ...but may not change state.
  r = Ctl({"mode", "all", "enforce"}, kMemberUid, kMemberUid, {gid});
  EXPECT_EQ(r.rc, 4);
  EXPECT_EQ(r.err,
            "tlswallctl: permission denied: set_mode changes the daemon's state: root only\n");
  EXPECT_EQ(Ctl({"policy", "reload"}, kMemberUid, kMemberUid, {gid}).rc, 4);
  r = Ctl({"teardown"}, kMemberUid, kMemberUid, {gid});
  EXPECT_EQ(r.rc, 4);
  EXPECT_EQ(r.err, "tlswallctl: teardown is for root only\n");
  // An outsider cannot reach the socket at all.
  r = Ctl({"status"}, kOutsiderUid, kOutsiderUid, {});
  EXPECT_EQ(r.rc, 4);
  EXPECT_EQ(r.err,
            "tlswallctl: permission denied: " + path_ + " (root or group " + group + " only)\n");
  // Only the member's calls reached the server, and its refused state change was audited.
  const auto audits = Audits();
  ASSERT_EQ(audits.size(), 2u);
  EXPECT_EQ(audits[0].method, "set_mode");
  EXPECT_EQ(audits[1].method, "reload");
  EXPECT_FALSE(audits[0].allowed);
  EXPECT_EQ(audits[0].peer.uid, kMemberUid);
  EXPECT_EQ(audits[0].peer.comm, "tlswallctl");
}

}  // namespace
}  // namespace tlswall::control::test
