#include "agent/policy_tables.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

#include <sys/random.h>

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
  clear_lpm_slot<tw_owner_uid_key>(fds_.owner_uids, slot, "owner uid");
  clear_lpm_slot<tw_owner_comm_key>(fds_.owner_comms, slot, "owner comm");
  clear_lpm_slot<tw_owner_cgroup_key>(fds_.owner_cgroups, slot, "owner cgroup");
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

void BpfPolicyMaps::put_owner_tables(uint32_t slot, const policy::KernelOwnerTables& owners) {
  auto put = [](int fd, const void* key, const void* value, const char* what) {
    if (bpf_map_update_elem(fd, key, value, BPF_ANY) != 0) {
      throw std::runtime_error(std::string("cannot write ") + what + " table: " + errstr());
    }
  };
  for (uint32_t bit = 0; bit < owners.groups.size(); ++bit) {
    const uint32_t idx = slot * TW_MAX_OWNER_GROUPS + bit;
    put(fds_.owner_groups, &idx, &owners.groups[bit], "owner group");
  }
  for (const auto& [uid, mask] : owners.uids) {
    const tw_owner_uid_key k{slot, uid};
    put(fds_.owner_uids, &k, &mask, "owner uid");
  }
  for (const auto& [comm, mask] : owners.comms) {
    tw_owner_comm_key k{};
    k.slot = slot;
    std::memcpy(k.comm, comm.data(), std::min(comm.size(), sizeof(k.comm) - 1));
    put(fds_.owner_comms, &k, &mask, "owner comm");
  }
  for (const auto& [id, mask] : owners.cgroups) {
    const tw_owner_cgroup_key k{slot, id};
    put(fds_.owner_cgroups, &k, &mask, "owner cgroup");
  }
}

void BpfPolicyMaps::put_slot_meta(uint32_t slot, const tw_slot_meta& m) {
  if (bpf_map_update_elem(fds_.slots, &slot, &m, BPF_ANY) != 0) {
    throw std::runtime_error("cannot write slot table: " + errstr());
  }
}

void BpfPolicyMaps::set_generation(uint64_t generation) { set_gen_(generation); }
uint64_t BpfPolicyMaps::generation() const { return get_gen_(); }

PolicyPublisher::PolicyPublisher(PolicyMaps& maps, policy::OwnerResolver resolver,
                                 std::function<void(Clock::duration)> sleep)
    : maps_(maps), resolver_(std::move(resolver)), sleep_(std::move(sleep)) {}

bool PolicyPublisher::owners_changed(const policy::CompiledPolicy& compiled) const {
  if (compiled.owner_groups.empty() && published_owners_.groups.empty()) return false;
  return !(policy::build_owner_tables(compiled, resolver_) == published_owners_);
}

void PolicyPublisher::default_sleep(Clock::duration d) { std::this_thread::sleep_for(d); }

uint32_t PolicyPublisher::publish_id() {
  uint32_t id = 0;
  while (id == 0) {
    if (getrandom(&id, sizeof(id), 0) != static_cast<ssize_t>(sizeof(id))) {
      // No entropy source: a counter seeded from the clock still differs
      // from every id this process wrote before.
      static uint32_t fallback = static_cast<uint32_t>(Clock::now().time_since_epoch().count());
      id = ++fallback;
    }
  }
  return id;
}

uint64_t PolicyPublisher::publish(const policy::CompiledPolicy& compiled) {
  const uint64_t next = maps_.generation() + 1;
  const uint32_t slot = TW_SLOT_OF(next);
  // Build first: tables that do not fit fail before anything is written.
  const policy::KernelTables tables = policy::build_kernel_tables(compiled, resolver_);

  if (last_flip_ != Clock::time_point{}) {
    const auto since = Clock::now() - last_flip_;
    if (since < kSlotQuiesce) sleep_(kSlotQuiesce - since);
  }
  // The slot is invalidated first, so a half-written slot is never used
  // even if a stale generation word pointed at it.
  maps_.put_slot_meta(slot, tw_slot_meta{});
  maps_.clear_slot(slot);
  for (const auto& r : tables.v4) maps_.put_dest4(slot, r);
  for (const auto& r : tables.v6) maps_.put_dest6(slot, r);
  for (const auto& r : tables.ports) maps_.put_port(slot, r);
  maps_.put_owner_tables(slot, tables.owners);
  tw_slot_meta meta = tables.owners.meta;
  meta.generation = next;
  meta.publish_id = publish_id();
  maps_.put_slot_meta(slot, meta);
  maps_.set_generation(next);
  published_owners_ = tables.owners;
  last_flip_ = Clock::now();
  return next;
}

}  // namespace tlswall::agent
