/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Judges the first datagram of a UDP flow on a rule with udp = "quic": is
 * it a client's QUIC Initial packet of a version we know? Pure C with no
 * helpers, so the BPF classifier and user space (unit tests) compile the
 * very same code.
 *
 * Bytes judged (RFC 9000 17.2, 14.1; RFC 8999 5.1; RFC 9369 3.2):
 *   0      header form (0x80) and fixed bit (0x40) set; long packet type
 *          (bits 0x30) Initial: 0b00 in QUIC v1, 0b01 in QUIC v2. The low
 *          4 bits are under header protection: not judged.
 *   1-4    version 0x00000001 (v1, RFC 9000) or 0x6b3343cf (v2, RFC 9369)
 *   5      destination connection id length <= 20
 * and the datagram's UDP payload is at least 1200 bytes (a client pads
 * every datagram that carries an Initial to 1200: RFC 9000 14.1).
 * Everything after is encrypted (with keys anyone can derive from the
 * DCID, RFC 9001 5.2) and is not looked at: the TLS 1.3 ClientHello inside
 * is not checked, so two cooperating endpoints can fake this header as
 * they can fake a TLS record header (README).
 * Not accepted: a client that greases the fixed bit (RFC 9287) in its first
 * Initial, Version Negotiation (version 0, sent by servers), QUIC drafts.
 */
#ifndef TLSWALL_BPF_LIB_QUIC_INITIAL_H
#define TLSWALL_BPF_LIB_QUIC_INITIAL_H

#include "abi/tlswall_abi.h"

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

#define TW_QUIC_JUDGED	     6	  /* leading bytes of the datagram judged */
#define TW_QUIC_MIN_DATAGRAM 1200 /* RFC 9000 14.1 */
#define TW_QUIC_MAX_CID	     20	  /* RFC 9000 17.2 */
#define TW_QUIC_V1	     0x00000001u
#define TW_QUIC_V2	     0x6b3343cfu

/* b[0..TW_QUIC_JUDGED) are the datagram's first bytes (valid only when
 * len >= TW_QUIC_MIN_DATAGRAM); len is its UDP payload length. Returns
 * TW_REASON_NONE for a client's QUIC Initial, else TW_REASON_NOT_QUIC. */
static __always_inline __u8 tw_quic_initial(const __u8 *b, __u32 len)
{
	__u32 version;
	__u8 type;

	if (len < TW_QUIC_MIN_DATAGRAM)
		return TW_REASON_NOT_QUIC;
	if ((b[0] & 0xc0) != 0xc0)
		return TW_REASON_NOT_QUIC;
	version = ((__u32)b[1] << 24) | ((__u32)b[2] << 16) | ((__u32)b[3] << 8) | b[4];
	type = (b[0] >> 4) & 3;
	if (!((version == TW_QUIC_V1 && type == 0) || (version == TW_QUIC_V2 && type == 1)))
		return TW_REASON_NOT_QUIC;
	if (b[5] > TW_QUIC_MAX_CID)
		return TW_REASON_NOT_QUIC;
	return TW_REASON_NONE;
}

#endif /* TLSWALL_BPF_LIB_QUIC_INITIAL_H */
