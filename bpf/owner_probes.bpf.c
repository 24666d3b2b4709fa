// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Attribution probes: record who opens a connecting TCP socket (pid, uid,
 * comm, cgroup) before its SYN leaves, so the tc classifier can name the
 * owner of a flow. Four backends of the same record, one per kind of hook;
 * the daemon loads and attaches exactly one, the best the kernel offers
 * (agent/attribution/owner_probes.cc). Thin entry points; the logic lives in
 * lib/owner.bpf.h. Every program returns "no effect": nothing here can drop
 * or redirect traffic.
 */
#include "lib/owner.bpf.h"

#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Backend kprobe: tcp_connect() entry, 4-tuple set, SYN not yet sent.
 * kprobes cannot use socket storage: the record goes to tw_owner_tuples,
 * keyed like the flow table; the classifier moves it at the SYN. */
SEC("kprobe/tcp_connect")
int BPF_KPROBE(owner_kprobe, struct sock *sk)
{
	tw_probe_record_tuple(sk, TW_BACKEND_KPROBE, tw_probe_start_boottime());
	return 0;
}

/* Backend fentry: the same point, with socket storage. */
SEC("fentry/tcp_connect")
int BPF_PROG(owner_fentry, struct sock *sk)
{
	tw_probe_record_sk(sk, TW_BACKEND_FENTRY, tw_probe_start_boottime());
	return 0;
}

/* Backend tp_btf: inet_sock_set_state to SYN_SENT fires inside connect()
 * (and a TCP Fast Open sendto()) before the SYN is built. The source port
 * may still be 0 here; socket storage does not need it. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(owner_tp_btf, struct sock *sk, int oldstate, int newstate)
{
	if (newstate != TCP_SYN_SENT)
		return 0;
	/* sk_protocol was a bitfield before 5.6: the probed bitfield read
	 * handles both layouts. */
	if (BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol) != IPPROTO_TCP_)
		return 0;
	tw_probe_record_sk(sk, TW_BACKEND_TP_BTF, tw_probe_start_boottime());
	return 0;
}

/* Backend sock_ops: TCP_CONNECT_CB (always delivered, no cb flag needed) is
 * the first thing tcp_connect() does, in the connecting task. Only for
 * sockets of the cgroup (subtree) the program is attached to. The task is
 * out of reach here: start_boottime_ns is 0. Returns 1: no effect. */
SEC("sockops")
int owner_sock_ops(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk;

	if (skops->op != BPF_SOCK_OPS_TCP_CONNECT_CB)
		return 1;
	sk = skops->sk;
	if (!sk) {
		tw_probe_count(TW_OWNER_CNT_NO_SOCK);
		return 1;
	}
	tw_probe_record_sk(sk, TW_BACKEND_SOCK_OPS, 0);
	return 1;
}
