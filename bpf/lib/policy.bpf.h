/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Policy lookup: (destination, port) -> protected by which rule, exempt by
 * which exemption. Reads only the slot of the generation it is given, so a
 * decision never mixes two policies.
 */
#ifndef TLSWALL_BPF_LIB_POLICY_BPF_H
#define TLSWALL_BPF_LIB_POLICY_BPF_H

#include "lib/owner_match.bpf.h"

struct tw_decision {
	__u16 rule_id;
	__u16 boundary;
	__u16 exemption;
	__u16 min_tls;
	__u8 protected_;
	__u8 exempt;
	__u8 mode;
	__u8 any_enforce; /* some enforce rule covers the address (any port) */
	__u8 any_rule;	  /* some rule covers the address (any port) */
	__u8 pad[3];
};

static __always_inline const struct tw_dest_value *tw_lookup_dest(const struct tw_flow_key *k,
								  __u32 slot)
{
	if (k->family == 4) {
		struct tw_lpm4_key lk = {};

		lk.prefixlen = 8 + 32;
		lk.slot = slot;
		__builtin_memcpy(lk.addr, k->daddr + 12, 4);
		return bpf_map_lookup_elem(&tw_lpm4, &lk);
	} else {
		struct tw_lpm6_key lk = {};

		lk.prefixlen = 8 + 128;
		lk.slot = slot;
		__builtin_memcpy(lk.addr, k->daddr, 16);
		return bpf_map_lookup_elem(&tw_lpm6, &lk);
	}
}

/* Rules and exemptions with owner selectors that cover the port: a matching
 * selector rule replaces the plain rule, a matching selector exemption
 * exempts. The lowest matching group wins (the compiler orders them). */
static __always_inline void tw_decide_owner(struct __sk_buff *skb, const struct tw_flow_key *k,
					    const struct tw_slot_meta *meta, __u32 slot,
					    __u64 covering, struct tw_decision *d)
{
	__u64 m = tw_owner_match(skb, k, meta, slot) & covering;
	__u64 rules = m & ~meta->exempt_groups;
	__u64 exempts = m & meta->exempt_groups;
	const struct tw_owner_group *g;
	__u32 idx;

	if (rules) {
		idx = slot * TW_MAX_OWNER_GROUPS + tw_lowest_bit(rules);
		g = bpf_map_lookup_elem(&tw_owner_groups, &idx);
		if (g) {
			d->protected_ = 1;
			d->rule_id = g->rule_id;
			d->boundary = g->boundary;
			d->min_tls = g->min_tls;
			d->mode = g->mode;
		}
	}
	if (exempts && !d->exempt) {
		idx = slot * TW_MAX_OWNER_GROUPS + tw_lowest_bit(exempts);
		g = bpf_map_lookup_elem(&tw_owner_groups, &idx);
		if (g) {
			d->exempt = 1;
			d->exemption = g->exemption;
		}
	}
}

/* Decides for destination k->daddr and port `port` (host order): two
 * lookups, no loops; where rules or exemptions with owner selectors cover
 * the port, the owner of skb's socket is matched too. With any_port set,
 * only says whether some rule (and some enforce rule) covers the address,
 * for packets whose L4 is hidden. */
static __always_inline void tw_decide(struct __sk_buff *skb, const struct tw_flow_key *k,
				      __u16 port, __u64 generation, int any_port,
				      struct tw_decision *d)
{
	const struct tw_dest_value *dv;
	const struct tw_port_verdict *v;
	const struct tw_slot_meta *meta;
	struct tw_port_key pk = {};
	__u32 slot = TW_SLOT_OF(generation);

	__builtin_memset(d, 0, sizeof(*d));
	if (!generation)
		return;
	meta = bpf_map_lookup_elem(&tw_slots, &slot);
	if (!meta || meta->generation != generation)
		return;
	dv = tw_lookup_dest(k, slot);
	if (!dv)
		return;
	d->any_rule = !!(dv->flags & TW_DEST_ANY_RULE);
	d->any_enforce = !!(dv->flags & TW_DEST_ANY_ENFORCE);
	if (any_port || !d->any_rule)
		return;
	pk.prefixlen = 8 + 16 + 16;
	pk.slot = slot;
	pk.class_id[0] = dv->class_id >> 8;
	pk.class_id[1] = dv->class_id & 0xff;
	pk.port[0] = port >> 8;
	pk.port[1] = port & 0xff;
	v = bpf_map_lookup_elem(&tw_ports, &pk);
	if (!v)
		return;
	if (v->has_rule) {
		d->protected_ = 1;
		d->rule_id = v->rule_id;
		d->boundary = v->boundary;
		d->min_tls = v->min_tls;
		d->mode = v->mode;
	}
	d->exempt = v->exempt;
	d->exemption = v->exemption;
	if (v->owner_groups)
		tw_decide_owner(skb, k, meta, slot, v->owner_groups, d);
}

#endif /* TLSWALL_BPF_LIB_POLICY_BPF_H */
