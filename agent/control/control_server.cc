#include "agent/control/control_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <vector>

#include <thrift/TApplicationException.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/transport/TBufferTransports.h>

#include "agent/path_trust.h"
#include "logging/log.h"

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59  // Linux 4.13
#endif

namespace tlswall::control {
namespace {

using agent::OwnedFd;
using apache::thrift::TApplicationException;
using apache::thrift::TException;
using apache::thrift::protocol::TBinaryProtocol;
using apache::thrift::protocol::TMessageType;
using apache::thrift::transport::TMemoryBuffer;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kListenId = 1;
constexpr uint64_t kTimerId = 2;
// Replies waiting to be sent before a connection's next request is served.
constexpr size_t kOutHighWater = 1u << 20;

// Who may call what. The one place access is decided: a method not listed
// is root-only (fail closed); `audited` methods change state. A method added
// to the IDL does not compile until DenyingHandler has it, a reminder to
// list it here.
enum class Access { kGroup, kRoot };
struct MethodAccess {
  const char* name;
  Access access;
  bool audited;
};
// clang-format off
constexpr MethodAccess kMethods[] = {
    {"ping",        Access::kGroup, false},
    {"status",      Access::kGroup, false},
    {"flows",       Access::kGroup, false},
    {"events",      Access::kGroup, false},
    {"policy_show", Access::kGroup, false},
    {"reload",      Access::kRoot,  true},
    {"set_mode",    Access::kRoot,  true},
    {"teardown",    Access::kRoot,  true},
};
// clang-format on

MethodAccess access_of(const std::string& name) {
  for (const auto& m : kMethods) {
    if (name == m.name) return m;
  }
  return {nullptr, Access::kRoot, false};
}

std::string errstr() { return std::strerror(errno); }

sockaddr_un make_addr(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof(a.sun_path)) {
    throw std::runtime_error("control socket path too long: " + path);
  }
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return a;
}

spdlog::logger& log() { return logging::get(logging::Subsystem::kControl); }

// At most a burst of warnings a second about misbehaving or refused
// clients: a local user must not be able to flood the daemon's log.
bool warn_allowed() {
  static Clock::time_point window;
  static int used = 0;
  const auto now = Clock::now();
  if (now - window > std::chrono::seconds(1)) {
    window = now;
    used = 0;
  }
  return ++used <= 20;
}

std::string read_comm(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/comm");
  std::string comm;
  std::getline(f, comm);
  return comm;
}

// The peer's supplementary groups as of connect(): SO_PEERGROUPS, or, on a
// kernel without it, the group database for the peer's user.
std::vector<gid_t> peer_groups(int fd, uid_t uid, gid_t gid) {
  std::vector<gid_t> groups(64);
  socklen_t len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
  int rc = ::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len);
  if (rc != 0 && errno == ERANGE) {
    groups.resize(len / sizeof(gid_t));
    len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    rc = ::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len);
  }
  if (rc == 0) {
    groups.resize(len / sizeof(gid_t));
    return groups;
  }
  if (errno != ENOPROTOOPT) return {};
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) != 0 || !found) return {};
  int n = static_cast<int>(groups.size());
  if (::getgrouplist(found->pw_name, gid, groups.data(), &n) < 0) {
    groups.resize(static_cast<size_t>(n));
    if (::getgrouplist(found->pw_name, gid, groups.data(), &n) < 0) return {};
  }
  groups.resize(static_cast<size_t>(n));
  return groups;
}

Peer read_peer(int fd, bool has_group, gid_t group) {
  Peer p;
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return p;  // denied below
  p.uid = cred.uid;
  p.gid = cred.gid;
  p.pid = cred.pid;
  p.comm = read_comm(cred.pid);
  if (has_group) {
    const auto groups = peer_groups(fd, cred.uid, cred.gid);
    p.in_group =
        cred.gid == group || std::find(groups.begin(), groups.end(), group) != groups.end();
  }
  return p;
}

// A protocol reading `bytes` in place (they must outlive it). Strict: a
// request must carry the versioned header every Thrift client writes (the
// unversioned form would read its first four bytes as a name length), and
// no string or container may claim more than the frame holds, so a small
// request cannot make the daemon allocate gigabytes.
std::shared_ptr<TBinaryProtocol> reader(const std::string& bytes) {
  auto buf =
      std::make_shared<TMemoryBuffer>(reinterpret_cast<uint8_t*>(const_cast<char*>(bytes.data())),
                                      static_cast<uint32_t>(bytes.size()), TMemoryBuffer::OBSERVE);
  const auto limit = static_cast<int32_t>(bytes.size());
  return std::make_shared<TBinaryProtocol>(buf, limit, limit, /*strict_read=*/true,
                                           /*strict_write=*/true);
}

// What a state-changing call asked for, for the audit record.
std::string audit_args(const std::string& method, const std::string& frame) {
  try {
    const auto p = reader(frame);
    std::string name;
    TMessageType type;
    int32_t seqid;
    p->readMessageBegin(name, type, seqid);
    if (method == "set_mode") {
      api::TlswallControl_set_mode_args a;
      a.read(p.get());
      return "rule=" + a.rule + " mode=" + a.mode;
    }
    if (method == "teardown") {
      api::TlswallControl_teardown_args a;
      a.read(p.get());
      return std::string("open=") + (a.open ? "true" : "false");
    }
  } catch (const TException& e) {
    return std::string("(unreadable: ") + e.what() + ")";
  }
  return "";
}

template <class Result, class Ok>
std::string summarize(TBinaryProtocol& p, Ok ok) {
  Result r;
  r.read(&p);
  if (r.__isset.denied) return "denied: " + r.denied.message;
  if (r.__isset.error) return "error: " + r.error.message;
  if (r.__isset.success) return ok(r.success);
  return "failed: empty reply";
}

// What became of a state-changing call, read back from its reply.
std::string audit_result(const std::string& method, const std::string& reply) {
  try {
    const auto rp = reader(reply);
    TBinaryProtocol& p = *rp;
    std::string name;
    TMessageType type;
    int32_t seqid;
    p.readMessageBegin(name, type, seqid);
    if (type == apache::thrift::protocol::T_EXCEPTION) {
      TApplicationException x;
      x.read(&p);
      return std::string("failed: ") + x.what();
    }
    if (method == "reload") {
      return summarize<api::TlswallControl_reload_result>(p, [](const api::ReloadReply& r) {
        if (!r.ok) return "rejected: " + r.error;
        return std::string(r.changed ? "ok: " : "ok (unchanged): ") + "generation " +
               std::to_string(r.generation) + " version " + r.version + " hash " + r.hash;
      });
    }
    if (method == "set_mode") {
      return summarize<api::TlswallControl_set_mode_result>(p, [](const api::ModeReply& r) {
        std::string s = "ok: " + std::to_string(r.changed.size()) + " rule(s) changed";
        for (const auto& c : r.changed) {
          s += (&c == &r.changed.front() ? ": " : ", ") + c.rule + " " + c.previous_mode + "->" +
               c.mode + (c.overridden ? " (override)" : "");
        }
        return s;
      });
    }
    if (method == "teardown") {
      return summarize<api::TlswallControl_teardown_result>(
          p, [](const api::TeardownReply& r) { return "ok: " + r.message; });
    }
  } catch (const TException& e) {
    return std::string("(unreadable reply: ") + e.what() + ")";
  }
  return "ok";
}

// An exception reply of the kind the generated processor writes.
std::string application_error(const std::string& method, int32_t seqid, const std::string& what) {
  auto buf = std::make_shared<TMemoryBuffer>();
  TBinaryProtocol p(buf);
  TApplicationException x(TApplicationException::INTERNAL_ERROR, what);
  p.writeMessageBegin(method, apache::thrift::protocol::T_EXCEPTION, seqid);
  x.write(&p);
  p.writeMessageEnd();
  return buf->getBufferAsString();
}

}  // namespace

std::string Peer::describe() const {
  return "uid " + std::to_string(static_cast<long>(uid)) + " pid " + std::to_string(pid) +
         (comm.empty() ? "" : " (" + comm + ")");
}

// Answers every call with AccessDenied: the processor for callers who may
// not make the call they sent (the generated processor then writes the
// declared exception with the right method name and sequence id).
class ControlCalls::DenyingHandler : public api::TlswallControlIf {
 public:
  std::string message;

  void ping(api::PingReply&) override { deny(); }
  void status(api::StatusReply&) override { deny(); }
  void flows(std::vector<api::FlowRecord>&, const api::FlowsQuery&) override { deny(); }
  void events(api::EventsReply&, int64_t, int32_t) override { deny(); }
  void policy_show(api::PolicyShowReply&) override { deny(); }
  void reload(api::ReloadReply&) override { deny(); }
  void set_mode(api::ModeReply&, const std::string&, const std::string&) override { deny(); }
  void teardown(api::TeardownReply&, bool) override { deny(); }

 private:
  [[noreturn]] void deny() const {
    api::AccessDenied e;
    e.message = message;
    throw e;
  }
};

struct ControlServer::Conn {
  uint64_t id = 0;
  OwnedFd fd;
  Peer peer;
  std::string in;  // received, not yet served (from in_off)
  size_t in_off = 0;
  std::string out;  // framed replies not yet sent (from out_off)
  size_t out_off = 0;
  bool read_closed = false;  // the peer sent EOF
  bool dead = false;         // close at the next opportunity
  uint32_t interest = 0;
  Clock::time_point deadline;

  size_t in_pending() const { return in.size() - in_off; }
  size_t out_pending() const { return out.size() - out_off; }
};

ControlServer::ControlServer(const ControlServerOptions& options, ControlHandler& handler,
                             AuditHook on_audit)
    : options_(options) {
  const std::string& path = options_.path;
  const sockaddr_un addr = make_addr(path);
  if (!options_.group.empty()) {
    struct group* g = ::getgrnam(options_.group.c_str());
    if (!g) throw std::runtime_error("control group '" + options_.group + "': no such group");
    group_gid_ = g->gr_gid;
    has_group_ = true;
  }
  // The directory is checked (and made) like every path the daemon owns
  // (agent/path_trust.h); the socket is then handled relative to its fd,
  // never through a symlink. A stale socket of root's (a daemon that died)
  // is replaced; anything else there is refused, another user's socket too.
  std::string name;
  const OwnedFd dirfd = agent::open_socket_dir(path, &name);
  struct stat st {};
  if (::fstatat(dirfd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    OwnedFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (probe.get() >= 0 &&
        ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0) {
      throw std::runtime_error("another tlswalld is already answering on " + path);
    }
    ::unlinkat(dirfd.get(), name.c_str(), 0);  // stale socket of a daemon that died
  }
  listen_ = OwnedFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (listen_.get() < 0) throw std::runtime_error("control socket: " + errstr());
  // No umask() around bind(): it is process-wide and the daemon has other
  // threads creating files. The mode is set before listen(); until then no
  // one can connect, and the per-call check below does not rely on it.
  if (::bind(listen_.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    throw std::runtime_error("cannot bind control socket " + path + ": " + errstr());
  }
  created_ = true;
  auto fail = [&](const std::string& what) {
    const std::string e = errstr();
    ::unlink(path.c_str());
    created_ = false;
    throw std::runtime_error(what + ": " + e);
  };
  // Relative to the checked directory (nobody else can write there), and
  // only on the socket bind() made, never through a symlink.
  struct stat bound {};
  if (::fstatat(dirfd.get(), name.c_str(), &bound, AT_SYMLINK_NOFOLLOW) != 0 ||
      !S_ISSOCK(bound.st_mode) || bound.st_uid != ::geteuid()) {
    fail("control socket " + path + " is not the socket just bound");
  }
  if (has_group_ &&
      ::fchownat(dirfd.get(), name.c_str(), 0, group_gid_, AT_SYMLINK_NOFOLLOW) != 0) {
    fail("cannot give group '" + options_.group + "' access to " + path);
  }
  if (::fchmodat(dirfd.get(), name.c_str(), has_group_ ? 0660 : 0600, 0) != 0) {
    fail("cannot chmod " + path);
  }
  if (::listen(listen_.get(), 64) != 0) fail("cannot listen on " + path);
  epoll_ = OwnedFd(::epoll_create1(EPOLL_CLOEXEC));
  timer_ = OwnedFd(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (epoll_.get() < 0 || timer_.get() < 0) fail("control event loop");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenId;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, listen_.get(), &ev) != 0) fail("epoll_ctl");
  ev.data.u64 = kTimerId;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, timer_.get(), &ev) != 0) fail("epoll_ctl");

  calls_ = std::make_unique<ControlCalls>(options_, has_group_, handler, std::move(on_audit));
}

ControlServer::~ControlServer() {
  conns_.clear();
  if (created_) ::unlink(options_.path.c_str());
}

void ControlServer::dispatch() {
  epoll_event evs[32];
  const int n = ::epoll_wait(epoll_.get(), evs, 32, 0);
  for (int i = 0; i < n; ++i) {
    const uint64_t id = evs[i].data.u64;
    if (id == kListenId) {
      accept_pending();
    } else if (id == kTimerId) {
      uint64_t ticks;
      (void)!::read(timer_.get(), &ticks, sizeof(ticks));
    } else {
      on_event(id, evs[i].events);
    }
  }
  enforce_timeouts();
  arm_timer();
}

void ControlServer::accept_pending() {
  // Bounded, so a flood of connections cannot starve the daemon's loop;
  // the listen fd stays readable for the next dispatch().
  for (int i = 0; i < 64; ++i) {
    OwnedFd fd(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (fd.get() < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && warn_allowed()) log().warn("control socket accept: {}", errstr());
      return;
    }
    if (conns_.size() >= options_.max_connections) {
      ++stats_.refused_busy;
      if (warn_allowed()) {
        log().warn("control socket: {} connections open, refusing {}", conns_.size(),
                   read_peer(fd.get(), false, 0).describe());
      }
      continue;  // closed: the client sees EOF at once rather than waiting
    }
    auto c = std::make_unique<Conn>();
    c->id = next_id_++;
    c->peer = read_peer(fd.get(), has_group_, group_gid_);
    c->fd = std::move(fd);
    c->deadline = Clock::now() + options_.timeout;
    c->interest = EPOLLIN;
    epoll_event ev{};
    ev.events = c->interest;
    ev.data.u64 = c->id;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, c->fd.get(), &ev) != 0) {
      if (warn_allowed()) log().warn("control socket: epoll_ctl: {}", errstr());
      continue;
    }
    ++stats_.accepted;
    log().debug("control connection {} from {}", c->id, c->peer.describe());
    conns_.emplace(c->id, std::move(c));
  }
}

void ControlServer::on_event(uint64_t id, uint32_t events) {
  const auto it = conns_.find(id);
  if (it == conns_.end()) return;
  Conn& c = *it->second;
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) read_some(c);
  serve_frames(c);
  write_some(c);
  if (c.dead || (c.read_closed && c.out_pending() == 0)) {
    close_conn(id);
  } else {
    update_interest(c);
  }
}

void ControlServer::read_some(Conn& c) {
  // Never hold more than one whole request beyond what is being served.
  const size_t cap = 4 + size_t{options_.max_frame_bytes};
  char buf[65536];
  while (!c.read_closed && !c.dead && c.in_pending() < cap) {
    const ssize_t n = ::recv(c.fd.get(), buf, std::min(sizeof(buf), cap - c.in_pending()), 0);
    if (n > 0) {
      c.in.append(buf, static_cast<size_t>(n));
      serve_frames(c);
      write_some(c);
    } else if (n == 0) {
      c.read_closed = true;
    } else if (errno == EINTR) {
      continue;
    } else {
      if (errno != EAGAIN) c.dead = true;  // reset by the peer
      return;
    }
  }
}

void ControlServer::serve_frames(Conn& c) {
  while (!c.dead && c.out_pending() < kOutHighWater && c.in_pending() >= 4) {
    const int64_t len = calls_->frame_length(c.in.data() + c.in_off, c.in_pending());
    if (len < 0) {
      uint32_t be;
      std::memcpy(&be, c.in.data() + c.in_off, 4);
      ++stats_.closed_bad_frame;
      if (warn_allowed()) {
        log().warn("control: closing connection from {}: request frame of {} bytes (limit {})",
                   c.peer.describe(), ntohl(be), options_.max_frame_bytes);
      }
      c.dead = true;
      return;
    }
    if (len == 0) break;
    const std::string frame = c.in.substr(c.in_off + 4, static_cast<size_t>(len));
    c.in_off += 4 + static_cast<size_t>(len);
    const std::string reply = calls_->serve(c.peer, frame);
    stats_.calls = calls_->calls();
    stats_.denied = calls_->denied();
    if (reply.empty()) {
      ++stats_.closed_bad_frame;
      c.dead = true;
      return;
    }
    const uint32_t out_be = htonl(static_cast<uint32_t>(reply.size()));
    c.out.append(reinterpret_cast<const char*>(&out_be), 4);
    c.out.append(reply);
    c.deadline = Clock::now() + options_.timeout;
  }
  if (c.in_off == c.in.size()) {
    c.in.clear();
    c.in_off = 0;
  } else if (c.in_off > 65536) {
    c.in.erase(0, c.in_off);
    c.in_off = 0;
  }
}

ControlCalls::ControlCalls(const ControlServerOptions& options, bool has_group,
                           ControlHandler& handler, AuditHook on_audit)
    : options_(options), has_group_(has_group), handler_(handler), on_audit_(std::move(on_audit)) {
  denier_ = std::make_unique<DenyingHandler>();
  // Non-owning: the handler and the denier outlive the processors.
  processor_ = std::make_unique<api::TlswallControlProcessor>(
      std::shared_ptr<api::TlswallControlIf>(&handler_, [](api::TlswallControlIf*) {}));
  deny_processor_ = std::make_unique<api::TlswallControlProcessor>(
      std::shared_ptr<api::TlswallControlIf>(denier_.get(), [](api::TlswallControlIf*) {}));
}

ControlCalls::~ControlCalls() = default;

int64_t ControlCalls::frame_length(const char* in, size_t n) const {
  if (n < 4) return 0;
  uint32_t be;
  std::memcpy(&be, in, 4);
  const uint32_t len = ntohl(be);
  if (len == 0 || len > options_.max_frame_bytes) return -1;
  if (n < 4 + size_t{len}) return 0;
  return len;
}

std::string ControlCalls::serve(const Peer& peer, const std::string& frame) {
  std::string method;
  TMessageType type;
  int32_t seqid = 0;
  try {
    reader(frame)->readMessageBegin(method, type, seqid);
  } catch (const TException& e) {
    if (warn_allowed()) {
      log().warn("control: closing connection from {}: unreadable request: {}", peer.describe(),
                 e.what());
    }
    return "";
  }
  // The type is the low byte of the version word the strict read just
  // accepted (frame[3]). Read from the bytes: Thrift stores whatever byte
  // came into `type`, and loading an enum outside its values is undefined
  // behaviour (found by tests/fuzz).
  (void)type;
  const int type_byte = static_cast<uint8_t>(frame[3]);
  if (type_byte != apache::thrift::protocol::T_CALL) {
    if (warn_allowed()) {
      log().warn("control: closing connection from {}: message type {} is not a call",
                 peer.describe(), type_byte);
    }
    return "";
  }
  const MethodAccess access = access_of(method);
  bool allowed = peer.uid == options_.privileged_uid;
  std::string why;
  if (!allowed && access.access == Access::kGroup) {
    allowed = peer.in_group;
    if (!allowed) {
      why = has_group_ ? "only root and group '" + options_.group + "' may use the control socket"
                       : "only root may use the control socket";
    }
  } else if (!allowed) {
    why = method + " changes the daemon's state: root only";
  }
  ++calls_;
  if (!allowed) {
    ++denied_;
    denier_->message = "permission denied: " + why;
    if (!access.audited && warn_allowed()) {
      log().warn("control: denied {} to {}: {}", method, peer.describe(), why);
    }
  }

  const auto in = reader(frame);
  auto out_buf = std::make_shared<TMemoryBuffer>();
  auto out = std::make_shared<TBinaryProtocol>(out_buf);
  handler_.current_peer_ = peer;
  bool processed = false;
  try {
    processed = (allowed ? *processor_ : *deny_processor_).process(in, out, nullptr);
  } catch (const TException& e) {
    // Arguments that do not decode: the handler never ran.
    if (warn_allowed()) {
      log().warn("control: closing connection from {}: bad {} request: {}", peer.describe(), method,
                 e.what());
    }
  }
  handler_.current_peer_ = Peer{};
  if (!processed) return "";
  std::string reply = out_buf->getBufferAsString();
  if (reply.size() > options_.max_reply_bytes) {
    log().error("control: {} reply of {} bytes exceeds the {} byte limit", method, reply.size(),
                options_.max_reply_bytes);
    reply = application_error(
        method, seqid,
        method + ": reply too large (" + std::to_string(reply.size()) + " bytes); ask for less");
  }
  if (access.audited) {
    AuditRecord a;
    a.peer = peer;
    a.method = method;
    a.args = audit_args(method, frame);
    a.allowed = allowed;
    a.result = audit_result(method, reply);
    const std::string call = a.args.empty() ? method : method + " " + a.args;
    (allowed ? log().info("control: {} by {}: {}", call, peer.describe(), a.result)
             : log().warn("control: {} by {}: {}", call, peer.describe(), a.result));
    if (on_audit_) {
      try {
        on_audit_(a);
      } catch (const std::exception& e) {
        log().error("control: audit hook failed for {}: {}", method, e.what());
      }
    }
  }
  return reply;
}

void ControlServer::write_some(Conn& c) {
  while (!c.dead && c.out_pending() > 0) {
    const ssize_t n =
        ::send(c.fd.get(), c.out.data() + c.out_off, c.out_pending(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c.out_off += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      if (n < 0 && errno != EAGAIN) c.dead = true;
      return;
    }
  }
  if (c.out_pending() == 0 && !c.out.empty()) {
    c.out.clear();
    c.out_off = 0;
    c.deadline = Clock::now() + options_.timeout;
    serve_frames(c);  // requests held back while the replies were pending
    if (c.out_pending() > 0) write_some(c);
  }
}

void ControlServer::update_interest(Conn& c) {
  uint32_t want = 0;
  if (!c.read_closed && c.out_pending() < kOutHighWater &&
      c.in_pending() < 4 + size_t{options_.max_frame_bytes}) {
    want |= EPOLLIN;
  }
  if (c.out_pending() > 0) want |= EPOLLOUT;
  if (want == c.interest) return;
  epoll_event ev{};
  ev.events = want;
  ev.data.u64 = c.id;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev) != 0) {
    c.dead = true;
    close_conn(c.id);
    return;
  }
  c.interest = want;
}

void ControlServer::close_conn(uint64_t id) {
  const auto it = conns_.find(id);
  if (it == conns_.end()) return;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, it->second->fd.get(), nullptr);
  conns_.erase(it);  // closes the fd
}

void ControlServer::enforce_timeouts() {
  const auto now = Clock::now();
  std::vector<uint64_t> expired;
  for (const auto& [id, c] : conns_) {
    if (now >= c->deadline) expired.push_back(id);
  }
  for (const uint64_t id : expired) {
    ++stats_.closed_timeout;
    const Conn& c = *conns_.at(id);
    if (c.in_pending() > 0 || c.out_pending() > 0) {
      if (warn_allowed()) {
        log().warn("control: closing connection from {}: no complete exchange in {} ms",
                   c.peer.describe(), options_.timeout.count());
      }
    } else {
      log().debug("control: closing idle connection {} from {}", id, c.peer.describe());
    }
    close_conn(id);
  }
}

void ControlServer::arm_timer() {
  itimerspec its{};
  if (!conns_.empty()) {
    Clock::time_point first = Clock::time_point::max();
    for (const auto& [id, c] : conns_) first = std::min(first, c->deadline);
    // steady_clock is CLOCK_MONOTONIC; +1 ms so the deadline has passed.
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                        first.time_since_epoch() + std::chrono::milliseconds(1))
                        .count();
    its.it_value.tv_sec = static_cast<time_t>(ns / 1000000000);
    its.it_value.tv_nsec = static_cast<long>(ns % 1000000000);
  }
  ::timerfd_settime(timer_.get(), TFD_TIMER_ABSTIME, &its, nullptr);
}

bool ControlServer::flush(std::chrono::milliseconds timeout) {
  const auto end = Clock::now() + timeout;
  for (;;) {
    std::vector<pollfd> fds;
    for (auto& [id, c] : conns_) {
      if (c->dead) continue;
      write_some(*c);
      if (c->out_pending() > 0 && !c->dead) {
        fds.push_back({c->fd.get(), POLLOUT, 0});
      }
    }
    if (fds.empty()) return true;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
    if (left.count() <= 0) return false;
    if (::poll(fds.data(), fds.size(), static_cast<int>(left.count())) < 0 && errno != EINTR) {
      return false;
    }
  }
}

}  // namespace tlswall::control
