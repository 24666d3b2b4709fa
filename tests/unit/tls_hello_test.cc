// tw_hello_judge (bpf/lib/tls_hello.h), the pure-C ClientHello prefix judge
// the BPF classifier runs: real hellos, every byte position's failure
// reason, and properties over random inputs (fixed seed).
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <utility>
#include <vector>

extern "C" {
#include "lib/tls_hello.h"
}

namespace {

// A TLS 1.3-capable ClientHello (legacy record version 0x0301,
// client_version 0x0303) as sent by `openssl s_client` (OpenSSL 3.0,
// SNI example.internal), captured from a local listener.
const std::vector<uint8_t> kOpenSslHello = {
    0x16, 0x03, 0x01, 0x01, 0x3d, 0x01, 0x00, 0x01, 0x39, 0x03, 0x03, 0x4b, 0x42, 0x88, 0x4f, 0x78,
    0xc5, 0x70, 0x24, 0xec, 0xb0, 0xbd, 0x1c, 0x89, 0xcf, 0x77, 0xd0, 0x03, 0x4a, 0x2a, 0x29, 0x04,
    0xea, 0x7a, 0x5d, 0xfe, 0x3a, 0x22, 0x4d, 0x52, 0x26, 0xe5, 0x37, 0x20, 0x34, 0x59, 0x03, 0xa7,
    0xc7, 0x8c, 0xca, 0x3d, 0x73, 0xda, 0x51, 0x75, 0xf1, 0x3f, 0xb8, 0x09, 0x23, 0xf6, 0xc1, 0xb0,
    0x4f, 0x4e, 0xf9, 0xdb, 0x23, 0x92, 0xee, 0x82, 0x5e, 0x6c, 0x9d, 0x8e, 0x00, 0x3e, 0x13, 0x02,
    0x13, 0x03, 0x13, 0x01, 0xc0, 0x2c, 0xc0, 0x30, 0x00, 0x9f, 0xcc, 0xa9, 0xcc, 0xa8, 0xcc, 0xaa,
    0xc0, 0x2b, 0xc0, 0x2f, 0x00, 0x9e, 0xc0, 0x24, 0xc0, 0x28, 0x00, 0x6b, 0xc0, 0x23, 0xc0, 0x27,
    0x00, 0x67, 0xc0, 0x0a, 0xc0, 0x14, 0x00, 0x39, 0xc0, 0x09, 0xc0, 0x13, 0x00, 0x33, 0x00, 0x9d,
    0x00, 0x9c, 0x00, 0x3d, 0x00, 0x3c, 0x00, 0x35, 0x00, 0x2f, 0x00, 0xff, 0x01, 0x00, 0x00, 0xb2,
    0x00, 0x00, 0x00, 0x15, 0x00, 0x13, 0x00, 0x00, 0x10, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65,
    0x2e, 0x69, 0x6e, 0x74, 0x65, 0x72, 0x6e, 0x61, 0x6c, 0x00, 0x0b, 0x00, 0x04, 0x03, 0x00, 0x01,
    0x02, 0x00, 0x0a, 0x00, 0x16, 0x00, 0x14, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x1e, 0x00, 0x19, 0x00,
    0x18, 0x01, 0x00, 0x01, 0x01, 0x01, 0x02, 0x01, 0x03, 0x01, 0x04, 0x00, 0x23, 0x00, 0x00, 0x00,
    0x16, 0x00, 0x00, 0x00, 0x17, 0x00, 0x00, 0x00, 0x0d, 0x00, 0x2a, 0x00, 0x28, 0x04, 0x03, 0x05,
    0x03, 0x06, 0x03, 0x08, 0x07, 0x08, 0x08, 0x08, 0x09, 0x08, 0x0a, 0x08, 0x0b, 0x08, 0x04, 0x08,
    0x05, 0x08, 0x06, 0x04, 0x01, 0x05, 0x01, 0x06, 0x01, 0x03, 0x03, 0x03, 0x01, 0x03, 0x02, 0x04,
    0x02, 0x05, 0x02, 0x06, 0x02, 0x00, 0x2b, 0x00, 0x09, 0x08, 0x03, 0x04, 0x03, 0x03, 0x03, 0x02,
    0x03, 0x01, 0x00, 0x2d, 0x00, 0x02, 0x01, 0x01, 0x00, 0x33, 0x00, 0x26, 0x00, 0x24, 0x00, 0x1d,
    0x00, 0x20, 0x07, 0x98, 0x78, 0x8f, 0x38, 0xdc, 0x46, 0x00, 0x32, 0x17, 0xae, 0xaa, 0xb0, 0xa8,
    0x0a, 0x86, 0x67, 0xe8, 0x72, 0x20, 0xc9, 0xbf, 0x22, 0x44, 0xaa, 0x2b, 0x84, 0x0b, 0x7e, 0x72,
    0xe3, 0x40,
};

// A TLS 1.0 ClientHello (`openssl s_client -tls1`): record and client
// version both 0x0301.
const std::vector<uint8_t> kTls10Hello = {
    0x16, 0x03, 0x01, 0x00, 0x7c, 0x01, 0x00, 0x00, 0x78, 0x03, 0x01, 0xb3, 0x39, 0xdc, 0x6e,
    0x6d, 0x88, 0x97, 0x95, 0x97, 0x84, 0x4d, 0x56, 0x40, 0x7a, 0xc6, 0x65, 0xf2, 0x16, 0xb8,
    0x33, 0xec, 0x39, 0x42, 0x0d, 0x24, 0x85, 0x50, 0x0d, 0xd7, 0x8e, 0x2e, 0x75, 0x00, 0x00,
    0x12, 0xc0, 0x0a, 0xc0, 0x14, 0x00, 0x39, 0xc0, 0x09, 0xc0, 0x13, 0x00, 0x33, 0x00, 0x35,
    0x00, 0x2f, 0x00, 0xff, 0x01, 0x00, 0x00, 0x3d, 0x00, 0x00, 0x00, 0x15, 0x00, 0x13, 0x00,
    0x00, 0x10, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e, 0x69, 0x6e, 0x74, 0x65, 0x72,
    0x6e, 0x61, 0x6c, 0x00, 0x0b, 0x00, 0x04, 0x03, 0x00, 0x01, 0x02, 0x00, 0x0a, 0x00, 0x0c,
    0x00, 0x0a, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x1e, 0x00, 0x19, 0x00, 0x18, 0x00, 0x23, 0x00,
    0x00, 0x00, 0x16, 0x00, 0x00, 0x00, 0x17, 0x00, 0x00,
};

constexpr uint16_t kUntouched = 0xdead;
constexpr size_t kPrefix = TW_HELLO_PREFIX;

int Judge(const uint8_t* buf, size_t len, uint16_t* version) {
  return tw_hello_judge(buf, static_cast<__u32>(len), version);
}

int Judge(const std::vector<uint8_t>& b, size_t len, uint16_t* version) {
  return Judge(b.data(), len, version);
}

std::string Hex(const uint8_t* b, size_t n) {
  std::string s;
  char buf[4];
  for (size_t i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof(buf), "%02x", b[i]);
    s += (i ? " " : "") + std::string(buf);
  }
  return s;
}

constexpr int Neg(tw_reason r) { return -static_cast<int>(r); }

TEST(TlsHelloJudge, RealOpenSslHelloIsValid) {
  ASSERT_EQ(kOpenSslHello.size(), 5u + 0x013d);  // one whole record
  uint16_t v = kUntouched;
  EXPECT_EQ(Judge(kOpenSslHello, kOpenSslHello.size(), &v), TW_HELLO_VALID);
  EXPECT_EQ(v, 0x0303);
}

TEST(TlsHelloJudge, EveryPrefixOfAValidHelloNeedsMore) {
  for (const auto* hello : {&kOpenSslHello, &kTls10Hello}) {
    for (size_t len = 0; len < kPrefix; ++len) {
      uint16_t v = kUntouched;
      EXPECT_EQ(Judge(*hello, len, &v), TW_HELLO_NEED_MORE) << "len " << len;
      EXPECT_EQ(v, kUntouched) << "client_version written before a decision, len " << len;
    }
  }
}

TEST(TlsHelloJudge, ValidFromTheJudgedPrefixOn) {
  for (size_t len = kPrefix; len <= kOpenSslHello.size(); ++len) {
    uint16_t v = kUntouched;
    ASSERT_EQ(Judge(kOpenSslHello, len, &v), TW_HELLO_VALID) << "len " << len;
    EXPECT_EQ(v, 0x0303);
  }
}

TEST(TlsHelloJudge, Tls10HelloIsValidWithItsVersion) {
  uint16_t v = kUntouched;
  EXPECT_EQ(Judge(kTls10Hello, kTls10Hello.size(), &v), TW_HELLO_VALID);
  EXPECT_EQ(v, 0x0301);
  v = kUntouched;
  EXPECT_EQ(Judge(kTls10Hello, kPrefix, &v), TW_HELLO_VALID);
  EXPECT_EQ(v, 0x0301);
}

struct Patch {
  size_t pos;
  uint8_t value;
};

std::vector<uint8_t> Patched(const std::vector<uint8_t>& base, const std::vector<Patch>& patches) {
  std::vector<uint8_t> b = base;
  for (const auto& p : patches) b.at(p.pos) = p.value;
  return b;
}

struct BadCase {
  const char* what;
  std::vector<Patch> patches;  // applied to kOpenSslHello
  size_t decided_at;           // shortest prefix that is judged
  int expected;
};

// One row per constrained byte (see the table in tls_hello.h). kOpenSslHello
// starts 16 03 01 | 01 3d | 01 | 00 01 39 | 03 03.
const std::vector<BadCase> kBadCases = {
    {"application data record", {{0, 0x17}}, 1, Neg(TW_REASON_NOT_HANDSHAKE_RECORD)},
    {"alert record", {{0, 0x15}}, 1, Neg(TW_REASON_NOT_HANDSHAKE_RECORD)},
    {"HTTP 'GET '", {{0, 'G'}, {1, 'E'}, {2, 'T'}}, 1, Neg(TW_REASON_NOT_HANDSHAKE_RECORD)},
    {"SSLv2 record header", {{0, 0x80}}, 1, Neg(TW_REASON_NOT_HANDSHAKE_RECORD)},
    {"record major version 2", {{1, 0x02}}, 2, Neg(TW_REASON_BAD_RECORD_VERSION)},
    {"record major version 0", {{1, 0x00}}, 2, Neg(TW_REASON_BAD_RECORD_VERSION)},
    {"record version 0x0300 (SSL 3.0)", {{2, 0x00}}, 3, Neg(TW_REASON_BAD_RECORD_VERSION)},
    {"record version 0x0304", {{2, 0x04}}, 3, Neg(TW_REASON_BAD_RECORD_VERSION)},
    {"record length high byte 0x41", {{3, 0x41}}, 4, Neg(TW_REASON_BAD_RECORD_LENGTH)},
    {"record length high byte 0xff", {{3, 0xff}}, 4, Neg(TW_REASON_BAD_RECORD_LENGTH)},
    {"record length 2^14 + 1", {{3, 0x40}, {4, 0x01}}, 5, Neg(TW_REASON_BAD_RECORD_LENGTH)},
    {"record length 0", {{3, 0x00}, {4, 0x00}}, 5, Neg(TW_REASON_BAD_RECORD_LENGTH)},
    {"record length 5 (no client_version)",
     {{3, 0x00}, {4, 0x05}},
     5,
     Neg(TW_REASON_BAD_RECORD_LENGTH)},
    {"ServerHello", {{5, 0x02}}, 6, Neg(TW_REASON_NOT_CLIENT_HELLO)},
    {"HelloRequest", {{5, 0x00}}, 6, Neg(TW_REASON_NOT_CLIENT_HELLO)},
    {"Finished", {{5, 0x14}}, 6, Neg(TW_REASON_NOT_CLIENT_HELLO)},
    {"handshake length high byte 3 (> 128 KiB)",
     {{6, 0x03}},
     7,
     Neg(TW_REASON_BAD_HANDSHAKE_LENGTH)},
    {"handshake length 0xffxxxx", {{6, 0xff}}, 7, Neg(TW_REASON_BAD_HANDSHAKE_LENGTH)},
    {"handshake length 128 KiB + 1",
     {{6, 0x02}, {7, 0x00}, {8, 0x01}},
     9,
     Neg(TW_REASON_BAD_HANDSHAKE_LENGTH)},
    {"handshake length 40 (below minimum)",
     {{3, 0x00}, {4, 0x2c}, {6, 0x00}, {7, 0x00}, {8, 40}},
     9,
     Neg(TW_REASON_BAD_HANDSHAKE_LENGTH)},
    {"handshake length 0",
     {{3, 0x00}, {4, 0x06}, {6, 0x00}, {7, 0x00}, {8, 0x00}},
     9,
     Neg(TW_REASON_BAD_HANDSHAKE_LENGTH)},
    {"handshake shorter than its record", {{8, 0x38}}, 9, Neg(TW_REASON_BAD_HANDSHAKE_LENGTH)},
    {"client_version major 2", {{9, 0x02}}, 10, Neg(TW_REASON_BAD_CLIENT_VERSION)},
    {"client_version major 4", {{9, 0x04}}, 10, Neg(TW_REASON_BAD_CLIENT_VERSION)},
    {"client_version 0x0305", {{10, 0x05}}, 11, Neg(TW_REASON_BAD_CLIENT_VERSION)},
    {"client_version 0x03ff", {{10, 0xff}}, 11, Neg(TW_REASON_BAD_CLIENT_VERSION)},
};

TEST(TlsHelloJudge, EachByteFailsWithItsReasonAsSoonAsItArrives) {
  for (const auto& c : kBadCases) {
    SCOPED_TRACE(c.what);
    const auto b = Patched(kOpenSslHello, c.patches);
    for (size_t len = 0; len < c.decided_at; ++len) {
      uint16_t v = kUntouched;
      EXPECT_EQ(Judge(b, len, &v), TW_HELLO_NEED_MORE) << "len " << len;
    }
    for (size_t len = c.decided_at; len <= b.size(); ++len) {
      uint16_t v = kUntouched;
      ASSERT_EQ(Judge(b, len, &v), c.expected) << "len " << len;
      EXPECT_EQ(v, kUntouched) << "client_version written for a rejected hello";
    }
  }
}

struct GoodCase {
  const char* what;
  std::vector<Patch> patches;
  uint16_t version;
};

const std::vector<GoodCase> kGoodCases = {
    {"client_version 0x0300 (SSL 3.0)", {{10, 0x00}}, 0x0300},
    {"client_version 0x0301", {{10, 0x01}}, 0x0301},
    {"client_version 0x0302", {{10, 0x02}}, 0x0302},
    {"client_version 0x0304", {{10, 0x04}}, 0x0304},
    {"record version 0x0302", {{2, 0x02}}, 0x0303},
    {"record version 0x0303", {{2, 0x03}}, 0x0303},
    {"shortest first record (hello continues)", {{3, 0x00}, {4, 0x06}}, 0x0303},
    {"record length exactly 2^14", {{3, 0x40}, {4, 0x00}, {6, 0x00}, {7, 0x3f}, {8, 0xfc}}, 0x0303},
    {"minimum hello (41) filling its record",
     {{3, 0x00}, {4, 45}, {6, 0}, {7, 0}, {8, 41}},
     0x0303},
    {"handshake length exactly 128 KiB", {{6, 0x02}, {7, 0x00}, {8, 0x00}}, 0x0303},
    {"hello longer than its record", {{6, 0x01}, {7, 0x00}, {8, 0x00}}, 0x0303},
};

TEST(TlsHelloJudge, BoundaryValuesThatAreStillAClientHello) {
  for (const auto& c : kGoodCases) {
    SCOPED_TRACE(c.what);
    const auto b = Patched(kOpenSslHello, c.patches);
    for (size_t len = 0; len < kPrefix; ++len) {
      uint16_t v = kUntouched;
      EXPECT_EQ(Judge(b, len, &v), TW_HELLO_NEED_MORE) << "len " << len;
    }
    uint16_t v = kUntouched;
    EXPECT_EQ(Judge(b, kPrefix, &v), TW_HELLO_VALID);
    EXPECT_EQ(v, c.version);
  }
}

// The header promises a 1-byte-segment stream is decided at the first bad
// byte, never later. Bytes 6-7 can already rule out every handshake length:
// here no value of byte 8 makes a ClientHello, so the 8-byte prefix must be
// rejected, not passed as NEED_MORE.
TEST(TlsHelloJudge, HandshakeLengthDecidedOnceNoByte8CanSaveIt) {
  struct Dead {
    const char* what;
    std::vector<Patch> patches;
  };
  const std::vector<Dead> dead = {
      {"record 317 bytes, handshake <= 255", {{6, 0x00}, {7, 0x00}}},
      {"record 2^14, handshake <= 0x3eff", {{3, 0x40}, {4, 0x00}, {6, 0x00}, {7, 0x3e}}},
      {"handshake >= 0x020100 (> 128 KiB)", {{6, 0x02}, {7, 0x01}}},
  };
  for (const auto& d : dead) {
    SCOPED_TRACE(d.what);
    auto b = Patched(kOpenSslHello, d.patches);
    // Precondition: byte 8 cannot rescue this prefix.
    for (int v8 = 0; v8 < 256; ++v8) {
      b[8] = static_cast<uint8_t>(v8);
      uint16_t v = kUntouched;
      ASSERT_EQ(Judge(b, 9, &v), Neg(TW_REASON_BAD_HANDSHAKE_LENGTH)) << "byte 8 = " << v8;
    }
    uint16_t v = kUntouched;
    EXPECT_EQ(Judge(b, 8, &v), Neg(TW_REASON_BAD_HANDSHAKE_LENGTH))
        << "prefix " << Hex(b.data(), 8) << " has no ClientHello continuation";
  }
}

// ---- properties over random inputs (fixed seed: failures reproduce) ----

class Gen {
 public:
  explicit Gen(uint32_t seed) : rng_(seed) {}
  uint32_t Next() { return static_cast<uint32_t>(rng_()); }
  uint8_t Byte() { return static_cast<uint8_t>(Next() & 0xff); }

  // Mostly ClientHello-like: the real hello's first bytes with some
  // positions replaced by random or boundary values, so every check is hit.
  std::array<uint8_t, kPrefix> Input() {
    static constexpr uint8_t kEdges[] = {0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x16, 0x28, 0x29,
                                         0x2c, 0x2d, 0x3e, 0x3f, 0x40, 0x41, 0x80, 0xfc, 0xff};
    std::array<uint8_t, kPrefix> b{};
    const uint32_t style = Next() % 8;
    for (size_t i = 0; i < kPrefix; ++i) {
      if (style == 0) {  // uniform noise
        b[i] = Byte();
        continue;
      }
      b[i] = kOpenSslHello[i];
      const uint32_t r = Next() % 8;
      if (r == 0) b[i] = Byte();
      if (r == 1) b[i] = kEdges[Next() % sizeof(kEdges)];
    }
    return b;
  }

 private:
  std::mt19937 rng_;
};

TEST(TlsHelloJudgeProperty, NegativeVerdictNeverChangesWithMoreBytes) {
  Gen gen(0x7715a11u);
  int negatives = 0, valids = 0;
  for (int n = 0; n < 50000; ++n) {
    const auto b = gen.Input();
    int first_negative = 0;
    size_t first_len = 0;
    for (size_t len = 0; len <= kPrefix; ++len) {
      uint16_t v = kUntouched;
      const int r = Judge(b.data(), len, &v);
      if (first_negative != 0) {
        ASSERT_EQ(r, first_negative) << "input " << Hex(b.data(), kPrefix) << ": verdict at "
                                     << first_len << " bytes changed at " << len << " bytes";
      } else if (r < 0) {
        first_negative = r;
        first_len = len;
        ++negatives;
      } else if (len < kPrefix) {
        ASSERT_EQ(r, TW_HELLO_NEED_MORE) << Hex(b.data(), len);
      } else {
        ASSERT_EQ(r, TW_HELLO_VALID) << Hex(b.data(), len);
        ++valids;
      }
      if (r != TW_HELLO_VALID) {
        ASSERT_EQ(v, kUntouched) << Hex(b.data(), len);
      }
    }
  }
  // The generator must exercise both outcomes, or the property is vacuous.
  EXPECT_GT(negatives, 10000);
  EXPECT_GT(valids, 1000);
}

TEST(TlsHelloJudgeProperty, ArbitrarySegmentationGivesTheSameVerdict) {
  // The classifier judges the collected prefix after every segment; the
  // final verdict must not depend on where the stream was cut.
  Gen gen(0xc0ffeeu);
  for (int n = 0; n < 20000; ++n) {
    const auto b = gen.Input();
    uint16_t whole_v = kUntouched;
    const int whole = Judge(b.data(), kPrefix, &whole_v);
    size_t have = 0;
    int r = TW_HELLO_NEED_MORE;
    uint16_t v = kUntouched;
    while (have < kPrefix && r == TW_HELLO_NEED_MORE) {
      have += 1 + gen.Next() % 4;
      if (have > kPrefix) have = kPrefix;
      r = Judge(b.data(), have, &v);
    }
    ASSERT_EQ(r, whole) << Hex(b.data(), kPrefix);
    ASSERT_EQ(v, whole_v) << Hex(b.data(), kPrefix);
  }
}

// True if buf[0..k) (judged NEED_MORE) can be completed into a prefix the
// judge accepts. Depth-first over the remaining bytes, pruned by the judge.
bool Completable(std::array<uint8_t, kPrefix>& buf, size_t k) {
  for (int x = 0; x < 256; ++x) {
    buf[k] = static_cast<uint8_t>(x);
    uint16_t v = kUntouched;
    const int r = Judge(buf.data(), k + 1, &v);
    if (r == TW_HELLO_VALID) return true;
    if (r == TW_HELLO_NEED_MORE && Completable(buf, k + 1)) return true;
  }
  return false;
}

TEST(TlsHelloJudgeProperty, NeedMoreOnlyForPrefixesThatCanStillBeAHello) {
  // "decided at the first bad byte, never later": a prefix judged NEED_MORE
  // must have at least one continuation that is a valid ClientHello prefix.
  Gen gen(0x5eed0001u);
  int checked = 0;
  for (int n = 0; n < 3000; ++n) {
    const auto input = gen.Input();
    for (size_t k = 0; k < kPrefix; ++k) {
      uint16_t v = kUntouched;
      if (Judge(input.data(), k, &v) != TW_HELLO_NEED_MORE) break;
      auto work = input;
      ++checked;
      ASSERT_TRUE(Completable(work, k))
          << "prefix " << Hex(input.data(), k) << " (" << k
          << " bytes) is judged NEED_MORE but no continuation is a ClientHello";
    }
  }
  EXPECT_GT(checked, 10000);
}

}  // namespace
