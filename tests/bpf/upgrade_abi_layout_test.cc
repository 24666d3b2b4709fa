// Freezes the upgrade redirect ABI (bpf/abi/tlswall_upgrade_abi.h): sizes,
// offsets and numbers that the BPF object, pinned maps of a running daemon
// and the proxy depend on. A change here is deliberate and bumps
// TWU_SCHEMA (the maps' pinned names carry it).
#include <gtest/gtest.h>

#include <cstddef>

extern "C" {
#include "abi/tlswall_upgrade_abi.h"
}

namespace {

static_assert(TWU_SCHEMA == 1, "schema changed: update this test deliberately");
static_assert(TWU_SLOTS == 2);
static_assert(TWU_SLOT_OF(7) == 1 && TWU_SLOT_OF(8) == 0);
static_assert(TWU_MAX_CLASSES <= 0xffff, "class ids are 16 bits");
static_assert(TWU_COMM_LEN == 16, "TASK_COMM_LEN");

static_assert(sizeof(twu_lpm4_key) == 12);
static_assert(offsetof(twu_lpm4_key, slot) == 4);
static_assert(offsetof(twu_lpm4_key, addr) == 5);
static_assert(sizeof(twu_lpm6_key) == 24);
static_assert(offsetof(twu_lpm6_key, addr) == 5);
static_assert(sizeof(twu_dest_value) == 4);
static_assert(sizeof(twu_port_key) == 12);
static_assert(offsetof(twu_port_key, class_id) == 5);
static_assert(offsetof(twu_port_key, port) == 7);
static_assert(sizeof(twu_rule) == 8);
static_assert(offsetof(twu_rule, flags) == 4);
static_assert(sizeof(twu_uid_key) == 12);
static_assert(offsetof(twu_uid_key, uid) == 8);
static_assert(sizeof(twu_comm_key) == 24);
static_assert(offsetof(twu_comm_key, comm) == 8);
static_assert(sizeof(twu_cgroup_key) == 16);
static_assert(offsetof(twu_cgroup_key, cgroup_id) == 8);
static_assert(sizeof(twu_exe_key) == 24);
static_assert(offsetof(twu_exe_key, ino) == 8);
static_assert(offsetof(twu_exe_key, dev) == 16);
static_assert(sizeof(twu_slot_meta) == 8);
static_assert(sizeof(twu_state) == 8);

static_assert(sizeof(twu_peer_key) == 20);
static_assert(offsetof(twu_peer_key, port) == 16);

static_assert(sizeof(twu_conn) == 112);
static_assert(alignof(twu_conn) == 8);
static_assert(offsetof(twu_conn, cookie) == 0);
static_assert(offsetof(twu_conn, cgroup_id) == 8);
static_assert(offsetof(twu_conn, generation) == 16);
static_assert(offsetof(twu_conn, rule_id) == 24);
static_assert(offsetof(twu_conn, pid) == 28);
static_assert(offsetof(twu_conn, tid) == 32);
static_assert(offsetof(twu_conn, uid) == 36);
static_assert(offsetof(twu_conn, gid) == 40);
static_assert(offsetof(twu_conn, family) == 44);
static_assert(offsetof(twu_conn, flags) == 45);
static_assert(offsetof(twu_conn, dport) == 46);
static_assert(offsetof(twu_conn, daddr) == 48);
static_assert(offsetof(twu_conn, comm) == 64);
static_assert(offsetof(twu_conn, peer) == 80);
static_assert(offsetof(twu_conn, connect_ns) == 104);

static_assert(TWU_RULE_UID == 0x01 && TWU_RULE_COMM == 0x02);
static_assert(TWU_CONN_V4MAPPED == 0x01 && TWU_CONN_PEER_SET == 0x02);

static_assert(TWU_CNT_REDIRECTED == 0);
static_assert(TWU_CNT_PROXY_OWN == 1);
static_assert(TWU_CNT_MAP_FULL == 2);
static_assert(TWU_CNT_OWNER_FILTERED == 3);
static_assert(TWU_CNT_PEER_RECORDED == 4);
static_assert(TWU_CNT_GETPEERNAME == 5);
static_assert(TWU_CNT_REFUSED == 6);
static_assert(TWU_CNT_OTHER_NETNS == 7);
static_assert(TWU_CNT_MAX == 8);

// The static_asserts above are the test; this keeps the file a test binary
// that ctest lists (and that fails to build if the layout moves).
TEST(UpgradeAbiLayout, Frozen) { SUCCEED(); }

}  // namespace
