#include "agent/sock_destroy.h"

#include "agent/owned_fd.h"

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace tlswall::agent {
namespace {}  // namespace

int SocketDestroyer::destroy(const tw_flow_key& key, uint64_t cookie) {
  if (key.proto != IPPROTO_TCP) return -EPROTONOSUPPORT;  // UDP: see daemon_events.cc
  if (nl_.get() < 0) {
    nl_ = OwnedFd(::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
    if (nl_.get() < 0) return -errno;
    timeval tv{1, 0};
    ::setsockopt(nl_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  const int nlfd = nl_.get();

  struct {
    nlmsghdr nh;
    inet_diag_req_v2 req;
  } msg{};
  msg.nh.nlmsg_len = sizeof(msg);
  msg.nh.nlmsg_type = SOCK_DESTROY;
  msg.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  msg.nh.nlmsg_seq = 1;
  msg.req.sdiag_family = key.family == 4 ? AF_INET : AF_INET6;
  msg.req.sdiag_protocol = IPPROTO_TCP;
  msg.req.idiag_states = ~0u;
  msg.req.id.idiag_sport = key.sport;
  msg.req.id.idiag_dport = key.dport;
  if (key.family == 4) {
    std::memcpy(&msg.req.id.idiag_src[0], key.saddr + 12, 4);
    std::memcpy(&msg.req.id.idiag_dst[0], key.daddr + 12, 4);
  } else {
    std::memcpy(msg.req.id.idiag_src, key.saddr, 16);
    std::memcpy(msg.req.id.idiag_dst, key.daddr, 16);
  }
  if (cookie) {
    msg.req.id.idiag_cookie[0] = static_cast<uint32_t>(cookie);
    msg.req.id.idiag_cookie[1] = static_cast<uint32_t>(cookie >> 32);
  } else {
    msg.req.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
    msg.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
  }

  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(nlfd, &msg, sizeof(msg), 0, reinterpret_cast<sockaddr*>(&kernel), sizeof(kernel)) <
      0) {
    const int e = -errno;
    nl_.reset();
    return e;
  }
  alignas(nlmsghdr) char buf[512];
  const ssize_t n = ::recv(nlfd, buf, sizeof(buf), 0);
  if (n < 0) {
    const int e = -errno;
    nl_.reset();  // a late answer must not be read as the next one's
    return e;
  }
  const auto* nh = reinterpret_cast<const nlmsghdr*>(buf);
  if (!NLMSG_OK(nh, static_cast<unsigned>(n)) || nh->nlmsg_type != NLMSG_ERROR) {
    nl_.reset();
    return -EPROTO;
  }
  const auto* err = static_cast<const nlmsgerr*>(NLMSG_DATA(nh));
  return err->error;  // 0 or -errno
}

}  // namespace tlswall::agent
