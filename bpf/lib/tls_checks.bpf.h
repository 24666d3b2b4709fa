/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The deeper TLS checks of protected flows judged TLS (abi/tlswall_abi.h,
 * "deeper TLS checks"), on both sides of the classifier:
 *  - egress: the flow was just judged TLS: its check record starts, with
 *    where the client's next record header lies (after the first record)
 *    and where the server's answer will start (the ClientHello segment
 *    acknowledges everything the server sent before it, so a PostgreSQL
 *    'S' or a MySQL greeting is already behind that point); later data
 *    segments walk the record headers (lib/tls_records.h);
 *  - ingress: the server's first answer is judged, and the version it
 *    chose is held against the rule's minimum.
 * A failed check makes the flow not TLS (the reason says which check) and
 * its verdict applies both ways: in enforce mode the server's later
 * segments are dropped too until the daemon has reset the socket.
 */
#ifndef TLSWALL_BPF_LIB_TLS_CHECKS_BPF_H
#define TLSWALL_BPF_LIB_TLS_CHECKS_BPF_H

#include "lib/tls_records.h"
#include "lib/verdict.bpf.h"

/* A check record whose checks are all done goes; one that failed stays
 * (ingress keeps dropping the blocked flow's answers). */
static __always_inline void tw_check_settle(const struct tw_flow_key *key,
					    const struct tw_tls_check *c)
{
	if ((c->flags & (TW_CHK_SRV_DONE | TW_CHK_RECS_DONE)) ==
		(TW_CHK_SRV_DONE | TW_CHK_RECS_DONE) &&
	    !(c->flags & TW_CHK_FAILED))
		bpf_map_delete_elem(&tw_tls_checks, key);
}

/* The flow became not TLS through a deeper check. */
static __always_inline void tw_check_failed(struct tw_flow_state *st, struct tw_tls_check *c,
					    __u8 reason)
{
	c->flags |= TW_CHK_FAILED;
	if (st->cls == TW_CLASS_TLS) {
		tw_hello_reclassify(st, reason);
		tw_count_reclassified(1);
	}
}

/* Egress, a data segment of a protected, non-exempt flow judged TLS;
 * `fresh`: this segment decided it. A record header that fails makes the
 * flow not TLS (the caller's verdict follows). */
TW_COLD void tw_check_client(struct __sk_buff *skb, const struct tw_pkt *p,
			     struct tw_flow_state *st, int fresh)
{
	struct tw_tls_check *c, init;
	__u32 base, start;

	if (fresh) {
		__builtin_memset(&init, 0, sizeof(init));
		base = tw_preamble_len(st->preamble);
		init.rec_next = base + 5 + (((__u32)st->hello[3] << 8) | st->hello[4]);
		if (p->tcp_flags & TCP_FLAG_ACK) {
			init.srv_next = p->ack_seq;
			init.flags = TW_CHK_SRV_KNOWN;
		}
		if (bpf_map_update_elem(&tw_tls_checks, &p->key, &init, BPF_ANY) < 0) {
			tw_count(TW_CNT_FLOW_TABLE_FULL);
			return;
		}
	}
	c = bpf_map_lookup_elem(&tw_tls_checks, &p->key);
	if (!c || (c->flags & (TW_CHK_RECS_DONE | TW_CHK_FAILED)))
		return;
	start = p->seq + ((p->tcp_flags & TCP_FLAG_SYN) ? 1 : 0) - (st->isn + 1);
	if (tw_records_walk(skb, p->payload_off, start, p->payload_len, c) < 0) {
		tw_count(TW_CNT_BAD_RECORDS);
		tw_check_failed(st, c, TW_REASON_BAD_RECORD);
		return;
	}
	if (c->recs_checked >= TW_RECORD_CHECKS || st->data_pkts >= TW_RECHECK_PKTS)
		c->flags |= TW_CHK_RECS_DONE;
	tw_check_settle(&p->key, c);
}

/* Ingress, a segment from the server of a flow with a check record (key:
 * the flow as egress sees it). The verdict for the packet. */
TW_COLD int tw_check_server(struct __sk_buff *skb, const struct tw_pkt *p,
			    const struct tw_flow_key *key, struct tw_tls_check *c)
{
	struct tw_flow_state *st = bpf_map_lookup_elem(&tw_flows, key);
	__u16 version = 0;
	__s32 off;
	int r;

	if (!st)
		return TC_ACT_UNSPEC;
	if (c->flags & TW_CHK_FAILED) {
		if (!st->protected_ || st->exempt || st->cls != TW_CLASS_NOT_TLS)
			return TC_ACT_UNSPEC;
		return tw_enforce(skb, key, p->tcp_flags, st,
				  c->server_version | TW_CHECK_AT_INGRESS);
	}
	if ((c->flags & TW_CHK_SRV_DONE) || !(c->flags & TW_CHK_SRV_KNOWN))
		return TC_ACT_UNSPEC;
	/* Where the answer starts in this segment; a segment starting after
	 * it (reordered) waits for the one that carries it. */
	off = (__s32)(c->srv_next - p->seq);
	if (off < 0 || (__u32)off >= p->payload_len)
		return TC_ACT_UNSPEC;
	r = tw_server_answer_judge(skb, p->payload_off + (__u32)off, p->payload_len - (__u32)off,
				   &version);
	if (r >= 0) {
		/* TLS (a short first segment is not judged: no TLS stack
		 * sends one, and no bytes of it were wrong). */
		c->flags |= TW_CHK_SRV_DONE;
		c->server_version = version;
		tw_count(r == TW_ANSWER_SHORT ? TW_CNT_SERVER_VERSION_UNKNOWN
					      : TW_CNT_SERVERS_CHECKED);
		if (r == TW_ANSWER_HELLO && !version)
			tw_count(TW_CNT_SERVER_VERSION_UNKNOWN);
		if (version && version < st->min_tls && st->protected_ && !st->exempt) {
			tw_check_failed(st, c, TW_REASON_TLS_BELOW_MINIMUM);
			return tw_enforce(skb, key, p->tcp_flags, st,
					  version | TW_CHECK_AT_INGRESS);
		}
		tw_check_settle(key, c);
		return TC_ACT_UNSPEC;
	}
	tw_count(TW_CNT_SERVERS_NOT_TLS);
	tw_check_failed(st, c, TW_REASON_SERVER_NOT_TLS);
	if (!st->protected_ || st->exempt)
		return TC_ACT_UNSPEC;
	return tw_enforce(skb, key, p->tcp_flags, st, TW_CHECK_AT_INGRESS);
}

/* The flow key egress uses for a packet ingress sees. */
static __always_inline void tw_flow_key_reverse(const struct tw_flow_key *in,
						struct tw_flow_key *out)
{
	__builtin_memcpy(out->saddr, in->daddr, 16);
	__builtin_memcpy(out->daddr, in->saddr, 16);
	out->sport = in->dport;
	out->dport = in->sport;
	out->family = in->family;
	out->proto = in->proto;
	out->pad = 0;
}

static __always_inline int tw_tcp_ingress(struct __sk_buff *skb, const struct tw_pkt *p)
{
	struct tw_tls_check *c;
	struct tw_flow_key key;

	/* Only data and SYN-ACKs matter; most packets leave here. */
	if (!p->payload_len && !(p->tcp_flags & TCP_FLAG_SYN))
		return TC_ACT_UNSPEC;
	tw_flow_key_reverse(&p->key, &key);
	c = bpf_map_lookup_elem(&tw_tls_checks, &key);
	if (!c)
		return TC_ACT_UNSPEC;
	if (p->tcp_flags & TCP_FLAG_SYN) {
		/* A ClientHello in the SYN (TCP Fast Open) was judged before
		 * any acknowledgement: the SYN-ACK says where the server's
		 * stream starts. */
		if ((p->tcp_flags & TCP_FLAG_ACK) && !(c->flags & TW_CHK_SRV_KNOWN)) {
			c->srv_next = p->seq + 1;
			c->flags |= TW_CHK_SRV_KNOWN;
		}
		return TC_ACT_UNSPEC;
	}
	return tw_check_server(skb, p, &key, c);
}

#endif /* TLSWALL_BPF_LIB_TLS_CHECKS_BPF_H */
