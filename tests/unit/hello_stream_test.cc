// bpf/lib/hello_stream.h built with the project's C++ compiler and
// warnings: the classifier's reassembly of the first bytes, driven with
// segments from a buffer. (The hello fuzzer, tests/fuzz/, explores it; the
// BPF fixtures, tests/bpf/, run the same code in the kernel.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "tests/fuzz/hello_stream_buffer.h"

namespace {

using tlswall::hello::Payload;

// `openssl s_client`'s first bytes: record 0x0301, 317 bytes, ClientHello
// of 313, client_version 0x0303.
const std::vector<uint8_t> kHello = {0x16, 0x03, 0x01, 0x01, 0x3d, 0x01, 0x00,
                                     0x01, 0x39, 0x03, 0x03, 0x4b, 0x42};

struct Flow {
  tw_flow_state st{};
  explicit Flow(uint32_t isn) {
    st.isn = isn;
    st.cls = TW_CLASS_PENDING;
  }
  int Send(uint32_t seq, const uint8_t* b, uint32_t n, bool syn = false) {
    Payload p{b, n};
    return tw_hello_on_data(&p, 0, seq, syn ? 1 : 0, n, &st);
  }
  // The stream bytes [from, from + n) of `s`, from ISN + 1 on.
  int SendAt(const std::vector<uint8_t>& s, uint32_t from, uint32_t n) {
    return Send(st.isn + 1 + from, s.data() + from, n);
  }
};

TEST(HelloStream, OneSegmentOneByteSegmentsAndTfoAgree) {
  Flow whole(100);
  EXPECT_EQ(whole.Send(101, kHello.data(), 13), TW_DATA_TLS);
  Flow tfo(100);
  EXPECT_EQ(tfo.Send(100, kHello.data(), 13, /*syn=*/true), TW_DATA_TLS);
  Flow bytes(0xfffffffau);  // across the sequence number wrap
  for (uint32_t i = 0; i < 13; ++i) bytes.Send(0xfffffffbu + i, &kHello[i], 1);
  for (const Flow* f : {&whole, &tfo, &bytes}) {
    EXPECT_EQ(f->st.cls, TW_CLASS_TLS);
    EXPECT_EQ(f->st.hello_version, 0x0303);
    EXPECT_EQ(f->st.hello_len, TW_HELLO_PREFIX);
  }
}

TEST(HelloStream, OutOfOrderIsNotTakenUntilTheGapIsFilled) {
  Flow f(0);
  EXPECT_EQ(f.Send(1 + 5, &kHello[5], 8), TW_DATA_AHEAD);
  EXPECT_EQ(f.st.hello_len, 0);
  EXPECT_EQ(f.Send(1, kHello.data(), 5), 0);
  EXPECT_EQ(f.st.hello_len, 5);
  EXPECT_EQ(f.Send(1 + 3, &kHello[3], 10), TW_DATA_TLS);  // overlaps, same bytes
}

TEST(HelloStream, ARetransmissionWithOtherBytesIsNotTls) {
  Flow f(0);
  f.Send(1, kHello.data(), 13);
  const uint8_t other = 0x17;
  EXPECT_EQ(f.Send(1, &other, 1), TW_DATA_MISMATCH | TW_DATA_WAS_TLS);
  EXPECT_EQ(f.st.cls, TW_CLASS_NOT_TLS);
  EXPECT_EQ(f.st.reason, TW_REASON_OVERLAP_MISMATCH);
}

TEST(HelloStream, DecidedAtTheFirstBadByteAndUndecidableAfterTooManyPackets) {
  Flow bad(0);
  const uint8_t get[] = {'G', 'E', 'T'};
  EXPECT_EQ(bad.Send(1, get, 1), TW_DATA_NOT_TLS);
  EXPECT_EQ(bad.st.reason, TW_REASON_NOT_HANDSHAKE_RECORD);
  Flow slow(0);
  int r = 0;
  for (int i = 0; i < TW_MAX_PENDING_PKTS; ++i) r = slow.Send(1, kHello.data(), 1);
  EXPECT_EQ(r, TW_DATA_NOT_TLS);
  EXPECT_EQ(slow.st.reason, TW_REASON_UNDECIDABLE);
}

// ---- preambles (bpf/lib/preamble.h) ----

constexpr uint8_t kPg = TW_PREAMBLE_BIT(TW_PREAMBLE_POSTGRESQL);
constexpr uint8_t kMy = TW_PREAMBLE_BIT(TW_PREAMBLE_MYSQL);

// libpq's SSLRequest.
const std::vector<uint8_t> kSslRequest = {0x00, 0x00, 0x00, 0x08, 0x04, 0xd2, 0x16, 0x2f};
// The MariaDB client's SSL request: length 32, sequence id 1, capabilities
// 0xa2a6fe (CLIENT_SSL and CLIENT_PROTOCOL_41 in byte 5), max packet
// 16 MiB, charset 45, 19 zero bytes and MariaDB's extended capabilities.
const std::vector<uint8_t> kMySslRequest = {0x20, 0x00, 0x00, 0x01, 0x0e, 0xaa, 0xbf, 0x01, 0x00,
                                            0x00, 0x00, 0x01, 0x2d, 0x00, 0x00, 0x00, 0x00, 0x00,
                                            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                            0x00, 0x00, 0x00, 0x00, 0x00, 0x1d, 0x00, 0x00, 0x00};
// psql sslmode=disable: a StartupMessage (length 84, protocol 3.0).
const std::vector<uint8_t> kStartup = {0x00, 0x00, 0x00, 0x54, 0x00, 0x03, 0x00,
                                       0x00, 'u',  's',  'e',  'r',  0x00};

std::vector<uint8_t> Cat(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  std::vector<uint8_t> r = a;
  r.insert(r.end(), b.begin(), b.end());
  return r;
}

Flow PreambleFlow(uint8_t allowed, uint32_t isn = 1000) {
  Flow f(isn);
  f.st.preambles = allowed;
  return f;
}

TEST(HelloStreamPreamble, PostgresSslRequestThenHelloPassesHoweverSegmented) {
  const auto stream = Cat(kSslRequest, kHello);
  Flow two = PreambleFlow(kPg);  // as libpq sends it: the request, then the hello
  EXPECT_EQ(two.SendAt(stream, 0, 8), 0);
  EXPECT_EQ(two.st.cls, TW_CLASS_PENDING);
  EXPECT_EQ(tw_preamble_seen(&two.st), TW_PREAMBLE_POSTGRESQL);
  EXPECT_EQ(two.SendAt(stream, 8, 13), TW_DATA_TLS);
  Flow whole = PreambleFlow(kPg | kMy);
  EXPECT_EQ(whole.SendAt(stream, 0, static_cast<uint32_t>(stream.size())), TW_DATA_TLS);
  Flow tfo = PreambleFlow(kPg, 0xfffffff0u);
  EXPECT_EQ(tfo.Send(0xfffffff0u, stream.data(), 10, /*syn=*/true), 0);
  EXPECT_EQ(tfo.SendAt(stream, 10, 11), TW_DATA_TLS);
  Flow bytes = PreambleFlow(kPg, 0xfffffffau);  // across the sequence number wrap
  for (uint32_t i = 0; i < stream.size(); ++i) bytes.SendAt(stream, i, 1);
  for (const Flow* f : {&two, &whole, &tfo, &bytes}) {
    EXPECT_EQ(f->st.cls, TW_CLASS_TLS);
    EXPECT_EQ(f->st.hello_version, 0x0303);
    EXPECT_EQ(f->st.preamble, TW_PREAMBLE_POSTGRESQL);
    EXPECT_EQ(f->st.hello_len, TW_PREAMBLE_PG_LEN + TW_HELLO_PREFIX);
  }
}

TEST(HelloStreamPreamble, MysqlSslRequestThenHelloPassesHoweverSegmented) {
  const auto stream = Cat(kMySslRequest, kHello);
  Flow two = PreambleFlow(kMy);
  EXPECT_EQ(two.SendAt(stream, 0, 36), 0);
  EXPECT_EQ(tw_preamble_seen(&two.st), TW_PREAMBLE_MYSQL);
  EXPECT_EQ(two.SendAt(stream, 36, 13), TW_DATA_TLS);
  // 1-byte segments: more than TW_MAX_PENDING_PKTS, and still decided.
  Flow bytes = PreambleFlow(kPg | kMy);
  int r = 0;
  for (uint32_t i = 0; i < 47; ++i) r = bytes.SendAt(stream, i, 1);
  EXPECT_EQ(r, TW_DATA_TLS);
  Flow odd = PreambleFlow(kMy);  // segments that straddle every boundary
  for (uint32_t i = 0; i < stream.size(); i += 5) {
    odd.SendAt(stream, i, static_cast<uint32_t>(std::min<size_t>(5, stream.size() - i)));
  }
  for (const Flow* f : {&two, &bytes, &odd}) {
    EXPECT_EQ(f->st.cls, TW_CLASS_TLS);
    EXPECT_EQ(f->st.preamble, TW_PREAMBLE_MYSQL);
    EXPECT_EQ(f->st.hello_len, TW_PREAMBLE_MYSQL_LEN + TW_HELLO_PREFIX);
  }
}

TEST(HelloStreamPreamble, NotAllowedOnTheRuleIsPlaintextAtTheFirstByte) {
  Flow none = PreambleFlow(0);
  EXPECT_EQ(none.SendAt(kSslRequest, 0, 1), TW_DATA_NOT_TLS);
  EXPECT_EQ(none.st.reason, TW_REASON_NOT_HANDSHAKE_RECORD);
  EXPECT_EQ(none.st.preamble, TW_PREAMBLE_NONE);
  Flow other = PreambleFlow(kMy);  // MySQL allowed, a PostgreSQL client
  EXPECT_EQ(other.SendAt(kSslRequest, 0, 8), TW_DATA_NOT_TLS);
  EXPECT_EQ(other.st.reason, TW_REASON_NOT_HANDSHAKE_RECORD);
}

TEST(HelloStreamPreamble, PlainTlsOnARuleWithPreamblesIsJudgedAsAlways) {
  Flow f = PreambleFlow(kPg | kMy);
  EXPECT_EQ(f.SendAt(kHello, 0, 13), TW_DATA_TLS);
  EXPECT_EQ(f.st.preamble, TW_PREAMBLE_NONE);
  EXPECT_EQ(f.st.hello_len, TW_HELLO_PREFIX);
}

TEST(HelloStreamPreamble, StartupMessageIsABadPreambleAtItsFirstWrongByte) {
  Flow whole = PreambleFlow(kPg);
  EXPECT_EQ(whole.SendAt(kStartup, 0, static_cast<uint32_t>(kStartup.size())), TW_DATA_NOT_TLS);
  EXPECT_EQ(whole.st.reason, TW_REASON_BAD_PREAMBLE);
  EXPECT_EQ(tw_preamble_seen(&whole.st), TW_PREAMBLE_NONE);
  Flow bytes = PreambleFlow(kPg);
  for (uint32_t i = 0; i < 3; ++i) EXPECT_EQ(bytes.SendAt(kStartup, i, 1), 0);
  EXPECT_EQ(bytes.SendAt(kStartup, 3, 1), TW_DATA_NOT_TLS);  // 0x54, not 0x08
  EXPECT_EQ(bytes.st.reason, TW_REASON_BAD_PREAMBLE);
}

TEST(HelloStreamPreamble, PlaintextAfterAWholePreambleIsJudgedAsTheHello) {
  // sslmode=require against a server that says 'N', then a StartupMessage.
  Flow f = PreambleFlow(kPg);
  f.SendAt(kSslRequest, 0, 8);
  const auto stream = Cat(kSslRequest, kStartup);
  EXPECT_EQ(f.SendAt(stream, 8, static_cast<uint32_t>(kStartup.size())), TW_DATA_NOT_TLS);
  EXPECT_EQ(f.st.reason, TW_REASON_NOT_HANDSHAKE_RECORD);
  EXPECT_EQ(tw_preamble_seen(&f.st), TW_PREAMBLE_POSTGRESQL);
  // A second SSLRequest is not a ClientHello either.
  Flow twice = PreambleFlow(kPg);
  const auto again = Cat(kSslRequest, kSslRequest);
  EXPECT_EQ(twice.SendAt(again, 0, 16), TW_DATA_NOT_TLS);
  EXPECT_EQ(twice.st.reason, TW_REASON_NOT_HANDSHAKE_RECORD);
}

TEST(HelloStreamPreamble, MysqlWithoutSslOrWithAnotherHeaderIsABadPreamble) {
  auto no_ssl = kMySslRequest;
  no_ssl[5] &= static_cast<uint8_t>(~0x08);  // CLIENT_SSL cleared
  Flow a = PreambleFlow(kMy);
  EXPECT_EQ(a.SendAt(no_ssl, 0, 36), TW_DATA_NOT_TLS);
  EXPECT_EQ(a.st.reason, TW_REASON_BAD_PREAMBLE);
  auto old = kMySslRequest;
  old[5] &= static_cast<uint8_t>(~0x02);  // no CLIENT_PROTOCOL_41
  Flow b = PreambleFlow(kMy);
  EXPECT_EQ(b.SendAt(old, 0, 36), TW_DATA_NOT_TLS);
  EXPECT_EQ(b.st.reason, TW_REASON_BAD_PREAMBLE);
  auto seq0 = kMySslRequest;
  seq0[3] = 0;  // sequence id 0: not an answer to the greeting
  Flow c = PreambleFlow(kMy);
  EXPECT_EQ(c.SendAt(seq0, 0, 4), TW_DATA_NOT_TLS);
  EXPECT_EQ(c.st.reason, TW_REASON_BAD_PREAMBLE);
  // A handshake response without TLS is longer than 32 bytes: its first
  // byte is not 0x20, so it is judged as a ClientHello from byte 0.
  const std::vector<uint8_t> response = {0x55, 0x00, 0x00, 0x01, 0x85, 0xa2};
  Flow d = PreambleFlow(kMy);
  EXPECT_EQ(d.SendAt(response, 0, 6), TW_DATA_NOT_TLS);
  EXPECT_EQ(d.st.reason, TW_REASON_NOT_HANDSHAKE_RECORD);
}

TEST(HelloStreamPreamble, RetransmittedPreambleBytesMustStillFit) {
  const auto stream = Cat(kSslRequest, kHello);
  Flow pending = PreambleFlow(kPg);
  pending.SendAt(stream, 0, 8);
  const uint8_t other = 0x09;
  EXPECT_EQ(pending.Send(pending.st.isn + 1 + 3, &other, 1), TW_DATA_MISMATCH);
  EXPECT_EQ(pending.st.reason, TW_REASON_OVERLAP_MISMATCH);
  Flow tls = PreambleFlow(kPg);
  tls.SendAt(stream, 0, static_cast<uint32_t>(stream.size()));
  ASSERT_EQ(tls.st.cls, TW_CLASS_TLS);
  EXPECT_EQ(tls.SendAt(stream, 0, 8), 0);  // the same bytes again: fine
  EXPECT_EQ(tls.Send(tls.st.isn + 1 + 3, &other, 1), TW_DATA_MISMATCH | TW_DATA_WAS_TLS);
  // A MySQL request's free bytes may differ in a retransmission: the
  // server sees a valid request either way. Its header may not.
  Flow my = PreambleFlow(kMy);
  const auto mstream = Cat(kMySslRequest, kHello);
  my.SendAt(mstream, 0, static_cast<uint32_t>(mstream.size()));
  ASSERT_EQ(my.st.cls, TW_CLASS_TLS);
  const uint8_t free_byte = 0x77;
  EXPECT_EQ(my.Send(my.st.isn + 1 + 20, &free_byte, 1), 0);
  EXPECT_EQ(my.Send(my.st.isn + 1 + 0, &free_byte, 1), TW_DATA_MISMATCH | TW_DATA_WAS_TLS);
  // And the hello after the preamble is re-checked as always.
  Flow h = PreambleFlow(kPg);
  h.SendAt(stream, 0, static_cast<uint32_t>(stream.size()));
  EXPECT_EQ(h.Send(h.st.isn + 1 + 8, &other, 1), TW_DATA_MISMATCH | TW_DATA_WAS_TLS);
}

TEST(HelloStreamPreamble, HelloBeforeThePreambleCompletesIsAhead) {
  const auto stream = Cat(kMySslRequest, kHello);
  Flow f = PreambleFlow(kMy);
  EXPECT_EQ(f.SendAt(stream, 0, 10), 0);
  EXPECT_EQ(f.SendAt(stream, 36, 13), TW_DATA_AHEAD);
  EXPECT_EQ(f.st.hello_len, 10);
  EXPECT_EQ(f.SendAt(stream, 10, 39), TW_DATA_TLS);
}

TEST(HelloStreamPreamble, ARuleThatNoLongerAllowsItRevokesIt) {
  Flow f = PreambleFlow(kPg);
  f.SendAt(kSslRequest, 0, 8);
  EXPECT_FALSE(tw_preamble_revoked(&f.st));
  f.st.preambles = kMy;  // a reload
  EXPECT_TRUE(tw_preamble_revoked(&f.st));
  Flow plain = PreambleFlow(kPg);
  plain.SendAt(kHello, 0, 13);
  plain.st.preambles = 0;
  EXPECT_FALSE(tw_preamble_revoked(&plain.st));
}

}  // namespace
