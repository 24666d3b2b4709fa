// Freezes the kernel/user ABI in bpf/abi/tlswall_abi.h: every struct's size,
// alignment and field offsets, and every enum number. The BPF objects, pinned
// maps of a running daemon and event consumers all depend on these; a change
// must be made here on purpose (and bump TW_ABI_VERSION / a versioned map
// name), never by accident.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>

extern "C" {
#include "abi/tlswall_abi.h"
#include "abi/tlswall_abi_history.h"
}

namespace {

#define TW_FIELD_SIZE(type, field) sizeof(((type*)nullptr)->field)

// ---- constants that size structs or maps ----
static_assert(TW_ABI_VERSION == 1, "ABI version changed: update this test deliberately");
static_assert(TW_MAX_PREFIXES == 16384);
static_assert(TW_MAX_PORT_ROWS == 65536);
static_assert(TW_MAX_CLASSES == 65535);
static_assert(TW_MAX_CLASSES <= 0xffff + 1, "class ids are 16 bits (tw_dest_value, tw_port_key)");
static_assert(TW_POLICY_SLOTS == 2);
static_assert(TW_POLICY_SLOTS <= 0xff + 1, "the slot is one key byte");
static_assert(TW_HELLO_PREFIX == 11);
static_assert(TW_MAX_PENDING_PKTS == 32);
static_assert(
    TW_CNT_MAX == 24,
    "per-CPU counter array size (a bigger pinned array is rebuilt, its counts carried over)");
static_assert(TW_REASON_MAX == 20, "per-CPU drop-reason array size");
static_assert(TW_RECORD_CHECKS == 8);
static_assert(TW_EV_FLOW_VERDICT_VERSION == 2);
static_assert(TW_EV_FLOW_V1_SIZE == 96, "version 1 events end where version 2 appends");
static_assert(TW_MAX_OWNER_GROUPS == 64, "owner groups are bits of a __u64");
static_assert(TW_MAX_CGROUP_LEVEL <= 32, "cgroup_levels is a __u32 bit set");

// The rule-scan tables are gone from the kernel ABI: their sizes are the
// policy compiler's business now (policy/compiled_rows.h). The ABI header
// must not bring them back.
#if defined(TW_MAX_RULE_ENTRIES) || defined(TW_MAX_EXEMPT_ENTRIES) || defined(TW_MASK_WORDS) || \
    defined(TW_MAX_BOUNDARIES) || defined(TW_MAX_EXEMPTIONS)
#error "compiler intermediates (policy/compiled_rows.h) are defined by the kernel ABI header"
#endif

// tw_dest_value.flags bits.
static_assert(TW_DEST_ANY_RULE == 0x01);
static_assert(TW_DEST_ANY_ENFORCE == 0x02);
static_assert(TW_DEST_ANY_UDP_RULE == 0x04);
static_assert(TW_DEST_ANY_UDP_ENFORCE == 0x08);

// Rules' udp verdicts: 0 (a table of an older release) is allow.
static_assert(TW_UDP_ALLOW == 0);
static_assert(TW_UDP_QUIC == 1);
static_assert(TW_UDP_BLOCK == 2);
static_assert(TW_UDP_MAX == 3);

// ---- enums: numbers are never reused or renumbered ----
static_assert(TW_MODE_MONITOR == 0);
static_assert(TW_MODE_ENFORCE == 1);

static_assert(TW_CLASS_PENDING == 0);
static_assert(TW_CLASS_TLS == 1);
static_assert(TW_CLASS_NOT_TLS == 2);
static_assert(TW_CLASS_UNTRACKED == 3);
static_assert(TW_CLASS_INBOUND == 4);

static_assert(TW_REASON_NONE == 0);
static_assert(TW_REASON_NOT_HANDSHAKE_RECORD == 1);
static_assert(TW_REASON_BAD_RECORD_VERSION == 2);
static_assert(TW_REASON_BAD_RECORD_LENGTH == 3);
static_assert(TW_REASON_NOT_CLIENT_HELLO == 4);
static_assert(TW_REASON_BAD_HANDSHAKE_LENGTH == 5);
static_assert(TW_REASON_BAD_CLIENT_VERSION == 6);
static_assert(TW_REASON_TLS_BELOW_MINIMUM == 7);
static_assert(TW_REASON_OVERLAP_MISMATCH == 8);
static_assert(TW_REASON_UNDECIDABLE == 9);
static_assert(TW_REASON_FRAGMENTED == 10);
static_assert(TW_REASON_STATE_LOST == 11);
static_assert(TW_REASON_OUT_OF_WINDOW == 12);
static_assert(TW_REASON_OPAQUE_HEADERS == 13);
static_assert(TW_REASON_BAD_PREAMBLE == 14);
static_assert(TW_REASON_PREAMBLE_NOT_ALLOWED == 15);
static_assert(TW_REASON_BAD_RECORD == 16);
static_assert(TW_REASON_SERVER_NOT_TLS == 17);
static_assert(TW_REASON_UDP_NOT_ALLOWED == 18);
static_assert(TW_REASON_NOT_QUIC == 19);
static_assert(TW_REASON_NOT_QUIC < TW_REASON_MAX, "reasons index the drop array");
static_assert(TW_PREAMBLE_POSTGRESQL == 1 && TW_PREAMBLE_MYSQL == 2, "never renumbered");
static_assert(TW_PREAMBLE_BIT(TW_PREAMBLE_MYSQL) == 2);
// hello_len counts the preamble too, and is a __u8.
static_assert(TW_PREAMBLE_MAX_LEN + TW_HELLO_PREFIX < 256);

static_assert(TW_ACTION_PASS == 0);
static_assert(TW_ACTION_REPORT == 1);
static_assert(TW_ACTION_DROP == 2);

static_assert(TW_CNT_PACKETS == 0);
static_assert(TW_CNT_FLOWS_SEEN == 1);
static_assert(TW_CNT_FLOWS_TLS == 2);
static_assert(TW_CNT_FLOWS_NOT_TLS == 3);
static_assert(TW_CNT_PLAINTEXT_REPORTED == 4);
static_assert(TW_CNT_PLAINTEXT_BLOCKED == 5);
static_assert(TW_CNT_EXEMPT == 6);
static_assert(TW_CNT_STATE_LOST == 7);
static_assert(TW_CNT_PACKETS_DROPPED == 8);
static_assert(TW_CNT_EVENTS_LOST == 9);
static_assert(TW_CNT_HELD_OUT_OF_WINDOW == 10);
static_assert(TW_CNT_FRAGMENTS == 11);
static_assert(TW_CNT_FLOW_TABLE_FULL == 12);
static_assert(TW_CNT_PARSE_ERRORS == 13);
static_assert(TW_CNT_TLS_BELOW_MINIMUM == 14);
static_assert(TW_CNT_FLOWS_INBOUND == 15);
static_assert(TW_CNT_FLOWS_REAPED == 16);
static_assert(TW_CNT_FLOWS_KEPT == 17);
static_assert(TW_CNT_SERVERS_CHECKED == 18);
static_assert(TW_CNT_SERVERS_NOT_TLS == 19);
static_assert(TW_CNT_SERVER_VERSION_UNKNOWN == 20);
static_assert(TW_CNT_BAD_RECORDS == 21);
static_assert(TW_EVIDENCE_CLIENT_HELLO == 0, "zeroed padding of older events means this");
static_assert(TW_EVIDENCE_CLIENT_RECORDS == 1);
static_assert(TW_EVIDENCE_SERVER_HELLO == 2);
static_assert(TW_CNT_UDP_FLOWS == 22);
static_assert(TW_CNT_UDP_NOT_ALLOWED == 23);
static_assert(TW_CNT_UDP_NOT_ALLOWED < TW_CNT_MAX, "counters index the counter array");

static_assert(TW_EV_FLOW_VERDICT == 1);
static_assert(TW_EV_FLOW_UNTRACKED == 2);

// ---- struct tw_lpm4_key ----
static_assert(sizeof(tw_lpm4_key) == 12);
static_assert(alignof(tw_lpm4_key) == 4);
static_assert(offsetof(tw_lpm4_key, prefixlen) == 0);
static_assert(offsetof(tw_lpm4_key, slot) == 4);
static_assert(offsetof(tw_lpm4_key, addr) == 5);
static_assert(TW_FIELD_SIZE(tw_lpm4_key, addr) == 4);
static_assert(offsetof(tw_lpm4_key, pad) == 9);
static_assert(TW_FIELD_SIZE(tw_lpm4_key, pad) == 3);

// ---- struct tw_lpm6_key ----
static_assert(sizeof(tw_lpm6_key) == 24);
static_assert(alignof(tw_lpm6_key) == 4);
static_assert(offsetof(tw_lpm6_key, prefixlen) == 0);
static_assert(offsetof(tw_lpm6_key, slot) == 4);
static_assert(offsetof(tw_lpm6_key, addr) == 5);
static_assert(TW_FIELD_SIZE(tw_lpm6_key, addr) == 16);
static_assert(offsetof(tw_lpm6_key, pad) == 21);
static_assert(TW_FIELD_SIZE(tw_lpm6_key, pad) == 3);

// ---- struct tw_dest_value (value of tw_lpm4 / tw_lpm6) ----
static_assert(sizeof(tw_dest_value) == 4);
static_assert(alignof(tw_dest_value) == 2);
static_assert(offsetof(tw_dest_value, class_id) == 0);
static_assert(TW_FIELD_SIZE(tw_dest_value, class_id) == 2);
static_assert(offsetof(tw_dest_value, flags) == 2);
static_assert(TW_FIELD_SIZE(tw_dest_value, flags) == 1);
static_assert(offsetof(tw_dest_value, pad) == 3);

// ---- struct tw_port_key (key of tw_ports) ----
static_assert(sizeof(tw_port_key) == 12);
static_assert(alignof(tw_port_key) == 4);
static_assert(offsetof(tw_port_key, prefixlen) == 0);
static_assert(offsetof(tw_port_key, slot) == 4);
static_assert(offsetof(tw_port_key, class_id) == 5);
static_assert(TW_FIELD_SIZE(tw_port_key, class_id) == 2);
static_assert(offsetof(tw_port_key, port) == 7);
static_assert(TW_FIELD_SIZE(tw_port_key, port) == 2);
static_assert(offsetof(tw_port_key, pad) == 9);
static_assert(TW_FIELD_SIZE(tw_port_key, pad) == 3);

// ---- struct tw_port_verdict (value of tw_ports) ----
static_assert(sizeof(tw_port_verdict) == 24);
static_assert(alignof(tw_port_verdict) == 8);
static_assert(offsetof(tw_port_verdict, rule_id) == 0);
static_assert(offsetof(tw_port_verdict, boundary) == 2);
static_assert(offsetof(tw_port_verdict, exemption) == 4);
static_assert(offsetof(tw_port_verdict, min_tls) == 6);
static_assert(offsetof(tw_port_verdict, mode) == 8);
static_assert(offsetof(tw_port_verdict, exempt) == 9);
static_assert(offsetof(tw_port_verdict, has_rule) == 10);
static_assert(offsetof(tw_port_verdict, preambles) == 11);  // was pad[0]
static_assert(offsetof(tw_port_verdict, udp) == 12);        // was pad[0]
static_assert(offsetof(tw_port_verdict, pad) == 13);
static_assert(TW_FIELD_SIZE(tw_port_verdict, pad) == 3);
static_assert(offsetof(tw_port_verdict, owner_groups) == 16);

// ---- owner groups and selector keys (policy by owner) ----
static_assert(sizeof(tw_owner_group) == 12);
static_assert(offsetof(tw_owner_group, mode) == 8);
static_assert(offsetof(tw_owner_group, is_exemption) == 9);
static_assert(offsetof(tw_owner_group, preambles) == 10);  // was pad[0]
static_assert(offsetof(tw_owner_group, udp) == 11);        // was pad[1], the last spare byte
static_assert(sizeof(tw_owner_uid_key) == 8);
static_assert(sizeof(tw_owner_comm_key) == 20);
static_assert(offsetof(tw_owner_comm_key, comm) == 4);
static_assert(sizeof(tw_owner_cgroup_key) == 16);

// ---- struct tw_owner (socket storage and tuple table value; in events) ----
static_assert(sizeof(tw_owner) == 56);
static_assert(alignof(tw_owner) == 8);
static_assert(offsetof(tw_owner, cgroup_id) == 0);
static_assert(offsetof(tw_owner, start_boottime_ns) == 8);
static_assert(offsetof(tw_owner, pid) == 16);
static_assert(offsetof(tw_owner, tgid) == 20);
static_assert(offsetof(tw_owner, uid) == 24);
static_assert(offsetof(tw_owner, gid) == 28);
static_assert(offsetof(tw_owner, comm) == 32);
static_assert(offsetof(tw_owner, backend) == 48);
static_assert(TW_FIELD_SIZE(tw_owner, pad) == 7);
static_assert(TW_BACKEND_KPROBE == 1 && TW_BACKEND_FENTRY == 2 && TW_BACKEND_TP_BTF == 3 &&
              TW_BACKEND_SOCK_OPS == 4);
static_assert(TW_OWNER_RECORDED == 1 && TW_OWNER_NO_SOCKET == 2 && TW_OWNER_NOT_RECORDED == 3 &&
              TW_OWNER_NOT_FULL_SOCK == 4);

// ---- struct tw_slot_meta (value of tw_slots) ----
static_assert(sizeof(tw_slot_meta) == 56);
static_assert(alignof(tw_slot_meta) == 8);
static_assert(offsetof(tw_slot_meta, generation) == 0);
static_assert(TW_FIELD_SIZE(tw_slot_meta, generation) == 8);
static_assert(offsetof(tw_slot_meta, groups) == 8);
static_assert(offsetof(tw_slot_meta, cgroup_levels) == 48);

// ---- struct tw_state (the mmapped generation word, element 0 of tw_state) ----
static_assert(sizeof(tw_state) == 8);
static_assert(alignof(tw_state) == 8, "one aligned 64-bit store flips the policy");
static_assert(offsetof(tw_state, policy_generation) == 0);

// ---- pinned tables: schema versions and the user-space records ----
// Pins outlive the daemon, so these records are read by other releases:
// fields are appended, never moved.
static_assert(TW_SCHEMA_FLOWS == 1, "the normal build's flow table schema");
static_assert(TW_SCHEMA_POLICY == 2, "2: owner groups in tw_port_verdict and tw_slot_meta");
static_assert(TW_SCHEMA_OWNERS == 1);
static_assert(TW_SCHEMA_STATE == 1);
static_assert(TW_SCHEMA_COUNTERS == 1);
static_assert(TW_SCHEMA_EVENTS == 1);
static_assert(TW_SCHEMA_META == 1);
static_assert(TW_META_MAGIC == 0x314c4c4157534c54ULL);
static_assert(TW_MAX_IFACES == 64);

static_assert(sizeof(tw_meta) == 176);
static_assert(alignof(tw_meta) == 8);
static_assert(offsetof(tw_meta, magic) == 0);
static_assert(offsetof(tw_meta, meta_schema) == 8);
static_assert(offsetof(tw_meta, schema_flows) == 12);
static_assert(offsetof(tw_meta, schema_policy) == 16);
static_assert(offsetof(tw_meta, schema_state) == 20);
static_assert(offsetof(tw_meta, schema_counters) == 24);
static_assert(offsetof(tw_meta, schema_events) == 28);
static_assert(offsetof(tw_meta, policy_generation) == 32);
static_assert(offsetof(tw_meta, heartbeat_unix_ns) == 40);
static_assert(offsetof(tw_meta, events_lost_reported) == 48);
static_assert(offsetof(tw_meta, first_started_unix_ns) == 56);
static_assert(offsetof(tw_meta, agent_version) == 64);
static_assert(TW_FIELD_SIZE(tw_meta, agent_version) == 32);
static_assert(offsetof(tw_meta, policy_hash) == 96);
static_assert(TW_FIELD_SIZE(tw_meta, policy_hash) == 72);
// Appended after 0.1: older pinned records are widened on open (bpf_pins.cc).
static_assert(offsetof(tw_meta, fail_closed) == 168);
static_assert(offsetof(tw_meta, pad) == 172);

static_assert(sizeof(tw_iface_rec) == 40);
static_assert(alignof(tw_iface_rec) == 8);
static_assert(offsetof(tw_iface_rec, ifindex) == 0);
static_assert(offsetof(tw_iface_rec, created_qdisc) == 4);
static_assert(offsetof(tw_iface_rec, l3) == 5);
static_assert(offsetof(tw_iface_rec, pad) == 6);
static_assert(TW_FIELD_SIZE(tw_iface_rec, pad) == 2);
static_assert(offsetof(tw_iface_rec, name) == 8);
static_assert(TW_FIELD_SIZE(tw_iface_rec, name) == 16);
// Appended after 0.1: an ifindex is only meaningful in its namespace.
static_assert(offsetof(tw_iface_rec, netns_ino) == 24);
static_assert(offsetof(tw_iface_rec, netns_dev) == 32);

// ---- struct tw_flow_key ----
static_assert(sizeof(tw_flow_key) == 40);
static_assert(alignof(tw_flow_key) == 2);
static_assert(offsetof(tw_flow_key, saddr) == 0);
static_assert(offsetof(tw_flow_key, daddr) == 16);
static_assert(offsetof(tw_flow_key, sport) == 32);
static_assert(offsetof(tw_flow_key, dport) == 34);
static_assert(offsetof(tw_flow_key, family) == 36);
static_assert(offsetof(tw_flow_key, proto) == 37);
static_assert(offsetof(tw_flow_key, pad) == 38);

// ---- struct tw_flow_state ----
static_assert(sizeof(tw_flow_state) == 56);
static_assert(alignof(tw_flow_state) == 8);
static_assert(offsetof(tw_flow_state, first_seen_ns) == 0);
static_assert(offsetof(tw_flow_state, policy_generation) == 8);
static_assert(offsetof(tw_flow_state, isn) == 16);
static_assert(offsetof(tw_flow_state, rule_id) == 20);
static_assert(offsetof(tw_flow_state, boundary) == 22);
static_assert(offsetof(tw_flow_state, exemption) == 24);
static_assert(offsetof(tw_flow_state, hello_version) == 26);
static_assert(offsetof(tw_flow_state, min_tls) == 28);
static_assert(offsetof(tw_flow_state, cls) == 30);
static_assert(offsetof(tw_flow_state, reason) == 31);
static_assert(offsetof(tw_flow_state, protected_) == 32);
static_assert(offsetof(tw_flow_state, exempt) == 33);
static_assert(offsetof(tw_flow_state, mode) == 34);
static_assert(offsetof(tw_flow_state, action) == 35);
static_assert(offsetof(tw_flow_state, hello_len) == 36);
static_assert(offsetof(tw_flow_state, data_pkts) == 37);
static_assert(offsetof(tw_flow_state, reported) == 38);
static_assert(offsetof(tw_flow_state, preambles) == 39);  // was pad0
static_assert(offsetof(tw_flow_state, hello) == 40);
static_assert(offsetof(tw_flow_state, preamble) == 51);  // was the spare hello[11]
static_assert(offsetof(tw_flow_state, sock_cookie_lo) == 52);
// The frozen schema-1 layout named these bytes pad1: same place, same size.
static_assert(offsetof(tw_flow_state_v1, pad1) == offsetof(tw_flow_state, sock_cookie_lo));
static_assert(TW_FIELD_SIZE(tw_flow_state, hello) == TW_HELLO_PREFIX);

// ---- struct tw_event_hdr ----
static_assert(sizeof(tw_event_hdr) == 16);
static_assert(alignof(tw_event_hdr) == 8);
static_assert(offsetof(tw_event_hdr, type) == 0);
static_assert(offsetof(tw_event_hdr, version) == 2);
static_assert(offsetof(tw_event_hdr, size) == 4);
static_assert(offsetof(tw_event_hdr, ktime_ns) == 8);

// ---- struct tw_flow_event ----
static_assert(sizeof(tw_flow_event) == 160);
static_assert(alignof(tw_flow_event) == 8);
static_assert(offsetof(tw_flow_event, hdr) == 0);
static_assert(offsetof(tw_flow_event, flow) == 16);
static_assert(offsetof(tw_flow_event, sock_cookie) == 56);
static_assert(offsetof(tw_flow_event, policy_generation) == 64);
static_assert(offsetof(tw_flow_event, ifindex) == 72);
static_assert(offsetof(tw_flow_event, rule_id) == 76);
static_assert(offsetof(tw_flow_event, boundary) == 78);
static_assert(offsetof(tw_flow_event, exemption) == 80);
static_assert(offsetof(tw_flow_event, hello_version) == 82);
static_assert(offsetof(tw_flow_event, min_tls) == 84);
static_assert(offsetof(tw_flow_event, cls) == 86);
static_assert(offsetof(tw_flow_event, reason) == 87);
static_assert(offsetof(tw_flow_event, mode) == 88);
static_assert(offsetof(tw_flow_event, action) == 89);
static_assert(offsetof(tw_flow_event, preamble) == 90);        // was pad[0]
static_assert(offsetof(tw_flow_event, evidence) == 91);        // was pad[0]
static_assert(offsetof(tw_flow_event, server_version) == 92);  // was pad[1..2]
static_assert(offsetof(tw_flow_event, pad) == 94);
static_assert(TW_FIELD_SIZE(tw_flow_event, pad) == 2);

// ---- struct tw_tls_check (tw_tls_checks, TW_SCHEMA_CHECKS) ----
static_assert(TW_SCHEMA_CHECKS == 1);
static_assert(sizeof(tw_tls_check) == 16);
static_assert(offsetof(tw_tls_check, srv_next) == 0);
static_assert(offsetof(tw_tls_check, rec_next) == 4);
static_assert(offsetof(tw_tls_check, server_version) == 8);
static_assert(offsetof(tw_tls_check, flags) == 10);
static_assert(offsetof(tw_tls_check, rec_have) == 11);
static_assert(offsetof(tw_tls_check, rec_len_hi) == 12);
static_assert(offsetof(tw_tls_check, recs_checked) == 13);
static_assert(TW_FIELD_SIZE(tw_tls_check, pad) == 2);
static_assert(offsetof(tw_flow_event, owner) == TW_EV_FLOW_V1_SIZE);
static_assert(offsetof(tw_flow_event, owner_status) == 152);
static_assert(TW_FIELD_SIZE(tw_flow_event, pad2) == 7);

// Sum of the named fields' sizes: equal to sizeof() exactly when the struct
// has no compiler-inserted padding (the ABI rule is "explicit padding").
#define TW_SUM2(T, a, b) (TW_FIELD_SIZE(T, a) + TW_FIELD_SIZE(T, b))

constexpr size_t kLpm4Fields =
    TW_SUM2(tw_lpm4_key, prefixlen, slot) + TW_SUM2(tw_lpm4_key, addr, pad);
constexpr size_t kLpm6Fields =
    TW_SUM2(tw_lpm6_key, prefixlen, slot) + TW_SUM2(tw_lpm6_key, addr, pad);
constexpr size_t kDestValueFields =
    TW_SUM2(tw_dest_value, class_id, flags) + TW_FIELD_SIZE(tw_dest_value, pad);
constexpr size_t kPortKeyFields = TW_SUM2(tw_port_key, prefixlen, slot) +
                                  TW_SUM2(tw_port_key, class_id, port) +
                                  TW_FIELD_SIZE(tw_port_key, pad);
constexpr size_t kPortVerdictFields =
    TW_SUM2(tw_port_verdict, rule_id, boundary) + TW_SUM2(tw_port_verdict, exemption, min_tls) +
    TW_SUM2(tw_port_verdict, mode, exempt) + TW_SUM2(tw_port_verdict, has_rule, preambles) +
    TW_SUM2(tw_port_verdict, udp, pad) + TW_FIELD_SIZE(tw_port_verdict, owner_groups);
constexpr size_t kSlotMetaFields = TW_SUM2(tw_slot_meta, generation, groups) +
                                   TW_SUM2(tw_slot_meta, exempt_groups, uid_free) +
                                   TW_SUM2(tw_slot_meta, comm_free, cgroup_free) +
                                   TW_SUM2(tw_slot_meta, cgroup_levels, publish_id);
constexpr size_t kOwnerFields = TW_SUM2(tw_owner, cgroup_id, start_boottime_ns) +
                                TW_SUM2(tw_owner, pid, tgid) + TW_SUM2(tw_owner, uid, gid) +
                                TW_SUM2(tw_owner, comm, backend) + TW_FIELD_SIZE(tw_owner, pad);
constexpr size_t kOwnerGroupFields =
    TW_SUM2(tw_owner_group, rule_id, boundary) + TW_SUM2(tw_owner_group, exemption, min_tls) +
    TW_SUM2(tw_owner_group, mode, is_exemption) + TW_SUM2(tw_owner_group, preambles, udp);
constexpr size_t kStateFields = TW_FIELD_SIZE(tw_state, policy_generation);
constexpr size_t kMetaFields =
    TW_SUM2(tw_meta, magic, meta_schema) + TW_SUM2(tw_meta, schema_flows, schema_policy) +
    TW_SUM2(tw_meta, schema_state, schema_counters) +
    TW_SUM2(tw_meta, schema_events, policy_generation) +
    TW_SUM2(tw_meta, heartbeat_unix_ns, events_lost_reported) +
    TW_SUM2(tw_meta, first_started_unix_ns, agent_version) + TW_FIELD_SIZE(tw_meta, policy_hash) +
    TW_SUM2(tw_meta, fail_closed, pad);
constexpr size_t kIfaceRecFields =
    TW_SUM2(tw_iface_rec, ifindex, created_qdisc) + TW_SUM2(tw_iface_rec, l3, pad) +
    TW_FIELD_SIZE(tw_iface_rec, name) + TW_SUM2(tw_iface_rec, netns_ino, netns_dev);
constexpr size_t kFlowKeyFields =
    TW_SUM2(tw_flow_key, saddr, daddr) + TW_SUM2(tw_flow_key, sport, dport) +
    TW_SUM2(tw_flow_key, family, proto) + TW_FIELD_SIZE(tw_flow_key, pad);
constexpr size_t kFlowStateFields =
    TW_SUM2(tw_flow_state, first_seen_ns, policy_generation) +
    TW_SUM2(tw_flow_state, isn, rule_id) + TW_SUM2(tw_flow_state, boundary, exemption) +
    TW_SUM2(tw_flow_state, hello_version, min_tls) + TW_SUM2(tw_flow_state, cls, reason) +
    TW_SUM2(tw_flow_state, protected_, exempt) + TW_SUM2(tw_flow_state, mode, action) +
    TW_SUM2(tw_flow_state, hello_len, data_pkts) + TW_SUM2(tw_flow_state, reported, preambles) +
    TW_SUM2(tw_flow_state, hello, preamble) + TW_FIELD_SIZE(tw_flow_state, sock_cookie_lo);
constexpr size_t kEventHdrFields =
    TW_SUM2(tw_event_hdr, type, version) + TW_SUM2(tw_event_hdr, size, ktime_ns);
constexpr size_t kFlowEventFields =
    TW_SUM2(tw_flow_event, hdr, flow) + TW_SUM2(tw_flow_event, sock_cookie, policy_generation) +
    TW_SUM2(tw_flow_event, ifindex, rule_id) + TW_SUM2(tw_flow_event, boundary, exemption) +
    TW_SUM2(tw_flow_event, hello_version, min_tls) + TW_SUM2(tw_flow_event, cls, reason) +
    TW_SUM2(tw_flow_event, mode, action) + TW_SUM2(tw_flow_event, preamble, evidence) +
    TW_SUM2(tw_flow_event, server_version, pad) + TW_SUM2(tw_flow_event, owner, owner_status) +
    TW_FIELD_SIZE(tw_flow_event, pad2);

// Kept as runtime checks (not static_asserts) so that a violation reports
// which struct, without stopping the rest of the suite from building.
TEST(AbiLayout, NoImplicitPaddingInTablesAndKeys) {
  EXPECT_EQ(kLpm4Fields, sizeof(tw_lpm4_key));
  EXPECT_EQ(kLpm6Fields, sizeof(tw_lpm6_key));
  EXPECT_EQ(kDestValueFields, sizeof(tw_dest_value));
  EXPECT_EQ(kPortKeyFields, sizeof(tw_port_key));
  EXPECT_EQ(kPortVerdictFields, sizeof(tw_port_verdict));
  EXPECT_EQ(kSlotMetaFields, sizeof(tw_slot_meta));
  EXPECT_EQ(kOwnerFields, sizeof(tw_owner));
  EXPECT_EQ(kOwnerGroupFields, sizeof(tw_owner_group));
  EXPECT_EQ(kStateFields, sizeof(tw_state));
  EXPECT_EQ(kMetaFields, sizeof(tw_meta));
  EXPECT_EQ(kIfaceRecFields, sizeof(tw_iface_rec));
  EXPECT_EQ(kFlowKeyFields, sizeof(tw_flow_key));
  EXPECT_EQ(kEventHdrFields, sizeof(tw_event_hdr));
}

// The flow state (LRU map value) and the flow event (ring-buffer record read
// by the daemon) end on 8-byte alignment with named padding; an unnamed tail
// would be bytes the BPF side never writes in a reserved ring-buffer record.
TEST(AbiLayout, NoImplicitTailPaddingInFlowStateAndEvent) {
  EXPECT_EQ(kFlowStateFields, sizeof(tw_flow_state))
      << "tw_flow_state has " << sizeof(tw_flow_state) - kFlowStateFields
      << " bytes of implicit padding";
  EXPECT_EQ(kFlowEventFields, sizeof(tw_flow_event))
      << "tw_flow_event has " << sizeof(tw_flow_event) - kFlowEventFields
      << " bytes of implicit padding";
}

TEST(AbiLayout, HelloBufferHoldsTheJudgedPrefix) {
  EXPECT_GE(TW_FIELD_SIZE(tw_flow_state, hello), static_cast<size_t>(TW_HELLO_PREFIX));
  // hello_len is a __u8 and must be able to count the whole prefix.
  EXPECT_LE(TW_HELLO_PREFIX, 255);
}

TEST(AbiLayout, SlotOfGenerationAlternates) {
  EXPECT_EQ(TW_SLOT_OF(0ull), 0u);
  EXPECT_EQ(TW_SLOT_OF(1ull), 1u);
  EXPECT_EQ(TW_SLOT_OF(2ull), 0u);
  EXPECT_EQ(TW_SLOT_OF(0x100000001ull), 1u);  // upper bits do not leak into the slot
  EXPECT_EQ(TW_SLOT_OF(UINT64_MAX), 1u);
  EXPECT_LT(TW_SLOT_OF(UINT64_MAX), static_cast<uint32_t>(TW_POLICY_SLOTS));
}

TEST(AbiLayout, LpmPrefixLenCoversSlotByteAndAddress) {
  // prefixlen = 8 (slot byte) + CIDR length: the longest must fit in the
  // key's data bytes (slot + addr), never reaching into pad.
  EXPECT_EQ(8 + 32, 8 * static_cast<int>(TW_FIELD_SIZE(tw_lpm4_key, slot) +
                                         TW_FIELD_SIZE(tw_lpm4_key, addr)));
  EXPECT_EQ(8 + 128, 8 * static_cast<int>(TW_FIELD_SIZE(tw_lpm6_key, slot) +
                                          TW_FIELD_SIZE(tw_lpm6_key, addr)));
  // The LPM data starts right after the 4-byte prefixlen, slot byte first:
  // a prefix over the slot alone (8) separates the two policy slots.
  EXPECT_EQ(offsetof(tw_lpm4_key, slot), sizeof(__u32));
  EXPECT_EQ(offsetof(tw_lpm6_key, slot), sizeof(__u32));
  EXPECT_EQ(offsetof(tw_lpm4_key, addr), offsetof(tw_lpm4_key, slot) + 1);
  EXPECT_EQ(offsetof(tw_lpm6_key, addr), offsetof(tw_lpm6_key, slot) + 1);
}

TEST(AbiLayout, PortKeyPrefixLenCoversSlotClassAndPort) {
  // prefixlen = 8 (slot) + 16 (class id, always whole) + 0..16 port bits.
  // Slot, class id and port are contiguous, in that order, big-endian, so
  // the trie's leading bits are slot, then class, then the port's high bits.
  EXPECT_EQ(offsetof(tw_port_key, slot), sizeof(__u32));
  EXPECT_EQ(offsetof(tw_port_key, class_id), offsetof(tw_port_key, slot) + 1);
  EXPECT_EQ(offsetof(tw_port_key, port), offsetof(tw_port_key, class_id) + 2);
  EXPECT_EQ(8 + 16 + 16, 8 * static_cast<int>(TW_FIELD_SIZE(tw_port_key, slot) +
                                              TW_FIELD_SIZE(tw_port_key, class_id) +
                                              TW_FIELD_SIZE(tw_port_key, port)));
}

TEST(AbiLayout, DestFlagsAreDistinctBitsOfTheFlagsByte) {
  EXPECT_EQ(TW_DEST_ANY_RULE & TW_DEST_ANY_ENFORCE, 0);
  EXPECT_LE(TW_DEST_ANY_RULE | TW_DEST_ANY_ENFORCE, 0xff);
}

TEST(AbiLayout, PortVerdictCarriesTheFlowStateDecisionFields) {
  // tw_decide() copies a verdict into tw_flow_state/tw_flow_event: the
  // widths must match so no id or version is truncated on the way.
  EXPECT_EQ(TW_FIELD_SIZE(tw_port_verdict, rule_id), TW_FIELD_SIZE(tw_flow_state, rule_id));
  EXPECT_EQ(TW_FIELD_SIZE(tw_port_verdict, boundary), TW_FIELD_SIZE(tw_flow_state, boundary));
  EXPECT_EQ(TW_FIELD_SIZE(tw_port_verdict, exemption), TW_FIELD_SIZE(tw_flow_state, exemption));
  EXPECT_EQ(TW_FIELD_SIZE(tw_port_verdict, min_tls), TW_FIELD_SIZE(tw_flow_state, min_tls));
  EXPECT_EQ(TW_FIELD_SIZE(tw_port_verdict, mode), TW_FIELD_SIZE(tw_flow_state, mode));
  EXPECT_EQ(TW_FIELD_SIZE(tw_port_verdict, exempt), TW_FIELD_SIZE(tw_flow_state, exempt));
  EXPECT_EQ(TW_FIELD_SIZE(tw_slot_meta, generation),
            TW_FIELD_SIZE(tw_flow_state, policy_generation));
}

}  // namespace
