// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Blind-spot probes: report every process that opens an AF_PACKET or AF_XDP
 * socket. Frames sent through such a socket can leave without passing the tc
 * egress classifier (AF_PACKET with PACKET_QDISC_BYPASS, AF_XDP in
 * zero-copy or copy mode), so the agent cannot judge them; it can say who
 * opened the door. Three backends of the same record, the daemon attaches
 * the first that works (agent/attribution/raw_socket_probes.cc). Every
 * program only observes: nothing here can drop or redirect traffic or fail
 * a socket() call.
 */
#include "lib/common.bpf.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "abi/raw_socket_abi.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} raw_socket_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TW_RAW_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} raw_socket_counters SEC(".maps");

/* Tracepoint backend: socket() arguments from entry to exit, per thread. */
struct raw_socket_args {
	__s32 family, type, protocol;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64); /* pid_tgid */
	__type(value, struct raw_socket_args);
} raw_socket_pending SEC(".maps");

#define SOCK_TYPE_MASK_ 0xf

static __always_inline bool raw_family(int family)
{
	return family == TW_AF_PACKET || family == TW_AF_XDP;
}

static __always_inline void raw_count(__u32 i)
{
	__u64 *v = bpf_map_lookup_elem(&raw_socket_counters, &i);

	if (v)
		*v += 1;
}

static __always_inline void raw_report(int family, int type, int protocol, __u16 backend)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct tw_raw_socket_event *e;
	__u64 id = bpf_get_current_pid_tgid();
	__u64 ug = bpf_get_current_uid_gid();

	e = bpf_ringbuf_reserve(&raw_socket_events, sizeof(*e), 0);
	if (!e) {
		raw_count(TW_RAW_CNT_LOST);
		return;
	}
	e->version = TW_RAW_SOCKET_EVENT_VERSION;
	e->backend = backend;
	e->size = sizeof(*e);
	e->ktime_ns = bpf_ktime_get_ns();
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->tgid = id >> 32;
	e->pid = (__u32)id;
	e->uid = (__u32)ug;
	e->gid = ug >> 32;
	e->netns_ino = BPF_CORE_READ(task, nsproxy, net_ns, ns.inum);
	e->family = family;
	e->type = type & SOCK_TYPE_MASK_;
	e->protocol = protocol;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
	raw_count(TW_RAW_CNT_SEEN);
}

/* fentry and kprobe: the LSM hook every successful socket creation passes
 * (socket(2), and io_uring's IORING_OP_SOCKET). kern = 1: the kernel's own
 * sockets, not a process's. */
SEC("fentry/security_socket_post_create")
int BPF_PROG(raw_socket_fentry, struct socket *sock, int family, int type, int protocol, int kern)
{
	if (!kern && raw_family(family))
		raw_report(family, type, protocol, TW_RAW_BACKEND_FENTRY);
	return 0;
}

SEC("kprobe/security_socket_post_create")
int BPF_KPROBE(raw_socket_kprobe, struct socket *sock, int family, int type, int protocol, int kern)
{
	if (!kern && raw_family(family))
		raw_report(family, type, protocol, TW_RAW_BACKEND_KPROBE);
	return 0;
}

/* Tracepoints: socket(2) only (not io_uring); reported when it succeeded. */
SEC("tracepoint/syscalls/sys_enter_socket")
int raw_socket_enter(struct trace_event_raw_sys_enter *ctx)
{
	struct raw_socket_args a = {
		.family = (__s32)ctx->args[0],
		.type = (__s32)ctx->args[1],
		.protocol = (__s32)ctx->args[2],
	};
	__u64 id;

	if (!raw_family(a.family))
		return 0;
	id = bpf_get_current_pid_tgid();
	bpf_map_update_elem(&raw_socket_pending, &id, &a, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_socket")
int raw_socket_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct raw_socket_args *a = bpf_map_lookup_elem(&raw_socket_pending, &id);
	struct raw_socket_args copy;

	if (!a)
		return 0;
	copy = *a;
	bpf_map_delete_elem(&raw_socket_pending, &id);
	if (ctx->ret >= 0)
		raw_report(copy.family, copy.type, copy.protocol, TW_RAW_BACKEND_TRACEPOINT);
	return 0;
}
