/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Reassembly of a flow's first TW_HELLO_PREFIX payload bytes from TCP
 * segments, and the flow's class from them: the part of the classifier's
 * per-flow state machine that knows nothing of packets, maps or counters.
 * Plain C, like tls_hello.h, so the BPF classifier (lib/flow.bpf.h) and user
 * space (the hello fuzzer, tests) run the very same code.
 *
 * Bytes are collected in sequence order into tw_flow_state.hello, starting
 * at the stream's first data byte (ISN + 1; a SYN's own data comes after
 * its sequence number). A segment starting beyond what is collected is
 * "ahead" (out of order): nothing of it is taken. A segment overlapping the
 * collected bytes must carry the same bytes there, or the flow is not TLS
 * (overlap_mismatch): the receiver may see other bytes than the ones judged.
 * After each data segment the collected prefix is judged (tw_hello_judge);
 * TW_MAX_PENDING_PKTS data segments without a decision make it undecidable.
 *
 * Handshake messages split across TLS records need nothing here: the judge
 * requires the first record to hold the handshake header and client_version
 * (record length >= 6), so the 11 judged bytes are always in one record.
 *
 * The includer supplies the byte source, defined before its first call:
 *   static __always_inline int tw_hello_load(void *src, __u32 off, void *dst,
 *                                            const __u32 len);
 * copies `len` bytes at payload offset `off` (0 or -errno). The classifier
 * reads the skb; user space reads a buffer.
 */
#ifndef TLSWALL_BPF_LIB_HELLO_STREAM_H
#define TLSWALL_BPF_LIB_HELLO_STREAM_H

#include "abi/tlswall_abi.h"
#include "lib/tls_hello.h"

#ifndef barrier_var
#define barrier_var(var) __asm__ __volatile__("" : "+r"(var))
#endif

static __always_inline int tw_hello_load(void *src, __u32 off, void *dst, const __u32 len);

/* Where a segment's payload lies relative to the stream's first data byte
 * (ISN + 1): `start` is the first stream index it covers, `skip` how many of
 * its bytes come before the stream (a segment may begin at or before the
 * ISN; the receiver trims those). */
enum tw_seg_where {
	TW_SEG_OUTSIDE = 0, /* covers none of the judged prefix */
	TW_SEG_PREFIX = 1,  /* covers some of it, contiguous with what is collected */
	TW_SEG_AHEAD = 2,   /* starts beyond what has been collected */
};

#define TW_SEQ_BEFORE_MAX 65536 /* further back than any window: ignored */

static __always_inline int tw_hello_locate(__u32 seq, int syn, __u32 payload_len,
					   const struct tw_flow_state *st, __u32 *start,
					   __u32 *skip)
{
	__u32 data_seq = seq + (syn ? 1 : 0);
	__s32 off = (__s32)(data_seq - (st->isn + 1));

	if (off < 0) {
		if (off < -TW_SEQ_BEFORE_MAX || (__u32)(-off) >= payload_len)
			return TW_SEG_OUTSIDE;
		*skip = (__u32)(-off);
		*start = 0;
		return TW_SEG_PREFIX;
	}
	*skip = 0;
	*start = (__u32)off;
	if (*start >= TW_HELLO_PREFIX)
		return st->hello_len < TW_HELLO_PREFIX ? TW_SEG_AHEAD : TW_SEG_OUTSIDE;
	return *start > st->hello_len ? TW_SEG_AHEAD : TW_SEG_PREFIX;
}

enum tw_collect_result {
	TW_COLLECT_OK = 0,	 /* bytes taken (or nothing to take) */
	TW_COLLECT_AHEAD = 1,	 /* the segment starts beyond the collected prefix */
	TW_COLLECT_MISMATCH = 2, /* a byte differs from the one judged: see tw_hello_mismatch() */
};

/* Appends a segment's payload bytes (read through tw_hello_load(src, ...)
 * from payload offset `payload_off`) to the hello prefix; on a decided flow
 * only checks that retransmitted prefix bytes equal the ones judged. On a
 * mismatch st->hello_len is left as it was. */
static __always_inline int tw_hello_collect(void *src, __u32 payload_off, __u32 seq, int syn,
					    __u32 payload_len, struct tw_flow_state *st)
{
	__u32 have = st->hello_len;
	__u32 start = 0, skip = 0;
	__u32 j;
	__u8 b;
	int where;

	if (have > TW_HELLO_PREFIX)
		return TW_COLLECT_OK;
	where = tw_hello_locate(seq, syn, payload_len, st, &start, &skip);
	if (where != TW_SEG_PREFIX)
		return where == TW_SEG_AHEAD ? TW_COLLECT_AHEAD : TW_COLLECT_OK;
	/* The usual case: the first segment carries the whole prefix. */
	if (!start && !skip && !have && st->cls == TW_CLASS_PENDING &&
	    payload_len >= TW_HELLO_PREFIX &&
	    !tw_hello_load(src, payload_off, st->hello, TW_HELLO_PREFIX)) {
		st->hello_len = TW_HELLO_PREFIX;
		return TW_COLLECT_OK;
	}
	for (j = 0; j < TW_HELLO_PREFIX; j++) {
		__u32 idx = start + j;
		__u32 at = skip + j;

		if (at >= payload_len || idx >= TW_HELLO_PREFIX)
			break;
		/* The checks above bound idx and at, but clang may rewrite
		 * them so the verifier loses the bounds: re-bound them. */
		barrier_var(idx);
		idx &= 0xf; /* for the verifier only: idx < TW_HELLO_PREFIX above */
		barrier_var(at);
		at &= 0x1ffff; /* skip < TW_SEQ_BEFORE_MAX */
		if (tw_hello_load(src, payload_off + at, &b, 1) < 0)
			break;
		if (idx < have) {
			/* Retransmitted byte: must equal the copy we judged,
			 * or the receiver may see something else. */
			if (st->hello[idx] != b)
				return TW_COLLECT_MISMATCH;
			continue;
		}
		if (st->cls != TW_CLASS_PENDING)
			break; /* decided: only re-check what was judged */
		st->hello[idx] = b;
		have = idx + 1;
	}
	st->hello_len = have;
	return TW_COLLECT_OK;
}

/* A flow whose judged bytes turned out not to be what the receiver gets:
 * not TLS, for `reason`. Returns the class it had (the classifier moves its
 * counters accordingly). */
static __always_inline __u8 tw_hello_reclassify(struct tw_flow_state *st, __u8 reason)
{
	__u8 was = st->cls;

	st->cls = TW_CLASS_NOT_TLS;
	st->reason = reason;
	return was;
}

/* Judges the collected prefix of a pending flow after a data segment
 * (st->data_pkts already counts it). Returns the class it was decided to
 * now (TW_CLASS_TLS with hello_version, TW_CLASS_NOT_TLS with reason), or
 * TW_CLASS_PENDING if it is still undecided or was decided before. */
static __always_inline __u8 tw_hello_decide(struct tw_flow_state *st)
{
	__u16 version = 0;
	int r;

	if (st->cls != TW_CLASS_PENDING)
		return TW_CLASS_PENDING;
	r = tw_hello_judge(st->hello, st->hello_len, &version);
	if (r == TW_HELLO_VALID) {
		st->cls = TW_CLASS_TLS;
		st->hello_version = version;
		return TW_CLASS_TLS;
	}
	if (r < 0) {
		st->cls = TW_CLASS_NOT_TLS;
		st->reason = (__u8)-r;
		return TW_CLASS_NOT_TLS;
	}
	if (st->data_pkts >= TW_MAX_PENDING_PKTS) {
		st->cls = TW_CLASS_NOT_TLS;
		st->reason = TW_REASON_UNDECIDABLE;
		return TW_CLASS_NOT_TLS;
	}
	return TW_CLASS_PENDING;
}

/* What tw_hello_on_data() did, for the classifier's counters and verdict. */
#define TW_DATA_AHEAD	 0x01 /* pending, and the segment starts beyond the collected prefix */
#define TW_DATA_MISMATCH 0x02 /* reclassified not TLS (overlap_mismatch) ... */
#define TW_DATA_WAS_TLS	 0x04 /* ... and it had been counted TLS */
#define TW_DATA_TLS	 0x08 /* decided TLS now */
#define TW_DATA_NOT_TLS	 0x10 /* decided not TLS now */

/* A data segment (payload_len > 0) of a tracked outbound flow: while the
 * flow is pending its bytes are collected and the prefix judged; early in a
 * flow judged TLS, a segment overlapping the judged prefix (a
 * retransmission, or one starting before it) must carry the same bytes
 * there: raw sockets or TCP_REPAIR could send others. Only early: a
 * retransmission of the prefix comes before much else, and after 4 GiB the
 * sequence numbers wrap around and name other bytes. Other classes are
 * left alone. Returns TW_DATA_* bits. */
static __always_inline int tw_hello_on_data(void *src, __u32 payload_off, __u32 seq, int syn,
					    __u32 payload_len, struct tw_flow_state *st)
{
	int r = 0, c;

	if (st->cls == TW_CLASS_PENDING) {
		c = tw_hello_collect(src, payload_off, seq, syn, payload_len, st);
		if (c == TW_COLLECT_AHEAD)
			r |= TW_DATA_AHEAD;
		if (c == TW_COLLECT_MISMATCH) {
			tw_hello_reclassify(st, TW_REASON_OVERLAP_MISMATCH);
			r |= TW_DATA_MISMATCH;
		}
		if (st->data_pkts < 255)
			st->data_pkts++;
		c = tw_hello_decide(st);
		if (c == TW_CLASS_TLS)
			r |= TW_DATA_TLS;
		else if (c == TW_CLASS_NOT_TLS)
			r |= TW_DATA_NOT_TLS;
	} else if (st->cls == TW_CLASS_TLS && st->data_pkts < TW_RECHECK_PKTS) {
		st->data_pkts++;
		if ((__s32)(seq - (st->isn + 1)) < TW_HELLO_PREFIX &&
		    tw_hello_collect(src, payload_off, seq, syn, payload_len, st) ==
			TW_COLLECT_MISMATCH) {
			tw_hello_reclassify(st, TW_REASON_OVERLAP_MISMATCH);
			r |= TW_DATA_MISMATCH | TW_DATA_WAS_TLS;
		}
	}
	return r;
}

#endif /* TLSWALL_BPF_LIB_HELLO_STREAM_H */
