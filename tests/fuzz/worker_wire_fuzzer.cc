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

// Decodes as the daemon does; a message that decodes must encode back to
// the same bytes.
template <class T>
void round_trip(const std::string& bytes, wire::Msg type) {
  const T v = wire::decode<T>(bytes, type);
  FUZZ_CHECK(wire::encode(type, v) == bytes);
}

void decode(const std::string& bytes) {
  switch (wire::Reader(bytes).type()) {
    case wire::Msg::kEvent:
      return round_trip<ProxyEvent>(bytes, wire::Msg::kEvent);
    case wire::Msg::kCounters:
      return round_trip<wire::Counters>(bytes, wire::Msg::kCounters);
    case wire::Msg::kReply:
      return round_trip<wire::Reply>(bytes, wire::Msg::kReply);
    case wire::Msg::kResolve:
      return round_trip<wire::Resolve>(bytes, wire::Msg::kResolve);
    default:
      return;  // the daemon refuses any other type
  }
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
  put("event-upgraded", wire::encode(wire::Msg::kEvent, ProxyEvent(up)));
  UpgradeFailure f;
  f.rule = "web";
  f.reason = FailureReason::kHostname;
  f.client = client;
  put("event-failure", wire::encode(wire::Msg::kEvent, ProxyEvent(f)));
  Terminated t;
  t.rule = "t";
  t.client_subject = "CN=client";
  t.local = dst;
  put("event-terminated", wire::encode(wire::Msg::kEvent, ProxyEvent(t)));
  wire::Counters c{7, {}};
  RuleCounters rc;
  rc.rule = "web";
  rc.connections = 3;
  rc.failures[1] = 1;
  c.counters.rules = {rc};
  put("counters", wire::encode(wire::Msg::kCounters, c));
  put("reply",
      wire::encode(wire::Msg::kReply, wire::Reply{3, false, "upgrade rule 'web': key /k: bad"}));
  put("resolve", wire::encode(wire::Msg::kResolve,
                              wire::Resolve{9, client, *SocketAddress::parse("127.0.0.1:15443")}));
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
