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
}

namespace {

#define TW_FIELD_SIZE(type, field) sizeof(((type*)nullptr)->field)

// ---- constants that size structs or maps ----
static_assert(TW_ABI_VERSION == 1, "ABI version changed: update this test deliberately");
static_assert(TW_MAX_BOUNDARIES == 128);
static_assert(TW_MAX_EXEMPTIONS == 128);
static_assert(TW_MAX_RULE_ENTRIES == 256);
static_assert(TW_MAX_EXEMPT_ENTRIES == 256);
static_assert(TW_MAX_PREFIXES == 16384);
static_assert(TW_POLICY_SLOTS == 2);
static_assert(TW_HELLO_PREFIX == 11);
static_assert(TW_MAX_PENDING_PKTS == 32);
static_assert(TW_MASK_WORDS == 2);
static_assert(TW_MAX_BOUNDARIES == 64 * TW_MASK_WORDS, "one mask bit per boundary");
static_assert(TW_MAX_EXEMPTIONS == 64 * TW_MASK_WORDS, "one mask bit per exemption");
static_assert(TW_CNT_MAX == 16, "per-CPU counter array size");
static_assert(TW_REASON_MAX == 16, "per-CPU drop-reason array size");
static_assert(TW_EV_FLOW_VERDICT_VERSION == 1);

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
static_assert(TW_REASON_OPAQUE_HEADERS < TW_REASON_MAX, "reasons index the drop array");

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
static_assert(TW_CNT_FLOWS_INBOUND < TW_CNT_MAX, "counters index the counter array");

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

// ---- struct tw_dest_class ----
static_assert(sizeof(tw_dest_class) == 32);
static_assert(alignof(tw_dest_class) == 8);
static_assert(offsetof(tw_dest_class, boundary_mask) == 0);
static_assert(offsetof(tw_dest_class, exempt_mask) == 16);

// ---- struct tw_rule_entry ----
static_assert(sizeof(tw_rule_entry) == 12);
static_assert(alignof(tw_rule_entry) == 2);
static_assert(offsetof(tw_rule_entry, boundary) == 0);
static_assert(offsetof(tw_rule_entry, port_lo) == 2);
static_assert(offsetof(tw_rule_entry, port_hi) == 4);
static_assert(offsetof(tw_rule_entry, rule_id) == 6);
static_assert(offsetof(tw_rule_entry, min_tls) == 8);
static_assert(offsetof(tw_rule_entry, mode) == 10);
static_assert(offsetof(tw_rule_entry, pad) == 11);

// ---- struct tw_exempt_entry ----
static_assert(sizeof(tw_exempt_entry) == 8);
static_assert(alignof(tw_exempt_entry) == 2);
static_assert(offsetof(tw_exempt_entry, exemption) == 0);
static_assert(offsetof(tw_exempt_entry, port_lo) == 2);
static_assert(offsetof(tw_exempt_entry, port_hi) == 4);
static_assert(offsetof(tw_exempt_entry, pad) == 6);

// ---- struct tw_ruleset ----
static_assert(sizeof(tw_ruleset) == 5136);
static_assert(alignof(tw_ruleset) == 8);
static_assert(offsetof(tw_ruleset, generation) == 0);
static_assert(offsetof(tw_ruleset, rule_count) == 8);
static_assert(offsetof(tw_ruleset, exempt_count) == 12);
static_assert(offsetof(tw_ruleset, rules) == 16);
static_assert(TW_FIELD_SIZE(tw_ruleset, rules) == 256 * 12);
static_assert(offsetof(tw_ruleset, exempts) == 3088);
static_assert(TW_FIELD_SIZE(tw_ruleset, exempts) == 256 * 8);

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
static_assert(offsetof(tw_flow_state, pad0) == 39);
static_assert(offsetof(tw_flow_state, hello) == 40);
static_assert(offsetof(tw_flow_state, pad1) == 52);
static_assert(TW_FIELD_SIZE(tw_flow_state, hello) == TW_HELLO_PREFIX + 1);

// ---- struct tw_event_hdr ----
static_assert(sizeof(tw_event_hdr) == 16);
static_assert(alignof(tw_event_hdr) == 8);
static_assert(offsetof(tw_event_hdr, type) == 0);
static_assert(offsetof(tw_event_hdr, version) == 2);
static_assert(offsetof(tw_event_hdr, size) == 4);
static_assert(offsetof(tw_event_hdr, ktime_ns) == 8);

// ---- struct tw_flow_event ----
static_assert(sizeof(tw_flow_event) == 96);
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
static_assert(offsetof(tw_flow_event, pad) == 90);
static_assert(TW_FIELD_SIZE(tw_flow_event, pad) == 6);

// Sum of the named fields' sizes: equal to sizeof() exactly when the struct
// has no compiler-inserted padding (the ABI rule is "explicit padding").
#define TW_SUM2(T, a, b) (TW_FIELD_SIZE(T, a) + TW_FIELD_SIZE(T, b))

constexpr size_t kLpm4Fields =
    TW_SUM2(tw_lpm4_key, prefixlen, slot) + TW_SUM2(tw_lpm4_key, addr, pad);
constexpr size_t kLpm6Fields =
    TW_SUM2(tw_lpm6_key, prefixlen, slot) + TW_SUM2(tw_lpm6_key, addr, pad);
constexpr size_t kDestClassFields = TW_SUM2(tw_dest_class, boundary_mask, exempt_mask);
constexpr size_t kRuleEntryFields =
    TW_SUM2(tw_rule_entry, boundary, port_lo) + TW_SUM2(tw_rule_entry, port_hi, rule_id) +
    TW_SUM2(tw_rule_entry, min_tls, mode) + TW_FIELD_SIZE(tw_rule_entry, pad);
constexpr size_t kExemptEntryFields =
    TW_SUM2(tw_exempt_entry, exemption, port_lo) + TW_SUM2(tw_exempt_entry, port_hi, pad);
constexpr size_t kRulesetFields = TW_SUM2(tw_ruleset, generation, rule_count) +
                                  TW_SUM2(tw_ruleset, exempt_count, rules) +
                                  TW_FIELD_SIZE(tw_ruleset, exempts);
constexpr size_t kFlowKeyFields =
    TW_SUM2(tw_flow_key, saddr, daddr) + TW_SUM2(tw_flow_key, sport, dport) +
    TW_SUM2(tw_flow_key, family, proto) + TW_FIELD_SIZE(tw_flow_key, pad);
constexpr size_t kFlowStateFields =
    TW_SUM2(tw_flow_state, first_seen_ns, policy_generation) +
    TW_SUM2(tw_flow_state, isn, rule_id) + TW_SUM2(tw_flow_state, boundary, exemption) +
    TW_SUM2(tw_flow_state, hello_version, min_tls) + TW_SUM2(tw_flow_state, cls, reason) +
    TW_SUM2(tw_flow_state, protected_, exempt) + TW_SUM2(tw_flow_state, mode, action) +
    TW_SUM2(tw_flow_state, hello_len, data_pkts) + TW_SUM2(tw_flow_state, reported, pad0) +
    TW_SUM2(tw_flow_state, hello, pad1);
constexpr size_t kEventHdrFields =
    TW_SUM2(tw_event_hdr, type, version) + TW_SUM2(tw_event_hdr, size, ktime_ns);
constexpr size_t kFlowEventFields =
    TW_SUM2(tw_flow_event, hdr, flow) + TW_SUM2(tw_flow_event, sock_cookie, policy_generation) +
    TW_SUM2(tw_flow_event, ifindex, rule_id) + TW_SUM2(tw_flow_event, boundary, exemption) +
    TW_SUM2(tw_flow_event, hello_version, min_tls) + TW_SUM2(tw_flow_event, cls, reason) +
    TW_SUM2(tw_flow_event, mode, action) + TW_FIELD_SIZE(tw_flow_event, pad);

// Kept as runtime checks (not static_asserts) so that a violation reports
// which struct, without stopping the rest of the suite from building.
TEST(AbiLayout, NoImplicitPaddingInTablesAndKeys) {
  EXPECT_EQ(kLpm4Fields, sizeof(tw_lpm4_key));
  EXPECT_EQ(kLpm6Fields, sizeof(tw_lpm6_key));
  EXPECT_EQ(kDestClassFields, sizeof(tw_dest_class));
  EXPECT_EQ(kRuleEntryFields, sizeof(tw_rule_entry));
  EXPECT_EQ(kExemptEntryFields, sizeof(tw_exempt_entry));
  EXPECT_EQ(kRulesetFields, sizeof(tw_ruleset));
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
}

}  // namespace
