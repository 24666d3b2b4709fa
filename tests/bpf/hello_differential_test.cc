// Differential check: the user-space tw_hello_judge() (the very header the
// BPF program compiles) and the loaded classifier agree on first bytes.
// Each fixture is the first payload of a fresh flow to an enforce rule
// (remote, min TLS 1.2). Expected: dropped iff the judge rejects the first
// TW_HELLO_PREFIX bytes, or accepts them with a client_version below the
// rule's minimum; the flow's class and reason are the judge's.
// Every fixture here and every seed and regression input of the hello
// fuzzer (tests/fuzz/corpus/tls_hello, tests/fuzz/regressions/tls_hello:
// real ClientHellos from openssl, curl and python, and what the fuzzer
// found) runs through both, whole and in 1-byte segments.
// Then all of them again on a rule that allows the PostgreSQL and MySQL
// preambles (bpf/lib/preamble.h), against the user-space build of the flow
// state machine (bpf/lib/hello_stream.h) fed with the same segments.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "tests/bpf/classifier_harness.h"
#include "tests/bpf/fixture_policies.h"

#include "tests/fuzz/hello_stream_buffer.h"

namespace tlswall::bpftest {
namespace {

constexpr uint16_t kRuleMinTls = 0x0303;

struct FirstBytes {
  std::string name;
  Bytes bytes;
};

Bytes Hdr(std::initializer_list<uint8_t> b) { return Bytes(b); }

std::vector<FirstBytes> Fixtures() {
  const Bytes h12 = client_hello();
  Bytes rec0303 = h12;  // some clients put 0x0303 in the record layer
  rec0303[2] = 0x03;
  Bytes rec0300 = h12;  // SSL 3.0 record version
  rec0300[2] = 0x00;
  Bytes rec0304 = h12;
  rec0304[2] = 0x04;
  Bytes cv0300 = h12;  // SSL 3.0 client_version: valid framing, below minimum
  cv0300[10] = 0x00;
  Bytes cv0302 = h12;
  cv0302[10] = 0x02;
  Bytes cv0305 = h12;
  cv0305[10] = 0x05;
  Bytes cv0203 = h12;
  cv0203[9] = 0x02;
  cv0203[10] = 0x03;
  return {
      {"Tls12Hello", h12},
      {"Tls13Hello", client_hello({0x0301, 0x0303, true, "a.example"})},
      {"RecordVersion0303", rec0303},
      {"RecordVersion0300", rec0300},
      {"RecordVersion0304", rec0304},
      {"ClientVersionSsl3", cv0300},
      {"ClientVersionTls11", cv0302},
      {"ClientVersion0305", cv0305},
      {"ClientVersion0203", cv0203},
      {"HttpGet", ascii("GET / HTTP/1.1\r\n\r\n")},
      {"FakeHeaderShortRecord", Hdr({0x16, 0x03, 0x01, 0x00, 0x05})},
      {"ZeroLengthRecord", Hdr({0x16, 0x03, 0x01, 0x00, 0x00})},
      {"RecordLength16385", Hdr({0x16, 0x03, 0x01, 0x40, 0x01, 0x01})},
      {"RecordLength16384",
       Hdr({0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x3f, 0xfc, 0x03, 0x03})},
      {"AlertRecord", Hdr({0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28})},
      {"ServerHello", Hdr({0x16, 0x03, 0x03, 0x00, 0x5a, 0x02, 0x00, 0x00, 0x56, 0x03, 0x03})},
      {"HandshakeLength40",
       Hdr({0x16, 0x03, 0x01, 0x00, 0x2c, 0x01, 0x00, 0x00, 0x28, 0x03, 0x03})},
      {"HandshakeShorterThanRecord",
       Hdr({0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xb0, 0x03, 0x03})},
      {"HandshakeSpanningRecords",
       Hdr({0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x10, 0x00, 0x03, 0x03, 0xaa})},
      {"HandshakeOver128K", Hdr({0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x02, 0x00, 0x01})},
      {"Sslv2CompatibleHello", Hdr({0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00})},
      {"PostgresSslRequest", ssl_request()},
      {"PostgresSslRequestHello", concat(ssl_request(), h12)},
      {"PostgresSslRequestStartup", concat(ssl_request(), pg_startup_message())},
      {"PostgresStartup", pg_startup_message()},
      {"MysqlSslRequestHello", concat(mysql_ssl_request(), h12)},
      {"MysqlSslRequestTls10Hello", concat(mysql_ssl_request(), cv0300)},
      {"AllZero", Bytes(11, 0)},
      {"OneByte16", Hdr({0x16})},
      {"FiveValidBytes", Hdr({0x16, 0x03, 0x01, 0x00, 0xc8})},
      {"TenValidBytes", Hdr({0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03})},
  };
}

#ifndef TLSWALL_SOURCE_DIR
#error "TLSWALL_SOURCE_DIR must be defined by the build (tests/bpf/CMakeLists.txt)"
#endif

// The hello fuzzer's seeds and regression inputs, by file name; the first
// 1200 bytes of each (one packet: BPF_PROG_TEST_RUN takes at most a page,
// and only the first TW_HELLO_PREFIX bytes are judged).
std::vector<FirstBytes> FuzzInputs() {
  namespace fs = std::filesystem;
  std::vector<FirstBytes> out;
  const fs::path fuzz = fs::path(TLSWALL_SOURCE_DIR) / "tests" / "fuzz";
  for (const char* sub : {"corpus/tls_hello", "regressions/tls_hello"}) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(fuzz / sub, ec)) {
      std::ifstream in(e.path(), std::ios::binary);
      Bytes b(std::istreambuf_iterator<char>(in), {});
      if (b.size() > 1200) b.resize(1200);
      out.push_back({std::string(sub) + "/" + e.path().filename().string(), std::move(b)});
    }
  }
  std::sort(out.begin(), out.end(),
            [](const FirstBytes& a, const FirstBytes& b) { return a.name < b.name; });
  return out;
}

// Fixtures() and FuzzInputs().
std::vector<FirstBytes> AllFixtures() {
  std::vector<FirstBytes> all = Fixtures();
  for (auto& f : FuzzInputs()) all.push_back(std::move(f));
  return all;
}

// What the classifier must do once it has the first `n` bytes of `b`.
struct Expect {
  int judged;  // tw_hello_judge() result
  uint16_t version = 0;
  bool drop() const { return judged < 0 || (judged == TW_HELLO_VALID && version < kRuleMinTls); }
  uint8_t cls() const {
    return judged < 0                 ? TW_CLASS_NOT_TLS
           : judged == TW_HELLO_VALID ? TW_CLASS_TLS
                                      : TW_CLASS_PENDING;
  }
  uint8_t reason() const {
    if (judged < 0) return static_cast<uint8_t>(-judged);
    return drop() ? TW_REASON_TLS_BELOW_MINIMUM : TW_REASON_NONE;
  }
};

Expect Judge(const Bytes& b, size_t n) {
  Expect e{};
  const size_t k = std::min<size_t>({n, b.size(), TW_HELLO_PREFIX});
  e.judged = tw_hello_judge(b.data(), static_cast<__u32>(k), &e.version);
  return e;
}

class HelloDifferentialTest : public ClassifierTest {
 protected:
  void SetUp() override {
    ClassifierTest::SetUp();
    if (HasFatalFailure()) return;
    h().publish(fixture_policy());
  }

  FlowSpec NextFlow(uint16_t port = 443) {
    return make_flow(4, kClient4, kRemote4, static_cast<uint16_t>(20000 + flows_++), port);
  }

  // Sends `b` as one segment after a SYN and checks verdict and flow state.
  void CheckWhole(const std::string& name, const Bytes& b) {
    SCOPED_TRACE(name);
    const FlowSpec f = NextFlow();
    const Expect x = Judge(b, b.size());
    ASSERT_EQ(h().verdict(f.segment(kSyn, 1000)), kPass);
    EXPECT_EQ(h().verdict(f.segment(kAck | kPsh, 1001, b)), x.drop() ? kDrop : kPass)
        << "judge() = " << x.judged;
    const auto st = h().flow(f);
    ASSERT_TRUE(st.has_value());
    EXPECT_EQ(st->cls, x.cls());
    EXPECT_EQ(st->reason, x.reason()) << "got " << reason_name(st->reason);
    if (x.judged == TW_HELLO_VALID) {
      EXPECT_EQ(st->hello_version, x.version);
    }
    h().drain_events();
  }

  int flows_ = 0;
};

TEST_F(HelloDifferentialTest, FuzzCorpusIsThere) {
  // Guards the fixture loop below against a moved corpus directory.
  EXPECT_GE(FuzzInputs().size(), 20u);
}

TEST_F(HelloDifferentialTest, FixturesInOneSegment) {
  for (const auto& fx : AllFixtures()) {
    if (fx.bytes.empty()) continue;  // no payload, no packet to judge
    CheckWhole(fx.name, fx.bytes);
  }
}

TEST_F(HelloDifferentialTest, FixturesInOneByteSegments) {
  // The classifier decides at the first bad byte: segment i (byte i) is
  // dropped iff the judge rejects the first i+1 bytes.
  for (const auto& fx : AllFixtures()) {
    SCOPED_TRACE(fx.name);
    if (fx.bytes.empty()) continue;
    const FlowSpec f = NextFlow();
    ASSERT_EQ(h().verdict(f.segment(kSyn, 1000)), kPass);
    const size_t n = std::min<size_t>(fx.bytes.size(), TW_HELLO_PREFIX + 2);
    for (size_t i = 0; i < n; ++i) {
      const Expect x = Judge(fx.bytes, i + 1);
      EXPECT_EQ(h().verdict(f.segment(kAck | kPsh, 1001 + static_cast<uint32_t>(i), {fx.bytes[i]})),
                x.drop() ? kDrop : kPass)
          << "byte #" << i << ", judge() = " << x.judged;
    }
    const Expect x = Judge(fx.bytes, n);
    const auto st = h().flow(f);
    ASSERT_TRUE(st.has_value());
    EXPECT_EQ(st->cls, x.cls());
    EXPECT_EQ(st->reason, x.reason()) << "got " << reason_name(st->reason);
    h().drain_events();
  }
}

TEST_F(HelloDifferentialTest, RandomMutationsOfAHelloPrefix) {
  // Deterministic: fixed seed. One or two bytes of the first 11 replaced,
  // and a random length, so every check of the judge gets exercised.
  std::mt19937 rng(0x7477);
  const Bytes base = slice(client_hello(), 0, TW_HELLO_PREFIX);
  for (int i = 0; i < 400; ++i) {
    Bytes b = base;
    const int edits = 1 + static_cast<int>(rng() % 2);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % b.size();
      // Bias towards values near the valid ones (0..5, 0x16, 0x40..0x41).
      static const uint8_t kNear[] = {0, 1, 2, 3, 4, 5, 0x16, 0x17, 0x28, 0x29, 0x40, 0x41};
      b[at] = (rng() % 2) ? kNear[rng() % sizeof(kNear)] : static_cast<uint8_t>(rng());
    }
    b.resize(1 + rng() % b.size());
    CheckWhole("mutation #" + std::to_string(i), b);
    if (HasFailure()) break;  // one reproducer is enough
  }
}

// ---- on a rule that allows both preambles: BPF vs the user-space build ----

constexpr uint32_t kIsn = 1000;
constexpr uint8_t kBoth =
    TW_PREAMBLE_BIT(TW_PREAMBLE_POSTGRESQL) | TW_PREAMBLE_BIT(TW_PREAMBLE_MYSQL);

// The user-space flow state machine, fed like the BPF one.
struct UserFlow {
  tw_flow_state st{};
  UserFlow() {
    st.isn = kIsn;
    st.cls = TW_CLASS_PENDING;
    st.preambles = kBoth;
    st.min_tls = 0x0303;
  }
  void Send(uint32_t stream_off, const Bytes& b) {
    hello::Payload p{b.data(), static_cast<uint32_t>(b.size())};
    tw_hello_on_data(&p, 0, kIsn + 1 + stream_off, 0, static_cast<uint32_t>(b.size()), &st);
  }
  bool drop() const {
    return st.cls == TW_CLASS_NOT_TLS || (st.cls == TW_CLASS_TLS && st.hello_version < 0x0303);
  }
};

class PreambleDifferentialTest : public HelloDifferentialTest {
 protected:
  void SetUp() override {
    HelloDifferentialTest::SetUp();
    if (HasFatalFailure()) return;
    h().publish(preamble_policy("\"postgresql\", \"mysql\""));
  }
  void CheckState(const FlowSpec& f, const UserFlow& u) {
    const auto st = h().flow(f);
    ASSERT_TRUE(st.has_value());
    EXPECT_EQ(st->cls, u.st.cls);
    if (u.st.cls == TW_CLASS_NOT_TLS) {
      EXPECT_EQ(st->reason, u.st.reason) << "got " << reason_name(st->reason);
    }
    EXPECT_EQ(st->hello_len, u.st.hello_len);
    EXPECT_EQ(st->preamble, u.st.preamble);
    if (u.st.cls == TW_CLASS_TLS) {
      EXPECT_EQ(st->hello_version, u.st.hello_version);
    }
  }
};

TEST_F(PreambleDifferentialTest, WholeAndOneByteSegmentsAgreeWithUserSpace) {
  for (const auto& in : AllFixtures()) {
    SCOPED_TRACE(in.name);
    if (in.bytes.empty()) continue;
    {  // one segment
      const FlowSpec f = NextFlow(5432);
      ASSERT_EQ(h().verdict(f.segment(kSyn, kIsn)), kPass);
      UserFlow u;
      u.Send(0, in.bytes);
      EXPECT_EQ(h().verdict(f.segment(kAck | kPsh, kIsn + 1, in.bytes)), u.drop() ? kDrop : kPass);
      CheckState(f, u);
    }
    {  // 1-byte segments through the judged window (preamble + hello)
      const FlowSpec f = NextFlow(3306);
      UserFlow u;
      ASSERT_EQ(h().verdict(f.segment(kSyn, kIsn)), kPass);
      const size_t n = std::min<size_t>(in.bytes.size(), TW_PREAMBLE_MAX_LEN + TW_HELLO_PREFIX + 2);
      for (size_t i = 0; i < n; ++i) {
        const Bytes one = {in.bytes[i]};
        u.Send(static_cast<uint32_t>(i), one);
        EXPECT_EQ(h().verdict(f.segment(kAck | kPsh, kIsn + 1 + static_cast<uint32_t>(i), one)),
                  u.drop() ? kDrop : kPass)
            << "byte #" << i;
      }
      CheckState(f, u);
    }
    h().drain_events();
    if (HasFailure()) break;  // one reproducer is enough
  }
}

}  // namespace
}  // namespace tlswall::bpftest
