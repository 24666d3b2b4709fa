// The wire between the daemon and its unprivileged proxy worker process
// (proxy/worker_process.h): message types, a bounds-checked binary codec for
// the proxy's config, events and counters, and SOCK_SEQPACKET send/receive
// with fds attached. Both ends are the same binary (the worker is the
// daemon re-executed), so integers travel in host byte order; the hello
// carries a version all the same, so a mismatch fails loudly.
//
// Two channels, each a socketpair(AF_UNIX, SOCK_SEQPACKET):
//   control  daemon -> worker: hello, listeners (fd attached), config,
//            start, counter queries; worker -> daemon: replies, counters,
//            events (one message each)
//   resolve  worker -> daemon: "where was this accepted connection going?";
//            daemon -> worker: the kernel's record (one request at a time)
// A Reader never trusts its input: every length is checked against what is
// left, every enum against its range; a bad message throws WireError.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "proxy/address.h"
#include "proxy/config.h"
#include "proxy/events.h"
#include "proxy/owned.h"

namespace tlswall::proxy::wire {

inline constexpr uint32_t kVersion = 1;
// How often the worker pushes its counters when they changed: what a dying
// worker counted in its last moments (at most this long) is lost.
inline constexpr std::chrono::milliseconds kCounterPush{100};
// Largest message either side accepts (a config with its PEM files).
inline constexpr size_t kMaxMessageBytes = 16u << 20;

// Each type carries the struct named here (below).
enum class Msg : uint8_t {
  // control, daemon -> worker
  kHello = 1,          // Hello
  kListener = 2,       // Listener, with the listening socket's fd attached
  kConfig = 3,         // Config
  kStart = 4,          // Request: drop privileges, start the engine, Reply
  kCountersQuery = 5,  // Request: Counters
  // control, worker -> daemon
  kReply = 6,     // Reply (to kConfig, kStart)
  kCounters = 7,  // Counters (seq 0: pushed unasked when they changed)
  kEvent = 8,     // ProxyEvent
  // resolve channel
  kResolve = 9,    // Resolve
  kResolved = 10,  // Resolved
};

class WireError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// What the worker needs to know before it receives anything else.
struct Hello {
  uint32_t version = kVersion;
  uint32_t uid = 0;  // drop to these before reading network input
  uint32_t gid = 0;
  uint32_t workers = 2;
  uint64_t max_connections = 10000;
  uint64_t buffer_bytes = 32 * 1024;
  std::chrono::milliseconds handshake_timeout{10000};
  std::chrono::milliseconds first_bytes_wait{200};
  std::chrono::milliseconds idle_timeout{std::chrono::minutes(10)};
  std::string log_level = "info";
};

// Everything the worker counts, as the daemon asks for it.
struct WorkerCounters {
  std::vector<RuleCounters> rules;
  EngineCounters engine;
  uint64_t events_dropped = 0;    // events the daemon was too slow to take
  uint64_t resolve_timeouts = 0;  // original-destination queries unanswered
};

struct Listener {
  bool terminator = false;  // else the upgrade listener
  std::string id;           // the terminator rule's id
};
struct Config {
  uint64_t seq = 0;
  ProxyConfig config;
};
struct Request {
  uint64_t seq = 0;
};
struct Reply {
  uint64_t seq = 0;
  bool ok = false;
  std::string error;  // why not ok
};
struct Counters {
  uint64_t seq = 0;
  WorkerCounters counters;
};
// "Where was the connection from `peer`, accepted on `local`, going?"
struct Resolve {
  uint64_t seq = 0;
  SocketAddress peer, local;
};
struct Resolved {
  uint64_t seq = 0;
  bool found = false;  // else: unknown to the kernel, reset the client
  SocketAddress destination;
  std::string rule;
};

class Writer {
 public:
  explicit Writer(Msg type) { buf_.push_back(static_cast<char>(type)); }
  const std::string& bytes() const { return buf_; }

  void operator()(uint8_t v) { raw(&v, 1); }
  void operator()(bool v) { (*this)(static_cast<uint8_t>(v ? 1 : 0)); }
  void operator()(uint16_t v) { raw(&v, sizeof(v)); }
  void operator()(uint32_t v) { raw(&v, sizeof(v)); }
  void operator()(uint64_t v) { raw(&v, sizeof(v)); }
  void operator()(std::chrono::milliseconds v) { (*this)(static_cast<uint64_t>(v.count())); }
  void operator()(const std::string& v);
  void operator()(const SocketAddress& v);

 private:
  void raw(const void* p, size_t n) { buf_.append(static_cast<const char*>(p), n); }
  std::string buf_;
};

class Reader {
 public:
  // `bytes` is a whole message; type() is its first byte. The Reader keeps
  // a reference: `bytes` must outlive it (hence no temporaries).
  explicit Reader(const std::string& bytes);
  explicit Reader(std::string&&) = delete;
  Msg type() const { return type_; }
  // Throws WireError unless every byte was consumed.
  void finish() const;

  void operator()(uint8_t& v) { raw(&v, 1); }
  void operator()(bool& v);
  void operator()(uint16_t& v) { raw(&v, sizeof(v)); }
  void operator()(uint32_t& v) { raw(&v, sizeof(v)); }
  void operator()(uint64_t& v) { raw(&v, sizeof(v)); }
  void operator()(std::chrono::milliseconds& v);
  void operator()(std::string& v);
  void operator()(SocketAddress& v);
  // A count of elements that each take at least one byte: bounded by what
  // is left, so a forged count cannot make us allocate.
  size_t count();

 private:
  void raw(void* p, size_t n);
  const std::string& bytes_;
  size_t pos_ = 1;
  Msg type_;
};

// The codec of every message body (and of the parts tests look at alone).
void put(Writer& w, const Hello& v);
void put(Writer& w, const Listener& v);
void put(Writer& w, const Config& v);
void put(Writer& w, const Request& v);
void put(Writer& w, const Reply& v);
void put(Writer& w, const Counters& v);
void put(Writer& w, const ProxyEvent& v);
void put(Writer& w, const Resolve& v);
void put(Writer& w, const Resolved& v);
void put(Writer& w, const ProxyConfig& v);
void put(Writer& w, const WorkerCounters& v);
void get(Reader& r, Hello& v);
void get(Reader& r, Listener& v);
void get(Reader& r, Config& v);
void get(Reader& r, Request& v);
void get(Reader& r, Reply& v);
void get(Reader& r, Counters& v);
void get(Reader& r, ProxyEvent& v);
void get(Reader& r, Resolve& v);
void get(Reader& r, Resolved& v);
void get(Reader& r, ProxyConfig& v);
void get(Reader& r, WorkerCounters& v);

// A whole message of `type` carrying `v`.
template <class T>
std::string encode(Msg type, const T& v) {
  Writer w(type);
  put(w, v);
  return w.bytes();
}

// The body of a whole message, which must be of `type` and end where the
// body does. Throws WireError.
template <class T>
T decode(const std::string& bytes, Msg type) {
  Reader r(bytes);
  if (r.type() != type) throw WireError("unexpected message type");
  T v;
  get(r, v);
  r.finish();
  return v;
}

// One received message with the fds that came with it.
struct Message {
  std::string bytes;
  std::vector<OwnedFd> fds;
};

// Sends one message (with fds, if any). Blocking unless dontwait; returns
// false with errno EAGAIN when dontwait and the peer's queue is full.
// Throws std::system_error on any other failure (EPIPE: peer gone).
bool send_message(int fd, const std::string& bytes, const std::vector<int>& fds = {},
                  bool dontwait = false);

// Receives one message, waiting at most timeout (negative: forever).
// nullopt: the peer closed the channel. Throws std::system_error on errors
// and on timeout (ETIMEDOUT); WireError on an empty, oversized or truncated
// message (its fds are closed).
std::optional<Message> recv_message(int fd, std::chrono::milliseconds timeout, size_t max_fds = 1);

}  // namespace tlswall::proxy::wire
