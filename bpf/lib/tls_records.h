/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The deeper TLS checks of a flow whose first bytes were a ClientHello
 * (abi/tlswall_abi.h, "deeper TLS checks"): the client's later record
 * headers, and the server's first answer. Plain C over a byte source, like
 * hello_stream.h, so the classifier (skb) and user space (tests, fuzzer)
 * run the same code. The includer supplies tw_hello_load() (hello_stream.h).
 *
 * Record headers (RFC 8446 5.1, RFC 5246 6.2): type 20..23 (change cipher
 * spec, alert, handshake, application data), version 0x0301..0x0303, length
 * at most 2^14 + 2048 (TLSCiphertext). Each header byte is judged as it
 * arrives, so a header split across segments is judged piece by piece.
 *
 * The server's answer (RFC 8446 4.1.3, RFC 5246 7.4.1.3) starts with a
 * handshake record holding a ServerHello (a HelloRetryRequest is one too),
 * or with an alert record (the server refused the handshake). The version
 * it chose is the supported_versions extension's (TLS 1.3) or else the
 * ServerHello's legacy version field.
 */
#ifndef TLSWALL_BPF_LIB_TLS_RECORDS_H
#define TLSWALL_BPF_LIB_TLS_RECORDS_H

#include "abi/tlswall_abi.h"

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

static __always_inline int tw_hello_load(void *src, __u32 off, void *dst, const __u32 len);

#define TW_TLS_MAX_CIPHERTEXT	  (16384u + 2048u)
#define TW_RECORD_WALK_BYTES	  20u /* header bytes judged per segment (4 whole headers) */
#define TW_SH_MIN_LEN		  38u /* version 2, random 32, sid 1, suite 2, compression 1 */
#define TW_SH_MAX_EXTS		  16u /* extensions walked looking for supported_versions */
#define TW_EXT_SUPPORTED_VERSIONS 0x002b

/* Is `b` acceptable as byte `pos` (0..4) of a record header whose length
 * high byte is `hi` (pos 4 only)? */
static __always_inline int tw_record_byte_ok(__u32 pos, __u8 b, __u8 hi)
{
	switch (pos) {
	case 0:
		return b >= 20 && b <= 23;
	case 1:
		return b == 3;
	case 2:
		return b >= 1 && b <= 3;
	case 3:
		return b <= (TW_TLS_MAX_CIPHERTEXT >> 8);
	default:
		return (((__u32)hi << 8) | b) <= TW_TLS_MAX_CIPHERTEXT;
	}
}

/* Judges the record header bytes a client segment carries: its payload (at
 * payload offset payload_off, payload_len bytes) covers stream indices
 * [start, start + payload_len). Follows the headers from c->rec_next on,
 * at most TW_RECORD_WALK_BYTES header bytes per segment (the next segment
 * continues). A segment that starts beyond the next header byte leaves it
 * for the segment that carries it. 0, or -1 if a header byte is not TLS. */
static __always_inline int tw_records_walk(void *src, __u32 payload_off, __u32 start,
					   __u32 payload_len, struct tw_tls_check *c)
{
	__u32 i, pos, len;
	__s32 off;
	__u8 b;

	for (i = 0; i < TW_RECORD_WALK_BYTES; i++) {
		if (c->recs_checked >= TW_RECORD_CHECKS)
			break;
		pos = c->rec_next + c->rec_have;
		off = (__s32)(pos - start);
		if (off < 0 || (__u32)off >= payload_len)
			break;
		if (tw_hello_load(src, payload_off + (__u32)off, &b, 1) < 0)
			break;
		if (!tw_record_byte_ok(c->rec_have, b, c->rec_len_hi))
			return -1;
		if (c->rec_have < 4) {
			if (c->rec_have == 3)
				c->rec_len_hi = b;
			c->rec_have++;
			continue;
		}
		len = ((__u32)c->rec_len_hi << 8) | b;
		c->rec_next += 5 + len;
		c->rec_have = 0;
		c->recs_checked++;
	}
	return 0;
}

enum tw_answer {
	TW_ANSWER_SHORT = 0, /* fewer bytes than a ServerHello's first 11, all valid so far */
	TW_ANSWER_HELLO = 1, /* a ServerHello */
	TW_ANSWER_ALERT = 2, /* an alert record */
			     /* negative: -TW_REASON_SERVER_NOT_TLS */
};

/* Judges the server's first answer: `avail` bytes at payload offset `off`.
 * On TW_ANSWER_HELLO stores the version the server chose in *version, or 0
 * if the ServerHello continues beyond these bytes before the version is
 * known. */
static __always_inline int tw_server_answer_judge(void *src, __u32 off, __u32 avail, __u16 *version)
{
	__u8 h[11];
	__u8 x[4];
	__u32 i, rec_len, hs_len, hs_end, p, ext_end, n;
	__u16 legacy;

	*version = 0;
	if (avail >= sizeof(h)) {
		if (tw_hello_load(src, off, h, sizeof(h)) < 0)
			return TW_ANSWER_SHORT;
		n = sizeof(h);
	} else {
		for (n = 0; n < sizeof(h) - 1 && n < avail; n++) {
			if (tw_hello_load(src, off + n, &h[n], 1) < 0)
				break;
		}
	}
	if (n > 0 && h[0] != 22 && h[0] != 21)
		return -TW_REASON_SERVER_NOT_TLS;
	if (n > 1 && h[1] != 3)
		return -TW_REASON_SERVER_NOT_TLS;
	if (n > 2 && h[2] > 3)
		return -TW_REASON_SERVER_NOT_TLS;
	if (n > 0 && h[0] == 21) {
		/* An alert: level and description, nothing else. */
		if (n > 4 && (h[3] != 0 || h[4] != 2))
			return -TW_REASON_SERVER_NOT_TLS;
		if (n > 5 && h[5] != 1 && h[5] != 2)
			return -TW_REASON_SERVER_NOT_TLS;
		return n > 5 ? TW_ANSWER_ALERT : TW_ANSWER_SHORT;
	}
	if (n > 4) {
		rec_len = ((__u32)h[3] << 8) | h[4];
		if (rec_len < 4 + TW_SH_MIN_LEN || rec_len > TW_TLS_MAX_CIPHERTEXT)
			return -TW_REASON_SERVER_NOT_TLS;
	}
	if (n > 5 && h[5] != 2)
		return -TW_REASON_SERVER_NOT_TLS;
	if (n > 8) {
		hs_len = ((__u32)h[6] << 16) | ((__u32)h[7] << 8) | h[8];
		if (hs_len < TW_SH_MIN_LEN || hs_len > 65535)
			return -TW_REASON_SERVER_NOT_TLS;
	}
	if (n > 9 && h[9] != 3)
		return -TW_REASON_SERVER_NOT_TLS;
	if (n > 10 && h[10] > 3)
		return -TW_REASON_SERVER_NOT_TLS;
	if (n < sizeof(h))
		return TW_ANSWER_SHORT;

	/* The version: walk to the extensions, if the bytes are here. */
	legacy = (__u16)(((__u16)h[9] << 8) | h[10]);
	hs_len = ((__u32)h[6] << 16) | ((__u32)h[7] << 8) | h[8];
	hs_end = 9 + hs_len;
	p = 9 + 2 + 32; /* session id length */
	if (p + 1 > avail || tw_hello_load(src, off + p, x, 1) < 0)
		return TW_ANSWER_HELLO;
	if (x[0] > 32)
		return -TW_REASON_SERVER_NOT_TLS;
	p += 1 + x[0] + 2 + 1; /* session id, cipher suite, compression */
	if (p > hs_end)
		return -TW_REASON_SERVER_NOT_TLS;
	if (p == hs_end) { /* no extensions: TLS 1.2 or older */
		*version = legacy;
		return TW_ANSWER_HELLO;
	}
	if (p + 2 > avail || tw_hello_load(src, off + p, x, 2) < 0)
		return TW_ANSWER_HELLO;
	ext_end = p + 2 + (((__u32)x[0] << 8) | x[1]);
	if (ext_end > hs_end)
		return -TW_REASON_SERVER_NOT_TLS;
	p += 2;
	for (i = 0; i < TW_SH_MAX_EXTS; i++) {
		if (p + 4 > ext_end) {
			*version = legacy; /* every extension seen, none chose a version */
			return TW_ANSWER_HELLO;
		}
		if (p + 4 > avail || tw_hello_load(src, off + p, x, 4) < 0)
			return TW_ANSWER_HELLO;
		n = ((__u32)x[2] << 8) | x[3];
		if (((__u32)x[0] << 8 | x[1]) == TW_EXT_SUPPORTED_VERSIONS) {
			if (n != 2 || p + 6 > avail || tw_hello_load(src, off + p + 4, x, 2) < 0)
				return TW_ANSWER_HELLO;
			if (x[0] != 3 || x[1] > 4)
				return -TW_REASON_SERVER_NOT_TLS;
			*version = (__u16)(((__u16)x[0] << 8) | x[1]);
			return TW_ANSWER_HELLO;
		}
		p += 4 + n;
	}
	return TW_ANSWER_HELLO; /* more extensions than walked: version unknown */
}

#endif /* TLSWALL_BPF_LIB_TLS_RECORDS_H */
