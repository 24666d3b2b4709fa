// Aborts a local TCP socket through sock_diag (SOCK_DESTROY, needs
// CONFIG_INET_DIAG_DESTROY and CAP_NET_ADMIN), so a client whose flow was
// blocked fails at once (ECONNABORTED) instead of retransmitting into a
// drop until its TCP timeout.
#pragma once

#include <cstdint>

extern "C" {
#include "abi/tlswall_abi.h"
}

namespace tlswall::agent {

// `key` is the flow as the egress classifier saw it (saddr = local socket).
// `cookie` is the socket cookie, or 0 to match on the 5-tuple alone.
// Returns 0, or -errno (-ENOENT: no such socket, already gone).
int destroy_tcp_socket(const tw_flow_key& key, uint64_t cookie);

}  // namespace tlswall::agent
