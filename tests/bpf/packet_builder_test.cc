// The packet builder itself: a wrong length or offset here would make every
// fixture test something other than it claims. No kernel needed.
#include "tests/bpf/packet_builder.h"

#include <gtest/gtest.h>

#include <cstring>
#include <stdexcept>

namespace tlswall::bpftest {
namespace {

uint16_t be16(const Bytes& b, size_t at) { return static_cast<uint16_t>(b[at] << 8 | b[at + 1]); }
uint32_t be32(const Bytes& b, size_t at) {
  return static_cast<uint32_t>(be16(b, at)) << 16 | be16(b, at + 2);
}

TEST(PacketBuilderTest, Ipv4TcpLayout) {
  const Bytes f = PacketBuilder()
                      .ipv4("198.18.0.10", "198.18.130.20")
                      .tcp(40000, 443, kAck | kPsh, 0x01020304)
                      .payload({1, 2, 3})
                      .build();
  ASSERT_EQ(f.size(), 14u + 20 + 20 + 3);
  EXPECT_EQ(be16(f, 12), 0x0800);
  EXPECT_EQ(f[14], 0x45);
  EXPECT_EQ(be16(f, 16), 20 + 20 + 3);  // total length
  EXPECT_EQ(be16(f, 20), 0x4000);       // DF, not a fragment
  EXPECT_EQ(f[23], 6);
  EXPECT_EQ(be32(f, 30), 0xc6128214u);  // 198.18.130.20
  EXPECT_EQ(be16(f, 34), 40000);
  EXPECT_EQ(be16(f, 36), 443);
  EXPECT_EQ(be32(f, 38), 0x01020304u);
  EXPECT_EQ(f[46], 0x50);  // data offset 5
  EXPECT_EQ(f[47], kAck | kPsh);
  EXPECT_EQ(f[54], 1);
  // The IPv4 header checksum verifies.
  uint32_t sum = 0;
  for (size_t i = 14; i < 34; i += 2) sum += be16(f, i);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  EXPECT_EQ(sum, 0xffffu);
}

TEST(PacketBuilderTest, VlanTagsAndFragmentFields) {
  const Bytes f = PacketBuilder()
                      .vlan(kTpid8021AD, 20)
                      .vlan(kTpid8021Q, 100)
                      .ipv4("198.18.0.10", "198.18.130.20")
                      .ipv4_fragment(true, 185)
                      .tcp(1, 2, kSyn, 0)
                      .build();
  EXPECT_EQ(be16(f, 12), kTpid8021AD);
  EXPECT_EQ(be16(f, 14), 20);
  EXPECT_EQ(be16(f, 16), kTpid8021Q);
  EXPECT_EQ(be16(f, 18), 100);
  EXPECT_EQ(be16(f, 20), 0x0800);
  EXPECT_EQ(be16(f, 22 + 6), 0x2000 | 185);
}

TEST(PacketBuilderTest, Ipv6ExtensionChain) {
  const Bytes f = PacketBuilder()
                      .ipv6("2001:db8:1::10", "2001:db8:2::20")
                      .v6_ext(V6Ext::kHopByHop)
                      .v6_ext(V6Ext::kRouting)
                      .v6_ext({V6Ext::kFragment, 3, true})
                      .v6_ext(V6Ext::kAuth)
                      .v6_ext(V6Ext::kDestOpts)
                      .tcp(1, 443, kSyn, 0)
                      .build();
  const size_t ip = 14, ext = ip + 40;
  EXPECT_EQ(f[ip] >> 4, 6);
  EXPECT_EQ(f[ip + 6], 0);                               // first: hop-by-hop
  EXPECT_EQ(be16(f, ip + 4), 8 + 24 + 8 + 24 + 8 + 20);  // payload length
  EXPECT_EQ(f[ext], 43);                                 // HBH -> routing
  EXPECT_EQ(f[ext + 8], 44);                             // routing (24) -> fragment
  EXPECT_EQ(f[ext + 8 + 1], 2);
  EXPECT_EQ(f[ext + 32], 51);                // fragment -> AH
  EXPECT_EQ(be16(f, ext + 34), 3 << 3 | 1);  // offset 3, M
  EXPECT_EQ(f[ext + 40], 60);                // AH (24) -> dest opts
  EXPECT_EQ(f[ext + 41], 4);
  EXPECT_EQ(f[ext + 64], 6);  // dest opts -> TCP
  EXPECT_EQ(be16(f, ext + 72 + 2), 443);
}

TEST(PacketBuilderTest, RoutingHeaderTypes) {
  const size_t ext = 14 + 40;
  const uint8_t remote[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20};
  // RH0: two addresses, 4 reserved bytes, the final destination last.
  Bytes f = PacketBuilder()
                .ipv6("2001:db8:1::10", "2001:db8:9::40")
                .v6_ext(routing_header(0, {"2001:db8:9::41", "2001:db8:2::20"}, 2))
                .tcp(1, 443, kSyn, 0)
                .build();
  EXPECT_EQ(f[14 + 6], 43);
  EXPECT_EQ(f[ext], 6);      // -> TCP
  EXPECT_EQ(f[ext + 1], 4);  // (4 + 1) * 8 = 40 bytes
  EXPECT_EQ(f[ext + 2], 0);  // type 0
  EXPECT_EQ(f[ext + 3], 2);  // segments left
  EXPECT_EQ(be32(f, ext + 4), 0u);
  EXPECT_EQ(0, std::memcmp(&f[ext + 8 + 16], remote, 16));
  EXPECT_EQ(be16(f, ext + 40 + 2), 443);
  EXPECT_EQ(be16(f, 14 + 4), 40 + 20);  // payload length

  // Type 2: the home address at offset 8, Hdr Ext Len 2.
  f = PacketBuilder()
          .ipv6("2001:db8:1::10", "2001:db8:9::40")
          .v6_ext(routing_header(2, {"2001:db8:2::20"}, 1))
          .tcp(1, 443, kSyn, 0)
          .build();
  EXPECT_EQ(f[ext + 1], 2);
  EXPECT_EQ(f[ext + 2], 2);
  EXPECT_EQ(f[ext + 3], 1);
  EXPECT_EQ(0, std::memcmp(&f[ext + 8], remote, 16));

  // SRH: Last Entry = n - 1, Segment List[0] first.
  f = PacketBuilder()
          .ipv6("2001:db8:1::10", "2001:db8:2::20")
          .v6_ext(routing_header(4, {"2001:db8:2::20"}, 0))
          .tcp(1, 443, kSyn, 0)
          .build();
  EXPECT_EQ(f[ext + 2], 4);
  EXPECT_EQ(f[ext + 3], 0);
  EXPECT_EQ(f[ext + 4], 0);
  EXPECT_EQ(0, std::memcmp(&f[ext + 8], remote, 16));
}

TEST(PacketBuilderTest, FinalDestination) {
  FlowSpec f = make_flow(6, "2001:db8:1::10", "2001:db8:9::40", 1, 443);
  EXPECT_EQ(f.final_dst(), "2001:db8:9::40");
  f.v6_exts = {{V6Ext::kRouting, 0, false, "2001:db8:2::20"}};
  EXPECT_EQ(f.final_dst(), "2001:db8:2::20");
  f.v6_exts = {routing_header(0, {"2001:db8:9::41", "2001:db8:2::20"}, 1)};
  EXPECT_EQ(f.final_dst(), "2001:db8:2::20");
  f.v6_exts = {routing_header(2, {"2001:db8:2::20"}, 1)};
  EXPECT_EQ(f.final_dst(), "2001:db8:2::20");
  f.v6_exts = {routing_header(4, {"2001:db8:2::20"}, 0)};
  EXPECT_EQ(f.final_dst(), "2001:db8:9::40") << "no segments left: the field is final";
  f.v6_exts = {routing_header(3, {"2001:db8:2::20"}, 1)};
  EXPECT_EQ(f.final_dst(), "2001:db8:9::40") << "unknown type";
}

TEST(PacketBuilderTest, L3PacketsStartAtTheIpHeader) {
  const Bytes v4 =
      PacketBuilder().l3().ipv4(kL3Source4, "198.18.130.20").tcp(40000, 443, kSyn, 7).build();
  ASSERT_EQ(v4.size(), 20u + 20);
  EXPECT_EQ(v4[0], 0x45);
  EXPECT_EQ(be32(v4, 12), 0x0800000au);  // 8.0.0.10
  EXPECT_EQ(test_run_protocol(v4), 0x0800) << "test_run must set skb->protocol to IPv4";
  const Bytes v6 =
      PacketBuilder().l3().ipv6(kL3Source6, "2001:db8:2::20").tcp(40000, 443, kSyn, 7).build();
  ASSERT_EQ(v6.size(), 40u + 20);
  EXPECT_EQ(v6[0] >> 4, 6);
  EXPECT_EQ(test_run_protocol(v6), 0x86DD) << "test_run must set skb->protocol to IPv6";
  // The L3 source exception is for l3() packets only.
  EXPECT_THROW(PacketBuilder().ipv4(kL3Source4, "198.18.130.20").tcp(1, 2, kSyn, 0).build(),
               std::invalid_argument);
  EXPECT_THROW(PacketBuilder().l3().ipv4("198.18.0.1", "8.0.0.10"), std::invalid_argument)
      << "only as the source";
  EXPECT_THROW(PacketBuilder().l3().vlan(kTpid8021Q, 1).ipv4("198.18.0.1", "198.18.0.2").build(),
               std::logic_error);
}

TEST(PacketBuilderTest, OnlyTestAddresses) {
  EXPECT_THROW(PacketBuilder().ipv4("10.0.0.1", "198.18.0.1"), std::invalid_argument);
  EXPECT_THROW(PacketBuilder().ipv4("198.18.0.1", "198.20.0.1"), std::invalid_argument);
  EXPECT_THROW(PacketBuilder().ipv6("2001:db8::1", "2001:db9::1"), std::invalid_argument);
  EXPECT_NO_THROW(PacketBuilder().ipv4("198.19.255.255", "198.18.0.0"));
}

TEST(PacketBuilderTest, ClientHelloLengthsAreConsistent) {
  for (bool tls13 : {false, true}) {
    const Bytes h = client_hello({0x0301, 0x0303, tls13, "svc.example"});
    ASSERT_GT(h.size(), 50u);
    EXPECT_EQ(h[0], 0x16);
    EXPECT_EQ(be16(h, 3), h.size() - 5);  // record length
    EXPECT_EQ(h[5], 1);
    EXPECT_EQ(static_cast<size_t>(h[6] << 16 | be16(h, 7)), h.size() - 9);  // handshake length
    EXPECT_EQ(be16(h, 9), 0x0303);
  }
}

}  // namespace
}  // namespace tlswall::bpftest
