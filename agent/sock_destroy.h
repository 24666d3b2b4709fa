// Aborts a local TCP socket through sock_diag (SOCK_DESTROY, needs
// CONFIG_INET_DIAG_DESTROY and CAP_NET_ADMIN), so a client whose flow was
// blocked fails at once (ECONNABORTED) instead of retransmitting into a
// drop until its TCP timeout.
#pragma once

#include <cstdint>

#include "agent/owned_fd.h"

extern "C" {
#include "abi/tlswall_abi.h"
}

namespace tlswall::agent {

// One NETLINK_SOCK_DIAG socket, opened on first use and kept: a flood of
// blocked flows costs a send and a receive each, not a socket apiece.
class SocketDestroyer {
 public:
  // `key` is the flow as the egress classifier saw it (saddr = local
  // socket). `cookie` is the socket cookie, or 0 to match on the 5-tuple.
  // Returns 0, or -errno (-ENOENT: no such socket, already gone;
  // -EPROTONOSUPPORT: not a TCP flow, nothing done).
  int destroy(const tw_flow_key& key, uint64_t cookie);

 private:
  OwnedFd nl_;
};

}  // namespace tlswall::agent
