/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The classifier's side of attribution: the owner record a probe
 * (bpf/owner_probes.bpf.c) left for a packet's socket, and the policy's
 * owner groups that match it (abi/tlswall_abi.h, "policy by owner"). Read
 * when a flow's decision is made and when an event is sent, never per
 * packet of a decided flow.
 */
#ifndef TLSWALL_BPF_LIB_OWNER_MATCH_BPF_H
#define TLSWALL_BPF_LIB_OWNER_MATCH_BPF_H

#include "lib/maps.bpf.h"

/* The record of skb's socket: socket storage (fentry, tp_btf, sock_ops
 * backends) or, for the kprobe backend, the tuple table. Returns an enum
 * tw_owner_status; *rec is set when it is TW_OWNER_RECORDED. */
static __always_inline __u8 tw_owner_lookup(struct __sk_buff *skb, const struct tw_flow_key *key,
					    const struct tw_owner **rec)
{
	struct bpf_sock *sk = skb->sk;

	*rec = 0;
	if (!sk)
		return TW_OWNER_NO_SOCKET;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return TW_OWNER_NOT_FULL_SOCK;
	*rec = bpf_sk_storage_get(&tw_owners, sk, 0, 0);
	if (!*rec)
		*rec = bpf_map_lookup_elem(&tw_owner_tuples, key);
	return *rec ? TW_OWNER_RECORDED : TW_OWNER_NOT_RECORDED;
}

/* Fills what an event says about the owner. Without a record the socket
 * still tells its uid and cgroup. */
static __always_inline __u8 tw_owner_fill(struct __sk_buff *skb, const struct tw_flow_key *key,
					  struct tw_owner *out)
{
	const struct tw_owner *rec;
	__u8 status = tw_owner_lookup(skb, key, &rec);

	if (rec) {
		__builtin_memcpy(out, rec, sizeof(*out));
		return status;
	}
	__builtin_memset(out, 0, sizeof(*out));
	if (status == TW_OWNER_NOT_RECORDED) {
		out->uid = bpf_get_socket_uid(skb);
		out->cgroup_id = bpf_skb_cgroup_id(skb);
	}
	return status;
}

/* Index of the lowest set bit of m (m != 0); loop-free. */
static __always_inline __u32 tw_lowest_bit(__u64 m)
{
	__u32 n = 0;

	m &= -m;
	if (m >> 32) {
		n += 32;
		m >>= 32;
	}
	if (m >> 16) {
		n += 16;
		m >>= 16;
	}
	if (m >> 8) {
		n += 8;
		m >>= 8;
	}
	if (m >> 4) {
		n += 4;
		m >>= 4;
	}
	if (m >> 2) {
		n += 2;
		m >>= 2;
	}
	if (m >> 1)
		n += 1;
	return n;
}

/* The owner groups of slot `slot` that skb's owner matches. */
static __always_inline __u64 tw_owner_match(struct __sk_buff *skb, const struct tw_flow_key *key,
					    const struct tw_slot_meta *meta, __u32 slot)
{
	__u64 uid_m = meta->uid_free, comm_m = meta->comm_free, cg_m = meta->cgroup_free;
	struct bpf_sock *sk = skb->sk;
	__u64 *v;

	if (!sk || !bpf_sk_fullsock(sk))
		return 0; /* forwarded or not a full socket: no owner to match */
	if (meta->groups & ~meta->uid_free) {
		struct tw_owner_uid_key uk = {.slot = slot, .uid = bpf_get_socket_uid(skb)};

		v = bpf_map_lookup_elem(&tw_owner_uids, &uk);
		if (v)
			uid_m |= *v;
	}
	if (meta->groups & ~meta->comm_free) {
		const struct tw_owner *rec;

		if (tw_owner_lookup(skb, key, &rec) == TW_OWNER_RECORDED && rec) {
			struct tw_owner_comm_key ck = {.slot = slot};

			__builtin_memcpy(ck.comm, rec->comm, sizeof(ck.comm));
			v = bpf_map_lookup_elem(&tw_owner_comms, &ck);
			if (v)
				comm_m |= *v;
		}
	}
	if (meta->groups & ~meta->cgroup_free) {
		__u32 levels = meta->cgroup_levels;

#pragma unroll
		for (int level = 0; level < TW_MAX_CGROUP_LEVEL; level++) {
			struct tw_owner_cgroup_key gk = {.slot = slot};

			if (!(levels & (1u << level)))
				continue;
			gk.cgroup_id = bpf_skb_ancestor_cgroup_id(skb, level);
			if (!gk.cgroup_id)
				break; /* the socket's cgroup is shallower */
			v = bpf_map_lookup_elem(&tw_owner_cgroups, &gk);
			if (v)
				cg_m |= *v;
		}
	}
	return uid_m & comm_m & cg_m & meta->groups;
}

#endif /* TLSWALL_BPF_LIB_OWNER_MATCH_BPF_H */
