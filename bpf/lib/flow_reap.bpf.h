/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The flow reaper: when a local TCP socket is destroyed, the state of its
 * flow goes too, so the flow table holds live flows instead of filling up
 * with finished ones and evicting the oldest on every new connection (the
 * LRU stays the safety net for flows without a local socket).
 *
 * A destroyed socket sends nothing more: tcp_destroy_sock fires after the
 * socket reached TCP_CLOSE (after TIME_WAIT took over its tuple, or after a
 * reset), and its packets pass tc egress under its lock, before that. The
 * state is deleted only if
 *  - the flow was sent by this very socket: the low 32 bits of its cookie
 *    match the ones the classifier recorded (a socket with the same tuple in
 *    another network namespace, or a later connection that reused the
 *    tuple, has another cookie), and
 *  - nothing is left to block: TLS at or above the rule's minimum, an
 *    accepted (inbound) connection, an untracked flow (passed and reported
 *    already), or a flow no rule protects or an exemption covers. Flows with a
 *    violation, and protected flows still undecided, stay until the LRU
 *    evicts them, so a packet delayed past the close (a qdisc of a stacked
 *    device) still meets its verdict.
 */
#ifndef TLSWALL_BPF_LIB_FLOW_REAP_BPF_H
#define TLSWALL_BPF_LIB_FLOW_REAP_BPF_H

#include "lib/events.bpf.h"
#include "lib/sock_key.bpf.h"
#include "lib/tls_hello.h"

static __always_inline int tw_flow_settled(const struct tw_flow_state *st)
{
	if (st->cls == TW_CLASS_INBOUND || st->cls == TW_CLASS_UNTRACKED)
		return 1; /* not judged; an untracked flow was reported already */
	if (!st->protected_ || st->exempt)
		return 1;
	return st->cls == TW_CLASS_TLS && st->hello_version >= tw_client_version_floor(st->min_tls);
}

static __always_inline void tw_reap(struct sock *sk)
{
	struct tw_flow_state *st;
	struct tw_flow_key key;
	__u64 cookie;

	/* The classifier takes the cookie of every socket it tracks; a socket
	 * that never had one was never seen (most sockets of other
	 * namespaces): no lookup. */
	cookie = sk->__sk_common.skc_cookie.counter; /* tp_btf: a direct load */
	if (!cookie)
		return;
	if (tw_sock_flow_key(sk, &key) < 0)
		return;
	st = bpf_map_lookup_elem(&tw_flows, &key);
	if (!st || st->sock_cookie_lo != (__u32)cookie)
		return;
	/* Deeper checks end with the socket (lib/tls_checks.bpf.h). */
	bpf_map_delete_elem(&tw_tls_checks, &key);
	if (!tw_flow_settled(st)) {
		tw_count(TW_CNT_FLOWS_KEPT);
		return;
	}
	if (!bpf_map_delete_elem(&tw_flows, &key))
		tw_count(TW_CNT_FLOWS_REAPED);
}

#endif /* TLSWALL_BPF_LIB_FLOW_REAP_BPF_H */
