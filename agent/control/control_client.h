// The client side of the control API (agent/control/tlswall_control.thrift):
// one connection to tlswalld's control socket, typed calls, and one-line
// errors an operator can act on.
#pragma once

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "tlswall_control_types.h"

namespace tlswall::control {

class ControlClientError : public std::runtime_error {
 public:
  enum class Kind {
    kNotRunning,        // no socket, or nothing listens on it
    kUnreachable,       // no answer in time, or the connection was closed
    kPermissionDenied,  // the socket file is not ours to open
    kAccessDenied,      // the daemon refused the call (AccessDenied)
    kDaemonError,       // the daemon could not do it (ControlError)
    kProtocol,          // anything else: unknown method, undecodable reply, ...
  };
  ControlClientError(Kind kind, const std::string& message)
      : std::runtime_error(message), kind_(kind) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

class ControlClient {
 public:
  // Connects lazily, on the first call. `timeout` bounds the connect and
  // each call.
  explicit ControlClient(std::string socket_path,
                         std::chrono::milliseconds timeout = std::chrono::seconds(10));
  ~ControlClient();
  ControlClient(const ControlClient&) = delete;
  ControlClient& operator=(const ControlClient&) = delete;

  // Every call throws ControlClientError, with a one-line message:
  //   "tlswalld is not running (no socket at PATH)"
  //   "permission denied: PATH (root or group G only)"
  //   the daemon's AccessDenied / ControlError message, ...
  // After an error the connection is closed; the next call reconnects.
  void connect();
  api::PingReply ping();
  api::StatusReply status();
  std::vector<api::FlowRecord> flows(const api::FlowsQuery& query);
  api::EventsReply events(int64_t after_seq, int32_t max);
  api::PolicyShowReply policy_show();
  api::ReloadReply reload();
  api::ModeReply set_mode(const std::string& rule, const std::string& mode);
  api::TeardownReply teardown(bool open);
  void close();

  const std::string& socket_path() const { return path_; }

 private:
  struct Conn;
  template <class F>
  auto call(F&& f);

  std::string path_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<Conn> conn_;
};

}  // namespace tlswall::control
