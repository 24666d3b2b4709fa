// tlswall-proxy-bench: the upgrade engine standalone, for benchmarks against
// stunnel4 / haproxy. Every accepted connection is upgraded to one fixed
// destination (no kernel redirect needed).
//
//   tlswall-proxy-bench --listen 127.0.0.1:8080 --dest 198.18.0.2:443
//       --server-name server.test --ca ca.pem [--workers 2] [--max-conns N]
//       [--cert c.pem --key k.pem] [--alpn http/1.1] [--tls13] [--buffer BYTES]
//
// Prints "listening on <addr>" once ready; SIGINT/SIGTERM print the
// counters and exit.
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

#include "proxy/engine.h"
#include "proxy/tls_context.h"

using namespace tlswall::proxy;

namespace {

class FixedResolver : public OriginalDestinationResolver {
 public:
  explicit FixedResolver(SocketAddress dst) : dst_(std::move(dst)) {}
  std::optional<OriginalDestination> resolve(int, const SocketAddress&,
                                             const SocketAddress&) override {
    return OriginalDestination{dst_, "bench"};
  }

 private:
  SocketAddress dst_;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr, "tlswall-proxy-bench: %s\n", why);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:0", dest, name, ca, cert, key;
  EngineOptions opts;
  UpgradeRule rule;
  rule.id = "bench";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value for " + a).c_str());
      return argv[++i];
    };
    if (a == "--listen")
      listen = next();
    else if (a == "--dest")
      dest = next();
    else if (a == "--server-name")
      rule.server_name = next();
    else if (a == "--ca")
      rule.ca_file = next();
    else if (a == "--cert")
      rule.cert_file = next();
    else if (a == "--key")
      rule.key_file = next();
    else if (a == "--alpn")
      rule.alpn.push_back(next());
    else if (a == "--tls13")
      rule.min_version = TlsVersion::kTls13;
    else if (a == "--workers")
      opts.workers = static_cast<unsigned>(std::stoul(next()));
    else if (a == "--max-conns")
      opts.max_connections = std::stoul(next());
    else if (a == "--buffer")
      opts.buffer_bytes = std::stoul(next());
    else
      usage(("unknown option " + a).c_str());
  }
  auto listen_addr = SocketAddress::parse(listen);
  auto dst = SocketAddress::parse(dest);
  if (!listen_addr || !dst) usage("--listen and --dest take ip:port");

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);  // inherited by the workers

  try {
    Engine engine(opts);
    ProxyConfig cfg;
    cfg.upgrade.push_back(rule);
    engine.apply_config(cfg);
    OwnedFd fd = listen_tcp(*listen_addr, 4096);
    const SocketAddress bound = SocketAddress::local_of(fd.get());
    engine.add_upgrade_listener(std::move(fd), std::make_shared<FixedResolver>(*dst));
    engine.start();
    std::printf("listening on %s\n", bound.to_string().c_str());
    std::fflush(stdout);
    int sig = 0;
    sigwait(&set, &sig);
    engine.stop();
    for (const auto& c : engine.rule_counters()) {
      std::printf("rule %s: connections %lu up %lu down %lu resumed %lu", c.rule.c_str(),
                  static_cast<unsigned long>(c.connections), static_cast<unsigned long>(c.bytes_up),
                  static_cast<unsigned long>(c.bytes_down), static_cast<unsigned long>(c.resumed));
      for (size_t r = 0; r < kFailureReasonCount; ++r) {
        if (c.failures[r] != 0) {
          std::printf(" %s %lu", to_string(static_cast<FailureReason>(r)),
                      static_cast<unsigned long>(c.failures[r]));
        }
      }
      std::printf("\n");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tlswall-proxy-bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
