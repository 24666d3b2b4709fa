/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Constants of the attribution probes (bpf/owner_probes.bpf.c) that the
 * daemon reads: the indices of the probes' per-CPU counter array
 * (owner_counters). The owner record itself (struct tw_owner) and the
 * backend numbers live in tlswall_abi.h. Numbers are never reused.
 */
#ifndef TLSWALL_BPF_ABI_OWNER_PROBES_ABI_H
#define TLSWALL_BPF_ABI_OWNER_PROBES_ABI_H

enum tw_owner_counter {
	TW_OWNER_CNT_RECORDED = 0,     /* owner records written (any backend) */
	TW_OWNER_CNT_STORAGE_FAIL = 1, /* bpf_sk_storage_get(F_CREATE) gave nothing (no memory) */
	TW_OWNER_CNT_TUPLE_FAIL = 2,   /* update of tw_owner_tuples failed */
	TW_OWNER_CNT_FAMILY = 3,       /* kprobe: socket neither AF_INET nor AF_INET6 */
	TW_OWNER_CNT_NO_SOCK = 4,      /* sock_ops: connect callback without a socket */
	TW_OWNER_CNT_MAX = 5,
};

#endif /* TLSWALL_BPF_ABI_OWNER_PROBES_ABI_H */
