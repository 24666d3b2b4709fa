// tlswall's tc filters on an interface (one on egress: the classifier; one
// on ingress: the server side of its deeper TLS checks): attach or replace
// them in place (libbpf's netlink tc API), detach, query, and read a whole
// chain (netlink RTM_GETTFILTER dump) to tell whether another filter runs
// before ours.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tlswall::agent {

enum class TcDirection { kEgress, kIngress };

// "egress" | "ingress", for messages.
const char* tc_direction_name(TcDirection dir);

// Our tc filter on one side of an interface (handle/priority fixed, so a
// new program replaces the old one in place, atomically).
struct TcFilterId {
  static constexpr uint32_t kHandle = 0x7477;  // 'T','W': recognisable in `tc filter show`
  static constexpr uint32_t kPriority = 1;
};

// Attaches prog_fd as our filter on that side of ifindex, replacing ours if
// it is there. Creates the clsact qdisc if missing; returns true if it did.
bool tc_attach_or_replace(int ifindex, const std::string& ifname, int prog_fd, TcDirection dir);
// Removes our filters (both sides), and the clsact qdisc if
// `remove_qdisc`. Never throws.
void tc_detach(int ifindex, const std::string& ifname, bool remove_qdisc);
// Removes our filter on one side only. Never throws.
void tc_detach_one(int ifindex, const std::string& ifname, TcDirection dir);
// The program id of our filter on that side of ifindex, or 0 if it is not
// there.
uint32_t tc_attached_prog_id(int ifindex, TcDirection dir);

struct TcFilterEntry {
  uint32_t priority = 0;
  uint32_t handle = 0;  // 0: the chain head entry tc reports per priority
  uint16_t protocol = 0;
  std::string kind;  // "bpf", "u32", "matchall", ...
};

// The clsact filters on one side of ifindex in the order the kernel runs
// them. Throws std::runtime_error if netlink fails; empty if there is no
// clsact.
std::vector<TcFilterEntry> list_filters(int ifindex, TcDirection dir);

// The first filter that runs (handle != 0), or nullptr.
const TcFilterEntry* first_filter(const std::vector<TcFilterEntry>& chain);

}  // namespace tlswall::agent
