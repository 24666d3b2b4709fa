// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Test-only: the kprobe backend's recording (tw_probe_record_tuple: flow key
 * from the socket, owner into tw_owner_tuples) run from a sock_ops
 * TCP_CONNECT_CB. The kernel makes that callback the first thing
 * tcp_connect() does, so the socket is exactly as kprobe/tcp_connect sees
 * it. Kernels without kprobes (the test machines) can thus still check the
 * kprobe backend's keys against real sockets. Attached by the tests to a
 * child cgroup they create; returns 1 (no effect).
 */
#include "lib/owner.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("sockops")
int owner_key_probe(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk;
	struct tcp_sock *tp;

	if (skops->op != BPF_SOCK_OPS_TCP_CONNECT_CB)
		return 1;
	sk = skops->sk;
	if (!sk)
		return 1;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 1;
	tw_probe_record_tuple((struct sock *)tp, TW_BACKEND_KPROBE, 0);
	return 1;
}
