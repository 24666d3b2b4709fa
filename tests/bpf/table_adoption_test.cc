// A start over the pinned tables of tlswall 0.1.0, whose flow table used
// per-CPU LRU lists and whose counter array had 16 entries: both are rebuilt
// in the current shape, the flow verdicts copied, the counters carried.
// Private bpffs, no interface (take_over of an empty interface list).
#include <arpa/inet.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "agent/bpf_classifier.h"
#include "agent/bpf_pins.h"
#include "tests/bpf/owner_test_support.h"

namespace tlswall::bpftest {
namespace {

int create_and_pin(bpf_map_type type, uint32_t key, uint32_t value, uint32_t entries,
                   uint32_t flags, const std::string& path) {
  LIBBPF_OPTS(bpf_map_create_opts, o, .map_flags = flags);
  const int fd = bpf_map_create(type, nullptr, key, value, entries, &o);
  if (fd < 0) return fd;
  if (bpf_obj_pin(fd, path.c_str()) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

TEST(TableAdoption, TablesOfTheFirstReleaseAreRebuiltWithFlowsAndCounters) {
  ownertest::PrivateBpffs root;
  const int ncpu = libbpf_num_possible_cpus();
  ASSERT_GT(ncpu, 0);

  // 0.1.0's flow table: per-CPU LRU lists, one flow in it.
  const int old_flows =
      create_and_pin(BPF_MAP_TYPE_LRU_HASH, sizeof(tw_flow_key), sizeof(tw_flow_state), 4096,
                     BPF_F_NO_COMMON_LRU, agent::pin_path(root.path(), "flows", 1));
  ASSERT_GE(old_flows, 0) << std::strerror(errno);
  tw_flow_key k{};
  k.family = 4;
  k.proto = 6;
  k.sport = htons(40000);
  k.dport = htons(443);
  k.daddr[15] = 10;
  tw_flow_state st{};
  st.cls = TW_CLASS_TLS;
  st.hello_version = 0x0303;
  st.isn = 12345;
  ASSERT_EQ(bpf_map_update_elem(old_flows, &k, &st, BPF_ANY), 0);

  // 0.1.0's counters: 16 per-CPU entries, counter i = i + 1 on every CPU.
  const uint32_t kOldCounters = 16;
  const int old_counters = create_and_pin(BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8, kOldCounters, 0,
                                          agent::pin_path(root.path(), "counters", 1));
  ASSERT_GE(old_counters, 0);
  for (uint32_t i = 0; i < kOldCounters; ++i) {
    std::vector<uint64_t> v(static_cast<size_t>(ncpu), i + 1);
    ASSERT_EQ(bpf_map_update_elem(old_counters, &i, v.data(), BPF_ANY), 0);
  }

  agent::ClassifierOptions opts;
  opts.pin_root = root.path();
  opts.flow_table_entries = 4096;
  opts.ringbuf_bytes = 1 << 16;
  agent::TcClassifier cls(opts);
  cls.take_over({}, "adoption-test");

  bpf_map_info info{};
  uint32_t len = sizeof(info);
  ASSERT_EQ(bpf_obj_get_info_by_fd(cls.flows_fd(), &info, &len), 0);
  EXPECT_EQ(info.map_flags & BPF_F_NO_COMMON_LRU, 0u) << "the flow table was not rebuilt";
  tw_flow_state got{};
  ASSERT_EQ(bpf_map_lookup_elem(cls.flows_fd(), &k, &got), 0) << "the flow was not copied";
  EXPECT_EQ(got.cls, TW_CLASS_TLS);
  EXPECT_EQ(got.isn, 12345u);

  const auto c = cls.counters();
  for (uint32_t i = 0; i < kOldCounters; ++i) {
    EXPECT_EQ(c[i], static_cast<uint64_t>(ncpu) * (i + 1)) << "counter " << i;
  }
  for (uint32_t i = kOldCounters; i < TW_CNT_MAX; ++i) EXPECT_EQ(c[i], 0u) << "counter " << i;
  ::close(old_flows);
  ::close(old_counters);
}

}  // namespace
}  // namespace tlswall::bpftest
