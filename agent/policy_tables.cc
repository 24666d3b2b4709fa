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

BpfPolicyMaps::BpfPolicyMaps(Fds fds, std::function<void(uint64_t)> set_gen,
                             std::function<uint64_t()> get_gen)
    : fds_(fds), set_gen_(std::move(set_gen)), get_gen_(std::move(get_gen)) {}

void BpfPolicyMaps::clear_slot(uint32_t slot) {
  clear_lpm_slot<tw_lpm4_key>(fds_.lpm4, slot, "IPv4 prefix");
  clear_lpm_slot<tw_lpm6_key>(fds_.lpm6, slot, "IPv6 prefix");
  clear_lpm_slot<tw_port_key>(fds_.ports, slot, "port");
}

void BpfPolicyMaps::put_dest4(uint32_t slot, const policy::KernelDestRow4& row) {
  tw_lpm4_key k{};
  k.prefixlen = 8u + row.prefix_len;
  k.slot = static_cast<__u8>(slot);
  std::memcpy(k.addr, row.addr, 4);
  if (bpf_map_update_elem(fds_.lpm4, &k, &row.value, BPF_ANY) != 0) {
    throw std::runtime_error("cannot write IPv4 prefix table: " + errstr());
  }
}

void BpfPolicyMaps::put_dest6(uint32_t slot, const policy::KernelDestRow6& row) {
  tw_lpm6_key k{};
  k.prefixlen = 8u + row.prefix_len;
  k.slot = static_cast<__u8>(slot);
  std::memcpy(k.addr, row.addr, 16);
  if (bpf_map_update_elem(fds_.lpm6, &k, &row.value, BPF_ANY) != 0) {
    throw std::runtime_error("cannot write IPv6 prefix table: " + errstr());
  }
}

void BpfPolicyMaps::put_port(uint32_t slot, const policy::KernelPortRow& row) {
  tw_port_key k{};
  k.prefixlen = 8u + 16u + row.prefix_len;
  k.slot = static_cast<__u8>(slot);
  k.class_id[0] = static_cast<__u8>(row.class_id >> 8);
  k.class_id[1] = static_cast<__u8>(row.class_id & 0xff);
  k.port[0] = static_cast<__u8>(row.port >> 8);
  k.port[1] = static_cast<__u8>(row.port & 0xff);
  if (bpf_map_update_elem(fds_.ports, &k, &row.verdict, BPF_ANY) != 0) {
    throw std::runtime_error("cannot write port table: " + errstr());
  }
}

void BpfPolicyMaps::put_slot_generation(uint32_t slot, uint64_t generation) {
  tw_slot_meta m{};
  m.generation = generation;
  if (bpf_map_update_elem(fds_.slots, &slot, &m, BPF_ANY) != 0) {
    throw std::runtime_error("cannot write slot table: " + errstr());
  }
}

void BpfPolicyMaps::set_generation(uint64_t generation) { set_gen_(generation); }
uint64_t BpfPolicyMaps::generation() const { return get_gen_(); }

PolicyPublisher::PolicyPublisher(PolicyMaps& maps, std::function<void(Clock::duration)> sleep)
    : maps_(maps), sleep_(std::move(sleep)) {}

void PolicyPublisher::default_sleep(Clock::duration d) { std::this_thread::sleep_for(d); }

uint64_t PolicyPublisher::publish(const policy::CompiledPolicy& compiled) {
  const uint64_t next = maps_.generation() + 1;
  const uint32_t slot = TW_SLOT_OF(next);
  // Build first: tables that do not fit fail before anything is written.
  const policy::KernelTables tables = policy::build_kernel_tables(compiled);

  if (last_flip_ != Clock::time_point{}) {
    const auto since = Clock::now() - last_flip_;
    if (since < kSlotQuiesce) sleep_(kSlotQuiesce - since);
  }
  // The slot is invalidated first, so a half-written slot is never used
  // even if a stale generation word pointed at it.
  maps_.put_slot_generation(slot, 0);
  maps_.clear_slot(slot);
  for (const auto& r : tables.v4) maps_.put_dest4(slot, r);
  for (const auto& r : tables.v6) maps_.put_dest6(slot, r);
  for (const auto& r : tables.ports) maps_.put_port(slot, r);
  maps_.put_slot_generation(slot, next);
  maps_.set_generation(next);
  last_flip_ = Clock::now();
  return next;
}

}  // namespace tlswall::agent
