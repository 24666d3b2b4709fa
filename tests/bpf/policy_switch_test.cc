// Policy generations applied to live flows: a flow's cached decision is redone
// when the daemon publishes a new generation (flow.bpf.h), through the real
// PolicyPublisher double-buffered slots.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "tests/bpf/classifier_harness.h"
#include "tests/bpf/fixture_policies.h"

namespace tlswall::bpftest {
namespace {

const Bytes kGet = ascii("GET /metrics HTTP/1.1\r\nHost: api.example\r\n\r\n");
const Bytes kHello = client_hello();
const Bytes kAppData = {0x17, 0x03, 0x03, 0x00, 0x01, 'x'};

// A connection: its spec, ISN and the next stream offset to send.
struct Conn {
  FlowSpec flow;
  uint32_t isn;
  uint32_t next = 0;

  Bytes syn() const { return flow.segment(kSyn, isn); }
  Bytes data(const Bytes& p) {
    Bytes f = flow.segment(kAck | kPsh, isn + 1 + next, p);
    next += static_cast<uint32_t>(p.size());
    return f;
  }
};

class PolicySwitchTest : public ClassifierTest {
 protected:
  void ExpectOneEvent(uint8_t action, uint8_t mode, uint64_t gen, const char* rule, const Conn& c) {
    const std::vector<tw_flow_event> ev = h().drain_events();
    ASSERT_EQ(ev.size(), 1u);
    EXPECT_EQ(ev[0].hdr.type, TW_EV_FLOW_VERDICT);
    EXPECT_EQ(ev[0].action, action);
    EXPECT_EQ(ev[0].mode, mode);
    EXPECT_EQ(ev[0].policy_generation, gen);
    EXPECT_EQ(ev[0].reason, TW_REASON_NOT_HANDSHAKE_RECORD);
    EXPECT_EQ(ev[0].rule_id, h().rule_id(rule));
    EXPECT_EQ(ev[0].flow.sport, flow_key(c.flow).sport);
  }
};

TEST_F(PolicySwitchTest, MonitorToEnforceDropsTheLiveFlow) {
  ASSERT_EQ(h().publish(fixture_policy("monitor", "switch-1")), 1u);
  Conn plain{make_flow(4, kClient4, kStaging4, 44000, 8080), 5000};
  Conn tls{make_flow(4, kClient4, kStaging4, 44001, 8080), 6000};
  ASSERT_EQ(h().verdict(plain.syn()), kPass);
  ASSERT_EQ(h().verdict(tls.syn()), kPass);
  EXPECT_EQ(h().verdict(plain.data(kGet)), kPass);
  EXPECT_EQ(h().verdict(tls.data(kHello)), kPass);
  ExpectOneEvent(TW_ACTION_REPORT, TW_MODE_MONITOR, 1, kStagingRule, plain);

  // Staging switches to enforce: the next packet of the plaintext flow is
  // dropped and reported again with the new action; TLS is unaffected.
  ASSERT_EQ(h().publish(fixture_policy("enforce", "switch-2")), 2u);
  EXPECT_EQ(h().verdict(plain.data(kGet)), kDrop);
  EXPECT_EQ(h().verdict(tls.data(kAppData)), kPass);
  ExpectOneEvent(TW_ACTION_DROP, TW_MODE_ENFORCE, 2, kStagingRule, plain);
  EXPECT_EQ(h().verdict(plain.data(kGet)), kDrop);
  EXPECT_TRUE(h().drain_events().empty()) << "one event per action change";

  // A policy without the staging boundary: the flow is no longer protected.
  ASSERT_EQ(h().publish(remote_only_policy()), 3u);
  EXPECT_EQ(h().verdict(plain.data(kGet)), kPass);
  EXPECT_TRUE(h().drain_events().empty());
  const auto st = h().flow(plain.flow);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->protected_, 0);
  EXPECT_EQ(st->policy_generation, 3u);

  // Back to monitor (generation 4 reuses generation 2's slot).
  ASSERT_EQ(h().publish(fixture_policy("monitor", "switch-4")), 4u);
  EXPECT_EQ(h().verdict(plain.data(kGet)), kPass);
  ExpectOneEvent(TW_ACTION_REPORT, TW_MODE_MONITOR, 4, kStagingRule, plain);

  const auto cnt = h().counters();
  EXPECT_EQ(cnt[TW_CNT_PLAINTEXT_REPORTED], 2u);
  EXPECT_EQ(cnt[TW_CNT_PLAINTEXT_BLOCKED], 1u);
  EXPECT_EQ(cnt[TW_CNT_PACKETS_DROPPED], 2u);
  EXPECT_EQ(cnt[TW_CNT_FLOWS_NOT_TLS], 1u);
  EXPECT_EQ(cnt[TW_CNT_FLOWS_TLS], 1u);
}

TEST_F(PolicySwitchTest, FlowsStartedBeforeThePolicyAreJudgedWhenItArrives) {
  // Generation 0: nothing is protected, but first bytes are still classified.
  Conn plain{make_flow(4, kClient4, kRemote4, 44010, 80), 100};
  Conn tls{make_flow(6, kClient6, kRemote6, 44011, 443), 200};
  ASSERT_EQ(h().verdict(plain.syn()), kPass);
  ASSERT_EQ(h().verdict(tls.syn()), kPass);
  EXPECT_EQ(h().verdict(plain.data(kGet)), kPass);
  EXPECT_EQ(h().verdict(tls.data(kHello)), kPass);
  EXPECT_TRUE(h().drain_events().empty());

  ASSERT_EQ(h().publish(fixture_policy()), 1u);
  EXPECT_EQ(h().verdict(plain.data(kGet)), kDrop);
  EXPECT_EQ(h().verdict(tls.data(kAppData)), kPass);
  ExpectOneEvent(TW_ACTION_DROP, TW_MODE_ENFORCE, 1, kRemoteRule, plain);
}

TEST_F(PolicySwitchTest, RemovedExemptionAppliesToTheLiveFlow) {
  ASSERT_EQ(h().publish(fixture_policy()), 1u);
  Conn metrics{make_flow(4, kClient4, kExempt4, 44020, 9100), 300};
  ASSERT_EQ(h().verdict(metrics.syn()), kPass);
  EXPECT_EQ(h().verdict(metrics.data(kGet)), kPass);
  EXPECT_TRUE(h().drain_events().empty());
  EXPECT_EQ(h().counters()[TW_CNT_EXEMPT], 1u);

  ASSERT_EQ(h().publish(remote_only_policy()), 2u);  // same rule, no exemption
  EXPECT_EQ(h().verdict(metrics.data(kGet)), kDrop);
  ExpectOneEvent(TW_ACTION_DROP, TW_MODE_ENFORCE, 2, kRemoteRule, metrics);
}

// The decision cache (lib/policy.bpf.h) keeps the policy lookups of a
// (generation, destination, port): a new SYN to a destination decided before
// is answered from it, and a new generation is never answered from an old one.
TEST_F(PolicySwitchTest, DecisionCacheFollowsEveryGeneration) {
  ASSERT_EQ(h().publish(fixture_policy()), 1u);
  Conn a{make_flow(4, kClient4, kStaging4, 44030, 8080), 400};
  ASSERT_EQ(h().verdict(a.syn()), kPass);
  ASSERT_TRUE(h().flow(a.flow).has_value());
  EXPECT_EQ(h().flow(a.flow)->protected_, 1);
  Conn again{make_flow(4, kClient4, kStaging4, 44031, 8080), 500};  // a cache hit
  ASSERT_EQ(h().verdict(again.syn()), kPass);
  EXPECT_EQ(h().flow(again.flow)->protected_, 1);
  EXPECT_EQ(h().flow(again.flow)->rule_id, h().rule_id(kStagingRule));

  // Staging is in no boundary in generation 2, protected again in 3.
  ASSERT_EQ(h().publish(remote_only_policy()), 2u);
  Conn b{make_flow(4, kClient4, kStaging4, 44032, 8080), 600};
  ASSERT_EQ(h().verdict(b.syn()), kPass);
  EXPECT_EQ(h().flow(b.flow)->protected_, 0);
  ASSERT_EQ(h().publish(fixture_policy("enforce")), 3u);
  Conn c{make_flow(4, kClient4, kStaging4, 44033, 8080), 700};
  ASSERT_EQ(h().verdict(c.syn()), kPass);
  EXPECT_EQ(h().flow(c.flow)->protected_, 1);
  EXPECT_EQ(h().flow(c.flow)->mode, TW_MODE_ENFORCE);
  EXPECT_EQ(h().verdict(c.data(kGet)), kDrop);
}

// A failed start rolls the generation back (agent/daemon.cc), so the next
// publish writes the same generation number with other tables: the publish
// id in the slot keeps the cache from answering with the first ones.
TEST_F(PolicySwitchTest, DecisionCacheNotFooledByAReusedGenerationNumber) {
  ASSERT_EQ(h().publish(fixture_policy("enforce")), 1u);
  Conn a{make_flow(4, kClient4, kStaging4, 44040, 8080), 800};
  ASSERT_EQ(h().verdict(a.syn()), kPass);
  ASSERT_EQ(h().flow(a.flow)->protected_, 1);

  h().classifier().set_generation(0);  // the rollback
  ASSERT_EQ(h().publish(remote_only_policy()), 1u);
  Conn b{make_flow(4, kClient4, kStaging4, 44041, 8080), 900};
  ASSERT_EQ(h().verdict(b.syn()), kPass);
  ASSERT_TRUE(h().flow(b.flow).has_value());
  EXPECT_EQ(h().flow(b.flow)->protected_, 0) << "decided with the tables of the first publish";
  EXPECT_EQ(h().verdict(b.data(kGet)), kPass);
  EXPECT_TRUE(h().drain_events().empty());
}

// Many destinations, in and out of the boundaries, both families: more than
// the cache holds, so entries collide and are replaced; every decision must
// still be the one the tables give, the first time and from the cache.
TEST_F(PolicySwitchTest, DecisionCacheCollisionsNeverMixDestinations) {
  ASSERT_EQ(h().publish(fixture_policy()), 1u);
  int checked = 0;
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 3000; ++i) {
      const bool v6 = i % 5 == 0;
      const bool remote = i % 2 == 0;
      const int hi = (i / 250) % 60, lo = i % 250 + 1;
      std::string dst;
      if (v6) {
        char buf[64];
        std::snprintf(buf, sizeof(buf), "%s::%x:%x", remote ? "2001:db8:2:1" : "2001:db8:9:1", hi,
                      lo);
        dst = buf;
      } else {
        dst = "198.18." + std::to_string(remote ? 130 + hi : 1 + hi) + "." + std::to_string(lo);
      }
      const uint16_t port = i % 3 == 0 ? 443 : 8443;  // 8443: in no rule
      Conn c{make_flow(v6 ? 6 : 4, v6 ? kClient6 : kClient4, dst,
                       static_cast<uint16_t>(20000 + round * 3000 + i), port),
             static_cast<uint32_t>(1000 + i)};
      ASSERT_EQ(h().verdict(c.syn()), kPass);
      const auto st = h().flow(c.flow);
      ASSERT_TRUE(st.has_value()) << dst;
      const int want = remote && port == 443;
      ASSERT_EQ(st->protected_, want) << dst << " port " << port << " round " << round;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 6000);
}

}  // namespace
}  // namespace tlswall::bpftest
