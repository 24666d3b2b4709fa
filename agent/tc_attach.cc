#include "agent/tc_attach.h"

#include <linux/netlink.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <bpf/libbpf.h>

#include "agent/owned_fd.h"
#include "logging/log.h"

namespace tlswall::agent {
namespace {

std::string errstr(int err) { return std::strerror(err < 0 ? -err : err); }

spdlog::logger& log() { return logging::get(logging::Subsystem::kBpf); }

bpf_tc_attach_point attach_point(TcDirection dir) {
  return dir == TcDirection::kEgress ? BPF_TC_EGRESS : BPF_TC_INGRESS;
}

}  // namespace

const char* tc_direction_name(TcDirection dir) {
  return dir == TcDirection::kEgress ? "egress" : "ingress";
}

bool tc_attach_or_replace(int ifindex, const std::string& ifname, int prog_fd, TcDirection dir) {
  DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = attach_point(dir));
  bool created = false;
  int err = bpf_tc_hook_create(&hook);
  if (err == 0) {
    created = true;
  } else if (err != -EEXIST) {
    throw std::runtime_error("cannot create clsact qdisc on " + ifname + ": " + errstr(err));
  }
  DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = prog_fd, .flags = BPF_TC_F_REPLACE,
                      .handle = TcFilterId::kHandle, .priority = TcFilterId::kPriority);
  err = bpf_tc_attach(&hook, &opts);
  if (err) {
    if (created) {
      hook.attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS);
      bpf_tc_hook_destroy(&hook);
    }
    throw std::runtime_error(std::string("cannot attach tc ") + tc_direction_name(dir) +
                             " filter on " + ifname + ": " + errstr(err));
  }
  return created;
}

void tc_detach_one(int ifindex, const std::string& ifname, TcDirection dir) {
  DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = attach_point(dir));
  DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .handle = TcFilterId::kHandle,
                      .priority = TcFilterId::kPriority);
  const int err = bpf_tc_detach(&hook, &opts);
  if (err && err != -ENOENT && err != -ENODEV && err != -EINVAL) {
    log().warn("detaching tc {} filter from {}: {}", tc_direction_name(dir), ifname, errstr(err));
  }
}

void tc_detach(int ifindex, const std::string& ifname, bool remove_qdisc) {
  tc_detach_one(ifindex, ifname, TcDirection::kEgress);
  tc_detach_one(ifindex, ifname, TcDirection::kIngress);
  if (remove_qdisc) {
    DECLARE_LIBBPF_OPTS(
        bpf_tc_hook, hook, .ifindex = ifindex,
        .attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS));
    const int err = bpf_tc_hook_destroy(&hook);
    if (err && err != -ENOENT && err != -ENODEV && err != -EINVAL) {
      log().warn("removing clsact qdisc from {}: {}", ifname, errstr(err));
    }
  }
}

uint32_t tc_attached_prog_id(int ifindex, TcDirection dir) {
  DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = attach_point(dir));
  DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .handle = TcFilterId::kHandle,
                      .priority = TcFilterId::kPriority);
  if (bpf_tc_query(&hook, &opts) != 0) return 0;
  return opts.prog_id;
}

std::vector<TcFilterEntry> list_filters(int ifindex, TcDirection dir) {
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
  req.tc.tcm_parent =
      TC_H_MAKE(TC_H_CLSACT, dir == TcDirection::kEgress ? TC_H_MIN_EGRESS : TC_H_MIN_INGRESS);
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

const TcFilterEntry* first_filter(const std::vector<TcFilterEntry>& chain) {
  for (const auto& e : chain) {
    if (e.handle != 0) return &e;
  }
  return nullptr;
}

}  // namespace tlswall::agent
