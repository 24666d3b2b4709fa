// Test frames for the tc classifier fixtures: Ethernet (0-2 VLAN tags) or
// none (L3 packets), IPv4 or IPv6 (with extension headers, routing headers
// of types 0, 2 and 4), TCP, payload. Lengths are correct;
// checksums are left 0 (BPF_PROG_TEST_RUN does not verify them). Addresses
// must come from the benchmark/documentation ranges 198.18.0.0/15 and
// 2001:db8::/32, so a fixture can never describe a real host.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tlswall::bpftest {

using Bytes = std::vector<uint8_t>;

// TCP flag bits (byte 13 of the header).
constexpr uint8_t kFin = 0x01;
constexpr uint8_t kSyn = 0x02;
constexpr uint8_t kRst = 0x04;
constexpr uint8_t kPsh = 0x08;
constexpr uint8_t kAck = 0x10;

constexpr uint16_t kTpid8021Q = 0x8100;
constexpr uint16_t kTpid8021AD = 0x88A8;

struct VlanTag {
  uint16_t tpid = kTpid8021Q;
  uint16_t vid = 0;
};

// IPv6 extension headers the builder can emit (value = IPv6 next-header number).
enum class V6Ext : uint8_t {
  kHopByHop = 0,
  kRouting = 43,   // segment routing header with one segment (24 bytes)
  kFragment = 44,  // 8 bytes; offset/M flag from V6ExtHeader
  kEsp = 50,       // SPI + sequence; everything after it is opaque
  kAuth = 51,      // 24 bytes (12-byte ICV)
  kDestOpts = 60,  // 8 bytes of PadN
};

struct V6ExtHeader {
  V6Ext type = V6Ext::kDestOpts;
  uint16_t frag_offset = 0;  // fragment only: in 8-byte units (13 bits)
  bool more_fragments = false;
  // Routing only: when set, a segment routing header whose final segment is
  // this address and whose next segment (segments left 1) is the IPv6
  // destination field. When empty: one segment, segments left 0.
  std::string srh_final = {};
  // Routing only, when non-empty (overrides srh_final): a routing header of
  // type rh_type carrying these addresses in wire order, with
  // rh_segments_left. See routing_header().
  std::vector<std::string> rh_addresses = {};
  uint8_t rh_type = 4;
  uint8_t rh_segments_left = 0;
};

// A routing header (next header 43) of `type` whose address list is
// `addresses` in wire order (RFC 8200 4.4): Hdr Ext Len 2 * n, then
//   type 0 (RH0, RFC 2460): 4 reserved bytes, Address[1..n]; the last is
//          the final destination
//   type 2 (Mobile IPv6, RFC 6275): 4 reserved bytes, the home address
//          (the final destination; the IPv6 destination field holds the
//          care-of address)
//   type 4 (SRH, RFC 8754): Last Entry n-1, flags, tag, Segment List[0..n-1];
//          Segment List[0] is the final segment
//   other: 4 zero bytes, then the addresses.
V6ExtHeader routing_header(uint8_t type, std::vector<std::string> addresses, uint8_t segments_left);

// BPF_PROG_TEST_RUN of a tc program always treats data_in as an Ethernet
// frame: it sets skb->protocol from bytes 12-13 (eth_type_trans) and hands
// the program the data from byte 0. An L3 packet (PacketBuilder::l3()) is
// therefore seen by the L3 program exactly as on a tun/WireGuard device only
// when its bytes 12-13 happen to be the right ethertype: for IPv4 they are
// the first two bytes of the source address (so the source must be in
// 8.0.0.0/16: kL3Source4), for IPv6 bytes 4-5 of the source address
// (kL3Source6 = 2001:db8:86dd::10). test_run_protocol() is what test_run
// will put in skb->protocol (host order).
inline const char* const kL3Source4 = "8.0.0.10";
inline const char* const kL3Source6 = "2001:db8:86dd::10";
uint16_t test_run_protocol(const Bytes& data_in);

// One frame. Setters return *this so a frame reads as one expression:
//   PacketBuilder().ipv4("198.18.0.10", "198.18.130.1").tcp(40000, 443, kSyn, 1000).build()
// Setters throw std::invalid_argument on addresses outside the test ranges.
class PacketBuilder {
 public:
  PacketBuilder& vlan(uint16_t tpid, uint16_t vid);
  // No Ethernet header: the packet starts at the IP header, as on an L3
  // device (tun, WireGuard, ipip). Incompatible with vlan().
  PacketBuilder& l3();
  PacketBuilder& ipv4(const std::string& src, const std::string& dst);
  // Fragment fields of the IPv4 header (offset in 8-byte units).
  PacketBuilder& ipv4_fragment(bool more_fragments, uint16_t offset8);
  // Overrides the IHL nibble (the header written is still 20 bytes + options).
  PacketBuilder& ipv4_ihl(uint8_t ihl_words);
  // IPv4 options (padded to 4 bytes; IHL follows).
  PacketBuilder& ipv4_options(const Bytes& options);
  PacketBuilder& ipv6(const std::string& src, const std::string& dst);
  PacketBuilder& v6_ext(const V6ExtHeader& ext);
  PacketBuilder& v6_ext(V6Ext type);
  // Overrides the IP length field (IPv4 total length / IPv6 payload length),
  // e.g. to describe a GSO super-packet or BIG TCP (0).
  PacketBuilder& ip_length(uint32_t value);
  PacketBuilder& tcp(uint16_t sport, uint16_t dport, uint8_t flags, uint32_t seq, uint32_t ack = 0);
  // UDP instead of TCP (length set, checksum 0); the payload follows it.
  PacketBuilder& udp(uint16_t sport, uint16_t dport);
  // TCP options (padded to 4 bytes; data offset follows).
  PacketBuilder& tcp_options(const Bytes& options);
  PacketBuilder& payload(const Bytes& bytes);
  // Ethernet padding: zero bytes after the IP packet up to `frame_size`.
  PacketBuilder& pad_to(size_t frame_size);

  Bytes build() const;

 private:
  Bytes l4() const;
  std::vector<VlanTag> vlans_;
  bool l3_ = false;
  bool src_l3_only_ = false;  // source in 8.0.0.0/16 (kL3Source4)
  int family_ = 0;
  uint8_t src_[16] = {};
  uint8_t dst_[16] = {};
  bool v4_more_fragments_ = false;
  uint16_t v4_frag_offset_ = 0;
  std::optional<uint8_t> v4_ihl_;
  Bytes v4_options_;
  size_t pad_to_ = 0;
  std::vector<V6ExtHeader> v6_exts_;
  std::optional<uint32_t> ip_length_;
  bool has_tcp_ = false;
  bool has_udp_ = false;
  uint16_t sport_ = 0, dport_ = 0;
  uint8_t flags_ = 0;
  uint32_t seq_ = 0, ack_ = 0;
  Bytes tcp_options_;
  Bytes payload_;
};

// A TCP connection's (or UDP flow's) fixed part: addresses, ports and encapsulation. One per
// fixture case, so every case has its own 5-tuple.
struct FlowSpec {
  int family = 4;
  std::string src;
  std::string dst;
  uint16_t sport = 0;
  uint16_t dport = 0;
  std::vector<VlanTag> vlans;
  std::vector<V6ExtHeader> v6_exts;
  Bytes v4_options = {};
  size_t pad_to = 0;          // Ethernet padding up to this frame size
  bool l3 = false;            // packets start at the IP header (PacketBuilder::l3())
  uint32_t ack = 0x50000001;  // acknowledgement number of segments with kAck

  // A frame of this flow.
  Bytes segment(uint8_t flags, uint32_t seq, const Bytes& payload = {}) const;
  // A UDP datagram of this 5-tuple (proto 17) carrying `payload`.
  Bytes datagram(const Bytes& payload) const;
  // The connection's destination: `dst`, unless an IPv6 routing header
  // with segments left names the final one (routing_header()).
  std::string final_dst() const;

 private:
  PacketBuilder ip_part() const;  // the encapsulation and IP header of this flow
};

// A plain flow (no tags, no extension headers, no options).
FlowSpec make_flow(int family, const std::string& src, const std::string& dst, uint16_t sport,
                   uint16_t dport);

// ---- TLS first bytes ----

struct HelloSpec {
  uint16_t record_version = 0x0301;  // what clients put in the first record
  uint16_t client_version = 0x0303;  // legacy_version
  bool tls13 = false;                // session id + supported_versions/key_share
  std::string server_name = "svc.example";
};

// A complete, well-formed TLS record carrying a ClientHello.
Bytes client_hello(const HelloSpec& spec = {});

// A whole TLS record of `total` bytes (header included): type, version
// 0x0303, a body of `fill` bytes.
Bytes tls_record(uint8_t type, size_t total, uint8_t fill = 0x5c);

// The server's first flight as TLS servers send it: a handshake record with
// a ServerHello choosing `version` (legacy_version 0x0303 and a
// supported_versions extension after a key_share for TLS 1.3; the version
// itself as legacy_version and no supported_versions below), then
// `trailing` more bytes of records (change_cipher_spec, application data).
struct ServerHelloSpec {
  uint16_t version = 0x0304;
  size_t key_share_bytes = 32;  // x25519; 1120 for X25519MLKEM768
  size_t trailing = 0;
};
Bytes server_hello(const ServerHelloSpec& spec = {});
// An alert record (a server refusing the handshake): fatal, `description`.
Bytes tls_alert(uint8_t description);

Bytes ascii(const std::string& s);

// A client's first QUIC datagram (RFC 9000 17.2.2): a long-header Initial
// of `version` (1, or 0x6b3343cf for QUIC v2, whose Initial type bits are
// 0b01: RFC 9369 3.2) with an 8-byte DCID, padded to `size` bytes. The
// protected part is filler: the classifier judges only the header.
Bytes quic_initial(uint32_t version = 1, size_t size = 1200);

// Plaintext preambles (bpf/lib/preamble.h) as real clients send them:
// libpq's SSLRequest; the MariaDB client's SSL request (length 32, sequence
// id 1, CLIENT_SSL and CLIENT_PROTOCOL_41 in byte 5, max packet, charset,
// filler and MariaDB's extended capabilities); psql sslmode=disable's
// StartupMessage (user and database "pg").
Bytes ssl_request();
Bytes mysql_ssl_request();
Bytes pg_startup_message();
Bytes concat(const Bytes& a, const Bytes& b);
// bytes[from, from+len) (clamped).
Bytes slice(const Bytes& b, size_t from, size_t len = SIZE_MAX);

}  // namespace tlswall::bpftest
