// A socket address (IPv4 or IPv6 with port) as a value type, with the
// listening-socket helper the engine and its tests use.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <optional>
#include <string>

#include "proxy/owned.h"

namespace tlswall::proxy {

class SocketAddress {
 public:
  SocketAddress() = default;
  // Copies len bytes of an AF_INET/AF_INET6 sockaddr; anything else is empty.
  SocketAddress(const sockaddr* sa, socklen_t len);

  // "192.0.2.1:443", "[2001:db8::1]:443"; nullopt if it does not parse.
  static std::optional<SocketAddress> parse(const std::string& text);
  // An address literal and a port ("::1", 8443).
  static std::optional<SocketAddress> from_ip(const std::string& ip, uint16_t port);

  // The local / peer address of a socket (empty on error).
  static SocketAddress local_of(int fd);
  static SocketAddress peer_of(int fd);

  bool empty() const { return len_ == 0; }
  int family() const { return storage_.ss_family; }
  uint16_t port() const;
  const sockaddr* sa() const { return reinterpret_cast<const sockaddr*>(&storage_); }
  socklen_t len() const { return len_; }

  std::string ip_string() const;  // "192.0.2.1", "2001:db8::1"
  std::string to_string() const;  // "192.0.2.1:443", "[2001:db8::1]:443"

  bool operator==(const SocketAddress& o) const;
  bool operator!=(const SocketAddress& o) const { return !(*this == o); }

 private:
  sockaddr_storage storage_{};
  socklen_t len_ = 0;
};

// A non-blocking, close-on-exec TCP listener bound to addr (SO_REUSEADDR;
// SO_REUSEPORT when reuseport). Throws std::system_error.
OwnedFd listen_tcp(const SocketAddress& addr, int backlog = 1024, bool reuseport = false);

}  // namespace tlswall::proxy
