/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Counters and ring-buffer events. A lost event is always counted. */
#ifndef TLSWALL_BPF_LIB_EVENTS_BPF_H
#define TLSWALL_BPF_LIB_EVENTS_BPF_H

#include "lib/owner_match.bpf.h"
#include "lib/preamble.h"

static __always_inline void tw_count(__u32 counter)
{
	__u64 *v = bpf_map_lookup_elem(&tw_counters, &counter);

	if (v)
		*v += 1;
}

static __always_inline void tw_count_drop(__u32 reason)
{
	__u64 *v = bpf_map_lookup_elem(&tw_drop_reasons, &reason);

	tw_count(TW_CNT_PACKETS_DROPPED);
	if (v)
		*v += 1;
}

TW_COLD void tw_emit_flow_event(struct __sk_buff *skb, const struct tw_flow_key *key,
				const struct tw_flow_state *st, __u16 type)
{
	struct tw_flow_event *e;

	e = bpf_ringbuf_reserve(&tw_events, sizeof(*e), 0);
	if (!e) {
		tw_count(TW_CNT_EVENTS_LOST);
		return;
	}
	e->hdr.type = type;
	e->hdr.version = TW_EV_FLOW_VERDICT_VERSION;
	e->hdr.size = sizeof(*e);
	e->hdr.ktime_ns = bpf_ktime_get_ns();
	__builtin_memcpy(&e->flow, key, sizeof(*key));
	e->sock_cookie = bpf_get_socket_cookie(skb);
	e->policy_generation = st->policy_generation;
	e->ifindex = skb->ifindex;
	e->rule_id = st->rule_id;
	e->boundary = st->boundary;
	e->exemption = st->exemption;
	e->hello_version = st->hello_version;
	e->min_tls = st->min_tls;
	e->cls = st->cls;
	e->reason = st->reason;
	e->mode = st->mode;
	e->action = st->action;
	e->preamble = tw_preamble_seen(st);
	__builtin_memset(e->pad, 0, sizeof(e->pad));
	e->owner_status = tw_owner_fill(skb, key, &e->owner);
	__builtin_memset(e->pad2, 0, sizeof(e->pad2));
	bpf_ringbuf_submit(e, 0);
}

#endif /* TLSWALL_BPF_LIB_EVENTS_BPF_H */
