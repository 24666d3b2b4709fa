/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Raw-socket probes (bpf/raw_socket_probes.bpf.c): the record of a process
 * opening a socket whose frames can leave without passing the tc egress
 * classifier (AF_PACKET with PACKET_QDISC_BYPASS, AF_XDP), and the indices
 * of the probes' per-CPU counters. Numbers are never reused.
 */
#ifndef TLSWALL_BPF_ABI_RAW_SOCKET_ABI_H
#define TLSWALL_BPF_ABI_RAW_SOCKET_ABI_H

#define TW_AF_PACKET 17
#define TW_AF_XDP    44

enum tw_raw_backend {
	TW_RAW_BACKEND_NONE = 0,
	TW_RAW_BACKEND_FENTRY = 1,     /* fentry/security_socket_post_create */
	TW_RAW_BACKEND_KPROBE = 2,     /* kprobe/security_socket_post_create */
	TW_RAW_BACKEND_TRACEPOINT = 3, /* syscalls/sys_{enter,exit}_socket */
};

#define TW_RAW_SOCKET_EVENT_VERSION 1

struct tw_raw_socket_event {
	__u16 version;	 /* TW_RAW_SOCKET_EVENT_VERSION */
	__u16 backend;	 /* enum tw_raw_backend */
	__u32 size;	 /* bytes of the whole record */
	__u64 ktime_ns;	 /* bpf_ktime_get_ns() */
	__u64 cgroup_id; /* cgroup v2 id of the task */
	__u32 tgid;
	__u32 pid; /* thread */
	__u32 uid;
	__u32 gid;
	__u32 netns_ino; /* network namespace inode of the task, 0 if unknown */
	__s32 family;	 /* TW_AF_PACKET or TW_AF_XDP */
	__s32 type;	 /* SOCK_RAW, SOCK_DGRAM, ... (flags masked off) */
	__s32 protocol;
	char comm[16];
};

enum tw_raw_counter {
	TW_RAW_CNT_SEEN = 0, /* raw sockets reported */
	TW_RAW_CNT_LOST = 1, /* ring buffer full: record lost */
	TW_RAW_CNT_MAX = 2,
};

#endif /* TLSWALL_BPF_ABI_RAW_SOCKET_ABI_H */
