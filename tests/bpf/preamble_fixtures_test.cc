// Preambles (bpf/lib/preamble.h) in the loaded classifier: a PostgreSQL
// SSLRequest or a MySQL SSL request may come before the ClientHello on a
// rule that allows it, and nowhere else; the flow state and the events say
// which one came. (hello_differential_test.cc runs every fixture and fuzz
// input on such a rule too, against the user-space build.)
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/bpf/classifier_harness.h"
#include "tests/bpf/fixture_policies.h"

namespace tlswall::bpftest {
namespace {

const Bytes kSslRequest = {0x00, 0x00, 0x00, 0x08, 0x04, 0xd2, 0x16, 0x2f};
// MariaDB client's SSL request: length 32, sequence id 1, CLIENT_SSL and
// CLIENT_PROTOCOL_41 in byte 5, max packet, charset, filler, extended caps.
const Bytes kMySslRequest = {0x20, 0x00, 0x00, 0x01, 0x0e, 0xaa, 0xbf, 0x01, 0x00,
                             0x00, 0x00, 0x01, 0x2d, 0x00, 0x00, 0x00, 0x00, 0x00,
                             0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                             0x00, 0x00, 0x00, 0x00, 0x00, 0x1d, 0x00, 0x00, 0x00};
// psql sslmode=disable: a StartupMessage.
const Bytes kStartup = {0x00, 0x00, 0x00, 0x15, 0x00, 0x03, 0x00, 0x00, 'u',  's', 'e',
                        'r',  0x00, 'p',  'g',  0x00, 0x00, 0x00, 0x00, 0x00, 0x00};

constexpr uint32_t kIsn = 1000;

class PreambleTest : public ClassifierTest {
 protected:
  FlowSpec NextFlow(uint16_t port) {
    return make_flow(4, kClient4, kRemote4, static_cast<uint16_t>(30000 + flows_++), port);
  }
  // SYN, then each of `parts` as one data segment in order; returns the
  // verdict of each data segment.
  std::vector<int> Send(const FlowSpec& f, const std::vector<Bytes>& parts) {
    std::vector<int> v;
    EXPECT_EQ(h().verdict(f.segment(kSyn, kIsn)), kPass);
    uint32_t seq = kIsn + 1;
    for (const Bytes& b : parts) {
      v.push_back(h().verdict(f.segment(kAck | kPsh, seq, b)));
      seq += static_cast<uint32_t>(b.size());
    }
    return v;
  }
  int flows_ = 0;
};

TEST_F(PreambleTest, PostgresSslRequestThenHelloPassesWhereAllowed) {
  h().publish(preamble_policy("\"postgresql\""));
  const FlowSpec f = NextFlow(5432);
  EXPECT_EQ(Send(f, {kSslRequest, client_hello()}), (std::vector<int>{kPass, kPass}));
  const auto st = h().flow(f);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->cls, TW_CLASS_TLS);
  EXPECT_EQ(st->preamble, TW_PREAMBLE_POSTGRESQL);
  EXPECT_EQ(st->rule_id, h().rule_id(kDbRule));
  EXPECT_TRUE(h().drain_events().empty());
}

TEST_F(PreambleTest, MysqlSslRequestThenHelloPassesWhereAllowed) {
  h().publish(preamble_policy("\"postgresql\", \"mysql\""));
  const FlowSpec f = NextFlow(3306);
  EXPECT_EQ(Send(f, {kMySslRequest, client_hello()}), (std::vector<int>{kPass, kPass}));
  const auto st = h().flow(f);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->cls, TW_CLASS_TLS);
  EXPECT_EQ(st->preamble, TW_PREAMBLE_MYSQL);
}

TEST_F(PreambleTest, SslRequestIsPlaintextOnARuleWithoutIt) {
  h().publish(preamble_policy("\"mysql\""));
  const FlowSpec db = NextFlow(5432);  // the db rule allows only mysql
  EXPECT_EQ(Send(db, {kSslRequest}), (std::vector<int>{kDrop}));
  const FlowSpec web = NextFlow(443);  // the TLS rule allows none
  EXPECT_EQ(Send(web, {kMySslRequest}), (std::vector<int>{kDrop}));
  const auto ev = h().drain_events();
  ASSERT_EQ(ev.size(), 2u);
  for (const auto& e : ev) {
    EXPECT_EQ(e.reason, TW_REASON_NOT_HANDSHAKE_RECORD);
    EXPECT_EQ(e.preamble, TW_PREAMBLE_NONE);
    EXPECT_EQ(e.action, TW_ACTION_DROP);
  }
}

TEST_F(PreambleTest, StartupMessageIsDroppedAsABadPreamble) {
  h().publish(preamble_policy("\"postgresql\""));
  const FlowSpec f = NextFlow(5432);
  EXPECT_EQ(Send(f, {kStartup}), (std::vector<int>{kDrop}));
  const auto ev = h().drain_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].reason, TW_REASON_BAD_PREAMBLE);
  EXPECT_EQ(ev[0].preamble, TW_PREAMBLE_NONE);  // it was no whole SSLRequest
  // 1-byte segments: the first three pass (they could begin an SSLRequest),
  // the fourth (0x15, not 0x08) is dropped.
  const FlowSpec g = NextFlow(5432);
  std::vector<Bytes> bytes;
  for (size_t i = 0; i < 6; ++i) bytes.push_back({kStartup[i]});
  EXPECT_EQ(Send(g, bytes), (std::vector<int>{kPass, kPass, kPass, kDrop, kDrop, kDrop}));
}

TEST_F(PreambleTest, PlaintextAfterTheSslRequestIsDroppedAndTheEventNamesThePreamble) {
  h().publish(preamble_policy("\"postgresql\""));
  const FlowSpec f = NextFlow(5432);
  EXPECT_EQ(Send(f, {kSslRequest, kStartup}), (std::vector<int>{kPass, kDrop}));
  const auto ev = h().drain_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].reason, TW_REASON_NOT_HANDSHAKE_RECORD);
  EXPECT_EQ(ev[0].preamble, TW_PREAMBLE_POSTGRESQL);
  EXPECT_EQ(ev[0].rule_id, h().rule_id(kDbRule));
}

TEST_F(PreambleTest, MinimumTlsStillAppliesAfterThePreamble) {
  h().publish(preamble_policy("\"mysql\""));
  const FlowSpec f = NextFlow(3306);
  Bytes tls10 = client_hello();
  tls10[10] = 0x01;  // client_version TLS 1.0, below the rule's 1.2
  EXPECT_EQ(Send(f, {kMySslRequest, tls10}), (std::vector<int>{kPass, kDrop}));
  const auto ev = h().drain_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].reason, TW_REASON_TLS_BELOW_MINIMUM);
  EXPECT_EQ(ev[0].preamble, TW_PREAMBLE_MYSQL);
  EXPECT_EQ(ev[0].hello_version, 0x0301);
}

TEST_F(PreambleTest, AReloadThatTakesThePreambleAwayBlocksTheLiveFlow) {
  h().publish(preamble_policy("\"postgresql\"", "with"));
  const FlowSpec f = NextFlow(5432);
  EXPECT_EQ(Send(f, {kSslRequest, client_hello()}), (std::vector<int>{kPass, kPass}));
  const auto before = h().counters();
  h().publish(preamble_policy("", "without"));
  EXPECT_EQ(h().verdict(f.segment(kAck | kPsh,
                                  kIsn + 1 + 8 + static_cast<uint32_t>(client_hello().size()),
                                  ascii("app data"))),
            kDrop);
  const auto st = h().flow(f);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->cls, TW_CLASS_NOT_TLS);
  EXPECT_EQ(st->reason, TW_REASON_PREAMBLE_NOT_ALLOWED);
  const auto after = h().counters();
  EXPECT_EQ(after[TW_CNT_FLOWS_TLS], before[TW_CNT_FLOWS_TLS] - 1);  // moved, not double counted
  EXPECT_EQ(after[TW_CNT_FLOWS_NOT_TLS], before[TW_CNT_FLOWS_NOT_TLS] + 1);
  const auto ev = h().drain_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].reason, TW_REASON_PREAMBLE_NOT_ALLOWED);
  EXPECT_EQ(ev[0].preamble, TW_PREAMBLE_POSTGRESQL);
}

}  // namespace
}  // namespace tlswall::bpftest
