// Table-driven TCP flow fixtures for the tc egress classifier: each row is a
// flow (addresses, ports, encapsulation), the packets it sends with the
// verdict expected for each, and what must hold afterwards: the flow state
// in tw_flows, the ring-buffer events, every counter and drop reason.
//
// Every row runs on a reset classifier (no flows, no events, counters from
// zero) with the fixture policy (fixture_policies.h) published as
// generation 1, so counters are exact: a counter a row does not list must be
// 0 (packets and packets_dropped are derived from the packets and their
// verdicts). Rows are grouped; each group is one TEST, and a failure names
// the row. Rows whose flow is `l3` run through tlswall_egress_l3 (packets
// start at the IP header), all others through tlswall_egress.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "tests/bpf/classifier_harness.h"
#include "tests/bpf/fixture_policies.h"

namespace tlswall::bpftest {
namespace {

using Counts = std::vector<std::pair<uint32_t, uint64_t>>;

// One packet. `seq` is relative to the row's base ISN.
struct Step {
  uint8_t flags;
  uint32_t seq;
  Bytes payload;
  int verdict;
};

// The SYN of a connection whose ISN is base + isn_off.
Step Syn(uint32_t isn_off = 0) { return {kSyn, isn_off, {}, kPass}; }
// A SYN carrying data (TCP Fast Open).
Step SynData(const Bytes& p, int verdict) { return {kSyn, 0, p, verdict}; }
// Data at stream offset `off` (0 = first payload byte) of the connection
// whose ISN is base + isn_off.
Step Data(uint32_t off, const Bytes& p, int verdict, uint32_t isn_off = 0) {
  return {kAck | kPsh, isn_off + 1 + off, p, verdict};
}
Step Ack(uint32_t off, int verdict) { return {kAck, 1 + off, {}, verdict}; }
Step Fin(uint32_t off, int verdict) { return {kFin | kAck, 1 + off, {}, verdict}; }
Step Rst(uint32_t off, int verdict) { return {kRst | kAck, 1 + off, {}, verdict}; }

struct FinalState {
  uint8_t cls;
  uint8_t reason;
  uint8_t action;
};

struct ExpectedEvent {
  uint16_t type;
  uint8_t cls;
  uint8_t reason;
  uint8_t action;
  uint8_t mode;
  const char* rule;  // rule name; nullptr: not checked
  uint16_t hello_version = 0;
};

struct FlowCase {
  std::string group;
  std::string name;
  std::string description;
  FlowSpec flow;
  std::vector<Step> steps;
  std::optional<FinalState> final_state;  // nullopt: no tw_flows entry
  std::vector<ExpectedEvent> events;
  Counts counters;
  Counts drops;
  bool publish = true;  // false: generation 0, no policy
  uint32_t isn = 1000000;

  // Fluent setters, so that a row reads as one expression.
  FlowCase& to(FlowSpec f) {
    flow = std::move(f);
    return *this;
  }
  FlowCase& packets(std::vector<Step> s) {
    steps = std::move(s);
    return *this;
  }
  FlowCase& ends(uint8_t c, uint8_t r, uint8_t a) {
    final_state = FinalState{c, r, a};
    return *this;
  }
  FlowCase& no_state() {
    final_state.reset();
    return *this;
  }
  FlowCase& emits(std::vector<ExpectedEvent> e) {
    events = std::move(e);
    return *this;
  }
  FlowCase& counts(Counts c) {
    counters = std::move(c);
    return *this;
  }
  FlowCase& dropped(Counts d) {
    drops = std::move(d);
    return *this;
  }
  FlowCase& no_policy() {
    publish = false;
    return *this;
  }
  FlowCase& with_isn(uint32_t v) {
    isn = v;
    return *this;
  }
};

FlowCase Case(std::string name, std::string description) {
  FlowCase c;
  c.name = std::move(name);
  c.description = std::move(description);
  return c;
}

FlowSpec V4(const std::string& dst, uint16_t dport) {
  FlowSpec f;
  f.family = 4;
  f.src = kClient4;
  f.dst = dst;
  f.dport = dport;
  return f;
}
FlowSpec V6(const std::string& dst, uint16_t dport) {
  FlowSpec f = V4(dst, dport);
  f.family = 6;
  f.src = kClient6;
  return f;
}
FlowSpec Vlan(FlowSpec f, std::vector<VlanTag> tags) {
  f.vlans = std::move(tags);
  return f;
}
FlowSpec Ext(FlowSpec f, std::vector<V6ExtHeader> exts) {
  f.v6_exts = std::move(exts);
  return f;
}
FlowSpec IpOptions(FlowSpec f, Bytes options) {
  f.v4_options = std::move(options);
  return f;
}
FlowSpec Padded(FlowSpec f, size_t frame_size) {
  f.pad_to = frame_size;
  return f;
}
// The same flow on an L3 device: packets start at the IP header and run
// through tlswall_egress_l3. The source is the one address per family whose
// bytes make BPF_PROG_TEST_RUN set skb->protocol right (packet_builder.h).
FlowSpec L3(FlowSpec f) {
  f.l3 = true;
  f.src = f.family == 4 ? kL3Source4 : kL3Source6;
  return f;
}

// ---- payloads ----
const Bytes kHello12 = client_hello({0x0301, 0x0303, false, "api.example"});
const Bytes kHello13 = client_hello({0x0301, 0x0303, true, "api.example"});
const Bytes kHello10 = client_hello({0x0301, 0x0301, false, "old.example"});
const Bytes kGet = ascii("GET / HTTP/1.1\r\nHost: api.example\r\nUser-Agent: fixture\r\n\r\n");
const Bytes kAppData = [] {
  Bytes b = {0x17, 0x03, 0x03, 0x00, 0x40};  // an application_data record
  b.resize(5 + 0x40, 0xab);
  return b;
}();
const uint32_t kH12 = static_cast<uint32_t>(kHello12.size());

std::vector<Step> OneByteSegments(const Bytes& b, size_t n) {
  std::vector<Step> s;
  for (size_t i = 0; i < n && i < b.size(); ++i) {
    s.push_back(Data(static_cast<uint32_t>(i), {b[i]}, kPass));
  }
  return s;
}

std::vector<Step> Join(std::vector<std::vector<Step>> parts) {
  std::vector<Step> out;
  for (auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// Events of the two rules.
ExpectedEvent Blocked(uint8_t reason, uint8_t cls = TW_CLASS_NOT_TLS, uint16_t hv = 0) {
  return {TW_EV_FLOW_VERDICT, cls, reason, TW_ACTION_DROP, TW_MODE_ENFORCE, kRemoteRule, hv};
}
ExpectedEvent Reported(uint8_t reason, uint8_t cls = TW_CLASS_NOT_TLS) {
  return {TW_EV_FLOW_VERDICT, cls, reason, TW_ACTION_REPORT, TW_MODE_MONITOR, kStagingRule, 0};
}

const Counts kOneTls = {{TW_CNT_FLOWS_SEEN, 1}, {TW_CNT_FLOWS_TLS, 1}};
const Counts kOneBlocked = {
    {TW_CNT_FLOWS_SEEN, 1}, {TW_CNT_FLOWS_NOT_TLS, 1}, {TW_CNT_PLAINTEXT_BLOCKED, 1}};
const Counts kOneReported = {
    {TW_CNT_FLOWS_SEEN, 1}, {TW_CNT_FLOWS_NOT_TLS, 1}, {TW_CNT_PLAINTEXT_REPORTED, 1}};
const Counts kOneNotTls = {{TW_CNT_FLOWS_SEEN, 1}, {TW_CNT_FLOWS_NOT_TLS, 1}};

// Every row, each tagged with the group (one TEST below) it runs in.
std::vector<FlowCase> FlowCases() {
  std::vector<FlowCase> v;
  std::string group;
  auto add = [&](FlowCase& c) {
    c.group = group;
    v.push_back(c);
  };

  // ---- TLS that must pass ----
  group = "TlsPasses";
  add(Case("Tls12HelloPasses", "TLS 1.2 ClientHello in one segment, then app data")
          .to(V4(kRemote4, 443))
          .packets({Syn(), Data(0, kHello12, kPass), Ack(kH12, kPass), Data(kH12, kAppData, kPass),
                    Fin(kH12 + 69, kPass)})
          .ends(TW_CLASS_TLS, TW_REASON_NONE, TW_ACTION_PASS)
          .counts(kOneTls));
  add(Case("Tls13HelloPasses", "TLS 1.3 hello: legacy_version 0x0303, supported_versions")
          .to(V4(kRemote4, 443))
          .packets({Syn(), Data(0, kHello13, kPass)})
          .ends(TW_CLASS_TLS, TW_REASON_NONE, TW_ACTION_PASS)
          .counts(kOneTls));
  add(Case("HelloInOneByteSegments", "every 1-byte segment of a ClientHello passes")
          .to(V4(kRemote4, 5432))
          .packets(Join(
              {{Syn()}, OneByteSegments(kHello12, 11), {Data(11, slice(kHello12, 11), kPass)}}))
          .ends(TW_CLASS_TLS, TW_REASON_NONE, TW_ACTION_PASS)
          .counts(kOneTls));
  add(Case("HelloAcrossSeqWrap", "1-byte segments whose sequence numbers wrap past 2^32")
          .to(V4(kRemote4, 443))
          .with_isn(0xfffffffa)
          .packets(Join(
              {{Syn()}, OneByteSegments(kHello12, 11), {Data(11, slice(kHello12, 11), kPass)}}))
          .ends(TW_CLASS_TLS, TW_REASON_NONE, TW_ACTION_PASS)
          .counts(kOneTls));
  add(Case("TfoSynWithHelloPasses", "TCP Fast Open: the SYN carries the ClientHello")
          .to(V4(kRemote4, 443))
          .packets({SynData(kHello12, kPass), Data(kH12, kAppData, kPass)})
          .ends(TW_CLASS_TLS, TW_REASON_NONE, TW_ACTION_PASS)
          .counts(kOneTls));
  add(Case("RetransmittedHelloPasses", "an identical retransmission of the hello passes")
          .to(V4(kRemote4, 443))
          .packets({Syn(), Data(0, kHello12, kPass), Data(0, kHello12, kPass)})
          .ends(TW_CLASS_TLS, TW_REASON_NONE, TW_ACTION_PASS)
          .counts(kOneTls));

  // ---- plaintext to the enforce rule ----
  group = "PlaintextBlocked";
  add(Case("HttpGetBlocked",
           "HTTP GET: dropped on the first data packet and ever after; the client's RST passes")
          .to(V4(kRemote4, 80))
          // A pure ACK carries no stream bytes: it passes without a lookup.
          .packets({Syn(), Data(0, kGet, kDrop), Data(0, kGet, kDrop), Ack(0, kPass),
                    Data(static_cast<uint32_t>(kGet.size()), ascii("more"), kDrop), Rst(0, kPass)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_NOT_HANDSHAKE_RECORD)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_NOT_HANDSHAKE_RECORD, 3}}));
  add(Case("PlaintextFirstByteAlone", "a 1-byte segment 'G' is already judged and dropped")
          .to(V4(kRemote4, 443))
          .packets({Syn(), Data(0, ascii("G"), kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_NOT_HANDSHAKE_RECORD)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_NOT_HANDSHAKE_RECORD, 1}}));
  add(Case("FakeHeaderShortRecord",
           "'16 03 01 00 05' alone: a 5-byte record cannot hold a ClientHello header, "
           "so the header segment itself is dropped (bad_record_length)")
          .to(V4(kRemote4, 443))
          .packets({Syn(), Data(0, {0x16, 0x03, 0x01, 0x00, 0x05}, kDrop),
                    Data(5, ascii("hello"), kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_BAD_RECORD_LENGTH, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_BAD_RECORD_LENGTH)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_BAD_RECORD_LENGTH, 2}}));
  add(Case("FakeHeaderThenPlaintext",
           "a plausible record header '16 03 01 02 00' passes; the plaintext after it "
           "is dropped (not_client_hello at byte 5)")
          .to(V4(kRemote4, 443))
          .packets({Syn(), Data(0, {0x16, 0x03, 0x01, 0x02, 0x00}, kPass), Data(5, kGet, kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_CLIENT_HELLO, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_NOT_CLIENT_HELLO)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_NOT_CLIENT_HELLO, 1}}));
  add(Case("Tls10ClientVersionBlocked", "client_version 0x0301 below the rule's TLS 1.2")
          .to(V4(kRemote4, 443))
          .packets({Syn(), Data(0, kHello10, kDrop), Data(0, kHello10, kDrop)})
          .ends(TW_CLASS_TLS, TW_REASON_TLS_BELOW_MINIMUM, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_TLS_BELOW_MINIMUM, TW_CLASS_TLS, 0x0301)})
          .counts({{TW_CNT_FLOWS_SEEN, 1},
                   {TW_CNT_FLOWS_TLS, 1},
                   {TW_CNT_PLAINTEXT_BLOCKED, 1},
                   {TW_CNT_TLS_BELOW_MINIMUM, 1}})
          .dropped({{TW_REASON_TLS_BELOW_MINIMUM, 2}}));
  add(Case("TfoSynWithPlaintextBlocked", "TCP Fast Open: a SYN carrying HTTP is dropped")
          .to(V4(kRemote4, 80))
          .packets({SynData(kGet, kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_NOT_HANDSHAKE_RECORD)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_NOT_HANDSHAKE_RECORD, 1}}));

  // ---- monitor rule ----
  group = "PolicyScope";
  add(Case("MonitorPlaintextReported", "staging (monitor): plaintext passes, reported once")
          .to(V4(kStaging4, 8080))
          .packets(
              {Syn(), Data(0, kGet, kPass), Data(static_cast<uint32_t>(kGet.size()), kGet, kPass)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_REPORT)
          .emits({Reported(TW_REASON_NOT_HANDSHAKE_RECORD)})
          .counts(kOneReported));
  add(Case("MonitorTlsPasses", "staging (monitor): TLS passes, nothing reported")
          .to(V6(kStaging6, 8080))
          .packets({Syn(), Data(0, kHello13, kPass)})
          .ends(TW_CLASS_TLS, TW_REASON_NONE, TW_ACTION_PASS)
          .counts(kOneTls));

  // ---- exemptions, destinations and ports outside the rules ----
  add(Case("ExemptDestinationPort", "legacy-metrics: 198.18.200.0/24 port 9100 plaintext")
          .to(V4(kExempt4, 9100))
          .packets({Syn(), Data(0, kGet, kPass), Data(0, kGet, kPass)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_PASS)
          .counts({{TW_CNT_FLOWS_SEEN, 1}, {TW_CNT_FLOWS_NOT_TLS, 1}, {TW_CNT_EXEMPT, 1}}));
  add(Case("ExemptAddressOtherPort", "the exemption names port 9100 only: 443 is enforced")
          .to(V4(kExempt4, 443))
          .packets({Syn(), Data(0, kGet, kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_NOT_HANDSHAKE_RECORD)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_NOT_HANDSHAKE_RECORD, 1}}));
  add(Case("ExemptPortOtherAddress", "port 9100 outside 198.18.200.0/24 is enforced")
          .to(V4(kRemote4, 9100))
          .packets({Syn(), Data(0, kGet, kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_NOT_HANDSHAKE_RECORD)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_NOT_HANDSHAKE_RECORD, 1}}));
  add(Case("OutsideBoundaryPlaintextPasses", "a destination in no boundary: no event")
          .to(V4(kOutside4, 443))
          .packets({Syn(), Data(0, kGet, kPass)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_PASS)
          .counts(kOneNotTls));
  add(Case("PortNotInRulePasses", "remote boundary, port 8443 in no rule")
          .to(V4(kRemote4, 8443))
          .packets({Syn(), Data(0, kGet, kPass)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_PASS)
          .counts(kOneNotTls));
  add(Case("NoPolicyEverythingPasses", "generation 0 (nothing published): plaintext passes")
          .to(V4(kRemote4, 443))
          .no_policy()
          .packets({Syn(), Data(0, kGet, kPass), Data(0, kGet, kPass)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_PASS)
          .counts(kOneNotTls));

  add(Case("PortRangeUpperBoundBlocked", "remote-tls covers 6000-6009: 6009 is in")
          .to(V4(kRemote4, 6009))
          .packets({Syn(), Data(0, kGet, kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_NOT_HANDSHAKE_RECORD)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_NOT_HANDSHAKE_RECORD, 1}}));
  add(Case("PortRangeAboveUpperBoundPasses", "6010 is outside 6000-6009")
          .to(V4(kRemote4, 6010))
          .packets({Syn(), Data(0, kGet, kPass)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_PASS)
          .counts(kOneNotTls));

  // ---- header variants ----
  group = "HeaderVariants";
  add(Case("Ipv4OptionsPlaintextBlocked", "IPv4 with a router-alert option (IHL 6)")
          .to(IpOptions(V4(kRemote4, 443), {0x94, 0x04, 0x00, 0x00}))
          .packets({Syn(), Data(0, kGet, kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_NOT_HANDSHAKE_RECORD)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_NOT_HANDSHAKE_RECORD, 1}}));
  add(Case("EthernetPaddingIsNotPayload",
           "frames padded to the 60-byte Ethernet minimum: the zero padding after the "
           "IP packet is not TCP data (it would be a bad record version)")
          .to(Padded(V4(kRemote4, 443), 60))
          .packets({Syn(), Data(0, {0x16, 0x03}, kPass), Ack(2, kPass),
                    Data(2, slice(kHello12, 2), kPass)})
          .ends(TW_CLASS_TLS, TW_REASON_NONE, TW_ACTION_PASS)
          .counts(kOneTls));
  add(Case("EcnSynStartsTheFlow", "a SYN with ECE|CWR (ECN setup) is a new flow")
          .to(V4(kRemote4, 443))
          .packets({{kSyn | 0x40 | 0x80, 0, {}, kPass}, Data(0, kGet, kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_NOT_HANDSHAKE_RECORD)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_NOT_HANDSHAKE_RECORD, 1}}));

  // ---- IPv6 ----
  group = "Ipv6";
  add(Case("Ipv6TlsPasses", "IPv6 to 2001:db8:2::/48, TLS 1.2 hello")
          .to(V6(kRemote6, 443))
          .packets({Syn(), Data(0, kHello12, kPass), Data(kH12, kAppData, kPass)})
          .ends(TW_CLASS_TLS, TW_REASON_NONE, TW_ACTION_PASS)
          .counts(kOneTls));
  add(Case("Ipv6PlaintextBlocked", "IPv6 to 2001:db8:2::/48, HTTP")
          .to(V6(kRemote6, 80))
          .packets({Syn(), Data(0, kGet, kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_NOT_HANDSHAKE_RECORD)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_NOT_HANDSHAKE_RECORD, 1}}));
  add(Case("Ipv6HopByHopDestOptsPlaintextBlocked", "IPv6 HBH + dest-opts, then TCP HTTP")
          .to(Ext(V6(kRemote6, 443), {{V6Ext::kHopByHop}, {V6Ext::kDestOpts}}))
          .packets({Syn(), Data(0, kGet, kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_NOT_HANDSHAKE_RECORD)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_NOT_HANDSHAKE_RECORD, 1}}));
  add(Case("Ipv6RoutingAuthTlsPasses", "IPv6 HBH + routing + AH + dest-opts, then TLS")
          .to(Ext(V6(kRemote6, 443),
                  {{V6Ext::kHopByHop}, {V6Ext::kRouting}, {V6Ext::kAuth}, {V6Ext::kDestOpts}}))
          .packets({Syn(), Data(0, kHello12, kPass)})
          .ends(TW_CLASS_TLS, TW_REASON_NONE, TW_ACTION_PASS)
          .counts(kOneTls));
  add(Case("Ipv6AtomicFragmentPlaintextBlocked",
           "an atomic fragment header (offset 0, M=0, RFC 6946) hides nothing")
          .to(Ext(V6(kRemote6, 443), {{V6Ext::kFragment, 0, false}}))
          .packets({Syn(), Data(0, kGet, kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_NOT_HANDSHAKE_RECORD)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_NOT_HANDSHAKE_RECORD, 1}}));
  add(Case("Ipv6SevenDestOptsPlaintextBlocked",
           "7 chained dest-opts headers are walked: the TCP behind them is judged")
          .to(Ext(V6(kRemote6, 443), std::vector<V6ExtHeader>(7, {V6Ext::kDestOpts})))
          .packets({Syn(), Data(0, kGet, kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_NOT_HANDSHAKE_RECORD)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_NOT_HANDSHAKE_RECORD, 1}}));

  // An IPv6 segment routing header (RFC 8754; an unprivileged socket may set
  // one with IPV6_RTHDR) whose final segment is in the remote boundary: the
  // destination field holds the next segment, outside every boundary. The
  // connection's destination is the final segment, so it is protected.
  add(Case("Ipv6SegmentRoutingFinalDestinationProtected",
           "SRH: next segment 2001:db8:9::40 (no boundary), final segment "
           "2001:db8:2::20 (remote, enforce); HTTP")
          .to(Ext(V6(kOutside6, 443), {{V6Ext::kRouting, 0, false, kRemote6}}))
          .packets({Syn(), Data(0, kGet, kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_NOT_HANDSHAKE_RECORD)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_NOT_HANDSHAKE_RECORD, 1}}));
  add(Case("Ipv6SegmentRoutingFinalDestinationTlsPasses",
           "the same SRH, TLS: the flow (keyed by the final segment) is judged TLS")
          .to(Ext(V6(kOutside6, 443), {{V6Ext::kRouting, 0, false, kRemote6}}))
          .packets({Syn(), Data(0, kHello12, kPass)})
          .ends(TW_CLASS_TLS, TW_REASON_NONE, TW_ACTION_PASS)
          .counts(kOneTls));
  add(Case("Ipv6SegmentRoutingFinalOutsideBoundaryPasses",
           "SRH the other way round: next segment 2001:db8:2::20 (remote) in the destination "
           "field, final segment 2001:db8:9::40 (no boundary): not protected")
          .to(Ext(V6(kRemote6, 443), {routing_header(4, {kOutside6, kRemote6}, 1)}))
          .packets({Syn(), Data(0, kGet, kPass)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_PASS)
          .counts(kOneNotTls));
  add(Case("Ipv6SegmentRoutingSegmentsLeftZeroDestinationIsFinal",
           "SRH with segments left 0: the destination field (remote) is final, the segment "
           "list (2001:db8:9::40) is history")
          .to(Ext(V6(kRemote6, 443), {routing_header(4, {kOutside6}, 0)}))
          .packets({Syn(), Data(0, kGet, kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_NOT_HANDSHAKE_RECORD)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_NOT_HANDSHAKE_RECORD, 1}}));
  add(Case("Ipv6SegmentRoutingSegmentsLeftZeroOutsideDestinationPasses",
           "SRH with segments left 0 naming 2001:db8:2::20 (remote) in its list, destination "
           "field 2001:db8:9::40 (no boundary): the field is final, not protected")
          .to(Ext(V6(kOutside6, 443), {routing_header(4, {kRemote6}, 0)}))
          .packets({Syn(), Data(0, kGet, kPass)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_PASS)
          .counts(kOneNotTls));
  add(Case("Ipv6RoutingType0FinalDestinationProtected",
           "RH0 (RFC 2460): destination field 2001:db8:9::40 (first hop), addresses "
           "2001:db8:9::41 then 2001:db8:2::20 (final, remote); segments left 2; HTTP")
          .to(Ext(V6(kOutside6, 443), {routing_header(0, {"2001:db8:9::41", kRemote6}, 2)}))
          .packets({Syn(), Data(0, kGet, kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_NOT_HANDSHAKE_RECORD)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_NOT_HANDSHAKE_RECORD, 1}}));
  add(Case("Ipv6RoutingType0FinalOutsideBoundaryPasses",
           "RH0 via 2001:db8:2::21 (remote, destination field) and 2001:db8:2::22 to "
           "2001:db8:9::40 (final, no boundary): not protected")
          .to(Ext(V6("2001:db8:2::21", 443), {routing_header(0, {"2001:db8:2::22", kOutside6}, 2)}))
          .packets({Syn(), Data(0, kGet, kPass)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_PASS)
          .counts(kOneNotTls));
  add(Case("Ipv6RoutingType0LastHopProtected",
           "RH0 with one segment left of two: the final destination is still the last "
           "address (remote)")
          .to(Ext(V6("2001:db8:9::41", 443), {routing_header(0, {kOutside6, kRemote6}, 1)}))
          .packets({Syn(), Data(0, kGet, kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_NOT_HANDSHAKE_RECORD)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_NOT_HANDSHAKE_RECORD, 1}}));
  add(Case("Ipv6RoutingType2HomeAddressProtected",
           "Mobile IPv6 type 2: care-of address 2001:db8:9::40 in the destination field, "
           "home address 2001:db8:2::20 (remote) in the header; HTTP")
          .to(Ext(V6(kOutside6, 443), {routing_header(2, {kRemote6}, 1)}))
          .packets({Syn(), Data(0, kGet, kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_NOT_HANDSHAKE_RECORD)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_NOT_HANDSHAKE_RECORD, 1}}));
  add(Case("Ipv6RoutingType2HomeAddressTlsPasses", "the same type 2 header, TLS")
          .to(Ext(V6(kOutside6, 443), {routing_header(2, {kRemote6}, 1)}))
          .packets({Syn(), Data(0, kHello13, kPass)})
          .ends(TW_CLASS_TLS, TW_REASON_NONE, TW_ACTION_PASS)
          .counts(kOneTls));
  add(Case("Ipv6RoutingHeaderBehindHopByHop",
           "HBH, then an SRH whose final segment is remote: the walk reaches it")
          .to(Ext(V6(kOutside6, 443),
                  {{V6Ext::kHopByHop}, {V6Ext::kRouting, 0, false, kRemote6}, {V6Ext::kDestOpts}}))
          .packets({Syn(), Data(0, kGet, kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_NOT_HANDSHAKE_RECORD)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_NOT_HANDSHAKE_RECORD, 1}}));
  // parse.bpf.h: "Other types carry no address we understand: left as they
  // are." Type 3 (RPL, RFC 6554) compresses its addresses.
  add(Case("Ipv6RoutingUnknownTypeKeepsDestinationField",
           "routing type 3 with segments left: the destination field (no boundary) is used")
          .to(Ext(V6(kOutside6, 443), {routing_header(3, {kRemote6}, 1)}))
          .packets({Syn(), Data(0, kGet, kPass)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_PASS)
          .counts(kOneNotTls));

  // ---- VLAN (802.1Q, QinQ) ----
  group = "HeaderVariants";
  add(Case("VlanPlaintextBlocked", "one 802.1Q tag, HTTP")
          .to(Vlan(V4(kRemote4, 80), {{kTpid8021Q, 100}}))
          .packets({Syn(), Data(0, kGet, kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_NOT_HANDSHAKE_RECORD)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_NOT_HANDSHAKE_RECORD, 1}}));
  add(Case("VlanTlsPasses", "one 802.1Q tag, TLS")
          .to(Vlan(V4(kRemote4, 443), {{kTpid8021Q, 100}}))
          .packets({Syn(), Data(0, kHello12, kPass)})
          .ends(TW_CLASS_TLS, TW_REASON_NONE, TW_ACTION_PASS)
          .counts(kOneTls));
  add(Case("QinQPlaintextBlocked", "802.1ad + 802.1Q tags, HTTP")
          .to(Vlan(V4(kRemote4, 80), {{kTpid8021AD, 20}, {kTpid8021Q, 100}}))
          .packets({Syn(), Data(0, kGet, kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_NOT_HANDSHAKE_RECORD)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_NOT_HANDSHAKE_RECORD, 1}}));
  add(Case("QinQTlsPasses", "802.1ad + 802.1Q tags, TLS")
          .to(Vlan(V4(kRemote4, 443), {{kTpid8021AD, 20}, {kTpid8021Q, 100}}))
          .packets({Syn(), Data(0, kHello12, kPass)})
          .ends(TW_CLASS_TLS, TW_REASON_NONE, TW_ACTION_PASS)
          .counts(kOneTls));
  add(Case("QinQIpv6PlaintextBlocked", "802.1ad + 802.1Q tags, IPv6 HTTP")
          .to(Vlan(V6(kRemote6, 80), {{kTpid8021AD, 20}, {kTpid8021Q, 100}}))
          .packets({Syn(), Data(0, kGet, kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_NOT_HANDSHAKE_RECORD)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_NOT_HANDSHAKE_RECORD, 1}}));

  // ---- L3 devices: tlswall_egress_l3, packets start at the IP header ----
  group = "L3Device";
  add(Case("L3Ipv4PlaintextBlocked", "L3 device, IPv4 HTTP to the remote boundary")
          .to(L3(V4(kRemote4, 80)))
          .packets({Syn(), Data(0, kGet, kDrop), Data(0, kGet, kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_NOT_HANDSHAKE_RECORD)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_NOT_HANDSHAKE_RECORD, 2}}));
  add(Case("L3Ipv4TlsPasses", "L3 device, IPv4 TLS 1.2 hello then app data")
          .to(L3(V4(kRemote4, 443)))
          .packets({Syn(), Data(0, kHello12, kPass), Data(kH12, kAppData, kPass)})
          .ends(TW_CLASS_TLS, TW_REASON_NONE, TW_ACTION_PASS)
          .counts(kOneTls));
  add(Case("L3Ipv4OptionsPlaintextBlocked", "L3 device, IPv4 with options (IHL 6), HTTP")
          .to(L3(IpOptions(V4(kRemote4, 443), {0x94, 0x04, 0x00, 0x00})))
          .packets({Syn(), Data(0, kGet, kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_NOT_HANDSHAKE_RECORD)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_NOT_HANDSHAKE_RECORD, 1}}));
  add(Case("L3Ipv4MonitorReported", "L3 device, staging (monitor): passed, reported")
          .to(L3(V4(kStaging4, 8080)))
          .packets({Syn(), Data(0, kGet, kPass)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_REPORT)
          .emits({Reported(TW_REASON_NOT_HANDSHAKE_RECORD)})
          .counts(kOneReported));
  add(Case("L3Ipv4OutsideBoundaryPasses", "L3 device, a destination in no boundary")
          .to(L3(V4(kOutside4, 80)))
          .packets({Syn(), Data(0, kGet, kPass)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_PASS)
          .counts(kOneNotTls));
  add(Case("L3Ipv6PlaintextBlocked", "L3 device, IPv6 HTTP to the remote boundary")
          .to(L3(V6(kRemote6, 80)))
          .packets({Syn(), Data(0, kGet, kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_NOT_HANDSHAKE_RECORD)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_NOT_HANDSHAKE_RECORD, 1}}));
  add(Case("L3Ipv6TlsPasses", "L3 device, IPv6 TLS 1.3 hello")
          .to(L3(V6(kRemote6, 443)))
          .packets({Syn(), Data(0, kHello13, kPass), Data(0, kHello13, kPass)})
          .ends(TW_CLASS_TLS, TW_REASON_NONE, TW_ACTION_PASS)
          .counts(kOneTls));
  add(Case("L3Ipv6ExtensionHeadersPlaintextBlocked",
           "L3 device, IPv6 HBH + dest-opts before TCP, HTTP")
          .to(L3(Ext(V6(kRemote6, 443), {{V6Ext::kHopByHop}, {V6Ext::kDestOpts}})))
          .packets({Syn(), Data(0, kGet, kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_NOT_HANDSHAKE_RECORD)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_NOT_HANDSHAKE_RECORD, 1}}));
  add(Case("L3Ipv6SegmentRoutingFinalDestinationProtected",
           "L3 device, SRH whose final segment is remote")
          .to(L3(Ext(V6(kOutside6, 443), {{V6Ext::kRouting, 0, false, kRemote6}})))
          .packets({Syn(), Data(0, kGet, kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_NOT_HANDSHAKE_RECORD, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_NOT_HANDSHAKE_RECORD)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_NOT_HANDSHAKE_RECORD, 1}}));
  add(Case("L3Ipv4OutOfOrderHeld", "L3 device, enforce: data beyond the prefix is held")
          .to(L3(V4(kRemote4, 443)))
          .packets({Syn(), Data(0, slice(kHello12, 0, 5), kPass),
                    Data(20, slice(kHello12, 20), kDrop), Data(5, slice(kHello12, 5, 15), kPass),
                    Data(20, slice(kHello12, 20), kPass)})
          .ends(TW_CLASS_TLS, TW_REASON_NONE, TW_ACTION_PASS)
          .counts({{TW_CNT_FLOWS_SEEN, 1}, {TW_CNT_FLOWS_TLS, 1}, {TW_CNT_HELD_OUT_OF_WINDOW, 1}})
          .dropped({{TW_REASON_OUT_OF_WINDOW, 1}}));

  // ---- reordering and retransmission ----
  group = "Reordering";
  add(Case("OutOfOrderHeldInEnforce",
           "data beyond the collected prefix is dropped (held) until the prefix is "
           "complete; its retransmission then passes")
          .to(V4(kRemote4, 443))
          .packets({Syn(), Data(0, slice(kHello12, 0, 5), kPass),
                    Data(20, slice(kHello12, 20), kDrop), Data(5, slice(kHello12, 5, 15), kPass),
                    Data(20, slice(kHello12, 20), kPass)})
          .ends(TW_CLASS_TLS, TW_REASON_NONE, TW_ACTION_PASS)
          .counts({{TW_CNT_FLOWS_SEEN, 1}, {TW_CNT_FLOWS_TLS, 1}, {TW_CNT_HELD_OUT_OF_WINDOW, 1}})
          .dropped({{TW_REASON_OUT_OF_WINDOW, 1}}));
  add(Case("OutOfOrderBeforeAnyData", "the first data segment seen is not the first")
          .to(V4(kRemote4, 443))
          .packets({Syn(), Data(100, slice(kHello12, 100), kDrop),
                    Data(0, slice(kHello12, 0, 100), kPass),
                    Data(100, slice(kHello12, 100), kPass)})
          .ends(TW_CLASS_TLS, TW_REASON_NONE, TW_ACTION_PASS)
          .counts({{TW_CNT_FLOWS_SEEN, 1}, {TW_CNT_FLOWS_TLS, 1}, {TW_CNT_HELD_OUT_OF_WINDOW, 1}})
          .dropped({{TW_REASON_OUT_OF_WINDOW, 1}}));
  add(Case("OutOfOrderPassesInMonitor", "staging (monitor) never holds data back")
          .to(V4(kStaging4, 8080))
          .packets({Syn(), Data(0, slice(kHello12, 0, 5), kPass),
                    Data(20, slice(kHello12, 20), kPass), Data(5, slice(kHello12, 5, 15), kPass)})
          .ends(TW_CLASS_TLS, TW_REASON_NONE, TW_ACTION_PASS)
          .counts(kOneTls));
  // ---- retransmitted first bytes that differ ----
  group = "Retransmission";
  add(Case("OverlapMismatchWhilePending",
           "a retransmission of collected bytes with different content is blocked")
          .to(V4(kRemote4, 443))
          .packets({Syn(), Data(0, {0x16, 0x03, 0x01, 0x00, 0xc8}, kPass),
                    Data(0, {0x16, 0x03, 0x01, 0x00, 0xc9, 0x01}, kDrop), Data(0, kHello12, kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_OVERLAP_MISMATCH, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_OVERLAP_MISMATCH)})
          // flows_not_tls: the flow's first bytes were judged not TLS.
          .counts(kOneBlocked)
          .dropped({{TW_REASON_OVERLAP_MISMATCH, 2}}));
  add(Case("OverlapMismatchAfterTlsDecision",
           "the judged hello prefix retransmitted as plaintext after the flow was "
           "classified TLS (the receiver may never have seen the first copy)")
          .to(V4(kRemote4, 443))
          .packets({Syn(), Data(0, kHello12, kPass), Data(0, kGet, kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_OVERLAP_MISMATCH, TW_ACTION_DROP)
          // The event keeps the client_version of the first (judged) copy.
          .emits({Blocked(TW_REASON_OVERLAP_MISMATCH, TW_CLASS_NOT_TLS, 0x0303)})
          // Counted TLS first, then moved: flows_tls back to 0, flows_not_tls 1.
          .counts(kOneBlocked)
          .dropped({{TW_REASON_OVERLAP_MISMATCH, 1}}));
  add(Case("PartialOverlapMismatchAfterTlsDecision",
           "a retransmission starting inside the judged prefix (offset 5) with other bytes")
          .to(V4(kRemote4, 443))
          .packets({Syn(), Data(0, kHello12, kPass), Data(5, ascii("GET / HTTP/1.1"), kDrop),
                    Data(kH12, kAppData, kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_OVERLAP_MISMATCH, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_OVERLAP_MISMATCH, TW_CLASS_NOT_TLS, 0x0303)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_OVERLAP_MISMATCH, 2}}));
  add(Case("OverlapAfterTlsDecisionHelloCollectedBytewise",
           "a hello collected in 1-byte segments, then its first 11 bytes resent as HTTP")
          .to(V4(kRemote4, 443))
          .packets(Join({{Syn()},
                         OneByteSegments(kHello12, 11),
                         {Data(11, slice(kHello12, 11), kPass), Data(0, kGet, kDrop)}}))
          .ends(TW_CLASS_NOT_TLS, TW_REASON_OVERLAP_MISMATCH, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_OVERLAP_MISMATCH, TW_CLASS_NOT_TLS, 0x0303)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_OVERLAP_MISMATCH, 1}}));
  add(Case("DifferentBytesBeyondJudgedPrefixAfterTls",
           "after the TLS decision only the judged 11 bytes are re-checked: a resend of "
           "bytes 11.. with other content passes")
          .to(V4(kRemote4, 443))
          .packets({Syn(), Data(0, kHello12, kPass), Data(11, ascii("GET / HTTP/1.1"), kPass)})
          .ends(TW_CLASS_TLS, TW_REASON_NONE, TW_ACTION_PASS)
          .counts(kOneTls));
  add(Case("OverlapMismatchAfterTlsDecisionInMonitor",
           "staging (monitor): the same mismatch after a TLS decision is reported, passed")
          .to(V4(kStaging4, 8080))
          .packets({Syn(), Data(0, kHello12, kPass), Data(0, kGet, kPass)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_OVERLAP_MISMATCH, TW_ACTION_REPORT)
          .emits({{TW_EV_FLOW_VERDICT, TW_CLASS_NOT_TLS, TW_REASON_OVERLAP_MISMATCH,
                   TW_ACTION_REPORT, TW_MODE_MONITOR, kStagingRule, 0x0303}})
          .counts(kOneReported));
  add(Case("OverlapMismatchWhilePendingInMonitor",
           "staging (monitor): a mismatch while pending is reported and counted not TLS")
          .to(V4(kStaging4, 8080))
          .packets({Syn(), Data(0, {0x16, 0x03, 0x01}, kPass), Data(0, {0x16, 0x03, 0x02}, kPass)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_OVERLAP_MISMATCH, TW_ACTION_REPORT)
          .emits({Reported(TW_REASON_OVERLAP_MISMATCH)})
          .counts(kOneReported));
  add(Case("OverlapMismatchAfterTlsOutsideBoundary",
           "unprotected destination: nothing is dropped or reported, but the flow is "
           "reclassified and the counters stay balanced")
          .to(V4(kOutside4, 443))
          .packets({Syn(), Data(0, kHello12, kPass), Data(0, kGet, kPass)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_OVERLAP_MISMATCH, TW_ACTION_PASS)
          .counts(kOneNotTls));
  add(Case("OverlapMismatchAfterTlsBelowMinimum",
           "a blocked TLS 1.0 hello resent as HTTP: already dropped and reported, so no "
           "second event; the flow moves to not TLS")
          .to(V4(kRemote4, 443))
          .packets({Syn(), Data(0, kHello10, kDrop), Data(0, kGet, kDrop)})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_OVERLAP_MISMATCH, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_TLS_BELOW_MINIMUM, TW_CLASS_TLS, 0x0301)})
          .counts({{TW_CNT_FLOWS_SEEN, 1},
                   {TW_CNT_FLOWS_NOT_TLS, 1},
                   {TW_CNT_PLAINTEXT_BLOCKED, 1},
                   {TW_CNT_TLS_BELOW_MINIMUM, 1}})
          .dropped({{TW_REASON_TLS_BELOW_MINIMUM, 1}, {TW_REASON_OVERLAP_MISMATCH, 1}}));

  // ---- retransmissions that start before the first data byte ----
  // A segment whose sequence number lies before ISN+1 but which extends past
  // it overlaps the judged prefix: the receiver trims the bytes before
  // rcv_nxt and, if it never got the first copy (e.g. sent with a bad
  // checksum, which the classifier does not verify), takes the rest as the
  // stream's first bytes. Only a raw socket or TCP_REPAIR sends one.
  group = "OverlapFromBeforeIsn";
  add(Case("OverlapFromBeforeIsnWhilePending",
           "enforce, pending: a segment at ISN (one byte before the data) overlaps the "
           "collected prefix with other bytes: blocked as overlap_mismatch")
          .to(V4(kRemote4, 443))
          .packets({Syn(),
                    Data(0, {0x16, 0x03, 0x01}, kPass),
                    {kAck | kPsh, 0, concat(ascii("X"), kGet), kDrop}})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_OVERLAP_MISMATCH, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_OVERLAP_MISMATCH)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_OVERLAP_MISMATCH, 1}}));
  add(Case("OverlapFromBeforeIsnAfterTlsDecision",
           "after the TLS decision, 'X' + HTTP at sequence ISN: the receiver would take "
           "'GET / HTTP/1.1' as the first bytes, so this overlaps the judged prefix "
           "with other bytes just like a resend at offset 0")
          .to(V4(kRemote4, 443))
          .packets(
              {Syn(), Data(0, kHello12, kPass), {kAck | kPsh, 0, concat(ascii("X"), kGet), kDrop}})
          .ends(TW_CLASS_NOT_TLS, TW_REASON_OVERLAP_MISMATCH, TW_ACTION_DROP)
          .emits({Blocked(TW_REASON_OVERLAP_MISMATCH, TW_CLASS_NOT_TLS, 0x0303)})
          .counts(kOneBlocked)
          .dropped({{TW_REASON_OVERLAP_MISMATCH, 1}}));
  add(Case("IdenticalFromBeforeIsnAfterTlsDecisionPasses",
           "after the TLS decision, one byte before ISN+1 then the judged hello bytes "
           "unchanged: nothing differs, it passes")
          .to(V4(kRemote4, 443))
          .packets({Syn(),
                    Data(0, kHello12, kPass),
                    {kAck | kPsh, 0, concat(ascii("X"), kHello12), kPass}})
          .ends(TW_CLASS_TLS, TW_REASON_NONE, TW_ACTION_PASS)
          .counts(kOneTls));

  // ---- state lost, reuse, undecidable ----
  group = "StateLossAndReuse";
  add(Case("MidStreamStateLost",
           "data with no SYN seen (started before attach / evicted) passes, reported "
           "once as untracked")
          .to(V4(kRemote4, 443))
          .packets({Data(5000, kGet, kPass), Data(5000, kGet, kPass), Data(5100, kAppData, kPass)})
          .ends(TW_CLASS_UNTRACKED, TW_REASON_STATE_LOST, TW_ACTION_PASS)
          .emits({{TW_EV_FLOW_UNTRACKED, TW_CLASS_UNTRACKED, TW_REASON_STATE_LOST, TW_ACTION_PASS,
                   TW_MODE_ENFORCE, kRemoteRule, 0}})
          .counts({{TW_CNT_STATE_LOST, 1}}));
  add(Case("MidStreamOutsideBoundary", "mid-stream data to an unprotected destination")
          .to(V4(kOutside4, 443))
          .packets({Data(5000, kGet, kPass)})
          .ends(TW_CLASS_UNTRACKED, TW_REASON_NONE, TW_ACTION_PASS));
  add(Case("MidStreamExempt", "mid-stream data to an exempt destination+port")
          .to(V4(kExempt4, 9100))
          .packets({Data(5000, kGet, kPass)})
          .ends(TW_CLASS_UNTRACKED, TW_REASON_NONE, TW_ACTION_PASS));
  add(Case("MidStreamPureAck", "an ACK without data and without state stores nothing")
          .to(V4(kRemote4, 443))
          .packets({Ack(5000, kPass)})
          .no_state());
  add(Case("ReusedTupleAfterBlock",
           "after a blocked flow, a new SYN on the same 5-tuple starts from scratch")
          .to(V4(kRemote4, 443))
          .packets({Syn(), Data(0, kGet, kDrop), Syn(0x01000000),
                    Data(0, kHello12, kPass, 0x01000000), Data(kH12, kAppData, kPass, 0x01000000)})
          .ends(TW_CLASS_TLS, TW_REASON_NONE, TW_ACTION_PASS)
          .emits({Blocked(TW_REASON_NOT_HANDSHAKE_RECORD)})
          .counts({{TW_CNT_FLOWS_SEEN, 2},
                   {TW_CNT_FLOWS_TLS, 1},
                   {TW_CNT_FLOWS_NOT_TLS, 1},
                   {TW_CNT_PLAINTEXT_BLOCKED, 1}})
          .dropped({{TW_REASON_NOT_HANDSHAKE_RECORD, 1}}));
  add(Case("InboundConnectionNotJudged",
           "a local server's SYN-ACK marks the flow inbound: the peer chose the port, so "
           "the server's plaintext reply to a peer port 443 is not judged")
          .to(V4(kRemote4, 443))
          .packets({{kSyn | kAck, 0, {}, kPass},
                    Data(0, ascii("HTTP/1.1 200 OK\r\n\r\n"), kPass),
                    Data(19, ascii("body"), kPass)})
          .ends(TW_CLASS_INBOUND, TW_REASON_NONE, TW_ACTION_PASS)
          .counts({{TW_CNT_FLOWS_INBOUND, 1}}));
  add(Case("PendingFlowRstAndFinPass", "control packets of an undecided flow pass")
          .to(V4(kRemote4, 443))
          .packets(
              {Syn(), Data(0, {0x16, 0x03}, kPass), Ack(2, kPass), Fin(2, kPass), Rst(3, kPass)})
          .ends(TW_CLASS_PENDING, TW_REASON_NONE, TW_ACTION_PASS)
          .counts({{TW_CNT_FLOWS_SEEN, 1}}));
  group = "Undecidable";
  {
    // 32 data packets without progress: the first byte 0x16 and 31 identical
    // retransmissions. tw_judge() decides undecidable once data_pkts reaches
    // TW_MAX_PENDING_PKTS, counting the packet being judged, so the 32nd data
    // packet is the first one dropped.
    std::vector<Step> s = {Syn()};
    for (int i = 0; i < TW_MAX_PENDING_PKTS - 1; ++i) s.push_back(Data(0, {0x16}, kPass));
    s.push_back(Data(0, {0x16}, kDrop));
    s.push_back(Data(0, {0x16}, kDrop));
    add(Case("UndecidableAfter32Packets", "32 data packets that never complete the prefix")
            .to(V4(kRemote4, 443))
            .packets(s)
            .ends(TW_CLASS_NOT_TLS, TW_REASON_UNDECIDABLE, TW_ACTION_DROP)
            .emits({Blocked(TW_REASON_UNDECIDABLE)})
            .counts(kOneBlocked)
            .dropped({{TW_REASON_UNDECIDABLE, 2}}));
    for (auto& st : s) st.verdict = kPass;
    add(Case("UndecidableInMonitor", "the same in staging (monitor): passed, reported")
            .to(V4(kStaging4, 8080))
            .packets(s)
            .ends(TW_CLASS_NOT_TLS, TW_REASON_UNDECIDABLE, TW_ACTION_REPORT)
            .emits({Reported(TW_REASON_UNDECIDABLE)})
            .counts(kOneReported));
  }

  // Every row its own 5-tuple (the classifier is reset per row anyway).
  for (size_t i = 0; i < v.size(); ++i) v[i].flow.sport = static_cast<uint16_t>(41000 + i);
  return v;
}

std::string Describe(const Step& s) {
  std::ostringstream o;
  o << ((s.flags & kSyn) ? "SYN " : "") << ((s.flags & kRst) ? "RST " : "")
    << ((s.flags & kFin) ? "FIN " : "") << ((s.flags & kAck) ? "ACK " : "") << "seq=base+" << s.seq
    << " len=" << s.payload.size();
  return o.str();
}

class FlowFixtures : public ClassifierTest {
 protected:
  // Runs every row of `group`, each on a reset classifier.
  void RunGroup(const std::string& group);
  void RunRow(const FlowCase& c);
};

void FlowFixtures::RunGroup(const std::string& group) {
  std::vector<std::string> failed;
  int rows = 0;
  for (const FlowCase& c : FlowCases()) {
    if (c.group != group) continue;
    ++rows;
    ASSERT_TRUE(NewHarness());
    const int before = FailedParts();
    {
      SCOPED_TRACE("row " + c.name + ": " + c.description);
      RunRow(c);
    }
    if (FailedParts() > before) failed.push_back(c.name);
  }
  EXPECT_GT(rows, 0) << "no rows in group " << group;
  if (!failed.empty()) {
    std::string names;
    for (const auto& n : failed) names += " " + n;
    ADD_FAILURE() << failed.size() << " of " << rows << " rows failed:" << names;
  }
}

void FlowFixtures::RunRow(const FlowCase& c) {
  const uint64_t gen = c.publish ? h().publish(fixture_policy()) : 0;

  uint64_t drops = 0;
  for (size_t i = 0; i < c.steps.size(); ++i) {
    const Step& s = c.steps[i];
    const int got = h().verdict(c.flow.segment(s.flags, c.isn + s.seq, s.payload),
                                c.flow.l3 ? Prog::kL3 : Prog::kEthernet);
    EXPECT_EQ(got, s.verdict) << "packet #" << i << " (" << Describe(s) << ")";
    if (s.verdict == kDrop) ++drops;
  }

  // Flow state.
  const std::optional<tw_flow_state> st = h().flow(c.flow);
  if (!c.final_state) {
    EXPECT_FALSE(st.has_value()) << "a tw_flows entry was stored";
  } else if (!st) {
    ADD_FAILURE() << "no tw_flows entry for the flow";
  } else {
    EXPECT_EQ(st->cls, c.final_state->cls) << "flow class";
    EXPECT_EQ(st->reason, c.final_state->reason) << "flow reason: got " << reason_name(st->reason)
                                                 << ", want " << reason_name(c.final_state->reason);
    EXPECT_EQ(st->action, c.final_state->action) << "flow action";
    EXPECT_EQ(st->policy_generation, gen);
  }

  // Events, in order.
  const std::vector<tw_flow_event> ev = h().drain_events();
  ASSERT_EQ(ev.size(), c.events.size()) << "number of ring-buffer events";
  const tw_flow_key key = flow_key(c.flow);
  for (size_t i = 0; i < ev.size(); ++i) {
    SCOPED_TRACE("event #" + std::to_string(i));
    const tw_flow_event& e = ev[i];
    const ExpectedEvent& x = c.events[i];
    EXPECT_EQ(e.hdr.type, x.type);
    EXPECT_EQ(e.hdr.version, TW_EV_FLOW_VERDICT_VERSION);
    EXPECT_EQ(e.hdr.size, sizeof(tw_flow_event));
    EXPECT_NE(e.hdr.ktime_ns, 0u);
    EXPECT_EQ(std::memcmp(&e.flow, &key, sizeof(key)), 0) << "event flow key";
    EXPECT_EQ(e.policy_generation, gen);
    EXPECT_EQ(e.cls, x.cls);
    EXPECT_EQ(e.reason, x.reason) << "got " << reason_name(e.reason) << ", want "
                                  << reason_name(x.reason);
    EXPECT_EQ(e.action, x.action);
    EXPECT_EQ(e.mode, x.mode);
    if (x.rule) {
      EXPECT_EQ(e.rule_id, h().rule_id(x.rule)) << "rule " << x.rule;
    }
    EXPECT_EQ(e.hello_version, x.hello_version);
    EXPECT_EQ(e.min_tls, 0x0303);
  }

  // Counters: exact; unlisted ones must be 0.
  std::array<uint64_t, TW_CNT_MAX> want{};
  for (const auto& [k, n] : c.counters) want[k] = n;
  want[TW_CNT_PACKETS] = c.steps.size();
  want[TW_CNT_PACKETS_DROPPED] = drops;
  const auto got = h().counters();
  for (uint32_t k = 0; k < TW_CNT_MAX; ++k) {
    EXPECT_EQ(got[k], want[k]) << "counter " << counter_name(k);
  }
  std::array<uint64_t, TW_REASON_MAX> want_drops{};
  for (const auto& [k, n] : c.drops) want_drops[k] = n;
  const auto got_drops = h().drops_by_reason();
  for (uint32_t k = 0; k < TW_REASON_MAX; ++k) {
    EXPECT_EQ(got_drops[k], want_drops[k]) << "drops by reason " << reason_name(k);
  }
}

// One test per group keeps the ctest run short: every ctest process pays
// ~0.2 s of verifier time to load the classifier once.
TEST_F(FlowFixtures, TlsPasses) { RunGroup("TlsPasses"); }
TEST_F(FlowFixtures, PlaintextBlocked) { RunGroup("PlaintextBlocked"); }
TEST_F(FlowFixtures, PolicyScope) { RunGroup("PolicyScope"); }
TEST_F(FlowFixtures, HeaderVariants) { RunGroup("HeaderVariants"); }
TEST_F(FlowFixtures, Ipv6) { RunGroup("Ipv6"); }
TEST_F(FlowFixtures, L3Device) { RunGroup("L3Device"); }
TEST_F(FlowFixtures, Reordering) { RunGroup("Reordering"); }
TEST_F(FlowFixtures, Retransmission) { RunGroup("Retransmission"); }
// Fails while tw_tcp_egress() re-checks only segments that start inside the
// judged prefix (see OverlapFromBeforeIsnAfterTlsDecision).
TEST_F(FlowFixtures, OverlapFromBeforeIsn) { RunGroup("OverlapFromBeforeIsn"); }
TEST_F(FlowFixtures, StateLossAndReuse) { RunGroup("StateLossAndReuse"); }
TEST_F(FlowFixtures, Undecidable) { RunGroup("Undecidable"); }

TEST(FlowFixtureTable, EveryRowRunsAndNamesAreUnique) {
  const std::set<std::string> groups = {"TlsPasses",
                                        "PlaintextBlocked",
                                        "PolicyScope",
                                        "HeaderVariants",
                                        "Ipv6",
                                        "L3Device",
                                        "Reordering",
                                        "Retransmission",
                                        "OverlapFromBeforeIsn",
                                        "StateLossAndReuse",
                                        "Undecidable"};
  std::set<std::string> names;
  for (const FlowCase& c : FlowCases()) {
    EXPECT_EQ(groups.count(c.group), 1u) << c.name << " is in no TEST";
    EXPECT_TRUE(names.insert(c.name).second) << "duplicate row name " << c.name;
  }
}

}  // namespace
}  // namespace tlswall::bpftest
