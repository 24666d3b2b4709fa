// libFuzzer target: what the daemon decodes from its proxy worker
// (proxy/worker_protocol.h). The worker reads network input, so the daemon
// treats every message from it as hostile. The input is one message as
// received on the control or resolve channel; it is decoded the way
// proxy/worker_process.cc does (events, replies, counters, resolve
// requests). Checked besides the sanitizers: a message that decodes
// completely encodes back to the same bytes (the codec has one encoding per
// value, so nothing is silently reinterpreted).
//
// TLSWALL_FUZZ_WRITE_SEEDS=DIR: writes the seed corpus (one message of each
// kind the worker sends; corpus/worker_wire/) and exits.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

#include "proxy/worker_protocol.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using namespace tlswall::proxy;  // NOLINT: one test file

void decode(const std::string& bytes) {
  wire::Reader r(bytes);
  std::string again;
  switch (r.type()) {
    case wire::Msg::kEvent: {
      ProxyEvent e;
      wire::get(r, e);
      r.finish();
      wire::Writer w(wire::Msg::kEvent);
      wire::put(w, e);
      again = w.bytes();
      break;
    }
    case wire::Msg::kCounters: {
      uint64_t seq = 0;
      wire::WorkerCounters c;
      r(seq);
      wire::get(r, c);
      r.finish();
      wire::Writer w(wire::Msg::kCounters);
      w(seq);
      wire::put(w, c);
      again = w.bytes();
      break;
    }
    case wire::Msg::kReply: {
      uint64_t seq = 0;
      bool ok = false;
      std::string error;
      r(seq);
      r(ok);
      r(error);
      r.finish();
      wire::Writer w(wire::Msg::kReply);
      w(seq);
      w(ok);
      w(error);
      again = w.bytes();
      break;
    }
    case wire::Msg::kResolve: {
      uint64_t seq = 0;
      SocketAddress peer, local;
      r(seq);
      r(peer);
      r(local);
      r.finish();
      wire::Writer w(wire::Msg::kResolve);
      w(seq);
      w(peer);
      w(local);
      again = w.bytes();
      break;
    }
    default:
      return;  // the daemon refuses any other type
  }
  FUZZ_CHECK(again == bytes);
}

void write_seeds(const std::string& dir) {
  auto put = [&](const std::string& name, const std::string& bytes) {
    std::ofstream(dir + "/" + name, std::ios::binary) << bytes;
  };
  const auto client = *SocketAddress::parse("127.0.0.1:40000");
  const auto dst = *SocketAddress::parse("[2001:db8::7]:443");
  Upgraded up;
  up.conn_id = 1;
  up.rule = "web";
  up.client = client;
  up.destination = dst;
  up.tls_version = "TLSv1.3";
  up.cipher = "TLS_AES_128_GCM_SHA256";
  up.bytes_up = 81;
  wire::Writer e1(wire::Msg::kEvent);
  wire::put(e1, ProxyEvent(up));
  put("event-upgraded", e1.bytes());
  UpgradeFailure f;
  f.rule = "web";
  f.reason = FailureReason::kHostname;
  f.client = client;
  wire::Writer e2(wire::Msg::kEvent);
  wire::put(e2, ProxyEvent(f));
  put("event-failure", e2.bytes());
  Terminated t;
  t.rule = "t";
  t.client_subject = "CN=client";
  t.local = dst;
  wire::Writer e3(wire::Msg::kEvent);
  wire::put(e3, ProxyEvent(t));
  put("event-terminated", e3.bytes());
  wire::WorkerCounters c;
  RuleCounters rc;
  rc.rule = "web";
  rc.connections = 3;
  rc.failures[1] = 1;
  c.rules = {rc};
  wire::Writer m(wire::Msg::kCounters);
  m(uint64_t{7});
  wire::put(m, c);
  put("counters", m.bytes());
  wire::Writer rep(wire::Msg::kReply);
  rep(uint64_t{3});
  rep(false);
  rep(std::string("upgrade rule 'web': key /k: bad"));
  put("reply", rep.bytes());
  wire::Writer res(wire::Msg::kResolve);
  res(uint64_t{9});
  res(client);
  res(*SocketAddress::parse("127.0.0.1:15443"));
  put("resolve", res.bytes());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("TLSWALL_FUZZ_WRITE_SEEDS")) {
    write_seeds(dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    decode(bytes);
  } catch (const wire::WireError&) {
    // refused: what the daemon does (and then kills the worker)
  }
  return 0;
}
