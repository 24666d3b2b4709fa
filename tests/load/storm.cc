// tlswall_storm: the load generator and sink of the storm test
// (tests/e2e/test_storm_e2e.py). Runs only inside the test's network
// namespaces; it refuses destinations outside the benchmarking ranges.
//
//   tlswall_storm server --listen IP:PORT[:echo] ...
//       Accepts on every listener. A connection's first bytes are sorted:
//       0x16 0x03 -> "tls", anything else -> "plain". Then the server closes
//       (it closes first, so clients park no TIME_WAIT), or, on an `echo`
//       listener, echoes everything until the client closes; there a "tls"
//       connection's ClientHello is answered like a TLS server's (a
//       ServerHello record: tlswall judges the server's first answer) and
//       only the bytes after it are echoed. On SIGTERM it prints one JSON
//       line of counts per listener and exits.
//   tlswall_storm client --dst IP --seconds S --concurrency N
//       --mix KIND:PORT[,KIND:PORT...] [--log FILE]
//       New connections, N in flight, round robin over the mix: `tls` sends a
//       well-formed 517-byte ClientHello, `plain` an HTTP/1.0 request; then
//       waits for the server's close ("ok") or an error/reset ("failed"; 3 s
//       without either is "timeout"). Prints one JSON line of counts per mix
//       entry and the rate; --log writes "kind port sport outcome" per
//       connection.
//   tlswall_storm hold --dst IP --port P --count K
//       Opens K connections to an echo listener and sends a ClientHello on
//       each, waits for the ServerHello, then for a line on stdin; then sends
//       a 4 KiB application-data record on each and checks the echo. Prints
//       {"held", "echoed", "failed"}.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& m) {
  std::fprintf(stderr, "tlswall_storm: %s\n", m.c_str());
  std::exit(2);
}

sockaddr_in parse_addr(const std::string& ip, int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, ip.c_str(), &a.sin_addr) != 1) die("bad IPv4 address " + ip);
  // 198.18.0.0/15 only: the sandbox's addresses.
  const uint32_t h = ntohl(a.sin_addr.s_addr);
  if ((h & 0xfffe0000u) != 0xc6120000u) die(ip + " is outside 198.18.0.0/15");
  return a;
}

std::vector<std::string> split(const std::string& s, char c) {
  std::vector<std::string> out;
  size_t b = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == c) {
      out.push_back(s.substr(b, i - b));
      b = i + 1;
    }
  }
  return out;
}

void put16(std::string& s, unsigned v) {
  s += static_cast<char>(v >> 8);
  s += static_cast<char>(v & 0xff);
}

// A well-formed TLS 1.2/1.3 ClientHello padded to 517 bytes like OpenSSL's.
std::string client_hello() {
  std::mt19937 rng(12345);
  std::string body = "\x03\x03";
  for (int i = 0; i < 32; ++i) body += static_cast<char>(rng());
  body += '\x20';
  for (int i = 0; i < 32; ++i) body += static_cast<char>(rng());
  const unsigned ciphers[] = {0x1302, 0x1303, 0x1301, 0xc02c, 0xc030, 0xc02b, 0xc02f};
  put16(body, sizeof(ciphers) / sizeof(ciphers[0]) * 2);
  for (unsigned c : ciphers) put16(body, c);
  body += std::string("\x01\x00", 2);
  std::string ext;
  put16(ext, 0x002b);  // supported_versions: 1.3, 1.2
  put16(ext, 5);
  ext += '\x04';
  put16(ext, 0x0304);
  put16(ext, 0x0303);
  put16(ext, 0x000a);  // supported_groups: x25519
  put16(ext, 4);
  put16(ext, 2);
  put16(ext, 0x001d);
  const size_t fixed = 5 + 4 + body.size() + 2 + ext.size() + 4;
  const size_t pad = fixed < 517 ? 517 - fixed : 0;
  put16(ext, 0x0015);  // padding
  put16(ext, static_cast<unsigned>(pad));
  ext += std::string(pad, '\0');
  put16(body, static_cast<unsigned>(ext.size()));
  body += ext;
  std::string hs = "\x01";
  hs += static_cast<char>(body.size() >> 16);
  put16(hs, static_cast<unsigned>(body.size() & 0xffff));
  hs += body;
  std::string rec = "\x16\x03\x01";
  put16(rec, static_cast<unsigned>(hs.size()));
  return rec + hs;
}

// A TLS 1.3 ServerHello record (x25519 key share, supported_versions).
std::string server_hello() {
  std::string body = "\x03\x03";
  body += std::string(32, '\x5a');  // random
  body += '\x20';
  body += std::string(32, '\x11');  // legacy_session_id_echo
  body += std::string("\x13\x01\x00", 3);
  std::string ext;
  put16(ext, 0x0033);  // key_share: x25519
  put16(ext, 36);
  put16(ext, 0x001d);
  put16(ext, 32);
  ext += std::string(32, '\x07');
  put16(ext, 0x002b);  // supported_versions: TLS 1.3
  put16(ext, 2);
  put16(ext, 0x0304);
  put16(body, static_cast<unsigned>(ext.size()));
  body += ext;
  std::string hs = "\x02";
  hs += '\0';
  put16(hs, static_cast<unsigned>(body.size()));
  hs += body;
  std::string rec = "\x16\x03\x03";
  put16(rec, static_cast<unsigned>(hs.size()));
  return rec + hs;
}

// ---- server ----------------------------------------------------------------

volatile sig_atomic_t g_stop = 0;
void on_term(int) { g_stop = 1; }

struct Listener {
  std::string name;
  bool echo = false;
  uint64_t conns = 0, tls = 0, plain = 0, short_ = 0;
};

int server(const std::vector<std::string>& args) {
  std::vector<Listener> ls;
  std::vector<int> lfds;
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  for (size_t i = 0; i + 1 < args.size(); i += 2) {
    if (args[i] != "--listen") die("server: unknown option " + args[i]);
    const auto p = split(args[i + 1], ':');
    if (p.size() < 2) die("server: --listen IP:PORT[:echo]");
    sockaddr_in a = parse_addr(p[0], std::atoi(p[1].c_str()));
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || listen(fd, 4096) != 0) {
      die("server: bind/listen " + args[i + 1] + ": " + std::strerror(errno));
    }
    Listener l;
    l.name = p[0] + ":" + p[1];
    l.echo = p.size() > 2 && p[2] == "echo";
    ls.push_back(l);
    lfds.push_back(fd);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = (uint64_t{1} << 63) | (ls.size() - 1);
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  }
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  signal(SIGPIPE, SIG_IGN);
  struct Conn {
    size_t listener;
    std::string head;
    bool sorted = false;
    size_t seen = 0;        // bytes received before the connection was sorted
    size_t unanswered = 0;  // echo, tls: ClientHello bytes still to come (not echoed)
  };
  const std::string answer = server_hello();
  const size_t hello_size = client_hello().size();
  std::map<int, Conn> conns;
  std::fprintf(stderr, "tlswall_storm server: %zu listeners\n", ls.size());
  char buf[65536];
  while (!g_stop) {
    epoll_event evs[256];
    const int n = epoll_wait(ep, evs, 256, 100);
    for (int i = 0; i < n; ++i) {
      const uint64_t d = evs[i].data.u64;
      if (d >> 63) {
        const size_t li = d & 0xffffffff;
        for (;;) {
          const int c = accept4(lfds[li], nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
          if (c < 0) break;
          ++ls[li].conns;
          conns[c] = Conn{li, {}, false};
          epoll_event ev{};
          ev.events = EPOLLIN;
          ev.data.u64 = static_cast<uint64_t>(c);
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
        }
        continue;
      }
      const int fd = static_cast<int>(d);
      auto it = conns.find(fd);
      if (it == conns.end()) continue;
      Conn& c = it->second;
      Listener& l = ls[c.listener];
      bool done = false;
      for (;;) {
        const ssize_t r = recv(fd, buf, sizeof(buf), 0);
        if (r > 0) {
          if (!c.sorted) {
            c.head.append(buf, std::min<size_t>(static_cast<size_t>(r),
                                                8 - std::min<size_t>(8, c.head.size())));
            if (c.head.size() >= 5) {
              c.sorted = true;
              const bool tls = c.head[0] == 0x16 && c.head[1] == 0x03;
              (tls ? l.tls : l.plain) += 1;
              if (!l.echo) {
                done = true;
                break;
              }
              // Bytes of earlier reads (fewer than 5, all in head) were
              // held back until now.
              const std::string early = tls ? answer : c.head.substr(0, c.seen);
              c.unanswered = tls && hello_size > c.seen ? hello_size - c.seen : 0;
              if (send(fd, early.data(), early.size(), MSG_NOSIGNAL) !=
                  static_cast<ssize_t>(early.size())) {
                done = true;
                break;
              }
            } else {
              c.seen += static_cast<size_t>(r);
              continue;
            }
          }
          const size_t skip = std::min(c.unanswered, static_cast<size_t>(r));
          c.unanswered -= skip;
          const size_t rest = static_cast<size_t>(r) - skip;
          if (l.echo && rest &&
              send(fd, buf + skip, rest, MSG_NOSIGNAL) != static_cast<ssize_t>(rest)) {
            done = true;  // a slow reader is not part of this test
            break;
          }
          continue;
        }
        if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
          if (!c.sorted) ++l.short_;
          done = true;
        }
        break;
      }
      if (done) {
        close(fd);
        conns.erase(it);
      }
    }
  }
  std::printf("{");
  for (size_t i = 0; i < ls.size(); ++i) {
    std::printf("%s\"%s\":{\"conns\":%llu,\"tls\":%llu,\"plain\":%llu,\"short\":%llu}",
                i ? "," : "", ls[i].name.c_str(), static_cast<unsigned long long>(ls[i].conns),
                static_cast<unsigned long long>(ls[i].tls),
                static_cast<unsigned long long>(ls[i].plain),
                static_cast<unsigned long long>(ls[i].short_));
  }
  std::printf("}\n");
  return 0;
}

// ---- client ----------------------------------------------------------------

struct Mix {
  std::string kind;
  int port = 0;
  sockaddr_in addr{};
  uint64_t started = 0, ok = 0, failed = 0, timeout = 0, connect_error = 0;
};

int client(const std::vector<std::string>& args) {
  std::string dst, log_path;
  double seconds = 3;
  size_t concurrency = 64;
  std::vector<Mix> mix;
  std::string mix_arg;
  for (size_t i = 0; i + 1 < args.size(); i += 2) {
    if (args[i] == "--dst")
      dst = args[i + 1];
    else if (args[i] == "--seconds")
      seconds = std::atof(args[i + 1].c_str());
    else if (args[i] == "--concurrency")
      concurrency = std::strtoul(args[i + 1].c_str(), nullptr, 10);
    else if (args[i] == "--mix")
      mix_arg = args[i + 1];
    else if (args[i] == "--log")
      log_path = args[i + 1];
    else
      die("client: unknown option " + args[i]);
  }
  if (dst.empty() || mix_arg.empty()) die("client: --dst and --mix are required");
  for (const auto& m : split(mix_arg, ',')) {
    const auto p = split(m, ':');
    if (p.size() != 2 || (p[0] != "tls" && p[0] != "plain"))
      die("client: --mix tls|plain:PORT,...");
    Mix x;
    x.kind = p[0];
    x.port = std::atoi(p[1].c_str());
    x.addr = parse_addr(dst, x.port);
    mix.push_back(x);
  }
  signal(SIGPIPE, SIG_IGN);
  const std::string hello = client_hello();
  const std::string plain = "GET / HTTP/1.0\r\nHost: storm\r\n\r\n";
  std::ofstream log;
  if (!log_path.empty()) log.open(log_path);
  struct Conn {
    size_t mix;
    bool sent = false;
    Clock::time_point deadline;
    uint16_t sport = 0;
  };
  std::map<int, Conn> conns;
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  size_t next = 0;
  const auto t0 = Clock::now();
  const auto end =
      t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  auto finish = [&](int fd, Conn& c, const char* outcome) {
    Mix& m = mix[c.mix];
    if (!std::strcmp(outcome, "ok"))
      ++m.ok;
    else if (!std::strcmp(outcome, "failed"))
      ++m.failed;
    else
      ++m.timeout;
    if (log.is_open()) log << m.kind << ' ' << m.port << ' ' << c.sport << ' ' << outcome << '\n';
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
    close(fd);
  };
  auto open_one = [&]() {
    const size_t mi = next++ % mix.size();
    Mix& m = mix[mi];
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) die(std::string("socket: ") + std::strerror(errno));
    ++m.started;
    if (connect(fd, reinterpret_cast<sockaddr*>(&m.addr), sizeof(m.addr)) != 0 &&
        errno != EINPROGRESS) {
      ++m.connect_error;
      close(fd);
      return;
    }
    sockaddr_in local{};
    socklen_t ll = sizeof(local);
    getsockname(fd, reinterpret_cast<sockaddr*>(&local), &ll);
    conns[fd] = Conn{mi, false, Clock::now() + std::chrono::seconds(3), ntohs(local.sin_port)};
    epoll_event ev{};
    ev.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP;
    ev.data.fd = fd;
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  };
  char buf[4096];
  Clock::time_point last_sweep = t0;
  while (true) {
    const auto now = Clock::now();
    if (now < end) {
      while (conns.size() < concurrency) open_one();
    } else if (conns.empty()) {
      break;
    }
    epoll_event evs[256];
    const int n = epoll_wait(ep, evs, 256, 20);
    for (int i = 0; i < n; ++i) {
      const int fd = evs[i].data.fd;
      auto it = conns.find(fd);
      if (it == conns.end()) continue;
      Conn& c = it->second;
      Mix& m = mix[c.mix];
      if (!c.sent && (evs[i].events & EPOLLOUT)) {
        int err = 0;
        socklen_t el = sizeof(err);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
          finish(fd, c, "failed");
          conns.erase(it);
          continue;
        }
        const std::string& payload = m.kind == "tls" ? hello : plain;
        if (send(fd, payload.data(), payload.size(), MSG_NOSIGNAL) !=
            static_cast<ssize_t>(payload.size())) {
          finish(fd, c, "failed");
          conns.erase(it);
          continue;
        }
        c.sent = true;
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLRDHUP;
        ev.data.fd = fd;
        epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
        continue;
      }
      if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        const ssize_t r = recv(fd, buf, sizeof(buf), 0);
        if (r > 0) continue;
        if (r < 0 && errno == EAGAIN) continue;
        finish(fd, c, r == 0 && c.sent ? "ok" : "failed");
        conns.erase(it);
      }
    }
    if (now - last_sweep > std::chrono::milliseconds(100)) {
      last_sweep = now;
      for (auto it = conns.begin(); it != conns.end();) {
        if (now > it->second.deadline) {
          finish(it->first, it->second, "timeout");
          it = conns.erase(it);
        } else {
          ++it;
        }
      }
    }
  }
  const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
  uint64_t total = 0;
  std::printf("{\"seconds\":%.3f,\"mix\":[", dt);
  for (size_t i = 0; i < mix.size(); ++i) {
    const Mix& m = mix[i];
    total += m.started;
    std::printf(
        "%s{\"kind\":\"%s\",\"port\":%d,\"started\":%llu,\"ok\":%llu,\"failed\":%llu,"
        "\"timeout\":%llu,\"connect_error\":%llu}",
        i ? "," : "", m.kind.c_str(), m.port, static_cast<unsigned long long>(m.started),
        static_cast<unsigned long long>(m.ok), static_cast<unsigned long long>(m.failed),
        static_cast<unsigned long long>(m.timeout),
        static_cast<unsigned long long>(m.connect_error));
  }
  std::printf("],\"total\":%llu,\"conn_per_s\":%.0f}\n", static_cast<unsigned long long>(total),
              total / dt);
  return 0;
}

// ---- hold ------------------------------------------------------------------

bool send_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    const ssize_t r = send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (r <= 0) return false;
    off += static_cast<size_t>(r);
  }
  return true;
}

bool recv_exact(int fd, size_t n) {
  char buf[8192];
  timeval tv{3, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  while (n > 0) {
    const ssize_t r = recv(fd, buf, std::min(n, sizeof(buf)), 0);
    if (r <= 0) return false;
    n -= static_cast<size_t>(r);
  }
  return true;
}

int hold(const std::vector<std::string>& args) {
  std::string dst;
  int port = 0;
  size_t count = 0;
  for (size_t i = 0; i + 1 < args.size(); i += 2) {
    if (args[i] == "--dst")
      dst = args[i + 1];
    else if (args[i] == "--port")
      port = std::atoi(args[i + 1].c_str());
    else if (args[i] == "--count")
      count = std::strtoul(args[i + 1].c_str(), nullptr, 10);
    else
      die("hold: unknown option " + args[i]);
  }
  signal(SIGPIPE, SIG_IGN);
  const sockaddr_in a = parse_addr(dst, port);
  const std::string hello = client_hello();
  std::vector<int> fds;
  size_t failed = 0;
  for (size_t i = 0; i < count; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof(a)) != 0 ||
        !send_all(fd, hello) || !recv_exact(fd, server_hello().size())) {
      ++failed;
      close(fd);
      continue;
    }
    fds.push_back(fd);
  }
  std::printf("{\"held\":%zu,\"failed_to_open\":%zu}\n", fds.size(), failed);
  std::fflush(stdout);
  std::string line;
  std::getline(std::cin, line);       // the storm runs meanwhile
  std::string data = "\x17\x03\x03";  // an application-data record of 4 KiB
  put16(data, 4096 - 5);
  data += std::string(4096 - 5, 'x');
  size_t echoed = 0, broken = 0;
  for (int fd : fds) {
    if (send_all(fd, data) && recv_exact(fd, data.size())) {
      ++echoed;
    } else {
      ++broken;
    }
    close(fd);
  }
  std::printf("{\"held\":%zu,\"echoed\":%zu,\"failed\":%zu}\n", fds.size(), echoed, broken);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) die("usage: tlswall_storm server|client|hold ... (see the source header)");
  const std::string cmd = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  if (cmd == "server") return server(args);
  if (cmd == "client") return client(args);
  if (cmd == "hold") return hold(args);
  die("unknown command " + cmd);
}
