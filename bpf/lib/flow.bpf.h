/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Per-flow state machine of the egress classifier.
 *
 * Every TCP flow's first TW_HELLO_PREFIX payload bytes are collected in
 * sequence order (across segments, TFO SYN data and non-linear skbs) and
 * judged by tw_hello_judge(); the class is kept per flow. The policy
 * decision is cached with the generation it was made under and redone when
 * the daemon publishes a new one, so a reload applies to live flows too.
 *
 * While a flow is undecided only bytes that extend a valid ClientHello
 * prefix leave (at most 10 constrained header bytes); the first bad byte
 * decides. In enforce mode, data beyond the collected prefix is held back
 * (dropped, the sender retransmits) until the prefix is complete.
 */
#ifndef TLSWALL_BPF_LIB_FLOW_BPF_H
#define TLSWALL_BPF_LIB_FLOW_BPF_H

#include "lib/events.bpf.h"
#include "lib/parse.bpf.h"
#include "lib/policy.bpf.h"
#include "lib/tls_hello.h"

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
}

/* A flow whose judged bytes turned out not to be what the receiver gets.
 * Counters stay balanced: a flow counted TLS is moved to not-TLS (per-CPU
 * values are summed modulo 2^64, so the decrement may land on any CPU). */
TW_COLD void tw_reclassify_not_tls(struct tw_flow_state *st, __u8 reason)
{
	if (st->cls == TW_CLASS_TLS) {
		__u32 k = TW_CNT_FLOWS_TLS;
		__u64 *v = bpf_map_lookup_elem(&tw_counters, &k);

		if (v)
			*v -= 1;
	}
	st->cls = TW_CLASS_NOT_TLS;
	st->reason = reason;
	tw_count(TW_CNT_FLOWS_NOT_TLS);
}

/* Appends payload bytes to the hello prefix; on a decided flow only checks
 * that retransmitted prefix bytes equal the ones judged. Returns 1 if the packet carries
 * data beyond what has been collected (out of order), else 0. */
/* Where a segment's payload lies relative to the stream's first data byte
 * (ISN + 1): `start` is the first stream index it covers, `skip` how many of
 * its bytes come before the stream (a segment may begin at or before the
 * ISN; the receiver trims those). Returns 0 if it covers none of the judged
 * prefix, 1 if it does, 2 if it starts beyond what has been collected. */
#define TW_SEQ_BEFORE_MAX 65536 /* further back than any window: ignored */
static __always_inline int tw_locate(const struct tw_pkt *p, const struct tw_flow_state *st,
				     __u32 *start, __u32 *skip)
{
	__u32 data_seq = p->seq + ((p->tcp_flags & TCP_FLAG_SYN) ? 1 : 0);
	__s32 off = (__s32)(data_seq - (st->isn + 1));

	if (off < 0) {
		if (off < -TW_SEQ_BEFORE_MAX || (__u32)(-off) >= p->payload_len)
			return 0;
		*skip = (__u32)(-off);
		*start = 0;
		return 1;
	}
	*skip = 0;
	*start = (__u32)off;
	if (*start >= TW_HELLO_PREFIX)
		return st->hello_len < TW_HELLO_PREFIX ? 2 : 0;
	return *start > st->hello_len ? 2 : 1;
}

/* Appends payload bytes to the hello prefix; on a decided flow only checks
 * that retransmitted prefix bytes equal the ones judged. Returns 1 if the
 * packet carries data beyond what has been collected (out of order). */
static __always_inline int tw_collect(struct __sk_buff *skb, const struct tw_pkt *p,
				      struct tw_flow_state *st)
{
	__u32 have = st->hello_len;
	__u32 start = 0, skip = 0;
	__u32 j;
	__u8 b;
	int where;

	if (have > TW_HELLO_PREFIX)
		return 0;
	where = tw_locate(p, st, &start, &skip);
	if (where != 1)
		return where == 2;
	/* The usual case: the first segment carries the whole prefix. */
	if (!start && !skip && !have && st->cls == TW_CLASS_PENDING &&
	    p->payload_len >= TW_HELLO_PREFIX &&
	    !tw_load(skb, p->payload_off, st->hello, TW_HELLO_PREFIX)) {
		st->hello_len = TW_HELLO_PREFIX;
		return 0;
	}
	for (j = 0; j < TW_HELLO_PREFIX; j++) {
		__u32 idx = start + j;
		__u32 at = skip + j;

		if (at >= p->payload_len || idx >= TW_HELLO_PREFIX)
			break;
		/* The checks above bound idx and at, but clang may rewrite
		 * them so the verifier loses the bounds: re-bound them. */
		barrier_var(idx);
		idx &= 0xf; /* for the verifier only: idx < TW_HELLO_PREFIX above */
		barrier_var(at);
		at &= 0x1ffff; /* skip < TW_SEQ_BEFORE_MAX */
		if (tw_load(skb, p->payload_off + at, &b, 1) < 0)
			break;
		if (idx < have) {
			/* Retransmitted byte: must equal the copy we judged,
			 * or the receiver may see something else. */
			if (st->hello[idx] != b) {
				tw_reclassify_not_tls(st, TW_REASON_OVERLAP_MISMATCH);
				return 0;
			}
			continue;
		}
		if (st->cls != TW_CLASS_PENDING)
			break; /* decided: only re-check what was judged */
		st->hello[idx] = b;
		have = idx + 1;
	}
	st->hello_len = have;
	return 0;
}

static __always_inline void tw_judge(struct tw_flow_state *st)
{
	__u16 version = 0;
	int r;

	if (st->cls != TW_CLASS_PENDING)
		return;
	r = tw_hello_judge(st->hello, st->hello_len, &version);
	if (r == TW_HELLO_VALID) {
		st->cls = TW_CLASS_TLS;
		st->hello_version = version;
		tw_count(TW_CNT_FLOWS_TLS);
	} else if (r < 0) {
		st->cls = TW_CLASS_NOT_TLS;
		st->reason = -r;
		tw_count(TW_CNT_FLOWS_NOT_TLS);
	} else if (st->data_pkts >= TW_MAX_PENDING_PKTS) {
		st->cls = TW_CLASS_NOT_TLS;
		st->reason = TW_REASON_UNDECIDABLE;
		tw_count(TW_CNT_FLOWS_NOT_TLS);
	}
}

/* The verdict for a protected, non-exempt, decided flow. */
static __always_inline int tw_enforce(struct __sk_buff *skb, const struct tw_pkt *p,
				      struct tw_flow_state *st)
{
	__u8 reason, action;

	if (st->cls == TW_CLASS_NOT_TLS) {
		reason = st->reason;
	} else if (st->cls == TW_CLASS_TLS && st->hello_version < st->min_tls) {
		reason = TW_REASON_TLS_BELOW_MINIMUM;
	} else {
		return TC_ACT_UNSPEC;
	}
	action = st->mode == TW_MODE_ENFORCE ? TW_ACTION_DROP : TW_ACTION_REPORT;
	if (!st->reported || st->action != action) {
		st->action = action;
		st->reported = 1;
		if (st->cls == TW_CLASS_TLS)
			st->reason = reason;
		tw_count(action == TW_ACTION_DROP ? TW_CNT_PLAINTEXT_BLOCKED
						  : TW_CNT_PLAINTEXT_REPORTED);
		if (reason == TW_REASON_TLS_BELOW_MINIMUM)
			tw_count(TW_CNT_TLS_BELOW_MINIMUM);
		tw_emit_flow_event(skb, &p->key, st, TW_EV_FLOW_VERDICT);
	}
	if (action != TW_ACTION_DROP)
		return TC_ACT_UNSPEC;
	/* Let our own resets out: the daemon's socket destroy sends one so
	 * the peer forgets the flow too. */
	if (p->tcp_flags & TCP_FLAG_RST)
		return TC_ACT_UNSPEC;
	tw_count_drop(reason);
	return TC_ACT_SHOT;
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
		tw_emit_flow_event(skb, &p->key, &st, TW_EV_FLOW_UNTRACKED);
	}
	if (bpf_map_update_elem(&tw_flows, &p->key, &st, BPF_NOEXIST) < 0)
		tw_count(TW_CNT_FLOW_TABLE_FULL);
	return TC_ACT_UNSPEC;
}

/* IP fragments and hidden L4 towards a boundary: no ports, no stream. In an
 * enforce rule's boundary they are dropped; elsewhere counted and passed. */
TW_COLD int tw_opaque(struct __sk_buff *skb, const struct tw_pkt *p, __u64 generation)
{
	struct tw_decision d;

	tw_decide(skb, &p->key, 0, generation, 1, &d);
	if (!d.any_rule)
		return TC_ACT_UNSPEC;
	tw_count(TW_CNT_FRAGMENTS);
	if (!d.any_enforce)
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

	/* Pure ACKs, FINs and RSTs carry no stream bytes: nothing to judge and
	 * nothing to block (a blocked flow's data is what is dropped). Half of
	 * all packets leave here without a lookup. */
	if (!p->payload_len && !(p->tcp_flags & TCP_FLAG_SYN))
		return TC_ACT_UNSPEC;
	generation = tw_active_generation();

	if ((p->tcp_flags & TCP_FLAG_SYN) && !(p->tcp_flags & TCP_FLAG_ACK)) {
		/* A new SYN, also on a reused 5-tuple, starts from scratch. */
		__builtin_memset(&fresh, 0, sizeof(fresh));
		fresh.first_seen_ns = bpf_ktime_get_ns();
		fresh.isn = p->seq;
		fresh.cls = TW_CLASS_PENDING;
		fresh.sock_cookie_lo = (__u32)bpf_get_socket_cookie(skb);
		tw_decide(skb, &p->key, bpf_ntohs(p->key.dport), generation, 0, &d);
		tw_apply_decision(&fresh, &d, generation);
		tw_count(TW_CNT_FLOWS_SEEN);
		if (bpf_map_update_elem(&tw_flows, &p->key, &fresh, BPF_ANY) < 0) {
			tw_count(TW_CNT_FLOW_TABLE_FULL);
			return TC_ACT_UNSPEC;
		}
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
	}

	if (st->cls == TW_CLASS_PENDING && p->payload_len) {
		int ahead = tw_collect(skb, p, st);

		if (st->data_pkts < 255)
			st->data_pkts++;
		tw_judge(st);
		if (st->cls == TW_CLASS_PENDING && ahead && st->protected_ && !st->exempt &&
		    st->mode == TW_MODE_ENFORCE) {
			tw_count(TW_CNT_HELD_OUT_OF_WINDOW);
			tw_count_drop(TW_REASON_OUT_OF_WINDOW);
			return TC_ACT_SHOT;
		}
	} else if (st->cls == TW_CLASS_TLS && p->payload_len && st->data_pkts < TW_RECHECK_PKTS) {
		/* A segment overlapping the judged prefix (a retransmission,
		 * or one starting before it) must carry the same bytes there:
		 * raw sockets or TCP_REPAIR could send others. Only early in
		 * the flow: a retransmission of the prefix comes before much
		 * else, and after 4 GiB the sequence numbers wrap around and
		 * name other bytes. */
		st->data_pkts++;
		if ((__s32)(p->seq - (st->isn + 1)) < TW_HELLO_PREFIX)
			tw_collect(skb, p, st);
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
	return tw_enforce(skb, p, st);
}

#endif /* TLSWALL_BPF_LIB_FLOW_BPF_H */
