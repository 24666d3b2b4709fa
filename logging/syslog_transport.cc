#include "logging/syslog_transport.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace tlswall::logging {
namespace {

// PRINTUSASCII (33..126), at most `max` characters, "-" if empty.
std::string header_field(const std::string& s, size_t max) {
  std::string out;
  for (char c : s) {
    if (out.size() >= max) break;
    const auto u = static_cast<unsigned char>(c);
    out += (u >= 33 && u <= 126) ? c : '_';
  }
  return out.empty() ? "-" : out;
}

}  // namespace

int syslog_facility(const std::string& name) {
  static const char* kNames[] = {"kern",   "user",   "mail",   "daemon", "auth",     "syslog",
                                 "lpr",    "news",   "uucp",   "cron",   "authpriv", "ftp",
                                 "ntp",    "audit",  "alert",  "clock",  "local0",   "local1",
                                 "local2", "local3", "local4", "local5", "local6",   "local7"};
  for (int i = 0; i < 24; ++i) {
    if (name == kNames[i]) return i;
  }
  return -1;
}

int syslog_severity(Severity s) {
  switch (s) {
    case Severity::kInfo:
      return 6;
    case Severity::kNotice:
      return 5;
    case Severity::kWarning:
      return 4;
    case Severity::kError:
      return 3;
  }
  return 6;
}

std::string rfc5424_message(const RenderedEvent& e, const SyslogFormat& f,
                            const std::string& agent_version) {
  std::string head = "<" + std::to_string(f.facility * 8 + syslog_severity(e.event.severity)) +
                     ">1 " + format_time(e.event.time) + " " + header_field(f.hostname, 255) + " " +
                     header_field(f.app_name, 48) + " " + header_field(f.procid, 128) + " " +
                     header_field(event_type_name(e.event.type), 32) + " - ";
  if (head.size() + e.json.size() <= f.max_message_bytes || e.event.message.empty()) {
    return head + e.json;
  }
  // Too long: shorten the human message (the other fields are bounded).
  Event shorter = e.event;
  const size_t over = head.size() + e.json.size() - f.max_message_bytes;
  const size_t keep = shorter.message.size() > over + 16 ? shorter.message.size() - over - 16 : 0;
  shorter.message = shorter.message.substr(0, keep) + "...[truncated]";
  return head + render_json(shorter, f.hostname, agent_version);
}

std::string octet_frame(const std::string& msg) { return std::to_string(msg.size()) + " " + msg; }

SyslogTransport::SyslogTransport(SyslogTransportOptions o) : o_(std::move(o)) {}

SyslogTransport::~SyslogTransport() { disconnect(); }

std::string SyslogTransport::target() const {
  const bool v6 = o_.host.find(':') != std::string::npos;
  return (v6 ? "[" + o_.host + "]" : o_.host) + ":" + std::to_string(o_.port);
}

std::string SyslogTransport::render(const RenderedEvent& e) {
  return rfc5424_message(e, o_.format, o_.agent_version);
}

void SyslogTransport::disconnect() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool SyslogTransport::connect_now(std::string* error) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_family = AF_UNSPEC;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(o_.port);
  const int rc = ::getaddrinfo(o_.host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) {
    *error = "syslog at " + target() + ": cannot resolve: " + gai_strerror(rc);
    return false;
  }
  std::string last = "no address";
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    const int fd = ::socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
      last = std::strerror(errno);
      continue;
    }
    int r = ::connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (r != 0 && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      r = ::poll(&p, 1, static_cast<int>(o_.timeout.count()));
      if (r == 1) {
        int soerr = 0;
        socklen_t len = sizeof(soerr);
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
        errno = soerr;
        r = soerr == 0 ? 0 : -1;
      } else {
        errno = r == 0 ? ETIMEDOUT : errno;
        r = -1;
      }
    }
    if (r != 0) {
      last = std::strerror(errno);
      ::close(fd);
      continue;
    }
    // Stays non-blocking: send() waits for room with poll(), bounded.
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fd_ = fd;
    ::freeaddrinfo(res);
    return true;
  }
  ::freeaddrinfo(res);
  *error = "syslog at " + target() + ": cannot connect: " + last;
  return false;
}

// A syslog receiver never sends; readable means it closed (or reset).
bool SyslogTransport::peer_closed() {
  pollfd p{fd_, POLLIN | POLLRDHUP, 0};
  if (::poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) return true;
  char buf[256];
  const ssize_t n = ::recv(fd_, buf, sizeof(buf), MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

Transport::Status SyslogTransport::send(const std::vector<std::string>& records, size_t* accepted,
                                        std::string* error) {
  *accepted = 0;
  if (fd_ >= 0 && peer_closed()) disconnect();
  if (fd_ < 0 && !connect_now(error)) return Status::kError;
  std::string buf;
  std::vector<size_t> ends;  // end offset of each frame in buf
  ends.reserve(records.size());
  for (const auto& r : records) {
    buf += octet_frame(r);
    ends.push_back(buf.size());
  }
  size_t off = 0;
  while (off < buf.size()) {
    const ssize_t n = ::send(fd_, buf.data() + off, buf.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        pollfd p{fd_, POLLOUT, 0};
        if (::poll(&p, 1, static_cast<int>(o_.timeout.count())) == 1) continue;
        errno = ETIMEDOUT;
      }
      *error = "syslog at " + target() + ": send: " + std::strerror(errno);
      // Frames written in full count as taken; a partial frame is resent
      // after reconnecting (the receiver drops the torn one with the
      // connection).
      while (*accepted < ends.size() && ends[*accepted] <= off) ++*accepted;
      disconnect();
      return Status::kError;
    }
    off += static_cast<size_t>(n);
  }
  *accepted = records.size();
  return Status::kOk;
}

}  // namespace tlswall::logging
