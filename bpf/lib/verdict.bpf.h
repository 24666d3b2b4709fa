/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The verdict on a judged flow, and the class counters, shared by the
 * egress classifier (lib/flow.bpf.h) and the deeper checks on both sides
 * (lib/tls_checks.bpf.h). Also makes the packet the byte source of the
 * stream judges (lib/hello_stream.h, lib/tls_records.h).
 */
#ifndef TLSWALL_BPF_LIB_VERDICT_BPF_H
#define TLSWALL_BPF_LIB_VERDICT_BPF_H

#include "lib/events.bpf.h"
/* lib/hello_stream.h's preamble scan is a global function: verified once. */
#define TW_HELLO_SRC	    struct __sk_buff
#define TW_PREAMBLE_SCAN_FN __attribute__((noinline)) int
#include "lib/hello_stream.h"
#include "lib/parse.bpf.h"

/* The byte source of lib/hello_stream.h: the packet's payload. */
static __always_inline int tw_hello_load(void *src, __u32 off, void *dst, const __u32 len)
{
	return tw_load((struct __sk_buff *)src, off, dst, len);
}

/* Counters after tw_hello_on_data(). A flow reclassified from TLS to not
 * TLS keeps them balanced: per-CPU values are summed modulo 2^64, so the
 * decrement may land on any CPU. */
TW_COLD void tw_count_reclassified(int was_tls)
{
	if (was_tls) {
		__u32 k = TW_CNT_FLOWS_TLS;
		__u64 *v = bpf_map_lookup_elem(&tw_counters, &k);

		if (v)
			*v -= 1;
	}
	tw_count(TW_CNT_FLOWS_NOT_TLS);
}

static __always_inline void tw_count_data(int r)
{
	if (r & TW_DATA_MISMATCH)
		tw_count_reclassified(r & TW_DATA_WAS_TLS);
	if (r & TW_DATA_TLS)
		tw_count(TW_CNT_FLOWS_TLS);
	if (r & TW_DATA_NOT_TLS)
		tw_count(TW_CNT_FLOWS_NOT_TLS);
}

/* A protected, non-exempt flow its rule does not allow, for `reason` (TCP:
 * not TLS or below the minimum; UDP: lib/udp_flow.bpf.h): reported once
 * per action (counted, an event), and in enforce mode dropped. key: the
 * flow as egress sees it; tcp_flags: the packet's (0 for UDP); check: as
 * for tw_emit_flow_event. */
static __always_inline int tw_flow_violation(struct __sk_buff *skb, const struct tw_flow_key *key,
					     __u8 tcp_flags, struct tw_flow_state *st, __u8 reason,
					     __u32 check)
{
	__u8 action = st->mode == TW_MODE_ENFORCE ? TW_ACTION_DROP : TW_ACTION_REPORT;

	if (!st->reported || st->action != action) {
		st->action = action;
		st->reported = 1;
		st->reason = reason;
		tw_count(action == TW_ACTION_DROP ? TW_CNT_PLAINTEXT_BLOCKED
						  : TW_CNT_PLAINTEXT_REPORTED);
		if (reason == TW_REASON_TLS_BELOW_MINIMUM)
			tw_count(TW_CNT_TLS_BELOW_MINIMUM);
		tw_emit_flow_event(skb, key, st, TW_EV_FLOW_VERDICT, check);
	}
	if (action != TW_ACTION_DROP)
		return TC_ACT_UNSPEC;
	/* Let resets through: the daemon's socket destroy sends one so the
	 * peer forgets the flow too. */
	if (tcp_flags & TCP_FLAG_RST)
		return TC_ACT_UNSPEC;
	tw_count_drop(reason);
	return TC_ACT_SHOT;
}

/* The verdict for a protected, non-exempt, decided TCP flow. A ClientHello
 * below the rule's minimum is checked here; a server's choice below it, by
 * lib/tls_checks.bpf.h (which makes the flow not TLS). */
static __always_inline int tw_enforce(struct __sk_buff *skb, const struct tw_flow_key *key,
				      __u8 tcp_flags, struct tw_flow_state *st, __u32 check)
{
	if (st->cls == TW_CLASS_NOT_TLS)
		return tw_flow_violation(skb, key, tcp_flags, st, st->reason, check);
	if (st->cls == TW_CLASS_TLS && st->hello_version < tw_client_version_floor(st->min_tls))
		return tw_flow_violation(skb, key, tcp_flags, st, TW_REASON_TLS_BELOW_MINIMUM,
					 check);
	return TC_ACT_UNSPEC;
}

#endif /* TLSWALL_BPF_LIB_VERDICT_BPF_H */
