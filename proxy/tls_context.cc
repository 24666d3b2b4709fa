#include "proxy/tls_context.h"

#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

namespace tlswall::proxy {

namespace {

bool is_ip_literal(const std::string& name) {
  unsigned char buf[16];
  return inet_pton(AF_INET, name.c_str(), buf) == 1 || inet_pton(AF_INET6, name.c_str(), buf) == 1;
}

// Host names we accept for SNI / verification: non-empty, no spaces or NULs,
// at most 253 bytes. X509_check_host does the real matching.
void check_server_name(const std::string& rule, const std::string& name, const std::string& what) {
  if (name.empty()) {
    throw ConfigError("upgrade rule '" + rule + "': empty " + what +
                      " (host-name verification cannot be turned off)");
  }
  if (name.size() > 253) throw ConfigError("upgrade rule '" + rule + "': " + what + " too long");
  for (char c : name) {
    if (c == '\0' || c == ' ' || c == '/' || static_cast<unsigned char>(c) < 0x21) {
      throw ConfigError("upgrade rule '" + rule + "': " + what + " '" + name +
                        "' is not a host name");
    }
  }
}

int version_of(TlsVersion v) { return v == TlsVersion::kTls13 ? TLS1_3_VERSION : TLS1_2_VERSION; }

// Stores new client sessions (TLS 1.3 tickets arrive after the handshake).
int on_new_session(SSL* ssl, SSL_SESSION* sess) {
  auto* slot = static_cast<SessionSlot*>(SSL_get_app_data(ssl));
  if (slot == nullptr || slot->cache == nullptr || !SSL_SESSION_is_resumable(sess)) return 0;
  slot->cache->put(slot->key, sess);
  return 1;  // we own the reference now
}

int on_alpn_select(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                   unsigned int inlen, void* arg) {
  auto* wire = static_cast<std::vector<unsigned char>*>(arg);
  unsigned char* sel = nullptr;
  if (SSL_select_next_proto(&sel, outlen, wire->data(), static_cast<unsigned>(wire->size()), in,
                            inlen) != OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_NOACK;  // no overlap: carry on without ALPN
  }
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

// The TLS read buffer of a connection while it has data (released when idle).
constexpr size_t kReadAheadBytes = 64 * 1024;

SslCtxPtr new_ctx(const SSL_METHOD* method, TlsVersion min, const std::string& what) {
  SslCtxPtr ctx(SSL_CTX_new(method));
  if (!ctx) throw ConfigError(what + ": SSL_CTX_new: " + drain_openssl_errors());
  if (SSL_CTX_set_min_proto_version(ctx.get(), version_of(min)) != 1) {
    throw ConfigError(what + ": cannot set the minimum TLS version");
  }
  // Non-blocking use with a buffer that may move and partial writes; buffers
  // released while idle keep per-connection memory small.
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                  SSL_MODE_RELEASE_BUFFERS);
  // Read ahead: one recv takes up to kReadAheadBytes (several records)
  // instead of a header and a body per record; the engine then decrypts every
  // buffered record before it writes (see read_into), so a bulk stream costs
  // fewer syscalls and fewer wake-ups of the plaintext peer.
  SSL_CTX_set_read_ahead(ctx.get(), 1);
  SSL_CTX_set_default_read_buffer_len(ctx.get(), kReadAheadBytes);
  SSL_CTX_set_options(ctx.get(), SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  return ctx;
}

// Never prompt for a passphrase (an encrypted key is refused).
int no_passphrase(char*, int, int, void*) { return 0; }

const std::string* pem_of(const PemFiles& files, const std::string& path) {
  const auto it = files.find(path);
  return it == files.end() ? nullptr : &it->second;
}

BioPtr memory_bio(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) throw ConfigError("BIO_new_mem_buf: " + drain_openssl_errors());
  return bio;
}

// Every certificate of a PEM text, in order; throws if there is none or
// anything after the last one is not a certificate.
std::vector<X509Ptr> read_certificates(const std::string& pem, const std::string& what) {
  std::vector<X509Ptr> out;
  BioPtr bio = memory_bio(pem);
  for (;;) {
    X509Ptr c(PEM_read_bio_X509(bio.get(), nullptr, no_passphrase, nullptr));
    if (!c) break;
    out.push_back(std::move(c));
  }
  const unsigned long e = ERR_peek_last_error();
  if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE && !out.empty()) {
    ERR_clear_error();  // the normal end of the text
  } else {
    throw ConfigError(what + ": " + (out.empty() ? "no certificate" : "bad certificate") + ": " +
                      drain_openssl_errors());
  }
  return out;
}

// Trust anchors: from memory when the daemon read the file, else the file.
void load_verify_file(SSL_CTX* ctx, const std::string& path, const PemFiles& files,
                      const std::string& what) {
  if (const std::string* pem = pem_of(files, path)) {
    X509_STORE* store = SSL_CTX_get_cert_store(ctx);
    for (const auto& c : read_certificates(*pem, what + " " + path)) {
      if (X509_STORE_add_cert(store, c.get()) != 1) {
        throw ConfigError(what + " " + path + ": " + drain_openssl_errors());
      }
    }
  } else if (SSL_CTX_load_verify_locations(ctx, path.c_str(), nullptr) != 1) {
    throw ConfigError(what + " " + path + ": " + drain_openssl_errors());
  }
}

void load_cert_and_key(SSL_CTX* ctx, const std::string& cert, const std::string& key,
                       const PemFiles& files, const std::string& what) {
  if (const std::string* pem = pem_of(files, cert)) {
    auto chain = read_certificates(*pem, what + ": certificate " + cert);
    if (SSL_CTX_use_certificate(ctx, chain[0].get()) != 1) {
      throw ConfigError(what + ": certificate " + cert + ": " + drain_openssl_errors());
    }
    for (size_t i = 1; i < chain.size(); ++i) {
      if (SSL_CTX_add1_chain_cert(ctx, chain[i].get()) != 1) {
        throw ConfigError(what + ": certificate " + cert + ": " + drain_openssl_errors());
      }
    }
  } else if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1) {
    throw ConfigError(what + ": certificate " + cert + ": " + drain_openssl_errors());
  }
  if (const std::string* pem = pem_of(files, key)) {
    BioPtr bio = memory_bio(*pem);
    EvpPkeyPtr pkey(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr));
    if (!pkey || SSL_CTX_use_PrivateKey(ctx, pkey.get()) != 1) {
      throw ConfigError(what + ": key " + key + ": " + drain_openssl_errors());
    }
  } else if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1) {
    throw ConfigError(what + ": key " + key + ": " + drain_openssl_errors());
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    throw ConfigError(what + ": key " + key + " does not match " + cert);
  }
}

}  // namespace

void read_pem_files(ProxyConfig& config) {
  constexpr std::streamsize kMaxBytes = 1 << 20;
  auto read = [&](const std::string& path, const std::string& what) {
    if (path.empty() || config.pem_files.count(path) != 0) return;
    std::ifstream in(path, std::ios::binary);
    if (!in) throw ConfigError(what + " " + path + ": " + std::strerror(errno));
    std::string text;
    text.resize(static_cast<size_t>(kMaxBytes) + 1);
    in.read(text.data(), kMaxBytes + 1);
    if (in.bad()) throw ConfigError(what + " " + path + ": read error");
    if (in.gcount() > kMaxBytes) throw ConfigError(what + " " + path + ": larger than 1 MiB");
    text.resize(static_cast<size_t>(in.gcount()));
    config.pem_files.emplace(path, std::move(text));
  };
  for (const auto& r : config.upgrade) {
    read(r.ca_file, "upgrade rule '" + r.id + "': CA");
    read(r.cert_file, "upgrade rule '" + r.id + "': certificate");
    read(r.key_file, "upgrade rule '" + r.id + "': key");
  }
  for (const auto& r : config.terminators) {
    read(r.cert_file, "terminator rule '" + r.id + "': certificate");
    read(r.key_file, "terminator rule '" + r.id + "': key");
    read(r.client_ca_file, "terminator rule '" + r.id + "': client CA");
  }
}

void wipe_pem_files(ProxyConfig& config) {
  for (auto& [path, text] : config.pem_files) OPENSSL_cleanse(text.data(), text.size());
  config.pem_files.clear();
}

std::string drain_openssl_errors() {
  std::string out;
  unsigned long e;
  char buf[256];
  while ((e = ERR_get_error()) != 0) {
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out;
}

std::vector<unsigned char> alpn_wire(const std::vector<std::string>& protos) {
  std::vector<unsigned char> wire;
  for (const auto& p : protos) {
    if (p.empty() || p.size() > 255) throw ConfigError("ALPN protocol name '" + p + "' invalid");
    wire.push_back(static_cast<unsigned char>(p.size()));
    wire.insert(wire.end(), p.begin(), p.end());
  }
  return wire;
}

std::string subject_of(X509* cert) {
  if (cert == nullptr) return "";
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio) return "";
  X509_NAME_print_ex(bio.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return n > 0 ? std::string(data, static_cast<size_t>(n)) : std::string();
}

// ---- SessionCache ----

SslSessionPtr SessionCache::get(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = map_.find(key);
  if (it == map_.end()) return nullptr;
  SSL_SESSION_up_ref(it->second.get());
  return SslSessionPtr(it->second.get());
}

void SessionCache::put(const std::string& key, SSL_SESSION* sess) {
  SslSessionPtr owned(sess);
  if (capacity_ == 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (map_.size() >= capacity_ && map_.find(key) == map_.end()) {
    // Crude but bounded: drop half, arbitrary order.
    size_t drop = map_.size() / 2 + 1;
    for (auto it = map_.begin(); it != map_.end() && drop > 0; --drop) it = map_.erase(it);
  }
  map_[key] = std::move(owned);
}

size_t SessionCache::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return map_.size();
}

// ---- ClientRuleContext ----

std::shared_ptr<const ClientRuleContext> ClientRuleContext::build(const UpgradeRule& rule,
                                                                  const PemFiles& files) {
  const std::string what = "upgrade rule '" + rule.id + "'";
  if (rule.id.empty()) throw ConfigError("upgrade rule without an id");
  if (rule.server_name.empty() && rule.server_names.empty()) {
    throw ConfigError(what + ": no server name (host-name verification cannot be turned off)");
  }
  if (!rule.server_name.empty()) check_server_name(rule.id, rule.server_name, "server_name");
  for (const auto& [dst, name] : rule.server_names) {
    if (!SocketAddress::parse(dst) && !SocketAddress::from_ip(dst, 0)) {
      throw ConfigError(what + ": server_names key '" + dst + "' is not ip or ip:port");
    }
    check_server_name(rule.id, name, "server name for " + dst);
  }
  if (rule.cert_file.empty() != rule.key_file.empty()) {
    throw ConfigError(what + ": client cert_file and key_file go together");
  }

  std::shared_ptr<ClientRuleContext> out(new ClientRuleContext(rule));
  ERR_clear_error();
  out->ctx_ = new_ctx(TLS_client_method(), rule.min_version, what);
  SSL_CTX* ctx = out->ctx_.get();
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  if (rule.ca_file.empty() && rule.ca_dir.empty()) {
    if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
      throw ConfigError(what + ": system CA store: " + drain_openssl_errors());
    }
  } else {
    if (!rule.ca_file.empty()) load_verify_file(ctx, rule.ca_file, files, what + ": CA");
    if (!rule.ca_dir.empty() &&
        SSL_CTX_load_verify_locations(ctx, nullptr, rule.ca_dir.c_str()) != 1) {
      throw ConfigError(what + ": CA " + rule.ca_dir + ": " + drain_openssl_errors());
    }
  }
  if (!rule.cert_file.empty()) {
    load_cert_and_key(ctx, rule.cert_file, rule.key_file, files, what);
  }
  if (!rule.alpn.empty()) {
    auto wire = alpn_wire(rule.alpn);
    // Note: SSL_CTX_set_alpn_protos returns 0 on success.
    if (SSL_CTX_set_alpn_protos(ctx, wire.data(), static_cast<unsigned>(wire.size())) != 0) {
      throw ConfigError(what + ": ALPN: " + drain_openssl_errors());
    }
  }
  out->sessions_ = std::make_unique<SessionCache>(rule.session_cache_entries);
  if (rule.session_cache_entries > 0) {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
  } else {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  }
  return out;
}

const std::string* ClientRuleContext::server_name_for(const SocketAddress& dst) const {
  if (!rule_.server_names.empty()) {
    auto it = rule_.server_names.find(dst.to_string());
    if (it != rule_.server_names.end()) return &it->second;
    it = rule_.server_names.find(dst.ip_string());
    if (it != rule_.server_names.end()) return &it->second;
  }
  if (!rule_.server_name.empty()) return &rule_.server_name;
  return nullptr;
}

SslPtr ClientRuleContext::new_ssl(int fd, const std::string& server_name, SessionSlot* slot) const {
  if (server_name.empty()) return nullptr;  // never verify against nothing
  SslPtr ssl(SSL_new(ctx_.get()));
  if (!ssl) return nullptr;
  if (SSL_set_fd(ssl.get(), fd) != 1) return nullptr;
  SSL_set_connect_state(ssl.get());
  if (is_ip_literal(server_name)) {
    if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl.get()), server_name.c_str()) != 1) {
      return nullptr;
    }
  } else {
    if (SSL_set_tlsext_host_name(ssl.get(), server_name.c_str()) != 1) return nullptr;
    if (SSL_set1_host(ssl.get(), server_name.c_str()) != 1) return nullptr;
    SSL_set_hostflags(ssl.get(), X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  }
  if (slot != nullptr && slot->cache != nullptr) {
    SSL_set_app_data(ssl.get(), slot);
    if (SslSessionPtr sess = slot->cache->get(slot->key)) SSL_set_session(ssl.get(), sess.get());
  }
  return ssl;
}

// ---- ServerRuleContext ----

std::shared_ptr<const ServerRuleContext> ServerRuleContext::build(const TerminatorRule& rule,
                                                                  const PemFiles& files) {
  const std::string what = "terminator rule '" + rule.id + "'";
  if (rule.id.empty()) throw ConfigError("terminator rule without an id");
  if (rule.cert_file.empty() || rule.key_file.empty()) {
    throw ConfigError(what + ": cert_file and key_file are required");
  }
  if (rule.require_client_cert && rule.client_ca_file.empty()) {
    throw ConfigError(what + ": require_client_cert needs client_ca_file");
  }
  if (rule.backend.empty()) throw ConfigError(what + ": no backend address");

  std::shared_ptr<ServerRuleContext> out(new ServerRuleContext(rule));
  ERR_clear_error();
  out->ctx_ = new_ctx(TLS_server_method(), rule.min_version, what);
  SSL_CTX* ctx = out->ctx_.get();
  load_cert_and_key(ctx, rule.cert_file, rule.key_file, files, what);
  static const unsigned char kSidCtx[] = "tlswall-terminator";
  SSL_CTX_set_session_id_context(ctx, kSidCtx, sizeof(kSidCtx) - 1);
  if (!rule.client_ca_file.empty()) {
    load_verify_file(ctx, rule.client_ca_file, files, what + ": client CA");
    STACK_OF(X509_NAME)* names = nullptr;
    if (const std::string* pem = pem_of(files, rule.client_ca_file)) {
      names = sk_X509_NAME_new_null();
      for (const auto& c : read_certificates(*pem, what + ": client CA")) {
        X509_NAME* n = X509_NAME_dup(X509_get_subject_name(c.get()));
        if (names == nullptr || n == nullptr || sk_X509_NAME_push(names, n) == 0) {
          X509_NAME_free(n);
          sk_X509_NAME_pop_free(names, X509_NAME_free);
          throw ConfigError(what + ": client CA names: out of memory");
        }
      }
    } else {
      names = SSL_load_client_CA_file(rule.client_ca_file.c_str());
    }
    if (names == nullptr) throw ConfigError(what + ": client CA names: " + drain_openssl_errors());
    SSL_CTX_set_client_CA_list(ctx, names);
    SSL_CTX_set_verify(
        ctx, SSL_VERIFY_PEER | (rule.require_client_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
        nullptr);
  }
  if (!rule.alpn.empty()) {
    out->alpn_wire_ = alpn_wire(rule.alpn);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn_select, &out->alpn_wire_);
  }
  return out;
}

SslPtr ServerRuleContext::new_ssl(int fd) const {
  SslPtr ssl(SSL_new(ctx_.get()));
  if (!ssl || SSL_set_fd(ssl.get(), fd) != 1) return nullptr;
  SSL_set_accept_state(ssl.get());
  return ssl;
}

// ---- failure classification ----

FailureReason classify_handshake_failure(SSL* ssl, int ssl_error, std::string* detail) {
  const int saved_errno = errno;
  long verify = SSL_get_verify_result(ssl);
  bool version = false;
  bool missing_cert = false;
  std::string errors;
  unsigned long e;
  char buf[256];
  while ((e = ERR_get_error()) != 0) {
    switch (ERR_GET_REASON(e)) {
      case SSL_R_UNSUPPORTED_PROTOCOL:
      case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
      case SSL_R_NO_PROTOCOLS_AVAILABLE:
      case SSL_R_VERSION_TOO_LOW:
        version = true;
        break;
      case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
      case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
        missing_cert = true;
        break;
      default:
        break;
    }
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!errors.empty()) errors += "; ";
    errors += buf;
  }
  if (verify != X509_V_OK) {
    *detail = X509_verify_cert_error_string(verify);
    if (verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH) {
      return FailureReason::kHostname;
    }
    return FailureReason::kCertificate;
  }
  *detail = errors;
  if (version) return FailureReason::kVersion;
  if (missing_cert) return FailureReason::kCertificate;
  if (ssl_error == SSL_ERROR_SYSCALL && errors.empty()) {
    *detail = saved_errno != 0 ? std::strerror(saved_errno) : "peer closed during handshake";
  }
  return FailureReason::kProtocol;
}

const char* to_string(FailureReason r) {
  switch (r) {
    case FailureReason::kCertificate:
      return "certificate";
    case FailureReason::kHostname:
      return "hostname";
    case FailureReason::kVersion:
      return "version";
    case FailureReason::kTimeout:
      return "timeout";
    case FailureReason::kConnect:
      return "connect";
    case FailureReason::kCapacity:
      return "capacity";
    case FailureReason::kProtocol:
      return "protocol";
    case FailureReason::kUnknownDestination:
      return "unknown_destination";
    case FailureReason::kPlaintext:
      return "plaintext";
  }
  return "?";
}

}  // namespace tlswall::proxy
