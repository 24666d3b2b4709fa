// tlswall's tc egress filter on an interface: attach or replace it in place
// (libbpf's netlink tc API), detach it, query it, and read the whole egress
// chain (netlink RTM_GETTFILTER dump) to tell whether another filter runs
// before ours.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tlswall::agent {

// Our tc egress filter on one interface (handle/priority fixed, so a new
// program replaces the old one in place, atomically).
struct TcFilterId {
  static constexpr uint32_t kHandle = 0x7477;  // 'T','W': recognisable in `tc filter show`
  static constexpr uint32_t kPriority = 1;
};

// Attaches prog_fd as our egress filter on ifindex, replacing ours if it is
// there. Creates the clsact qdisc if missing; returns true if it did.
bool tc_attach_or_replace(int ifindex, const std::string& ifname, int prog_fd);
// Removes our filter, and the clsact qdisc if `remove_qdisc`. Never throws.
void tc_detach(int ifindex, const std::string& ifname, bool remove_qdisc);
// The program id of our filter on ifindex, or 0 if it is not there.
uint32_t tc_attached_prog_id(int ifindex);

struct TcFilterEntry {
  uint32_t priority = 0;
  uint32_t handle = 0;  // 0: the chain head entry tc reports per priority
  uint16_t protocol = 0;
  std::string kind;  // "bpf", "u32", "matchall", ...
};

// The clsact egress filters of ifindex in the order the kernel runs them.
// Throws std::runtime_error if netlink fails; empty if there is no clsact.
std::vector<TcFilterEntry> list_egress_filters(int ifindex);

// The first filter that runs (handle != 0), or nullptr.
const TcFilterEntry* first_egress_filter(const std::vector<TcFilterEntry>& chain);

}  // namespace tlswall::agent
