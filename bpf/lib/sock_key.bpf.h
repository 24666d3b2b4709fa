/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The flow-table key of a kernel TCP socket, as the tc classifier builds it
 * from the socket's packets. Shared by the attribution probes (the kprobe
 * backend keys its records like the flow table) and the flow reaper (which
 * finds the state of a socket being destroyed). Tracing programs only. */
#ifndef TLSWALL_BPF_LIB_SOCK_KEY_BPF_H
#define TLSWALL_BPF_LIB_SOCK_KEY_BPF_H

#include "lib/common.bpf.h"

#include <bpf/bpf_core_read.h>

/* uapi socket families and errnos: vmlinux.h has no macros. */
#define TW_AF_INET	2
#define TW_AF_INET6	10
#define TW_EAFNOSUPPORT 97

static __always_inline void tw_sock_v4_mapped(__u8 dst[16], __be32 addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &addr, 4);
}

static __always_inline bool tw_sock_is_v4_mapped(const __u8 a[16])
{
	const __u32 *w = (const __u32 *)a;

	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0x0000ffff);
}

/* The flow key of `sk` (saddr = local, IPv4 as ::ffff:a.b.c.d). Valid from
 * tcp_connect() on (the 4-tuple is chosen, the SYN not yet sent) until the
 * socket is freed: the local port is read from inet_sport, which stays set
 * when a closing socket gives its bound port back (that clears skc_num).
 * An AF_INET6 socket connecting to an IPv4-mapped address sends IPv4
 * (tcp_v6_connect() hands it to tcp_v4_connect()), so its key has family 4,
 * read from the IPv4 fields tcp_v4_connect() sets before calling
 * tcp_connect() (whether skc_v6_rcv_saddr is already mapped at that point
 * depends on the kernel version). */
static __always_inline int tw_sock_flow_key(struct sock *sk, struct tw_flow_key *key)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	__be16 sport = BPF_CORE_READ((struct inet_sock *)sk, inet_sport);

	__builtin_memset(key, 0, sizeof(*key));
	key->proto = IPPROTO_TCP_;
	key->sport = sport ? sport : bpf_htons(BPF_CORE_READ(sk, __sk_common.skc_num));
	key->dport = BPF_CORE_READ(sk, __sk_common.skc_dport);
	if (family == TW_AF_INET6) {
		/* No skc_v6_* without CONFIG_IPV6: no IPv6 sockets either. */
		if (!bpf_core_field_exists(sk->__sk_common.skc_v6_daddr))
			return -TW_EAFNOSUPPORT;
		BPF_CORE_READ_INTO(&key->daddr, sk, __sk_common.skc_v6_daddr);
		if (!tw_sock_is_v4_mapped(key->daddr)) {
			key->family = 6;
			BPF_CORE_READ_INTO(&key->saddr, sk, __sk_common.skc_v6_rcv_saddr);
			return 0;
		}
	} else if (family != TW_AF_INET) {
		return -TW_EAFNOSUPPORT;
	}
	key->family = 4;
	tw_sock_v4_mapped(key->saddr, BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr));
	tw_sock_v4_mapped(key->daddr, BPF_CORE_READ(sk, __sk_common.skc_daddr));
	return 0;
}

#endif /* TLSWALL_BPF_LIB_SOCK_KEY_BPF_H */
