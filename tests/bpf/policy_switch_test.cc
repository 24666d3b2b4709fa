// Policy generations applied to live flows: a flow's cached decision is redone
// when the daemon publishes a new generation (flow.bpf.h), through the real
// PolicyPublisher double-buffered slots.
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace tlswall::bpftest
