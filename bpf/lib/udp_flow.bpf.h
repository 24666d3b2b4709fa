/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * UDP egress: the rule's explicit verdict (policy key `udp`, enum
 * tw_udp_verdict), judged like TCP by destination and destination port.
 *
 *   allow  passes, as UDP always did: no flow state, no count; the cost is
 *          the policy decision (a decision-cache hit), as for any UDP
 *          packet to a destination no rule covers
 *   quic   each flow (5-tuple) must begin with a client's QUIC Initial of
 *          a known version (lib/quic_initial.h); its class is kept in the
 *          flow table (key.proto 17): TW_CLASS_TLS with hello_version
 *          0x0304 (QUIC carries TLS 1.3, RFC 9001), else TW_CLASS_NOT_TLS
 *   block  no flow is allowed
 * A flow not allowed is reported once (TW_EV_FLOW_VERDICT, reason
 * udp_not_allowed or not_quic) and in enforce mode every datagram of it is
 * dropped. Exemptions apply as for TCP. The decision is made per datagram
 * (so a reload applies at once); the state keeps the first datagram's
 * class and what was reported.
 *
 * Consequences, documented in the README: a flow is judged from the first
 * datagram we see of it (one under way when the classifier was attached or
 * when a reload turned its rule from allow to quic, or whose state the LRU
 * evicted, is judged from a later datagram: a QUIC short header is not an
 * Initial, so it is blocked: fail closed); datagrams a local server sends
 * back are judged by the client's port, like any egress datagram.
 */
#ifndef TLSWALL_BPF_LIB_UDP_FLOW_BPF_H
#define TLSWALL_BPF_LIB_UDP_FLOW_BPF_H

#include "lib/flow.bpf.h"
#include "lib/quic_initial.h"

/* The flow's class from its first datagram, whatever the rule (a reload may
 * turn block into quic). */
static __always_inline void tw_udp_classify(struct __sk_buff *skb, const struct tw_pkt *p,
					    struct tw_flow_state *st)
{
	__u8 b[TW_QUIC_JUDGED];
	__u8 reason = TW_REASON_NOT_QUIC;

	if (p->payload_len >= TW_QUIC_MIN_DATAGRAM && !tw_load(skb, p->payload_off, b, sizeof(b)))
		reason = tw_quic_initial(b, p->payload_len);
	if (reason == TW_REASON_NONE) {
		st->cls = TW_CLASS_TLS;
		st->hello_version = 0x0304;
	} else {
		st->cls = TW_CLASS_NOT_TLS;
		st->reason = reason;
	}
}

/* A UDP datagram (TW_PARSE_UDP). Inline: its state shares the program's
 * stack frame with the TCP path's (a subprogram's frame comes on top, and
 * the two would pass the 512-byte limit). */
static __always_inline int tw_udp_egress(struct __sk_buff *skb, const struct tw_pkt *p)
{
	struct tw_flow_state fresh;
	struct tw_flow_state *st;
	struct tw_decision d;
	__u64 generation = tw_active_generation();

	tw_decide(skb, &p->key, bpf_ntohs(p->key.dport), generation, 0, &d);
	if (!d.protected_ || d.udp == TW_UDP_ALLOW)
		return TC_ACT_UNSPEC;
	st = bpf_map_lookup_elem(&tw_flows, &p->key);
	if (!st) {
		__builtin_memset(&fresh, 0, sizeof(fresh));
		fresh.first_seen_ns = bpf_ktime_get_ns();
		fresh.sock_cookie_lo = (__u32)bpf_get_socket_cookie(skb);
		tw_udp_classify(skb, p, &fresh);
		tw_apply_decision(&fresh, &d, generation);
		tw_count(TW_CNT_UDP_FLOWS);
		if (d.exempt)
			tw_count(TW_CNT_EXEMPT);
		if (bpf_map_update_elem(&tw_flows, &p->key, &fresh, BPF_NOEXIST) < 0)
			tw_count(TW_CNT_FLOW_TABLE_FULL);
		st = bpf_map_lookup_elem(&tw_flows, &p->key);
		if (!st)
			st = &fresh; /* judged all the same; the next datagram again */
	} else if (st->policy_generation != generation) {
		tw_apply_decision(st, &d, generation);
	}
	if (st->exempt)
		return TC_ACT_UNSPEC;
	if (d.udp != TW_UDP_BLOCK && st->cls == TW_CLASS_TLS)
		return TC_ACT_UNSPEC;
	if (!st->reported)
		tw_count(TW_CNT_UDP_NOT_ALLOWED);
	return tw_flow_violation(
	    skb, &p->key, 0, st,
	    d.udp == TW_UDP_BLOCK ? TW_REASON_UDP_NOT_ALLOWED : TW_REASON_NOT_QUIC, 0);
}

#endif /* TLSWALL_BPF_LIB_UDP_FLOW_BPF_H */
