/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Policy lookup: (destination, port) -> protected by which rule, exempt by
 * which exemption. Reads only the slot of the generation it is given, so a
 * decision never mixes two policies.
 */
#ifndef TLSWALL_BPF_LIB_POLICY_BPF_H
#define TLSWALL_BPF_LIB_POLICY_BPF_H

#include "lib/maps.bpf.h"

struct tw_decision {
	__u16 rule_id;
	__u16 boundary;
	__u16 exemption;
	__u16 min_tls;
	__u8 protected_;
	__u8 exempt;
	__u8 mode;
	__u8 any_enforce; /* some enforce rule covers the address (any port) */
};

static __always_inline int tw_mask_has(const __u64 mask[TW_MASK_WORDS], __u32 bit)
{
	return (mask[(bit >> 6) & (TW_MASK_WORDS - 1)] >> (bit & 63)) & 1;
}

static __always_inline const struct tw_dest_class *tw_lookup_dest(const struct tw_flow_key *k,
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

/* Decides for destination k->daddr and port `port` (host order). With
 * any_port set, matches rules on the address alone (for packets whose L4 is
 * hidden) and ignores exemptions, which all name ports or addresses. */
static __always_inline void tw_decide(const struct tw_flow_key *k, __u16 port, __u64 generation,
				      int any_port, struct tw_decision *d)
{
	const struct tw_dest_class *dc;
	const struct tw_ruleset *rs;
	__u32 slot = TW_SLOT_OF(generation);
	__u32 i, n;

	__builtin_memset(d, 0, sizeof(*d));
	if (!generation)
		return;
	dc = tw_lookup_dest(k, slot);
	if (!dc)
		return;
	rs = bpf_map_lookup_elem(&tw_rulesets, &slot);
	if (!rs || rs->generation != generation)
		return;

	n = rs->rule_count;
	for (i = 0; i < TW_MAX_RULE_ENTRIES; i++) {
		const struct tw_rule_entry *r;

		if (i >= n)
			break;
		r = &rs->rules[i];
		if (!tw_mask_has(dc->boundary_mask, r->boundary))
			continue;
		if (r->mode == TW_MODE_ENFORCE)
			d->any_enforce = 1;
		if (any_port || port < r->port_lo || port > r->port_hi)
			continue;
		d->protected_ = 1;
		d->rule_id = r->rule_id;
		d->boundary = r->boundary;
		d->min_tls = r->min_tls;
		d->mode = r->mode;
		break;
	}
	if (!d->protected_ || any_port)
		return;

	n = rs->exempt_count;
	for (i = 0; i < TW_MAX_EXEMPT_ENTRIES; i++) {
		const struct tw_exempt_entry *x;

		if (i >= n)
			break;
		x = &rs->exempts[i];
		if (!tw_mask_has(dc->exempt_mask, x->exemption))
			continue;
		if (port < x->port_lo || port > x->port_hi)
			continue;
		d->exempt = 1;
		d->exemption = x->exemption;
		break;
	}
}

#endif /* TLSWALL_BPF_LIB_POLICY_BPF_H */
