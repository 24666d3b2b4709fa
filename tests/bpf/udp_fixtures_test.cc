// UDP across a boundary (policy key `udp`, bpf/lib/udp_flow.bpf.h) in the
// loaded classifier: allow passes without state, quic needs each flow to
// begin with a client's QUIC Initial (v1 or v2), block allows no flow;
// exemptions apply; one event per flow; monitor reports without dropping;
// IPv6 (also behind extension headers) and UDP fragments.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/bpf/classifier_harness.h"

namespace tlswall::bpftest {
namespace {

const std::string kClient4 = "198.18.0.10";
const std::string kClient6 = "2001:db8:1::10";
const std::string kRemote4 = "198.18.130.20";   // remote: enforce rules
const std::string kRemote6 = "2001:db8:2::20";  // remote
const std::string kResolver4 = "198.18.200.9";  // remote + exemption "resolver" (port 53)
const std::string kStaging4 = "198.18.64.30";   // staging: monitor, udp block
const std::string kLegacy4 = "198.18.32.5";     // legacy: a TCP rule, UDP allowed
const std::string kOutside4 = "198.18.5.40";    // in no boundary

constexpr uint32_t kQuicV1 = 0x00000001;
constexpr uint32_t kQuicV2 = 0x6b3343cf;

std::string UdpPolicy(const std::string& port_53 = "block", const std::string& version = "udp-1") {
  return "version = \"" + version + R"("
default_min_tls = "1.2"

[boundaries.remote]
cidrs = ["198.18.128.0/17", "2001:db8:2::/48"]
[boundaries.staging]
cidrs = ["198.18.64.0/18"]
[boundaries.legacy]
cidrs = ["198.18.32.0/19"]

[[rules]]
name = "remote-quic"
boundary = "remote"
ports = [443]
mode = "enforce"
udp = "quic"

[[rules]]
name = "remote-53"
boundary = "remote"
ports = [53]
mode = "enforce"
udp = ")" +
         port_53 +
         R"("

[[rules]]
name = "remote-allow"
boundary = "remote"
ports = [8443]
mode = "enforce"

[[rules]]
name = "staging-block"
boundary = "staging"
ports = [53, 443]
mode = "monitor"
udp = "block"

[[rules]]
name = "legacy-tls"
boundary = "legacy"
ports = [443]
mode = "enforce"

[[exemptions]]
name = "resolver"
cidrs = ["198.18.200.0/24"]
ports = [53]
reason = "the site resolver"
owner = "fixtures"
)";
}

// A DNS query for example.com, as a resolver sends it.
const Bytes kDnsQuery = {0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
                         0x00, 0x00, 0x07, 'e',  'x',  'a',  'm',  'p',  'l',  'e',
                         0x03, 'c',  'o',  'm',  0x00, 0x00, 0x01, 0x00, 0x01};

// A QUIC 1-RTT (short header) packet: fixed bit, no header form bit.
Bytes ShortHeader(size_t size = 1200) {
  Bytes b(size, 0x33);
  b[0] = 0x41;
  return b;
}

class UdpTest : public ClassifierTest {
 protected:
  void SetUp() override {
    ClassifierTest::SetUp();
    h().publish(UdpPolicy());
  }
  FlowSpec Flow(const std::string& dst, uint16_t port, int family = 4) {
    return make_flow(family, family == 4 ? kClient4 : kClient6, dst,
                     static_cast<uint16_t>(31000 + flows_++), port);
  }
  std::vector<int> Send(const FlowSpec& f, const std::vector<Bytes>& datagrams) {
    std::vector<int> v;
    for (const Bytes& d : datagrams) v.push_back(h().verdict(f.datagram(d)));
    return v;
  }
  uint64_t Count(uint32_t c) { return h().counters()[c]; }
  int flows_ = 0;
};

TEST_F(UdpTest, QuicV1InitialPassesAndTheFlowStaysAllowed) {
  const FlowSpec f = Flow(kRemote4, 443);
  EXPECT_EQ(Send(f, {quic_initial(kQuicV1), ShortHeader(), ascii("later datagrams")}),
            (std::vector<int>{kPass, kPass, kPass}));
  const auto st = h().flow(f, kUdp);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->cls, TW_CLASS_TLS);
  EXPECT_EQ(st->hello_version, 0x0304);
  EXPECT_EQ(st->rule_id, h().rule_id("remote-quic"));
  EXPECT_FALSE(h().flow(f, kTcp).has_value());  // key.proto tells the two apart
  EXPECT_TRUE(h().drain_events().empty());
  EXPECT_EQ(Count(TW_CNT_UDP_FLOWS), 1u);
  EXPECT_EQ(Count(TW_CNT_UDP_NOT_ALLOWED), 0u);
  EXPECT_EQ(Count(TW_CNT_PACKETS_DROPPED), 0u);
}

TEST_F(UdpTest, QuicV2InitialPasses) {
  const FlowSpec f = Flow(kRemote4, 443);
  EXPECT_EQ(Send(f, {quic_initial(kQuicV2), ShortHeader()}), (std::vector<int>{kPass, kPass}));
  EXPECT_TRUE(h().drain_events().empty());
  // v2's Initial type bits are 0b01; v1's (0b00) under the v2 version is
  // a 0-RTT packet there, not an Initial.
  Bytes wrong_type = quic_initial(kQuicV2);
  wrong_type[0] = 0xc3;
  EXPECT_EQ(Send(Flow(kRemote4, 443), {wrong_type}), (std::vector<int>{kDrop}));
  Bytes v1_as_handshake = quic_initial(kQuicV1);
  v1_as_handshake[0] = 0xe3;  // type 0b10 (v1 Handshake)
  EXPECT_EQ(Send(Flow(kRemote4, 443), {v1_as_handshake}), (std::vector<int>{kDrop}));
}

TEST_F(UdpTest, ShortHeaderFirstIsBlockedWithOneEventAndEveryDatagramDropped) {
  const FlowSpec f = Flow(kRemote4, 443);
  EXPECT_EQ(Send(f, {ShortHeader(), quic_initial(), ShortHeader(), ascii("x")}),
            (std::vector<int>{kDrop, kDrop, kDrop, kDrop}));
  const auto ev = h().drain_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].hdr.type, TW_EV_FLOW_VERDICT);
  EXPECT_EQ(ev[0].reason, TW_REASON_NOT_QUIC);
  EXPECT_EQ(ev[0].action, TW_ACTION_DROP);
  EXPECT_EQ(ev[0].flow.proto, kUdp);
  EXPECT_EQ(ev[0].flow.dport, htons(443));
  EXPECT_EQ(ev[0].rule_id, h().rule_id("remote-quic"));
  EXPECT_EQ(h().drops_by_reason()[TW_REASON_NOT_QUIC], 4u);
  EXPECT_EQ(Count(TW_CNT_UDP_FLOWS), 1u);
  EXPECT_EQ(Count(TW_CNT_UDP_NOT_ALLOWED), 1u);
  EXPECT_EQ(Count(TW_CNT_PLAINTEXT_BLOCKED), 1u);
  EXPECT_EQ(Count(TW_CNT_PACKETS_DROPPED), 4u);
}

TEST_F(UdpTest, WhatIsNotAClientsQuicInitialIsBlockedUnderQuic) {
  Bytes draft29 = quic_initial(0xff00001d);
  Bytes long_dcid = quic_initial();
  long_dcid[5] = 21;
  Bytes no_fixed_bit = quic_initial();
  no_fixed_bit[0] &= static_cast<uint8_t>(~0x40);
  Bytes version_negotiation = quic_initial(0);
  const std::vector<std::pair<const char*, Bytes>> cases = {
      {"dns query", kDnsQuery},          {"initial of 1199 bytes", quic_initial(kQuicV1, 1199)},
      {"draft-29 version", draft29},     {"dcid of 21 bytes", long_dcid},
      {"fixed bit clear", no_fixed_bit}, {"version negotiation", version_negotiation},
      {"empty datagram", Bytes{}},
  };
  for (const auto& [what, bytes] : cases) {
    EXPECT_EQ(h().verdict(Flow(kRemote4, 443).datagram(bytes)), kDrop) << what;
  }
  const auto ev = h().drain_events();
  ASSERT_EQ(ev.size(), cases.size());
  for (const auto& e : ev) EXPECT_EQ(e.reason, TW_REASON_NOT_QUIC);
  EXPECT_EQ(Count(TW_CNT_UDP_FLOWS), cases.size());
  EXPECT_EQ(Count(TW_CNT_UDP_NOT_ALLOWED), cases.size());
  // The smallest accepted: exactly 1200 bytes.
  EXPECT_EQ(h().verdict(Flow(kRemote4, 443).datagram(quic_initial(kQuicV1, 1200))), kPass);
}

TEST_F(UdpTest, BlockAllowsNoFlowNotEvenQuic) {
  const FlowSpec dns = Flow(kRemote4, 53);
  const FlowSpec quic = Flow(kRemote4, 53);
  EXPECT_EQ(Send(dns, {kDnsQuery, kDnsQuery}), (std::vector<int>{kDrop, kDrop}));
  EXPECT_EQ(Send(quic, {quic_initial()}), (std::vector<int>{kDrop}));
  const auto ev = h().drain_events();
  ASSERT_EQ(ev.size(), 2u);
  for (const auto& e : ev) {
    EXPECT_EQ(e.reason, TW_REASON_UDP_NOT_ALLOWED);
    EXPECT_EQ(e.rule_id, h().rule_id("remote-53"));
    EXPECT_EQ(e.flow.proto, kUdp);
  }
  EXPECT_EQ(h().drops_by_reason()[TW_REASON_UDP_NOT_ALLOWED], 3u);
}

TEST_F(UdpTest, AllowAndUnprotectedUdpPassWithoutFlowState) {
  const FlowSpec allow = Flow(kRemote4, 8443);  // a rule without `udp`: allow
  const FlowSpec outside = Flow(kOutside4, 53);
  const FlowSpec other_port = Flow(kRemote4, 5353);
  for (const FlowSpec* f : {&allow, &outside, &other_port}) {
    EXPECT_EQ(Send(*f, {kDnsQuery, ShortHeader()}), (std::vector<int>{kPass, kPass}));
    EXPECT_FALSE(h().flow(*f, kUdp).has_value()) << f->dst << ":" << f->dport;
  }
  EXPECT_TRUE(h().drain_events().empty());
  EXPECT_EQ(Count(TW_CNT_UDP_FLOWS), 0u);
  EXPECT_EQ(Count(TW_CNT_PACKETS), 6u);
}

TEST_F(UdpTest, ExemptedDestinationPasses) {
  const FlowSpec f = Flow(kResolver4, 53);
  EXPECT_EQ(Send(f, {kDnsQuery, kDnsQuery}), (std::vector<int>{kPass, kPass}));
  EXPECT_TRUE(h().drain_events().empty());
  const auto st = h().flow(f, kUdp);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->exempt, 1);
  EXPECT_EQ(Count(TW_CNT_UDP_FLOWS), 1u);
  EXPECT_EQ(Count(TW_CNT_EXEMPT), 1u);
  EXPECT_EQ(Count(TW_CNT_UDP_NOT_ALLOWED), 0u);
}

TEST_F(UdpTest, MonitorReportsOnceAndDropsNothing) {
  const FlowSpec f = Flow(kStaging4, 53);
  EXPECT_EQ(Send(f, {kDnsQuery, kDnsQuery, kDnsQuery}), (std::vector<int>{kPass, kPass, kPass}));
  const auto ev = h().drain_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].action, TW_ACTION_REPORT);
  EXPECT_EQ(ev[0].mode, TW_MODE_MONITOR);
  EXPECT_EQ(ev[0].reason, TW_REASON_UDP_NOT_ALLOWED);
  EXPECT_EQ(Count(TW_CNT_PLAINTEXT_REPORTED), 1u);
  EXPECT_EQ(Count(TW_CNT_UDP_NOT_ALLOWED), 1u);
  EXPECT_EQ(Count(TW_CNT_PACKETS_DROPPED), 0u);
}

TEST_F(UdpTest, Ipv6UdpIsJudgedAlsoBehindExtensionHeaders) {
  EXPECT_EQ(Send(Flow(kRemote6, 443, 6), {quic_initial(), ShortHeader()}),
            (std::vector<int>{kPass, kPass}));
  EXPECT_EQ(Send(Flow(kRemote6, 443, 6), {ShortHeader()}), (std::vector<int>{kDrop}));
  FlowSpec behind = Flow(kRemote6, 53, 6);
  behind.v6_exts = {V6ExtHeader{V6Ext::kHopByHop}, V6ExtHeader{V6Ext::kDestOpts}};
  EXPECT_EQ(Send(behind, {kDnsQuery}), (std::vector<int>{kDrop}));
  const auto ev = h().drain_events();
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0].flow.family, 6);
  EXPECT_EQ(ev[0].reason, TW_REASON_NOT_QUIC);
  EXPECT_EQ(ev[1].reason, TW_REASON_UDP_NOT_ALLOWED);
  EXPECT_EQ(ev[1].flow.proto, kUdp);
}

TEST_F(UdpTest, TheL3ProgramJudgesUdpToo) {
  FlowSpec f = make_flow(4, kL3Source4, kRemote4, 32000, 53);
  f.l3 = true;
  EXPECT_EQ(h().verdict(f.datagram(kDnsQuery), Prog::kL3), kDrop);
  FlowSpec q = make_flow(4, kL3Source4, kRemote4, 32001, 443);
  q.l3 = true;
  EXPECT_EQ(h().verdict(q.datagram(quic_initial()), Prog::kL3), kPass);
}

TEST_F(UdpTest, UdpFragmentsMeetOnlyRulesThatRestrictUdp) {
  auto frag4 = [](const std::string& dst) {
    return PacketBuilder()
        .ipv4(kClient4, dst)
        .ipv4_fragment(true, 0)
        .udp(33000, 53)
        .payload(kDnsQuery)
        .build();
  };
  EXPECT_EQ(h().verdict(frag4(kRemote4)), kDrop);   // udp block/quic, enforce
  EXPECT_EQ(h().verdict(frag4(kStaging4)), kPass);  // udp block, monitor: counted
  EXPECT_EQ(h().verdict(frag4(kLegacy4)), kPass);   // only a rule allowing UDP
  EXPECT_EQ(h().verdict(frag4(kOutside4)), kPass);
  // A TCP fragment to the legacy boundary is dropped as before.
  EXPECT_EQ(h().verdict(PacketBuilder()
                            .ipv4(kClient4, kLegacy4)
                            .ipv4_fragment(true, 0)
                            .tcp(33001, 443, kAck, 1)
                            .payload(ascii("GET /"))
                            .build()),
            kDrop);
  V6ExtHeader frag{V6Ext::kFragment};
  frag.more_fragments = true;
  EXPECT_EQ(h().verdict(PacketBuilder()
                            .ipv6(kClient6, kRemote6)
                            .v6_ext(frag)
                            .udp(33002, 443)
                            .payload(quic_initial())
                            .build()),
            kDrop);
  EXPECT_EQ(h().drops_by_reason()[TW_REASON_FRAGMENTED], 3u);
  EXPECT_EQ(Count(TW_CNT_FRAGMENTS), 4u);  // remote v4, staging, legacy TCP, remote v6
  EXPECT_TRUE(h().drain_events().empty());
}

TEST_F(UdpTest, AReloadAppliesToLiveFlows) {
  const FlowSpec quic = Flow(kRemote4, 53);
  const FlowSpec dns = Flow(kRemote4, 53);
  h().publish(UdpPolicy("allow", "udp-allow"));
  EXPECT_EQ(Send(quic, {quic_initial()}), (std::vector<int>{kPass}));
  EXPECT_EQ(Send(dns, {kDnsQuery}), (std::vector<int>{kPass}));
  EXPECT_FALSE(h().flow(dns, kUdp).has_value());
  // allow -> block: the next datagram of either flow is judged, and dropped.
  h().publish(UdpPolicy("block", "udp-block"));
  EXPECT_EQ(Send(quic, {ShortHeader()}), (std::vector<int>{kDrop}));
  EXPECT_EQ(Send(dns, {kDnsQuery}), (std::vector<int>{kDrop}));
  // block -> quic: a flow judged from a QUIC Initial would pass; these two
  // were first seen with a short header and a DNS query: still not QUIC.
  h().publish(UdpPolicy("quic", "udp-quic"));
  EXPECT_EQ(Send(quic, {ShortHeader()}), (std::vector<int>{kDrop}));
  const FlowSpec fresh = Flow(kRemote4, 53);
  EXPECT_EQ(Send(fresh, {quic_initial()}), (std::vector<int>{kPass}));
  h().publish(UdpPolicy("block", "udp-block-2"));
  EXPECT_EQ(Send(fresh, {ShortHeader()}), (std::vector<int>{kDrop}));
  h().publish(UdpPolicy("quic", "udp-quic-2"));
  EXPECT_EQ(Send(fresh, {ShortHeader()}), (std::vector<int>{kPass}));
  const auto ev = h().drain_events();
  ASSERT_EQ(ev.size(), 3u);  // quic and dns blocked once each, fresh once
  EXPECT_EQ(Count(TW_CNT_UDP_FLOWS), 3u);
  EXPECT_EQ(Count(TW_CNT_UDP_NOT_ALLOWED), 3u);
}

// Every judged flow ends in exactly one of: exempt, QUIC passed, not allowed.
TEST_F(UdpTest, CountersBalance) {
  Send(Flow(kRemote4, 443), {quic_initial()});
  Send(Flow(kRemote4, 443), {quic_initial(kQuicV2)});
  Send(Flow(kRemote4, 443), {kDnsQuery, kDnsQuery});
  Send(Flow(kRemote4, 53), {quic_initial()});
  Send(Flow(kResolver4, 53), {kDnsQuery});
  Send(Flow(kStaging4, 443), {quic_initial(), kDnsQuery});
  Send(Flow(kRemote4, 8443), {kDnsQuery});
  const uint64_t quic_passed = 2;
  EXPECT_EQ(Count(TW_CNT_UDP_FLOWS), 6u);
  EXPECT_EQ(Count(TW_CNT_UDP_FLOWS),
            Count(TW_CNT_EXEMPT) + quic_passed + Count(TW_CNT_UDP_NOT_ALLOWED));
  EXPECT_EQ(Count(TW_CNT_UDP_NOT_ALLOWED),
            Count(TW_CNT_PLAINTEXT_BLOCKED) + Count(TW_CNT_PLAINTEXT_REPORTED));
  EXPECT_EQ(h().drain_events().size(), Count(TW_CNT_UDP_NOT_ALLOWED));
  EXPECT_EQ(Count(TW_CNT_PACKETS_DROPPED), 3u);
}

}  // namespace
}  // namespace tlswall::bpftest
