#include "agent/metrics/metrics_http.h"

#include <arpa/inet.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace tlswall::agent {
namespace {

using Clock = std::chrono::steady_clock;

// After the response, unread request bytes are drained this long so that
// closing does not reset the connection before the client read the answer.
constexpr std::chrono::milliseconds kLinger{500};
constexpr int kMaxEvents = 32;
// Rounds of epoll_wait per on_readable(): bounded, the fd stays readable.
constexpr int kMaxRounds = 8;

std::string errstr(int e) { return std::strerror(e); }

const char* reason_phrase(int code) {
  switch (code) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Error";
  }
}

std::string response(int code, const std::string& content_type, const std::string& body, bool head,
                     const std::string& extra_headers = "") {
  std::string r = "HTTP/1.1 " + std::to_string(code) + " " + reason_phrase(code) + "\r\n";
  r += "Content-Type: " + content_type + "\r\n";
  r += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  r += extra_headers;
  r += "Connection: close\r\n\r\n";
  if (!head) r += body;
  return r;
}

std::string error_response(int code, const std::string& extra_headers = "") {
  return response(code, "text/plain; charset=utf-8",
                  std::to_string(code) + " " + reason_phrase(code) + "\n", false, extra_headers);
}

bool is_token_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

}  // namespace

ListenAddress parse_listen_address(const std::string& text, bool allow_non_loopback) {
  ListenAddress out;
  std::string host, port;
  if (!text.empty() && text[0] == '[') {
    const auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      throw std::invalid_argument("metrics listen address '" + text +
                                  "' is not [IPv6]:port or IPv4:port");
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string::npos || text.find(':') != colon) {
      throw std::invalid_argument("metrics listen address '" + text +
                                  "' is not IPv4:port or [IPv6]:port");
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos || std::stoul(port) > 65535) {
    throw std::invalid_argument("metrics listen address '" + text + "': port must be 0-65535");
  }
  const auto p = static_cast<uint16_t>(std::stoul(port));
  in_addr a4{};
  in6_addr a6{};
  if (::inet_pton(AF_INET, host.c_str(), &a4) == 1) {
    auto* sa = reinterpret_cast<sockaddr_in*>(&out.addr);
    sa->sin_family = AF_INET;
    sa->sin_port = htons(p);
    sa->sin_addr = a4;
    out.len = sizeof(sockaddr_in);
    out.loopback = (ntohl(a4.s_addr) >> 24) == 127;
  } else if (::inet_pton(AF_INET6, host.c_str(), &a6) == 1) {
    auto* sa = reinterpret_cast<sockaddr_in6*>(&out.addr);
    sa->sin6_family = AF_INET6;
    sa->sin6_port = htons(p);
    sa->sin6_addr = a6;
    out.len = sizeof(sockaddr_in6);
    out.loopback =
        IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
  } else {
    throw std::invalid_argument("metrics listen address '" + text + "': '" + host +
                                "' is not a numeric IPv4 or IPv6 address");
  }
  if (!out.loopback && !allow_non_loopback) {
    throw std::invalid_argument("metrics listen address '" + text +
                                "' is not loopback; set allow_non_loopback to expose metrics "
                                "beyond this host");
  }
  return out;
}

MetricsHttpServer::MetricsHttpServer(MetricsHttpOptions options, Render render)
    : options_(std::move(options)), render_(std::move(render)) {
  const ListenAddress la = parse_listen_address(options_.listen, options_.allow_non_loopback);
  const int family = la.addr.ss_family;
  listen_ = OwnedFd(::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (listen_.get() < 0) throw std::runtime_error("metrics socket: " + errstr(errno));
  const int one = 1;
  (void)::setsockopt(listen_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (family == AF_INET6) {
    (void)::setsockopt(listen_.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  }
  if (::bind(listen_.get(), reinterpret_cast<const sockaddr*>(&la.addr), la.len) != 0) {
    throw std::runtime_error("metrics: cannot bind " + options_.listen + ": " + errstr(errno));
  }
  if (::listen(listen_.get(), 16) != 0) {
    throw std::runtime_error("metrics: cannot listen on " + options_.listen + ": " + errstr(errno));
  }
  sockaddr_storage bound{};
  socklen_t blen = sizeof(bound);
  if (::getsockname(listen_.get(), reinterpret_cast<sockaddr*>(&bound), &blen) != 0) {
    throw std::runtime_error("metrics: getsockname: " + errstr(errno));
  }
  char host[INET6_ADDRSTRLEN] = {};
  if (family == AF_INET) {
    const auto* sa = reinterpret_cast<const sockaddr_in*>(&bound);
    port_ = ntohs(sa->sin_port);
    ::inet_ntop(AF_INET, &sa->sin_addr, host, sizeof(host));
    bound_ = std::string(host) + ":" + std::to_string(port_);
  } else {
    const auto* sa = reinterpret_cast<const sockaddr_in6*>(&bound);
    port_ = ntohs(sa->sin6_port);
    ::inet_ntop(AF_INET6, &sa->sin6_addr, host, sizeof(host));
    bound_ = "[" + std::string(host) + "]:" + std::to_string(port_);
  }

  epoll_ = OwnedFd(::epoll_create1(EPOLL_CLOEXEC));
  timer_ = OwnedFd(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  if (epoll_.get() < 0 || timer_.get() < 0) {
    throw std::runtime_error("metrics: epoll/timerfd: " + errstr(errno));
  }
  for (const int fd : {listen_.get(), timer_.get()}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      throw std::runtime_error("metrics: epoll_ctl: " + errstr(errno));
    }
  }
}

MetricsHttpServer::~MetricsHttpServer() = default;

bool MetricsHttpServer::set_interest(int fd, uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  return ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev) == 0;
}

void MetricsHttpServer::on_readable() {
  for (int round = 0; round < kMaxRounds; ++round) {
    epoll_event evs[kMaxEvents];
    const int n = ::epoll_wait(epoll_.get(), evs, kMaxEvents, 0);
    if (n <= 0) break;  // nothing ready (EINTR: the outer loop calls again)
    for (int i = 0; i < n; ++i) {
      const int fd = evs[i].data.fd;
      if (fd == listen_.get()) {
        accept_all();
      } else if (fd == timer_.get()) {
        uint64_t ticks;
        (void)!::read(timer_.get(), &ticks, sizeof(ticks));
      } else {
        on_client(fd, evs[i].events);
      }
    }
    if (n < kMaxEvents) break;
  }
  expire(Clock::now());
  arm_timer();
}

void MetricsHttpServer::accept_all() {
  for (;;) {
    OwnedFd c(::accept4(listen_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (c.get() < 0) return;  // EAGAIN, or a client that already left
    ++stats_.connections;
    if (clients_.size() >= options_.max_clients) {
      ++stats_.refused;
      continue;  // closed at once
    }
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.fd = c.get();
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, c.get(), &ev) != 0) continue;
    const int fd = c.get();
    Client& cl = clients_[fd];
    cl.fd = std::move(c);
    cl.deadline = Clock::now() + options_.client_timeout;
  }
}

void MetricsHttpServer::on_client(int fd, uint32_t events) {
  const auto it = clients_.find(fd);
  if (it == clients_.end()) return;
  Client& c = it->second;
  if (c.phase == Phase::kWriting) {
    if (events & (EPOLLERR | EPOLLHUP)) return close_client(fd);
    return write_some(fd, c);
  }
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      return close_client(fd);
    }
    if (n == 0) return close_client(fd);  // gone before a full request, or drained
    if (c.phase == Phase::kDraining) continue;
    c.in.append(buf, static_cast<size_t>(n));
    const bool complete =
        c.in.find("\r\n\r\n") != std::string::npos || c.in.find("\n\n") != std::string::npos;
    if (complete || c.in.size() > options_.max_request_bytes) {
      respond(c);
      return write_some(fd, c);
    }
  }
}

void MetricsHttpServer::respond(Client& c) {
  ++stats_.requests;
  c.phase = Phase::kWriting;
  const size_t head_end = std::min(c.in.find("\r\n\r\n"), c.in.find("\n\n"));
  if (head_end == std::string::npos || head_end > options_.max_request_bytes) {
    ++stats_.client_errors;
    c.out = error_response(431);
    return;
  }
  const auto eol = c.in.find_first_of("\r\n");
  const std::string line = c.in.substr(0, eol);
  // METHOD SP request-target SP HTTP-version
  const auto sp1 = line.find(' ');
  const auto sp2 = sp1 == std::string::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp1 == std::string::npos || sp2 == std::string::npos || sp1 == 0 ||
      line.find(' ', sp2 + 1) != std::string::npos) {
    ++stats_.client_errors;
    c.out = error_response(400);
    return;
  }
  const std::string method = line.substr(0, sp1);
  const std::string target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string version = line.substr(sp2 + 1);
  for (char ch : method) {
    if (!is_token_char(ch)) {
      ++stats_.client_errors;
      c.out = error_response(400);
      return;
    }
  }
  if (version.compare(0, 5, "HTTP/") != 0 || target.empty()) {
    ++stats_.client_errors;
    c.out = error_response(400);
    return;
  }
  if (version != "HTTP/1.1" && version != "HTTP/1.0") {
    ++stats_.client_errors;
    c.out = error_response(505);
    return;
  }
  if (method != "GET" && method != "HEAD") {
    ++stats_.client_errors;
    c.out = error_response(405, "Allow: GET, HEAD\r\n");
    return;
  }
  const std::string path = target.substr(0, target.find('?'));
  if (path != "/metrics") {
    ++stats_.client_errors;
    c.out = error_response(404);
    return;
  }
  std::string body;
  try {
    body = render_();
  } catch (const std::exception& e) {
    ++stats_.render_errors;
    c.out = response(500, "text/plain; charset=utf-8",
                     std::string("500 cannot render metrics: ") + e.what() + "\n", false);
    return;
  } catch (...) {
    ++stats_.render_errors;
    c.out = error_response(500);
    return;
  }
  ++stats_.scrapes;
  c.out = response(200, "text/plain; version=0.0.4; charset=utf-8", body, method == "HEAD");
}

void MetricsHttpServer::write_some(int fd, Client& c) {
  while (c.sent < c.out.size()) {
    const ssize_t n = ::send(fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (!set_interest(fd, EPOLLOUT)) close_client(fd);
        return;
      }
      return close_client(fd);
    }
    c.sent += static_cast<size_t>(n);
  }
  // All sent: half-close, then read and discard until the client closes.
  ::shutdown(fd, SHUT_WR);
  c.phase = Phase::kDraining;
  c.in.clear();
  c.in.shrink_to_fit();
  c.out.clear();
  c.out.shrink_to_fit();
  c.deadline = std::min(c.deadline, Clock::now() + kLinger);
  if (!set_interest(fd, EPOLLIN | EPOLLRDHUP)) close_client(fd);
}

void MetricsHttpServer::close_client(int fd) {
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  clients_.erase(fd);  // closes
}

void MetricsHttpServer::expire(Clock::time_point now) {
  for (auto it = clients_.begin(); it != clients_.end();) {
    if (it->second.deadline > now) {
      ++it;
      continue;
    }
    // A draining client already has its answer; anything else was too slow.
    if (it->second.phase != Phase::kDraining) ++stats_.timed_out;
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, it->first, nullptr);
    it = clients_.erase(it);
  }
}

void MetricsHttpServer::arm_timer() {
  itimerspec its{};
  if (!clients_.empty()) {
    Clock::time_point first = clients_.begin()->second.deadline;
    for (const auto& [fd, c] : clients_) first = std::min(first, c.deadline);
    auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(first - Clock::now());
    if (left.count() < 1000000) left = std::chrono::nanoseconds(1000000);  // 0 would disarm
    its.it_value.tv_sec = static_cast<time_t>(left.count() / 1000000000);
    its.it_value.tv_nsec = static_cast<long>(left.count() % 1000000000);
  }
  (void)::timerfd_settime(timer_.get(), 0, &its, nullptr);
}

std::string MetricsHttpServer::status() const {
  return "serving http://" + bound_ + "/metrics: " + std::to_string(stats_.scrapes) + " scrapes, " +
         std::to_string(stats_.client_errors) + " bad requests, " +
         std::to_string(stats_.timed_out) + " cut off, " + std::to_string(stats_.refused) +
         " refused (busy), " + std::to_string(stats_.render_errors) + " render errors";
}

}  // namespace tlswall::agent
