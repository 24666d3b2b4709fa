// Rules compiled into OpenSSL contexts. Each is built once per rule and per
// reload, shared (read-only) by every connection that uses it; a connection
// keeps its context alive by holding the shared_ptr, so a reload never
// disturbs live connections.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "proxy/config.h"
#include "proxy/events.h"
#include "proxy/owned.h"

namespace tlswall::proxy {

// Client sessions toward servers, per rule, keyed by destination + name.
// Thread-safe. Bounded: the oldest-inserted half is dropped when full.
class SessionCache {
 public:
  explicit SessionCache(size_t capacity) : capacity_(capacity) {}
  // A new reference to the cached session, or null.
  SslSessionPtr get(const std::string& key) const;
  // Takes ownership of one reference to sess.
  void put(const std::string& key, SSL_SESSION* sess);
  size_t size() const;

 private:
  size_t capacity_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, SslSessionPtr> map_;
};

// What a connection hangs on its SSL (app data) so that the new-session
// callback knows where to store the session.
struct SessionSlot {
  SessionCache* cache = nullptr;
  std::string key;
};

// An upgrade rule, validated and compiled. Throws ConfigError from build().
class ClientRuleContext {
 public:
  // Files the rule names are taken from `files` when there, else opened.
  static std::shared_ptr<const ClientRuleContext> build(const UpgradeRule& rule,
                                                        const PemFiles& files = {});

  const UpgradeRule& rule() const { return rule_; }
  SSL_CTX* ctx() const { return ctx_.get(); }
  SessionCache* sessions() const { return sessions_.get(); }
  // The name to send and verify for a destination; nullptr if the rule has
  // none for it (the connection must then fail closed).
  const std::string* server_name_for(const SocketAddress& dst) const;

  // A new client SSL for fd with SNI (DNS names only), host-name / IP
  // verification, and a cached session for resumption. Null on failure.
  SslPtr new_ssl(int fd, const std::string& server_name, SessionSlot* slot) const;

 private:
  explicit ClientRuleContext(UpgradeRule rule) : rule_(std::move(rule)) {}
  UpgradeRule rule_;
  SslCtxPtr ctx_;
  std::unique_ptr<SessionCache> sessions_;
};

// A terminator rule, validated and compiled. Throws ConfigError from build().
class ServerRuleContext {
 public:
  static std::shared_ptr<const ServerRuleContext> build(const TerminatorRule& rule,
                                                        const PemFiles& files = {});

  const TerminatorRule& rule() const { return rule_; }
  SSL_CTX* ctx() const { return ctx_.get(); }
  SslPtr new_ssl(int fd) const;

 private:
  explicit ServerRuleContext(TerminatorRule rule) : rule_(std::move(rule)) {}
  TerminatorRule rule_;
  SslCtxPtr ctx_;
  std::vector<unsigned char> alpn_wire_;
};

// Why a handshake failed, from the verify result and the OpenSSL error queue
// (call right after the failing SSL_do_handshake, on the same thread).
FailureReason classify_handshake_failure(SSL* ssl, int ssl_error, std::string* detail);

// Subject of a certificate in RFC 2253 form ("CN=a,O=b"); "" for null.
std::string subject_of(X509* cert);

// The OpenSSL error queue as one line (and cleared); "" when empty.
std::string drain_openssl_errors();

// ALPN protocol names in wire format; throws ConfigError on a bad name.
std::vector<unsigned char> alpn_wire(const std::vector<std::string>& protos);

}  // namespace tlswall::proxy
