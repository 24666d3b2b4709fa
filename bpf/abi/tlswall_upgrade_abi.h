/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Transparent-upgrade redirect ABI: what bpf/upgrade_redirect.bpf.c and the
 * daemon (agent/upgrade/upgrade_redirect.cc) both read. Fixed-width types,
 * explicit padding, no bitfields; "be" = network byte order.
 *
 * Stability: fields are appended, never reordered; a retired field becomes
 * reservedN; a changed key or value layout bumps TWU_SCHEMA (the maps are
 * pinned as "<map>_v<TWU_SCHEMA>"). Counter and flag numbers are never
 * reused. tests/bpf/upgrade_abi_layout_test.cc static_asserts the layout.
 *
 * Selection (double-buffered like the enforcement policy: the slot is part
 * of every key, slot = generation % 2, the active generation is one 64-bit
 * word of the mmapable twu_state array):
 *   destination address --LPM--> class            (twu_lpm4 / twu_lpm6)
 *   (class, port)       --LPM--> rule {id, flags} (twu_ports)
 *   (rule, uid)         --hash--> 1               (twu_uids,  if TWU_RULE_UID)
 *   (rule, comm)        --hash--> 1               (twu_comms, if TWU_RULE_COMM)
 *   (rule, cgroup id)   --hash--> 1               (twu_cgroups, if TWU_RULE_CGROUP:
 *       the connecting task's ancestor at each level the rule names)
 *   (rule, dev, inode)  --hash--> 1               (twu_exes, if TWU_RULE_EXE:
 *       the file the connecting task executes)
 * A connect is redirected if its rule's owner filters all match.
 *
 * Connection records:
 *   socket cookie           --LRU--> twu_conn     (twu_conns: written by
 *       connect4/6, completed by sock_ops, read by getpeername4/6)
 *   client (addr, port) as the proxy's getpeername() shows it
 *                           --LRU--> twu_conn     (twu_peers: written by
 *       sock_ops at TCP_CONNECT_CB, taken (read + deleted) by the proxy)
 * Both are deleted when the client socket reaches TCP_CLOSE.
 */
#ifndef TLSWALL_BPF_ABI_TLSWALL_UPGRADE_ABI_H
#define TLSWALL_BPF_ABI_TLSWALL_UPGRADE_ABI_H

#ifndef __bpf__
#include <linux/types.h>
#endif

#define TWU_SCHEMA 1 /* layout of every twu_* map below */

/* ---- sizes (compile-time; conn tables may be resized at load) ---- */
#define TWU_SLOTS	   2	 /* double buffer: active + being written */
#define TWU_MAX_PREFIXES   4096	 /* address rows per family per slot */
#define TWU_MAX_PORT_ROWS  16384 /* (class, port prefix) rows per slot */
#define TWU_MAX_CLASSES	   65535 /* class ids are 16 bits */
#define TWU_MAX_OWNER_KEYS 4096	 /* uid rows, comm rows per slot */
#define TWU_DEFAULT_CONNS  65536 /* twu_conns / twu_peers entries */
#define TWU_COMM_LEN	   16

#define TWU_SLOT_OF(gen) ((__u32)((gen)&1))

/* ---- selection tables ---- */

/* Address key: prefixlen = 8 (slot) + CIDR length. */
struct twu_lpm4_key {
	__u32 prefixlen; /* host order */
	__u8 slot;
	__u8 addr[4]; /* be */
	__u8 pad[3];  /* zero; never part of the matched prefix */
};

struct twu_lpm6_key {
	__u32 prefixlen; /* host order */
	__u8 slot;
	__u8 addr[16]; /* be; IPv4-mapped addresses are looked up in twu_lpm4 */
	__u8 pad[3];
};

struct twu_dest_value {
	__u16 class_id; /* host order */
	__u8 pad[2];
};

/* (class, port) key: prefixlen = 8 + 16 + port prefix length (0..16). */
struct twu_port_key {
	__u32 prefixlen; /* host order */
	__u8 slot;
	__u8 class_id[2]; /* be */
	__u8 port[2];	  /* be */
	__u8 pad[3];
};

#define TWU_RULE_UID  0x01 /* the owner's uid must be listed in twu_uids */
#define TWU_RULE_COMM 0x02 /* the owner's comm must be listed in twu_comms */
#define TWU_RULE_CGROUP                                                                            \
	0x04 /* the owner's cgroup must be one listed in twu_cgroups, or                           \
	      * below one: bits TWU_RULE_LEVEL_SHIFT.. of flags are the                            \
	      * levels of those cgroups (bit L: level L) */
#define TWU_RULE_EXE 0x08 /* the owner's executable (device, inode) must be in twu_exes */
#define TWU_RULE_LEVEL_SHIFT 8
#define TWU_MAX_CGROUP_LEVEL 24 /* levels 0..23 fit the flags above the shift */

struct twu_rule {
	__u32 rule_id; /* the daemon's rule number, host order */
	__u32 flags;   /* TWU_RULE_* */
};

struct twu_uid_key {
	__u32 slot;
	__u32 rule_id;
	__u32 uid;
};

struct twu_comm_key {
	__u32 slot;
	__u32 rule_id;
	char comm[TWU_COMM_LEN]; /* NUL-padded, as bpf_get_current_comm fills it */
};

struct twu_cgroup_key {
	__u32 slot;
	__u32 rule_id;
	__u64 cgroup_id;
};

struct twu_exe_key {
	__u32 slot;
	__u32 rule_id;
	__u64 ino;  /* inode number of task->mm->exe_file */
	__u32 dev;  /* its superblock's s_dev, kernel encoding: major << 20 | minor */
	__u32 pad;  /* 0 */
};

/* Generation held by each slot; a slot is used only for its generation. */
struct twu_slot_meta {
	__u64 generation;
};

/* Element 0 of the mmapable twu_state array; 0 = no selection yet. */
struct twu_state {
	__u64 generation;
};

/* ---- connection records ---- */

/* The client's address and port as the proxy sees them on the accepted
 * socket: IPv4 as ::ffff:a.b.c.d (also for IPv4-mapped clients). */
struct twu_peer_key {
	__u8 addr[16]; /* be */
	__u16 port;    /* be */
	__u8 pad[2];
};

#define TWU_CONN_V4MAPPED 0x01 /* the client connected to an IPv4-mapped IPv6 address */
#define TWU_CONN_PEER_SET 0x02 /* peer is valid (sock_ops saw TCP_CONNECT_CB) */

struct twu_conn {
	__u64 cookie;	  /* the client socket's cookie */
	__u64 cgroup_id;  /* cgroup v2 id of the connecting task */
	__u64 generation; /* selection generation that chose the rule */
	__u32 rule_id;
	__u32 pid; /* tgid of the connecting task */
	__u32 tid;
	__u32 uid;
	__u32 gid;
	__u8 family;	/* 4 or 6: of the original destination (v4-mapped: 4) */
	__u8 flags;	/* TWU_CONN_* */
	__u16 dport;	/* be: original destination port */
	__u8 daddr[16]; /* be: original destination; IPv4 as ::ffff:a.b.c.d */
	char comm[TWU_COMM_LEN];
	struct twu_peer_key peer; /* valid with TWU_CONN_PEER_SET */
	__u8 pad[4];
	__u64 connect_ns; /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) at connect() */
};

/* ---- counters (per-CPU array twu_counters; never renumbered) ---- */
enum twu_counter {
	TWU_CNT_REDIRECTED = 0,	    /* connects rewritten to the proxy */
	TWU_CNT_PROXY_OWN = 1,	    /* selected, but the proxy worker's own connect */
	TWU_CNT_MAP_FULL = 2,	    /* a twu_conns / twu_peers update failed */
	TWU_CNT_OWNER_FILTERED = 3, /* destination selected, owner filter did not match */
	TWU_CNT_PEER_RECORDED = 4,  /* sock_ops wrote the proxy-side record */
	TWU_CNT_GETPEERNAME = 5,    /* getpeername answers rewritten */
	TWU_CNT_REFUSED = 6,	    /* connects refused (fail closed: no record written) */
	TWU_CNT_OTHER_NETNS = 7,    /* redirected outside the proxy's netns: no peer record */
	TWU_CNT_MAX = 8,
};

#endif /* TLSWALL_BPF_ABI_TLSWALL_UPGRADE_ABI_H */
