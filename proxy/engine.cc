#include "proxy/engine.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <map>
#include <mutex>
#include <system_error>
#include <thread>
#include <unordered_map>

#include <openssl/err.h>
#include <spdlog/spdlog.h>

extern "C" {
#include "lib/tls_hello.h"
}
#include "proxy/tls_context.h"

namespace tlswall::proxy {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Timer granularity: deadlines (sniff window, handshake, idle) are checked
// this often.
constexpr milliseconds kTick{20};
constexpr int kMaxEvents = 128;
constexpr int kAcceptBurst = 64;
constexpr int kPumpRounds = 32;

// PostgreSQL: SSLRequest and GSSENCRequest (length 8, then a code).
constexpr unsigned char kPgSslRequest[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
constexpr unsigned char kPgGssEncRequest[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30};

// 1: `p` (n bytes) is one of the client's PostgreSQL encryption requests;
// 0: a proper prefix of one (wait for more); -1: neither.
int pg_encryption_request(const char* p, size_t n) {
  const size_t k = std::min<size_t>(n, 8);
  const bool ssl = std::memcmp(p, kPgSslRequest, k) == 0;
  const bool gss = std::memcmp(p, kPgGssEncRequest, k) == 0;
  if (!ssl && !gss) return -1;
  return n >= 8 ? 1 : 0;
}

struct AtomicCounters {
  std::string rule;
  bool terminator = false;
  std::atomic<uint64_t> connections{0}, active{0}, bytes_up{0}, bytes_down{0}, passthrough{0},
      plaintext{0}, resumed{0}, truncated{0};
  std::array<std::atomic<uint64_t>, kFailureReasonCount> failures{};

  RuleCounters snapshot() const {
    RuleCounters out;
    out.rule = rule;
    out.terminator = terminator;
    out.connections = connections.load();
    out.active = active.load();
    out.bytes_up = bytes_up.load();
    out.bytes_down = bytes_down.load();
    out.passthrough = passthrough.load();
    out.plaintext = plaintext.load();
    out.resumed = resumed.load();
    out.truncated = truncated.load();
    for (size_t i = 0; i < kFailureReasonCount; ++i) out.failures[i] = failures[i].load();
    return out;
  }
};

// One generation of compiled rules with their (generation-independent)
// counters.
struct Compiled {
  std::map<std::string, std::shared_ptr<const ClientRuleContext>> upgrade;
  std::map<std::string, std::shared_ptr<const ServerRuleContext>> terminators;
  std::map<std::string, std::shared_ptr<AtomicCounters>> upgrade_counters;
  std::map<std::string, std::shared_ptr<AtomicCounters>> terminator_counters;
};

struct Conn;
struct Listener;

// What an epoll event points at.
struct Handle {
  enum Kind : uint8_t { kListener, kSideA, kSideB, kWake } kind = kWake;
  Conn* conn = nullptr;
  Listener* listener = nullptr;
};

struct Listener {
  Handle handle;
  OwnedFd fd;
  bool terminator = false;
  std::shared_ptr<OriginalDestinationResolver> resolver;
  std::string terminator_id;
  SocketAddress local;
};

// Fixed-capacity byte buffer for one direction; this is the per-connection
// memory bound (plus OpenSSL's record buffers, released while idle).
class Buffer {
 public:
  void init(size_t cap) {
    data_.reset(new char[cap]);
    cap_ = cap;
  }
  size_t size() const { return tail_ - head_; }
  bool empty() const { return head_ == tail_; }
  bool full() const { return size() == cap_; }
  const char* data() const { return data_.get() + head_; }
  // Room to append; compacts when the tail has hit the end.
  char* space_ptr() {
    if (tail_ == cap_ && head_ > 0) {
      std::memmove(data_.get(), data_.get() + head_, size());
      tail_ -= head_;
      head_ = 0;
    }
    return data_.get() + tail_;
  }
  size_t space() const { return cap_ - tail_; }
  void produced(size_t n) { tail_ += n; }
  void consumed(size_t n) {
    head_ += n;
    if (head_ == tail_) head_ = tail_ = 0;
  }

 private:
  std::unique_ptr<char[]> data_;
  size_t cap_ = 0, head_ = 0, tail_ = 0;
};

struct Side {
  Handle handle;
  OwnedFd fd;
  SslPtr ssl;               // null: plain TCP
  bool read_eof = false;    // the peer will send nothing more
  bool write_shut = false;  // we have sent our end (close_notify + FIN)
  bool shutdown_pending = false;
  bool fatal = false;  // an SSL error happened: SSL_shutdown is forbidden
  // Which readiness the last blocked SSL operation of each kind waits for.
  uint32_t want_read = EPOLLIN, want_write = EPOLLOUT, want_hs = EPOLLIN, want_shutdown = EPOLLOUT;
  uint32_t registered = 0;  // mask in epoll; 0: not in epoll
};

// kPreamble: an upgrade toward a server that wants a plaintext request
// before TLS (PostgreSQL's SSLRequest), between connect and handshake.
enum class Phase { kSniff, kConnecting, kPreamble, kHandshake, kPipe };
enum class Mode { kUndecided, kTls, kPassthrough, kPlaintext };

// One proxied connection. Side a is the accepted client; side b the
// destination (upgrade) or backend (terminator).
struct Conn {
  uint64_t id = 0;
  bool terminator = false;
  Phase phase = Phase::kSniff;
  Mode mode = Mode::kUndecided;
  Side a, b;
  Buffer a2b, b2a;
  Clock::time_point started, sniff_deadline, deadline, last_activity;
  SocketAddress client, dst;
  SocketAddress local;  // server side: where the client connected
  std::string rule;
  std::shared_ptr<const ClientRuleContext> up;
  std::shared_ptr<const ServerRuleContext> term;
  std::shared_ptr<AtomicCounters> counters;
  std::string server_name;
  SessionSlot slot;
  bool b_connected = false;
  bool peek_stalled = false;
  size_t preamble_sent = 0;  // kPreamble: bytes of the SSLRequest written
  uint64_t bytes_up = 0, bytes_down = 0;
  bool dead = false;
  std::string tls_version, cipher, alpn, peer_subject;
  bool resumed = false;
};

enum class Io { kOk, kAgain, kEof, kTruncated, kError };

std::string errno_text(int e) { return std::strerror(e); }

Io io_read(Side& s, char* p, size_t n, size_t* got, std::string* err) {
  if (s.ssl) {
    ERR_clear_error();
    errno = 0;
    int r = SSL_read(s.ssl.get(), p, static_cast<int>(std::min<size_t>(n, INT_MAX)));
    if (r > 0) {
      *got = static_cast<size_t>(r);
      s.want_read = EPOLLIN;
      return Io::kOk;
    }
    int e = SSL_get_error(s.ssl.get(), r);
    switch (e) {
      case SSL_ERROR_WANT_READ:
        s.want_read = EPOLLIN;
        return Io::kAgain;
      case SSL_ERROR_WANT_WRITE:
        s.want_read = EPOLLOUT;
        return Io::kAgain;
      case SSL_ERROR_ZERO_RETURN:
        return Io::kEof;
      case SSL_ERROR_SYSCALL:
        s.fatal = true;
        if (errno == 0) {
          ERR_clear_error();
          return Io::kTruncated;
        }
        *err = errno_text(errno);
        return Io::kError;
      case SSL_ERROR_SSL:
        s.fatal = true;
        if (ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
          ERR_clear_error();
          return Io::kTruncated;
        }
        *err = drain_openssl_errors();
        return Io::kError;
      default:
        s.fatal = true;
        *err = "SSL_read: error " + std::to_string(e);
        return Io::kError;
    }
  }
  for (;;) {
    ssize_t r = ::recv(s.fd.get(), p, n, 0);
    if (r > 0) {
      *got = static_cast<size_t>(r);
      return Io::kOk;
    }
    if (r == 0) return Io::kEof;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Io::kAgain;
    *err = errno_text(errno);
    return Io::kError;
  }
}

Io io_write(Side& s, const char* p, size_t n, size_t* put, std::string* err) {
  if (s.ssl) {
    ERR_clear_error();
    errno = 0;
    int r = SSL_write(s.ssl.get(), p, static_cast<int>(std::min<size_t>(n, INT_MAX)));
    if (r > 0) {
      *put = static_cast<size_t>(r);
      s.want_write = EPOLLOUT;
      return Io::kOk;
    }
    int e = SSL_get_error(s.ssl.get(), r);
    if (e == SSL_ERROR_WANT_WRITE) {
      s.want_write = EPOLLOUT;
      return Io::kAgain;
    }
    if (e == SSL_ERROR_WANT_READ) {
      s.want_write = EPOLLIN;
      return Io::kAgain;
    }
    s.fatal = true;
    *err = e == SSL_ERROR_SYSCALL && errno != 0 ? errno_text(errno) : drain_openssl_errors();
    if (err->empty()) *err = "SSL_write: error " + std::to_string(e);
    return Io::kError;
  }
  for (;;) {
    ssize_t r = ::send(s.fd.get(), p, n, MSG_NOSIGNAL);
    if (r >= 0) {
      *put = static_cast<size_t>(r);
      return r > 0 ? Io::kOk : Io::kAgain;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Io::kAgain;
    *err = errno_text(errno);
    return Io::kError;
  }
}

// Close so that the peer gets a RST at once (SO_LINGER 0).
void reset_fd(OwnedFd& fd) {
  if (!fd) return;
  linger lg{1, 0};
  setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  fd.reset();
}

void set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

// State shared by the engine's public face and its workers.
struct Shared {
  EngineOptions opts;
  std::atomic<uint64_t> next_id{1};
  std::atomic<size_t> active{0};
  std::atomic<uint64_t> accepted{0}, unknown{0}, capacity_rejected{0}, accept_errors{0};

  mutable std::mutex config_mu;
  std::shared_ptr<const Compiled> config = std::make_shared<Compiled>();
  // Counters by rule id, kept across generations.
  std::map<std::string, std::shared_ptr<AtomicCounters>> upgrade_counters, terminator_counters;

  std::shared_ptr<const Compiled> current() const {
    std::lock_guard<std::mutex> lock(config_mu);
    return config;
  }
  bool reserve_slot() {
    size_t n = active.fetch_add(1);
    if (n >= opts.max_connections) {
      active.fetch_sub(1);
      return false;
    }
    return true;
  }
  void emit(ProxyEvent ev) {
    if (!opts.on_event) return;
    try {
      opts.on_event(ev);
    } catch (const std::exception& e) {
      if (opts.logger) opts.logger->error("event callback threw: {}", e.what());
    } catch (...) {
      if (opts.logger) opts.logger->error("event callback threw");
    }
  }
};

class Worker {
 public:
  Worker(Shared& shared, unsigned index) : e_(shared), index_(index) {
    epfd_.reset(epoll_create1(EPOLL_CLOEXEC));
    if (!epfd_) throw std::system_error(errno, std::generic_category(), "epoll_create1");
    wake_.reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!wake_) throw std::system_error(errno, std::generic_category(), "eventfd");
    reserve_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    wake_handle_.kind = Handle::kWake;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = &wake_handle_;
    if (epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, wake_.get(), &ev) != 0) {
      throw std::system_error(errno, std::generic_category(), "epoll_ctl wake");
    }
  }
  ~Worker() { stop(); }

  void add_listener(Listener* l) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLEXCLUSIVE;
    ev.data.ptr = &l->handle;
    if (epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, l->fd.get(), &ev) != 0) {
      throw std::system_error(errno, std::generic_category(), "epoll_ctl listener");
    }
  }

  void start() {
    thread_ = std::thread([this] { run(); });
  }
  void stop() {
    if (!thread_.joinable()) return;
    stop_.store(true);
    uint64_t one = 1;
    ssize_t w = ::write(wake_.get(), &one, sizeof(one));
    (void)w;
    thread_.join();
  }

 private:
  void run();
  void on_listener(Listener& l);
  void accept_conn(Listener& l, OwnedFd fd);
  void on_side_event(Conn& c, bool is_a, uint32_t events);
  void pump(Conn& c);
  bool sniff_upgrade(Conn& c);
  bool sniff_terminator(Conn& c);
  void decide_upgrade(Conn& c, Mode mode);
  void decide_plaintext(Conn& c);
  void begin_after_connect(Conn& c);
  void start_connect(Conn& c, const SocketAddress& to);
  bool handshake(Conn& c);
  bool server_preamble(Conn& c);
  void on_established(Conn& c, SSL* ssl);
  bool a_readable(const Conn& c) const;
  bool read_into(Conn& c, Side& s, Buffer& buf, bool from_client);
  bool write_from(Conn& c, Buffer& buf, Side& s, bool to_server);
  bool half_close(Conn& c);
  bool shut_write(Side& s);
  void update_interest(Conn& c);
  void set_interest(Side& s, uint32_t mask);
  void tick(Clock::time_point now);
  void fail(Conn& c, FailureReason reason, const std::string& detail);
  void abort(Conn& c, const std::string& error);
  void finish(Conn& c, const std::string& error);
  void report_close(Conn& c, const std::string& error);
  void close_conn(Conn& c, bool reset);
  void reap();

  spdlog::logger* log() const { return e_.opts.logger; }

  Shared& e_;
  unsigned index_;
  OwnedFd epfd_;
  OwnedFd wake_;
  OwnedFd reserve_;  // spent to shed a connection when accept() hits EMFILE
  Handle wake_handle_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::unordered_map<Conn*, std::unique_ptr<Conn>> conns_;
  std::vector<Conn*> dead_;
  std::vector<Conn*> ready_;  // pumped again without waiting for epoll
};

void Worker::run() {
  // SIGPIPE from OpenSSL's socket writes stays pending on this thread
  // instead of killing the process; the write returns EPIPE.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  epoll_event evs[kMaxEvents];
  auto next_tick = Clock::now() + kTick;
  while (!stop_.load(std::memory_order_relaxed)) {
    int timeout = 0;
    if (ready_.empty()) {
      auto left = std::chrono::duration_cast<milliseconds>(next_tick - Clock::now()).count();
      timeout = static_cast<int>(std::max<long long>(0, left)) + 1;
    }
    int n = epoll_wait(epfd_.get(), evs, kMaxEvents, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (log()) log()->critical("worker {}: epoll_wait: {}", index_, errno_text(errno));
      break;
    }
    for (int i = 0; i < n; ++i) {
      auto* h = static_cast<Handle*>(evs[i].data.ptr);
      switch (h->kind) {
        case Handle::kWake: {
          uint64_t v;
          ssize_t r = ::read(wake_.get(), &v, sizeof(v));
          (void)r;
          break;
        }
        case Handle::kListener:
          on_listener(*h->listener);
          break;
        case Handle::kSideA:
        case Handle::kSideB:
          if (!h->conn->dead) on_side_event(*h->conn, h->kind == Handle::kSideA, evs[i].events);
          break;
      }
    }
    if (!ready_.empty()) {
      std::vector<Conn*> again;
      again.swap(ready_);
      for (Conn* c : again) {
        if (!c->dead) pump(*c);
      }
    }
    auto now = Clock::now();
    if (now >= next_tick) {
      tick(now);
      next_tick = now + kTick;
    }
    reap();
  }
  for (auto& [p, c] : conns_) {
    if (!c->dead) close_conn(*c, true);
  }
  reap();
}

void Worker::reap() {
  if (dead_.empty()) return;
  for (Conn* c : dead_) {
    ready_.erase(std::remove(ready_.begin(), ready_.end(), c), ready_.end());
    conns_.erase(c);
  }
  dead_.clear();
}

void Worker::on_listener(Listener& l) {
  for (int i = 0; i < kAcceptBurst; ++i) {
    int fd = ::accept4(l.fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR || errno == ECONNABORTED) continue;
      const int err = errno;
      e_.accept_errors.fetch_add(1);
      if ((err == EMFILE || err == ENFILE) && reserve_) {
        // Out of fds: the pending connection would keep the level-triggered
        // listener firing. Spend the reserve fd to accept and reset it.
        reserve_.reset();
        OwnedFd victim(::accept4(l.fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
        reset_fd(victim);
        reserve_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
      }
      if (log()) log()->warn("accept on {}: {}", l.local.to_string(), errno_text(err));
      return;
    }
    e_.accepted.fetch_add(1);
    accept_conn(l, OwnedFd(fd));
  }
}

void Worker::accept_conn(Listener& l, OwnedFd fd) {
  const uint64_t id = e_.next_id.fetch_add(1);
  const SocketAddress peer = SocketAddress::peer_of(fd.get());
  const auto cfg = e_.current();
  auto c = std::make_unique<Conn>();
  c->id = id;
  c->client = peer;
  c->terminator = l.terminator;
  if (l.terminator) c->local = SocketAddress::local_of(fd.get());
  if (!l.terminator) {
    std::optional<OriginalDestination> od;
    try {
      od = l.resolver->resolve(fd.get(), peer, SocketAddress::local_of(fd.get()));
    } catch (const std::exception& ex) {
      if (log()) log()->error("conn {}: resolver threw: {}", id, ex.what());
    }
    std::string why;
    if (!od || od->address.empty()) {
      why = "no original destination for " + peer.to_string();
    } else if (od->address == l.local) {
      why = "original destination is the proxy itself";
    } else if (cfg->upgrade.count(od->rule_id) == 0) {
      why = "no upgrade rule '" + od->rule_id + "'";
    }
    if (!why.empty()) {
      e_.unknown.fetch_add(1);
      reset_fd(fd);
      if (log()) log()->info("conn {}: reset: {}", id, why);
      e_.emit(UpgradeFailure{id, od ? od->rule_id : "", FailureReason::kUnknownDestination, why,
                             peer, od ? od->address : SocketAddress()});
      return;
    }
    c->rule = od->rule_id;
    c->dst = od->address;
    c->up = cfg->upgrade.at(c->rule);
    c->counters = cfg->upgrade_counters.at(c->rule);
  } else {
    auto it = cfg->terminators.find(l.terminator_id);
    if (it == cfg->terminators.end()) {
      e_.unknown.fetch_add(1);
      reset_fd(fd);
      e_.emit(TerminatorFailure{id, l.terminator_id, FailureReason::kUnknownDestination,
                                "no terminator rule '" + l.terminator_id + "'", peer, c->local});
      return;
    }
    c->rule = l.terminator_id;
    c->term = it->second;
    c->dst = c->term->rule().backend;
    c->counters = cfg->terminator_counters.at(c->rule);
  }
  c->counters->connections.fetch_add(1);
  if (!e_.reserve_slot()) {
    e_.capacity_rejected.fetch_add(1);
    c->counters->failures[static_cast<size_t>(FailureReason::kCapacity)].fetch_add(1);
    reset_fd(fd);
    const std::string detail =
        "max_connections " + std::to_string(e_.opts.max_connections) + " reached";
    if (l.terminator) {
      e_.emit(TerminatorFailure{id, c->rule, FailureReason::kCapacity, detail, peer, c->local});
    } else {
      e_.emit(UpgradeFailure{id, c->rule, FailureReason::kCapacity, detail, peer, c->dst});
    }
    return;
  }
  c->counters->active.fetch_add(1);

  Conn& conn = *c;
  conns_.emplace(c.get(), std::move(c));
  conn.started = conn.last_activity = Clock::now();
  conn.deadline = conn.started + e_.opts.handshake_timeout;
  conn.sniff_deadline = conn.started + e_.opts.first_bytes_wait;
  conn.a2b.init(e_.opts.buffer_bytes);
  conn.b2a.init(e_.opts.buffer_bytes);
  conn.a.fd = std::move(fd);
  conn.a.handle = Handle{Handle::kSideA, &conn, nullptr};
  conn.b.handle = Handle{Handle::kSideB, &conn, nullptr};
  set_nodelay(conn.a.fd.get());

  if (!conn.terminator) {
    const std::string* name = conn.up->server_name_for(conn.dst);
    if (name == nullptr) {
      fail(conn, FailureReason::kHostname, "rule has no server name for " + conn.dst.to_string());
      return;
    }
    conn.server_name = *name;
    conn.slot.cache = conn.up->sessions();
    conn.slot.key = conn.dst.to_string() + "/" + conn.server_name;
    // Connect while we look at the client's first bytes.
    start_connect(conn, conn.dst);
    if (conn.dead) return;
  }
  pump(conn);
}

void Worker::start_connect(Conn& c, const SocketAddress& to) {
  OwnedFd fd(::socket(to.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return fail(c, FailureReason::kConnect, "socket: " + errno_text(errno));
  set_nodelay(fd.get());
  if (e_.opts.outbound_socket_hook) {
    int err = e_.opts.outbound_socket_hook(fd.get(), to);
    if (err != 0) {
      return fail(c, FailureReason::kConnect, "outbound socket hook: " + errno_text(err));
    }
  }
  c.b.fd = std::move(fd);
  if (::connect(c.b.fd.get(), to.sa(), to.len()) == 0) {
    c.b_connected = true;
  } else if (errno != EINPROGRESS) {
    return fail(c, FailureReason::kConnect, "connect " + to.to_string() + ": " + errno_text(errno));
  }
  if (c.b_connected && c.mode != Mode::kUndecided) begin_after_connect(c);
}

void Worker::on_side_event(Conn& c, bool is_a, uint32_t events) {
  if (!is_a && !c.b_connected) {
    if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
      int err = 0;
      socklen_t len = sizeof(err);
      if (getsockopt(c.b.fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
      if (err != 0) {
        return fail(c, FailureReason::kConnect,
                    "connect " + c.dst.to_string() + ": " + errno_text(err));
      }
      c.b_connected = true;
      if (c.mode != Mode::kUndecided) begin_after_connect(c);
      if (c.dead) return;
    }
  }
  pump(c);
}

bool Worker::a_readable(const Conn& c) const {
  if (c.mode == Mode::kUndecided) return false;  // sniffing reads by itself
  if (c.a.ssl && c.phase == Phase::kHandshake) return false;
  return !c.a.read_eof && !c.a2b.full();
}

void Worker::pump(Conn& c) {
  bool progress = false;
  for (int round = 0; round < kPumpRounds; ++round) {
    progress = false;
    if (c.phase == Phase::kSniff) {
      progress |= c.terminator ? sniff_terminator(c) : sniff_upgrade(c);
      if (c.dead) return;
    }
    if (c.phase == Phase::kPreamble) {
      progress |= server_preamble(c);
      if (c.dead) return;
    }
    if (c.phase == Phase::kHandshake) {
      progress |= handshake(c);
      if (c.dead) return;
    }
    if (a_readable(c)) {
      progress |= read_into(c, c.a, c.a2b, true);
      if (c.dead) return;
    }
    if (c.phase == Phase::kPipe) {
      progress |= write_from(c, c.a2b, c.b, true);
      if (c.dead) return;
      if (!c.b.read_eof && !c.b2a.full()) {
        progress |= read_into(c, c.b, c.b2a, false);
        if (c.dead) return;
      }
      progress |= write_from(c, c.b2a, c.a, false);
      if (c.dead) return;
      progress |= half_close(c);
      if (c.a.read_eof && c.b.read_eof && c.a.write_shut && c.b.write_shut) {
        finish(c, "");
        return;
      }
    }
    if (!progress) break;
  }
  // Still making progress after the round limit: OpenSSL may hold decrypted
  // bytes epoll cannot see, so come back without waiting for an event.
  if (progress) ready_.push_back(&c);
  update_interest(c);
}

bool Worker::sniff_upgrade(Conn& c) {
  bool progress = false;
  if (!c.a.read_eof && !c.a2b.full()) {
    progress = read_into(c, c.a, c.a2b, true);
    if (c.dead) return false;
  }
  if (!c.a2b.empty() && c.up->rule().preamble == UpgradePreamble::kPostgresql) {
    // The client asks for TLS or GSS encryption itself: say no for the
    // server (the proxy makes the TLS), and wait for its startup message.
    const int r = pg_encryption_request(c.a2b.data(), c.a2b.size());
    if (r == 0 && !c.a.read_eof) return progress;
    if (r == 1) {
      const char no = 'N';
      if (::send(c.a.fd.get(), &no, 1, MSG_NOSIGNAL) != 1) {
        fail(c, FailureReason::kProtocol,
             "client: cannot answer its SSLRequest: " + errno_text(errno));
        return false;
      }
      c.a2b.consumed(8);
      return true;
    }
  }
  if (!c.a2b.empty()) {
    __u16 version = 0;
    const size_t n = std::min<size_t>(c.a2b.size(), TW_HELLO_PREFIX);
    int r = tw_hello_judge(reinterpret_cast<const __u8*>(c.a2b.data()), static_cast<__u32>(n),
                           &version);
    if (r == TW_HELLO_VALID) {
      decide_upgrade(c, Mode::kPassthrough);
      return true;
    }
    if (r < 0 || c.a.read_eof) {
      decide_upgrade(c, Mode::kTls);
      return true;
    }
  } else if (c.a.read_eof) {
    decide_upgrade(c, Mode::kTls);
    return true;
  }
  return progress;
}

void Worker::decide_upgrade(Conn& c, Mode mode) {
  c.mode = mode;
  c.phase = Phase::kConnecting;
  if (mode == Mode::kPassthrough) c.counters->passthrough.fetch_add(1);
  if (log()) {
    log()->debug("conn {}: {} -> {} rule {}: {}", c.id, c.client.to_string(), c.dst.to_string(),
                 c.rule, mode == Mode::kPassthrough ? "client speaks TLS, passthrough" : "upgrade");
  }
  if (c.b_connected) begin_after_connect(c);
}

bool Worker::sniff_terminator(Conn& c) {
  unsigned char buf[TW_HELLO_PREFIX];
  ssize_t n;
  do {
    n = ::recv(c.a.fd.get(), buf, sizeof(buf), MSG_PEEK);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
    fail(c, FailureReason::kProtocol, "client: " + errno_text(errno));
    return false;
  }
  if (n == 0) {  // closed before saying anything: nothing to report
    close_conn(c, false);
    return false;
  }
  __u16 version = 0;
  int r = tw_hello_judge(buf, static_cast<__u32>(n), &version);
  if (r == TW_HELLO_NEED_MORE) {
    // The peeked bytes stay readable, so level-triggered epoll would spin:
    // look again at the next tick.
    c.peek_stalled = true;
    return false;
  }
  if (r == TW_HELLO_VALID) {
    c.mode = Mode::kTls;
    c.a.ssl = c.term->new_ssl(c.a.fd.get());
    if (!c.a.ssl) {
      fail(c, FailureReason::kProtocol, "SSL_new: " + drain_openssl_errors());
      return false;
    }
    c.phase = Phase::kHandshake;
    return true;
  }
  decide_plaintext(c);
  return true;
}

void Worker::decide_plaintext(Conn& c) {
  if (c.term->rule().mode == TerminatorMode::kStrict) {
    return fail(c, FailureReason::kPlaintext, "first bytes are not a TLS ClientHello");
  }
  c.mode = Mode::kPlaintext;
  c.phase = Phase::kConnecting;
  c.counters->plaintext.fetch_add(1);
  e_.emit(PlaintextAccepted{c.id, c.rule, c.client, c.local});
  start_connect(c, c.dst);
}

void Worker::begin_after_connect(Conn& c) {
  if (!c.terminator && c.mode == Mode::kTls &&
      c.up->rule().preamble == UpgradePreamble::kPostgresql && c.phase != Phase::kPreamble) {
    c.phase = Phase::kPreamble;
    return;
  }
  if (!c.terminator && c.mode == Mode::kTls) {
    c.b.ssl = c.up->new_ssl(c.b.fd.get(), c.server_name, &c.slot);
    if (!c.b.ssl) return fail(c, FailureReason::kProtocol, "SSL_new: " + drain_openssl_errors());
    c.phase = Phase::kHandshake;
    return;
  }
  c.phase = Phase::kPipe;
  c.last_activity = Clock::now();
}

// PostgreSQL before TLS: SSLRequest out, one byte back ('S': go on with
// the handshake; anything else fails closed, nothing of the client's was
// sent). Only that byte is read, so no TLS byte is taken from the stream.
bool Worker::server_preamble(Conn& c) {
  while (c.preamble_sent < sizeof(kPgSslRequest)) {
    const ssize_t n = ::send(c.b.fd.get(), kPgSslRequest + c.preamble_sent,
                             sizeof(kPgSslRequest) - c.preamble_sent, MSG_NOSIGNAL);
    if (n > 0) {
      c.preamble_sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && (errno == EINTR)) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
    fail(c, FailureReason::kConnect, "server: sending SSLRequest: " + errno_text(errno));
    return false;
  }
  char answer = 0;
  ssize_t n;
  do {
    n = ::recv(c.b.fd.get(), &answer, 1, 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
  if (n < 0) {
    fail(c, FailureReason::kConnect, "server: after SSLRequest: " + errno_text(errno));
    return false;
  }
  if (n == 0 || answer != 'S') {
    fail(c, FailureReason::kProtocol,
         n == 0 ? std::string("server closed the connection after SSLRequest")
         : answer == 'N'
             ? std::string("server refused TLS (answered 'N' to SSLRequest)")
             : "server answered SSLRequest with byte " +
                   std::to_string(static_cast<int>(static_cast<unsigned char>(answer))));
    return false;
  }
  begin_after_connect(c);  // phase is kPreamble: now the TLS handshake
  return true;
}

bool Worker::handshake(Conn& c) {
  Side& s = c.terminator ? c.a : c.b;
  ERR_clear_error();
  errno = 0;
  int r = SSL_do_handshake(s.ssl.get());
  if (r == 1) {
    on_established(c, s.ssl.get());
    return true;
  }
  int e = SSL_get_error(s.ssl.get(), r);
  if (e == SSL_ERROR_WANT_READ) {
    s.want_hs = EPOLLIN;
    return false;
  }
  if (e == SSL_ERROR_WANT_WRITE) {
    s.want_hs = EPOLLOUT;
    return false;
  }
  s.fatal = true;
  std::string detail;
  FailureReason reason = classify_handshake_failure(s.ssl.get(), e, &detail);
  fail(c, reason, detail);
  return false;
}

void Worker::on_established(Conn& c, SSL* ssl) {
  c.tls_version = SSL_get_version(ssl);
  c.cipher = SSL_get_cipher_name(ssl);
  const unsigned char* proto = nullptr;
  unsigned int len = 0;
  SSL_get0_alpn_selected(ssl, &proto, &len);
  if (proto != nullptr) c.alpn.assign(reinterpret_cast<const char*>(proto), len);
  c.peer_subject = subject_of(SSL_get0_peer_certificate(ssl));
  c.resumed = SSL_session_reused(ssl) == 1;
  if (c.resumed) c.counters->resumed.fetch_add(1);
  if (log()) {
    log()->debug("conn {}: {} {} with {} ({}){}", c.id, c.tls_version, c.cipher,
                 c.terminator ? c.client.to_string() : c.dst.to_string(), c.peer_subject,
                 c.resumed ? " resumed" : "");
  }
  if (c.terminator) {
    c.phase = Phase::kConnecting;
    start_connect(c, c.dst);
    return;
  }
  c.phase = Phase::kPipe;
  c.last_activity = Clock::now();
}

bool Worker::read_into(Conn& c, Side& s, Buffer& buf, bool from_client) {
  bool progress = false;
  // After a TLS read, go on decrypting the records OpenSSL has read ahead
  // while there is room, so the plaintext side gets one larger write instead
  // of one per record.
  do {
    if (s.read_eof || buf.full()) return progress;
    char* p = buf.space_ptr();  // compacts first, then space() is the room
    size_t got = 0;
    std::string err;
    switch (io_read(s, p, buf.space(), &got, &err)) {
      case Io::kOk:
        buf.produced(got);
        c.last_activity = Clock::now();
        progress = true;
        break;
      case Io::kAgain:
        return progress;
      case Io::kTruncated:
        c.counters->truncated.fetch_add(1);
        [[fallthrough]];
      case Io::kEof:
        s.read_eof = true;
        return true;
      case Io::kError:
        abort(c, std::string(from_client ? "client: " : "server: ") + err);
        return false;
    }
  } while (s.ssl && SSL_has_pending(s.ssl.get()));
  return progress;
}

bool Worker::write_from(Conn& c, Buffer& buf, Side& s, bool to_server) {
  if (buf.empty() || s.write_shut) return false;
  size_t put = 0;
  std::string err;
  switch (io_write(s, buf.data(), buf.size(), &put, &err)) {
    case Io::kOk:
      buf.consumed(put);
      c.last_activity = Clock::now();
      if (to_server) {
        c.bytes_up += put;
        c.counters->bytes_up.fetch_add(put, std::memory_order_relaxed);
      } else {
        c.bytes_down += put;
        c.counters->bytes_down.fetch_add(put, std::memory_order_relaxed);
      }
      return true;
    case Io::kAgain:
      return false;
    default:
      abort(c, std::string(to_server ? "server: " : "client: ") + err);
      return false;
  }
}

bool Worker::half_close(Conn& c) {
  bool progress = false;
  if (c.a.read_eof && c.a2b.empty() && !c.b.write_shut) progress |= shut_write(c.b);
  if (c.b.read_eof && c.b2a.empty() && !c.a.write_shut) progress |= shut_write(c.a);
  return progress;
}

bool Worker::shut_write(Side& s) {
  if (s.ssl && !s.fatal) {
    ERR_clear_error();
    int r = SSL_shutdown(s.ssl.get());
    if (r < 0) {
      int e = SSL_get_error(s.ssl.get(), r);
      if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
        s.shutdown_pending = true;
        s.want_shutdown = e == SSL_ERROR_WANT_WRITE ? EPOLLOUT : EPOLLIN;
        return false;
      }
      ERR_clear_error();  // the peer is gone; the FIN below is all we can do
    }
    s.shutdown_pending = false;
  }
  ::shutdown(s.fd.get(), SHUT_WR);
  s.write_shut = true;
  return true;
}

void Worker::set_interest(Side& s, uint32_t mask) {
  if (!s.fd || mask == s.registered) return;
  epoll_event ev{};
  ev.events = mask;
  ev.data.ptr = &s.handle;
  int op = s.registered == 0 ? EPOLL_CTL_ADD : (mask == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD);
  if (epoll_ctl(epfd_.get(), op, s.fd.get(), &ev) != 0 && log()) {
    log()->error("worker {}: epoll_ctl: {}", index_, errno_text(errno));
  }
  s.registered = mask;
}

// Level-triggered interest from the state; a side we need nothing from is
// taken out of epoll (a hung-up socket would otherwise report forever).
void Worker::update_interest(Conn& c) {
  uint32_t ma = 0, mb = 0;
  Side& a = c.a;
  Side& b = c.b;
  if (c.phase == Phase::kSniff && c.terminator) {
    ma = c.peek_stalled ? 0u : uint32_t{EPOLLIN};
  } else if (c.phase == Phase::kSniff) {
    ma = (!a.read_eof && !c.a2b.full()) ? uint32_t{EPOLLIN} : 0u;
  } else if (a.ssl && c.phase == Phase::kHandshake) {
    ma = a.want_hs;
  } else {
    if (a_readable(c)) ma |= a.ssl ? a.want_read : EPOLLIN;
    if (c.phase == Phase::kPipe && !c.b2a.empty()) ma |= a.ssl ? a.want_write : EPOLLOUT;
    if (a.shutdown_pending) ma |= a.want_shutdown;
  }
  if (b.fd) {
    if (!c.b_connected) {
      mb = EPOLLOUT;
    } else if (c.phase == Phase::kPreamble) {
      mb = c.preamble_sent < sizeof(kPgSslRequest) ? uint32_t{EPOLLOUT} : uint32_t{EPOLLIN};
    } else if (c.phase == Phase::kHandshake && !c.terminator) {
      mb = b.want_hs;
    } else if (c.phase == Phase::kPipe) {
      if (!b.read_eof && !c.b2a.full()) mb |= b.ssl ? b.want_read : EPOLLIN;
      if (!c.a2b.empty()) mb |= b.ssl ? b.want_write : EPOLLOUT;
      if (b.shutdown_pending) mb |= b.want_shutdown;
    }
  }
  set_interest(a, ma);
  set_interest(b, mb);
}

void Worker::tick(Clock::time_point now) {
  std::vector<Conn*> due;
  for (auto& [p, c] : conns_) {
    if (!c->dead) due.push_back(p);
  }
  for (Conn* c : due) {
    if (c->dead) continue;
    if (c->phase != Phase::kPipe) {
      if (now >= c->deadline) {
        const char* what = c->phase == Phase::kSniff       ? "waiting for the first bytes"
                           : !c->b_connected && c->b.fd    ? "connecting"
                           : c->phase == Phase::kPreamble  ? "waiting for the answer to SSLRequest"
                           : c->phase == Phase::kHandshake ? "TLS handshake"
                                                           : "connecting";
        fail(*c, FailureReason::kTimeout,
             std::string("timed out after ") + std::to_string(e_.opts.handshake_timeout.count()) +
                 " ms " + what);
        continue;
      }
      if (c->phase == Phase::kSniff) {
        if (c->peek_stalled) {
          c->peek_stalled = false;
          pump(*c);
          if (c->dead || c->phase != Phase::kSniff) continue;
        }
        if (now >= c->sniff_deadline) {
          if (!c->terminator) {
            decide_upgrade(*c, Mode::kTls);  // a server-speaks-first protocol
            if (!c->dead) pump(*c);
          } else if (c->term->rule().mode == TerminatorMode::kPermissive && !c->peek_stalled) {
            decide_plaintext(*c);
            if (!c->dead) pump(*c);
          }
        }
      }
      continue;
    }
    if (now - c->last_activity >= e_.opts.idle_timeout) finish(*c, "idle timeout");
  }
}

void Worker::fail(Conn& c, FailureReason reason, const std::string& detail) {
  if (c.dead) return;
  c.counters->failures[static_cast<size_t>(reason)].fetch_add(1);
  if (log()) {
    log()->info("conn {}: {} rule {} {}: {} ({})", c.id, c.terminator ? "terminate" : "upgrade",
                c.rule, c.terminator ? c.client.to_string() : c.dst.to_string(), to_string(reason),
                detail);
  }
  if (c.terminator) {
    e_.emit(TerminatorFailure{c.id, c.rule, reason, detail, c.client, c.local});
  } else {
    e_.emit(UpgradeFailure{c.id, c.rule, reason, detail, c.client, c.dst});
  }
  close_conn(c, true);
}

void Worker::abort(Conn& c, const std::string& error) {
  if (c.phase != Phase::kPipe) return fail(c, FailureReason::kProtocol, error);
  finish(c, error);
}

void Worker::finish(Conn& c, const std::string& error) {
  if (c.dead) return;
  report_close(c, error);
  close_conn(c, !error.empty());
}

void Worker::report_close(Conn& c, const std::string& error) {
  const auto dur = std::chrono::duration_cast<milliseconds>(Clock::now() - c.started);
  if (log()) {
    log()->debug("conn {}: closed, {} up {} down{}{}", c.id, c.bytes_up, c.bytes_down,
                 error.empty() ? "" : ": ", error);
  }
  if (c.terminator) {
    Terminated ev;
    ev.conn_id = c.id;
    ev.rule = c.rule;
    ev.client = c.client;
    ev.backend = c.dst;
    ev.local = c.local;
    ev.tls = c.mode == Mode::kTls;
    ev.tls_version = c.tls_version;
    ev.cipher = c.cipher;
    ev.alpn = c.alpn;
    ev.client_subject = c.peer_subject;
    ev.bytes_in = c.bytes_up;
    ev.bytes_out = c.bytes_down;
    ev.duration = dur;
    ev.error = error;
    e_.emit(std::move(ev));
  } else if (c.mode == Mode::kPassthrough) {
    e_.emit(PassedThrough{c.id, c.rule, c.client, c.dst, c.bytes_up, c.bytes_down, dur, error});
  } else {
    Upgraded ev;
    ev.conn_id = c.id;
    ev.rule = c.rule;
    ev.client = c.client;
    ev.destination = c.dst;
    ev.server_name = c.server_name;
    ev.tls_version = c.tls_version;
    ev.cipher = c.cipher;
    ev.alpn = c.alpn;
    ev.peer_subject = c.peer_subject;
    ev.resumed = c.resumed;
    ev.bytes_up = c.bytes_up;
    ev.bytes_down = c.bytes_down;
    ev.duration = dur;
    ev.error = error;
    e_.emit(std::move(ev));
  }
}

void Worker::close_conn(Conn& c, bool reset) {
  if (c.dead) return;
  c.dead = true;
  for (Side* s : {&c.a, &c.b}) {
    if (s->fd && s->registered != 0) {
      epoll_ctl(epfd_.get(), EPOLL_CTL_DEL, s->fd.get(), nullptr);
      s->registered = 0;
    }
    s->ssl.reset();
    if (reset) {
      reset_fd(s->fd);
    } else {
      s->fd.reset();
    }
  }
  c.counters->active.fetch_sub(1);
  e_.active.fetch_sub(1);
  dead_.push_back(&c);
}

}  // namespace

// ---- Engine ----

struct Engine::Impl {
  Shared shared;
  std::mutex mu;  // listeners, workers, running
  std::vector<std::unique_ptr<Listener>> listeners;
  std::vector<std::unique_ptr<Worker>> workers;
  bool started = false;

  void add_listener(std::unique_ptr<Listener> l) {
    int flags = fcntl(l->fd.get(), F_GETFL);
    if (flags < 0 || fcntl(l->fd.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
      throw std::system_error(errno, std::generic_category(), "listener O_NONBLOCK");
    }
    l->local = SocketAddress::local_of(l->fd.get());
    l->handle = Handle{Handle::kListener, nullptr, l.get()};
    std::lock_guard<std::mutex> lock(mu);
    for (auto& w : workers) w->add_listener(l.get());
    if (shared.opts.logger) {
      shared.opts.logger->info("{} listener on {}", l->terminator ? "terminator" : "upgrade",
                               l->local.to_string());
    }
    listeners.push_back(std::move(l));
  }
};

Engine::Engine(EngineOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->shared.opts = std::move(options);
  if (impl_->shared.opts.workers == 0) impl_->shared.opts.workers = 1;
  if (impl_->shared.opts.buffer_bytes < 4096) impl_->shared.opts.buffer_bytes = 4096;
  for (unsigned i = 0; i < impl_->shared.opts.workers; ++i) {
    impl_->workers.push_back(std::make_unique<Worker>(impl_->shared, i));
  }
}

Engine::~Engine() { stop(); }

void Engine::apply_config(const ProxyConfig& config) {
  auto next = std::make_shared<Compiled>();
  for (const auto& r : config.upgrade) {
    if (next->upgrade.count(r.id) != 0) throw ConfigError("duplicate upgrade rule '" + r.id + "'");
    next->upgrade.emplace(r.id, ClientRuleContext::build(r, config.pem_files));
  }
  for (const auto& r : config.terminators) {
    if (next->terminators.count(r.id) != 0) {
      throw ConfigError("duplicate terminator rule '" + r.id + "'");
    }
    next->terminators.emplace(r.id, ServerRuleContext::build(r, config.pem_files));
  }
  Shared& s = impl_->shared;
  std::lock_guard<std::mutex> lock(s.config_mu);
  for (const auto& [id, ctx] : next->upgrade) {
    auto& slot = s.upgrade_counters[id];
    if (!slot) {
      slot = std::make_shared<AtomicCounters>();
      slot->rule = id;
    }
    next->upgrade_counters[id] = slot;
  }
  for (const auto& [id, ctx] : next->terminators) {
    auto& slot = s.terminator_counters[id];
    if (!slot) {
      slot = std::make_shared<AtomicCounters>();
      slot->rule = id;
      slot->terminator = true;
    }
    next->terminator_counters[id] = slot;
  }
  s.config = std::move(next);
  if (s.opts.logger) {
    s.opts.logger->info("proxy config applied: {} upgrade, {} terminator rules",
                        config.upgrade.size(), config.terminators.size());
  }
}

void Engine::add_upgrade_listener(OwnedFd listen_fd,
                                  std::shared_ptr<OriginalDestinationResolver> resolver) {
  if (!listen_fd || !resolver) throw std::invalid_argument("add_upgrade_listener: fd/resolver");
  auto l = std::make_unique<Listener>();
  l->fd = std::move(listen_fd);
  l->resolver = std::move(resolver);
  impl_->add_listener(std::move(l));
}

void Engine::add_terminator_listener(OwnedFd listen_fd, const std::string& terminator_id) {
  if (!listen_fd) throw std::invalid_argument("add_terminator_listener: fd");
  auto l = std::make_unique<Listener>();
  l->fd = std::move(listen_fd);
  l->terminator = true;
  l->terminator_id = terminator_id;
  impl_->add_listener(std::move(l));
}

void Engine::start() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (impl_->started) return;
  impl_->started = true;
  for (auto& w : impl_->workers) w->start();
}

void Engine::stop() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  for (auto& w : impl_->workers) w->stop();
}

std::vector<RuleCounters> Engine::rule_counters() const {
  const Shared& s = impl_->shared;
  std::lock_guard<std::mutex> lock(s.config_mu);
  std::vector<RuleCounters> out;
  for (const auto& [id, c] : s.upgrade_counters) out.push_back(c->snapshot());
  for (const auto& [id, c] : s.terminator_counters) out.push_back(c->snapshot());
  return out;
}

EngineCounters Engine::engine_counters() const {
  const Shared& s = impl_->shared;
  EngineCounters out;
  out.accepted = s.accepted.load();
  out.active = s.active.load();
  out.unknown_destination = s.unknown.load();
  out.capacity_rejected = s.capacity_rejected.load();
  out.accept_errors = s.accept_errors.load();
  return out;
}

}  // namespace tlswall::proxy
