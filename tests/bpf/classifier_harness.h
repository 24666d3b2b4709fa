// The real tc classifier, loaded as the agent loads it (embedded skeleton,
// small tables), with a policy published the way the daemon publishes it,
// and frames run through BPF_PROG_TEST_RUN. Needs root (CAP_BPF); touches no
// interface.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "agent/bpf_classifier.h"
#include "agent/policy_tables.h"
#include "policy/policy.h"
#include "tests/bpf/packet_builder.h"

struct __sk_buff;
struct ring_buffer;

namespace tlswall::bpftest {

// tc verdicts as the program returns them.
constexpr int kPass = -1;  // TC_ACT_UNSPEC
constexpr int kDrop = 2;   // TC_ACT_SHOT

// The classifier's tc programs: tlswall_egress (frames start with the
// MAC header), tlswall_egress_l3 (packets start with the IP header, the
// family in skb->protocol; tun, WireGuard, ipip) and tlswall_ingress (the
// server side of the deeper TLS checks; Ethernet frames).
enum class Prog { kEthernet, kL3, kIngress };

// Compiles TOML policy text; throws std::runtime_error with the diagnostics.
policy::CompiledPolicy compile_policy_text(const std::string& toml);

// tw_flow_key of a FlowSpec, as the classifier builds it (IPv4 mapped;
// IPv6 daddr = the final destination, FlowSpec::final_dst()); proto 6 (TCP)
// or 17 (UDP).
constexpr uint8_t kTcp = 6;
constexpr uint8_t kUdp = 17;
tw_flow_key flow_key(const FlowSpec& flow, uint8_t proto = kTcp);

// One classifier per test process (loading it costs ~150 ms of verifier
// time, too much for every row of a table); every harness starts from a
// clean slate: no flows, generation 0 with both policy slots empty, no
// pending events, and counters read relative to the harness's start.
class ClassifierHarness {
 public:
  // Loads the classifier on first use, then resets it; throws
  // std::runtime_error (not root, load failure).
  ClassifierHarness();
  ~ClassifierHarness();
  ClassifierHarness(const ClassifierHarness&) = delete;
  ClassifierHarness& operator=(const ClassifierHarness&) = delete;

  // Compiles and publishes `toml` as the next generation; returns it.
  uint64_t publish(const std::string& toml);
  // The last policy published (rule names -> rule_id).
  const policy::CompiledPolicy& compiled() const { return compiled_; }
  uint16_t rule_id(const std::string& rule_name) const;

  struct Run {
    int err = 0;        // bpf_prog_test_run_opts() result (-errno)
    int retval = 0;     // the program's return value as a tc verdict
    uint32_t size = 0;  // data_size_out
  };
  // Runs one frame. `ctx` (optional) is passed as the __sk_buff context.
  Run run(const Bytes& frame, const __sk_buff* ctx = nullptr, Prog prog = Prog::kEthernet) const;
  // Runs one frame and returns the verdict; a test_run failure is a test
  // failure (reported) and returns INT32_MIN.
  int verdict(const Bytes& frame, Prog prog = Prog::kEthernet) const;
  // The fd of `prog` in this classifier.
  int prog_fd(Prog prog) const;

  // Since this harness was created.
  std::array<uint64_t, TW_CNT_MAX> counters() const;
  std::array<uint64_t, TW_REASON_MAX> drops_by_reason() const;
  std::optional<tw_flow_state> flow(const FlowSpec& flow, uint8_t proto = kTcp) const;
  // Every event queued since the last call, in order.
  std::vector<tw_flow_event> drain_events();

  agent::TcClassifier& classifier() { return *cls_; }

 private:
  static int on_event(void* ctx, void* data, size_t size);
  void reset();
  agent::TcClassifier* cls_ = nullptr;  // the process-wide classifier
  std::array<uint64_t, TW_CNT_MAX> counters_base_{};
  std::array<uint64_t, TW_REASON_MAX> drops_base_{};
  std::unique_ptr<agent::BpfPolicyMaps> maps_;
  std::unique_ptr<agent::PolicyPublisher> publisher_;
  policy::CompiledPolicy compiled_;
  ring_buffer* ring_ = nullptr;
  std::vector<tw_flow_event> pending_;
  size_t bad_event_sizes_ = 0;
};

// Base of every fixture test: a reset classifier per test, so counters,
// flows and events start from zero. Not root or a load failure is
// a test failure, never a skip.
class ClassifierTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(NewHarness()); }
  // Replaces the harness with a reset one (a table row's clean slate).
  bool NewHarness() {
    h_.reset();
    try {
      h_ = std::make_unique<ClassifierHarness>();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "cannot load the tc classifier: " << e.what();
      return false;
    }
    return true;
  }
  ClassifierHarness& h() { return *h_; }
  // Failed assertions so far in the running test.
  static int FailedParts() {
    const ::testing::TestResult* r =
        ::testing::UnitTest::GetInstance()->current_test_info()->result();
    int n = 0;
    for (int i = 0; i < r->total_part_count(); ++i) n += r->GetTestPartResult(i).failed();
    return n;
  }

 private:
  std::unique_ptr<ClassifierHarness> h_;
};

// Readable names for failure messages.
const char* counter_name(uint32_t counter);
const char* reason_name(uint32_t reason);

}  // namespace tlswall::bpftest
