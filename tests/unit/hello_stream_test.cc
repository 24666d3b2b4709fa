// bpf/lib/hello_stream.h built with the project's C++ compiler and
// warnings: the classifier's reassembly of the first bytes, driven with
// segments from a buffer. (The hello fuzzer, tests/fuzz/, explores it; the
// BPF fixtures, tests/bpf/, run the same code in the kernel.)
#include <gtest/gtest.h>

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

}  // namespace
