#include "agent/tc_filters.h"

#include <linux/netlink.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "agent/owned_fd.h"

namespace tlswall::agent {

std::vector<TcFilterEntry> list_egress_filters(int ifindex) {
  OwnedFd nl(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (nl.get() < 0) throw std::runtime_error(std::string("netlink: ") + std::strerror(errno));
  timeval tv{1, 0};
  ::setsockopt(nl.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  struct {
    nlmsghdr nh;
    tcmsg tc;
  } req{};
  req.nh.nlmsg_len = sizeof(req);
  req.nh.nlmsg_type = RTM_GETTFILTER;
  req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.nh.nlmsg_seq = 1;
  req.tc.tcm_family = AF_UNSPEC;
  req.tc.tcm_ifindex = ifindex;
  req.tc.tcm_parent = TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS);
  if (::send(nl.get(), &req, sizeof(req), 0) < 0) {
    throw std::runtime_error(std::string("netlink send: ") + std::strerror(errno));
  }
  std::vector<TcFilterEntry> out;
  alignas(nlmsghdr) char buf[32768];
  for (;;) {
    const ssize_t n = ::recv(nl.get(), buf, sizeof(buf), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error(std::string("netlink recv: ") + std::strerror(errno));
    }
    int len = static_cast<int>(n);
    for (auto* nh = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(nh, static_cast<unsigned>(len));
         nh = NLMSG_NEXT(nh, len)) {
      if (nh->nlmsg_type == NLMSG_DONE) return out;
      if (nh->nlmsg_type == NLMSG_ERROR) {
        const auto* err = static_cast<const nlmsgerr*>(NLMSG_DATA(nh));
        if (err->error == -EINVAL || err->error == -ENOENT) return out;  // no clsact
        throw std::runtime_error(std::string("filter dump: ") + std::strerror(-err->error));
      }
      if (nh->nlmsg_type != RTM_NEWTFILTER) continue;
      const auto* tc = static_cast<const tcmsg*>(NLMSG_DATA(nh));
      TcFilterEntry e;
      e.priority = TC_H_MAJ(tc->tcm_info) >> 16;
      e.protocol = static_cast<uint16_t>(TC_H_MIN(tc->tcm_info));
      e.handle = tc->tcm_handle;
      int alen = static_cast<int>(nh->nlmsg_len) - static_cast<int>(NLMSG_LENGTH(sizeof(*tc)));
      for (auto* a = reinterpret_cast<rtattr*>(reinterpret_cast<char*>(const_cast<tcmsg*>(tc)) +
                                               NLMSG_ALIGN(sizeof(*tc)));
           RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
        if (a->rta_type == TCA_KIND) e.kind = static_cast<const char*>(RTA_DATA(a));
      }
      out.push_back(e);
    }
  }
}

const TcFilterEntry* first_egress_filter(const std::vector<TcFilterEntry>& chain) {
  for (const auto& e : chain) {
    if (e.handle != 0) return &e;
  }
  return nullptr;
}

}  // namespace tlswall::agent
