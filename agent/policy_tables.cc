#include "agent/policy_tables.h"

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

#include <bpf/bpf.h>

namespace tlswall::agent {
namespace {

std::string errstr() { return std::strerror(errno); }

template <typename Key>
void clear_lpm_slot(int fd, uint32_t slot, const char* what) {
  std::vector<Key> doomed;
  Key cur{}, next{};
  Key* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    if (next.slot == slot) doomed.push_back(next);
    cur = next;
    prev = &cur;
  }
  for (auto& k : doomed) {
    if (bpf_map_delete_elem(fd, &k) != 0 && errno != ENOENT) {
      throw std::runtime_error(std::string("cannot clear ") + what + " slot: " + errstr());
    }
  }
}

}  // namespace

BpfPolicyMaps::BpfPolicyMaps(int lpm4_fd, int lpm6_fd, int rulesets_fd,
                             std::function<void(uint64_t)> set_gen,
                             std::function<uint64_t()> get_gen)
    : lpm4_fd_(lpm4_fd),
      lpm6_fd_(lpm6_fd),
      rulesets_fd_(rulesets_fd),
      set_gen_(std::move(set_gen)),
      get_gen_(std::move(get_gen)) {}

void BpfPolicyMaps::clear_slot(uint32_t slot) {
  clear_lpm_slot<tw_lpm4_key>(lpm4_fd_, slot, "IPv4 prefix");
  clear_lpm_slot<tw_lpm6_key>(lpm6_fd_, slot, "IPv6 prefix");
}

void BpfPolicyMaps::put_v4(uint32_t slot, const policy::LpmRow4& row) {
  tw_lpm4_key k{};
  k.prefixlen = 8u + row.prefix_len;
  k.slot = static_cast<__u8>(slot);
  std::memcpy(k.addr, row.addr, 4);
  if (bpf_map_update_elem(lpm4_fd_, &k, &row.cls, BPF_ANY) != 0) {
    throw std::runtime_error("cannot write IPv4 prefix table: " + errstr());
  }
}

void BpfPolicyMaps::put_v6(uint32_t slot, const policy::LpmRow6& row) {
  tw_lpm6_key k{};
  k.prefixlen = 8u + row.prefix_len;
  k.slot = static_cast<__u8>(slot);
  std::memcpy(k.addr, row.addr, 16);
  if (bpf_map_update_elem(lpm6_fd_, &k, &row.cls, BPF_ANY) != 0) {
    throw std::runtime_error("cannot write IPv6 prefix table: " + errstr());
  }
}

void BpfPolicyMaps::put_ruleset(uint32_t slot, const tw_ruleset& rs) {
  if (bpf_map_update_elem(rulesets_fd_, &slot, &rs, BPF_ANY) != 0) {
    throw std::runtime_error("cannot write rule table: " + errstr());
  }
}

void BpfPolicyMaps::set_generation(uint64_t generation) { set_gen_(generation); }
uint64_t BpfPolicyMaps::generation() const { return get_gen_(); }

PolicyPublisher::PolicyPublisher(PolicyMaps& maps, std::function<void(Clock::duration)> sleep)
    : maps_(maps), sleep_(std::move(sleep)) {}

void PolicyPublisher::default_sleep(Clock::duration d) { std::this_thread::sleep_for(d); }

tw_ruleset PolicyPublisher::build_ruleset(const policy::CompiledPolicy& compiled,
                                          uint64_t generation) {
  if (compiled.rules.size() > TW_MAX_RULE_ENTRIES ||
      compiled.exempts.size() > TW_MAX_EXEMPT_ENTRIES) {
    throw std::runtime_error("compiled policy exceeds the kernel rule table");
  }
  tw_ruleset rs{};
  rs.generation = generation;
  rs.rule_count = static_cast<__u32>(compiled.rules.size());
  rs.exempt_count = static_cast<__u32>(compiled.exempts.size());
  for (size_t i = 0; i < compiled.rules.size(); ++i) rs.rules[i] = compiled.rules[i];
  for (size_t i = 0; i < compiled.exempts.size(); ++i) rs.exempts[i] = compiled.exempts[i];
  return rs;
}

uint64_t PolicyPublisher::publish(const policy::CompiledPolicy& compiled) {
  const uint64_t next = maps_.generation() + 1;
  const uint32_t slot = TW_SLOT_OF(next);
  // Build first: a table that does not fit fails before anything is written.
  auto rs = std::make_unique<tw_ruleset>(build_ruleset(compiled, next));

  if (last_flip_ != Clock::time_point{}) {
    const auto since = Clock::now() - last_flip_;
    if (since < kSlotQuiesce) sleep_(kSlotQuiesce - since);
  }
  maps_.clear_slot(slot);
  for (const auto& r : compiled.v4) maps_.put_v4(slot, r);
  for (const auto& r : compiled.v6) maps_.put_v6(slot, r);
  maps_.put_ruleset(slot, *rs);
  maps_.set_generation(next);
  last_flip_ = Clock::now();
  return next;
}

}  // namespace tlswall::agent
