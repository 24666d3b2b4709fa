#include "agent/watch/link_watcher.h"

#include <fnmatch.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace tlswall::agent {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kRecvBuffer = 64 * 1024;
constexpr int kDumpAttempts = 5;
// Reads per on_readable(): a flood cannot starve the rest of the loop; the
// fd stays readable and brings us back.
constexpr int kMaxReadsPerCall = 1024;

std::string errstr(int e) { return std::strerror(e); }

bool has_glob(const std::string& p) { return p.find_first_of("*?[") != std::string::npos; }

struct ParsedLink {
  int ifindex = 0;
  unsigned char family = 0;
  std::string name;
  std::string kind;
  bool up = false;
};

// Attributes of an RTM_NEWLINK/RTM_DELLINK. False when malformed.
bool parse_link(const nlmsghdr* h, ParsedLink& out) {
  if (h->nlmsg_len < NLMSG_LENGTH(sizeof(ifinfomsg))) return false;
  const auto* ifi = reinterpret_cast<const ifinfomsg*>(NLMSG_DATA(h));
  out.family = ifi->ifi_family;
  out.ifindex = ifi->ifi_index;
  out.up = (ifi->ifi_flags & IFF_UP) != 0;
  const char* p = reinterpret_cast<const char*>(ifi) + NLMSG_ALIGN(sizeof(ifinfomsg));
  const char* end = reinterpret_cast<const char*>(h) + h->nlmsg_len;
  while (p + sizeof(rtattr) <= end) {
    const auto* a = reinterpret_cast<const rtattr*>(p);
    if (a->rta_len < sizeof(rtattr) || p + a->rta_len > end) return false;
    const char* data = p + RTA_LENGTH(0);
    const size_t len = a->rta_len - RTA_LENGTH(0);
    const unsigned type = a->rta_type & NLA_TYPE_MASK;
    if (type == IFLA_IFNAME) {
      out.name.assign(data, strnlen(data, len));
    } else if (type == IFLA_LINKINFO) {
      const char* q = data;
      const char* qend = data + len;
      while (q + sizeof(rtattr) <= qend) {
        const auto* b = reinterpret_cast<const rtattr*>(q);
        if (b->rta_len < sizeof(rtattr) || q + b->rta_len > qend) break;
        if ((b->rta_type & NLA_TYPE_MASK) == IFLA_INFO_KIND) {
          const char* kd = q + RTA_LENGTH(0);
          out.kind.assign(kd, strnlen(kd, b->rta_len - RTA_LENGTH(0)));
        }
        q += RTA_ALIGN(b->rta_len);
      }
    }
    p += RTA_ALIGN(a->rta_len);
  }
  return out.ifindex > 0 && !out.name.empty();
}

// Calls fn(header) for each well-formed message in a datagram.
template <typename Fn>
void for_each_message(const char* buf, size_t n, Fn fn) {
  size_t off = 0;
  while (off + sizeof(nlmsghdr) <= n) {
    const auto* h = reinterpret_cast<const nlmsghdr*>(buf + off);
    if (h->nlmsg_len < sizeof(nlmsghdr) || h->nlmsg_len > n - off) return;
    if (!fn(h)) return;
    off += NLMSG_ALIGN(h->nlmsg_len);
  }
}

// One datagram from a netlink socket into buf; *sender is the sending
// port id (0: the kernel), *truncated whether it did not fit. Returns what
// recvmsg returns; errno on -1.
ssize_t recv_netlink(int fd, std::vector<char>& buf, uint32_t* sender, bool* truncated) {
  iovec iov{buf.data(), buf.size()};
  sockaddr_nl from{};
  msghdr msg{};
  msg.msg_name = &from;
  msg.msg_namelen = sizeof(from);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  const ssize_t n = ::recvmsg(fd, &msg, 0);
  *sender = from.nl_pid;
  *truncated = (msg.msg_flags & MSG_TRUNC) != 0;
  return n;
}

}  // namespace

const char* link_change_kind_name(LinkChange::Kind k) {
  switch (k) {
    case LinkChange::Kind::kAdded:
      return "added";
    case LinkChange::Kind::kRemoved:
      return "removed";
    case LinkChange::Kind::kRenamed:
      return "renamed";
  }
  return "unknown";
}

InterfacePatterns::InterfacePatterns(std::vector<std::string> patterns)
    : all_(std::move(patterns)) {
  for (const std::string& p : all_) {
    const bool neg = !p.empty() && p[0] == '!';
    const std::string glob = neg ? p.substr(1) : p;
    if (glob.empty()) {
      throw std::invalid_argument("interface pattern '" + p + "' is empty");
    }
    if (glob.find_first_of("/ \t\n:") != std::string::npos) {
      throw std::invalid_argument("interface pattern '" + p +
                                  "' has a character no interface name has (/, :, space)");
    }
    if (!has_glob(glob) && glob.size() >= IFNAMSIZ) {
      throw std::invalid_argument("interface name '" + glob + "' is longer than " +
                                  std::to_string(IFNAMSIZ - 1) + " bytes and can never match");
    }
    (neg ? exclude_ : include_).push_back(glob);
  }
  if (include_.empty()) {
    throw std::invalid_argument(
        "interface patterns name no interface (only exclusions, or none at all)");
  }
}

std::optional<std::string> InterfacePatterns::match(const std::string& name) const {
  for (const auto& x : exclude_) {
    if (::fnmatch(x.c_str(), name.c_str(), 0) == 0) return std::nullopt;
  }
  for (const auto& i : include_) {
    if (::fnmatch(i.c_str(), name.c_str(), 0) == 0) return i;
  }
  return std::nullopt;
}

LinkWatcher::LinkWatcher(InterfacePatterns patterns, LinkWatcherOptions options)
    : patterns_(std::move(patterns)), options_(options) {
  sock_ = OwnedFd(::socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (sock_.get() < 0) throw std::runtime_error("rtnetlink socket: " + errstr(errno));
  const int rcvbuf = options_.rcvbuf_bytes;
  // FORCE needs CAP_NET_ADMIN and ignores net.core.rmem_max.
  if (::setsockopt(sock_.get(), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) != 0) {
    (void)::setsockopt(sock_.get(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  }
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  sa.nl_groups = RTMGRP_LINK;
  if (::bind(sock_.get(), reinterpret_cast<const sockaddr*>(&sa), sizeof(sa)) != 0) {
    throw std::runtime_error("rtnetlink bind (RTMGRP_LINK): " + errstr(errno));
  }
}

std::string LinkWatcher::dump(std::map<int, Link>& out) {
  std::string why;
  for (int attempt = 0; attempt < kDumpAttempts; ++attempt) {
    out.clear();
    OwnedFd s(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
    if (s.get() < 0) return "rtnetlink socket: " + errstr(errno);
    struct {
      nlmsghdr h;
      ifinfomsg i;
    } req{};
    req.h.nlmsg_len = sizeof(req);
    req.h.nlmsg_type = RTM_GETLINK;
    req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.h.nlmsg_seq = ++dump_seq_;
    req.i.ifi_family = AF_UNSPEC;
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    if (::sendto(s.get(), &req, sizeof(req), 0, reinterpret_cast<const sockaddr*>(&kernel),
                 sizeof(kernel)) < 0) {
      return "RTM_GETLINK send: " + errstr(errno);
    }
    const Clock::time_point deadline = Clock::now() + options_.dump_timeout;
    bool done = false, interrupted = false;
    std::string error;
    std::vector<char> buf(kRecvBuffer);
    while (!done && error.empty()) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      pollfd p{s.get(), POLLIN, 0};
      const int pr = left > 0 ? ::poll(&p, 1, static_cast<int>(left)) : 0;
      if (pr < 0 && errno == EINTR) continue;
      if (pr <= 0) {
        error = "RTM_GETLINK: no answer within " + std::to_string(options_.dump_timeout.count()) +
                " ms";
        break;
      }
      uint32_t sender = 0;
      bool truncated = false;
      const ssize_t n = recv_netlink(s.get(), buf, &sender, &truncated);
      if (n < 0) {
        const int e = errno;
        if (e == EINTR) continue;
        error = "RTM_GETLINK receive: " + errstr(e);
        interrupted = e == ENOBUFS;  // overrun mid-dump: worth another attempt
        break;
      }
      if (truncated) {
        error = "RTM_GETLINK: reply truncated";
        break;
      }
      if (sender != 0) continue;
      for_each_message(buf.data(), static_cast<size_t>(n), [&](const nlmsghdr* h) {
        if (h->nlmsg_seq != req.h.nlmsg_seq) return true;  // not ours
        if (h->nlmsg_flags & NLM_F_DUMP_INTR) interrupted = true;
        if (h->nlmsg_type == NLMSG_DONE) {
          done = true;
          return false;
        }
        if (h->nlmsg_type == NLMSG_ERROR) {
          const auto* e = reinterpret_cast<const nlmsgerr*>(NLMSG_DATA(h));
          if (h->nlmsg_len >= NLMSG_LENGTH(sizeof(nlmsgerr)) && e->error != 0) {
            error = "RTM_GETLINK: " + errstr(-e->error);
          } else if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) {
            error = "RTM_GETLINK: malformed error reply";
          } else {
            done = true;  // a bare ack ends nothing we asked for, but is not an error
          }
          return false;
        }
        if (h->nlmsg_type == RTM_NEWLINK) {
          ParsedLink l;
          if (parse_link(h, l) && l.family == AF_UNSPEC) out[l.ifindex] = {l.name, l.kind, l.up};
        }
        return true;
      });
    }
    if (error.empty() && !interrupted) return "";
    why = error.empty() ? "dump interrupted by concurrent changes" : error;
    if (!interrupted) return why;  // a hard error: retrying would not help
  }
  return why + " (" + std::to_string(kDumpAttempts) + " attempts)";
}

std::vector<LinkInfo> LinkWatcher::initial_dump() {
  std::map<int, Link> fresh;
  const std::string err = dump(fresh);
  if (!err.empty()) {
    ++stats_.dump_failures;
    throw std::runtime_error("cannot list network interfaces: " + err);
  }
  ++stats_.dumps;
  view_ = std::move(fresh);
  resync_owed_ = false;
  return matching();
}

void LinkWatcher::apply_new(int ifindex, Link link, std::vector<LinkChange>& changes) {
  using K = LinkChange::Kind;
  const auto it = view_.find(ifindex);
  if (it == view_.end()) {
    if (auto p = patterns_.match(link.name)) {
      changes.push_back({K::kAdded, ifindex, link.name, "", *p});
    }
    view_.emplace(ifindex, std::move(link));
    return;
  }
  Link& old = it->second;
  if (old.name != link.name) {
    const auto was = patterns_.match(old.name);
    const auto now = patterns_.match(link.name);
    if (was && now) {
      changes.push_back({K::kRenamed, ifindex, link.name, old.name, *now});
    } else if (now) {
      changes.push_back({K::kAdded, ifindex, link.name, old.name, *now});
    } else if (was) {
      changes.push_back({K::kRemoved, ifindex, link.name, old.name, ""});
    }
  }
  old = std::move(link);
}

void LinkWatcher::apply_del(int ifindex, std::vector<LinkChange>& changes) {
  const auto it = view_.find(ifindex);
  if (it == view_.end()) return;
  if (patterns_.match(it->second.name)) {
    changes.push_back({LinkChange::Kind::kRemoved, ifindex, it->second.name, "", ""});
  }
  view_.erase(it);
}

void LinkWatcher::resync(std::vector<LinkChange>& changes) {
  std::map<int, Link> fresh;
  const std::string err = dump(fresh);
  if (!err.empty()) {
    ++stats_.dump_failures;
    resync_owed_ = true;
    resync_error_ = err;
    resync_at_ = Clock::now() + options_.resync_retry;
    return;
  }
  ++stats_.dumps;
  resync_owed_ = false;
  resync_error_.clear();
  std::vector<int> gone;
  for (const auto& [idx, l] : view_) {
    if (!fresh.count(idx)) gone.push_back(idx);
  }
  for (int idx : gone) apply_del(idx, changes);
  for (auto& [idx, l] : fresh) apply_new(idx, std::move(l), changes);
}

std::vector<LinkChange> LinkWatcher::on_readable() {
  std::vector<LinkChange> changes;
  bool overrun = false;
  std::vector<char> buf(kRecvBuffer);
  for (int reads = 0; reads < kMaxReadsPerCall; ++reads) {
    uint32_t sender = 0;
    bool truncated = false;
    const ssize_t n = recv_netlink(sock_.get(), buf, &sender, &truncated);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOBUFS) {
        // The kernel dropped notifications: our view is stale.
        overrun = true;
        continue;
      }
      break;  // EAGAIN: drained
    }
    if (truncated) {
      overrun = true;
      continue;
    }
    if (sender != 0) continue;  // only the kernel speaks for links
    for_each_message(buf.data(), static_cast<size_t>(n), [&](const nlmsghdr* h) {
      if (h->nlmsg_type == NLMSG_OVERRUN) {
        overrun = true;
        return true;
      }
      if (h->nlmsg_type != RTM_NEWLINK && h->nlmsg_type != RTM_DELLINK) return true;
      ParsedLink l;
      // AF_BRIDGE: a port joining or leaving a bridge, not a link change.
      if (!parse_link(h, l) || l.family != AF_UNSPEC) return true;
      ++stats_.messages;
      if (h->nlmsg_type == RTM_DELLINK) {
        apply_del(l.ifindex, changes);
        return true;
      }
      // A notification older than our last dump may name a link that has
      // gone since; its RTM_DELLINK is on its way or already seen.
      char name[IF_NAMESIZE];
      if (!view_.count(l.ifindex) && ::if_indextoname(l.ifindex, name) == nullptr) return true;
      apply_new(l.ifindex, {l.name, l.kind, l.up}, changes);
      return true;
    });
  }
  if (overrun) ++stats_.overruns;
  if (overrun || resync_owed_) resync(changes);
  return changes;
}

std::optional<Clock::time_point> LinkWatcher::next_deadline() const {
  if (!resync_owed_) return std::nullopt;
  return resync_at_;
}

std::vector<LinkChange> LinkWatcher::on_tick(Clock::time_point now) {
  std::vector<LinkChange> changes;
  if (resync_owed_ && now >= resync_at_) resync(changes);
  return changes;
}

std::vector<LinkInfo> LinkWatcher::matching() const {
  std::vector<LinkInfo> out;
  for (const auto& [idx, l] : view_) {
    if (auto p = patterns_.match(l.name)) out.push_back({idx, l.name, l.kind, l.up, *p});
  }
  return out;
}

std::string LinkWatcher::status() const {
  std::string pats;
  for (const auto& p : patterns_.patterns()) pats += (pats.empty() ? "" : ", ") + p;
  const size_t n = matching().size();
  std::string out;
  if (resync_owed_) {
    out = "degraded: re-dump of links failed (" + resync_error_ +
          "); retrying; the matching set may be stale; ";
  }
  out += "watching links: " + std::to_string(n) + " of " + std::to_string(view_.size()) +
         " match [" + pats + "]";
  if (stats_.overruns) {
    out += "; " + std::to_string(stats_.overruns) + " netlink overrun(s) re-dumped";
  }
  return out;
}

}  // namespace tlswall::agent
