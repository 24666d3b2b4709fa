#include "proxy/worker_protocol.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <map>
#include <system_error>
#include <type_traits>
#include <variant>

namespace tlswall::proxy::wire {

namespace {

[[noreturn]] void throw_errno(int err, const char* what) {
  throw std::system_error(err, std::generic_category(), what);
}

template <class A>
void io_strings(A& a, std::vector<std::string>& v) {
  if constexpr (std::is_same_v<A, Writer>) {
    a(static_cast<uint32_t>(v.size()));
    for (const auto& s : v) a(s);
  } else {
    for (size_t n = a.count(); n > 0; --n) a(v.emplace_back());
  }
}

template <class A, class E>
void io_enum(A& a, E& e, E last) {
  if constexpr (std::is_same_v<A, Writer>) {
    a(static_cast<uint8_t>(e));
  } else {
    uint8_t v = 0;
    a(v);
    if (v > static_cast<uint8_t>(last)) throw WireError("enum value out of range");
    e = static_cast<E>(v);
  }
}

template <class A>
void io_map(A& a, std::map<std::string, std::string>& m) {
  if constexpr (std::is_same_v<A, Writer>) {
    a(static_cast<uint32_t>(m.size()));
    for (const auto& [k, v] : m) {
      a(k);
      a(v);
    }
  } else {
    for (size_t n = a.count(); n > 0; --n) {
      std::string k, v;
      a(k);
      a(v);
      m[k] = std::move(v);
    }
  }
}

template <class A>
void io_size(A& a, size_t& v) {
  if constexpr (std::is_same_v<A, Writer>) {
    a(static_cast<uint64_t>(v));
  } else {
    uint64_t x = 0;
    a(x);
    v = static_cast<size_t>(x);
  }
}

// Fields of every struct, in one place for both directions: io(Writer&, T&)
// writes (the Writer never modifies), io(Reader&, T&) reads.
template <class A>
void io(A& a, UpgradeRule& r) {
  a(r.id);
  a(r.server_name);
  io_map(a, r.server_names);
  a(r.ca_file);
  a(r.ca_dir);
  a(r.cert_file);
  a(r.key_file);
  io_strings(a, r.alpn);
  io_enum(a, r.min_version, TlsVersion::kTls13);
  io_size(a, r.session_cache_entries);
  io_enum(a, r.preamble, UpgradePreamble::kPostgresql);
}

template <class A>
void io(A& a, TerminatorRule& r) {
  a(r.id);
  a(r.cert_file);
  a(r.key_file);
  a(r.client_ca_file);
  a(r.require_client_cert);
  io_enum(a, r.mode, TerminatorMode::kPermissive);
  a(r.backend);
  io_enum(a, r.min_version, TlsVersion::kTls13);
  io_strings(a, r.alpn);
}

template <class A>
void io(A& a, UpgradeFailure& e) {
  a(e.conn_id);
  a(e.rule);
  io_enum(a, e.reason, FailureReason::kPlaintext);
  a(e.detail);
  a(e.client);
  a(e.destination);
}

template <class A>
void io(A& a, Upgraded& e) {
  a(e.conn_id);
  a(e.rule);
  a(e.client);
  a(e.destination);
  a(e.server_name);
  a(e.tls_version);
  a(e.cipher);
  a(e.alpn);
  a(e.peer_subject);
  a(e.resumed);
  a(e.bytes_up);
  a(e.bytes_down);
  a(e.duration);
  a(e.error);
}

template <class A>
void io(A& a, PassedThrough& e) {
  a(e.conn_id);
  a(e.rule);
  a(e.client);
  a(e.destination);
  a(e.bytes_up);
  a(e.bytes_down);
  a(e.duration);
  a(e.error);
}

template <class A>
void io(A& a, TerminatorFailure& e) {
  a(e.conn_id);
  a(e.rule);
  io_enum(a, e.reason, FailureReason::kPlaintext);
  a(e.detail);
  a(e.client);
  a(e.local);
}

template <class A>
void io(A& a, PlaintextAccepted& e) {
  a(e.conn_id);
  a(e.rule);
  a(e.client);
  a(e.local);
}

template <class A>
void io(A& a, Terminated& e) {
  a(e.conn_id);
  a(e.rule);
  a(e.client);
  a(e.backend);
  a(e.local);
  a(e.tls);
  a(e.tls_version);
  a(e.cipher);
  a(e.alpn);
  a(e.client_subject);
  a(e.bytes_in);
  a(e.bytes_out);
  a(e.duration);
  a(e.error);
}

template <class A>
void io(A& a, RuleCounters& c) {
  a(c.rule);
  a(c.terminator);
  a(c.connections);
  a(c.active);
  a(c.bytes_up);
  a(c.bytes_down);
  a(c.passthrough);
  a(c.plaintext);
  a(c.resumed);
  a(c.truncated);
  for (uint64_t& f : c.failures) a(f);
}

template <class A>
void io(A& a, EngineCounters& c) {
  a(c.accepted);
  a(c.active);
  a(c.unknown_destination);
  a(c.capacity_rejected);
  a(c.accept_errors);
}

template <class A>
void io(A& a, Hello& h) {
  a(h.version);
  a(h.uid);
  a(h.gid);
  a(h.workers);
  a(h.max_connections);
  a(h.buffer_bytes);
  a(h.handshake_timeout);
  a(h.first_bytes_wait);
  a(h.idle_timeout);
  a(h.log_level);
}

template <class A, class T>
void io_vector(A& a, std::vector<T>& v) {
  if constexpr (std::is_same_v<A, Writer>) {
    a(static_cast<uint32_t>(v.size()));
    for (T& x : v) io(a, x);
  } else {
    for (size_t n = a.count(); n > 0; --n) io(a, v.emplace_back());
  }
}

template <class A>
void io(A& a, ProxyConfig& c) {
  io_vector(a, c.upgrade);
  io_vector(a, c.terminators);
  io_map(a, c.pem_files);
}

template <class A>
void io(A& a, WorkerCounters& c) {
  io_vector(a, c.rules);
  io(a, c.engine);
  a(c.events_dropped);
  a(c.resolve_timeouts);
}

template <class A>
void io(A& a, Listener& m) {
  a(m.terminator);
  a(m.id);
}

template <class A>
void io(A& a, Config& m) {
  a(m.seq);
  io(a, m.config);
}

template <class A>
void io(A& a, Request& m) {
  a(m.seq);
}

template <class A>
void io(A& a, Reply& m) {
  a(m.seq);
  a(m.ok);
  a(m.error);
}

template <class A>
void io(A& a, Counters& m) {
  a(m.seq);
  io(a, m.counters);
}

template <class A>
void io(A& a, Resolve& m) {
  a(m.seq);
  a(m.peer);
  a(m.local);
}

template <class A>
void io(A& a, Resolved& m) {
  a(m.seq);
  a(m.found);
  a(m.destination);
  a(m.rule);
}

}  // namespace

void Writer::operator()(const std::string& v) {
  (*this)(static_cast<uint32_t>(v.size()));
  raw(v.data(), v.size());
}

void Writer::operator()(const SocketAddress& v) {
  const uint8_t family = v.empty() ? 0 : v.family() == AF_INET ? 4 : 6;
  (*this)(family);
  if (family != 0) raw(v.sa(), v.len());
}

Reader::Reader(const std::string& bytes) : bytes_(bytes) {
  if (bytes.empty()) throw WireError("empty message");
  type_ = static_cast<Msg>(bytes[0]);
}

void Reader::finish() const {
  if (pos_ != bytes_.size()) throw WireError("trailing bytes in message");
}

void Reader::raw(void* p, size_t n) {
  if (n > bytes_.size() - pos_) throw WireError("message truncated");
  std::memcpy(p, bytes_.data() + pos_, n);
  pos_ += n;
}

void Reader::operator()(bool& v) {
  uint8_t b = 0;
  (*this)(b);
  if (b > 1) throw WireError("bad boolean");
  v = b == 1;
}

void Reader::operator()(std::chrono::milliseconds& v) {
  uint64_t ms = 0;
  (*this)(ms);
  if (ms > static_cast<uint64_t>(INT64_MAX)) throw WireError("duration out of range");
  v = std::chrono::milliseconds(static_cast<int64_t>(ms));
}

void Reader::operator()(std::string& v) {
  uint32_t n = 0;
  (*this)(n);
  if (n > bytes_.size() - pos_) throw WireError("string longer than the message");
  v.assign(bytes_.data() + pos_, n);
  pos_ += n;
}

void Reader::operator()(SocketAddress& v) {
  uint8_t family = 0;
  (*this)(family);
  if (family == 0) {
    v = SocketAddress();
    return;
  }
  if (family != 4 && family != 6) throw WireError("bad address family");
  sockaddr_storage ss{};
  const size_t len = family == 4 ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
  raw(&ss, len);
  if (ss.ss_family != (family == 4 ? AF_INET : AF_INET6)) throw WireError("bad address");
  v = SocketAddress(reinterpret_cast<const sockaddr*>(&ss), static_cast<socklen_t>(len));
}

size_t Reader::count() {
  uint32_t n = 0;
  (*this)(n);
  if (n > bytes_.size() - pos_) throw WireError("element count longer than the message");
  return n;
}

// The Writer never modifies what io() hands it.
#define TLSWALL_WIRE_CODEC(T)                                   \
  void put(Writer& w, const T& v) { io(w, const_cast<T&>(v)); } \
  void get(Reader& r, T& v) { io(r, v); }
TLSWALL_WIRE_CODEC(Hello)
TLSWALL_WIRE_CODEC(Listener)
TLSWALL_WIRE_CODEC(Config)
TLSWALL_WIRE_CODEC(Request)
TLSWALL_WIRE_CODEC(Reply)
TLSWALL_WIRE_CODEC(Counters)
TLSWALL_WIRE_CODEC(Resolve)
TLSWALL_WIRE_CODEC(Resolved)
TLSWALL_WIRE_CODEC(ProxyConfig)
TLSWALL_WIRE_CODEC(WorkerCounters)
#undef TLSWALL_WIRE_CODEC

void put(Writer& w, const ProxyEvent& e) {
  w(static_cast<uint8_t>(e.index()));
  std::visit([&](const auto& ev) { io(w, const_cast<std::decay_t<decltype(ev)>&>(ev)); }, e);
}

void get(Reader& r, ProxyEvent& e) {
  uint8_t index = 0;
  r(index);
  switch (index) {
    case 0:
      io(r, e.emplace<0>());
      break;
    case 1:
      io(r, e.emplace<1>());
      break;
    case 2:
      io(r, e.emplace<2>());
      break;
    case 3:
      io(r, e.emplace<3>());
      break;
    case 4:
      io(r, e.emplace<4>());
      break;
    case 5:
      io(r, e.emplace<5>());
      break;
    default:
      throw WireError("unknown event type");
  }
  static_assert(std::variant_size_v<ProxyEvent> == 6, "a new event needs a case here");
}

bool send_message(int fd, const std::string& bytes, const std::vector<int>& fds, bool dontwait) {
  iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control;
  if (!fds.empty()) {
    control.resize(CMSG_SPACE(sizeof(int) * fds.size()));
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(cm), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t n;
  do {
    n = ::sendmsg(fd, &msg, MSG_NOSIGNAL | (dontwait ? MSG_DONTWAIT : 0));
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (dontwait && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
    throw_errno(errno, "sendmsg");
  }
  if (static_cast<size_t>(n) != bytes.size()) throw_errno(EMSGSIZE, "sendmsg short");
  return true;
}

std::optional<Message> recv_message(int fd, std::chrono::milliseconds timeout, size_t max_fds) {
  pollfd p{fd, POLLIN, 0};
  const int ms = timeout.count() < 0 ? -1 : static_cast<int>(timeout.count());
  int rc;
  do {
    rc = ::poll(&p, 1, ms);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) throw_errno(errno, "poll");
  if (rc == 0) throw_errno(ETIMEDOUT, "waiting for the proxy worker channel");
  // The size first (MSG_TRUNC reports the real length), then the message.
  ssize_t size;
  do {
    size = ::recv(fd, nullptr, 0, MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT);
  } while (size < 0 && errno == EINTR);
  if (size < 0 && errno != EAGAIN) throw_errno(errno, "recv");
  Message out;
  out.bytes.resize(size > 0 ? static_cast<size_t>(size) : 1);
  if (out.bytes.size() > kMaxMessageBytes) out.bytes.resize(kMaxMessageBytes);
  iovec iov{out.bytes.data(), out.bytes.size()};
  std::vector<char> control(CMSG_SPACE(sizeof(int) * (max_fds > 0 ? max_fds : 1)));
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  ssize_t n;
  do {
    n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) throw_errno(errno, "recvmsg");
  for (cmsghdr* cm = CMSG_FIRSTHDR(&msg); cm != nullptr; cm = CMSG_NXTHDR(&msg, cm)) {
    if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int f;
      std::memcpy(&f, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
      out.fds.emplace_back(f);
    }
  }
  if (n == 0) return std::nullopt;  // SOCK_SEQPACKET: 0 is end of stream
  if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) throw WireError("message truncated or too large");
  if (out.fds.size() > max_fds) throw WireError("too many fds attached");
  out.bytes.resize(static_cast<size_t>(n));
  return out;
}

}  // namespace tlswall::proxy::wire
