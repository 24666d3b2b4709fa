// A running Engine on 127.0.0.1:0 (or ::1) with a fake resolver and an
// event log, shared by the proxy test files.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "proxy/engine.h"
#include "tests/proxy/proxy_test_support.h"

namespace tlswall::proxy::testing {

class EngineFixture : public ::testing::Test {
 protected:
  static EngineOptions default_options() {
    EngineOptions o;
    o.workers = 2;
    o.handshake_timeout = std::chrono::seconds(5);
    o.first_bytes_wait = std::chrono::milliseconds(100);
    return o;
  }

  UpgradeRule upgrade_rule(const std::string& id = "r1") const {
    UpgradeRule r;
    r.id = id;
    r.server_name = "server.test";
    r.ca_file = pki().ca_cert;
    return r;
  }

  static const Pki& pki() { return Pki::get(); }

  static TlsServerOptions server_options() {
    TlsServerOptions o;
    o.cert = pki().server_cert;
    o.key = pki().server_key;
    return o;
  }

  void start_upgrade(const ProxyConfig& cfg, const SocketAddress& dst,
                     EngineOptions opts = default_options(), const std::string& ip = "127.0.0.1",
                     const std::string& rule = "r1") {
    opts.on_event = events.callback();
    engine = std::make_unique<Engine>(opts);
    engine->apply_config(cfg);
    OwnedFd fd = listen_tcp(*SocketAddress::from_ip(ip, 0));
    proxy_addr = SocketAddress::local_of(fd.get());
    resolver = std::make_shared<FakeResolver>(dst, rule);
    engine->add_upgrade_listener(std::move(fd), resolver);
    engine->start();
  }

  void start_terminator(const ProxyConfig& cfg, const std::string& id,
                        EngineOptions opts = default_options()) {
    opts.on_event = events.callback();
    engine = std::make_unique<Engine>(opts);
    engine->apply_config(cfg);
    OwnedFd fd = listen_tcp(*SocketAddress::from_ip("127.0.0.1", 0));
    proxy_addr = SocketAddress::local_of(fd.get());
    engine->add_terminator_listener(std::move(fd), id);
    engine->start();
  }

  RuleCounters counters(const std::string& rule) const {
    for (const auto& c : engine->rule_counters()) {
      if (c.rule == rule) return c;
    }
    ADD_FAILURE() << "no counters for " << rule;
    return {};
  }

  // Waits until the engine has no live connection (counters settle at close).
  bool wait_idle(std::chrono::milliseconds timeout = std::chrono::seconds(5)) const {
    auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      if (engine->engine_counters().active == 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }

  static uint64_t failures(const RuleCounters& c, FailureReason r) {
    return c.failures[static_cast<size_t>(r)];
  }

  EventLog events;
  std::shared_ptr<FakeResolver> resolver;
  SocketAddress proxy_addr;
  std::unique_ptr<Engine> engine;
};

}  // namespace tlswall::proxy::testing
