/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Upgrade selection: (destination, port, owner) -> the rule that upgrades
 * it, or none. Reads only the slot of the active generation, and only if
 * the slot holds that generation, so a connect never sees half of two
 * selections. Two LPM lookups, then a hash lookup per owner filter the rule
 * has (for cgroups, one per level its cgroups sit at).
 */
#ifndef TLSWALL_BPF_LIB_UPGRADE_SELECT_BPF_H
#define TLSWALL_BPF_LIB_UPGRADE_SELECT_BPF_H

#include <bpf/bpf_core_read.h>

#include "lib/upgrade_maps.bpf.h"

/* The current task, as far as the owner filters and the record need it. */
struct twu_task {
	__u64 pid_tgid;
	__u64 uid_gid;
	char comm[TWU_COMM_LEN];
};

static __always_inline void twu_current_task(struct twu_task *t)
{
	t->pid_tgid = bpf_get_current_pid_tgid();
	t->uid_gid = bpf_get_current_uid_gid();
	__builtin_memset(t->comm, 0, sizeof(t->comm));
	bpf_get_current_comm(t->comm, sizeof(t->comm));
}

enum twu_select {
	TWU_SEL_NONE = 0,	    /* no rule for the destination and port */
	TWU_SEL_RULE = 1,	    /* a rule selects it: *rule is set */
	TWU_SEL_OWNER_FILTERED = 2, /* a rule covers it, its owner filters do not match */
};

/* daddr: 16 bytes, IPv4 as ::ffff:a.b.c.d (family 4); port host order. */
static __always_inline enum twu_select twu_select(__u8 family, const __u8 *daddr, __u16 port,
						  const struct twu_task *task,
						  struct twu_rule *rule, __u64 *generation)
{
	const struct twu_dest_value *dv;
	const struct twu_slot_meta *meta;
	const struct twu_rule *r;
	struct twu_port_key pk = {};
	struct twu_state *st;
	__u32 zero = 0, slot;
	__u64 gen;

	st = bpf_map_lookup_elem(&twu_state, &zero);
	if (!st)
		return TWU_SEL_NONE;
	gen = *(volatile __u64 *)&st->generation;
	if (!gen)
		return TWU_SEL_NONE;
	slot = TWU_SLOT_OF(gen);
	meta = bpf_map_lookup_elem(&twu_slots, &slot);
	if (!meta || meta->generation != gen)
		return TWU_SEL_NONE;

	if (family == 4) {
		struct twu_lpm4_key lk = {};

		lk.prefixlen = 8 + 32;
		lk.slot = slot;
		__builtin_memcpy(lk.addr, daddr + 12, 4);
		dv = bpf_map_lookup_elem(&twu_lpm4, &lk);
	} else {
		struct twu_lpm6_key lk = {};

		lk.prefixlen = 8 + 128;
		lk.slot = slot;
		__builtin_memcpy(lk.addr, daddr, 16);
		dv = bpf_map_lookup_elem(&twu_lpm6, &lk);
	}
	if (!dv)
		return TWU_SEL_NONE;

	pk.prefixlen = 8 + 16 + 16;
	pk.slot = slot;
	pk.class_id[0] = dv->class_id >> 8;
	pk.class_id[1] = dv->class_id & 0xff;
	pk.port[0] = port >> 8;
	pk.port[1] = port & 0xff;
	r = bpf_map_lookup_elem(&twu_ports, &pk);
	if (!r)
		return TWU_SEL_NONE;

	if (r->flags & TWU_RULE_UID) {
		struct twu_uid_key uk = {};

		uk.slot = slot;
		uk.rule_id = r->rule_id;
		uk.uid = (__u32)task->uid_gid;
		if (!bpf_map_lookup_elem(&twu_uids, &uk))
			return TWU_SEL_OWNER_FILTERED;
	}
	if (r->flags & TWU_RULE_COMM) {
		struct twu_comm_key ck = {};

		ck.slot = slot;
		ck.rule_id = r->rule_id;
		__builtin_memcpy(ck.comm, task->comm, TWU_COMM_LEN);
		if (!bpf_map_lookup_elem(&twu_comms, &ck))
			return TWU_SEL_OWNER_FILTERED;
	}
	if (r->flags & TWU_RULE_CGROUP) {
		struct twu_cgroup_key gk = {};
		__u32 levels = r->flags >> TWU_RULE_LEVEL_SHIFT;
		int hit = 0;

		gk.slot = slot;
		gk.rule_id = r->rule_id;
		for (int l = 0; l < TWU_MAX_CGROUP_LEVEL; l++) {
			if (!(levels & (1u << l)))
				continue;
			/* The task's ancestor at level l (its own cgroup at its
			 * level; 0 above its depth). */
			gk.cgroup_id = bpf_get_current_ancestor_cgroup_id(l);
			if (gk.cgroup_id && bpf_map_lookup_elem(&twu_cgroups, &gk)) {
				hit = 1;
				break;
			}
		}
		if (!hit)
			return TWU_SEL_OWNER_FILTERED;
	}
	if (r->flags & TWU_RULE_EXE) {
		struct task_struct *t = (struct task_struct *)bpf_get_current_task();
		struct twu_exe_key ek = {};

		ek.slot = slot;
		ek.rule_id = r->rule_id;
		ek.ino = BPF_CORE_READ(t, mm, exe_file, f_inode, i_ino);
		ek.dev = BPF_CORE_READ(t, mm, exe_file, f_inode, i_sb, s_dev);
		/* A kernel thread (no mm) reads 0: never listed. */
		if (!ek.ino || !bpf_map_lookup_elem(&twu_exes, &ek))
			return TWU_SEL_OWNER_FILTERED;
	}
	*rule = *r;
	*generation = gen;
	return TWU_SEL_RULE;
}

#endif /* TLSWALL_BPF_LIB_UPGRADE_SELECT_BPF_H */
