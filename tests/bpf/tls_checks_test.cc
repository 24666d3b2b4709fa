// The deeper TLS checks (bpf/lib/tls_checks.bpf.h) in the loaded
// classifier: after a valid ClientHello start, the client's next record
// headers (egress) and the server's first answer (tlswall_ingress) must be
// TLS, and the version the server chose must meet the rule's minimum.
#include <gtest/gtest.h>

#include <bpf/bpf.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "tests/bpf/classifier_harness.h"
#include "tests/bpf/fixture_policies.h"
#include "tests/fuzz/hello_stream_buffer.h"

extern "C" {
#include "lib/tls_records.h"
}

namespace tlswall::bpftest {
namespace {

constexpr uint32_t kIsn = 1000;
constexpr uint32_t kServerIsn = 0x50000000;  // FlowSpec's default ack is its + 1

// The remote boundary with a TLS 1.3 minimum on 8443 beside the fixture's
// usual rules (443: TLS 1.2 minimum).
std::string min13_policy() {
  return R"(
version = "bpf-tls-checks-1"
default_min_tls = "1.2"

[boundaries.remote]
cidrs = ["198.18.128.0/17", "2001:db8:2::/48"]

[boundaries.staging]
cidrs = ["198.18.64.0/18"]

[[rules]]
name = "remote-tls"
boundary = "remote"
ports = [443, 5432]
mode = "enforce"
preambles = ["postgresql"]

[[rules]]
name = "remote-tls13"
boundary = "remote"
ports = [8443]
mode = "enforce"
min_tls = "1.3"

[[rules]]
name = "staging-tls"
boundary = "staging"
ports = [8080]
mode = "monitor"
)";
}

class TlsChecksTest : public ClassifierTest {
 protected:
  void SetUp() override {
    ClassifierTest::SetUp();
    h().publish(min13_policy());
  }
  FlowSpec NextFlow(const std::string& dst, uint16_t port) {
    return make_flow(4, kClient4, dst, static_cast<uint16_t>(31000 + flows_++), port);
  }
  // The server's side of `f`, as tc ingress sees it.
  static FlowSpec Back(const FlowSpec& f) {
    FlowSpec b = make_flow(f.family, f.dst, f.src, f.dport, f.sport);
    b.ack = kIsn + 1;
    return b;
  }
  // SYN and a ClientHello; the hello's verdict. `next` is the client's
  // next sequence number.
  int Hello(const FlowSpec& f, uint32_t* next) {
    EXPECT_EQ(h().verdict(f.segment(kSyn, kIsn)), kPass);
    const Bytes hello = client_hello({0x0301, 0x0303, true, "api.example"});
    *next = kIsn + 1 + static_cast<uint32_t>(hello.size());
    return h().verdict(f.segment(kAck | kPsh, kIsn + 1, hello));
  }
  // The server's first answer (at its stream start), through tc ingress.
  int Answer(const FlowSpec& f, const Bytes& bytes, uint32_t seq = kServerIsn + 1) {
    return h().verdict(Back(f).segment(kAck | kPsh, seq, bytes), Prog::kIngress);
  }
  std::optional<tw_tls_check> Check(const FlowSpec& f) {
    const tw_flow_key k = flow_key(f);
    tw_tls_check c{};
    if (bpf_map_lookup_elem(h().classifier().tls_checks_fd(), &k, &c) != 0) return std::nullopt;
    return c;
  }
  uint64_t Counter(uint32_t c) { return h().counters()[c]; }
  int flows_ = 0;
};

TEST_F(TlsChecksTest, ATls13HandshakePassesBothChecksAndTheRecordGoes) {
  const FlowSpec f = NextFlow(kRemote4, 443);
  uint32_t seq = 0;
  ASSERT_EQ(Hello(f, &seq), kPass);
  auto c = Check(f);
  ASSERT_TRUE(c.has_value()) << "a protected TLS flow is put under deeper checks";
  EXPECT_EQ(c->srv_next, kServerIsn + 1) << "from the hello segment's acknowledgement";
  EXPECT_EQ(Answer(f, server_hello({0x0304, 32, 1500})), kPass);
  c = Check(f);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->server_version, 0x0304);
  EXPECT_TRUE(c->flags & TW_CHK_SRV_DONE);
  // The client's change_cipher_spec, Finished and application data.
  const std::vector<Bytes> records = {tls_record(20, 6, 1), tls_record(23, 58),
                                      tls_record(23, 300)};
  for (int round = 0; round < 3; ++round) {
    for (const Bytes& r : records) {
      ASSERT_EQ(h().verdict(f.segment(kAck | kPsh, seq, r)), kPass);
      seq += static_cast<uint32_t>(r.size());
    }
  }
  EXPECT_FALSE(Check(f).has_value()) << "8 records and the answer judged: the record goes";
  EXPECT_EQ(Counter(TW_CNT_SERVERS_CHECKED), 1u);
  EXPECT_EQ(Counter(TW_CNT_BAD_RECORDS), 0u);
  EXPECT_EQ(Counter(TW_CNT_PACKETS_DROPPED), 0u);
  EXPECT_EQ(h().flow(f)->cls, TW_CLASS_TLS);
  EXPECT_TRUE(h().drain_events().empty());
}

TEST_F(TlsChecksTest, APlaintextServerAnswerBlocksTheFlowBothWays) {
  const FlowSpec f = NextFlow(kRemote4, 443);
  uint32_t seq = 0;
  ASSERT_EQ(Hello(f, &seq), kPass);
  const Bytes http = ascii("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(Answer(f, http), kDrop);
  const auto st = h().flow(f);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->cls, TW_CLASS_NOT_TLS);
  EXPECT_EQ(st->reason, TW_REASON_SERVER_NOT_TLS);
  const auto ev = h().drain_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].reason, TW_REASON_SERVER_NOT_TLS);
  EXPECT_EQ(ev[0].evidence, TW_EVIDENCE_SERVER_HELLO);
  EXPECT_EQ(ev[0].action, TW_ACTION_DROP);
  EXPECT_EQ(ev[0].owner_status, TW_OWNER_UNKNOWN) << "no socket at ingress";
  EXPECT_EQ(ev[0].sock_cookie, 0u) << "the daemon finds the socket by its 5-tuple";
  EXPECT_EQ(flow_key(f).sport, ev[0].flow.sport) << "the flow as egress names it";
  // The client's next bytes and the server's next answer are dropped too.
  EXPECT_EQ(h().verdict(f.segment(kAck | kPsh, seq, tls_record(23, 100))), kDrop);
  EXPECT_EQ(Answer(f, http, kServerIsn + 1 + static_cast<uint32_t>(http.size())), kDrop);
  EXPECT_EQ(Counter(TW_CNT_SERVERS_NOT_TLS), 1u);
  EXPECT_EQ(Counter(TW_CNT_FLOWS_TLS), 0u) << "moved to not TLS";
  EXPECT_EQ(Counter(TW_CNT_FLOWS_NOT_TLS), 1u);
  EXPECT_EQ(h().drops_by_reason()[TW_REASON_SERVER_NOT_TLS], 3u);
}

TEST_F(TlsChecksTest, InMonitorModeAPlaintextAnswerIsReportedNotDropped) {
  const FlowSpec f = NextFlow(kStaging4, 8080);
  uint32_t seq = 0;
  ASSERT_EQ(Hello(f, &seq), kPass);
  EXPECT_EQ(Answer(f, ascii("220 smtp.example ESMTP\r\n")), kPass);
  const auto ev = h().drain_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].action, TW_ACTION_REPORT);
  EXPECT_EQ(ev[0].reason, TW_REASON_SERVER_NOT_TLS);
  EXPECT_EQ(Counter(TW_CNT_PACKETS_DROPPED), 0u);
}

TEST_F(TlsChecksTest, PlaintextAfterAFakeHelloIsBlockedAtItsFirstByte) {
  const FlowSpec f = NextFlow(kRemote4, 443);
  uint32_t seq = 0;
  ASSERT_EQ(Hello(f, &seq), kPass);
  EXPECT_EQ(h().verdict(f.segment(kAck | kPsh, seq, ascii("GET / HTTP/1.1\r\n\r\n"))), kDrop);
  const auto st = h().flow(f);
  EXPECT_EQ(st->cls, TW_CLASS_NOT_TLS);
  EXPECT_EQ(st->reason, TW_REASON_BAD_RECORD);
  const auto ev = h().drain_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].evidence, TW_EVIDENCE_CLIENT_RECORDS);
  EXPECT_NE(ev[0].owner_status, TW_OWNER_UNKNOWN) << "egress looks the owner up";
  EXPECT_EQ(Counter(TW_CNT_BAD_RECORDS), 1u);
}

TEST_F(TlsChecksTest, PlaintextInTheHelloSegmentAfterItsRecordIsBlocked) {
  const FlowSpec f = NextFlow(kRemote4, 443);
  ASSERT_EQ(h().verdict(f.segment(kSyn, kIsn)), kPass);
  const Bytes both = concat(client_hello(), ascii("PLAINTEXT"));
  EXPECT_EQ(h().verdict(f.segment(kAck | kPsh, kIsn + 1, both)), kDrop);
  EXPECT_EQ(h().flow(f)->reason, TW_REASON_BAD_RECORD);
}

TEST_F(TlsChecksTest, RecordHeadersSplitAcrossSegmentsAreJudgedPieceByPiece) {
  const FlowSpec ok = NextFlow(kRemote4, 443);
  uint32_t seq = 0;
  ASSERT_EQ(Hello(ok, &seq), kPass);
  const Bytes rec = tls_record(23, 40);
  for (const Bytes& part :
       {Bytes(rec.begin(), rec.begin() + 3), Bytes(rec.begin() + 3, rec.end())}) {
    EXPECT_EQ(h().verdict(ok.segment(kAck | kPsh, seq, part)), kPass);
    seq += static_cast<uint32_t>(part.size());
  }
  EXPECT_EQ(Check(ok)->recs_checked, 1u);

  // A header whose first 3 bytes are fine and whose length is not.
  const FlowSpec bad = NextFlow(kRemote4, 443);
  ASSERT_EQ(Hello(bad, &seq), kPass);
  EXPECT_EQ(h().verdict(bad.segment(kAck | kPsh, seq, {0x17, 0x03, 0x03})), kPass);
  EXPECT_EQ(h().verdict(bad.segment(kAck | kPsh, seq + 3, {0xff, 0xff, 0x00})), kDrop);
  EXPECT_EQ(h().flow(bad)->reason, TW_REASON_BAD_RECORD);
}

TEST_F(TlsChecksTest, AServerChoosingTls12UnderATls13MinimumIsBlocked) {
  const FlowSpec f = NextFlow(kRemote4, 8443);
  uint32_t seq = 0;
  ASSERT_EQ(Hello(f, &seq), kPass) << "client_version 0x0303 meets a 1.3 minimum's floor";
  EXPECT_EQ(Answer(f, server_hello({0x0303, 0, 0})), kDrop);
  const auto st = h().flow(f);
  EXPECT_EQ(st->reason, TW_REASON_TLS_BELOW_MINIMUM);
  const auto ev = h().drain_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].reason, TW_REASON_TLS_BELOW_MINIMUM);
  EXPECT_EQ(ev[0].server_version, 0x0303);
  EXPECT_EQ(ev[0].min_tls, 0x0304);
  EXPECT_EQ(ev[0].evidence, TW_EVIDENCE_SERVER_HELLO);
  EXPECT_EQ(Counter(TW_CNT_TLS_BELOW_MINIMUM), 1u);
  EXPECT_EQ(h().verdict(f.segment(kAck | kPsh, seq, tls_record(23, 100))), kDrop);
}

TEST_F(TlsChecksTest, ATls13ServerMeetsATls13Minimum) {
  const FlowSpec f = NextFlow(kRemote4, 8443);
  uint32_t seq = 0;
  ASSERT_EQ(Hello(f, &seq), kPass);
  EXPECT_EQ(Answer(f, server_hello({0x0304, 1120, 0})), kPass) << "X25519MLKEM768-sized share";
  EXPECT_EQ(Check(f)->server_version, 0x0304);
  EXPECT_TRUE(h().drain_events().empty());
}

TEST_F(TlsChecksTest, ATls12ServerWithoutSupportedVersionsIsTls12) {
  const FlowSpec f = NextFlow(kRemote4, 443);
  uint32_t seq = 0;
  ASSERT_EQ(Hello(f, &seq), kPass);
  EXPECT_EQ(Answer(f, server_hello({0x0303, 0, 200})), kPass);
  EXPECT_EQ(Check(f)->server_version, 0x0303);
}

TEST_F(TlsChecksTest, AVersionBeyondTheSegmentIsUnknownAndPasses) {
  const FlowSpec f = NextFlow(kRemote4, 8443);
  uint32_t seq = 0;
  ASSERT_EQ(Hello(f, &seq), kPass);
  Bytes cut = server_hello({0x0304, 1120, 0});
  cut.resize(300);  // supported_versions comes after the key share
  EXPECT_EQ(Answer(f, cut), kPass);
  EXPECT_EQ(Check(f)->server_version, 0);
  EXPECT_EQ(Counter(TW_CNT_SERVER_VERSION_UNKNOWN), 1u);
  EXPECT_EQ(Counter(TW_CNT_SERVERS_CHECKED), 1u);
}

TEST_F(TlsChecksTest, AnAlertIsATlsAnswer) {
  const FlowSpec f = NextFlow(kRemote4, 443);
  uint32_t seq = 0;
  ASSERT_EQ(Hello(f, &seq), kPass);
  EXPECT_EQ(Answer(f, tls_alert(70)), kPass);  // protocol_version
  EXPECT_EQ(Counter(TW_CNT_SERVERS_CHECKED), 1u);
  EXPECT_TRUE(h().drain_events().empty());
}

TEST_F(TlsChecksTest, AReorderedSegmentWaitsForTheAnswersStart) {
  const FlowSpec f = NextFlow(kRemote4, 443);
  uint32_t seq = 0;
  ASSERT_EQ(Hello(f, &seq), kPass);
  const Bytes answer = server_hello({0x0304, 32, 600});
  const Bytes tail(answer.begin() + 200, answer.end());
  EXPECT_EQ(Answer(f, tail, kServerIsn + 1 + 200), kPass);
  EXPECT_FALSE(Check(f)->flags & TW_CHK_SRV_DONE);
  EXPECT_EQ(Answer(f, answer), kPass);
  EXPECT_TRUE(Check(f)->flags & TW_CHK_SRV_DONE);
}

TEST_F(TlsChecksTest, AfterAPostgresSslRequestTheAnswerStartsBehindTheS) {
  FlowSpec f = NextFlow(kRemote4, 5432);
  ASSERT_EQ(h().verdict(f.segment(kSyn, kIsn)), kPass);
  const Bytes ssl_req = ssl_request();
  ASSERT_EQ(h().verdict(f.segment(kAck | kPsh, kIsn + 1, ssl_req)), kPass);
  f.ack = kServerIsn + 2;  // the client has read the server's 'S'
  const Bytes hello = client_hello();
  ASSERT_EQ(h().verdict(f.segment(kAck | kPsh, kIsn + 1 + 8, hello)), kPass);
  EXPECT_EQ(Check(f)->srv_next, kServerIsn + 2);
  EXPECT_EQ(Answer(f, ascii("S"), kServerIsn + 1), kPass) << "before the answer: not judged";
  EXPECT_EQ(Answer(f, server_hello(), kServerIsn + 2), kPass);
  EXPECT_EQ(Check(f)->server_version, 0x0304);
}

TEST_F(TlsChecksTest, AFastOpenHelloLearnsTheAnswersStartFromTheSynAck) {
  const FlowSpec f = NextFlow(kRemote4, 443);
  ASSERT_EQ(h().verdict(f.segment(kSyn, kIsn, client_hello())), kPass);
  ASSERT_TRUE(Check(f).has_value());
  EXPECT_FALSE(Check(f)->flags & TW_CHK_SRV_KNOWN) << "a SYN acknowledges nothing";
  EXPECT_EQ(h().verdict(Back(f).segment(kSyn | kAck, 7000), Prog::kIngress), kPass);
  EXPECT_EQ(Check(f)->srv_next, 7001u);
  EXPECT_EQ(Answer(f, ascii("hello"), 7001), kDrop);
}

TEST_F(TlsChecksTest, UnprotectedAndExemptFlowsAreNotChecked) {
  h().publish(fixture_policy());
  for (const auto& [dst, port] :
       std::vector<std::pair<std::string, uint16_t>>{{kOutside4, 443}, {kExempt4, 9100}}) {
    const FlowSpec f = NextFlow(dst, port);
    uint32_t seq = 0;
    ASSERT_EQ(Hello(f, &seq), kPass);
    EXPECT_FALSE(Check(f).has_value()) << dst;
    EXPECT_EQ(Answer(f, ascii("plaintext")), kPass) << dst;
    EXPECT_EQ(h().verdict(f.segment(kAck | kPsh, seq, ascii("GET /"))), kPass) << dst;
  }
  EXPECT_EQ(Counter(TW_CNT_PACKETS_DROPPED), 0u);
}

// Differential: the loaded ingress program and the user-space build of
// tw_server_answer_judge() agree on every answer: real-shaped ServerHellos
// (TLS 1.2, 1.3, a large key share), each of their prefixes, alerts,
// plaintext, and every seed of the hello fuzzer's corpus taken as an answer.
TEST_F(TlsChecksTest, IngressAndTheUserSpaceJudgeAgreeOnEveryAnswer) {
  std::vector<std::pair<std::string, Bytes>> answers = {
      {"tls13", server_hello()},
      {"tls12", server_hello({0x0303, 0, 0})},
      {"tls10", server_hello({0x0301, 0, 0})},
      {"mlkem_share", server_hello({0x0304, 1120, 0})},
      {"with_records", server_hello({0x0304, 32, 900})},
      {"alert", tls_alert(40)},
      {"http", ascii("HTTP/1.1 200 OK\r\n\r\n")},
      {"smtp", ascii("220 mail.example ESMTP\r\n")},
  };
  const Bytes sh = server_hello({0x0304, 32, 0});
  for (size_t k = 1; k < sh.size(); k += (k < 16 ? 1 : 7)) {
    answers.push_back({"tls13_prefix_" + std::to_string(k), Bytes(sh.begin(), sh.begin() + k)});
  }
  const std::filesystem::path corpus =
      std::filesystem::path(TLSWALL_SOURCE_DIR) / "tests/fuzz/corpus/tls_hello";
  for (const auto& e : std::filesystem::directory_iterator(corpus)) {
    std::ifstream in(e.path(), std::ios::binary);
    Bytes b{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    if (!b.empty() && b.size() < 1400)
      answers.push_back({"corpus_" + e.path().filename().string(), b});
  }
  ASSERT_GT(answers.size(), 40u);
  for (const auto& [name, bytes] : answers) {
    const FlowSpec f = NextFlow(kRemote4, 8443);  // min 1.3: the version matters
    uint32_t seq = 0;
    ASSERT_EQ(Hello(f, &seq), kPass) << name;
    hello::Payload p{bytes.data(), static_cast<uint32_t>(bytes.size())};
    __u16 version = 0;
    const int want = tw_server_answer_judge(&p, 0, p.len, &version);
    const bool blocked = want < 0 || (want == TW_ANSWER_HELLO && version && version < 0x0304);
    EXPECT_EQ(Answer(f, bytes), blocked ? kDrop : kPass) << name << " judged " << want;
    const auto c = Check(f);
    ASSERT_TRUE(c.has_value()) << name;
    EXPECT_EQ(c->server_version, version) << name;
    EXPECT_EQ(bool(c->flags & TW_CHK_FAILED), blocked) << name;
  }
}

}  // namespace
}  // namespace tlswall::bpftest
