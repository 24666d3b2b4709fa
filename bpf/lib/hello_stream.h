/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Reassembly of a flow's first payload bytes from TCP segments, and the
 * flow's class from them: the part of the classifier's per-flow state
 * machine that knows nothing of packets, maps or counters. Plain C, like
 * tls_hello.h, so the BPF classifier (lib/flow.bpf.h) and user space (the
 * hello fuzzer, tests) run the very same code.
 *
 * The judged stream prefix is an optional preamble (enum tw_preamble, only
 * one the flow's rule allows: a PostgreSQL SSLRequest or a MySQL SSL
 * request, which negotiate TLS in plaintext) and then TW_HELLO_PREFIX bytes
 * of a ClientHello. Bytes are collected in sequence order, starting at the
 * stream's first data byte (ISN + 1; a SYN's own data comes after its
 * sequence number); the preamble's are judged and dropped, the hello's
 * kept in tw_flow_state.hello. A segment starting beyond what is collected is
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
#include "lib/preamble.h"
#include "lib/tls_hello.h"

#ifndef barrier_var
#define barrier_var(var) __asm__ __volatile__("" : "+r"(var))
#endif

static __always_inline int tw_hello_load(void *src, __u32 off, void *dst, const __u32 len);

/* Stream bytes judged: the preamble (if any) and the hello prefix. */
static __always_inline __u32 tw_hello_window(const struct tw_flow_state *st)
{
	return tw_preamble_len(st->preamble) + TW_HELLO_PREFIX;
}

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
	__u32 window = tw_hello_window(st);

	if (off < 0) {
		if (off < -TW_SEQ_BEFORE_MAX || (__u32)(-off) >= payload_len)
			return TW_SEG_OUTSIDE;
		*skip = (__u32)(-off);
		*start = 0;
		return TW_SEG_PREFIX;
	}
	*skip = 0;
	*start = (__u32)off;
	if (*start >= window)
		return st->hello_len < window ? TW_SEG_AHEAD : TW_SEG_OUTSIDE;
	return *start > st->hello_len ? TW_SEG_AHEAD : TW_SEG_PREFIX;
}

enum tw_collect_result {
	TW_COLLECT_OK = 0,	 /* bytes taken (or nothing to take) */
	TW_COLLECT_AHEAD = 1,	 /* the segment starts beyond the collected prefix */
	TW_COLLECT_MISMATCH = 2, /* a byte differs from the one judged: see tw_hello_mismatch() */
	TW_COLLECT_BAD_PREAMBLE = 3, /* a new byte breaks the preamble the flow began */
};

/* The preamble part of tw_hello_collect(), scalars in and out: the
 * segment covers stream indices [start, end), its byte for index i at
 * payload offset payload_off + skip + (i - start), and `have` stream bytes
 * are collected: `seg` packs start (bits 0-7) and skip (8-31), `span` have
 * (0-7) and end (8-15, at most 255: beyond any preamble); `flow` packs the
 * flow's preamble (0-7), its rule's allowed mask (8-15) and whether it is
 * pending (bit 16). A BPF function takes at most 5 arguments. Names the
 * preamble at stream byte 0 (if it is new), judges its constrained bytes
 * (new ones and retransmitted ones) and takes its free bytes. Returns
 * TW_PSCAN(result, have, preamble).
 *
 * In the classifier this is a global BPF function, so the verifier checks
 * it once, on its own, instead of along every path of the program that
 * reaches it (TW_PREAMBLE_SCAN_FN); everything crosses as scalars, which
 * kernels before 5.12 require of a global function's arguments. */
#define TW_PSCAN(r, have, kind) ((int)((r) | ((have) << 8) | ((kind) << 16)))
#define TW_PSCAN_RESULT(v)	((v)&0xff)
#define TW_PSCAN_HAVE(v)	(((__u32)(v) >> 8) & 0xff)
#define TW_PSCAN_KIND(v)	(((__u32)(v) >> 16) & 0xff)

#ifndef TW_HELLO_SRC
#define TW_HELLO_SRC void /* the classifier: struct __sk_buff */
#endif
#ifndef TW_PREAMBLE_SCAN_FN
#define TW_PREAMBLE_SCAN_FN static __always_inline int
#endif

TW_PREAMBLE_SCAN_FN tw_preamble_scan(TW_HELLO_SRC *src, __u32 payload_off, __u32 seg, __u32 span,
				     __u32 flow)
{
	__u32 start = seg & 0xff;
	__u32 skip = seg >> 8;
	__u32 have = span & 0xff; /* a __u8 in the flow state */
	__u32 end = (span >> 8) & 0xff;
	__u32 kind = flow & 0xff;
	__u32 allowed = (flow >> 8) & 0xff;
	int pending = !!(flow & 0x10000);
	__u32 j, len, judged;
	__u8 b;

	if (start > have) /* never: the caller located the segment */
		return TW_PSCAN(TW_COLLECT_OK, have, kind);
	/* The first byte, new, names the preamble. */
	if (!start && !have && pending && end > 0) {
		if (tw_hello_load(src, payload_off + (skip & 0x1ffff), &b, 1) < 0)
			return TW_PSCAN(TW_COLLECT_OK, have, kind);
		kind = tw_preamble_kind((__u8)allowed, b);
	}
	judged = tw_preamble_judged((__u8)kind);
	for (j = 0; j < TW_PREAMBLE_JUDGED_MAX; j++) {
		__u32 pos = start + j;
		__u32 at = (skip + j) & 0x1ffff; /* skip < TW_SEQ_BEFORE_MAX */

		if (pos >= end || pos >= judged)
			break;
		if (tw_hello_load(src, payload_off + at, &b, 1) < 0)
			break;
		if (pos < have) {
			/* Retransmitted: the receiver may see this copy. */
			if (!tw_preamble_byte_ok((__u8)kind, pos, b))
				return TW_PSCAN(TW_COLLECT_MISMATCH, have, kind);
			continue;
		}
		if (!pending)
			break;
		if (!tw_preamble_byte_ok((__u8)kind, pos, b))
			return TW_PSCAN(TW_COLLECT_BAD_PREAMBLE, have, kind);
		have = pos + 1;
	}
	/* The free bytes after the constrained ones are taken as they come. */
	len = tw_preamble_len((__u8)kind);
	if (pending && have >= judged && have < len && start <= have && end > have)
		have = end < len ? end : len;
	return TW_PSCAN(TW_COLLECT_OK, have, kind);
}

/* Appends a segment's payload bytes (read through tw_hello_load(src, ...)
 * from payload offset `payload_off`) to the judged stream prefix (preamble
 * and hello); on a decided flow only checks that retransmitted prefix bytes
 * equal the ones judged (preamble bytes: still fit the preamble). On a
 * mismatch or a bad preamble st->hello_len is left as it was. */
static __always_inline int tw_hello_collect(void *src, __u32 payload_off, __u32 seq, int syn,
					    __u32 payload_len, struct tw_flow_state *st)
{
	__u32 have = st->hello_len;
	__u32 start = 0, skip = 0;
	__u32 base, first, end, hstart, hhave;
	__u32 j;
	__u8 b;
	int where, r;

	if (have > TW_PREAMBLE_MAX_LEN + TW_HELLO_PREFIX)
		return TW_COLLECT_OK;
	where = tw_hello_locate(seq, syn, payload_len, st, &start, &skip);
	if (where != TW_SEG_PREFIX)
		return where == TW_SEG_AHEAD ? TW_COLLECT_AHEAD : TW_COLLECT_OK;
	base = tw_preamble_len(st->preamble);
	/* The usual cases: one segment carries the whole hello prefix, at
	 * the stream's start (unless it begins an allowed preamble) or right
	 * after the preamble. */
	if (!skip && start == have && have == base && st->cls == TW_CLASS_PENDING &&
	    payload_len >= TW_HELLO_PREFIX &&
	    !tw_hello_load(src, payload_off, st->hello, TW_HELLO_PREFIX) &&
	    (have || !tw_preamble_kind(st->preambles, st->hello[0]))) {
		st->hello_len = have + TW_HELLO_PREFIX;
		return TW_COLLECT_OK;
	}
	end = start + (payload_len - skip); /* locate: skip < payload_len */
	if (st->preambles || st->preamble) {
		r = tw_preamble_scan(src, payload_off, start | (skip << 8),
				     have | ((end < 255 ? end : 255) << 8),
				     st->preamble | ((__u32)st->preambles << 8) |
					 (st->cls == TW_CLASS_PENDING ? 0x10000 : 0));
		if (TW_PSCAN_RESULT(r) != TW_COLLECT_OK)
			return TW_PSCAN_RESULT(r);
		have = TW_PSCAN_HAVE(r);
		st->preamble = TW_PSCAN_KIND(r);
		if (have > TW_PREAMBLE_MAX_LEN + TW_HELLO_PREFIX)
			return TW_COLLECT_OK;
	}
	base = tw_preamble_len(st->preamble);
	/* The hello's bytes, from stream index `first` on: hello index i is
	 * stream index base + i. */
	first = start > base ? start : base;
	if (first > have || first >= end) {
		st->hello_len = have;
		return TW_COLLECT_OK;
	}
	hstart = first - base;
	hhave = have - base;
	skip += first - start; /* the payload offset of stream index first */
	for (j = 0; j < TW_HELLO_PREFIX; j++) {
		__u32 idx = hstart + j;
		__u32 at = skip + j;

		if (at >= payload_len || idx >= TW_HELLO_PREFIX)
			break;
		/* The checks above bound idx and at, but clang may rewrite
		 * them so the verifier loses the bounds: re-bound them. */
		barrier_var(idx);
		idx &= 0xf; /* for the verifier only: idx < TW_HELLO_PREFIX above */
		barrier_var(at);
		at &= 0x1ffff; /* skip < TW_SEQ_BEFORE_MAX, first - start <= preamble */
		if (tw_hello_load(src, payload_off + at, &b, 1) < 0)
			break;
		if (idx < hhave) {
			/* Retransmitted byte: must equal the copy we judged,
			 * or the receiver may see something else. */
			if (st->hello[idx] != b)
				return TW_COLLECT_MISMATCH;
			continue;
		}
		if (st->cls != TW_CLASS_PENDING)
			break; /* decided: only re-check what was judged */
		st->hello[idx] = b;
		hhave = idx + 1;
	}
	have = base + hhave;
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
	__u32 base = tw_preamble_len(st->preamble);
	__u16 version = 0;
	int r = TW_HELLO_NEED_MORE;

	if (st->cls != TW_CLASS_PENDING)
		return TW_CLASS_PENDING;
	if (st->hello_len > base)
		r = tw_hello_judge(st->hello, st->hello_len - base, &version);
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
	/* A preamble may come 1 byte a segment too: its bytes do not count
	 * against the limit. */
	if (st->data_pkts >= TW_MAX_PENDING_PKTS + base) {
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
		if (c == TW_COLLECT_BAD_PREAMBLE) {
			st->cls = TW_CLASS_NOT_TLS;
			st->reason = TW_REASON_BAD_PREAMBLE;
			r |= TW_DATA_NOT_TLS;
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
		if ((__s32)(seq - (st->isn + 1)) < (__s32)tw_hello_window(st) &&
		    tw_hello_collect(src, payload_off, seq, syn, payload_len, st) ==
			TW_COLLECT_MISMATCH) {
			tw_hello_reclassify(st, TW_REASON_OVERLAP_MISMATCH);
			r |= TW_DATA_MISMATCH | TW_DATA_WAS_TLS;
		}
	}
	return r;
}

#endif /* TLSWALL_BPF_LIB_HELLO_STREAM_H */
