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
	__u8 preambles;	 /* TW_PREAMBLE_BIT mask the rule allows */
	__u8 udp;	 /* enum tw_udp_verdict of the rule */
	__u8 dest_flags; /* TW_DEST_* of the address: which rules cover it, any port */
	__u8 pad[2];
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
			d->preambles = g->preambles;
			d->udp = g->udp;
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

/* The two policy lookups for (k->daddr, port) under one generation, as the
 * decision cache keeps them: found & TW_DC_DEST: *dest_flags set; found &
 * TW_DC_VERDICT: *v points at the port verdict. */
#define TW_DC_DEST    1
#define TW_DC_VERDICT 2

static __always_inline __u8 tw_policy_lookup(const struct tw_flow_key *k, __u16 port, __u32 slot,
					     __u8 *dest_flags, const struct tw_port_verdict **v)
{
	const struct tw_dest_value *dv;
	struct tw_port_key pk = {};

	dv = tw_lookup_dest(k, slot);
	if (!dv)
		return 0;
	*dest_flags = dv->flags;
	if (!(dv->flags & TW_DEST_ANY_RULE))
		return TW_DC_DEST;
	pk.prefixlen = 8 + 16 + 16;
	pk.slot = slot;
	pk.class_id[0] = dv->class_id >> 8;
	pk.class_id[1] = dv->class_id & 0xff;
	pk.port[0] = port >> 8;
	pk.port[1] = port & 0xff;
	*v = bpf_map_lookup_elem(&tw_ports, &pk);
	return *v ? TW_DC_DEST | TW_DC_VERDICT : TW_DC_DEST;
}

/* The decision cache entry for (generation, daddr, port): direct-mapped by a
 * hash, per CPU. */
static __always_inline struct tw_dcache_entry *tw_dcache_slot(const struct tw_flow_key *k,
							      __u16 port, __u64 generation)
{
	__u32 w[4];
	__u32 h;

	__builtin_memcpy(w, k->daddr, sizeof(w));
	h = w[0] ^ w[1] ^ w[2] ^ w[3] ^ ((__u32)port << 16) ^ (__u32)generation ^ k->family;
	h *= 0x9e3779b1u;
	h >>= 32 - TW_DCACHE_BITS;
	return bpf_map_lookup_elem(&tw_dcache, &h);
}

static __always_inline int tw_dcache_hit(const struct tw_dcache_entry *e,
					 const struct tw_flow_key *k, __u16 port,
					 const struct tw_slot_meta *meta)
{
	__u64 a[2], b[2];

	if (e->generation != meta->generation || e->publish_id != meta->publish_id ||
	    e->dport != port || e->family != k->family)
		return 0;
	__builtin_memcpy(a, e->daddr, sizeof(a));
	__builtin_memcpy(b, k->daddr, sizeof(b));
	return a[0] == b[0] && a[1] == b[1];
}

/* Decides for destination k->daddr and port `port` (host order): two
 * lookups, no loops, or one cache hit; where rules or exemptions with owner
 * selectors cover the port, the owner of skb's socket is matched too (never
 * cached: it depends on the socket). With any_port set, only says which
 * rules cover the address (dest_flags), for packets whose L4 is hidden. */
static __always_inline void tw_decide(struct __sk_buff *skb, const struct tw_flow_key *k,
				      __u16 port, __u64 generation, int any_port,
				      struct tw_decision *d)
{
	const struct tw_port_verdict *v = 0;
	const struct tw_slot_meta *meta;
	struct tw_dcache_entry *e = 0;
	__u32 slot = TW_SLOT_OF(generation);
	__u8 dest_flags = 0;
	__u8 found;

	__builtin_memset(d, 0, sizeof(*d));
	if (!generation)
		return;
	meta = bpf_map_lookup_elem(&tw_slots, &slot);
	if (!meta || meta->generation != generation)
		return;
	if (!any_port)
		e = tw_dcache_slot(k, port, generation);
	if (e && tw_dcache_hit(e, k, port, meta)) {
		found = e->found;
		dest_flags = e->dest_flags;
		v = &e->v;
	} else {
		found = tw_policy_lookup(k, port, slot, &dest_flags, &v);
		if (e) {
			/* A published generation's tables never change (a
			 * slot is rewritten only for a new generation, with a
			 * new publish id), so an entry never goes stale. */
			e->generation = generation;
			e->publish_id = meta->publish_id;
			__builtin_memcpy(e->daddr, k->daddr, sizeof(e->daddr));
			e->dport = port;
			e->family = k->family;
			e->found = found;
			e->dest_flags = dest_flags;
			if (v)
				e->v = *v;
		}
	}
	if (!(found & TW_DC_DEST))
		return;
	d->dest_flags = dest_flags;
	if (any_port || !(found & TW_DC_VERDICT) || !v)
		return;
	if (v->has_rule) {
		d->protected_ = 1;
		d->rule_id = v->rule_id;
		d->boundary = v->boundary;
		d->min_tls = v->min_tls;
		d->mode = v->mode;
		d->preambles = v->preambles;
		d->udp = v->udp;
	}
	d->exempt = v->exempt;
	d->exemption = v->exemption;
	if (v->owner_groups)
		tw_decide_owner(skb, k, meta, slot, v->owner_groups, d);
}

#endif /* TLSWALL_BPF_LIB_POLICY_BPF_H */
