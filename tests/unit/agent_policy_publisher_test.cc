// PolicyPublisher over a fake PolicyMaps (the kernel seam): which slot is
// written, in which order, that the generation flip comes last, that a
// failed write leaves the active generation alone, and the slot-quiesce
// wait before an old slot is rewritten.
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

// Records every call as one line, e.g. "clear 1", "v4 1 10.0.0.0/8".
class FakeMaps : public PolicyMaps {
 public:
  explicit FakeMaps(std::vector<std::string>* log, uint64_t gen = 0) : log_(*log), gen_(gen) {}

  void clear_slot(uint32_t slot) override { log_.push_back("clear " + std::to_string(slot)); }
  void put_v4(uint32_t slot, const policy::LpmRow4& row) override {
    if (fail_v4_at_ >= 0 && v4_calls_++ == fail_v4_at_) throw std::runtime_error("v4 map full");
    log_.push_back("v4 " + std::to_string(slot) + " " + std::to_string(row.addr[0]) + "/" +
                   std::to_string(row.prefix_len));
  }
  void put_v6(uint32_t slot, const policy::LpmRow6& row) override {
    log_.push_back("v6 " + std::to_string(slot) + " /" + std::to_string(row.prefix_len));
  }
  void put_ruleset(uint32_t slot, const tw_ruleset& rs) override {
    if (fail_ruleset_) throw std::runtime_error("rule table write failed");
    log_.push_back("ruleset " + std::to_string(slot) + " gen " + std::to_string(rs.generation) +
                   " rules " + std::to_string(rs.rule_count) + " exempts " +
                   std::to_string(rs.exempt_count));
    last_ruleset_ = rs;
  }
  void set_generation(uint64_t generation) override {
    log_.push_back("generation " + std::to_string(generation));
    gen_ = generation;
  }
  uint64_t generation() const override { return gen_; }

  int fail_v4_at_ = -1;  // index of the put_v4 call that throws
  bool fail_ruleset_ = false;
  tw_ruleset last_ruleset_{};

 private:
  std::vector<std::string>& log_;
  uint64_t gen_;
  int v4_calls_ = 0;
};

policy::LpmRow4 Row4(uint8_t first, uint8_t len) {
  policy::LpmRow4 r{};
  r.addr[0] = first;
  r.prefix_len = len;
  r.cls.boundary_mask[0] = 1;
  return r;
}

policy::LpmRow6 Row6(uint8_t len) {
  policy::LpmRow6 r{};
  r.addr[0] = 0xfd;
  r.prefix_len = len;
  r.cls.boundary_mask[0] = 1;
  return r;
}

tw_rule_entry Rule(uint16_t port, uint16_t id) {
  tw_rule_entry e{};
  e.boundary = 0;
  e.port_lo = port;
  e.port_hi = port;
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

policy::CompiledPolicy SmallPolicy() {
  policy::CompiledPolicy c;
  c.version = "v1";
  c.v4 = {Row4(10, 8), Row4(192, 16)};
  c.v6 = {Row6(48)};
  c.rules = {Rule(443, 0), Rule(5432, 1)};
  c.exempts = {Exempt(80)};
  return c;
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

TEST(PolicyPublisher, FirstPublishWritesSlotOneAndFlipsLast) {
  std::vector<std::string> log;
  std::vector<Clock::duration> sleeps;
  FakeMaps maps(&log);
  PolicyPublisher pub(maps, RecordingSleep{&sleeps, &log});
  EXPECT_EQ(pub.publish(SmallPolicy()), 1u);
  EXPECT_EQ(log, (std::vector<std::string>{
                     "clear 1",
                     "v4 1 10/8",
                     "v4 1 192/16",
                     "v6 1 /48",
                     "ruleset 1 gen 1 rules 2 exempts 1",
                     "generation 1",
                 }));
  EXPECT_TRUE(sleeps.empty()) << "nothing to quiesce before the first flip";
  EXPECT_EQ(maps.generation(), 1u);
}

TEST(PolicyPublisher, WritesTheSlotTheClassifierIsNotReading) {
  for (uint64_t active : {1ull, 2ull, 5ull, 41ull, 0x100000000ull}) {
    std::vector<std::string> log;
    std::vector<Clock::duration> sleeps;
    FakeMaps maps(&log, active);
    PolicyPublisher pub(maps, RecordingSleep{&sleeps, &log});
    const uint64_t next = pub.publish(SmallPolicy());
    EXPECT_EQ(next, active + 1);
    const std::string slot = std::to_string((active + 1) % 2);
    ASSERT_FALSE(log.empty());
    EXPECT_EQ(log.front(), "clear " + slot) << "active generation " << active;
    EXPECT_NE(slot, std::to_string(TW_SLOT_OF(active))) << "must not write the live slot";
    for (size_t i = 1; i + 1 < log.size(); ++i) {
      EXPECT_NE(log[i].find(" " + slot + " "), std::string::npos)
          << log[i] << " (active generation " << active << ")";
    }
    EXPECT_EQ(log.back(), "generation " + std::to_string(active + 1));
  }
}

TEST(PolicyPublisher, RulesetCarriesGenerationAndEntries) {
  std::vector<std::string> log;
  std::vector<Clock::duration> sleeps;
  FakeMaps maps(&log, 6);
  PolicyPublisher pub(maps, RecordingSleep{&sleeps, &log});
  pub.publish(SmallPolicy());
  const tw_ruleset& rs = maps.last_ruleset_;
  EXPECT_EQ(rs.generation, 7u);
  ASSERT_EQ(rs.rule_count, 2u);
  EXPECT_EQ(rs.rules[0].port_lo, 443);
  EXPECT_EQ(rs.rules[1].port_lo, 5432);
  EXPECT_EQ(rs.rules[1].rule_id, 1);
  EXPECT_EQ(rs.rules[1].mode, TW_MODE_ENFORCE);
  ASSERT_EQ(rs.exempt_count, 1u);
  EXPECT_EQ(rs.exempts[0].port_lo, 80);
  // Rows past the counts are zero, not leftovers.
  EXPECT_EQ(rs.rules[2].port_lo, 0);
  EXPECT_EQ(rs.exempts[1].port_hi, 0);
}

TEST(PolicyPublisher, FailedPrefixWriteLeavesGenerationUnchanged) {
  std::vector<std::string> log;
  std::vector<Clock::duration> sleeps;
  FakeMaps maps(&log, 3);
  maps.fail_v4_at_ = 1;
  PolicyPublisher pub(maps, RecordingSleep{&sleeps, &log});
  EXPECT_THROW(pub.publish(SmallPolicy()), std::runtime_error);
  EXPECT_EQ(maps.generation(), 3u);
  for (const auto& l : log) {
    EXPECT_EQ(l.rfind("generation", 0), std::string::npos) << "flipped after a failure";
    EXPECT_EQ(l.rfind("ruleset", 0), std::string::npos) << "ruleset written after a failure";
  }
}

TEST(PolicyPublisher, FailedRulesetWriteLeavesGenerationUnchanged) {
  std::vector<std::string> log;
  std::vector<Clock::duration> sleeps;
  FakeMaps maps(&log, 8);
  maps.fail_ruleset_ = true;
  PolicyPublisher pub(maps, RecordingSleep{&sleeps, &log});
  EXPECT_THROW(pub.publish(SmallPolicy()), std::runtime_error);
  EXPECT_EQ(maps.generation(), 8u);
  ASSERT_FALSE(log.empty());
  EXPECT_EQ(log.back().rfind("generation", 0), std::string::npos);

  // The next attempt, once the table accepts writes, publishes normally.
  maps.fail_ruleset_ = false;
  EXPECT_EQ(pub.publish(SmallPolicy()), 9u);
  EXPECT_EQ(maps.generation(), 9u);
}

TEST(PolicyPublisher, SecondPublishWaitsOutTheQuiesceBeforeTouchingTheOldSlot) {
  std::vector<std::string> log;
  std::vector<Clock::duration> sleeps;
  FakeMaps maps(&log);
  PolicyPublisher pub(maps, RecordingSleep{&sleeps, &log});
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
  // is cleared.
  ASSERT_GE(log.size(), 2u);
  EXPECT_EQ(log[0], "sleep");
  EXPECT_EQ(log[1], "clear 0");
  EXPECT_EQ(maps.generation(), 2u);
}

TEST(PolicyPublisher, NoWaitOnceTheQuiesceHasPassed) {
  std::vector<std::string> log;
  std::vector<Clock::duration> sleeps;
  FakeMaps maps(&log);
  PolicyPublisher pub(maps, RecordingSleep{&sleeps, &log});
  pub.publish(SmallPolicy());
  // The publisher reads the steady clock itself; really let it pass.
  std::this_thread::sleep_for(PolicyPublisher::kSlotQuiesce + std::chrono::milliseconds(10));
  pub.publish(SmallPolicy());
  EXPECT_TRUE(sleeps.empty());
}

TEST(PolicyPublisher, BuildRulesetAcceptsFullTables) {
  policy::CompiledPolicy c;
  for (int i = 0; i < TW_MAX_RULE_ENTRIES; ++i) c.rules.push_back(Rule(1000 + i, i));
  for (int i = 0; i < TW_MAX_EXEMPT_ENTRIES; ++i) c.exempts.push_back(Exempt(2000 + i));
  const tw_ruleset rs = PolicyPublisher::build_ruleset(c, 42);
  EXPECT_EQ(rs.generation, 42u);
  EXPECT_EQ(rs.rule_count, static_cast<uint32_t>(TW_MAX_RULE_ENTRIES));
  EXPECT_EQ(rs.exempt_count, static_cast<uint32_t>(TW_MAX_EXEMPT_ENTRIES));
  EXPECT_EQ(rs.rules[TW_MAX_RULE_ENTRIES - 1].port_lo, 1000 + TW_MAX_RULE_ENTRIES - 1);
  EXPECT_EQ(rs.exempts[TW_MAX_EXEMPT_ENTRIES - 1].port_lo, 2000 + TW_MAX_EXEMPT_ENTRIES - 1);
}

TEST(PolicyPublisher, BuildRulesetRejectsTooManyRules) {
  policy::CompiledPolicy c;
  for (int i = 0; i <= TW_MAX_RULE_ENTRIES; ++i) c.rules.push_back(Rule(1, i));
  EXPECT_THROW(PolicyPublisher::build_ruleset(c, 1), std::runtime_error);
}

TEST(PolicyPublisher, BuildRulesetRejectsTooManyExemptions) {
  policy::CompiledPolicy c;
  for (int i = 0; i <= TW_MAX_EXEMPT_ENTRIES; ++i) c.exempts.push_back(Exempt(1));
  EXPECT_THROW(PolicyPublisher::build_ruleset(c, 1), std::runtime_error);
}

TEST(PolicyPublisher, OversizedPolicyFailsBeforeAnyWrite) {
  std::vector<std::string> log;
  std::vector<Clock::duration> sleeps;
  FakeMaps maps(&log, 4);
  PolicyPublisher pub(maps, RecordingSleep{&sleeps, &log});
  policy::CompiledPolicy c = SmallPolicy();
  for (int i = 0; i <= TW_MAX_RULE_ENTRIES; ++i) c.rules.push_back(Rule(1, i));
  EXPECT_THROW(pub.publish(c), std::runtime_error);
  EXPECT_TRUE(log.empty()) << "first write: " << log.front();
  EXPECT_EQ(maps.generation(), 4u);
}

}  // namespace
}  // namespace tlswall::agent
