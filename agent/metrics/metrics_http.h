// MetricsHttpServer: the opt-in Prometheus endpoint of tlswalld. A tiny
// non-blocking HTTP/1.1 server that answers `GET /metrics` (and HEAD) with
// the text the daemon renders (MetricsText), 404 for any other path, 405
// for any other method, 400 for a malformed request, 431 past the request
// size limit; one request per connection (`Connection: close`). Clients
// that take longer than `client_timeout` from accept to the end of the
// response are cut off, and at most `max_clients` are served at once.
//
// How the daemon drives it: fd() is an epoll instance that holds the
// listening socket, every client and the server's own timerfd (for the
// cut-offs); add it to the daemon's epoll for EPOLLIN and call
// on_readable() when it is readable. No deadlines to track, no threads;
// on_readable() never blocks and never throws.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "agent/owned_fd.h"

namespace tlswall::agent {

struct MetricsHttpOptions {
  // "IPv4:port" or "[IPv6]:port", numeric only (no name lookups).
  std::string listen = "127.0.0.1:9464";
  // Without it, only loopback addresses (127.0.0.0/8, ::1) are accepted:
  // the metrics name rules, interfaces and hosts.
  bool allow_non_loopback = false;
  size_t max_request_bytes = 8192;
  std::chrono::milliseconds client_timeout{5000};
  size_t max_clients = 16;
};

// A parsed listen address. Throws std::invalid_argument with a one-line
// reason for a malformed address, or a non-loopback one when
// `allow_non_loopback` is false. For config validation.
struct ListenAddress {
  sockaddr_storage addr{};
  socklen_t len = 0;
  bool loopback = false;
};
ListenAddress parse_listen_address(const std::string& text, bool allow_non_loopback);

class MetricsHttpServer {
 public:
  // Renders the exposition; called once per GET /metrics. An exception from
  // it becomes a 500 and is counted.
  using Render = std::function<std::string()>;

  // Binds and listens. Throws std::invalid_argument (address refused, see
  // parse_listen_address) or std::runtime_error (socket, bind, listen).
  MetricsHttpServer(MetricsHttpOptions options, Render render);
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  int fd() const { return epoll_.get(); }
  void on_readable();

  // The bound port (useful with port 0) and "address:port".
  uint16_t port() const { return port_; }
  const std::string& address() const { return bound_; }

  // "serving http://127.0.0.1:9464/metrics: 12 requests, 0 cut off, 0 render errors"
  std::string status() const;

  struct Stats {
    uint64_t connections = 0;
    uint64_t requests = 0;       // complete requests answered
    uint64_t scrapes = 0;        // 200s for /metrics
    uint64_t client_errors = 0;  // 4xx
    uint64_t render_errors = 0;  // 500s
    uint64_t timed_out = 0;      // cut off by client_timeout
    uint64_t refused = 0;        // over max_clients
  };
  const Stats& stats() const { return stats_; }

 private:
  enum class Phase { kReading, kWriting, kDraining };
  struct Client {
    OwnedFd fd;
    Phase phase = Phase::kReading;
    std::string in;
    std::string out;
    size_t sent = 0;
    std::chrono::steady_clock::time_point deadline;
  };

  void accept_all();
  void on_client(int fd, uint32_t events);
  void respond(Client& c);
  void write_some(int fd, Client& c);
  void close_client(int fd);
  void expire(std::chrono::steady_clock::time_point now);
  void arm_timer();
  bool set_interest(int fd, uint32_t events);

  MetricsHttpOptions options_;
  Render render_;
  OwnedFd epoll_;
  OwnedFd listen_;
  OwnedFd timer_;
  uint16_t port_ = 0;
  std::string bound_;
  std::map<int, Client> clients_;
  Stats stats_;
};

}  // namespace tlswall::agent
