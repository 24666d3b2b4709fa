// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tc classifiers of tlswall (egress: every flow; ingress: the server's
 * answers of flows under deeper checks), and the reaper of their flow
 * table. Thin entry points; the logic lives in lib/. Classifier return values: TC_ACT_UNSPEC
 * lets the packet continue (to any later filter), TC_ACT_SHOT drops it.
 */
#include "lib/common.bpf.h"
#include "lib/flow.bpf.h"
#include "lib/flow_reap.bpf.h"
#include "lib/udp_flow.bpf.h"

#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

static __always_inline int tw_egress(struct __sk_buff *skb, const int l2)
{
	struct tw_pkt p = {};
	__u64 generation;

	tw_count(TW_CNT_PACKETS);
	switch (tw_parse(skb, &p, l2)) {
	case TW_PARSE_TCP:
		return tw_tcp_egress(skb, &p);
	case TW_PARSE_UDP:
		return tw_udp_egress(skb, &p);
	case TW_PARSE_OPAQUE:
		generation = tw_active_generation();
		return tw_opaque(skb, &p, generation);
	case TW_PARSE_MALFORMED:
		tw_count(TW_CNT_PARSE_ERRORS);
		return TC_ACT_UNSPEC;
	default:
		return TC_ACT_UNSPEC;
	}
}

/* Egress of an Ethernet device. */
SEC("tc")
int tlswall_egress(struct __sk_buff *skb)
{
	return tw_egress(skb, 1);
}

/* Egress of an L3 device (no MAC header: tun, WireGuard, ipip, ...). */
SEC("tc")
int tlswall_egress_l3(struct __sk_buff *skb)
{
	return tw_egress(skb, 0);
}

/* Ingress: the server's answers to flows under deeper checks
 * (lib/tls_checks.bpf.h). Everything else passes. */
static __always_inline int tw_ingress(struct __sk_buff *skb, const int l2)
{
	struct tw_pkt p = {};

	if (tw_parse(skb, &p, l2) != TW_PARSE_TCP)
		return TC_ACT_UNSPEC;
	return tw_tcp_ingress(skb, &p);
}

/* Ingress of an Ethernet device. */
SEC("tc")
int tlswall_ingress(struct __sk_buff *skb)
{
	return tw_ingress(skb, 1);
}

/* Ingress of an L3 device. */
SEC("tc")
int tlswall_ingress_l3(struct __sk_buff *skb)
{
	return tw_ingress(skb, 0);
}

/* A local TCP socket is being destroyed: its flow's state goes with it when
 * nothing is left to block (lib/flow_reap.bpf.h). Observes only. */
SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(tlswall_flow_reap, struct sock *sk)
{
	tw_reap(sk);
	return 0;
}
