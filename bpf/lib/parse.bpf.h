/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Packet parsing for the classifiers: Ethernet, up to two 802.1Q/802.1ad
 * tags, IPv4, IPv6 with a bounded walk of extension headers, TCP and UDP. The fixed
 * headers are read with tw_load() (straight from the linear data when they
 * are there, else bpf_skb_load_bytes); VLAN tags and extension headers, rare
 * and read in loops, always with the helper (two ways to read each would
 * multiply the verifier's paths). Non-linear skbs (GSO super-packets, paged
 * data) parse the same as linear ones.
 */
#ifndef TLSWALL_BPF_LIB_PARSE_BPF_H
#define TLSWALL_BPF_LIB_PARSE_BPF_H

#include "lib/common.bpf.h"

#define TW_DIRECT_MAX_OFF 1024 /* headers further in are read with the helper */

/* Reads `len` (a constant) bytes at `off` into dst: directly from the linear
 * packet data when they are there (no helper call: the common case on
 * egress), else with bpf_skb_load_bytes (paged data). 0 or -errno. */
static __always_inline int tw_load(struct __sk_buff *skb, __u32 off, void *dst, const __u32 len)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;

	if (off < TW_DIRECT_MAX_OFF) {
		__u8 *at;

		barrier_var(off);
		off &= TW_DIRECT_MAX_OFF - 1;
		at = (__u8 *)data + off;
		if ((void *)(at + len) <= end) {
			__builtin_memcpy(dst, at, len);
			return 0;
		}
	}
	return bpf_skb_load_bytes(skb, off, dst, len);
}

enum tw_parse_result {
	TW_PARSE_TCP = 0,	/* key, ports, seq, flags and payload bounds are set */
	TW_PARSE_NOT_TCP = 1,	/* not IP, or IP but neither TCP nor UDP: not our business */
	TW_PARSE_OPAQUE = 2,	/* IP to key.daddr, but L4 hidden: fragment, ESP, long chain;
				 * key.proto: the fragment's L4 if known (UDP), else TCP */
	TW_PARSE_MALFORMED = 3, /* truncated or inconsistent headers */
	TW_PARSE_UDP = 4,	/* key (proto 17), ports and payload bounds are set */
};

struct tw_pkt {
	struct tw_flow_key key;
	__u32 payload_off; /* offset of the first TCP / UDP payload byte */
	__u32 payload_len;
	__u32 seq;     /* host order */
	__u32 ack_seq; /* host order; valid with TCP_FLAG_ACK */
	__u8 tcp_flags;
	__u8 opaque_reason; /* enum tw_reason, for TW_PARSE_OPAQUE */
};

static __always_inline void tw_v4_mapped(__u8 dst[16], __u32 addr_be)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &addr_be, 4);
}

/* The offset just past the L4 payload: ip_end is the offset just past the
 * IP payload as the IP header states it (0 = unknown: use skb->len, e.g.
 * BIG TCP). A GSO packet's IP length may be stale or 0; trust the smaller
 * one unless the header says nothing. */
static __always_inline __u32 tw_l4_end(const struct __sk_buff *skb, __u32 ip_end)
{
	__u32 end = skb->len;

	if (ip_end && ip_end < end)
		end = ip_end;
	return end;
}

/* Parses TCP at l4_off; ip_end as for tw_l4_end(). */
static __always_inline int tw_parse_tcp(struct __sk_buff *skb, struct tw_pkt *p, __u32 l4_off,
					__u32 ip_end)
{
	struct tcphdr th;
	__u32 doff, end;

	if (tw_load(skb, l4_off, &th, sizeof(th)) < 0)
		return TW_PARSE_MALFORMED;
	doff = (__u32)th.doff * 4;
	if (doff < sizeof(th))
		return TW_PARSE_MALFORMED;
	end = tw_l4_end(skb, ip_end);
	if (l4_off + doff > end)
		return TW_PARSE_MALFORMED;
	p->key.sport = th.source;
	p->key.dport = th.dest;
	p->key.proto = IPPROTO_TCP_;
	p->seq = bpf_ntohl(th.seq);
	p->ack_seq = bpf_ntohl(th.ack_seq);
	p->tcp_flags = ((__u8 *)&th)[13];
	p->payload_off = l4_off + doff;
	p->payload_len = end - p->payload_off;
	return TW_PARSE_TCP;
}

/* Parses UDP at l4_off; ip_end as for tw_l4_end(). The payload length is
 * the IP header's (a UDP GSO super-packet's is the sum of its datagrams). */
static __always_inline int tw_parse_udp(struct __sk_buff *skb, struct tw_pkt *p, __u32 l4_off,
					__u32 ip_end)
{
	struct udphdr uh;
	__u32 end;

	if (tw_load(skb, l4_off, &uh, sizeof(uh)) < 0)
		return TW_PARSE_MALFORMED;
	end = tw_l4_end(skb, ip_end);
	if (l4_off + sizeof(uh) > end)
		return TW_PARSE_MALFORMED;
	p->key.sport = uh.source;
	p->key.dport = uh.dest;
	p->key.proto = IPPROTO_UDP_;
	p->payload_off = l4_off + sizeof(uh);
	p->payload_len = end - p->payload_off;
	return TW_PARSE_UDP;
}

static __always_inline int tw_parse_ipv4(struct __sk_buff *skb, struct tw_pkt *p, __u32 off)
{
	struct iphdr ip;
	__u32 ihl, tot;
	__u16 frag;

	if (tw_load(skb, off, &ip, sizeof(ip)) < 0)
		return TW_PARSE_MALFORMED;
	if (ip.version != 4)
		return TW_PARSE_MALFORMED;
	ihl = (__u32)ip.ihl * 4;
	if (ihl < sizeof(ip))
		return TW_PARSE_MALFORMED;
	p->key.family = 4;
	tw_v4_mapped(p->key.saddr, ip.saddr);
	tw_v4_mapped(p->key.daddr, ip.daddr);
	if (ip.protocol != IPPROTO_TCP_ && ip.protocol != IPPROTO_UDP_)
		return TW_PARSE_NOT_TCP;
	frag = bpf_ntohs(ip.frag_off);
	if (frag & (IP_MF | IP_OFFSET)) {
		p->key.proto = ip.protocol;
		p->opaque_reason = TW_REASON_FRAGMENTED;
		return TW_PARSE_OPAQUE;
	}
	tot = bpf_ntohs(ip.tot_len);
	if (tot && tot < ihl)
		return TW_PARSE_MALFORMED;
	if (ip.protocol == IPPROTO_UDP_)
		return tw_parse_udp(skb, p, off + ihl, tot ? off + tot : 0);
	return tw_parse_tcp(skb, p, off + ihl, tot ? off + tot : 0);
}

/* With a routing header the IPv6 destination field holds the next hop; the
 * policy (and the local socket) see the final destination. ext[] holds the
 * routing header's first 4 bytes: next, length (8-byte units beyond the
 * first 8), type, segments left. Types (RFC 8200, 6275, 8754):
 *   0 (deprecated RH0): addresses 1..n from offset 8, final = the last
 *   2 (Mobile IPv6):    one address at offset 8, the final one
 *   4 (SRH):            segment list from offset 8, final = entry 0
 * Nothing to do when no segments are left (the field is final already).
 * Other types carry no address we understand: left as they are. */
static __always_inline int tw_routing_final_dst(struct __sk_buff *skb, struct tw_pkt *p, __u32 off,
						const __u8 ext[4])
{
	__u32 addrs = (__u32)ext[1] / 2; /* 16-byte addresses that fit */
	__u32 at;

	if (ext[3] == 0 || addrs == 0)
		return 0;
	if (ext[2] == 0)
		at = off + 8 + (addrs - 1) * 16;
	else if (ext[2] == 2 || ext[2] == 4)
		at = off + 8;
	else
		return 0;
	return bpf_skb_load_bytes(skb, at, p->key.daddr, 16);
}

static __always_inline int tw_parse_ipv6(struct __sk_buff *skb, struct tw_pkt *p, __u32 off)
{
	struct ipv6hdr ip6;
	__u32 ip_end, l4;
	__u8 nexthdr;
	__u8 ext[8];
	int i;

	if (tw_load(skb, off, &ip6, sizeof(ip6)) < 0)
		return TW_PARSE_MALFORMED;
	if (ip6.version != 6)
		return TW_PARSE_MALFORMED;
	p->key.family = 6;
	__builtin_memcpy(p->key.saddr, &ip6.saddr, 16);
	__builtin_memcpy(p->key.daddr, &ip6.daddr, 16);
	ip_end = ip6.payload_len ? off + sizeof(ip6) + bpf_ntohs(ip6.payload_len) : 0;
	nexthdr = ip6.nexthdr;
	l4 = off + sizeof(ip6);

	for (i = 0; i < TW_MAX_V6_EXT_HDRS; i++) {
		switch (nexthdr) {
		case NEXTHDR_TCP:
			return tw_parse_tcp(skb, p, l4, ip_end);
		case NEXTHDR_UDP:
			return tw_parse_udp(skb, p, l4, ip_end);
		case NEXTHDR_ROUTING:
			if (bpf_skb_load_bytes(skb, l4, ext, 4) < 0)
				return TW_PARSE_MALFORMED;
			if (tw_routing_final_dst(skb, p, l4, ext) < 0)
				return TW_PARSE_MALFORMED;
			nexthdr = ext[0];
			l4 += ((__u32)ext[1] + 1) * 8;
			break;
		case NEXTHDR_HOP:
		case NEXTHDR_DEST:
			if (bpf_skb_load_bytes(skb, l4, ext, 2) < 0)
				return TW_PARSE_MALFORMED;
			nexthdr = ext[0];
			l4 += ((__u32)ext[1] + 1) * 8;
			break;
		case NEXTHDR_AUTH:
			if (bpf_skb_load_bytes(skb, l4, ext, 2) < 0)
				return TW_PARSE_MALFORMED;
			nexthdr = ext[0];
			l4 += ((__u32)ext[1] + 2) * 4;
			break;
		case NEXTHDR_FRAGMENT:
			if (bpf_skb_load_bytes(skb, l4, ext, 8) < 0)
				return TW_PARSE_MALFORMED;
			/* A real fragment (offset != 0 or more to come) hides
			 * part of the stream; locally generated TCP is never
			 * fragmented, nor is QUIC. An atomic fragment (RFC
			 * 6946) is whole. UDP fragments meet rules that
			 * restrict UDP (tw_opaque()). */
			if ((ext[2] | (ext[3] & 0xf8)) || (ext[3] & 1)) {
				if (ext[0] == NEXTHDR_ICMPV6)
					return TW_PARSE_NOT_TCP;
				p->key.proto = ext[0] == NEXTHDR_UDP ? IPPROTO_UDP_ : IPPROTO_TCP_;
				p->opaque_reason = TW_REASON_FRAGMENTED;
				return TW_PARSE_OPAQUE;
			}
			nexthdr = ext[0];
			l4 += 8;
			break;
		case NEXTHDR_ESP:
			p->opaque_reason = TW_REASON_OPAQUE_HEADERS;
			return TW_PARSE_OPAQUE;
		default:
			return TW_PARSE_NOT_TCP;
		}
	}
	/* Longer chains than any real stack sends: the L4 is hidden from us. */
	p->opaque_reason = TW_REASON_OPAQUE_HEADERS;
	return TW_PARSE_OPAQUE;
}

/* Fills *p from the packet; returns enum tw_parse_result. On an Ethernet
 * device (l2 = 1) the frame starts with the MAC header; on an L3 device
 * (tun, WireGuard, ipip: l2 = 0) with the IP header, and skb->protocol
 * says which. */
static __always_inline int tw_parse(struct __sk_buff *skb, struct tw_pkt *p, const int l2)
{
	__u32 off = ETH_HLEN;
	__u16 proto;
	__u16 tag[2];
	int i;

	if (!l2) {
		proto = bpf_ntohs(skb->protocol);
		if (proto == ETH_P_IP)
			return tw_parse_ipv4(skb, p, 0);
		if (proto == ETH_P_IPV6)
			return tw_parse_ipv6(skb, p, 0);
		return TW_PARSE_NOT_TCP;
	}
	if (tw_load(skb, 12, &proto, sizeof(proto)) < 0)
		return TW_PARSE_MALFORMED;
	proto = bpf_ntohs(proto);
	for (i = 0; i < TW_MAX_VLAN_TAGS; i++) {
		if (proto != ETH_P_8021Q && proto != ETH_P_8021AD)
			break;
		if (bpf_skb_load_bytes(skb, off, tag, sizeof(tag)) < 0)
			return TW_PARSE_MALFORMED;
		proto = bpf_ntohs(tag[1]);
		off += 4;
	}
	if (proto == ETH_P_IP)
		return tw_parse_ipv4(skb, p, off);
	if (proto == ETH_P_IPV6)
		return tw_parse_ipv6(skb, p, off);
	return TW_PARSE_NOT_TCP;
}

#endif /* TLSWALL_BPF_LIB_PARSE_BPF_H */
