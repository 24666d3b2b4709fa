/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Attribution helpers: who is connecting (the current task) and where the
 * record goes (socket storage, or the tuple table for the kprobe backend).
 * Used by bpf/owner_probes.bpf.c. Kernel-version differences of these reads
 * live here and nowhere else. */
#ifndef TLSWALL_BPF_LIB_OWNER_BPF_H
#define TLSWALL_BPF_LIB_OWNER_BPF_H

#include "lib/common.bpf.h"
#include "lib/owner_maps.bpf.h"
#include "lib/sock_key.bpf.h"
#include "abi/owner_probes_abi.h"

#include <bpf/bpf_core_read.h>

#define TW_ENOMEM 12 /* uapi errno: vmlinux.h has no macros */

/* What went wrong in a probe (per CPU; indices: abi/owner_probes_abi.h).
 * The daemon sums the CPUs and reports them in its status. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TW_OWNER_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} owner_counters SEC(".maps");

static __always_inline void tw_probe_count(__u32 counter)
{
	__u64 *v = bpf_map_lookup_elem(&owner_counters, &counter);

	if (v)
		*v += 1;
}

/* task_struct::start_boottime was called real_start_time (same meaning:
 * boot-based ns) before Linux 5.5, commit "time: Rename tsk->real_start_time
 * to ->start_boottime". */
struct task_struct___pre_5_5 {
	u64 real_start_time;
} __attribute__((preserve_access_index));

/* Start time of the current process (its thread group leader), the value
 * /proc/<tgid>/stat shows in field 22 (in clock ticks). Tracing programs
 * only: other types cannot reach the task. bpf_get_current_task(), not
 * bpf_get_current_task_btf(): the BTF variant came with Linux 5.11 (a 5.10
 * verifier rejects the call, "invalid func unknown#158"; found by the
 * kernel matrix, tests/kernel_matrix/), and every read below is a CO-RE
 * probe read anyway. */
static __always_inline __u64 tw_probe_start_boottime(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct task_struct *leader = BPF_CORE_READ(task, group_leader);
	struct task_struct___pre_5_5 *old = (void *)leader;

	if (bpf_core_field_exists(leader->start_boottime))
		return BPF_CORE_READ(leader, start_boottime);
	if (bpf_core_field_exists(old->real_start_time))
		return BPF_CORE_READ(old, real_start_time);
	return 0;
}

/* The record of the current task; start_boottime_ns as the caller knows it. */
static __always_inline void tw_probe_fill(struct tw_owner *o, __u8 backend, __u64 start_boottime_ns)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();

	__builtin_memset(o, 0, sizeof(*o));
	o->cgroup_id = bpf_get_current_cgroup_id();
	o->start_boottime_ns = start_boottime_ns;
	o->pid = (__u32)pid_tgid;
	o->tgid = (__u32)(pid_tgid >> 32);
	o->uid = (__u32)uid_gid;
	o->gid = (__u32)(uid_gid >> 32);
	bpf_get_current_comm(o->comm, sizeof(o->comm));
	o->backend = backend;
}

/* Records the current task as the owner of `sk` in tw_owners (socket
 * storage, created on first use). `sk` is what the program type has: a
 * struct sock (tracing) or a struct bpf_sock (sock_ops). */
static __always_inline int tw_probe_record_sk(void *sk, __u8 backend, __u64 start_boottime_ns)
{
	struct tw_owner rec;
	struct tw_owner *o;

	o = bpf_sk_storage_get(&tw_owners, sk, NULL, BPF_SK_STORAGE_GET_F_CREATE);
	if (!o) {
		tw_probe_count(TW_OWNER_CNT_STORAGE_FAIL);
		return -TW_ENOMEM;
	}
	tw_probe_fill(&rec, backend, start_boottime_ns);
	*o = rec;
	tw_probe_count(TW_OWNER_CNT_RECORDED);
	return 0;
}

/* Records the current task as the owner of the flow `sk` is about to open,
 * in tw_owner_tuples (for probes that cannot reach socket storage). */
static __always_inline int tw_probe_record_tuple(struct sock *sk, __u8 backend,
						 __u64 start_boottime_ns)
{
	struct tw_flow_key key;
	struct tw_owner rec;
	int err;

	err = tw_sock_flow_key(sk, &key);
	if (err < 0) {
		tw_probe_count(TW_OWNER_CNT_FAMILY);
		return err;
	}
	tw_probe_fill(&rec, backend, start_boottime_ns);
	err = bpf_map_update_elem(&tw_owner_tuples, &key, &rec, BPF_ANY);
	if (err < 0) {
		tw_probe_count(TW_OWNER_CNT_TUPLE_FAIL);
		return err;
	}
	tw_probe_count(TW_OWNER_CNT_RECORDED);
	return 0;
}

#endif /* TLSWALL_BPF_LIB_OWNER_BPF_H */
