// The proxy engine: a fixed pool of worker threads, each with its own epoll,
// sharing the listeners (EPOLLEXCLUSIVE), driving non-blocking sockets and
// non-blocking OpenSSL. Two kinds of listener:
//   upgrade listener    plaintext in from redirected legacy clients; the
//                       original destination comes from an injected
//                       OriginalDestinationResolver; out as verified TLS
//                       (or unchanged if the client already speaks TLS).
//   terminator listener TLS in (cert, key, optional client certificate),
//                       plaintext out to a local backend.
// Fail closed: whatever goes wrong before the TLS session toward the server
// is up, the client is reset (RST) and an event says why; no plaintext byte
// is ever sent toward the destination.
//
// Threads: the engine's own workers call the resolver, the outbound socket
// hook and the event callback. The public methods are thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "proxy/address.h"
#include "proxy/config.h"
#include "proxy/events.h"
#include "proxy/owned.h"

namespace spdlog {
class logger;
}

namespace tlswall::proxy {

// Where a redirected connection was going, as the kernel recorded it.
struct OriginalDestination {
  SocketAddress address;
  std::string rule_id;  // an UpgradeRule::id
};

// Recovers the original destination of an accepted, redirected connection
// (the daemon implements it with the BPF map the connect hook fills; tests
// with a fake). Called on worker threads, concurrently; must not block.
class OriginalDestinationResolver {
 public:
  virtual ~OriginalDestinationResolver() = default;
  // nullopt: unknown connection; the proxy resets it (fail closed).
  virtual std::optional<OriginalDestination> resolve(int accepted_fd, const SocketAddress& peer,
                                                     const SocketAddress& local) = 0;
};

// Called with every outbound socket (to destinations and backends) after
// socket() and before connect(), e.g. to set SO_MARK so the kernel side
// neither redirects it again nor judges it. Returns 0 or an errno; non-zero
// fails the connection (reason connect).
using OutboundSocketHook = std::function<int(int fd, const SocketAddress& destination)>;

struct EngineOptions {
  unsigned workers = 2;
  size_t max_connections = 10000;   // client connections, engine-wide
  size_t buffer_bytes = 32 * 1024;  // per direction per connection
  // From accept until the TLS session is up and bytes may flow (connect,
  // first-bytes sniffing and the handshake together).
  std::chrono::milliseconds handshake_timeout{10000};
  // How long a client may stay silent before it is taken for a server-speaks-
  // first protocol (upgrade: TLS is used; permissive terminator: plaintext).
  std::chrono::milliseconds first_bytes_wait{200};
  std::chrono::milliseconds idle_timeout{std::chrono::minutes(10)};
  EventCallback on_event;                   // may be empty
  OutboundSocketHook outbound_socket_hook;  // may be empty
  spdlog::logger* logger = nullptr;         // the daemon's "proxy" logger; null: silent
};

class Engine {
 public:
  explicit Engine(EngineOptions options);
  ~Engine();  // stop()s
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Compiles every rule (one SSL_CTX each) and swaps the set in atomically.
  // New connections use the new contexts; live ones keep theirs. Throws
  // ConfigError (and changes nothing) if any rule is invalid.
  void apply_config(const ProxyConfig& config);

  // Hands a bound, listening socket to the engine (any time, before or after
  // start()). The fd is made non-blocking. The engine owns it until destroyed.
  void add_upgrade_listener(OwnedFd listen_fd,
                            std::shared_ptr<OriginalDestinationResolver> resolver);
  void add_terminator_listener(OwnedFd listen_fd, const std::string& terminator_id);

  // Starts / stops the workers. stop() aborts live connections (RST) and joins.
  void start();
  void stop();

  std::vector<RuleCounters> rule_counters() const;
  EngineCounters engine_counters() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tlswall::proxy
