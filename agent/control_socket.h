// The local control channel between tlswalld and tlswallctl: a Unix stream
// socket, one request line per connection, answered with a status line
// ("ok" or "error: ...") and a body. Access: the socket file is root-only
// (or root + a configured group); calls that change state are checked again
// against the peer's uid (SO_PEERCRED) and allowed for root only.
// (Issue 3 replaces this framing with a Thrift service.)
#pragma once

#include <functional>
#include <string>

#include "agent/owned_fd.h"

namespace tlswall::agent {

struct ControlRequest {
  std::string command;  // e.g. "status json", "reload"
  uid_t uid = static_cast<uid_t>(-1);
  pid_t pid = 0;
};

struct ControlReply {
  bool ok = true;
  std::string body;  // or the error message when !ok
};

class ControlServer {
 public:
  // Binds `path` (creating its directory 0755), mode 0600 or 0660 with
  // `group`. Refuses to start if another daemon answers on `path`; removes
  // a stale socket file. Throws std::runtime_error.
  ControlServer(const std::string& path, const std::string& group);
  ~ControlServer();  // closes and unlinks the socket it created
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }
  // Accepts and serves one pending connection (call when fd() is readable).
  // A slow or silent client is cut off after a short timeout.
  void serve_one(const std::function<ControlReply(const ControlRequest&)>& handler);

 private:
  std::string path_;
  OwnedFd fd_;
};

// Client side: sends `command`, returns the reply. Throws std::runtime_error
// if the daemon cannot be reached.
ControlReply control_call(const std::string& socket_path, const std::string& command);

}  // namespace tlswall::agent
