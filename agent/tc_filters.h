// Reads the tc egress filter chain of an interface (netlink RTM_GETTFILTER
// dump), so the agent can tell whether another filter runs before ours.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tlswall::agent {

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
