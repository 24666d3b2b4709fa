// The compiler's intermediate rows (user space only, in no kernel map):
// boundaries and exemptions as bit masks per prefix, and rule / exemption
// port ranges. policy_kernel_tables.cc turns them into the classifier's
// loop-free lookup tables (bpf/abi/tlswall_abi.h).
#pragma once

#include <linux/types.h>

#define TW_MAX_BOUNDARIES 128     /* bits in tw_dest_class.boundary_mask */
#define TW_MAX_EXEMPTIONS 128     /* bits in tw_dest_class.exempt_mask */
#define TW_MAX_RULE_ENTRIES 256   /* (rule, port range) rows */
#define TW_MAX_EXEMPT_ENTRIES 256 /* (exemption, port range) rows */
#define TW_MASK_WORDS 2           /* 128-bit masks */
#define TW_NO_OWNER_GROUP 0       /* a row without owner selectors; else group bit + 1 */

/* Every boundary / exemption that contains a prefix (covering prefixes are
 * folded in, so the longest match is exact). */
struct tw_dest_class {
  __u64 boundary_mask[TW_MASK_WORDS]; /* bit i = boundary index i */
  __u64 exempt_mask[TW_MASK_WORDS];   /* bit i = exemption index i */
};

/* One (rule, boundary, port range) row; earlier rows win (enforce rules come
 * first; the validator rejects overlapping rows that disagree). */
struct tw_rule_entry {
  __u16 boundary;   /* boundary index (bit in boundary_mask) */
  __u16 port_lo;    /* inclusive */
  __u16 port_hi;    /* inclusive */
  __u16 rule_id;    /* index into the rule name table */
  __u16 min_tls;    /* wire version: 0x0301 TLS1.0 .. 0x0304 TLS1.3 */
  __u8 mode;        /* enum tw_mode */
  __u8 owner_group; /* TW_NO_OWNER_GROUP, or the rule's owner group bit + 1 */
  __u8 preambles;   /* TW_PREAMBLE_BIT mask the rule allows */
  __u8 udp;         /* enum tw_udp_verdict of the rule */
};

/* One (exemption, port range) row. */
struct tw_exempt_entry {
  __u16 exemption;  /* exemption index (bit in exempt_mask) */
  __u16 port_lo;    /* inclusive */
  __u16 port_hi;    /* inclusive */
  __u8 owner_group; /* TW_NO_OWNER_GROUP, or the exemption's owner group bit + 1 */
  __u8 pad;
};
