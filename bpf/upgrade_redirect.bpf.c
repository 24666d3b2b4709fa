// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Transparent TLS upgrade, kernel side: a TCP connect() that the selection
 * tables choose is rewritten to the local upgrade proxy, and the original
 * destination is recorded where the proxy can find it without trusting the
 * client:
 *   cgroup/connect4, connect6  select, record (by socket cookie), rewrite
 *   sockops TCP_CONNECT_CB     the source port is known: record again by
 *                              the client's (addr, port) as the proxy sees it
 *   sockops STATE_CB (CLOSE)   forget the socket
 *   cgroup/getpeername4, 6     the client sees the original peer
 * Everything runs only for sockets of the cgroup subtree the daemon attaches
 * to (agent/upgrade/upgrade_redirect.cc). Fail closed: a selected connect
 * whose record cannot be written is refused (EPERM), never let through.
 */
#include "lib/upgrade_select.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* uapi constants: vmlinux.h has no macros. */
#define TWU_SOCK_STREAM 1
#define TWU_IPPROTO_TCP 6
#define TWU_AF_INET	2
#define TWU_AF_INET6	10
#define TWU_LOOPBACK4	0x7f000001 /* 127.0.0.1, host order */
#define TWU_ALLOW	1	   /* cgroup sock_addr: go on */
#define TWU_REFUSE	0	   /* cgroup sock_addr: EPERM */

/* Knobs, set by the loader before load. */
const volatile __u16 proxy_port4 = 0; /* host order: 127.0.0.1 / ::ffff:127.0.0.1 listener */
const volatile __u16 proxy_port6 = 0; /* host order: [::1] listener */
/* uid of the proxy worker process: its own connects (to the original
 * destinations and to terminations' backends) are never redirected. */
const volatile __u32 proxy_uid = 0;
/* netns cookie of the proxy; sockets of other netns get no peer record
 * (their redirected connect meets no proxy and fails). 0: no check. */
const volatile __u64 proxy_netns_cookie = 0;

static __always_inline int twu_is_v4mapped(const __u32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff);
}

/* Selects, records and decides for one connect. daddr: 16 bytes (IPv4 as
 * ::ffff:a.b.c.d), port host order. Returns 1 to redirect, 0 to leave the
 * connect alone, -1 to refuse it. */
static __always_inline int twu_on_connect(struct bpf_sock_addr *ctx, __u8 family, const __u8 *daddr,
					  __u16 port, __u8 conn_flags)
{
	struct twu_task task;
	struct twu_rule rule;
	struct twu_conn c = {};
	__u64 gen = 0;
	enum twu_select sel;

	if (ctx->type != TWU_SOCK_STREAM || ctx->protocol != TWU_IPPROTO_TCP)
		return 0;
	twu_current_task(&task);
	sel = twu_select(family, daddr, port, &task, &rule, &gen);
	if (sel == TWU_SEL_OWNER_FILTERED)
		twu_count(TWU_CNT_OWNER_FILTERED);
	if (sel != TWU_SEL_RULE)
		return 0;
	if (proxy_uid && (__u32)task.uid_gid == proxy_uid) {
		twu_count(TWU_CNT_PROXY_OWN);
		return 0;
	}

	c.cookie = bpf_get_socket_cookie(ctx);
	c.cgroup_id = bpf_get_current_cgroup_id();
	c.generation = gen;
	c.rule_id = rule.rule_id;
	c.pid = task.pid_tgid >> 32;
	c.tid = (__u32)task.pid_tgid;
	c.uid = (__u32)task.uid_gid;
	c.gid = task.uid_gid >> 32;
	c.family = family;
	c.flags = conn_flags;
	c.dport = bpf_htons(port);
	__builtin_memcpy(c.daddr, daddr, 16);
	__builtin_memcpy(c.comm, task.comm, TWU_COMM_LEN);
	c.connect_ns = bpf_ktime_get_ns();
	if (bpf_map_update_elem(&twu_conns, &c.cookie, &c, BPF_ANY)) {
		twu_count(TWU_CNT_MAP_FULL);
		twu_count(TWU_CNT_REFUSED);
		return -1;
	}
	twu_count(TWU_CNT_REDIRECTED);
	return 1;
}

SEC("cgroup/connect4")
int twu_connect4(struct bpf_sock_addr *ctx)
{
	__u8 daddr[16] = {};
	__u32 ip = ctx->user_ip4;
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	int r;

	daddr[10] = 0xff;
	daddr[11] = 0xff;
	__builtin_memcpy(daddr + 12, &ip, 4);
	r = twu_on_connect(ctx, 4, daddr, port, 0);
	if (r < 0)
		return TWU_REFUSE;
	if (r > 0) {
		ctx->user_ip4 = bpf_htonl(TWU_LOOPBACK4);
		ctx->user_port = bpf_htons(proxy_port4);
	}
	return TWU_ALLOW;
}

SEC("cgroup/connect6")
int twu_connect6(struct bpf_sock_addr *ctx)
{
	__u32 a[4];
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	int mapped, r;

	a[0] = ctx->user_ip6[0];
	a[1] = ctx->user_ip6[1];
	a[2] = ctx->user_ip6[2];
	a[3] = ctx->user_ip6[3];
	/* An IPv4-mapped destination is IPv4 on the wire: judged as IPv4. */
	mapped = twu_is_v4mapped(a);
	r = twu_on_connect(ctx, mapped ? 4 : 6, (const __u8 *)a, port,
			   mapped ? TWU_CONN_V4MAPPED : 0);
	if (r < 0)
		return TWU_REFUSE;
	if (r == 0)
		return TWU_ALLOW;
	if (mapped) {
		/* ::ffff:127.0.0.1, the IPv4 listener (a v6 socket cannot reach
		 * [::1] once it is IPv4-mapped). */
		ctx->user_ip6[3] = bpf_htonl(TWU_LOOPBACK4);
		ctx->user_port = bpf_htons(proxy_port4);
	} else {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = 0;
		ctx->user_ip6[3] = bpf_htonl(1);
		ctx->user_port = bpf_htons(proxy_port6);
	}
	return TWU_ALLOW;
}

/* TCP_CONNECT_CB: tcp_connect() has the 4-tuple, the SYN is not built yet.
 * The client's source as the proxy will see it from getpeername():
 * IPv4 (also an IPv4-mapped v6 socket, whose v6 source is set only after
 * this callback) as ::ffff:a.b.c.d. */
static __always_inline void twu_sock_connect(struct bpf_sock_ops *skops)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct twu_conn *c = bpf_map_lookup_elem(&twu_conns, &cookie);
	struct twu_peer_key pk = {};
	__u32 a[4], l4;

	if (!c)
		return;
	/* Forget the socket when it closes (needs the state callback). */
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
	if (proxy_netns_cookie && bpf_get_netns_cookie(skops) != proxy_netns_cookie) {
		twu_count(TWU_CNT_OTHER_NETNS);
		return;
	}
	/* Both read unconditionally: clang would otherwise merge the two
	 * context loads into one with a computed offset, which the verifier
	 * refuses ("dereference of modified ctx ptr"). */
	l4 = skops->local_ip4;
	a[0] = skops->local_ip6[0];
	a[1] = skops->local_ip6[1];
	a[2] = skops->local_ip6[2];
	a[3] = skops->local_ip6[3];
	if (skops->family == TWU_AF_INET || (c->flags & TWU_CONN_V4MAPPED)) {
		a[0] = 0;
		a[1] = 0;
		a[2] = bpf_htonl(0xffff);
		a[3] = l4;
	}
	__builtin_memcpy(pk.addr, a, 16);
	pk.port = bpf_htons((__u16)skops->local_port);
	c->peer = pk;
	c->flags |= TWU_CONN_PEER_SET;
	if (bpf_map_update_elem(&twu_peers, &pk, c, BPF_ANY)) {
		twu_count(TWU_CNT_MAP_FULL);
		return;
	}
	twu_count(TWU_CNT_PEER_RECORDED);
}

/* The socket is gone: its cookie record goes. Its peer record goes too if
 * the connection never got established (the proxy will never accept it);
 * otherwise it stays for the proxy, which may accept after the client has
 * already sent, closed and left (LRU bounds what is never taken). */
static __always_inline void twu_sock_close(struct bpf_sock_ops *skops, __u32 oldstate)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct twu_conn *c = bpf_map_lookup_elem(&twu_conns, &cookie);
	struct twu_peer_key pk;
	struct twu_conn *p;

	if (!c)
		return;
	if ((c->flags & TWU_CONN_PEER_SET) && oldstate == BPF_TCP_SYN_SENT) {
		pk = c->peer;
		p = bpf_map_lookup_elem(&twu_peers, &pk);
		if (p && p->cookie == cookie)
			bpf_map_delete_elem(&twu_peers, &pk);
	}
	bpf_map_delete_elem(&twu_conns, &cookie);
}

SEC("sockops")
int twu_sock_ops(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		twu_sock_connect(skops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == BPF_TCP_CLOSE)
			twu_sock_close(skops, skops->args[0]);
		break;
	default:
		break;
	}
	return 1;
}

/* getpeername() of a redirected socket answers the original destination
 * (only while its peer really is the proxy listener). */
SEC("cgroup/getpeername4")
int twu_getpeername4(struct bpf_sock_addr *ctx)
{
	__u64 cookie;
	struct twu_conn *c;
	__u32 ip;

	if (ctx->user_ip4 != bpf_htonl(TWU_LOOPBACK4) || ctx->user_port != bpf_htons(proxy_port4))
		return 1;
	cookie = bpf_get_socket_cookie(ctx);
	c = bpf_map_lookup_elem(&twu_conns, &cookie);
	if (!c || c->family != 4)
		return 1;
	__builtin_memcpy(&ip, c->daddr + 12, 4);
	ctx->user_ip4 = ip;
	ctx->user_port = c->dport;
	twu_count(TWU_CNT_GETPEERNAME);
	return 1;
}

SEC("cgroup/getpeername6")
int twu_getpeername6(struct bpf_sock_addr *ctx)
{
	__u32 a[4];
	__u32 port = ctx->user_port;
	__u64 cookie;
	struct twu_conn *c;
	int mapped;

	a[0] = ctx->user_ip6[0];
	a[1] = ctx->user_ip6[1];
	a[2] = ctx->user_ip6[2];
	a[3] = ctx->user_ip6[3];
	mapped = twu_is_v4mapped(a);
	if (mapped) {
		if (a[3] != bpf_htonl(TWU_LOOPBACK4) || port != bpf_htons(proxy_port4))
			return 1;
	} else if (a[0] || a[1] || a[2] || a[3] != bpf_htonl(1) || port != bpf_htons(proxy_port6)) {
		return 1;
	}
	cookie = bpf_get_socket_cookie(ctx);
	c = bpf_map_lookup_elem(&twu_conns, &cookie);
	if (!c || (c->family == 4) != !!mapped)
		return 1;
	__builtin_memcpy(a, c->daddr, 16);
	ctx->user_ip6[0] = a[0];
	ctx->user_ip6[1] = a[1];
	ctx->user_ip6[2] = a[2];
	ctx->user_ip6[3] = a[3];
	ctx->user_port = c->dport;
	twu_count(TWU_CNT_GETPEERNAME);
	return 1;
}
