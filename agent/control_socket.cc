#include "agent/control_socket.h"

#include <grp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "agent/owned_fd.h"
#include "logging/log.h"

namespace tlswall::agent {
namespace {

constexpr size_t kMaxRequest = 4096;
constexpr int kIoTimeoutMs = 1000;

sockaddr_un make_addr(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof(a.sun_path)) {
    throw std::runtime_error("control socket path too long: " + path);
  }
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return a;
}

std::string errstr() { return std::strerror(errno); }

bool write_all(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, kIoTimeoutMs) <= 0) return false;
    const ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return false;
    }
    off += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

ControlServer::ControlServer(const std::string& path, const std::string& group) : path_(path) {
  const auto dir = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!dir.empty()) {
    std::filesystem::create_directories(dir, ec);
    if (ec) throw std::runtime_error("cannot create " + dir.string() + ": " + ec.message());
  }
  const sockaddr_un addr = make_addr(path);
  {
    OwnedFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (probe.get() >= 0 &&
        ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0) {
      throw std::runtime_error("another tlswalld is already answering on " + path);
    }
  }
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      throw std::runtime_error("refusing to replace " + path +
                               ": it exists and is not a socket (check [control] socket)");
    }
    ::unlink(path.c_str());  // stale socket of a daemon that died
  }
  // fd_ is an OwnedFd member: a throw below closes it.
  fd_ = OwnedFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd_.get() < 0) throw std::runtime_error("control socket: " + errstr());
  const mode_t old = ::umask(0177);
  const int rc = ::bind(fd_.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  ::umask(old);
  if (rc != 0) throw std::runtime_error("cannot bind control socket " + path + ": " + errstr());
  if (!group.empty()) {
    struct group* g = ::getgrnam(group.c_str());
    if (!g || ::chown(path.c_str(), 0, g->gr_gid) != 0 || ::chmod(path.c_str(), 0660) != 0) {
      const std::string e = g ? ": " + errstr() : ": no such group";
      ::unlink(path.c_str());
      throw std::runtime_error("cannot give group '" + group + "' access to " + path + e);
    }
  }
  if (::listen(fd_.get(), 16) != 0) {
    const std::string e = errstr();
    ::unlink(path.c_str());
    throw std::runtime_error("cannot listen on " + path + ": " + e);
  }
}

ControlServer::~ControlServer() {
  if (fd_.get() >= 0) ::unlink(path_.c_str());
}

void ControlServer::serve_one(const std::function<ControlReply(const ControlRequest&)>& handler) {
  OwnedFd c(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
  if (c.get() < 0) return;
  ControlRequest req;
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(c.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
    req.uid = cred.uid;
    req.pid = cred.pid;
  }
  std::string line;
  char buf[512];
  while (line.find('\n') == std::string::npos && line.size() < kMaxRequest) {
    pollfd p{c.get(), POLLIN, 0};
    if (::poll(&p, 1, kIoTimeoutMs) <= 0) break;
    const ssize_t n = ::recv(c.get(), buf, sizeof(buf), 0);
    if (n <= 0) break;
    line.append(buf, static_cast<size_t>(n));
  }
  const auto nl = line.find('\n');
  if (nl == std::string::npos) {
    write_all(c.get(), "error: request must be one line under 4096 bytes\n");
    return;
  }
  req.command = line.substr(0, nl);
  ControlReply rep = handler(req);
  write_all(c.get(), (rep.ok ? std::string("ok\n") : "error: " + rep.body + "\n") +
                         (rep.ok ? rep.body : std::string()));
}

ControlReply control_call(const std::string& socket_path, const std::string& command) {
  const sockaddr_un addr = make_addr(socket_path);
  OwnedFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (s.get() < 0) throw std::runtime_error("socket: " + errstr());
  if (::connect(s.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    throw std::runtime_error("cannot reach tlswalld at " + socket_path + ": " + errstr() +
                             (errno == ENOENT || errno == ECONNREFUSED ? " (is it running?)" : ""));
  }
  if (!write_all(s.get(), command + "\n")) throw std::runtime_error("cannot send request");
  std::string out;
  char buf[4096];
  for (;;) {
    pollfd p{s.get(), POLLIN, 0};
    if (::poll(&p, 1, 10000) <= 0) throw std::runtime_error("tlswalld did not answer in 10 s");
    const ssize_t n = ::recv(s.get(), buf, sizeof(buf), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error("reading reply: " + errstr());
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  const auto nl = out.find('\n');
  const std::string head = out.substr(0, nl);
  ControlReply rep;
  if (head == "ok") {
    rep.body = nl == std::string::npos ? "" : out.substr(nl + 1);
  } else {
    rep.ok = false;
    rep.body = head.rfind("error: ", 0) == 0 ? head.substr(7) : head;
  }
  return rep;
}

}  // namespace tlswall::agent
