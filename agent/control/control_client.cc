#include "agent/control/control_client.h"

#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <thrift/TApplicationException.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/protocol/TProtocolException.h>
#include <thrift/transport/TBufferTransports.h>
#include <thrift/transport/TSocket.h>
#include <thrift/transport/TTransportException.h>

#include "TlswallControl.h"
#include "agent/owned_fd.h"

namespace tlswall::control {
namespace {

using apache::thrift::TApplicationException;
using apache::thrift::protocol::TBinaryProtocol;
using apache::thrift::protocol::TProtocolException;
using apache::thrift::transport::TFramedTransport;
using apache::thrift::transport::TSocket;
using apache::thrift::transport::TTransportException;
using Kind = ControlClientError::Kind;

// Who may open the socket file, from its mode and group.
std::string who_may(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !(st.st_mode & S_IWGRP)) return "root only";
  if (const struct group* g = ::getgrgid(st.st_gid)) {
    return std::string("root or group ") + g->gr_name + " only";
  }
  return "root or group " + std::to_string(st.st_gid) + " only";
}

std::string seconds(std::chrono::milliseconds t) {
  const auto ms = t.count();
  return ms % 1000 ? std::to_string(ms) + " ms" : std::to_string(ms / 1000) + " s";
}

timeval to_timeval(std::chrono::milliseconds t) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(t.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((t.count() % 1000) * 1000);
  return tv;
}

}  // namespace

struct ControlClient::Conn {
  std::shared_ptr<TSocket> socket;
  std::shared_ptr<TFramedTransport> framed;
  std::unique_ptr<api::TlswallControlClient> client;
};

ControlClient::ControlClient(std::string socket_path, std::chrono::milliseconds timeout)
    : path_(std::move(socket_path)), timeout_(timeout) {}

ControlClient::~ControlClient() { close(); }

void ControlClient::close() {
  if (!conn_) return;
  try {
    conn_->framed->close();
  } catch (const std::exception&) {
  }
  conn_.reset();
}

void ControlClient::connect() {
  if (conn_) return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path_.size() >= sizeof(addr.sun_path)) {
    throw ControlClientError(Kind::kNotRunning, "control socket path too long: " + path_);
  }
  std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
  agent::OwnedFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) {
    throw ControlClientError(Kind::kProtocol, std::string("socket: ") + std::strerror(errno));
  }
  // A blocking connect waits for room in a full backlog up to SO_SNDTIMEO.
  const timeval tv = to_timeval(timeout_);
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  int rc;
  do {
    rc = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    switch (errno) {
      case ENOENT:
        throw ControlClientError(Kind::kNotRunning,
                                 "tlswalld is not running (no socket at " + path_ + ")");
      case ECONNREFUSED:
        throw ControlClientError(Kind::kNotRunning,
                                 "tlswalld is not running (nothing answers on " + path_ + ")");
      case EACCES:
      case EPERM:
        throw ControlClientError(Kind::kPermissionDenied,
                                 "permission denied: " + path_ + " (" + who_may(path_) + ")");
      case EAGAIN:
      case ETIMEDOUT:
        throw ControlClientError(Kind::kUnreachable, "tlswalld did not accept a connection on " +
                                                         path_ + " within " + seconds(timeout_));
      default:
        throw ControlClientError(Kind::kUnreachable, "cannot connect to tlswalld at " + path_ +
                                                         ": " + std::strerror(errno));
    }
  }
  auto c = std::make_unique<Conn>();
  c->socket = std::make_shared<TSocket>(fd.release());  // owns the fd from here
  const int ms = static_cast<int>(timeout_.count());
  c->socket->setRecvTimeout(ms);
  c->socket->setSendTimeout(ms);
  c->framed = std::make_shared<TFramedTransport>(c->socket);
  c->client =
      std::make_unique<api::TlswallControlClient>(std::make_shared<TBinaryProtocol>(c->framed));
  conn_ = std::move(c);
}

template <class F>
auto ControlClient::call(F&& f) {
  connect();
  try {
    return f(*conn_->client);
  } catch (const api::AccessDenied& e) {
    throw ControlClientError(Kind::kAccessDenied, e.message);
  } catch (const api::ControlError& e) {
    throw ControlClientError(Kind::kDaemonError, e.message);
  } catch (const TTransportException& e) {
    close();
    switch (e.getType()) {
      case TTransportException::TIMED_OUT:
        throw ControlClientError(Kind::kUnreachable, "tlswalld did not answer on " + path_ +
                                                         " within " + seconds(timeout_));
      case TTransportException::END_OF_FILE:
      case TTransportException::NOT_OPEN:
        throw ControlClientError(Kind::kUnreachable,
                                 "tlswalld closed the connection on " + path_ +
                                     " (too many clients, a request too large, or stopping)");
      default:
        throw ControlClientError(Kind::kUnreachable,
                                 "talking to tlswalld on " + path_ + ": " + e.what());
    }
  } catch (const TApplicationException& e) {
    close();
    if (e.getType() == TApplicationException::UNKNOWN_METHOD) {
      throw ControlClientError(Kind::kProtocol,
                               std::string("tlswalld does not know this call (an older "
                                           "release?): ") +
                                   e.what());
    }
    throw ControlClientError(Kind::kProtocol, std::string("tlswalld failed: ") + e.what());
  } catch (const TProtocolException& e) {
    close();
    throw ControlClientError(Kind::kProtocol,
                             std::string("undecodable reply from tlswalld: ") + e.what());
  }
}

api::PingReply ControlClient::ping() {
  return call([](api::TlswallControlClient& c) {
    api::PingReply r;
    c.ping(r);
    return r;
  });
}

api::StatusReply ControlClient::status() {
  return call([](api::TlswallControlClient& c) {
    api::StatusReply r;
    c.status(r);
    return r;
  });
}

std::vector<api::FlowRecord> ControlClient::flows(const api::FlowsQuery& query) {
  return call([&](api::TlswallControlClient& c) {
    std::vector<api::FlowRecord> r;
    c.flows(r, query);
    return r;
  });
}

api::EventsReply ControlClient::events(int64_t after_seq, int32_t max) {
  return call([&](api::TlswallControlClient& c) {
    api::EventsReply r;
    c.events(r, after_seq, max);
    return r;
  });
}

api::PolicyShowReply ControlClient::policy_show() {
  return call([](api::TlswallControlClient& c) {
    api::PolicyShowReply r;
    c.policy_show(r);
    return r;
  });
}

api::ReloadReply ControlClient::reload() {
  return call([](api::TlswallControlClient& c) {
    api::ReloadReply r;
    c.reload(r);
    return r;
  });
}

api::ModeReply ControlClient::set_mode(const std::string& rule, const std::string& mode) {
  return call([&](api::TlswallControlClient& c) {
    api::ModeReply r;
    c.set_mode(r, rule, mode);
    return r;
  });
}

api::TeardownReply ControlClient::teardown(bool open) {
  return call([&](api::TlswallControlClient& c) {
    api::TeardownReply r;
    c.teardown(r, open);
    return r;
  });
}

}  // namespace tlswall::control
