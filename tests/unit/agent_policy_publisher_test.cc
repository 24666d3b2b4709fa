// PolicyPublisher over a fake PolicyMaps (the kernel seam): which slot is
// written, in which order (slot invalidated first, its generation recorded
// after its rows, the active generation flipped last), that a failed write
// leaves the active generation alone, that tables which do not fit fail
// before anything is written, and the slot-quiesce wait before an old slot
// is rewritten.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "agent/policy_tables.h"

namespace tlswall::agent {
namespace {

using Clock = PolicyPublisher::Clock;

// Records every call as one line, e.g. "clear 1", "dest4 1 10/8 class 0 flags 3".
class FakeMaps : public PolicyMaps {
 public:
  explicit FakeMaps(std::vector<std::string>* log, uint64_t gen = 0) : log_(*log), gen_(gen) {}

  void clear_slot(uint32_t slot) override {
    if (fail_clear_) throw std::runtime_error("cannot clear slot");
    log_.push_back("clear " + std::to_string(slot));
  }
  void put_dest4(uint32_t slot, const policy::KernelDestRow4& row) override {
    if (fail_dest4_at_ >= 0 && dest4_calls_++ == fail_dest4_at_) {
      throw std::runtime_error("IPv4 prefix table full");
    }
    log_.push_back("dest4 " + std::to_string(slot) + " " + std::to_string(row.addr[0]) + "/" +
                   std::to_string(row.prefix_len) + Value(row.value));
  }
  void put_dest6(uint32_t slot, const policy::KernelDestRow6& row) override {
    log_.push_back("dest6 " + std::to_string(slot) + " /" + std::to_string(row.prefix_len) +
                   Value(row.value));
  }
  void put_port(uint32_t slot, const policy::KernelPortRow& row) override {
    if (fail_port_) throw std::runtime_error("port table write failed");
    std::string l = "port " + std::to_string(slot) + " class " + std::to_string(row.class_id) +
                    " " + std::to_string(row.port) + "/" + std::to_string(row.prefix_len) +
                    " rule " + std::to_string(row.verdict.rule_id);
    if (row.verdict.exempt) l += " exempt " + std::to_string(row.verdict.exemption);
    log_.push_back(l);
  }
  void put_owner_tables(uint32_t slot, const policy::KernelOwnerTables& owners) override {
    if (!owners.groups.empty()) {
      log_.push_back("owners " + std::to_string(slot) + " groups " +
                     std::to_string(owners.groups.size()));
    }
  }
  void put_slot_meta(uint32_t slot, const tw_slot_meta& meta) override {
    const uint64_t generation = meta.generation;
    if (fail_slot_generation_ && generation != 0) {
      throw std::runtime_error("slot table write failed");
    }
    log_.push_back("slotgen " + std::to_string(slot) + " " + std::to_string(generation));
  }
  void set_generation(uint64_t generation) override {
    log_.push_back("generation " + std::to_string(generation));
    gen_ = generation;
  }
  uint64_t generation() const override { return gen_; }

  int fail_dest4_at_ = -1;  // index of the put_dest4 call that throws
  bool fail_port_ = false;
  bool fail_clear_ = false;
  bool fail_slot_generation_ = false;  // the validating write (generation != 0) throws

 private:
  static std::string Value(const tw_dest_value& v) {
    return " class " + std::to_string(v.class_id) + " flags " + std::to_string(v.flags);
  }
  std::vector<std::string>& log_;
  uint64_t gen_;
  int dest4_calls_ = 0;
};

void SetBit(__u64 mask[TW_MASK_WORDS], unsigned bit) { mask[bit / 64] |= __u64{1} << (bit % 64); }

policy::LpmRow4 Row4(uint8_t first, uint8_t len, bool exempt0 = false) {
  policy::LpmRow4 r{};
  r.addr[0] = first;
  r.prefix_len = len;
  SetBit(r.cls.boundary_mask, 0);
  if (exempt0) SetBit(r.cls.exempt_mask, 0);
  return r;
}

policy::LpmRow6 Row6(uint8_t len) {
  policy::LpmRow6 r{};
  r.addr[0] = 0xfd;
  r.prefix_len = len;
  SetBit(r.cls.boundary_mask, 0);
  return r;
}

tw_rule_entry Rule(uint16_t lo, uint16_t hi, uint16_t id, uint16_t boundary = 0) {
  tw_rule_entry e{};
  e.boundary = boundary;
  e.port_lo = lo;
  e.port_hi = hi;
  e.rule_id = id;
  e.min_tls = 0x0303;
  e.mode = TW_MODE_ENFORCE;
  return e;
}

tw_exempt_entry Exempt(uint16_t port) {
  tw_exempt_entry e{};
  e.exemption = 0;
  e.port_lo = port;
  e.port_hi = port;
  return e;
}

// Boundary 0 = 10/8, 192/16 (where exemption 0 also applies) and fd00::/48;
// an enforce rule on 443 and one on 5432; exemption 0 names port 443.
// Classes: {boundary 0} = 0 (10/8, fd00::/48), {boundary 0, exemption 0} = 1.
policy::CompiledPolicy SmallPolicy() {
  policy::CompiledPolicy c;
  c.version = "v1";
  c.v4 = {Row4(10, 8), Row4(192, 16, true)};
  c.v6 = {Row6(48)};
  c.rules = {Rule(443, 443, 0), Rule(5432, 5432, 1)};
  c.exempts = {Exempt(443)};
  return c;
}

// The rows of SmallPolicy in `slot`, in publish order.
std::vector<std::string> SmallPolicyRows(uint32_t slot) {
  const std::string s = std::to_string(slot);
  return {
      "dest4 " + s + " 10/8 class 0 flags 3",  "dest4 " + s + " 192/16 class 1 flags 3",
      "dest6 " + s + " /48 class 0 flags 3",   "port " + s + " class 0 443/16 rule 0",
      "port " + s + " class 0 5432/16 rule 1", "port " + s + " class 1 443/16 rule 0 exempt 0",
      "port " + s + " class 1 5432/16 rule 1",
  };
}

// A sleep that never sleeps, recording what it was asked for.
struct RecordingSleep {
  std::vector<Clock::duration>* calls;
  std::vector<std::string>* log;
  void operator()(Clock::duration d) const {
    calls->push_back(d);
    log->push_back("sleep");
  }
};

bool Contains(const std::vector<std::string>& log, const std::string& line) {
  for (const auto& l : log) {
    if (l == line) return true;
  }
  return false;
}

TEST(PolicyPublisher, FirstPublishInvalidatesWritesValidatesThenFlips) {
  std::vector<std::string> log;
  std::vector<Clock::duration> sleeps;
  FakeMaps maps(&log);
  PolicyPublisher pub(maps, {}, RecordingSleep{&sleeps, &log});
  EXPECT_EQ(pub.publish(SmallPolicy()), 1u);
  std::vector<std::string> want = {"slotgen 1 0", "clear 1"};
  for (const auto& r : SmallPolicyRows(1)) want.push_back(r);
  want.push_back("slotgen 1 1");
  want.push_back("generation 1");
  EXPECT_EQ(log, want);
  EXPECT_TRUE(sleeps.empty()) << "nothing to quiesce before the first flip";
  EXPECT_EQ(maps.generation(), 1u);
}

TEST(PolicyPublisher, WritesTheSlotTheClassifierIsNotReading) {
  for (uint64_t active : {1ull, 2ull, 5ull, 41ull, 0x100000000ull}) {
    SCOPED_TRACE("active generation " + std::to_string(active));
    std::vector<std::string> log;
    std::vector<Clock::duration> sleeps;
    FakeMaps maps(&log, active);
    PolicyPublisher pub(maps, {}, RecordingSleep{&sleeps, &log});
    const uint64_t next = pub.publish(SmallPolicy());
    EXPECT_EQ(next, active + 1);
    const std::string slot = std::to_string(TW_SLOT_OF(active + 1));
    EXPECT_NE(TW_SLOT_OF(active + 1), TW_SLOT_OF(active)) << "must not write the live slot";
    ASSERT_GE(log.size(), 4u);
    // Invalidated before it is cleared or written ...
    EXPECT_EQ(log[0], "slotgen " + slot + " 0");
    EXPECT_EQ(log[1], "clear " + slot);
    // ... every row in that slot ...
    for (size_t i = 2; i + 2 < log.size(); ++i) {
      EXPECT_EQ(log[i].find(" " + slot + " "), log[i].find(' ')) << log[i];
    }
    // ... validated with its generation only after all rows, then flipped.
    EXPECT_EQ(log[log.size() - 2], "slotgen " + slot + " " + std::to_string(next));
    EXPECT_EQ(log.back(), "generation " + std::to_string(next));
  }
}

TEST(PolicyPublisher, EmptyPolicyStillInvalidatesAndFlips) {
  std::vector<std::string> log;
  std::vector<Clock::duration> sleeps;
  FakeMaps maps(&log, 6);
  PolicyPublisher pub(maps, {}, RecordingSleep{&sleeps, &log});
  EXPECT_EQ(pub.publish(policy::CompiledPolicy{}), 7u);
  EXPECT_EQ(log,
            (std::vector<std::string>{"slotgen 1 0", "clear 1", "slotgen 1 7", "generation 7"}));
}

TEST(PolicyPublisher, FailedPrefixWriteLeavesGenerationUnchanged) {
  std::vector<std::string> log;
  std::vector<Clock::duration> sleeps;
  FakeMaps maps(&log, 3);
  maps.fail_dest4_at_ = 1;
  PolicyPublisher pub(maps, {}, RecordingSleep{&sleeps, &log});
  EXPECT_THROW(pub.publish(SmallPolicy()), std::runtime_error);
  EXPECT_EQ(maps.generation(), 3u);
  ASSERT_FALSE(log.empty());
  EXPECT_EQ(log.front(), "slotgen 0 0") << "the slot is invalidated before the failure";
  for (const auto& l : log) {
    EXPECT_EQ(l.rfind("generation", 0), std::string::npos) << "flipped after a failure";
    EXPECT_NE(l, "slotgen 0 4") << "a half-written slot was marked valid";
    EXPECT_EQ(l.rfind("port", 0), std::string::npos) << "kept writing after a failure";
  }
}

TEST(PolicyPublisher, FailedPortWriteLeavesGenerationUnchangedAndTheNextAttemptWorks) {
  std::vector<std::string> log;
  std::vector<Clock::duration> sleeps;
  FakeMaps maps(&log, 8);
  maps.fail_port_ = true;
  PolicyPublisher pub(maps, {}, RecordingSleep{&sleeps, &log});
  EXPECT_THROW(pub.publish(SmallPolicy()), std::runtime_error);
  EXPECT_EQ(maps.generation(), 8u);
  EXPECT_FALSE(Contains(log, "slotgen 1 9"));
  ASSERT_FALSE(log.empty());
  EXPECT_EQ(log.back().rfind("generation", 0), std::string::npos);

  // The next attempt, once the table accepts writes, publishes the same
  // generation into the same slot (no successful flip yet: no quiesce).
  maps.fail_port_ = false;
  log.clear();
  EXPECT_EQ(pub.publish(SmallPolicy()), 9u);
  EXPECT_EQ(maps.generation(), 9u);
  EXPECT_TRUE(sleeps.empty());
  ASSERT_GE(log.size(), 2u);
  EXPECT_EQ(log.front(), "slotgen 1 0");
  EXPECT_EQ(log[log.size() - 2], "slotgen 1 9");
  EXPECT_EQ(log.back(), "generation 9");
}

TEST(PolicyPublisher, FailedClearLeavesGenerationUnchanged) {
  std::vector<std::string> log;
  std::vector<Clock::duration> sleeps;
  FakeMaps maps(&log, 2);
  maps.fail_clear_ = true;
  PolicyPublisher pub(maps, {}, RecordingSleep{&sleeps, &log});
  EXPECT_THROW(pub.publish(SmallPolicy()), std::runtime_error);
  EXPECT_EQ(maps.generation(), 2u);
  EXPECT_EQ(log, (std::vector<std::string>{"slotgen 1 0"}));
}

TEST(PolicyPublisher, FailedSlotValidationLeavesGenerationUnchanged) {
  std::vector<std::string> log;
  std::vector<Clock::duration> sleeps;
  FakeMaps maps(&log, 4);
  maps.fail_slot_generation_ = true;
  PolicyPublisher pub(maps, {}, RecordingSleep{&sleeps, &log});
  EXPECT_THROW(pub.publish(SmallPolicy()), std::runtime_error);
  EXPECT_EQ(maps.generation(), 4u);
  ASSERT_FALSE(log.empty());
  EXPECT_EQ(log.back(), SmallPolicyRows(1).back()) << "nothing after the failed slot write";
}

TEST(PolicyPublisher, SecondPublishWaitsOutTheQuiesceBeforeTouchingTheOldSlot) {
  std::vector<std::string> log;
  std::vector<Clock::duration> sleeps;
  FakeMaps maps(&log);
  PolicyPublisher pub(maps, {}, RecordingSleep{&sleeps, &log});
  const auto before = Clock::now();
  pub.publish(SmallPolicy());
  log.clear();
  pub.publish(SmallPolicy());
  const auto elapsed = Clock::now() - before;
  if (elapsed >= PolicyPublisher::kSlotQuiesce) {
    GTEST_SKIP() << "machine too slow: two publishes took longer than the quiesce time";
  }
  ASSERT_EQ(sleeps.size(), 1u);
  // The wait is the remainder of kSlotQuiesce since the last flip.
  EXPECT_GT(sleeps[0], Clock::duration::zero());
  EXPECT_LE(sleeps[0], PolicyPublisher::kSlotQuiesce);
  EXPECT_GE(sleeps[0], PolicyPublisher::kSlotQuiesce - elapsed);
  // ... and it happens before the slot (the one live before the last flip)
  // is touched at all, even invalidated.
  ASSERT_GE(log.size(), 3u);
  EXPECT_EQ(log[0], "sleep");
  EXPECT_EQ(log[1], "slotgen 0 0");
  EXPECT_EQ(log[2], "clear 0");
  EXPECT_EQ(maps.generation(), 2u);
}

TEST(PolicyPublisher, NoWaitOnceTheQuiesceHasPassed) {
  std::vector<std::string> log;
  std::vector<Clock::duration> sleeps;
  FakeMaps maps(&log);
  PolicyPublisher pub(maps, {}, RecordingSleep{&sleeps, &log});
  pub.publish(SmallPolicy());
  // The publisher reads the steady clock itself; really let it pass.
  std::this_thread::sleep_for(PolicyPublisher::kSlotQuiesce + std::chrono::milliseconds(10));
  pub.publish(SmallPolicy());
  EXPECT_TRUE(sleeps.empty());
}

// `classes` destination classes (IPv4 /24 rows with distinct exemption
// masks), each protected by `ports_per_class` single odd ports: exactly
// classes * ports_per_class port rows.
policy::CompiledPolicy ManyPortRows(int classes, int ports_per_class) {
  policy::CompiledPolicy c;
  for (int i = 0; i < classes; ++i) {
    policy::LpmRow4 r{};
    r.addr[0] = 10;
    r.addr[1] = static_cast<uint8_t>(i >> 8);
    r.addr[2] = static_cast<uint8_t>(i);
    r.prefix_len = 24;
    SetBit(r.cls.boundary_mask, 0);
    r.cls.exempt_mask[0] = static_cast<__u64>(i);  // distinct masks, distinct classes
    c.v4.push_back(r);
  }
  for (int p = 0; p < ports_per_class; ++p) {
    const auto port = static_cast<uint16_t>(2 * p + 1);
    c.rules.push_back(Rule(port, port, 0));
  }
  return c;
}

TEST(PolicyPublisher, TablesThatFitExactlyArePublished) {
  std::vector<std::string> log;
  std::vector<Clock::duration> sleeps;
  FakeMaps maps(&log, 10);
  PolicyPublisher pub(maps, {}, RecordingSleep{&sleeps, &log});
  ASSERT_EQ(256 * 256, TW_MAX_PORT_ROWS);
  EXPECT_EQ(pub.publish(ManyPortRows(256, 256)), 11u);
  size_t ports = 0;
  for (const auto& l : log) ports += l.rfind("port ", 0) == 0;
  EXPECT_EQ(ports, static_cast<size_t>(TW_MAX_PORT_ROWS));
  EXPECT_EQ(log.back(), "generation 11");
}

TEST(PolicyPublisher, TooManyPortRowsFailBeforeAnyWrite) {
  std::vector<std::string> log;
  std::vector<Clock::duration> sleeps;
  FakeMaps maps(&log, 4);
  PolicyPublisher pub(maps, {}, RecordingSleep{&sleeps, &log});
  // 257 classes x 256 ports = TW_MAX_PORT_ROWS + 256.
  EXPECT_THROW(pub.publish(ManyPortRows(257, 256)), std::runtime_error);
  EXPECT_TRUE(log.empty()) << "first write: " << log.front();
  EXPECT_TRUE(sleeps.empty());
  EXPECT_EQ(maps.generation(), 4u);
}

// SmallPolicy plus TW_MAX_PREFIXES more IPv6 rows: one too many.
policy::CompiledPolicy TooManyPrefixes() {
  policy::CompiledPolicy c = SmallPolicy();
  for (int i = 0; i < TW_MAX_PREFIXES; ++i) {
    policy::LpmRow6 r = Row6(64);
    r.addr[6] = static_cast<uint8_t>(i >> 8);
    r.addr[7] = static_cast<uint8_t>(i);
    c.v6.push_back(r);
  }
  return c;
}

TEST(PolicyPublisher, TooManyPrefixesFailBeforeAnyWrite) {
  std::vector<std::string> log;
  std::vector<Clock::duration> sleeps;
  FakeMaps maps(&log, 4);
  PolicyPublisher pub(maps, {}, RecordingSleep{&sleeps, &log});
  EXPECT_THROW(pub.publish(TooManyPrefixes()), std::runtime_error);
  EXPECT_TRUE(log.empty()) << "first write: " << log.front();
  EXPECT_EQ(maps.generation(), 4u);
}

TEST(PolicyPublisher, ATooLargePolicyLeavesTheQuiesceClockAlone) {
  // A rejected publish does not count as a flip: the next good one right
  // after it still waits out the quiesce of the last real flip.
  std::vector<std::string> log;
  std::vector<Clock::duration> sleeps;
  FakeMaps maps(&log);
  PolicyPublisher pub(maps, {}, RecordingSleep{&sleeps, &log});
  const auto before = Clock::now();
  pub.publish(SmallPolicy());
  EXPECT_THROW(pub.publish(TooManyPrefixes()), std::runtime_error);
  EXPECT_TRUE(sleeps.empty()) << "a policy that does not fit must not wait either";
  pub.publish(SmallPolicy());
  if (Clock::now() - before >= PolicyPublisher::kSlotQuiesce) {
    GTEST_SKIP() << "machine too slow for the quiesce window";
  }
  EXPECT_EQ(sleeps.size(), 1u);
  EXPECT_EQ(maps.generation(), 2u);
}

}  // namespace
}  // namespace tlswall::agent
