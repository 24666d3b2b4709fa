/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Per-flow state machine of the egress classifier.
 *
 * Every TCP flow's first TW_HELLO_PREFIX payload bytes are collected in
 * sequence order (across segments, TFO SYN data and non-linear skbs) and
 * judged by tw_hello_judge(); the class is kept per flow. That part knows
 * nothing of packets and maps: lib/hello_stream.h, shared with user space.
 * The policy decision is cached with the generation it was made under and
 * redone when the daemon publishes a new one, so a reload applies to live
 * flows too.
 *
 * While a flow is undecided only bytes that extend a valid ClientHello
 * prefix leave (at most 10 constrained header bytes), after a preamble its
 * rule allows (lib/preamble.h); the first bad byte decides. In enforce mode, data beyond the
 * collected prefix is held back (dropped, the sender retransmits) until the prefix is complete.
 */
#ifndef TLSWALL_BPF_LIB_FLOW_BPF_H
#define TLSWALL_BPF_LIB_FLOW_BPF_H

#include "lib/policy.bpf.h"
#include "lib/tls_checks.bpf.h"

static __always_inline void tw_apply_decision(struct tw_flow_state *st, const struct tw_decision *d,
					      __u64 generation)
{
	st->policy_generation = generation;
	st->protected_ = d->protected_;
	st->exempt = d->exempt;
	st->rule_id = d->rule_id;
	st->boundary = d->boundary;
	st->exemption = d->exemption;
	st->min_tls = d->min_tls;
	st->mode = d->mode;
	st->preambles = d->preambles;
}

/* During an upgrade the previous release's flow table is still attached as
 * tw_flows_prev: a flow judged by the old program continues here with its
 * verdict instead of counting as "state lost". */
static __always_inline struct tw_flow_state *tw_adopt_prev(const struct tw_flow_key *key,
							   struct tw_flow_state *scratch)
{
	const struct tw_flow_state_prev *old = bpf_map_lookup_elem(&tw_flows_prev, key);

	if (!old)
		return 0;
	tw_flow_from_prev(scratch, old);
	if (bpf_map_update_elem(&tw_flows, key, scratch, BPF_NOEXIST) < 0 &&
	    !bpf_map_lookup_elem(&tw_flows, key)) {
		tw_count(TW_CNT_FLOW_TABLE_FULL);
		return 0;
	}
	return bpf_map_lookup_elem(&tw_flows, key);
}

/* A data packet of a flow we have no state for (started before we were
 * attached, or evicted under table pressure). Its first bytes are gone, so
 * it cannot be judged: it passes, and on a protected destination it is
 * counted and reported once (the state inserted here caches that). */
static __always_inline int tw_untracked(struct __sk_buff *skb, const struct tw_pkt *p,
					__u64 generation)
{
	struct tw_flow_state st = {};
	struct tw_decision d;

	tw_decide(skb, &p->key, bpf_ntohs(p->key.dport), generation, 0, &d);
	st.first_seen_ns = bpf_ktime_get_ns();
	st.cls = TW_CLASS_UNTRACKED;
	st.sock_cookie_lo = (__u32)bpf_get_socket_cookie(skb);
	tw_apply_decision(&st, &d, generation);
	if (d.protected_ && !d.exempt) {
		st.reason = TW_REASON_STATE_LOST;
		st.reported = 1;
		tw_count(TW_CNT_STATE_LOST);
		tw_emit_flow_event(skb, &p->key, &st, TW_EV_FLOW_UNTRACKED, 0);
	}
	if (bpf_map_update_elem(&tw_flows, &p->key, &st, BPF_NOEXIST) < 0)
		tw_count(TW_CNT_FLOW_TABLE_FULL);
	return TC_ACT_UNSPEC;
}

/* A flow judged from its stream start (isn: the sequence number before its
 * first byte), as its policy decides now: into the flow table. -1 (and
 * counted) if the table refused it. */
static __always_inline int tw_flow_start(struct __sk_buff *skb, const struct tw_pkt *p,
					 __u64 generation, __u32 isn, struct tw_flow_state *fresh)
{
	struct tw_decision d;

	__builtin_memset(fresh, 0, sizeof(*fresh));
	fresh->first_seen_ns = bpf_ktime_get_ns();
	fresh->isn = isn;
	fresh->cls = TW_CLASS_PENDING;
	fresh->sock_cookie_lo = (__u32)bpf_get_socket_cookie(skb);
	tw_decide(skb, &p->key, bpf_ntohs(p->key.dport), generation, 0, &d);
	tw_apply_decision(fresh, &d, generation);
	if (bpf_map_update_elem(&tw_flows, &p->key, fresh, BPF_ANY) < 0) {
		tw_count(TW_CNT_FLOW_TABLE_FULL);
		return -1;
	}
	return 0;
}

/* State gone (evicted under table pressure) from a local connection none of
 * whose data the peer has acknowledged yet: its stream start is still known
 * (snd_una = ISN + 1; bytes_acked counts only the SYN), so the flow is
 * judged from its first byte as if its SYN had just been seen, instead of
 * being passed as "state lost" (which a client could otherwise provoke by
 * flooding the table between its SYN and its first bytes). A segment past
 * the start is then data ahead of the collected prefix (held back in enforce mode until the
 * retransmission from snd_una arrives). Flows with acknowledged data, and
 * forwarded traffic (no local socket), keep the state-lost path: an
 * established flow is never blocked mid-stream. NULL if not applicable. */
static __always_inline struct tw_flow_state *tw_rebuild_young(struct __sk_buff *skb,
							      const struct tw_pkt *p,
							      __u64 generation,
							      struct tw_flow_state *fresh)
{
	struct bpf_sock *sk = skb->sk;
	struct bpf_tcp_sock *tp;

	if (!sk)
		return NULL;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return NULL;
	tp = bpf_tcp_sock(sk);
	/* Nothing received either: a client that speaks first. A local
	 * server's accepted socket has read its client's request by the time
	 * it answers (its state was marked inbound at the SYN-ACK). */
	if (!tp || tp->bytes_acked > 1 || tp->data_segs_in)
		return NULL;
	if (tw_flow_start(skb, p, generation, tp->snd_una - 1, fresh) < 0)
		return NULL;
	return bpf_map_lookup_elem(&tw_flows, &p->key);
}

/* IP fragments and hidden L4 towards a boundary: no ports, no stream. In an
 * enforce rule's boundary they are dropped; elsewhere counted and passed.
 * UDP fragments meet only the rules that restrict UDP (udp = "quic" or
 * "block": QUIC is never fragmented, RFC 9000 14); under rules that allow
 * UDP they pass uncounted, as before the udp key. */
TW_COLD int tw_opaque(struct __sk_buff *skb, const struct tw_pkt *p, __u64 generation)
{
	const int udp = p->key.proto == IPPROTO_UDP_;
	struct tw_decision d;

	tw_decide(skb, &p->key, 0, generation, 1, &d);
	if (!(d.dest_flags & (udp ? TW_DEST_ANY_UDP_RULE : TW_DEST_ANY_RULE)))
		return TC_ACT_UNSPEC;
	tw_count(TW_CNT_FRAGMENTS);
	if (!(d.dest_flags & (udp ? TW_DEST_ANY_UDP_ENFORCE : TW_DEST_ANY_ENFORCE)))
		return TC_ACT_UNSPEC;
	tw_count_drop(p->opaque_reason);
	return TC_ACT_SHOT;
}

static __always_inline int tw_tcp_egress(struct __sk_buff *skb, struct tw_pkt *p)
{
	/* One stack copy for every state built here: the stack of this
	 * program and the subprograms it calls shares 512 bytes. */
	struct tw_flow_state fresh;
	struct tw_flow_state *st;
	struct tw_decision d;
	__u64 generation;
	int r = 0;

	/* Pure ACKs, FINs and RSTs carry no stream bytes: nothing to judge and
	 * nothing to block (a blocked flow's data is what is dropped). Half of
	 * all packets leave here without a lookup. */
	if (!p->payload_len && !(p->tcp_flags & TCP_FLAG_SYN))
		return TC_ACT_UNSPEC;
	generation = tw_active_generation();

	if ((p->tcp_flags & TCP_FLAG_SYN) && !(p->tcp_flags & TCP_FLAG_ACK)) {
		/* A new SYN, also on a reused 5-tuple, starts from scratch. */
		tw_count(TW_CNT_FLOWS_SEEN);
		if (tw_flow_start(skb, p, generation, p->seq, &fresh) < 0)
			return TC_ACT_UNSPEC;
		if (!p->payload_len) /* TFO data is judged below */
			return TC_ACT_UNSPEC;
	}

	if ((p->tcp_flags & TCP_FLAG_SYN) && (p->tcp_flags & TCP_FLAG_ACK)) {
		/* A local server accepted this connection: the remote peer
		 * opened it and chose the port, so egress rules (keyed on the
		 * port we connect to) do not apply. Remembered so its data is
		 * not mistaken for a flow whose state was lost. */
		__builtin_memset(&fresh, 0, sizeof(fresh));
		fresh.first_seen_ns = bpf_ktime_get_ns();
		fresh.isn = p->seq;
		fresh.cls = TW_CLASS_INBOUND;
		fresh.policy_generation = generation;
		tw_count(TW_CNT_FLOWS_INBOUND);
		if (bpf_map_update_elem(&tw_flows, &p->key, &fresh, BPF_ANY) < 0)
			tw_count(TW_CNT_FLOW_TABLE_FULL);
		return TC_ACT_UNSPEC;
	}

	st = bpf_map_lookup_elem(&tw_flows, &p->key);
	if (!st && p->payload_len)
		st = tw_adopt_prev(&p->key, &fresh);
	if (!st) {
		if (!p->payload_len)
			return TC_ACT_UNSPEC;
		st = tw_rebuild_young(skb, p, generation, &fresh);
		if (!st)
			return tw_untracked(skb, p, generation);
	}

	if (st->cls == TW_CLASS_INBOUND) {
		/* The SYN-ACK left from a request socket; the accepted
		 * socket sends the data: its cookie lets the reaper free
		 * this state when that socket is destroyed. */
		if (!st->sock_cookie_lo)
			st->sock_cookie_lo = (__u32)bpf_get_socket_cookie(skb);
		return TC_ACT_UNSPEC;
	}

	if (st->policy_generation != generation) {
		tw_decide(skb, &p->key, bpf_ntohs(p->key.dport), generation, 0, &d);
		tw_apply_decision(st, &d, generation);
		/* A reload took away the preamble this flow began with. */
		if (st->protected_ && tw_preamble_revoked(st))
			tw_count_reclassified(
			    tw_hello_reclassify(st, TW_REASON_PREAMBLE_NOT_ALLOWED) ==
			    TW_CLASS_TLS);
	}

	if (p->payload_len) {
		/* Collect and judge the hello prefix while pending; early in a
		 * TLS flow, re-check retransmissions of it (lib/hello_stream.h). */
		r = tw_hello_on_data(skb, p->payload_off, p->seq, p->tcp_flags & TCP_FLAG_SYN,
				     p->payload_len, st);

		tw_count_data(r);
		if ((r & TW_DATA_AHEAD) && st->cls == TW_CLASS_PENDING && st->protected_ &&
		    !st->exempt && st->mode == TW_MODE_ENFORCE) {
			tw_count(TW_CNT_HELD_OUT_OF_WINDOW);
			tw_count_drop(TW_REASON_OUT_OF_WINDOW);
			return TC_ACT_SHOT;
		}
	}

	if (!st->protected_)
		return TC_ACT_UNSPEC;
	if (st->exempt) {
		if (!st->reported && st->cls != TW_CLASS_PENDING) {
			st->reported = 1;
			tw_count(TW_CNT_EXEMPT);
		}
		return TC_ACT_UNSPEC;
	}
	/* Early in a TLS flow, its next record headers (lib/tls_checks.bpf.h). */
	if (st->cls == TW_CLASS_TLS && p->payload_len &&
	    ((r & TW_DATA_TLS) || st->data_pkts < TW_RECHECK_PKTS))
		tw_check_client(skb, p, st, r & TW_DATA_TLS);
	return tw_enforce(skb, &p->key, p->tcp_flags, st, 0);
}

#endif /* TLSWALL_BPF_LIB_FLOW_BPF_H */
