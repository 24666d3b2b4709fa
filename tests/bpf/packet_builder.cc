#include "tests/bpf/packet_builder.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace tlswall::bpftest {
namespace {

constexpr uint16_t kEthIPv4 = 0x0800;
constexpr uint16_t kEthIPv6 = 0x86DD;
constexpr uint8_t kIpProtoTcp = 6;
constexpr uint8_t kIpProtoUdp = 17;

void put16(Bytes& b, uint16_t v) {
  b.push_back(static_cast<uint8_t>(v >> 8));
  b.push_back(static_cast<uint8_t>(v));
}

void put24(Bytes& b, uint32_t v) {
  b.push_back(static_cast<uint8_t>(v >> 16));
  b.push_back(static_cast<uint8_t>(v >> 8));
  b.push_back(static_cast<uint8_t>(v));
}

void put32(Bytes& b, uint32_t v) {
  put16(b, static_cast<uint16_t>(v >> 16));
  put16(b, static_cast<uint16_t>(v));
}

void append(Bytes& b, const Bytes& more) { b.insert(b.end(), more.begin(), more.end()); }

// Parses `text` into `out`; only 198.18.0.0/15 and 2001:db8::/32, and
// 8.0.0.0/16 when `l3_source` is set (see kL3Source4).
void parse_test_address(int family, const std::string& text, uint8_t out[16],
                        bool* l3_source = nullptr) {
  std::memset(out, 0, 16);
  if (family == 4) {
    if (inet_pton(AF_INET, text.c_str(), out) != 1) {
      throw std::invalid_argument("not an IPv4 address: " + text);
    }
    if (l3_source && out[0] == 8 && out[1] == 0) {
      *l3_source = true;
      return;
    }
    if (out[0] != 198 || (out[1] & 0xfe) != 18) {
      throw std::invalid_argument("test IPv4 addresses must be in 198.18.0.0/15: " + text);
    }
    return;
  }
  if (inet_pton(AF_INET6, text.c_str(), out) != 1) {
    throw std::invalid_argument("not an IPv6 address: " + text);
  }
  if (out[0] != 0x20 || out[1] != 0x01 || out[2] != 0x0d || out[3] != 0xb8) {
    throw std::invalid_argument("test IPv6 addresses must be in 2001:db8::/32: " + text);
  }
}

uint16_t ipv4_header_checksum(const uint8_t* h, size_t len) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < len; i += 2) sum += static_cast<uint32_t>(h[i] << 8 | h[i + 1]);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

// The bytes of one extension header; `next` is the header after it.
Bytes v6_ext_bytes(const V6ExtHeader& e, uint8_t next, const uint8_t dst[16]) {
  Bytes b;
  switch (e.type) {
    case V6Ext::kHopByHop:
    case V6Ext::kDestOpts:
      // Hdr Ext Len 0 (8 bytes), one PadN option filling the rest.
      b = {next, 0, 0x01, 0x04, 0, 0, 0, 0};
      break;
    case V6Ext::kRouting: {
      if (!e.rh_addresses.empty()) {
        const size_t n = e.rh_addresses.size();
        b = {next, static_cast<uint8_t>(2 * n), e.rh_type, e.rh_segments_left, 0, 0, 0, 0};
        if (e.rh_type == 4) b[4] = static_cast<uint8_t>(n - 1);  // SRH Last Entry
        for (const std::string& a : e.rh_addresses) {
          uint8_t addr[16];
          parse_test_address(6, a, addr);
          b.insert(b.end(), addr, addr + 16);
        }
        break;
      }
      if (e.srh_final.empty()) {
        // Segment routing header (type 4), one segment, none left: 8 + 16 bytes.
        b = {next, 2, 4, 0, 0, 0, 0, 0};
        const Bytes seg = {0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01};
        append(b, seg);
        break;
      }
      // RFC 8754: Segment List[0] is the final segment, Segment List[1] the
      // next one, which is what the IPv6 destination field holds.
      uint8_t final_seg[16];
      parse_test_address(6, e.srh_final, final_seg);
      b = {next, 4, 4, 1, 1, 0, 0, 0};
      b.insert(b.end(), final_seg, final_seg + 16);
      b.insert(b.end(), dst, dst + 16);
      break;
    }
    case V6Ext::kFragment: {
      b = {next, 0};
      put16(b, static_cast<uint16_t>((e.frag_offset & 0x1fff) << 3 | (e.more_fragments ? 1 : 0)));
      put32(b, 0x7477beef);  // identification
      break;
    }
    case V6Ext::kAuth:
      // Payload Len 4: (4 + 2) * 4 = 24 bytes; SPI, sequence, 12-byte ICV.
      b = {next, 4, 0, 0};
      put32(b, 0x1000);
      put32(b, 1);
      b.resize(24, 0xa5);
      break;
    case V6Ext::kEsp:
      put32(b, 0x2000);  // SPI
      put32(b, 1);       // sequence; the rest is ciphertext
      break;
  }
  return b;
}

}  // namespace

V6ExtHeader routing_header(uint8_t type, std::vector<std::string> addresses,
                           uint8_t segments_left) {
  if (addresses.empty()) throw std::invalid_argument("routing_header: no addresses");
  V6ExtHeader e;
  e.type = V6Ext::kRouting;
  e.rh_type = type;
  e.rh_addresses = std::move(addresses);
  e.rh_segments_left = segments_left;
  return e;
}

uint16_t test_run_protocol(const Bytes& data_in) {
  if (data_in.size() < 14) throw std::invalid_argument("test_run needs at least 14 bytes");
  return static_cast<uint16_t>(data_in[12] << 8 | data_in[13]);
}

PacketBuilder& PacketBuilder::vlan(uint16_t tpid, uint16_t vid) {
  vlans_.push_back({tpid, vid});
  return *this;
}

PacketBuilder& PacketBuilder::l3() {
  l3_ = true;
  return *this;
}

PacketBuilder& PacketBuilder::ipv4(const std::string& src, const std::string& dst) {
  family_ = 4;
  src_l3_only_ = false;
  parse_test_address(4, src, src_, &src_l3_only_);
  parse_test_address(4, dst, dst_);
  return *this;
}

PacketBuilder& PacketBuilder::ipv4_fragment(bool more_fragments, uint16_t offset8) {
  v4_more_fragments_ = more_fragments;
  v4_frag_offset_ = offset8;
  return *this;
}

PacketBuilder& PacketBuilder::ipv4_ihl(uint8_t ihl_words) {
  v4_ihl_ = ihl_words;
  return *this;
}

PacketBuilder& PacketBuilder::ipv4_options(const Bytes& options) {
  v4_options_ = options;
  while (v4_options_.size() % 4) v4_options_.push_back(0);  // EOL padding
  return *this;
}

PacketBuilder& PacketBuilder::pad_to(size_t frame_size) {
  pad_to_ = frame_size;
  return *this;
}

PacketBuilder& PacketBuilder::ipv6(const std::string& src, const std::string& dst) {
  family_ = 6;
  src_l3_only_ = false;
  parse_test_address(6, src, src_);
  parse_test_address(6, dst, dst_);
  return *this;
}

PacketBuilder& PacketBuilder::v6_ext(const V6ExtHeader& ext) {
  v6_exts_.push_back(ext);
  return *this;
}

PacketBuilder& PacketBuilder::v6_ext(V6Ext type) { return v6_ext(V6ExtHeader{type, 0, false}); }

PacketBuilder& PacketBuilder::ip_length(uint32_t value) {
  ip_length_ = value;
  return *this;
}

PacketBuilder& PacketBuilder::tcp(uint16_t sport, uint16_t dport, uint8_t flags, uint32_t seq,
                                  uint32_t ack) {
  has_tcp_ = true;
  sport_ = sport;
  dport_ = dport;
  flags_ = flags;
  seq_ = seq;
  ack_ = ack;
  return *this;
}

PacketBuilder& PacketBuilder::udp(uint16_t sport, uint16_t dport) {
  has_udp_ = true;
  sport_ = sport;
  dport_ = dport;
  return *this;
}

PacketBuilder& PacketBuilder::tcp_options(const Bytes& options) {
  tcp_options_ = options;
  while (tcp_options_.size() % 4) tcp_options_.push_back(0);  // EOL padding
  return *this;
}

PacketBuilder& PacketBuilder::payload(const Bytes& bytes) {
  payload_ = bytes;
  return *this;
}

Bytes PacketBuilder::l4() const {
  Bytes b;
  if (has_udp_) {
    put16(b, sport_);
    put16(b, dport_);
    put16(b, static_cast<uint16_t>(8 + payload_.size()));
    put16(b, 0);  // checksum (not verified by test_run)
  } else if (has_tcp_) {
    const size_t hlen = 20 + tcp_options_.size();
    put16(b, sport_);
    put16(b, dport_);
    put32(b, seq_);
    put32(b, ack_);
    b.push_back(static_cast<uint8_t>((hlen / 4) << 4));
    b.push_back(flags_);
    put16(b, 64240);  // window
    put16(b, 0);      // checksum (not verified by test_run)
    put16(b, 0);      // urgent pointer
    append(b, tcp_options_);
  }
  append(b, payload_);
  return b;
}

Bytes PacketBuilder::build() const {
  if (family_ != 4 && family_ != 6) throw std::logic_error("PacketBuilder: no IP header set");
  if (src_l3_only_ && !l3_) {
    throw std::invalid_argument(
        "the 8.0.0.0/16 source (kL3Source4) is for l3() test_run packets only");
  }
  if (l3_ && !vlans_.empty())
    throw std::logic_error("PacketBuilder: l3() packets have no VLAN tags");
  Bytes f;
  if (!l3_) {
    f = {0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01};  // dst, src MAC
    for (const VlanTag& t : vlans_) {
      put16(f, t.tpid);
      put16(f, t.vid & 0x0fff);
    }
    put16(f, family_ == 4 ? kEthIPv4 : kEthIPv6);
  }

  const Bytes l4bytes = l4();
  if (family_ == 4) {
    const size_t ip_off = f.size();
    const size_t hlen = 20 + v4_options_.size();
    const uint8_t ihl = v4_ihl_.value_or(static_cast<uint8_t>(hlen / 4));
    f.push_back(static_cast<uint8_t>(0x40 | (ihl & 0x0f)));  // version 4, IHL
    f.push_back(0);                                          // TOS
    put16(f, static_cast<uint16_t>(ip_length_.value_or(hlen + l4bytes.size())));
    put16(f, 0x1234);  // identification
    uint16_t frag = static_cast<uint16_t>(v4_frag_offset_ & 0x1fff);
    if (v4_more_fragments_) frag |= 0x2000;
    if (!v4_more_fragments_ && v4_frag_offset_ == 0) frag |= 0x4000;  // DF, as TCP sends
    put16(f, frag);
    f.push_back(64);  // TTL
    f.push_back(has_udp_ ? kIpProtoUdp : kIpProtoTcp);
    put16(f, 0);  // checksum, filled below
    f.insert(f.end(), src_, src_ + 4);
    f.insert(f.end(), dst_, dst_ + 4);
    append(f, v4_options_);
    const uint16_t csum = ipv4_header_checksum(&f[ip_off], hlen);
    f[ip_off + 10] = static_cast<uint8_t>(csum >> 8);
    f[ip_off + 11] = static_cast<uint8_t>(csum);
    append(f, l4bytes);
    if (f.size() < pad_to_) f.resize(pad_to_, 0);
    return f;
  }

  const uint8_t l4_proto = has_udp_ ? kIpProtoUdp : kIpProtoTcp;
  Bytes exts;
  for (size_t i = 0; i < v6_exts_.size(); ++i) {
    const uint8_t next =
        i + 1 < v6_exts_.size() ? static_cast<uint8_t>(v6_exts_[i + 1].type) : l4_proto;
    append(exts, v6_ext_bytes(v6_exts_[i], next, dst_));
  }
  const uint8_t first = v6_exts_.empty() ? l4_proto : static_cast<uint8_t>(v6_exts_[0].type);
  put32(f, 0x60000000);  // version 6, no traffic class, no flow label
  put16(f, static_cast<uint16_t>(ip_length_.value_or(exts.size() + l4bytes.size())));
  f.push_back(first);
  f.push_back(64);  // hop limit
  f.insert(f.end(), src_, src_ + 16);
  f.insert(f.end(), dst_, dst_ + 16);
  append(f, exts);
  append(f, l4bytes);
  if (f.size() < pad_to_) f.resize(pad_to_, 0);
  return f;
}

Bytes FlowSpec::segment(uint8_t flags, uint32_t seq, const Bytes& payload) const {
  PacketBuilder b = ip_part();
  b.tcp(sport, dport, flags, seq, (flags & kAck) ? ack : 0u);
  if ((flags & kSyn) && !(flags & kAck)) {
    b.tcp_options({0x02, 0x04, 0x05, 0xb4, 0x04, 0x02});  // MSS 1460, SACK permitted
  }
  b.payload(payload).pad_to(pad_to);
  return b.build();
}

Bytes FlowSpec::datagram(const Bytes& payload) const {
  PacketBuilder b = ip_part();
  b.udp(sport, dport).payload(payload).pad_to(pad_to);
  return b.build();
}

PacketBuilder FlowSpec::ip_part() const {
  PacketBuilder b;
  if (l3) b.l3();
  for (const VlanTag& t : vlans) b.vlan(t.tpid, t.vid);
  if (family == 4) {
    b.ipv4(src, dst).ipv4_options(v4_options);
  } else {
    b.ipv6(src, dst);
    for (const V6ExtHeader& e : v6_exts) b.v6_ext(e);
  }
  return b;
}

std::string FlowSpec::final_dst() const {
  if (family != 6) return dst;
  std::string final_dst = dst;
  for (const V6ExtHeader& e : v6_exts) {
    if (e.type != V6Ext::kRouting) continue;
    if (e.rh_addresses.empty()) {
      if (!e.srh_final.empty()) final_dst = e.srh_final;  // SRH, segments left 1
      continue;
    }
    if (e.rh_segments_left == 0) continue;  // the destination field is final
    switch (e.rh_type) {
      case 0:
        final_dst = e.rh_addresses.back();
        break;
      case 2:
      case 4:
        final_dst = e.rh_addresses.front();
        break;
      default:
        break;  // a type whose addresses the classifier does not interpret
    }
  }
  return final_dst;
}

FlowSpec make_flow(int family, const std::string& src, const std::string& dst, uint16_t sport,
                   uint16_t dport) {
  FlowSpec f;
  f.family = family;
  f.src = src;
  f.dst = dst;
  f.sport = sport;
  f.dport = dport;
  return f;
}

Bytes client_hello(const HelloSpec& spec) {
  Bytes body;
  put16(body, spec.client_version);
  for (int i = 0; i < 32; ++i) body.push_back(static_cast<uint8_t>(0x5a ^ (i * 7)));  // random
  if (spec.tls13) {
    body.push_back(32);  // legacy_session_id (middlebox compatibility mode)
    for (int i = 0; i < 32; ++i) body.push_back(static_cast<uint8_t>(0xc3 + i));
  } else {
    body.push_back(0);
  }
  const Bytes suites13 = {0x13, 0x01, 0x13, 0x02, 0x13, 0x03};
  const Bytes suites12 = {0xc0, 0x2b, 0xc0, 0x2f, 0xc0, 0x2c, 0xc0, 0x30, 0x00, 0x9c, 0x00, 0x2f};
  Bytes suites = spec.tls13 ? concat(suites13, suites12) : suites12;
  put16(body, static_cast<uint16_t>(suites.size()));
  append(body, suites);
  body.push_back(1);  // compression methods: null
  body.push_back(0);

  Bytes ext;
  {  // server_name
    Bytes sni;
    put16(sni, static_cast<uint16_t>(spec.server_name.size() + 3));
    sni.push_back(0);  // host_name
    put16(sni, static_cast<uint16_t>(spec.server_name.size()));
    append(sni, ascii(spec.server_name));
    put16(ext, 0x0000);
    put16(ext, static_cast<uint16_t>(sni.size()));
    append(ext, sni);
  }
  {  // supported_groups: x25519, secp256r1
    const Bytes g = {0x00, 0x04, 0x00, 0x1d, 0x00, 0x17};
    put16(ext, 0x000a);
    put16(ext, static_cast<uint16_t>(g.size()));
    append(ext, g);
  }
  {  // signature_algorithms
    const Bytes s = {0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01};
    put16(ext, 0x000d);
    put16(ext, static_cast<uint16_t>(s.size()));
    append(ext, s);
  }
  if (spec.tls13) {
    const Bytes sv = {0x04, 0x03, 0x04, 0x03, 0x03};  // TLS 1.3, TLS 1.2
    put16(ext, 0x002b);
    put16(ext, static_cast<uint16_t>(sv.size()));
    append(ext, sv);
    Bytes ks;  // key_share: one x25519 share
    put16(ks, 36);
    put16(ks, 0x001d);
    put16(ks, 32);
    for (int i = 0; i < 32; ++i) ks.push_back(static_cast<uint8_t>(0x11 * (i % 15)));
    put16(ext, 0x0033);
    put16(ext, static_cast<uint16_t>(ks.size()));
    append(ext, ks);
  }
  put16(body, static_cast<uint16_t>(ext.size()));
  append(body, ext);

  Bytes hs = {0x01};
  put24(hs, static_cast<uint32_t>(body.size()));
  append(hs, body);

  Bytes rec = {0x16};
  put16(rec, spec.record_version);
  put16(rec, static_cast<uint16_t>(hs.size()));
  append(rec, hs);
  return rec;
}

Bytes tls_record(uint8_t type, size_t total, uint8_t fill) {
  Bytes rec = {type};
  put16(rec, 0x0303);
  put16(rec, static_cast<uint16_t>(total - 5));
  rec.resize(total, fill);
  return rec;
}

Bytes server_hello(const ServerHelloSpec& spec) {
  const bool tls13 = spec.version >= 0x0304;
  Bytes body;
  put16(body, tls13 ? 0x0303 : spec.version);
  for (int i = 0; i < 32; ++i) body.push_back(static_cast<uint8_t>(0xa5 ^ (i * 3)));  // random
  body.push_back(32);  // legacy_session_id_echo
  for (int i = 0; i < 32; ++i) body.push_back(static_cast<uint8_t>(0xc3 + i));
  append(body, tls13 ? Bytes{0x13, 0x01} : Bytes{0xc0, 0x2f});
  body.push_back(0);  // compression: null
  Bytes ext;
  if (tls13) {
    Bytes ks;  // key_share: the server's one share
    put16(ks, 0x001d);
    put16(ks, static_cast<uint16_t>(spec.key_share_bytes));
    for (size_t i = 0; i < spec.key_share_bytes; ++i) ks.push_back(static_cast<uint8_t>(i));
    put16(ext, 0x0033);
    put16(ext, static_cast<uint16_t>(ks.size()));
    append(ext, ks);
    put16(ext, 0x002b);  // supported_versions: the chosen one
    put16(ext, 2);
    put16(ext, spec.version);
  } else {
    put16(ext, 0xff01);  // renegotiation_info
    put16(ext, 1);
    ext.push_back(0);
    put16(ext, 0x0017);  // extended_master_secret
    put16(ext, 0);
  }
  put16(body, static_cast<uint16_t>(ext.size()));
  append(body, ext);
  Bytes hs = {0x02};
  put24(hs, static_cast<uint32_t>(body.size()));
  append(hs, body);
  Bytes rec = {0x16};
  put16(rec, 0x0303);
  put16(rec, static_cast<uint16_t>(hs.size()));
  append(rec, hs);
  if (spec.trailing) {
    append(rec, tls_record(20, 6, 1));
    if (spec.trailing > 6) append(rec, tls_record(23, spec.trailing - 6));
  }
  return rec;
}

Bytes tls_alert(uint8_t description) {
  Bytes rec = {0x15, 0x03, 0x03, 0x00, 0x02, 0x02};
  rec.push_back(description);
  return rec;
}

Bytes ascii(const std::string& s) { return Bytes(s.begin(), s.end()); }

Bytes quic_initial(uint32_t version, size_t size) {
  const uint8_t type = version == 0x6b3343cfu ? 1 : 0;          // Initial: v2 0b01, v1 0b00
  Bytes b = {static_cast<uint8_t>(0xc0 | (type << 4) | 0x03)};  // packet number length 4
  put32(b, version);
  b.push_back(8);  // DCID length
  for (uint8_t i = 0; i < 8; ++i) b.push_back(static_cast<uint8_t>(0xa0 + i));
  b.push_back(0);  // SCID length
  b.push_back(0);  // token length
  const size_t rest = size > b.size() + 2 ? size - b.size() - 2 : 0;
  put16(b, static_cast<uint16_t>(0x4000 | rest));  // 2-byte varint length
  b.resize(std::max(b.size(), size), 0x5a);        // packet number + protected payload
  return b;
}

Bytes ssl_request() { return {0x00, 0x00, 0x00, 0x08, 0x04, 0xd2, 0x16, 0x2f}; }

Bytes mysql_ssl_request() {
  Bytes b = {0x20, 0x00, 0x00, 0x01, 0x0e, 0xaa, 0xbf, 0x01, 0x00, 0x00, 0x00, 0x01, 0x2d};
  b.resize(32, 0x00);
  append(b, {0x1d, 0x00, 0x00, 0x00});
  return b;
}

Bytes pg_startup_message() {
  Bytes body = {0x00, 0x03, 0x00, 0x00};  // protocol 3.0
  append(body, ascii(std::string("user\0pg\0database\0pg\0\0", 21)));
  Bytes b = {0x00, 0x00, 0x00, static_cast<uint8_t>(body.size() + 4)};
  append(b, body);
  return b;
}

Bytes concat(const Bytes& a, const Bytes& b) {
  Bytes out = a;
  append(out, b);
  return out;
}

Bytes slice(const Bytes& b, size_t from, size_t len) {
  if (from >= b.size()) return {};
  const size_t n = std::min(len, b.size() - from);
  return Bytes(b.begin() + static_cast<std::ptrdiff_t>(from),
               b.begin() + static_cast<std::ptrdiff_t>(from + n));
}

}  // namespace tlswall::bpftest
