// Degraded modes of the classifier under table and ring pressure: each has a
// counter, and neither changes a verdict it is not documented to change.
#include <gtest/gtest.h>

#include <vector>

#include "tests/bpf/classifier_harness.h"
#include "tests/bpf/fixture_policies.h"

namespace tlswall::bpftest {
namespace {

const Bytes kGet = ascii("GET / HTTP/1.1\r\nHost: api.example\r\n\r\n");

class DegradedModeTest : public ClassifierTest {};

TEST_F(DegradedModeTest, FullRingBufferCountsLostEventsAndStillDrops) {
  // The harness's ring is 64 KiB: ~630 flow events. One 5-tuple reused
  // 1000 times (a new SYN resets it), each time blocked, none drained.
  h().publish(fixture_policy());
  const FlowSpec f = make_flow(4, kClient4, kRemote4, 45000, 80);
  constexpr int kFlows = 1000;
  int dropped = 0;
  for (int i = 0; i < kFlows; ++i) {
    const uint32_t isn = 100000u * static_cast<uint32_t>(i);
    ASSERT_EQ(h().verdict(f.segment(kSyn, isn)), kPass);
    if (h().verdict(f.segment(kAck | kPsh, isn + 1, kGet)) == kDrop) ++dropped;
  }
  EXPECT_EQ(dropped, kFlows) << "a full ring must not change verdicts";
  const auto lost = h().counters()[TW_CNT_EVENTS_LOST];
  const auto delivered = h().drain_events().size();
  EXPECT_GT(lost, 0u);
  EXPECT_EQ(lost + delivered, static_cast<uint64_t>(kFlows)) << "every event delivered or counted";
  EXPECT_EQ(h().counters()[TW_CNT_PLAINTEXT_BLOCKED], static_cast<uint64_t>(kFlows));
}

TEST_F(DegradedModeTest, EvictedFlowContinuesAsStateLost) {
  // maps.bpf.h: "an evicted flow that sends data again is 'state lost':
  // passed and counted, never blocked mid-stream". The fixture table holds
  // 1024 flows; 4096 newer ones evict the blocked one. Each newer flow is
  // also looked up once (a data segment; pure ACKs skip the lookup): the
  // kernel's LRU keeps referenced entries on its active list, so
  // unreferenced newcomers would only evict each other.
  h().publish(fixture_policy());
  const FlowSpec blocked = make_flow(4, kClient4, kRemote4, 45100, 80);
  ASSERT_EQ(h().verdict(blocked.segment(kSyn, 7000)), kPass);
  ASSERT_EQ(h().verdict(blocked.segment(kAck | kPsh, 7001, kGet)), kDrop);
  ASSERT_EQ(h().drain_events().size(), 1u);

  for (uint32_t i = 0; i < 4096; ++i) {
    const FlowSpec other = make_flow(4, kClient4, kOutside4, static_cast<uint16_t>(1024 + i), 443);
    ASSERT_EQ(h().verdict(other.segment(kSyn, i)), kPass);
    ASSERT_EQ(h().verdict(other.segment(kAck | kPsh, i + 1, ascii("x"))), kPass);
  }
  ASSERT_FALSE(h().flow(blocked).has_value()) << "4x the table size did not evict the flow";

  const uint32_t next = 7001 + static_cast<uint32_t>(kGet.size());
  EXPECT_EQ(h().verdict(blocked.segment(kAck | kPsh, next, kGet)), kPass);
  const auto ev = h().drain_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].hdr.type, TW_EV_FLOW_UNTRACKED);
  EXPECT_EQ(ev[0].reason, TW_REASON_STATE_LOST);
  EXPECT_EQ(ev[0].action, TW_ACTION_PASS);
  EXPECT_EQ(h().counters()[TW_CNT_STATE_LOST], 1u);
  EXPECT_EQ(h().counters()[TW_CNT_FLOW_TABLE_FULL], 0u) << "LRU evicts, it never fails";
}

TEST_F(DegradedModeTest, SequenceWrapLongAfterTheHelloIsNotAnOverlap) {
  // A fast flow sends 4 GiB in seconds: its sequence numbers wrap around and
  // come back to ISN+1 with other bytes. Only the flow's first packets are
  // re-checked against the judged prefix (a real retransmission of it comes
  // early), so a verified flow is never blocked by its own wrap.
  h().publish(fixture_policy());
  const FlowSpec f = make_flow(4, kClient4, kRemote4, 45200, 443);
  const uint32_t isn = 5000;
  const Bytes hello = client_hello({0x0301, 0x0303, false, "api.example"});
  ASSERT_EQ(h().verdict(f.segment(kSyn, isn)), kPass);
  ASSERT_EQ(h().verdict(f.segment(kAck | kPsh, isn + 1, hello)), kPass);
  uint32_t seq = isn + 1 + static_cast<uint32_t>(hello.size());
  const Bytes bulk = tls_record(23, 1000);  // application data, a record a segment
  for (int i = 0; i < TW_RECHECK_PKTS + 4; ++i, seq += 1000) {
    ASSERT_EQ(h().verdict(f.segment(kAck | kPsh, seq, bulk)), kPass);
  }
  // The wrapped stream reaches the ISN again: just before and exactly at it.
  EXPECT_EQ(h().verdict(f.segment(kAck | kPsh, isn - 10, bulk)), kPass);
  EXPECT_EQ(h().verdict(f.segment(kAck | kPsh, isn + 1, bulk)), kPass);
  const auto st = h().flow(f);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->cls, TW_CLASS_TLS);
  EXPECT_EQ(h().counters()[TW_CNT_PACKETS_DROPPED], 0u);
  EXPECT_TRUE(h().drain_events().empty());
}

}  // namespace
}  // namespace tlswall::bpftest
