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

/* Which bytes decided a flow's class (enum tw_evidence). */
static __always_inline __u8 tw_evidence_of(const struct tw_flow_state *st)
{
	if (st->cls != TW_CLASS_NOT_TLS)
		return TW_EVIDENCE_CLIENT_HELLO;
	if (st->reason == TW_REASON_BAD_RECORD)
		return TW_EVIDENCE_CLIENT_RECORDS;
	if (st->reason == TW_REASON_SERVER_NOT_TLS || st->reason == TW_REASON_TLS_BELOW_MINIMUM)
		return TW_EVIDENCE_SERVER_HELLO;
	return TW_EVIDENCE_CLIENT_HELLO;
}

/* `check` of tw_emit_flow_event(): the version the server chose (0 if not
 * known), and whether the packet came in (tc ingress: it has no socket of
 * ours yet, so the owner is not looked up, owner_status says unknown, and
 * sock_cookie is 0: the daemon finds the socket by its 5-tuple). */
#define TW_CHECK_AT_INGRESS (1u << 16)

/* An event on a flow (key: as egress sees it). */
TW_COLD void tw_emit_flow_event(struct __sk_buff *skb, const struct tw_flow_key *key,
				const struct tw_flow_state *st, __u16 type, __u32 check)
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
	/* On ingress the packet's socket, if any, is the sender's (a veth
	 * from another namespace keeps it): not ours to name. */
	e->sock_cookie = (check & TW_CHECK_AT_INGRESS) ? 0 : bpf_get_socket_cookie(skb);
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
	e->evidence = tw_evidence_of(st);
	e->server_version = (__u16)check;
	__builtin_memset(e->pad, 0, sizeof(e->pad));
	if (check & TW_CHECK_AT_INGRESS) {
		__builtin_memset(&e->owner, 0, sizeof(e->owner));
		e->owner_status = TW_OWNER_UNKNOWN;
	} else {
		e->owner_status = tw_owner_fill(skb, key, &e->owner);
	}
	__builtin_memset(e->pad2, 0, sizeof(e->pad2));
	bpf_ringbuf_submit(e, 0);
}

#endif /* TLSWALL_BPF_LIB_EVENTS_BPF_H */
