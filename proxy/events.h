// What the proxy reports: one event per connection outcome, delivered
// through EngineOptions::on_event on a worker thread, and per-rule counters.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <variant>

#include "proxy/address.h"

namespace tlswall::proxy {

enum class FailureReason : uint8_t {
  kCertificate = 0,     // chain did not verify (unknown CA, self-signed, expired, ...)
  kHostname,            // chain fine, name does not match the rule's server name
  kVersion,             // no common TLS version at or above the rule's minimum
  kTimeout,             // connect + handshake did not finish in time
  kConnect,             // destination / backend refused or unreachable
  kCapacity,            // max_connections reached
  kProtocol,            // any other TLS or protocol failure
  kUnknownDestination,  // resolver did not know the connection, or unknown rule id
  kPlaintext,           // strict terminator: first bytes were not a ClientHello
};
inline constexpr size_t kFailureReasonCount = 9;
const char* to_string(FailureReason r);

// Client side: the upgrade failed; the client was reset before any byte
// reached the wire.
struct UpgradeFailure {
  uint64_t conn_id = 0;
  std::string rule;  // empty when the resolver knew no rule
  FailureReason reason = FailureReason::kProtocol;
  std::string detail;  // OpenSSL / errno text, for humans
  SocketAddress client;
  SocketAddress destination;
};

// Client side: an upgraded connection closed (reported once, at close).
struct Upgraded {
  uint64_t conn_id = 0;
  std::string rule;
  SocketAddress client;
  SocketAddress destination;
  std::string server_name;
  std::string tls_version;  // "TLSv1.3"
  std::string cipher;
  std::string alpn;          // negotiated protocol, empty if none
  std::string peer_subject;  // server certificate subject, RFC 2253
  bool resumed = false;      // TLS session resumption was used
  uint64_t bytes_up = 0;     // client -> server plaintext bytes delivered
  uint64_t bytes_down = 0;   // server -> client
  std::chrono::milliseconds duration{0};
  std::string error;  // empty on an orderly close; else why it was aborted
};

// Client side: the client already spoke TLS and was passed through unchanged.
struct PassedThrough {
  uint64_t conn_id = 0;
  std::string rule;
  SocketAddress client;
  SocketAddress destination;
  uint64_t bytes_up = 0;
  uint64_t bytes_down = 0;
  std::chrono::milliseconds duration{0};
  std::string error;
};

// Server side: a connection to a terminator port was refused (strict mode
// plaintext, bad client certificate, capacity, timeout, backend down).
struct TerminatorFailure {
  uint64_t conn_id = 0;
  std::string rule;
  FailureReason reason = FailureReason::kProtocol;
  std::string detail;
  SocketAddress client;
  SocketAddress local;  // the address and port the client connected to
};

// Server side: plaintext accepted by a permissive terminator (reported at
// once, so a migration dashboard sees it before the connection ends).
struct PlaintextAccepted {
  uint64_t conn_id = 0;
  std::string rule;
  SocketAddress client;
  SocketAddress local;  // the address and port the client connected to
};

// Server side: a terminated (or permissive plaintext) connection closed.
struct Terminated {
  uint64_t conn_id = 0;
  std::string rule;
  SocketAddress client;
  SocketAddress backend;
  SocketAddress local;  // the address and port the client connected to
  bool tls = true;      // false: permissive plaintext
  std::string tls_version;
  std::string cipher;
  std::string alpn;
  std::string client_subject;  // client certificate subject (RFC 2253), if any
  uint64_t bytes_in = 0;       // client -> backend
  uint64_t bytes_out = 0;      // backend -> client
  std::chrono::milliseconds duration{0};
  std::string error;
};

using ProxyEvent = std::variant<UpgradeFailure, Upgraded, PassedThrough, TerminatorFailure,
                                PlaintextAccepted, Terminated>;
// Called on worker threads, concurrently; must be quick and thread-safe.
using EventCallback = std::function<void(const ProxyEvent&)>;

// A snapshot of one rule's counters (monotonic except active). Counters
// survive reloads as long as the rule id stays.
struct RuleCounters {
  std::string rule;
  bool terminator = false;
  uint64_t connections = 0;  // accepted and attributed to the rule
  uint64_t active = 0;
  uint64_t bytes_up = 0;     // toward the server / backend
  uint64_t bytes_down = 0;   // toward the client
  uint64_t passthrough = 0;  // client side: TLS clients passed through
  uint64_t plaintext = 0;    // server side: permissive plaintext connections
  uint64_t resumed = 0;      // TLS sessions resumed toward servers
  uint64_t truncated = 0;    // server closed TLS without close_notify
  std::array<uint64_t, kFailureReasonCount> failures{};  // by FailureReason
};

// Engine-wide counters that belong to no rule.
struct EngineCounters {
  uint64_t accepted = 0;
  uint64_t active = 0;
  uint64_t unknown_destination = 0;  // also not attributable to a rule
  uint64_t capacity_rejected = 0;
  uint64_t accept_errors = 0;
};

}  // namespace tlswall::proxy
