/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Every map of the upgrade redirect, each with its purpose. Layouts:
 * abi/tlswall_upgrade_abi.h. */
#ifndef TLSWALL_BPF_LIB_UPGRADE_MAPS_BPF_H
#define TLSWALL_BPF_LIB_UPGRADE_MAPS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "abi/tlswall_upgrade_abi.h"

/* IPv4 destination -> class: (slot, prefix) -> twu_dest_value. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, TWU_MAX_PREFIXES *TWU_SLOTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct twu_lpm4_key);
	__type(value, struct twu_dest_value);
} twu_lpm4 SEC(".maps");

/* IPv6 destination -> class: (slot, prefix) -> twu_dest_value. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, TWU_MAX_PREFIXES *TWU_SLOTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct twu_lpm6_key);
	__type(value, struct twu_dest_value);
} twu_lpm6 SEC(".maps");

/* (slot, class, port prefix) -> the upgrade rule that owns the port. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, TWU_MAX_PORT_ROWS *TWU_SLOTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct twu_port_key);
	__type(value, struct twu_rule);
} twu_ports SEC(".maps");

/* (slot, rule, uid) -> 1: uids a TWU_RULE_UID rule accepts. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TWU_MAX_OWNER_KEYS *TWU_SLOTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct twu_uid_key);
	__type(value, __u8);
} twu_uids SEC(".maps");

/* (slot, rule, comm) -> 1: comms a TWU_RULE_COMM rule accepts. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TWU_MAX_OWNER_KEYS *TWU_SLOTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct twu_comm_key);
	__type(value, __u8);
} twu_comms SEC(".maps");

/* (slot, rule, cgroup id) -> 1: cgroups (with their subtrees) a
 * TWU_RULE_CGROUP rule accepts. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TWU_MAX_OWNER_KEYS *TWU_SLOTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct twu_cgroup_key);
	__type(value, __u8);
} twu_cgroups SEC(".maps");

/* (slot, rule, device, inode) -> 1: executables a TWU_RULE_EXE rule accepts. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TWU_MAX_OWNER_KEYS *TWU_SLOTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct twu_exe_key);
	__type(value, __u8);
} twu_exes SEC(".maps");

/* Generation each slot holds (a slot is read only for its generation). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TWU_SLOTS);
	__type(key, __u32);
	__type(value, struct twu_slot_meta);
} twu_slots SEC(".maps");

/* Active selection generation (element 0), stored by the daemon through an
 * mmap: one aligned 64-bit store flips the whole selection. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct twu_state);
} twu_state SEC(".maps");

/* Client socket cookie -> original destination and owner, for the life of
 * the redirected socket (getpeername, and the peer record's source). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TWU_DEFAULT_CONNS);
	__type(key, __u64);
	__type(value, struct twu_conn);
} twu_conns SEC(".maps");

/* Client (addr, port) as the proxy's accepted socket sees it -> the same
 * record; the proxy reads and deletes it once. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TWU_DEFAULT_CONNS);
	__type(key, struct twu_peer_key);
	__type(value, struct twu_conn);
} twu_peers SEC(".maps");

/* Counters by enum twu_counter (per CPU; the daemon sums). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TWU_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} twu_counters SEC(".maps");

static __always_inline void twu_count(__u32 counter)
{
	__u64 *v = bpf_map_lookup_elem(&twu_counters, &counter);

	if (v)
		*v += 1;
}

#endif /* TLSWALL_BPF_LIB_UPGRADE_MAPS_BPF_H */
