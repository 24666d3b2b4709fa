/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The plaintext preambles a rule may allow before a ClientHello (enum
 * tw_preamble): which one a stream begins, how long it is, which of its
 * bytes are constrained and how. Pure C with no helpers, like tls_hello.h:
 * the BPF classifier and user space compile the very same code. The
 * reassembly that feeds it is lib/hello_stream.h.
 *
 * PostgreSQL (protocol 3, "SSLSessionEncryption"): the client sends
 * SSLRequest, 8 bytes 00 00 00 08 04 d2 16 2f, the server answers 'S', the
 * client sends a ClientHello. MySQL/MariaDB ("Protocol::SSLRequest"): the
 * server greets first; the client answers with a 32-byte packet (sequence
 * id 1) whose capability flags carry CLIENT_SSL, then a ClientHello.
 *
 * Not preambles, by design: a server's plaintext greeting (SMTP, FTP,
 * IMAP, MySQL's own) is ingress and never seen here; the client's first
 * bytes are judged as always. STARTTLS sends plaintext commands first and
 * needs an exemption; libpq's GSSENCRequest is not allowed either (README,
 * "Protocols that negotiate TLS in plaintext").
 */
#ifndef TLSWALL_BPF_LIB_PREAMBLE_H
#define TLSWALL_BPF_LIB_PREAMBLE_H

#include "abi/tlswall_abi.h"

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

/* A preamble's bytes are judged as they arrive, like the hello's, but not
 * kept: its first TW_PREAMBLE_JUDGED_MAX bytes or fewer are constrained,
 * and a retransmission of one is judged again. The first stream byte names
 * the preamble (PostgreSQL 0x00, MySQL 0x20; a ClientHello starts 0x16),
 * and only one the flow's rule allows (st->preambles): on other rules the
 * stream is judged as a ClientHello from byte 0, as without preambles. */

/* The preamble a first stream byte begins, among the allowed ones. */
static __always_inline __u8 tw_preamble_kind(__u8 allowed, __u8 b0)
{
	if (b0 == 0x00 && (allowed & TW_PREAMBLE_BIT(TW_PREAMBLE_POSTGRESQL)))
		return TW_PREAMBLE_POSTGRESQL;
	if (b0 == 0x20 && (allowed & TW_PREAMBLE_BIT(TW_PREAMBLE_MYSQL)))
		return TW_PREAMBLE_MYSQL;
	return TW_PREAMBLE_NONE;
}

/* Stream bytes of the preamble: where the ClientHello starts. Without
 * branches: the classifier's verifier would follow each one through the
 * reassembly that uses it. */
static __always_inline __u32 tw_preamble_len(__u8 kind)
{
	return ((TW_PREAMBLE_MYSQL_LEN << 16 | TW_PREAMBLE_PG_LEN << 8) >> ((kind & 3) * 8)) & 0xff;
}

/* Leading preamble bytes with constraints (the rest may be anything):
 * PostgreSQL all 8, MySQL the header and the capability byte 5. */
static __always_inline __u32 tw_preamble_judged(__u8 kind)
{
	return ((6 << 16 | 8 << 8) >> ((kind & 3) * 8)) & 0xff;
}

/* May byte b stand at stream index idx (< tw_preamble_judged(kind))? */
static __always_inline int tw_preamble_byte_ok(__u8 kind, __u32 idx, __u8 b)
{
	if (kind == TW_PREAMBLE_POSTGRESQL) {
		/* SSLRequest: Int32 length 8, Int32 code 80877103 (1234 << 16 | 5679),
		 * big-endian. */
		return b == (__u8)(0x0000000804d2162fULL >> (56 - 8 * (idx & 7)));
	}
	if (kind == TW_PREAMBLE_MYSQL) {
		/* Packet header: payload length 32 (3 bytes, little-endian) and
		 * sequence id 1 (after the server's greeting); then the client's
		 * capability flags, little-endian: byte 5 must carry
		 * CLIENT_PROTOCOL_41 (0x0200) and CLIENT_SSL (0x0800). A client
		 * without TLS sends its longer handshake response here instead. */
		if (idx < 4)
			return b == (__u8)(0x01000020u >> (8 * (idx & 3)));
		if (idx == 5)
			return (b & 0x0a) == 0x0a;
		return 1;
	}
	return 0;
}

/* The preamble the flow sent whole (for its events), or NONE. */
static __always_inline __u8 tw_preamble_seen(const struct tw_flow_state *st)
{
	if (st->preamble && st->hello_len >= tw_preamble_len(st->preamble))
		return st->preamble;
	return TW_PREAMBLE_NONE;
}

/* A flow that began a preamble its rule does not allow (any more: the
 * policy was reloaded) and is not already decided not TLS. */
static __always_inline int tw_preamble_revoked(const struct tw_flow_state *st)
{
	return st->preamble && !(st->preambles & TW_PREAMBLE_BIT(st->preamble)) &&
	       (st->cls == TW_CLASS_PENDING || st->cls == TW_CLASS_TLS);
}

#endif /* TLSWALL_BPF_LIB_PREAMBLE_H */
