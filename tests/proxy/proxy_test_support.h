// Test kit for the proxy: a throwaway PKI made with OpenSSL APIs, real TLS
// and plaintext servers on loopback (port 0), blocking clients, a fake
// original-destination resolver and an event collector.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "proxy/address.h"
#include "proxy/engine.h"
#include "proxy/owned.h"

namespace tlswall::proxy::testing {

// A temporary directory, removed with its files.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// PEM files of a throwaway PKI (EC P-256), made once per test binary.
struct Pki {
  std::string ca_cert;                            // CA "tlswall test CA"
  std::string other_ca_cert;                      // an unrelated CA
  std::string server_cert, server_key;            // server.test, client-chosen.test, 127.0.0.1, ::1
  std::string expired_cert, expired_key;          // server.test, expired yesterday
  std::string self_signed_cert, self_signed_key;  // server.test, its own issuer
  std::string wrong_name_cert, wrong_name_key;    // other.test only
  std::string client_cert, client_key;            // CN=legacy-client, signed by the CA
  static const Pki& get();
};

struct TlsServerOptions {
  std::string cert, key;
  std::string client_ca;  // non-empty: ask for client certificates
  bool require_client_cert = false;
  std::vector<std::string> alpn;
  int min_version = 0;  // TLS1_2_VERSION ...
  int max_version = 0;
  enum class Behavior {
    kEcho,               // echo; on the client's EOF reply "BYE <n>\n" and close
    kServerClosesFirst,  // send "HELLO\n", close_notify, then read to EOF
    kGatedSink,          // read nothing until open_gate(); then read to EOF, reply "<n> <fnv>\n"
    kSource,             // send source_bytes of pattern, then close
  } behavior = Behavior::kEcho;
  size_t source_bytes = 0;
  // Non-zero: a PostgreSQL server; expects an SSLRequest before TLS and
  // answers this byte ('S' goes on with TLS, anything else closes).
  char pg_answer = 0;
};

// What the server saw of one connection.
struct ServerConnRecord {
  std::string sni;
  std::string alpn;
  std::string client_subject;
  std::string version;
  bool resumed = false;
  std::string received;  // application bytes (all behaviours but kGatedSink)
  uint64_t received_count = 0;
  uint64_t sent_count = 0;
  bool handshake_ok = false;
  bool done = false;
  std::string preamble;  // pg_answer servers: the bytes read before TLS
};

// A TLS server with blocking OpenSSL, one thread per connection.
class TlsTestServer {
 public:
  explicit TlsTestServer(TlsServerOptions opts, const std::string& ip = "127.0.0.1");
  ~TlsTestServer();
  SocketAddress address() const { return addr_; }
  void open_gate();
  // Waits until n connections are done (closed); false on timeout.
  bool wait_done(size_t n, std::chrono::milliseconds timeout = std::chrono::seconds(10));
  std::vector<ServerConnRecord> records() const;
  size_t accepted() const { return accepted_.load(); }
  uint64_t sent_so_far() const { return sent_.load(); }

 private:
  void accept_loop();
  void serve(OwnedFd fd, size_t index);

  TlsServerOptions opts_;
  SslCtxPtr ctx_;
  std::vector<unsigned char> alpn_wire_;
  OwnedFd listen_;
  SocketAddress addr_;
  std::atomic<bool> stop_{false};
  std::atomic<size_t> accepted_{0};
  std::atomic<uint64_t> sent_{0};
  std::thread acceptor_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool gate_open_ = false;
  std::vector<std::thread> threads_;
  std::set<int> live_fds_;
  std::vector<ServerConnRecord> records_;
};

// Plain TCP echo server (the terminator's backend). Replies "BYE <n>\n" on EOF.
class PlainEchoServer {
 public:
  PlainEchoServer();
  ~PlainEchoServer();
  SocketAddress address() const { return addr_; }
  size_t accepted() const { return accepted_.load(); }

 private:
  OwnedFd listen_;
  SocketAddress addr_;
  std::atomic<bool> stop_{false};
  std::atomic<size_t> accepted_{0};
  std::thread thread_;
  std::mutex mu_;
  std::vector<std::thread> threads_;
  std::set<int> live_fds_;
};

// Blocking TCP client with a receive timeout.
OwnedFd connect_tcp(const SocketAddress& to,
                    std::chrono::milliseconds rcv_timeout = std::chrono::seconds(10));
bool send_all(int fd, const std::string& data);
// Reads until EOF or error; *err gets errno (0 on a clean EOF).
std::string read_to_eof(int fd, int* err);
// Reads until the text contains `until` (or EOF / error / timeout).
std::string read_until(int fd, const std::string& until, int* err);

// Blocking TLS client over a connected fd.
struct TlsClientOptions {
  std::string ca_file;
  std::string sni;  // also verified
  std::string cert, key;
};
class TlsClient {
 public:
  TlsClient(int fd, const TlsClientOptions& opts);
  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }
  bool write(const std::string& s);
  std::string read_to_close();  // until close_notify / EOF
  void shutdown_write();
  SSL* ssl() const { return ssl_.get(); }

 private:
  SslCtxPtr ctx_;
  SslPtr ssl_;
  bool ok_ = false;
  std::string error_;
};

// The kernel side's stand-in.
class FakeResolver : public OriginalDestinationResolver {
 public:
  FakeResolver() = default;
  FakeResolver(SocketAddress dst, std::string rule) { set(std::move(dst), std::move(rule)); }
  void set(SocketAddress dst, std::string rule);
  void clear();
  std::optional<OriginalDestination> resolve(int, const SocketAddress&,
                                             const SocketAddress&) override;
  int calls() const { return calls_.load(); }

 private:
  std::mutex mu_;
  std::optional<OriginalDestination> dst_;
  std::atomic<int> calls_{0};
};

// Collects engine events.
class EventLog {
 public:
  EventCallback callback();
  std::vector<ProxyEvent> all() const;
  // Waits for the first event of type T matching pred.
  template <typename T>
  std::optional<T> wait_for(std::function<bool(const T&)> pred = nullptr,
                            std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock<std::mutex> lock(mu_);
    std::optional<T> found;
    cv_.wait_for(lock, timeout, [&] {
      for (const auto& ev : events_) {
        if (const T* t = std::get_if<T>(&ev)) {
          if (!pred || pred(*t)) {
            found = *t;
            return true;
          }
        }
      }
      return false;
    });
    return found;
  }
  template <typename T>
  size_t count() const {
    std::lock_guard<std::mutex> lock(mu_);
    size_t n = 0;
    for (const auto& ev : events_) n += std::holds_alternative<T>(ev) ? 1 : 0;
    return n;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<ProxyEvent> events_;
};

uint64_t fnv1a(const std::string& data, uint64_t h = 1469598103934665603ull);
std::string pattern(size_t n, size_t offset = 0);

}  // namespace tlswall::proxy::testing
