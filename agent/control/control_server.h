// The daemon's side of the control API (agent/control/tlswall_control.thrift):
// a Unix stream socket serving the TlswallControl service, framed transport
// and binary protocol, non-blocking and single-threaded. The daemon's event
// loop owns all state, so the server never runs a thread of its own: it
// exposes one fd for the daemon's epoll and serves from dispatch().
//
//   ControlServer server(options, handler, on_audit);
//   epoll_ctl(ep, EPOLL_CTL_ADD, server.fd(), {EPOLLIN, ...});
//   ... when server.fd() is readable: server.dispatch();
//   ... before exiting after a teardown call: server.flush(500ms);
//
// Access is decided here, in one place, by the method name in the message
// header before any handler code runs (see kMethods in control_server.cc):
// read-only methods for root and members of the control group, methods that
// change state for root (uid 0) only; anything else is answered with
// AccessDenied.
// Every call of a state-changing method, allowed or denied, is reported to
// the audit hook.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "TlswallControl.h"
#include "agent/owned_fd.h"

namespace tlswall::control {

// Who is on the other end of a control connection (SO_PEERCRED and
// SO_PEERGROUPS at connect time; comm from /proc/<pid>/comm).
struct Peer {
  uid_t uid = static_cast<uid_t>(-1);
  gid_t gid = static_cast<gid_t>(-1);
  pid_t pid = 0;
  std::string comm;              // "" if the process is gone
  bool in_group = false;         // gid or a supplementary group is the control group
  std::string describe() const;  // "uid 0 pid 123 (tlswallctl)"
};

// The daemon implements the TlswallControl service through this interface
// (tests use a fake). Methods run on the daemon's thread, inside
// ControlServer::dispatch(), only for callers the server allowed; they may
// throw api::ControlError (and AccessDenied for finer checks of their own).
class ControlHandler : public api::TlswallControlIf {
 public:
  // The caller of the call being served; valid inside a handler method.
  const Peer& current_peer() const { return current_peer_; }

 private:
  friend class ControlCalls;
  Peer current_peer_;
};

// One state-changing call, allowed or denied, for the audit log.
struct AuditRecord {
  Peer peer;
  std::string method;  // "reload", "set_mode", "teardown"
  std::string args;    // e.g. "rule=web-tls mode=enforce", "" if none
  bool allowed = false;
  // "ok: ...", "denied: ...", "error: ..." (ControlError) or "failed: ..."
  // (any other failure, e.g. the handler threw something undeclared).
  std::string result;
};

struct ControlServerOptions {
  std::string path;   // the socket; its directory is checked, created 0755 if missing
  std::string group;  // "" = root only (socket 0600), else 0660 root:group
  // The uid allowed everything: 0 (root) in the daemon; unit tests running
  // unprivileged use their own.
  uid_t privileged_uid = 0;
  uint32_t max_frame_bytes = 1u << 20;   // a larger request closes the connection
  uint32_t max_reply_bytes = 16u << 20;  // a larger reply becomes an error reply
  size_t max_connections = 16;           // more are accepted and closed at once
  // A connection must complete each request (and take each reply) within
  // this time of the previous exchange (or of connecting), else it is
  // closed: idle and slow clients alike.
  std::chrono::milliseconds timeout{5000};
};

using AuditHook = std::function<void(const AuditRecord&)>;

// What the server does with the bytes a connection sent, without sockets:
// frame splitting, request decoding, the access decision, the call, the
// audit record. The server owns one; the control request fuzzer
// (tests/fuzz/) drives one directly with arbitrary bytes.
class ControlCalls {
 public:
  // `handler` is borrowed and must outlive this. `has_group`: a control
  // group is configured (membership is each Peer's in_group, known when it
  // connected).
  ControlCalls(const ControlServerOptions& options, bool has_group, ControlHandler& handler,
               AuditHook on_audit);
  ~ControlCalls();
  ControlCalls(const ControlCalls&) = delete;
  ControlCalls& operator=(const ControlCalls&) = delete;

  // Frames are a 4-byte big-endian length, then that many bytes. For the
  // `n` bytes at `in`: the length of the first frame's body if it is all
  // there, 0 if more bytes are needed, -1 if the frame is empty or larger
  // than max_frame_bytes (the connection is closed).
  int64_t frame_length(const char* in, size_t n) const;

  // Serves one request frame (its body) from `peer`: the reply to send, or
  // "" if the frame is not a readable call (the connection is closed).
  // Never throws.
  std::string serve(const Peer& peer, const std::string& frame);

  uint64_t calls() const { return calls_; }
  uint64_t denied() const { return denied_; }

 private:
  class DenyingHandler;

  ControlServerOptions options_;
  bool has_group_;
  ControlHandler& handler_;
  AuditHook on_audit_;
  std::unique_ptr<DenyingHandler> denier_;
  std::unique_ptr<api::TlswallControlProcessor> processor_;
  std::unique_ptr<api::TlswallControlProcessor> deny_processor_;
  uint64_t calls_ = 0;
  uint64_t denied_ = 0;
};

class ControlServer {
 public:
  using AuditHook = control::AuditHook;

  // Binds options.path. Refuses (std::runtime_error, one line naming the
  // path, what is wrong and the fix) if its directory is untrusted
  // (agent/path_trust.h: a symlink, another user's, writable by others), if
  // a symlink, a non-socket or another user's socket is at the path, or if
  // another daemon answers there; replaces a stale socket of root's (or the
  // daemon's own user). `handler` is borrowed and must outlive the server.
  ControlServer(const ControlServerOptions& options, ControlHandler& handler, AuditHook on_audit);
  ~ControlServer();  // closes every connection, unlinks the socket it created
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Readable (EPOLLIN, level-triggered) whenever dispatch() has work:
  // a connection to accept, bytes to read or write, a timeout to enforce.
  int fd() const { return epoll_.get(); }
  const std::string& path() const { return options_.path; }

  // Does all the work pending now and returns; never blocks, never throws.
  void dispatch();

  // Blocks up to `timeout` until every reply written so far is sent (for
  // the last reply before the daemon exits). True if all were.
  bool flush(std::chrono::milliseconds timeout);

  struct Stats {
    uint64_t accepted = 0;
    uint64_t refused_busy = 0;  // over max_connections
    uint64_t calls = 0;
    uint64_t denied = 0;
    uint64_t closed_timeout = 0;
    uint64_t closed_bad_frame = 0;  // oversize, empty or unparsable
  };
  const Stats& stats() const { return stats_; }
  size_t connections() const { return conns_.size(); }

 private:
  struct Conn;

  void accept_pending();
  void on_event(uint64_t id, uint32_t events);
  void read_some(Conn& c);
  void serve_frames(Conn& c);
  void write_some(Conn& c);
  void update_interest(Conn& c);
  void close_conn(uint64_t id);
  void enforce_timeouts();
  void arm_timer();

  ControlServerOptions options_;
  gid_t group_gid_ = static_cast<gid_t>(-1);
  bool has_group_ = false;
  agent::OwnedFd listen_;
  agent::OwnedFd epoll_;
  agent::OwnedFd timer_;
  std::unique_ptr<ControlCalls> calls_;
  std::map<uint64_t, std::unique_ptr<Conn>> conns_;
  uint64_t next_id_ = 16;  // ids below are the listen socket and the timer
  Stats stats_;
  bool created_ = false;
};

}  // namespace tlswall::control
