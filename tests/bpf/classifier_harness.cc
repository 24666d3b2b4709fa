#include "tests/bpf/classifier_harness.h"

#include <arpa/inet.h>
#include <linux/bpf.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <stdexcept>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>

#include "tests/bpf/owner_test_support.h"

namespace tlswall::bpftest {
namespace {

// Small tables: a fixture has a handful of flows and events.
agent::ClassifierOptions small_tables() {
  // A private bpffs for this process's pins, never the host's pin root;
  // unmounted (and the pins with it) when the process exits.
  static ownertest::PrivateBpffs pins;
  agent::ClassifierOptions o;
  o.pin_root = pins.path();
  o.flow_table_entries = 1024;
  o.ringbuf_bytes = 64 * 1024;
  return o;
}

}  // namespace

policy::CompiledPolicy compile_policy_text(const std::string& toml) {
  // Fixed "now": fixtures must not start failing when an exemption expires.
  const auto now = std::chrono::system_clock::time_point(std::chrono::seconds(1767225600));
  policy::LoadResult r = policy::load_policy_text("fixture.toml", toml, now);
  if (!r.ok()) {
    std::string msg = "fixture policy does not load:";
    for (const auto& d : r.diagnostics) msg += "\n  " + d.render();
    throw std::runtime_error(msg);
  }
  return policy::compile_policy(*r.policy, now);
}

tw_flow_key flow_key(const FlowSpec& flow, uint8_t proto) {
  tw_flow_key k{};
  k.family = static_cast<__u8>(flow.family);
  k.proto = proto;
  k.sport = htons(flow.sport);
  k.dport = htons(flow.dport);
  if (flow.family == 4) {
    for (auto [text, out] : {std::pair{&flow.src, k.saddr}, std::pair{&flow.dst, k.daddr}}) {
      out[10] = 0xff;
      out[11] = 0xff;
      if (inet_pton(AF_INET, text->c_str(), out + 12) != 1) {
        throw std::invalid_argument("bad IPv4 address " + *text);
      }
    }
  } else {
    // With a routing header the classifier keys the flow by the final
    // destination (parse.bpf.h), as the local socket does.
    const std::string dst = flow.final_dst();
    if (inet_pton(AF_INET6, flow.src.c_str(), k.saddr) != 1 ||
        inet_pton(AF_INET6, dst.c_str(), k.daddr) != 1) {
      throw std::invalid_argument("bad IPv6 address " + flow.src + " / " + dst);
    }
  }
  return k;
}

namespace {

// Loaded once per process; a failure is remembered and rethrown to every test.
agent::TcClassifier& shared_classifier() {
  static std::unique_ptr<agent::TcClassifier> cls;
  static std::string error;
  if (!cls && error.empty()) {
    try {
      if (geteuid() != 0) {
        throw std::runtime_error(
            "the BPF fixture tests load the real classifier and must run as root (CAP_BPF); "
            "they never skip");
      }
      cls = std::make_unique<agent::TcClassifier>(small_tables());
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  if (!cls) throw std::runtime_error(error);
  return *cls;
}

}  // namespace

ClassifierHarness::ClassifierHarness() {
  cls_ = &shared_classifier();
  agent::TcClassifier* c = cls_;
  maps_ = std::make_unique<agent::BpfPolicyMaps>(
      c->policy_fds(), [c](uint64_t g) { c->set_generation(g); }, [c] { return c->generation(); });
  // No quiesce sleep: nothing runs the program concurrently in a fixture.
  publisher_ = std::make_unique<agent::PolicyPublisher>(
      *maps_, policy::OwnerResolver{}, [](agent::PolicyPublisher::Clock::duration) {});
  ring_ = ring_buffer__new(c->events_fd(), &ClassifierHarness::on_event, this, nullptr);
  if (!ring_) {
    throw std::runtime_error(std::string("ring_buffer__new on tw_events: ") + std::strerror(errno));
  }
  reset();
}

void ClassifierHarness::reset() {
  cls_->set_generation(0);
  for (uint32_t slot = 0; slot < TW_POLICY_SLOTS; ++slot) {
    maps_->put_slot_meta(slot, tw_slot_meta{});
    maps_->clear_slot(slot);
  }
  // Flows: delete every key (collect first; deleting while iterating skips).
  std::vector<tw_flow_key> keys;
  tw_flow_key cur{}, next{};
  const tw_flow_key* prev = nullptr;
  while (bpf_map_get_next_key(cls_->flows_fd(), prev, &next) == 0) {
    keys.push_back(next);
    cur = next;
    prev = &cur;
  }
  for (const auto& k : keys) bpf_map_delete_elem(cls_->flows_fd(), &k);
  if (bpf_map_get_next_key(cls_->flows_fd(), nullptr, &next) == 0) {
    throw std::runtime_error("cannot empty tw_flows between tests");
  }
  keys.clear();
  prev = nullptr;
  while (bpf_map_get_next_key(cls_->tls_checks_fd(), prev, &next) == 0) {
    keys.push_back(next);
    cur = next;
    prev = &cur;
  }
  for (const auto& k : keys) bpf_map_delete_elem(cls_->tls_checks_fd(), &k);
  ring_buffer__consume(ring_);
  pending_.clear();
  bad_event_sizes_ = 0;
  counters_base_ = cls_->counters();
  drops_base_ = cls_->drops_by_reason();
}

std::array<uint64_t, TW_CNT_MAX> ClassifierHarness::counters() const {
  auto c = cls_->counters();
  for (size_t i = 0; i < c.size(); ++i) c[i] -= counters_base_[i];
  return c;
}

std::array<uint64_t, TW_REASON_MAX> ClassifierHarness::drops_by_reason() const {
  auto c = cls_->drops_by_reason();
  for (size_t i = 0; i < c.size(); ++i) c[i] -= drops_base_[i];
  return c;
}

ClassifierHarness::~ClassifierHarness() {
  if (ring_) ring_buffer__free(ring_);
}

uint64_t ClassifierHarness::publish(const std::string& toml) {
  compiled_ = compile_policy_text(toml);
  return publisher_->publish(compiled_);
}

uint16_t ClassifierHarness::rule_id(const std::string& rule_name) const {
  for (size_t i = 0; i < compiled_.rule_names.size(); ++i) {
    if (compiled_.rule_names[i] == rule_name) return static_cast<uint16_t>(i);
  }
  throw std::invalid_argument("no rule named " + rule_name + " in the published policy");
}

int ClassifierHarness::prog_fd(Prog prog) const {
  switch (prog) {
    case Prog::kL3:
      return cls_->prog_fd_for(agent::LinkKind::kL3);
    case Prog::kIngress:
      return cls_->prog_fd_for(agent::LinkKind::kEthernet, agent::TcDirection::kIngress);
    default:
      return cls_->egress_prog_fd();
  }
}

ClassifierHarness::Run ClassifierHarness::run(const Bytes& frame, const __sk_buff* ctx,
                                              Prog prog) const {
  // data_out is required room for the (unchanged) frame the kernel copies back.
  Bytes out(frame.size() + 256);
  __sk_buff ctx_copy{};
  LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame.data(), .data_out = out.data(),
              .data_size_in = static_cast<__u32>(frame.size()),
              .data_size_out = static_cast<__u32>(out.size()), .repeat = 1);
  if (ctx) {
    ctx_copy = *ctx;
    opts.ctx_in = &ctx_copy;
    opts.ctx_size_in = sizeof(ctx_copy);
  }
  Run r;
  r.err = bpf_prog_test_run_opts(prog_fd(prog), &opts);
  if (r.err) r.err = -errno;
  r.retval = static_cast<int>(opts.retval);
  r.size = opts.data_size_out;
  return r;
}

int ClassifierHarness::verdict(const Bytes& frame, Prog prog) const {
  const Run r = run(frame, nullptr, prog);
  if (r.err != 0) {
    ADD_FAILURE() << "bpf_prog_test_run_opts failed: " << std::strerror(-r.err) << " (frame of "
                  << frame.size() << " bytes)";
    return INT32_MIN;
  }
  return r.retval;
}

std::optional<tw_flow_state> ClassifierHarness::flow(const FlowSpec& f, uint8_t proto) const {
  const tw_flow_key k = flow_key(f, proto);
  tw_flow_state st{};
  if (bpf_map_lookup_elem(cls_->flows_fd(), &k, &st) != 0) return std::nullopt;
  return st;
}

int ClassifierHarness::on_event(void* ctx, void* data, size_t size) {
  auto* self = static_cast<ClassifierHarness*>(ctx);
  if (size < sizeof(tw_flow_event)) {
    ++self->bad_event_sizes_;
    return 0;
  }
  tw_flow_event e;
  std::memcpy(&e, data, sizeof(e));
  self->pending_.push_back(e);
  return 0;
}

std::vector<tw_flow_event> ClassifierHarness::drain_events() {
  const int n = ring_buffer__consume(ring_);
  if (n < 0) ADD_FAILURE() << "ring_buffer__consume: " << std::strerror(-n);
  if (bad_event_sizes_) {
    ADD_FAILURE() << bad_event_sizes_ << " ring-buffer records shorter than tw_flow_event";
    bad_event_sizes_ = 0;
  }
  std::vector<tw_flow_event> out;
  out.swap(pending_);
  return out;
}

const char* counter_name(uint32_t c) {
  static const char* const kNames[TW_CNT_MAX] = {"packets",
                                                 "flows_seen",
                                                 "flows_tls",
                                                 "flows_not_tls",
                                                 "plaintext_reported",
                                                 "plaintext_blocked",
                                                 "exempt",
                                                 "state_lost",
                                                 "packets_dropped",
                                                 "events_lost",
                                                 "held_out_of_window",
                                                 "opaque_to_boundary",
                                                 "flow_table_full",
                                                 "parse_errors",
                                                 "tls_below_minimum",
                                                 "flows_inbound",
                                                 "flows_reaped",
                                                 "flows_kept_after_close",
                                                 "servers_answered_tls",
                                                 "servers_not_tls",
                                                 "server_version_unknown",
                                                 "bad_later_records",
                                                 "udp_flows",
                                                 "udp_not_allowed"};
  return c < TW_CNT_MAX ? kNames[c] : "(out of range)";
}

const char* reason_name(uint32_t r) {
  static const char* const kNames[TW_REASON_MAX] = {"none",
                                                    "not_handshake_record",
                                                    "bad_record_version",
                                                    "bad_record_length",
                                                    "not_client_hello",
                                                    "bad_handshake_length",
                                                    "bad_client_version",
                                                    "tls_below_minimum",
                                                    "overlap_mismatch",
                                                    "undecidable",
                                                    "fragmented",
                                                    "state_lost",
                                                    "out_of_window",
                                                    "opaque_headers",
                                                    "bad_preamble",
                                                    "preamble_not_allowed",
                                                    "bad_record",
                                                    "server_not_tls",
                                                    "udp_not_allowed",
                                                    "not_quic"};
  return r < TW_REASON_MAX ? kNames[r] : "(out of range)";
}

}  // namespace tlswall::bpftest
