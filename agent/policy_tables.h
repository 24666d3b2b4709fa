// Writes a compiled policy into the classifier's tables as one new
// generation, then flips the active generation with a single store.
//
// Slot = generation % 2. The new generation is written into the slot the
// classifier is NOT reading; only then is the generation word flipped, so
// no packet is judged against half a policy. A failure while writing leaves
// the active generation untouched (the last good policy stays in force).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

#include "policy/policy.h"

namespace tlswall::agent {

// The kernel-table operations the publisher needs: the seam that lets the
// publishing logic be tested without root. Methods throw std::runtime_error.
class PolicyMaps {
 public:
  virtual ~PolicyMaps() = default;
  // Removes every row of `slot` (address and port tables).
  virtual void clear_slot(uint32_t slot) = 0;
  virtual void put_dest4(uint32_t slot, const policy::KernelDestRow4& row) = 0;
  virtual void put_dest6(uint32_t slot, const policy::KernelDestRow6& row) = 0;
  virtual void put_port(uint32_t slot, const policy::KernelPortRow& row) = 0;
  // The owner-selector tables of `slot` (groups, uid / comm / cgroup rows).
  virtual void put_owner_tables(uint32_t slot, const policy::KernelOwnerTables& owners) = 0;
  // Records which generation `slot` holds (and its owner-group summary);
  // written after its rows. meta.generation 0 invalidates the slot.
  virtual void put_slot_meta(uint32_t slot, const tw_slot_meta& meta) = 0;
  virtual void set_generation(uint64_t generation) = 0;
  virtual uint64_t generation() const = 0;
};

// PolicyMaps over real BPF map fds (borrowed, not owned) and a generation
// setter/getter (the classifier's .bss word).
class BpfPolicyMaps : public PolicyMaps {
 public:
  struct Fds {
    int lpm4, lpm6, ports, slots;
    int owner_groups, owner_uids, owner_comms, owner_cgroups;
  };
  BpfPolicyMaps(Fds fds, std::function<void(uint64_t)> set_gen, std::function<uint64_t()> get_gen);
  void clear_slot(uint32_t slot) override;
  void put_dest4(uint32_t slot, const policy::KernelDestRow4& row) override;
  void put_dest6(uint32_t slot, const policy::KernelDestRow6& row) override;
  void put_port(uint32_t slot, const policy::KernelPortRow& row) override;
  void put_owner_tables(uint32_t slot, const policy::KernelOwnerTables& owners) override;
  void put_slot_meta(uint32_t slot, const tw_slot_meta& meta) override;
  void set_generation(uint64_t generation) override;
  uint64_t generation() const override;

 private:
  Fds fds_;
  std::function<void(uint64_t)> set_gen_;
  std::function<uint64_t()> get_gen_;
};

class PolicyPublisher {
 public:
  using Clock = std::chrono::steady_clock;
  // `resolver` turns owner selectors into this host's uids and cgroup ids;
  // `sleep` is injectable for tests.
  explicit PolicyPublisher(PolicyMaps& maps, policy::OwnerResolver resolver = {},
                           std::function<void(Clock::duration)> sleep = default_sleep);

  // Writes `compiled` as generation current+1 and makes it active. Returns
  // the new generation. Throws (with the active generation unchanged) if the
  // tables do not fit or a table write fails.
  uint64_t publish(const policy::CompiledPolicy& compiled);

  // True if resolving `compiled`'s owner selectors now gives other tables
  // than the last publish wrote (a selected cgroup appeared or went away, a
  // user was added): the caller republishes.
  bool owners_changed(const policy::CompiledPolicy& compiled) const;
  // Selectors the last publish could not resolve on this host.
  const std::vector<std::string>& unresolved() const { return published_owners_.unresolved; }

  // A slot that was active is rewritten only after this long, so no
  // classifier run that read the old generation can still be reading it
  // (a tc program runs for microseconds, in softirq context).
  static constexpr Clock::duration kSlotQuiesce = std::chrono::milliseconds(50);

 private:
  static void default_sleep(Clock::duration d);
  // Random, nonzero: tw_slot_meta.publish_id of one publish.
  static uint32_t publish_id();
  PolicyMaps& maps_;
  policy::OwnerResolver resolver_;
  std::function<void(Clock::duration)> sleep_;
  policy::KernelOwnerTables published_owners_;
  Clock::time_point last_flip_{};
};

}  // namespace tlswall::agent
