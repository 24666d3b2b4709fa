/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Includes and constants every tlswall BPF program needs. vmlinux.h is
 * generated at build time from the build machine's kernel BTF (CO-RE). */
#ifndef TLSWALL_BPF_LIB_COMMON_BPF_H
#define TLSWALL_BPF_LIB_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "abi/tlswall_abi.h"

/* vmlinux.h carries types, not macros: the few we need, from uapi. */
#define TC_ACT_UNSPEC (-1)
#define TC_ACT_OK     0
#define TC_ACT_SHOT   2

#define ETH_HLEN	 14
#define ETH_P_IP	 0x0800
#define ETH_P_IPV6	 0x86DD
#define ETH_P_8021Q	 0x8100
#define ETH_P_8021AD	 0x88A8
#define IPPROTO_TCP_	 6
#define IPPROTO_UDP_	 17
#define IP_MF		 0x2000
#define IP_OFFSET	 0x1FFF
#define TCP_FLAG_SYN	 0x02
#define TCP_FLAG_RST	 0x04
#define TCP_FLAG_ACK	 0x10
#define NEXTHDR_HOP	 0
#define NEXTHDR_TCP	 6
#define NEXTHDR_ROUTING	 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_UDP	 17
#define NEXTHDR_ESP	 50
#define NEXTHDR_ICMPV6	 58
#define NEXTHDR_AUTH	 51
#define NEXTHDR_DEST	 60

/* A cold path (violations, events, owner selectors, untracked and opaque
 * packets) as a BPF subprogram: kept out of line, so the code every packet
 * runs stays small and warm in the instruction cache. At most 5 arguments,
 * scalar return. */
#define TW_COLD static __noinline

#define TW_MAX_VLAN_TAGS   2
#define TW_MAX_V6_EXT_HDRS 8

#endif /* TLSWALL_BPF_LIB_COMMON_BPF_H */
