/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Every map of the classifier, each with its purpose. Layouts: abi/tlswall_abi.h. */
#ifndef TLSWALL_BPF_LIB_MAPS_BPF_H
#define TLSWALL_BPF_LIB_MAPS_BPF_H

#include "lib/common.bpf.h"
#include "abi/tlswall_abi_history.h"
#include "lib/owner_maps.bpf.h"

/* Flow verdict cache: 5-tuple -> first-bytes class + policy decision. LRU, so
 * table pressure evicts the oldest flows; an evicted flow that sends data
 * again is "state lost": passed and counted, never blocked mid-stream. The
 * flow reaper (lib/flow_reap.bpf.h) frees the state of destroyed sockets,
 * so eviction is for pressure only. The daemon may raise max_entries before
 * load. One LRU for the whole table (not BPF_F_NO_COMMON_LRU): each CPU
 * takes free entries from a local batch, and an insert into a full table
 * costs about a third less than with per-CPU lists (BENCHMARKS.md), which
 * also split the capacity by CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct tw_flow_key);
	__type(value, struct tw_flow_state);
} tw_flows SEC(".maps");

/* Deeper checks of protected flows judged TLS (abi/tlswall_abi.h, "deeper
 * TLS checks"): a record per flow until its later client records and its
 * server's answer are judged; the egress and ingress classifiers share it.
 * LRU like the flow table, and as large: an evicted record ends its
 * flow's checks (counted: TW_CNT_FLOW_TABLE_FULL is for the flow table). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct tw_flow_key);
	__type(value, struct tw_tls_check);
} tw_tls_checks SEC(".maps");

/* IPv4 destination -> class: (slot, prefix) -> tw_dest_value. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, TW_MAX_PREFIXES *TW_POLICY_SLOTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct tw_lpm4_key);
	__type(value, struct tw_dest_value);
} tw_lpm4 SEC(".maps");

/* IPv6 destination -> class: (slot, prefix) -> tw_dest_value. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, TW_MAX_PREFIXES *TW_POLICY_SLOTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct tw_lpm6_key);
	__type(value, struct tw_dest_value);
} tw_lpm6 SEC(".maps");

/* (slot, class, port prefix) -> verdict of a protected port. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, TW_MAX_PORT_ROWS *TW_POLICY_SLOTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct tw_port_key);
	__type(value, struct tw_port_verdict);
} tw_ports SEC(".maps");

/* Decision cache: the policy lookups of recent (generation, destination,
 * port) pairs, direct-mapped by hash, per CPU (lib/policy.bpf.h). Not
 * pinned: every loaded program starts with an empty one. */
#define TW_DCACHE_BITS 10
struct tw_dcache_entry {
	__u64 generation; /* 0: empty */
	__u8 daddr[16];
	__u16 dport; /* host order */
	__u8 family;
	__u8 found;	 /* TW_DC_* */
	__u8 dest_flags; /* TW_DEST_*, if found & TW_DC_DEST */
	__u8 pad[3];
	struct tw_port_verdict v; /* if found & TW_DC_VERDICT */
	__u32 publish_id;	  /* tw_slot_meta.publish_id of the generation */
	__u32 pad2;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1 << TW_DCACHE_BITS);
	__type(key, __u32);
	__type(value, struct tw_dcache_entry);
} tw_dcache SEC(".maps");

/* Generation held by each slot (a slot is used only for its generation). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TW_POLICY_SLOTS);
	__type(key, __u32);
	__type(value, struct tw_slot_meta);
} tw_slots SEC(".maps");

/* Owner groups of each slot: (slot * TW_MAX_OWNER_GROUPS + bit) -> what the
 * selector rule or exemption decides. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TW_MAX_OWNER_GROUPS *TW_POLICY_SLOTS);
	__type(key, __u32);
	__type(value, struct tw_owner_group);
} tw_owner_groups SEC(".maps");

/* (slot, uid) -> owner groups whose uid selector lists it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TW_MAX_OWNER_KEYS *TW_POLICY_SLOTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct tw_owner_uid_key);
	__type(value, __u64);
} tw_owner_uids SEC(".maps");

/* (slot, comm) -> owner groups whose comm selector lists it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TW_MAX_OWNER_KEYS *TW_POLICY_SLOTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct tw_owner_comm_key);
	__type(value, __u64);
} tw_owner_comms SEC(".maps");

/* (slot, cgroup id) -> owner groups whose cgroup selector is that cgroup
 * (its descendants match through their ancestor at the selector's level). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TW_MAX_OWNER_KEYS *TW_POLICY_SLOTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct tw_owner_cgroup_key);
	__type(value, __u64);
} tw_owner_cgroups SEC(".maps");

/* Counters by enum tw_counter (per CPU; the daemon sums). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TW_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} tw_counters SEC(".maps");

/* Dropped packets by enum tw_reason (per CPU; the daemon sums). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TW_REASON_MAX);
	__type(key, __u32);
	__type(value, __u64);
} tw_drop_reasons SEC(".maps");

/* Events to the daemon; a full ring is counted in TW_CNT_EVENTS_LOST. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} tw_events SEC(".maps");

/* Active policy generation (element 0), stored by the daemon through an
 * mmap; slot = TW_SLOT_OF(generation); 0 = no policy yet. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct tw_state);
} tw_state SEC(".maps");

/* Flow table of the previous schema, read on a miss during an upgrade (the
 * daemon points it at the old pinned table); an empty placeholder
 * otherwise. Its value type is the previous layout. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1);
	__type(key, struct tw_flow_key);
	__type(value, struct tw_flow_state_prev);
} tw_flows_prev SEC(".maps");

static __always_inline __u64 tw_active_generation(void)
{
	__u32 zero = 0;
	struct tw_state *s = bpf_map_lookup_elem(&tw_state, &zero);

	return s ? *(volatile __u64 *)&s->policy_generation : 0;
}

#endif /* TLSWALL_BPF_LIB_MAPS_BPF_H */
