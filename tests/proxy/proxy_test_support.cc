#include "tests/proxy/proxy_test_support.h"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "proxy/tls_context.h"

namespace tlswall::proxy::testing {

namespace {

[[noreturn]] void die(const std::string& what) {
  throw std::runtime_error(what + ": " + drain_openssl_errors());
}

EvpPkeyPtr make_key() {
  EvpPkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) die("EVP_EC_gen");
  return key;
}

void add_ext(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) die("extension " + value);
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

// issuer == nullptr: self-signed.
X509Ptr make_cert(const std::string& cn, const std::string& san, EVP_PKEY* key, X509* issuer,
                  EVP_PKEY* issuer_key, long not_before_s, long not_after_s, bool ca) {
  X509Ptr cert(X509_new());
  X509_set_version(cert.get(), 2);
  unsigned char serial[8];
  RAND_bytes(serial, sizeof(serial));
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof(serial), nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), not_before_s);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), not_after_s);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("tlswall tests"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509* iss = issuer != nullptr ? issuer : cert.get();
  X509_set_issuer_name(cert.get(), X509_get_subject_name(iss));
  add_ext(cert.get(), iss, NID_basic_constraints, ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
  add_ext(cert.get(), iss, NID_key_usage,
          ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature,keyEncipherment");
  add_ext(cert.get(), iss, NID_subject_key_identifier, "hash");
  if (issuer != nullptr) add_ext(cert.get(), iss, NID_authority_key_identifier, "keyid:always");
  if (!ca) add_ext(cert.get(), iss, NID_ext_key_usage, "serverAuth,clientAuth");
  if (!san.empty()) add_ext(cert.get(), iss, NID_subject_alt_name, san);
  if (X509_sign(cert.get(), issuer_key != nullptr ? issuer_key : key, EVP_sha256()) == 0) {
    die("X509_sign");
  }
  return cert;
}

void write_cert(const std::string& path, X509* cert) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr || PEM_write_X509(f, cert) != 1) die("write " + path);
  std::fclose(f);
}

void write_key(const std::string& path, EVP_PKEY* key) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr || PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    die("write " + path);
  }
  std::fclose(f);
}

constexpr long kDay = 24 * 3600;

}  // namespace

// ---- TempDir ----

TempDir::TempDir() {
  char tmpl[] = "/tmp/tlswall-proxy-test.XXXXXX";
  if (mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

// ---- Pki ----

const Pki& Pki::get() {
  static TempDir* dir = new TempDir();  // lives as long as the binary
  static Pki pki = [] {
    Pki p;
    auto ca_key = make_key();
    auto ca =
        make_cert("tlswall test CA", "", ca_key.get(), nullptr, nullptr, -kDay, 30 * kDay, true);
    p.ca_cert = dir->file("ca.pem");
    write_cert(p.ca_cert, ca.get());

    auto other_key = make_key();
    auto other =
        make_cert("unrelated CA", "", other_key.get(), nullptr, nullptr, -kDay, 30 * kDay, true);
    p.other_ca_cert = dir->file("other_ca.pem");
    write_cert(p.other_ca_cert, other.get());

    auto issue = [&](const std::string& base, const std::string& cn, const std::string& san,
                     long nb, long na, bool self, std::string* cert_path, std::string* key_path) {
      auto key = make_key();
      auto cert = self ? make_cert(cn, san, key.get(), nullptr, nullptr, nb, na, false)
                       : make_cert(cn, san, key.get(), ca.get(), ca_key.get(), nb, na, false);
      *cert_path = dir->file(base + ".pem");
      *key_path = dir->file(base + ".key");
      write_cert(*cert_path, cert.get());
      write_key(*key_path, key.get());
    };
    const std::string good_san = "DNS:server.test,DNS:client-chosen.test,IP:127.0.0.1,IP:::1";
    issue("server", "server.test", good_san, -kDay, 30 * kDay, false, &p.server_cert,
          &p.server_key);
    issue("expired", "server.test", good_san, -3 * kDay, -kDay, false, &p.expired_cert,
          &p.expired_key);
    issue("self_signed", "server.test", good_san, -kDay, 30 * kDay, true, &p.self_signed_cert,
          &p.self_signed_key);
    issue("wrong_name", "other.test", "DNS:other.test", -kDay, 30 * kDay, false, &p.wrong_name_cert,
          &p.wrong_name_key);
    issue("client", "legacy-client", "DNS:legacy-client.test", -kDay, 30 * kDay, false,
          &p.client_cert, &p.client_key);
    return p;
  }();
  return pki;
}

// ---- helpers ----

uint64_t fnv1a(const std::string& data, uint64_t h) {
  for (unsigned char c : data) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string pattern(size_t n, size_t offset) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i)
    s[i] = static_cast<char>('a' + ((i + offset) * 7 + (i + offset) / 251) % 26);
  return s;
}

OwnedFd connect_tcp(const SocketAddress& to, std::chrono::milliseconds rcv_timeout) {
  OwnedFd fd(::socket(to.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return fd;
  timeval tv{static_cast<time_t>(rcv_timeout.count() / 1000),
             static_cast<suseconds_t>((rcv_timeout.count() % 1000) * 1000)};
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (::connect(fd.get(), to.sa(), to.len()) != 0) fd.reset();
  return fd;
}

bool send_all(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

std::string read_to_eof(int fd, int* err) {
  std::string out;
  char buf[65536];
  *err = 0;
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n > 0) {
      out.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) *err = errno;
    return out;
  }
}

std::string read_until(int fd, const std::string& until, int* err) {
  std::string out;
  char buf[4096];
  *err = 0;
  while (out.find(until) == std::string::npos) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n > 0) {
      out.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) *err = errno;
    break;
  }
  return out;
}

// ---- TlsTestServer ----

TlsTestServer::TlsTestServer(TlsServerOptions opts, const std::string& ip)
    : opts_(std::move(opts)) {
  ctx_.reset(SSL_CTX_new(TLS_server_method()));
  if (SSL_CTX_use_certificate_chain_file(ctx_.get(), opts_.cert.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx_.get(), opts_.key.c_str(), SSL_FILETYPE_PEM) != 1) {
    die("server cert");
  }
  if (opts_.min_version) SSL_CTX_set_min_proto_version(ctx_.get(), opts_.min_version);
  if (opts_.max_version) SSL_CTX_set_max_proto_version(ctx_.get(), opts_.max_version);
  static const unsigned char kSid[] = "tlswall-test-server";
  SSL_CTX_set_session_id_context(ctx_.get(), kSid, sizeof(kSid) - 1);
  if (!opts_.client_ca.empty()) {
    SSL_CTX_load_verify_locations(ctx_.get(), opts_.client_ca.c_str(), nullptr);
    SSL_CTX_set_client_CA_list(ctx_.get(), SSL_load_client_CA_file(opts_.client_ca.c_str()));
    SSL_CTX_set_verify(
        ctx_.get(),
        SSL_VERIFY_PEER | (opts_.require_client_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
        nullptr);
  }
  if (!opts_.alpn.empty()) {
    alpn_wire_ = alpn_wire(opts_.alpn);
    SSL_CTX_set_alpn_select_cb(
        ctx_.get(),
        [](SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
           unsigned int inlen, void* arg) -> int {
          auto* wire = static_cast<std::vector<unsigned char>*>(arg);
          unsigned char* sel = nullptr;
          if (SSL_select_next_proto(&sel, outlen, wire->data(), static_cast<unsigned>(wire->size()),
                                    in, inlen) != OPENSSL_NPN_NEGOTIATED) {
            return SSL_TLSEXT_ERR_ALERT_FATAL;
          }
          *out = sel;
          return SSL_TLSEXT_ERR_OK;
        },
        &alpn_wire_);
  }
  listen_ = listen_tcp(*SocketAddress::from_ip(ip, 0), 128);
  addr_ = SocketAddress::local_of(listen_.get());
  acceptor_ = std::thread([this] { accept_loop(); });
}

TlsTestServer::~TlsTestServer() {
  stop_ = true;
  open_gate();
  acceptor_.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (int fd : live_fds_) ::shutdown(fd, SHUT_RDWR);
  }
  for (auto& t : threads_) t.join();
}

void TlsTestServer::open_gate() {
  std::lock_guard<std::mutex> lock(mu_);
  gate_open_ = true;
  cv_.notify_all();
}

bool TlsTestServer::wait_done(size_t n, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, timeout, [&] {
    size_t done = 0;
    for (const auto& r : records_) done += r.done ? 1 : 0;
    return done >= n;
  });
}

std::vector<ServerConnRecord> TlsTestServer::records() const {
  std::lock_guard<std::mutex> lock(mu_);
  return records_;
}

void TlsTestServer::accept_loop() {
  while (!stop_) {
    pollfd p{listen_.get(), POLLIN, 0};
    if (::poll(&p, 1, 20) <= 0) continue;
    int fd = ::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    // accept4 inherits O_NONBLOCK from nothing; make sure it is blocking.
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    timeval tv{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    accepted_++;
    std::lock_guard<std::mutex> lock(mu_);
    live_fds_.insert(fd);
    size_t index = records_.size();
    records_.emplace_back();
    threads_.emplace_back([this, fd, index] { serve(OwnedFd(fd), index); });
  }
}

void TlsTestServer::serve(OwnedFd fd, size_t index) {
  SslPtr ssl(SSL_new(ctx_.get()));
  SSL_set_fd(ssl.get(), fd.get());
  ServerConnRecord rec;
  auto finish = [&] {
    std::lock_guard<std::mutex> lock(mu_);
    rec.done = true;
    records_[index] = rec;
    live_fds_.erase(fd.get());
    cv_.notify_all();
  };
  if (opts_.pg_answer) {
    char req[8];
    size_t got = 0;
    while (got < sizeof(req)) {
      const ssize_t n = ::recv(fd.get(), req + got, sizeof(req) - got, 0);
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    rec.preamble.assign(req, got);
    if (got < sizeof(req) || ::send(fd.get(), &opts_.pg_answer, 1, MSG_NOSIGNAL) != 1 ||
        opts_.pg_answer != 'S') {
      finish();
      return;
    }
  }
  if (SSL_accept(ssl.get()) != 1) {
    ERR_clear_error();
    finish();
    return;
  }
  rec.handshake_ok = true;
  if (const char* sni = SSL_get_servername(ssl.get(), TLSEXT_NAMETYPE_host_name)) rec.sni = sni;
  const unsigned char* proto = nullptr;
  unsigned len = 0;
  SSL_get0_alpn_selected(ssl.get(), &proto, &len);
  if (proto) rec.alpn.assign(reinterpret_cast<const char*>(proto), len);
  rec.client_subject = subject_of(SSL_get0_peer_certificate(ssl.get()));
  rec.version = SSL_get_version(ssl.get());
  rec.resumed = SSL_session_reused(ssl.get()) == 1;
  {
    std::lock_guard<std::mutex> lock(mu_);
    records_[index] = rec;
  }
  auto write_all = [&](const std::string& s) {
    size_t off = 0;
    while (off < s.size()) {
      int n = SSL_write(ssl.get(), s.data() + off, static_cast<int>(s.size() - off));
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
      rec.sent_count += static_cast<size_t>(n);
      sent_ += static_cast<size_t>(n);
    }
    return true;
  };
  char buf[65536];
  using B = TlsServerOptions::Behavior;
  switch (opts_.behavior) {
    case B::kEcho: {
      int last_error = SSL_ERROR_NONE;
      for (;;) {
        int n = SSL_read(ssl.get(), buf, sizeof(buf));
        if (n <= 0) {
          last_error = SSL_get_error(ssl.get(), n);
          break;
        }
        rec.received.append(buf, static_cast<size_t>(n));
        rec.received_count += static_cast<size_t>(n);
        if (!write_all(std::string(buf, static_cast<size_t>(n)))) break;
      }
      if (last_error == SSL_ERROR_ZERO_RETURN) {
        write_all("BYE " + std::to_string(rec.received_count) + "\n");
        SSL_shutdown(ssl.get());
      }
      break;
    }
    case B::kServerClosesFirst: {
      write_all("HELLO\n");
      SSL_shutdown(ssl.get());
      for (;;) {
        int n = SSL_read(ssl.get(), buf, sizeof(buf));
        if (n <= 0) break;
        rec.received.append(buf, static_cast<size_t>(n));
        rec.received_count += static_cast<size_t>(n);
      }
      break;
    }
    case B::kGatedSink: {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return gate_open_; });
      }
      uint64_t h = fnv1a("");
      for (;;) {
        int n = SSL_read(ssl.get(), buf, sizeof(buf));
        if (n <= 0) break;
        h = fnv1a(std::string(buf, static_cast<size_t>(n)), h);
        rec.received_count += static_cast<size_t>(n);
      }
      write_all(std::to_string(rec.received_count) + " " + std::to_string(h) + "\n");
      SSL_shutdown(ssl.get());
      break;
    }
    case B::kSource: {
      const size_t chunk = 65536;
      for (size_t off = 0; off < opts_.source_bytes && !stop_; off += chunk) {
        if (!write_all(pattern(std::min(chunk, opts_.source_bytes - off), off))) break;
      }
      SSL_shutdown(ssl.get());
      break;
    }
  }
  ERR_clear_error();
  finish();
}

// ---- PlainEchoServer ----

PlainEchoServer::PlainEchoServer() {
  listen_ = listen_tcp(*SocketAddress::from_ip("127.0.0.1", 0), 128);
  addr_ = SocketAddress::local_of(listen_.get());
  thread_ = std::thread([this] {
    while (!stop_) {
      pollfd p{listen_.get(), POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      int fd = ::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      int flags = fcntl(fd, F_GETFL);
      fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
      accepted_++;
      std::lock_guard<std::mutex> lock(mu_);
      live_fds_.insert(fd);
      threads_.emplace_back([this, fd] {
        OwnedFd owned(fd);
        char buf[65536];
        uint64_t total = 0;
        for (;;) {
          ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
          if (n <= 0) break;
          total += static_cast<uint64_t>(n);
          if (!send_all(fd, std::string(buf, static_cast<size_t>(n)))) break;
        }
        send_all(fd, "BYE " + std::to_string(total) + "\n");
        std::lock_guard<std::mutex> lock(mu_);
        live_fds_.erase(fd);
      });
    }
  });
}

PlainEchoServer::~PlainEchoServer() {
  stop_ = true;
  thread_.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (int fd : live_fds_) ::shutdown(fd, SHUT_RDWR);
  }
  for (auto& t : threads_) t.join();
}

// ---- TlsClient ----

TlsClient::TlsClient(int fd, const TlsClientOptions& opts) {
  ctx_.reset(SSL_CTX_new(TLS_client_method()));
  SSL_CTX_set_verify(ctx_.get(), SSL_VERIFY_PEER, nullptr);
  SSL_CTX_load_verify_locations(ctx_.get(), opts.ca_file.c_str(), nullptr);
  if (!opts.cert.empty()) {
    SSL_CTX_use_certificate_chain_file(ctx_.get(), opts.cert.c_str());
    SSL_CTX_use_PrivateKey_file(ctx_.get(), opts.key.c_str(), SSL_FILETYPE_PEM);
  }
  ssl_.reset(SSL_new(ctx_.get()));
  SSL_set_fd(ssl_.get(), fd);
  SSL_set_tlsext_host_name(ssl_.get(), opts.sni.c_str());
  SSL_set1_host(ssl_.get(), opts.sni.c_str());
  ok_ = SSL_connect(ssl_.get()) == 1;
  if (!ok_) error_ = drain_openssl_errors();
}

bool TlsClient::write(const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    int n = SSL_write(ssl_.get(), s.data() + off, static_cast<int>(s.size() - off));
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

std::string TlsClient::read_to_close() {
  std::string out;
  char buf[16384];
  for (;;) {
    int n = SSL_read(ssl_.get(), buf, sizeof(buf));
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ERR_clear_error();
  return out;
}

void TlsClient::shutdown_write() { SSL_shutdown(ssl_.get()); }

// ---- FakeResolver ----

void FakeResolver::set(SocketAddress dst, std::string rule) {
  std::lock_guard<std::mutex> lock(mu_);
  dst_ = OriginalDestination{std::move(dst), std::move(rule)};
}

void FakeResolver::clear() {
  std::lock_guard<std::mutex> lock(mu_);
  dst_.reset();
}

std::optional<OriginalDestination> FakeResolver::resolve(int, const SocketAddress&,
                                                         const SocketAddress&) {
  calls_++;
  std::lock_guard<std::mutex> lock(mu_);
  return dst_;
}

// ---- EventLog ----

EventCallback EventLog::callback() {
  return [this](const ProxyEvent& ev) {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(ev);
    cv_.notify_all();
  };
}

std::vector<ProxyEvent> EventLog::all() const {
  std::lock_guard<std::mutex> lock(mu_);
  return events_;
}

}  // namespace tlswall::proxy::testing
