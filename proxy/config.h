// Proxy rules as the daemon hands them over (already parsed from policy):
// upgrade rules (plaintext in, TLS out) and terminator rules (TLS in,
// plaintext to a local backend). Validation lives in tls_context.h, where a
// rule is compiled into its SSL_CTX; an invalid rule is refused there.
#pragma once

#include <chrono>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "proxy/address.h"

namespace tlswall::proxy {

// A rule the proxy refuses to build (empty server name, unreadable key, ...).
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class TlsVersion { kTls12, kTls13 };

enum class UpgradePreamble : uint8_t { kNone, kPostgresql };

struct UpgradeRule {
  std::string id;  // what OriginalDestination::rule_id names; also the counter key
  // Name sent as SNI and verified against the server certificate (DNS name,
  // or an IP literal: then verified against IP SANs and no SNI is sent).
  // May be empty only when server_names covers every destination.
  std::string server_name;
  // Per-destination names, keyed by "ip:port" ("[v6]:port") or by the bare
  // ip; checked before server_name. No value may be empty.
  std::map<std::string, std::string> server_names;
  std::string ca_file;            // PEM bundle; empty with empty ca_dir: system store
  std::string ca_dir;             // hashed CA directory (c_rehash), optional
  std::string cert_file;          // client certificate chain (mTLS), optional
  std::string key_file;           // its key; required iff cert_file is set
  std::vector<std::string> alpn;  // offered in order, e.g. {"h2", "http/1.1"}
  TlsVersion min_version = TlsVersion::kTls12;
  size_t session_cache_entries = 1024;  // per rule; 0 disables resumption
  // What the server expects before the ClientHello. kPostgresql: the proxy
  // sends an SSLRequest and needs the answer 'S' (else the upgrade fails
  // closed); a client's own SSLRequest or GSSENCRequest is answered 'N' by
  // the proxy, so the client goes on in plaintext to the proxy.
  UpgradePreamble preamble = UpgradePreamble::kNone;
};

enum class TerminatorMode {
  kStrict,      // first bytes must be a TLS ClientHello; else refused + event
  kPermissive,  // plaintext is passed to the backend, with an event (migration)
};

struct TerminatorRule {
  std::string id;
  std::string cert_file;  // server certificate chain (PEM)
  std::string key_file;
  std::string client_ca_file;        // CAs for client certificates (optional)
  bool require_client_cert = false;  // needs client_ca_file
  TerminatorMode mode = TerminatorMode::kStrict;
  SocketAddress backend;  // the legacy plaintext server, normally loopback
  TlsVersion min_version = TlsVersion::kTls12;
  std::vector<std::string> alpn;  // accepted protocols (server preference order)
};

// Contents of certificate, key and CA files, keyed by the path a rule
// names. A path found here is loaded from memory, not opened: the
// privileged daemon reads root-only keys for the unprivileged worker.
using PemFiles = std::map<std::string, std::string>;

// One generation of rules; Engine::apply_config swaps it in as a whole.
struct ProxyConfig {
  std::vector<UpgradeRule> upgrade;
  std::vector<TerminatorRule> terminators;
  PemFiles pem_files;
};

// Reads every file the rules name (CA, certificate, key, client CA) into
// config.pem_files, at most 1 MiB each. Throws ConfigError naming the file.
void read_pem_files(ProxyConfig& config);

// Overwrites the contents of config.pem_files (private keys) and empties it.
void wipe_pem_files(ProxyConfig& config);

}  // namespace tlswall::proxy
