// libFuzzer target: the ClientHello judge (bpf/lib/tls_hello.h), the
// preambles (bpf/lib/preamble.h) and the classifier's reassembly of a
// flow's first bytes (bpf/lib/hello_stream.h), the very headers the BPF
// program compiles, built for user space.
//
// The input is the first payload of a TCP flow, judged twice: on a rule
// without preambles, and on one that allows PostgreSQL's and MySQL's (the
// expected verdict then comes from a reference written from the protocol
// documents, not from preamble.h). Checked, besides the sanitizers:
//  - the verdict on the whole input (tw_hello_judge over its first
//    TW_HELLO_PREFIX bytes) is what the flow state machine decides when the
//    same bytes arrive as one segment, as a TCP Fast Open SYN, in 1-byte
//    segments, and in a schedule of segments drawn from the input's bytes
//    after the judged prefix (those never change the verdict): random sizes,
//    out of order (not taken, sent again later, as TCP does), retransmitted
//    and overlapping, starting before the stream;
//  - a retransmission that changes a judged byte makes the flow not TLS
//    (overlap_mismatch), unless it was decided not TLS already;
//  - NEED_MORE only for a prefix that some continuation makes a hello
//    (decided at the first bad byte, never later).
// The same input also goes through the deeper checks (bpf/lib/tls_records.h):
//  - as the client's records after a hello: walked as one segment (sent
//    again until the walk stops, as its per-segment bound needs) and as
//    1-byte segments, it reaches the same state, or fails in both;
//  - as a server's first answer: a version it reports is 1.0 .. 1.3 (or
//    SSL 3.0), a prefix it calls short or not TLS stays not TLS when
//    longer if a bad byte was among the first 11.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/hello_stream_buffer.h"

extern "C" {
#include "lib/tls_records.h"
}

namespace {

using tlswall::hello::Payload;

constexpr uint32_t kPrefix = TW_HELLO_PREFIX;
constexpr uint8_t kAllPreambles =
    TW_PREAMBLE_BIT(TW_PREAMBLE_POSTGRESQL) | TW_PREAMBLE_BIT(TW_PREAMBLE_MYSQL);

// The rule being fuzzed: which preambles it allows.
uint8_t g_allowed = 0;

// A flow as the classifier tracks it, from its SYN on.
struct Flow {
  tw_flow_state st{};
  uint32_t data_segments = 0;

  explicit Flow(uint32_t isn) {
    st.isn = isn;
    st.cls = TW_CLASS_PENDING;
    st.preambles = g_allowed;
  }
  // One data segment: `len` bytes at sequence number `seq` (a SYN's data
  // starts at seq + 1).
  int Segment(uint32_t seq, bool syn, const uint8_t* data, uint32_t len) {
    if (len == 0) return 0;  // no stream bytes: the classifier returns before
    ++data_segments;
    Payload p{data, len};
    return tw_hello_on_data(&p, 0, seq, syn ? 1 : 0, len, &st);
  }
};

struct Expected {
  int judged;
  uint16_t version = 0;
  uint8_t preamble = TW_PREAMBLE_NONE;  // the one the first byte began
  uint32_t base = 0;                    // its length: where the hello starts
};

// Reference for the preambles, from the protocol documents: PostgreSQL's
// SSLRequest (exactly these 8 bytes); MySQL's SSL request (packet header:
// length 32, sequence id 1; capability flags with CLIENT_PROTOCOL_41
// 0x0200 and CLIENT_SSL 0x0800; 28 more bytes of anything).
bool PreambleByteOk(uint8_t preamble, uint32_t i, uint8_t b) {
  static const uint8_t kSslRequest[8] = {0x00, 0x00, 0x00, 0x08, 0x04, 0xd2, 0x16, 0x2f};
  static const uint8_t kMysqlHeader[4] = {0x20, 0x00, 0x00, 0x01};
  if (preamble == TW_PREAMBLE_POSTGRESQL) return b == kSslRequest[i];
  if (i < 4) return b == kMysqlHeader[i];
  if (i == 5) return (b & 0x0a) == 0x0a;
  return true;
}

Expected JudgeWhole(const uint8_t* data, size_t size) {
  Expected e{};
  if (size > 0 && data[0] == 0x00 && (g_allowed & TW_PREAMBLE_BIT(TW_PREAMBLE_POSTGRESQL))) {
    e.preamble = TW_PREAMBLE_POSTGRESQL;
    e.base = 8;
  } else if (size > 0 && data[0] == 0x20 && (g_allowed & TW_PREAMBLE_BIT(TW_PREAMBLE_MYSQL))) {
    e.preamble = TW_PREAMBLE_MYSQL;
    e.base = 36;
  }
  for (uint32_t i = 0; i < e.base && i < size; ++i) {
    if (!PreambleByteOk(e.preamble, i, data[i])) {
      e.judged = -TW_REASON_BAD_PREAMBLE;
      return e;
    }
  }
  if (size <= e.base) {
    e.judged = TW_HELLO_NEED_MORE;
    return e;
  }
  const size_t k = size - e.base < kPrefix ? size - e.base : kPrefix;
  e.judged = tw_hello_judge(data + e.base, static_cast<__u32>(k), &e.version);
  return e;
}

void CheckVerdict(const Flow& f, const Expected& x) {
  // schedules stay below undecidable (a preamble's segments do not count)
  FUZZ_CHECK(f.data_segments < TW_MAX_PENDING_PKTS + x.base);
  if (x.judged == TW_HELLO_VALID) {
    FUZZ_CHECK(f.st.cls == TW_CLASS_TLS);
    FUZZ_CHECK(f.st.hello_version == x.version);
    FUZZ_CHECK(f.st.hello_len == x.base + kPrefix);
    FUZZ_CHECK(f.st.preamble == x.preamble);
    FUZZ_CHECK(tw_preamble_seen(&f.st) == x.preamble);
  } else if (x.judged < 0) {
    FUZZ_CHECK(f.st.cls == TW_CLASS_NOT_TLS);
    FUZZ_CHECK(f.st.reason == static_cast<uint8_t>(-x.judged));
  } else {
    FUZZ_CHECK(f.st.cls == TW_CLASS_PENDING);
  }
  FUZZ_CHECK(f.st.hello_len <= x.base + kPrefix);
}

// Deterministic choices drawn from the bytes after the judged prefix.
class Choices {
 public:
  Choices(const uint8_t* data, size_t size)
      : data_(data + (size > kPrefix ? kPrefix : size)),
        size_(size > kPrefix ? size - kPrefix : 0) {}
  uint32_t Next() {
    if (size_ == 0) return 0;
    const uint32_t v = data_[pos_ % size_] + 7 * static_cast<uint32_t>(pos_ / size_);
    ++pos_;
    return v;
  }
  uint32_t Next(uint32_t n) { return Next() % n; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Sends the stream as TCP would in a lossy, reordering network: segments of
// random sizes, some out of order (the classifier does not take them; they
// are sent again), some retransmitted, some starting before the stream.
// Ends by sending everything from the first byte not yet taken, so the
// whole stream has arrived.
void ScheduledSegments(const uint8_t* data, size_t size, const Expected& x) {
  Choices ch(data, size);
  const uint32_t n = static_cast<uint32_t>(size < 64 ? size : 64);  // stream bytes in play
  // ISNs near the wrap of the sequence space too.
  const uint32_t isn = (ch.Next(2) ? 0xffffffffu - ch.Next(24) : 1000u + ch.Next());
  Flow f(isn);
  uint32_t sent = 0;  // stream bytes sent in order so far
  for (int i = 0; i < 24 && sent < n; ++i) {
    const uint32_t c = ch.Next();
    const uint32_t len = 1 + ch.Next(c & 0x40 ? 12 : 4);
    switch (c % 5) {
      case 0: {  // ahead of what was sent: not taken
        const uint32_t at = sent + 1 + ch.Next(4);
        if (at < n) {
          const uint32_t l = len < n - at ? len : n - at;
          const int r = f.Segment(isn + 1 + at, false, data + at, l);
          if (f.st.cls == TW_CLASS_PENDING && at < kPrefix) FUZZ_CHECK(r & TW_DATA_AHEAD);
        }
        break;
      }
      case 1: {  // retransmission of bytes sent before (same bytes), maybe more
        if (sent == 0) break;
        const uint32_t at = ch.Next(sent);
        const uint32_t l = len < n - at ? len : n - at;
        f.Segment(isn + 1 + at, false, data + at, l);
        if (at + l > sent) sent = at + l;
        break;
      }
      case 2: {  // starts up to 3 bytes before the stream (the receiver trims them)
        const uint32_t before = 1 + ch.Next(3);
        std::vector<uint8_t> seg(before, static_cast<uint8_t>(c));
        const uint32_t l = len < n ? len : n;
        seg.insert(seg.end(), data, data + l);
        f.Segment(isn + 1 - before, false, seg.data(), static_cast<uint32_t>(seg.size()));
        if (l > sent) sent = l;
        break;
      }
      default: {  // the next bytes in order
        const uint32_t l = len < n - sent ? len : n - sent;
        f.Segment(isn + 1 + sent, false, data + sent, l);
        sent += l;
        break;
      }
    }
  }
  // TCP sends again whatever the receiver did not get.
  const uint32_t from = f.st.hello_len < n ? f.st.hello_len : n;
  if (from < n) f.Segment(isn + 1 + from, false, data + from, n - from);
  CheckVerdict(f, x);

  // A retransmission that changes a judged byte (a preamble's byte: one
  // that no longer fits it).
  if (f.st.hello_len > 0 && f.st.cls != TW_CLASS_NOT_TLS) {
    const uint32_t at = ch.Next(f.st.hello_len);
    const uint8_t other = static_cast<uint8_t>(data[at] ^ (1 + ch.Next(255)));
    const int r = f.Segment(isn + 1 + at, false, &other, 1);
    if (at < x.base && PreambleByteOk(x.preamble, at, other)) {
      FUZZ_CHECK(r == 0);
      return;
    }
    FUZZ_CHECK(r & TW_DATA_MISMATCH);
    FUZZ_CHECK(f.st.cls == TW_CLASS_NOT_TLS);
    FUZZ_CHECK(f.st.reason == TW_REASON_OVERLAP_MISMATCH);
  }
}

// True if buf[0..k) (judged NEED_MORE) can be completed into a prefix the
// judge accepts. Depth-first, pruned by the judge.
bool Completable(uint8_t* buf, uint32_t k) {
  for (int v = 0; v < 256; ++v) {
    buf[k] = static_cast<uint8_t>(v);
    __u16 version = 0;
    const int r = tw_hello_judge(buf, k + 1, &version);
    if (r == TW_HELLO_VALID) return true;
    if (r == TW_HELLO_NEED_MORE && Completable(buf, k + 1)) return true;
  }
  return false;
}

void FuzzRule(const uint8_t* data, size_t size) {
  // The judge reads only what it is given: an exact-size copy lets ASan see
  // any read past `len`.
  const size_t window = TW_PREAMBLE_MAX_LEN + kPrefix;
  const size_t whole = size < window ? size : window;
  std::vector<uint8_t> exact(data, data + whole);
  const Expected x = JudgeWhole(exact.data(), whole);
  const size_t k = x.base + kPrefix < size ? x.base + kPrefix : size;
  FUZZ_CHECK(x.judged == TW_HELLO_NEED_MORE || x.judged == TW_HELLO_VALID ||
             (x.judged < 0 && x.judged >= -TW_REASON_BAD_PREAMBLE));
  if (x.judged == TW_HELLO_NEED_MORE) FUZZ_CHECK(k < x.base + kPrefix);
  if (x.judged == TW_HELLO_VALID) FUZZ_CHECK(k == x.base + kPrefix);
  if (!g_allowed) FUZZ_CHECK(x.preamble == TW_PREAMBLE_NONE && x.judged != -TW_REASON_BAD_PREAMBLE);

  const uint32_t n = static_cast<uint32_t>(size < 4096 ? size : 4096);
  {  // one segment
    Flow f(1000);
    f.Segment(1001, false, data, n);
    CheckVerdict(f, x);
  }
  {  // data in the SYN (TCP Fast Open): the SYN's sequence number is the ISN
    Flow f(0xfffffffeu);
    f.Segment(0xfffffffeu, true, data, n);
    CheckVerdict(f, x);
  }
  {  // 1-byte segments: decided at the first bad byte
    Flow f(7);
    for (uint32_t i = 0; i < n && i < x.base + kPrefix + 2; ++i) {
      f.Segment(8 + i, false, data + i, 1);
      const Expected at = JudgeWhole(data, i + 1);
      if (at.judged < 0) FUZZ_CHECK(f.st.cls == TW_CLASS_NOT_TLS && f.st.reason == -at.judged);
      if (at.judged == TW_HELLO_NEED_MORE) FUZZ_CHECK(f.st.cls == TW_CLASS_PENDING);
    }
    CheckVerdict(f, x);
  }
  ScheduledSegments(data, size, x);

  if (x.judged == TW_HELLO_NEED_MORE && k > x.base) {
    uint8_t buf[kPrefix + 1] = {};
    std::memcpy(buf, data + x.base, k - x.base);
    FUZZ_CHECK(Completable(buf, static_cast<uint32_t>(k - x.base)));
  }
}

bool SameWalk(const tw_tls_check& a, const tw_tls_check& b) {
  return a.rec_next == b.rec_next && a.rec_have == b.rec_have && a.recs_checked == b.recs_checked &&
         (a.rec_have < 4 || a.rec_len_hi == b.rec_len_hi);
}

void FuzzDeeperChecks(const uint8_t* data, size_t size) {
  const uint32_t n = static_cast<uint32_t>(size < 4096 ? size : 4096);
  std::vector<uint8_t> exact(data, data + n);  // ASan sees reads past the end
  Payload whole{exact.data(), n};

  // The client's records from stream index 0: one segment, sent again
  // until the walk stops moving, against 1-byte segments.
  tw_tls_check one{}, bytes{};
  int r_one = 0, r_bytes = 0;
  for (int i = 0; i < 64 && !r_one; ++i) {
    const tw_tls_check before = one;
    r_one = tw_records_walk(&whole, 0, 0, n, &one);
    if (SameWalk(before, one)) break;
  }
  for (uint32_t i = 0; i < n && !r_bytes; ++i) {
    Payload b{exact.data() + i, 1};
    r_bytes = tw_records_walk(&b, 0, i, 1, &bytes);
  }
  FUZZ_CHECK(r_one == r_bytes);
  if (!r_one) FUZZ_CHECK(SameWalk(one, bytes));
  FUZZ_CHECK(one.recs_checked <= TW_RECORD_CHECKS);

  // The server's first answer.
  __u16 version = 0;
  const int whole_r = tw_server_answer_judge(&whole, 0, n, &version);
  FUZZ_CHECK(whole_r >= -TW_REASON_SERVER_NOT_TLS && whole_r <= TW_ANSWER_ALERT);
  FUZZ_CHECK(whole_r == -TW_REASON_SERVER_NOT_TLS || whole_r >= 0);
  if (whole_r == TW_ANSWER_HELLO && version) FUZZ_CHECK(version >= 0x0300 && version <= 0x0304);
  if (whole_r != TW_ANSWER_HELLO) FUZZ_CHECK(version == 0);
  for (uint32_t k = 1; k < 11 && k <= n; ++k) {
    std::vector<uint8_t> pre(exact.begin(), exact.begin() + k);
    Payload p{pre.data(), k};
    __u16 v = 0;
    const int r = tw_server_answer_judge(&p, 0, k, &v);
    if (r < 0) FUZZ_CHECK(whole_r < 0);  // a bad byte among the first 11 stays bad
    if (r == TW_ANSWER_ALERT) FUZZ_CHECK(whole_r == TW_ANSWER_ALERT);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  g_allowed = 0;  // a rule without preambles
  FuzzRule(data, size);
  g_allowed = kAllPreambles;  // one that allows both
  FuzzRule(data, size);
  FuzzDeeperChecks(data, size);
  return 0;
}
