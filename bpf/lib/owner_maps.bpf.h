/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The owner tables, shared by the classifier and the attribution probes
 * (bpf/owner_probes.bpf.c): the daemon creates them once (with the
 * classifier) and hands their fds to the probes (bpf_map__reuse_fd), so both
 * objects declare them identically here. Layouts: abi/tlswall_abi.h. */
#ifndef TLSWALL_BPF_LIB_OWNER_MAPS_BPF_H
#define TLSWALL_BPF_LIB_OWNER_MAPS_BPF_H

#include "lib/common.bpf.h"

/* Socket -> who opened it; freed with the socket. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct tw_owner);
} tw_owners SEC(".maps");

/* Flow 5-tuple -> owner, written by the kprobe backend (which cannot reach
 * socket storage); the classifier moves an entry into tw_owners at the SYN
 * and deletes it. LRU: entries of SYNs that never left age out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct tw_flow_key);
	__type(value, struct tw_owner);
} tw_owner_tuples SEC(".maps");

#endif /* TLSWALL_BPF_LIB_OWNER_MAPS_BPF_H */
