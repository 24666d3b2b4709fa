/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Judges the first TW_HELLO_PREFIX bytes of a TCP stream: do they begin a
 * TLS ClientHello? Pure C with no helpers, so the BPF classifier and user
 * space (unit tests, fuzzers) compile the very same code.
 *
 * Bytes judged (RFC 8446 5.1, 4.1.2):
 *   0      record type           22 (handshake)
 *   1-2    record version        0x0301..0x0303
 *   3-4    record length         6..16384 (2^14); the first record must carry
 *                                the handshake header and client_version
 *   5      handshake type        1 (client_hello)
 *   6-8    handshake length      41..128 KiB, and not shorter than the record
 *                                says (a ClientHello is alone in its record;
 *                                a longer one continues in the next record)
 *   9-10   client_version        0x0300..0x0304
 * Every byte is judged as soon as it arrives, so a stream split into 1-byte
 * segments is decided at the first bad byte, never later.
 */
#ifndef TLSWALL_BPF_LIB_TLS_HELLO_H
#define TLSWALL_BPF_LIB_TLS_HELLO_H

#include "abi/tlswall_abi.h"

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

#define TW_TLS_MAX_RECORD    16384u
#define TW_TLS_MIN_HELLO     41u /* version 2, random 32, sid 1, suites 2+2, comp 1+1 */
#define TW_TLS_MAX_HELLO     (128u * 1024u)
#define TW_TLS_MIN_FIRST_REC 6u /* handshake header (4) + client_version (2) */

enum tw_hello_result {
	TW_HELLO_NEED_MORE = 0,
	TW_HELLO_VALID = 1,
	/* negative values: -enum tw_reason */
};

/* Judges buf[0..len). Returns TW_HELLO_NEED_MORE while every byte seen is a
 * valid ClientHello prefix, TW_HELLO_VALID once all TW_HELLO_PREFIX bytes
 * are (and stores client_version in *client_version), else -reason. */
static __always_inline int tw_hello_judge(const __u8 *buf, __u32 len, __u16 *client_version)
{
	__u32 rec_len, hs_len;

	if (len > 0 && buf[0] != 22)
		return -TW_REASON_NOT_HANDSHAKE_RECORD;
	if (len > 1 && buf[1] != 3)
		return -TW_REASON_BAD_RECORD_VERSION;
	if (len > 2 && (buf[2] < 1 || buf[2] > 3))
		return -TW_REASON_BAD_RECORD_VERSION;
	if (len > 3 && buf[3] > (TW_TLS_MAX_RECORD >> 8))
		return -TW_REASON_BAD_RECORD_LENGTH;
	if (len > 4) {
		rec_len = ((__u32)buf[3] << 8) | buf[4];
		if (rec_len < TW_TLS_MIN_FIRST_REC || rec_len > TW_TLS_MAX_RECORD)
			return -TW_REASON_BAD_RECORD_LENGTH;
	}
	if (len > 5 && buf[5] != 1)
		return -TW_REASON_NOT_CLIENT_HELLO;
	if (len > 6 && buf[6] > (TW_TLS_MAX_HELLO >> 16))
		return -TW_REASON_BAD_HANDSHAKE_LENGTH;
	if (len > 7) {
		/* Bytes 6-7 already bound the length: if even the largest value
		 * byte 8 could add is too short for the record, or the smallest
		 * is too long, no byte 8 can make this a ClientHello. */
		rec_len = ((__u32)buf[3] << 8) | buf[4];
		hs_len = ((__u32)buf[6] << 16) | ((__u32)buf[7] << 8);
		if ((hs_len | 0xff) + 4 < rec_len || hs_len > TW_TLS_MAX_HELLO)
			return -TW_REASON_BAD_HANDSHAKE_LENGTH;
	}
	if (len > 8) {
		rec_len = ((__u32)buf[3] << 8) | buf[4];
		hs_len = ((__u32)buf[6] << 16) | ((__u32)buf[7] << 8) | buf[8];
		if (hs_len < TW_TLS_MIN_HELLO || hs_len > TW_TLS_MAX_HELLO)
			return -TW_REASON_BAD_HANDSHAKE_LENGTH;
		/* Shorter than the record: something else shares the record. */
		if (hs_len + 4 < rec_len)
			return -TW_REASON_BAD_HANDSHAKE_LENGTH;
	}
	if (len > 9 && buf[9] != 3)
		return -TW_REASON_BAD_CLIENT_VERSION;
	if (len > 10 && buf[10] > 4)
		return -TW_REASON_BAD_CLIENT_VERSION;
	if (len < TW_HELLO_PREFIX)
		return TW_HELLO_NEED_MORE;
	*client_version = (__u16)(((__u16)buf[9] << 8) | buf[10]);
	return TW_HELLO_VALID;
}

/* The lowest client_version a ClientHello may carry under a rule minimum.
 * TLS 1.3 clients send 0x0303 (RFC 8446 4.1.2): a minimum of TLS 1.3 is
 * held against the version the server chooses (lib/tls_records.h). */
static __always_inline __u16 tw_client_version_floor(__u16 min_tls)
{
	return min_tls > 0x0303 ? 0x0303 : min_tls;
}

#endif /* TLSWALL_BPF_LIB_TLS_HELLO_H */
