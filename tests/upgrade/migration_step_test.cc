// One test per flow-table migration step (bpf/abi/tlswall_abi_history.h).
// Built twice: against the current schema, and against the upgrade test's
// next schema (TW_SCHEMA_FLOWS=2), where the v1 -> v2 step is live.
#include <cstddef>
#include <cstring>

#include <gtest/gtest.h>

extern "C" {
#include "abi/tlswall_abi_history.h"
}

namespace {

// A v1 record with every byte distinct, so a field moved or dropped shows.
tw_flow_state_v1 patterned_v1() {
  tw_flow_state_v1 v{};
  auto* b = reinterpret_cast<unsigned char*>(&v);
  for (size_t i = 0; i < sizeof(v); ++i) b[i] = static_cast<unsigned char>(i * 7 + 1);
  return v;
}

TEST(FlowMigration, V1LayoutIsFrozen) {
  // The frozen v1 layout must never change (pinned tables of 0.1 have it).
  EXPECT_EQ(sizeof(tw_flow_state_v1), 56u);
  EXPECT_EQ(offsetof(tw_flow_state_v1, isn), 16u);
  EXPECT_EQ(offsetof(tw_flow_state_v1, cls), 30u);
  EXPECT_EQ(offsetof(tw_flow_state_v1, hello), 40u);
}

#if TW_SCHEMA_FLOWS == 1
TEST(FlowMigration, SchemaOneHasNoEarlierStepAndResizesByIdentity) {
  static_assert(sizeof(tw_flow_state_prev) == sizeof(tw_flow_state));
  const tw_flow_state_v1 v1 = patterned_v1();
  tw_flow_state cur{};
  tw_flow_state_prev prev{};
  std::memcpy(&prev, &v1, sizeof(prev));
  tw_flow_from_prev(&cur, &prev);
  EXPECT_EQ(std::memcmp(&cur, &prev, sizeof(cur)), 0);
}
#elif TW_SCHEMA_FLOWS == 2
TEST(FlowMigration, V1ToV2KeepsEveryFieldAndStartsTheNewOneAtZero) {
  const tw_flow_state_v1 v1 = patterned_v1();
  tw_flow_state v2;
  std::memset(&v2, 0xee, sizeof(v2));
  tw_flow_from_prev(&v2, &v1);
  EXPECT_EQ(std::memcmp(&v2, &v1, sizeof(v1)), 0) << "a v1 field changed in the step";
  EXPECT_EQ(v2.last_packet_ns, 0u);
  EXPECT_EQ(v2.isn, v1.isn);
  EXPECT_EQ(v2.cls, v1.cls);
  EXPECT_EQ(v2.action, v1.action);
  EXPECT_EQ(std::memcmp(v2.hello, v1.hello, sizeof(v1.hello)), 0);
}
#endif

}  // namespace
