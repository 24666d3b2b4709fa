/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Layouts of earlier table schemas, frozen, and the one-step conversions
 * from each to the next. Kernel and user space both include this: the
 * classifier converts a flow it finds only in the previous table (during an
 * upgrade, so no flow is lost in the switch), and agent/bpf_migration.cc
 * converts whole tables, one function per version step.
 *
 * Never edit a frozen layout. When TW_SCHEMA_FLOWS goes from N to N+1:
 * freeze schema N here as tw_flow_state_vN, add tw_flow_vN_to_vN1(), and
 * point tw_flow_state_prev / tw_flow_from_prev at them.
 */
#ifndef TLSWALL_BPF_ABI_TLSWALL_ABI_HISTORY_H
#define TLSWALL_BPF_ABI_TLSWALL_ABI_HISTORY_H

#include "abi/tlswall_abi.h"

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

/* Flow state, schema 1 (tlswall 0.1). */
struct tw_flow_state_v1 {
	__u64 first_seen_ns;
	__u64 policy_generation;
	__u32 isn;
	__u16 rule_id;
	__u16 boundary;
	__u16 exemption;
	__u16 hello_version;
	__u16 min_tls;
	__u8 cls;
	__u8 reason;
	__u8 protected_;
	__u8 exempt;
	__u8 mode;
	__u8 action;
	__u8 hello_len;
	__u8 data_pkts;
	__u8 reported;
	__u8 pad0;
	__u8 hello[TW_HELLO_PREFIX + 1];
	__u8 pad1[4];
};

#if TW_SCHEMA_FLOWS == 1
/* No earlier schema: the "previous" table is the same layout (used when
 * only the table size changes). */
#define tw_flow_state_prev tw_flow_state
static __always_inline void tw_flow_from_prev(struct tw_flow_state *dst,
					      const struct tw_flow_state *src)
{
	*dst = *src;
}
#elif TW_SCHEMA_FLOWS == 2
/* Schema 1 -> 2: every field kept; last_packet_ns starts unknown (0). */
#define tw_flow_state_prev tw_flow_state_v1
static __always_inline void tw_flow_from_prev(struct tw_flow_state *dst,
					      const struct tw_flow_state_v1 *src)
{
	__builtin_memset(dst, 0, sizeof(*dst));
	__builtin_memcpy(dst, src, sizeof(*src));
	dst->last_packet_ns = 0;
}
#else
#error "no migration step into this TW_SCHEMA_FLOWS"
#endif

#endif /* TLSWALL_BPF_ABI_TLSWALL_ABI_HISTORY_H */
