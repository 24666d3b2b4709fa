/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * tlswall kernel/user ABI: every struct and constant that both the BPF
 * programs and the daemon read. Fixed-width types only, explicit padding,
 * no bitfields. Byte order is noted per field ("be" = network order).
 *
 * Stability rules (see ../shared/STYLE.md): fields are appended, never
 * reordered; a retired field becomes reservedN; a changed layout bumps
 * TW_ABI_VERSION. Event type, verdict, reason and counter numbers are never
 * reused. tests/unit/abi_layout_test.cc static_asserts sizes and offsets.
 */
#ifndef TLSWALL_BPF_ABI_TLSWALL_ABI_H
#define TLSWALL_BPF_ABI_TLSWALL_ABI_H

#ifndef __bpf__
#include <linux/types.h>
#endif

#define TW_ABI_VERSION 1

/* Schema of the flow table (see "pinned tables" below); the upgrade test
 * build overrides it to prove migration. */
#ifndef TW_SCHEMA_FLOWS
#define TW_SCHEMA_FLOWS 1 /* tw_flows: tw_flow_key -> tw_flow_state */
#endif

/* ---- sizes (compile-time; map max_entries may be raised at load) ---- */
#define TW_MAX_PREFIXES	    16384 /* address rows per family per slot */
#define TW_MAX_PORT_ROWS    65536 /* (class, port prefix) rows per slot */
#define TW_MAX_CLASSES	    65535 /* distinct destination classes per slot */
#define TW_POLICY_SLOTS	    2	  /* double buffer: active + being written */
#define TW_HELLO_PREFIX	    11	  /* ClientHello bytes judged (through client_version) */
#define TW_MAX_PENDING_PKTS 32	  /* data packets before a flow is undecidable */
#define TW_RECHECK_PKTS	    64 /* data packets whose overlap with the judged prefix is re-checked */
#define TW_RECORD_CHECKS    8  /* client records after the first one whose headers are checked */

/* ---- modes ---- */
enum tw_mode {
	TW_MODE_MONITOR = 0,
	TW_MODE_ENFORCE = 1,
};

/* ---- per-flow classification of the first payload bytes (policy-free) ---- */
enum tw_class {
	TW_CLASS_PENDING = 0,	/* fewer than TW_HELLO_PREFIX bytes seen */
	TW_CLASS_TLS = 1,	/* valid ClientHello prefix; version in hello_version */
	TW_CLASS_NOT_TLS = 2,	/* reason in tw_flow_state.reason */
	TW_CLASS_UNTRACKED = 3, /* first bytes never seen (mid-stream / state lost) */
	TW_CLASS_INBOUND = 4,	/* accepted here (we sent the SYN-ACK): the peer's flow */
};

/* ---- reasons a flow is not (acceptable) TLS; never reuse numbers ---- */
enum tw_reason {
	TW_REASON_NONE = 0,
	TW_REASON_NOT_HANDSHAKE_RECORD = 1,  /* byte 0 != 22 */
	TW_REASON_BAD_RECORD_VERSION = 2,    /* bytes 1-2 not 0x0301..0x0303 */
	TW_REASON_BAD_RECORD_LENGTH = 3,     /* bytes 3-4 zero or > 2^14 */
	TW_REASON_NOT_CLIENT_HELLO = 4,	     /* byte 5 != 1 */
	TW_REASON_BAD_HANDSHAKE_LENGTH = 5,  /* bytes 6-8 inconsistent with record */
	TW_REASON_BAD_CLIENT_VERSION = 6,    /* bytes 9-10 not 0x0300..0x0304 */
	TW_REASON_TLS_BELOW_MINIMUM = 7,     /* client_version below rule minimum */
	TW_REASON_OVERLAP_MISMATCH = 8,	     /* retransmitted bytes differ from first copy */
	TW_REASON_UNDECIDABLE = 9,	     /* TW_MAX_PENDING_PKTS data packets, no decision */
	TW_REASON_FRAGMENTED = 10,	     /* IP fragment to a protected destination */
	TW_REASON_STATE_LOST = 11,	     /* data with no flow state (mid-stream) */
	TW_REASON_OUT_OF_WINDOW = 12,	     /* data beyond the judged prefix before a decision */
	TW_REASON_OPAQUE_HEADERS = 13,	     /* IPv6 extension chain too long, or ESP */
	TW_REASON_BAD_PREAMBLE = 14,	     /* began like a preamble the rule allows, is not one */
	TW_REASON_PREAMBLE_NOT_ALLOWED = 15, /* a preamble the rule no longer allows (reload) */
	TW_REASON_BAD_RECORD = 16,	     /* a later record header of the client is not TLS */
	TW_REASON_SERVER_NOT_TLS = 17,	     /* the server's answer is no ServerHello or alert */
	TW_REASON_UDP_NOT_ALLOWED = 18,	     /* UDP on a rule with udp = "block" */
	TW_REASON_NOT_QUIC = 19,	     /* UDP flow on a udp = "quic" rule that did not
					      * begin with a client's QUIC Initial */
};

/* ---- what a rule says of UDP to its boundary and ports (policy key `udp`) ----
 * Stored in spare padding of tw_port_verdict and tw_owner_group: a table
 * written by an older release holds 0, TW_UDP_ALLOW, what it meant (it let
 * all UDP pass). Numbers are never reused. */
enum tw_udp_verdict {
	TW_UDP_ALLOW = 0, /* UDP passes (the default) */
	TW_UDP_QUIC = 1,  /* each flow must begin with a QUIC Initial (lib/quic_initial.h) */
	TW_UDP_BLOCK = 2, /* no UDP flow is allowed */
	TW_UDP_MAX = 3,
};

/* ---- preambles: plaintext a client sends before its ClientHello ----
 * Some protocols negotiate TLS in plaintext first. A rule may allow them
 * (policy key `preambles`, bits TW_PREAMBLE_BIT(p) in the rule's mask);
 * on such a rule the stream may begin with exactly that preamble, and a
 * ClientHello, judged as always, must follow it (lib/preamble.h,
 * lib/hello_stream.h). Numbers are never reused. */
enum tw_preamble {
	TW_PREAMBLE_NONE = 0,
	TW_PREAMBLE_POSTGRESQL = 1, /* SSLRequest: 00 00 00 08 04 d2 16 2f */
	TW_PREAMBLE_MYSQL = 2,	    /* MySQL/MariaDB SSL request packet (36 bytes) */
	TW_PREAMBLE_MAX = 3,
};
#define TW_PREAMBLE_BIT(p)     (1u << ((p)-1))
#define TW_PREAMBLE_PG_LEN     8  /* the whole SSLRequest */
#define TW_PREAMBLE_MYSQL_LEN  36 /* header 4 + capabilities 4 + max packet 4 + charset 1 + 23 */
#define TW_PREAMBLE_MAX_LEN    36
#define TW_PREAMBLE_JUDGED_MAX 8 /* leading preamble bytes with constraints (PG 8, MySQL 6) */

/* ---- what the classifier did with the packet/flow ---- */
enum tw_action {
	TW_ACTION_PASS = 0,
	TW_ACTION_REPORT = 1, /* monitor: passed, reported */
	TW_ACTION_DROP = 2,   /* enforce: dropped, flow blocked */
};

/* ---- counters (per-CPU array index); never reuse numbers ---- */
enum tw_counter {
	TW_CNT_PACKETS = 0,		/* packets seen by the classifier */
	TW_CNT_FLOWS_SEEN = 1,		/* SYNs (new flows) seen */
	TW_CNT_FLOWS_TLS = 2,		/* flows whose first bytes are a ClientHello */
	TW_CNT_FLOWS_NOT_TLS = 3,	/* flows whose first bytes are not */
	TW_CNT_PLAINTEXT_REPORTED = 4,	/* protected, monitor mode */
	TW_CNT_PLAINTEXT_BLOCKED = 5,	/* protected, enforce mode */
	TW_CNT_EXEMPT = 6,		/* protected destination, exempted flow */
	TW_CNT_STATE_LOST = 7,		/* data on a protected flow with no state */
	TW_CNT_PACKETS_DROPPED = 8,	/* every TC_ACT_SHOT */
	TW_CNT_EVENTS_LOST = 9,		/* ring buffer full */
	TW_CNT_HELD_OUT_OF_WINDOW = 10, /* enforce: dropped pending out-of-order data */
	TW_CNT_FRAGMENTS =
	    11, /* fragments/hidden L4 to a boundary with rules (dropped if enforce) */
	TW_CNT_FLOW_TABLE_FULL = 12,   /* flow state insert failed */
	TW_CNT_PARSE_ERRORS = 13,      /* malformed/truncated headers (passed) */
	TW_CNT_TLS_BELOW_MINIMUM = 14, /* protected flows with an old client_version */
	TW_CNT_FLOWS_INBOUND = 15,     /* connections accepted by local servers (not judged) */
	TW_CNT_FLOWS_REAPED = 16,      /* flow state deleted when its socket was destroyed */
	TW_CNT_FLOWS_KEPT = 17,	       /* socket destroyed, state kept: violation or undecided */
	TW_CNT_SERVERS_CHECKED = 18,   /* protected TLS flows whose server answered TLS */
	TW_CNT_SERVERS_NOT_TLS = 19,   /* ... whose server answered something else */
	TW_CNT_SERVER_VERSION_UNKNOWN = 20, /* TLS answer, negotiated version not visible */
	TW_CNT_BAD_RECORDS = 21,	    /* protected TLS flows with a later non-TLS record */
	TW_CNT_UDP_FLOWS = 22, /* UDP flows judged: a udp = "quic"/"block" rule covers them */
	TW_CNT_UDP_NOT_ALLOWED =
	    23, /* of those, not allowed (also in plaintext_reported/blocked) */
	TW_CNT_MAX = 24,
};

/* Drop reasons use enum tw_reason; per-reason drop counts live in a second
 * per-CPU array of TW_REASON_MAX entries. */
#define TW_REASON_MAX 20

/* ---- policy tables (one slot per generation, slot is part of the key) ----
 *
 * A new flow costs two lookups, no loops:
 *   destination address --LPM--> destination class (tw_dest_value)
 *   (class, port)        --LPM--> verdict (tw_port_verdict), if protected
 * The compiler (policy/policy_kernel_tables.cc) gives every distinct set of
 * boundaries and exemptions a class id, and turns each class's port ranges
 * into prefixes over the 16-bit port. */

/* Address key: 1 byte slot, then the address. prefixlen = 8 + CIDR length. */
struct tw_lpm4_key {
	__u32 prefixlen; /* host order */
	__u8 slot;
	__u8 addr[4]; /* be */
	__u8 pad[3];  /* zero; never part of the matched prefix */
};

struct tw_lpm6_key {
	__u32 prefixlen; /* host order */
	__u8 slot;
	__u8 addr[16]; /* be */
	__u8 pad[3];
};

#define TW_DEST_ANY_RULE    0x01 /* some rule's boundary holds the address (any port) */
#define TW_DEST_ANY_ENFORCE 0x02 /* ... and one of them is in enforce mode */
/* Some rule with udp = "quic" or "block" covers the address (any port), and
 * one of those is in enforce mode: what UDP fragments to it meet (0 in
 * tables of older releases: UDP fragments pass, as they did). */
#define TW_DEST_ANY_UDP_RULE	0x04
#define TW_DEST_ANY_UDP_ENFORCE 0x08

/* Value of an address row. */
struct tw_dest_value {
	__u16 class_id; /* host order */
	__u8 flags;	/* TW_DEST_* */
	__u8 pad;
};

/* (class, port) key: prefixlen = 8 + 16 + port prefix length (0..16). */
struct tw_port_key {
	__u32 prefixlen; /* host order */
	__u8 slot;
	__u8 class_id[2]; /* be */
	__u8 port[2];	  /* be */
	__u8 pad[3];
};

/* The decision for a (class, port) that some rule covers. The fields up to
 * `exempt` hold for every owner when has_rule is set (a rule without owner
 * selectors covers it); owner_groups names the rules and exemptions with
 * owner selectors that also cover it (bits of tw_owner_groups): a matching
 * selector rule takes precedence over the plain rule, a matching selector
 * exemption exempts. */
struct tw_port_verdict {
	__u16 rule_id;	 /* index into the user-space rule name table */
	__u16 boundary;	 /* index into the boundary name table */
	__u16 exemption; /* index into the exemption name table, if exempt */
	__u16 min_tls;	 /* wire version, host order: 0x0301 TLS1.0 .. 0x0304 TLS1.3 */
	__u8 mode;	 /* enum tw_mode */
	__u8 exempt;	 /* 1: an exemption without owner selectors covers it */
	__u8 has_rule;	 /* 1: rule_id..mode valid for every owner */
	/* TW_PREAMBLE_BIT mask the rule allows (with rule_id). Was padding:
	 * a table written by an older release allows none, as it meant. */
	__u8 preambles;
	/* enum tw_udp_verdict of the rule (with rule_id). Was padding: a
	 * table written by an older release says TW_UDP_ALLOW, as it meant. */
	__u8 udp;
	__u8 pad[3];
	__u64 owner_groups; /* bit g: tw_owner_groups entry g covers this too */
};

/* ---- policy by owner ----
 * Rules and exemptions may select the socket's owner: cgroup (path prefix),
 * uid, comm. Each such rule or exemption is an owner group (at most
 * TW_MAX_OWNER_GROUPS per policy; exemptions take the low bits, then rules
 * in precedence order, so the lowest matching bit wins). A flow's matching
 * groups are worked out once, when its policy decision is made:
 *   uid       (bpf_get_socket_uid)          --hash--> groups
 *   comm      (owner record)                --hash--> groups
 *   cgroup    (ancestor ids at listed levels)--hash--> groups
 * and a group matches if every dimension it constrains matches
 * (tw_slot_meta.*_free lists the groups a dimension does not constrain).
 * Traffic without a local socket (forwarded) matches no group. */
#define TW_MAX_OWNER_GROUPS 64
#define TW_MAX_CGROUP_LEVEL 16	 /* deepest cgroup level a selector may name */
#define TW_MAX_OWNER_KEYS   4096 /* uid / comm / cgroup rows per slot */

struct tw_owner_group {
	__u16 rule_id;	 /* rule group: the rule */
	__u16 boundary;	 /* rule group: its boundary */
	__u16 exemption; /* exemption group: the exemption */
	__u16 min_tls;	 /* rule group */
	__u8 mode;	 /* rule group: enum tw_mode */
	__u8 is_exemption;
	__u8 preambles; /* rule group: TW_PREAMBLE_BIT mask (was padding: none) */
	__u8 udp;	/* rule group: enum tw_udp_verdict (was padding: allow) */
};

struct tw_owner_uid_key {
	__u32 slot;
	__u32 uid;
};

struct tw_owner_comm_key {
	__u32 slot;
	char comm[16]; /* NUL-padded */
};

struct tw_owner_cgroup_key {
	__u64 slot;
	__u64 cgroup_id;
};

/* Per-slot metadata: the generation the slot holds. The classifier uses a
 * slot only if it holds the generation it was told to use. */
struct tw_slot_meta {
	__u64 generation;
	__u64 groups;	     /* every owner group in use */
	__u64 exempt_groups; /* the groups that are exemptions */
	__u64 uid_free;	     /* groups with no uid selector */
	__u64 comm_free;     /* groups with no comm selector */
	__u64 cgroup_free;   /* groups with no cgroup selector */
	__u32 cgroup_levels; /* bit L: some cgroup selector sits at level L */
	/* Random, nonzero, new on every publish: a generation number used
	 * again (after a failed start rolled the generation back) names other
	 * tables, and the classifier's decision cache must not mistake them
	 * (0: written by a release that kept this as padding). */
	__u32 publish_id;
};

/* ---- flow state (LRU hash) ---- */

/* IPv4 addresses are stored IPv4-mapped (::ffff:a.b.c.d). */
struct tw_flow_key {
	__u8 saddr[16]; /* be */
	__u8 daddr[16]; /* be */
	__u16 sport;	/* be */
	__u16 dport;	/* be */
	__u8 family;	/* 4 or 6 */
	__u8 proto;	/* IPPROTO_TCP, or IPPROTO_UDP (17) for UDP flows */
	__u16 pad;
};

struct tw_flow_state {
	__u64 first_seen_ns;	 /* bpf_ktime_get_ns() of the SYN */
	__u64 policy_generation; /* generation the decision below was made with */
	__u32 isn;		 /* host order: seq of the SYN */
	__u16 rule_id;		 /* valid when protected */
	__u16 boundary;		 /* valid when protected */
	__u16 exemption;	 /* valid when exempt */
	__u16 hello_version;	 /* host order: client_version once TW_CLASS_TLS */
	__u16 min_tls;		 /* rule minimum, host order */
	__u8 cls;		 /* enum tw_class */
	__u8 reason;		 /* enum tw_reason */
	__u8 protected_;	 /* 1: destination+port covered by a rule */
	__u8 exempt;		 /* 1: covered by an exemption */
	__u8 mode;		 /* enum tw_mode of the rule */
	__u8 action;		 /* enum tw_action currently applied */
	__u8 hello_len;		 /* bytes of the hello prefix collected */
	__u8 data_pkts;		 /* data packets seen while pending */
	__u8 reported;		 /* 1: an event for the current action was sent */
	__u8 preambles;		 /* TW_PREAMBLE_BIT mask of the rule (was padding) */
	/* Stream bytes [base, base + hello_len - base) of the ClientHello,
	 * base = the preamble's length (0 without one). hello_len counts
	 * stream bytes collected, preamble included. */
	__u8 hello[TW_HELLO_PREFIX];
	/* enum tw_preamble the first byte began (allowed by `preambles`);
	 * was the spare hello byte, always 0: none. */
	__u8 preamble;
	/* Low 32 bits of the socket cookie of the local socket that sends the
	 * flow; 0 = none seen yet (forwarded traffic, or written by a release
	 * that kept this as padding). The flow reaper deletes a flow's state
	 * when that socket is destroyed, and only if the cookie matches. */
	__u32 sock_cookie_lo;
#if TW_SCHEMA_FLOWS >= 2
	/* Schema 2 exists only in the upgrade test build (tests/upgrade/): a
	 * layout change that exercises the migration path end to end. */
	__u64 last_packet_ns;
#endif
};

/* ---- deeper TLS checks of protected flows judged TLS ----
 * A valid ClientHello start is not yet a TLS connection. For a protected,
 * non-exempt flow judged TLS the classifier keeps a check record
 * (tw_tls_checks, keyed like the flow table) until both hold:
 *  - the client's next TW_RECORD_CHECKS record headers after the first are
 *    TLS record headers (egress): plaintext after a fake ClientHello is
 *    read as a record header and fails (TW_REASON_BAD_RECORD);
 *  - the server's first answer after the hello (ingress) is a ServerHello
 *    (or HelloRetryRequest) or an alert (TW_REASON_SERVER_NOT_TLS if not),
 *    and the version it chose is at least the rule's minimum
 *    (TW_REASON_TLS_BELOW_MINIMUM).
 * Then the record goes. Two endpoints that agree to fake TLS framing (a
 * ClientHello prefix, ServerHello bytes, record headers around plaintext)
 * pass: headers say nothing of what the records hold. lib/tls_records.h. */
#define TW_CHK_SRV_KNOWN 0x01 /* srv_next is set */
#define TW_CHK_SRV_DONE	 0x02 /* the server's answer was judged TLS */
#define TW_CHK_RECS_DONE 0x04 /* TW_RECORD_CHECKS records judged, or the bound passed */
#define TW_CHK_FAILED	 0x08 /* a check failed: the flow's verdict holds both ways */

struct tw_tls_check {
	__u32 srv_next;	      /* host order: server sequence number where its answer starts */
	__u32 rec_next;	      /* client stream index of the next record header to judge */
	__u16 server_version; /* chosen by the server, host order; 0 = not (yet) known */
	__u8 flags;	      /* TW_CHK_* */
	__u8 rec_have;	      /* bytes of the header at rec_next judged so far (0..4) */
	__u8 rec_len_hi;      /* its length's high byte, once rec_have > 3 */
	__u8 recs_checked;    /* whole record headers judged after the first record */
	__u8 pad[2];
};

/* Which bytes decided a verdict (events); never reuse numbers. */
enum tw_evidence {
	TW_EVIDENCE_CLIENT_HELLO = 0,	/* the stream's first bytes (and preamble) */
	TW_EVIDENCE_CLIENT_RECORDS = 1, /* a later record header of the client */
	TW_EVIDENCE_SERVER_HELLO = 2,	/* the server's answer (tc ingress) */
};

/* ---- socket owners (attribution) ----
 * A probe records who opened a connecting socket before its SYN leaves
 * (connect() sends the SYN from inside the syscall). The record lives in
 * socket-local storage (tw_owners) so it dies with the socket; the kprobe
 * backend cannot reach socket storage and writes tw_owner_tuples (keyed like
 * the flow table) instead, which the classifier moves into tw_owners at the
 * SYN. Backend numbers are never reused. */
enum tw_owner_backend {
	TW_BACKEND_NONE = 0,
	TW_BACKEND_KPROBE = 1,	 /* kprobe/tcp_connect -> tw_owner_tuples */
	TW_BACKEND_FENTRY = 2,	 /* fentry/tcp_connect -> tw_owners */
	TW_BACKEND_TP_BTF = 3,	 /* tp_btf/inet_sock_set_state (-> SYN_SENT) -> tw_owners */
	TW_BACKEND_SOCK_OPS = 4, /* sock_ops TCP_CONNECT_CB on a cgroup -> tw_owners */
	TW_BACKEND_MAX = 5,
};

/* How much the classifier knew about a packet's owner; never reuse numbers. */
enum tw_owner_status {
	TW_OWNER_UNKNOWN = 0,	    /* not looked up */
	TW_OWNER_RECORDED = 1,	    /* a probe's record: every field valid */
	TW_OWNER_NO_SOCKET = 2,	    /* no local socket: forwarded/routed traffic */
	TW_OWNER_NOT_RECORDED = 3,  /* local socket, no record (opened before the probes
				     * ran, or no backend): uid and cgroup_id only */
	TW_OWNER_NOT_FULL_SOCK = 4, /* request/timewait socket: nothing known */
};

struct tw_owner {
	__u64 cgroup_id;	 /* cgroup v2 id of the task at connect() */
	__u64 start_boottime_ns; /* start time of the process (tgid), 0 if unknown:
				  * tells a reused pid from the owner */
	__u32 pid;		 /* thread id (kernel pid) */
	__u32 tgid;		 /* process id */
	__u32 uid;
	__u32 gid;
	char comm[16]; /* NUL-terminated unless 16 long */
	__u8 backend;  /* enum tw_owner_backend that wrote the record */
	__u8 pad[7];
};

/* ---- events (ring buffer) ---- */

/* Event type numbers are never reused. */
enum tw_event_type {
	TW_EV_FLOW_VERDICT = 1,	  /* a protected flow was reported/blocked */
	TW_EV_FLOW_UNTRACKED = 2, /* protected flow seen mid-stream */
};

#define TW_EV_FLOW_VERDICT_VERSION 2  /* 2: owner, owner_status appended */
#define TW_EV_FLOW_V1_SIZE	   96 /* bytes of a version 1 flow event */

/* Common header of every ring-buffer event. */
struct tw_event_hdr {
	__u16 type;	/* enum tw_event_type */
	__u16 version;	/* layout version of this type */
	__u32 size;	/* bytes of the whole event, header included */
	__u64 ktime_ns; /* bpf_ktime_get_ns() */
};

struct tw_flow_event {
	struct tw_event_hdr hdr;
	struct tw_flow_key flow;
	__u64 sock_cookie; /* bpf_get_socket_cookie(skb); 0 if no local socket */
	__u64 policy_generation;
	__u32 ifindex;
	__u16 rule_id;
	__u16 boundary;
	__u16 exemption;
	__u16 hello_version; /* host order, 0 if none */
	__u16 min_tls;	     /* host order */
	__u8 cls;	     /* enum tw_class */
	__u8 reason;	     /* enum tw_reason */
	__u8 mode;	     /* enum tw_mode */
	__u8 action;	     /* enum tw_action */
	/* enum tw_preamble the flow sent whole before its ClientHello (was
	 * padding, zeroed: version 2 events from older programs say none). */
	__u8 preamble;
	/* enum tw_evidence: which bytes decided (was padding, zeroed: older
	 * programs decided from the ClientHello only). */
	__u8 evidence;
	/* Version the server chose (ServerHello, supported_versions), host
	 * order; 0 = not seen or not visible (was padding). */
	__u16 server_version;
	__u8 pad[2];
	/* version 2: */
	struct tw_owner owner; /* valid per owner_status */
	__u8 owner_status;     /* enum tw_owner_status */
	__u8 pad2[7];
};

/* ---- active policy ----
 * The daemon publishes the active generation in one 64-bit word, element 0
 * of the mmapable tw_state array; the slot the classifier reads is
 * generation % 2. Generation 0 means no policy yet: every flow passes,
 * unjudged. One aligned 64-bit store flips the whole policy: no packet sees
 * half of one. */
#define TW_SLOT_OF(gen) ((__u32)((gen)&1))

struct tw_state {
	__u64 policy_generation;
};

/* ---- pinned tables and their schema versions ----
 * Every table is pinned under the pin root as "<table>_v<schema>", so a
 * release whose layout differs finds the old tables by name, builds its own
 * beside them and migrates (agent/bpf_migration.cc). Bump a table's schema
 * whenever its key or value layout, type or meaning changes. */
/* TW_SCHEMA_FLOWS: defined at the top of this file. */
#define TW_SCHEMA_POLICY                                                                           \
	2		     /* tw_lpm4, tw_lpm6, tw_ports, tw_slots, tw_owner_* (2: owner groups) \
			      */
#define TW_SCHEMA_STATE	   1 /* tw_state */
#define TW_SCHEMA_COUNTERS 1 /* tw_counters, tw_drop_reasons */
#define TW_SCHEMA_EVENTS   1 /* tw_events (tw_event_hdr framing) */
#define TW_SCHEMA_META	   1 /* tw_meta below: append-only */
#define TW_SCHEMA_OWNERS   1 /* tw_owners, tw_owner_tuples (struct tw_owner) */
#define TW_SCHEMA_CHECKS   1 /* tw_tls_checks: tw_flow_key -> tw_tls_check */

#define TW_META_MAGIC 0x314c4c4157534c54ULL /* "TLSWALL1" little-endian */

/* The pinned record of who owns the pins (user space only; element 0 of the
 * pinned "meta" array). Fields are appended, never moved. */
struct tw_meta {
	__u64 magic; /* TW_META_MAGIC */
	__u32 meta_schema;
	__u32 schema_flows;
	__u32 schema_policy;
	__u32 schema_state;
	__u32 schema_counters;
	__u32 schema_events;
	__u64 policy_generation;     /* last generation published */
	__u64 heartbeat_unix_ns;     /* daemon alive at (CLOCK_REALTIME) */
	__u64 events_lost_reported;  /* TW_CNT_EVENTS_LOST already reported */
	__u64 first_started_unix_ns; /* when these pins were first created */
	char agent_version[32];	     /* NUL-terminated */
	char policy_hash[72];	     /* hex sha256, NUL-terminated */
	__u32 fail_closed;	     /* 1: teardown keeps enforcing unless told to open */
	__u32 pad;
};

/* Where the classifier is attached (pinned "ifaces" array; user space). */
#define TW_MAX_IFACES 64
struct tw_iface_rec {
	__u32 ifindex;	    /* 0 = free slot */
	__u8 created_qdisc; /* 1: our clsact, removed at teardown */
	__u8 l3;	    /* 1: the L3 program */
	__u8 pad[2];
	char name[16];
	__u64 netns_ino; /* network namespace of ifindex (inode of its nsfs file) */
	__u64 netns_dev; /* ... and device; an ifindex means nothing elsewhere */
};

#endif /* TLSWALL_BPF_ABI_TLSWALL_ABI_H */
