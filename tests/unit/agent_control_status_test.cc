// StatusReport <-> StatusReply (agent/control/status_convert.h): a report
// with every field set to a distinct, non-default value must come back
// whole through the wire, so a field added to one side and forgotten in a
// converter fails here.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/transport/TBufferTransports.h>

#include "agent/control/status_convert.h"

namespace tlswall::control {
namespace {

using apache::thrift::protocol::TBinaryProtocol;
using apache::thrift::protocol::TType;
using apache::thrift::transport::TMemoryBuffer;

// Every field set, every value distinct from its default and from the
// others, every list with at least one element, every bool true.
agent::StatusReport Full() {
  agent::StatusReport s;
  s.version = "9.8.7";
  s.uptime_s = 3601;
  s.started_at = "2026-11-21T11:00:00.000Z";
  s.host = "web-1";
  s.policy_path = "/etc/tlswall/policy.d";
  s.policy_version = "2026-11-21.1";
  s.policy_hash = "ab12cd";
  s.policy_generation = 7;
  s.policy_loaded_at = "2026-11-21T12:00:00.000Z";
  s.policy_last_error = "p.toml:3:1: error: bad";
  s.policy_last_error_at = "2026-11-21T12:05:00.000Z";
  agent::RuleStatus r("db-tls", "enforce");
  r.boundary = "dbs";
  r.policy_mode = "monitor";
  r.overridden = true;
  s.rules = {r, {"web-tls", "monitor"}};
  s.rules[1].boundary = "internet";
  s.rules[1].policy_mode = "enforce";
  s.rules[1].overridden = true;
  s.exemptions_active = {"legacy-backup", "pg-dump"};
  s.policy_watch = "inotify on /etc/tlswall/policy.d";
  agent::InterfaceStatus i("eth0", 2, true, true, "tc egress");
  i.pattern = "eth*";
  i.hooks = {"tc egress", "tc ingress"};
  s.interfaces = {i};
  s.bpffs = "/sys/fs/bpf";
  s.pin_root = "/sys/fs/bpf/tlswall";
  s.cgroup2 = "/sys/fs/cgroup/unified";
  s.tables_adopted = "adopted flows_v1";
  s.last_gap = "3 s without a daemon";
  s.flow_reaper = "tp_btf/tcp_destroy_sock";
  s.upgrade.running = true;
  s.upgrade.summary = "client side on 127.0.0.1:15443, 1 rule; 1 termination";
  s.upgrade.redirected = 41;
  agent::UpgradeRuleStatus ur;
  ur.name = "billing-db";
  ur.side = "client";
  ur.connections = 42;
  ur.active = 43;
  ur.bytes_up = 44;
  ur.bytes_down = 45;
  ur.passthrough = 46;
  ur.plaintext = 47;
  ur.resumed = 48;
  ur.failures = {{"certificate", 49}, {"hostname", 50}};
  s.upgrade.rules = {ur};
  for (uint32_t c = 0; c < TW_CNT_MAX; ++c) s.counters[c] = 100 + c;
  for (uint32_t c = 0; c < TW_REASON_MAX; ++c) s.drops_by_reason[c] = 200 + c;
  s.abi_version = 3;
  s.tables = {{"flows", 2}, {"lpm4", 1}, {"counters", 1}, {"events", 1}};
  s.attribution.active_backend = "tp_btf";
  s.attribution.backends = {{"kprobe", "unavailable", "no kprobes in this kernel"},
                            {"tp_btf", "active", "x"}};
  s.attribution.raw_socket_backend = "tracepoint";
  s.attribution.raw_socket_reason = "fentry: load failed";
  s.attribution.raw_sockets_opened = 3;
  s.attribution.raw_socket_events_lost = 2;
  s.events_received = 11;
  s.events_written = 10;
  s.events_write_failed = 9;
  s.sockets_destroyed = 8;
  s.socket_destroy_failed = 6;
  s.events_path = "/var/log/tlswall/events.jsonl";
  logging::PipelineHealth& h = s.event_pipeline;
  h.submitted = 21;
  h.emitted = 22;
  h.aggregated = 23;
  h.dropped_queue = 24;
  h.dropped_queue_security = 25;
  h.intake_backlog = 26;
  h.ids_persistent = true;
  h.host_id = "host-abc";
  h.next_seq = 27;
  h.last_error = "state dir read-only";
  logging::SinkHealth k;
  k.name = "central";
  k.kind = "scribe";
  k.target = "198.18.0.9:1463";
  k.state = "degraded: connection refused";
  k.connected = true;
  k.backlog = 31;
  k.buffered = 32;
  k.buffer_bytes = 33;
  k.buffer_writable = true;
  k.delivered = 34;
  k.dropped = 35;
  k.dropped_queue_full = 36;
  k.dropped_buffer_cap = 37;
  k.dropped_buffer_corrupt = 38;
  k.dropped_shutdown = 39;
  k.quarantined_segments = 40;
  k.send_failures = 41;
  k.try_later = 42;
  k.last_error = "connection refused";
  k.last_error_at = "2026-11-21T12:06:00.000Z";
  k.buffer_error = "disk full";
  h.sinks = {k};
  s.metrics_listen = "127.0.0.1:9465";
  return s;
}

std::string Serialize(const api::StatusReply& r) {
  auto buf = std::make_shared<TMemoryBuffer>();
  TBinaryProtocol p(buf);
  r.write(&p);
  return buf->getBufferAsString();
}

api::StatusReply Deserialize(const std::string& bytes) {
  auto buf = std::make_shared<TMemoryBuffer>();
  buf->write(reinterpret_cast<const uint8_t*>(bytes.data()), static_cast<uint32_t>(bytes.size()));
  TBinaryProtocol p(buf);
  api::StatusReply r;
  r.read(&p);
  return r;
}

// Walks serialized Thrift generically and names every value that is its
// type's default (0, false, "", empty container) by its field-id path.
void CollectDefaults(TBinaryProtocol& p, TType type, const std::string& path,
                     std::vector<std::string>* out) {
  using namespace apache::thrift::protocol;
  switch (type) {
    case T_STRUCT: {
      std::string name;
      p.readStructBegin(name);
      for (;;) {
        std::string fname;
        TType ft;
        int16_t id;
        p.readFieldBegin(fname, ft, id);
        if (ft == T_STOP) break;
        CollectDefaults(p, ft, path + "." + std::to_string(id), out);
        p.readFieldEnd();
      }
      p.readStructEnd();
      break;
    }
    case T_LIST: {
      TType et;
      uint32_t n;
      p.readListBegin(et, n);
      if (n == 0) out->push_back(path + " (empty list)");
      for (uint32_t i = 0; i < n; ++i) {
        CollectDefaults(p, et, path + "[" + std::to_string(i) + "]", out);
      }
      p.readListEnd();
      break;
    }
    case T_MAP: {
      TType kt, vt;
      uint32_t n;
      p.readMapBegin(kt, vt, n);
      if (n == 0) out->push_back(path + " (empty map)");
      for (uint32_t i = 0; i < n; ++i) {
        CollectDefaults(p, kt, path + "{key}", out);
        CollectDefaults(p, vt, path + "{value}", out);
      }
      p.readMapEnd();
      break;
    }
    case T_STRING: {
      std::string s;
      p.readString(s);
      if (s.empty()) out->push_back(path + " (\"\")");
      break;
    }
    case T_BOOL: {
      bool b;
      p.readBool(b);
      if (!b) out->push_back(path + " (false)");
      break;
    }
    case T_I32: {
      int32_t v;
      p.readI32(v);
      if (!v) out->push_back(path + " (0)");
      break;
    }
    case T_I64: {
      int64_t v;
      p.readI64(v);
      if (!v) out->push_back(path + " (0)");
      break;
    }
    default:
      p.skip(type);
      out->push_back(path + " (unexpected type " + std::to_string(type) + ")");
  }
}

TEST(StatusThrift, EveryReplyFieldIsFilled) {
  const std::string bytes = Serialize(to_thrift(Full()));
  auto buf = std::make_shared<TMemoryBuffer>();
  buf->write(reinterpret_cast<const uint8_t*>(bytes.data()), static_cast<uint32_t>(bytes.size()));
  TBinaryProtocol p(buf);
  std::vector<std::string> defaults;
  CollectDefaults(p, apache::thrift::protocol::T_STRUCT, "StatusReply", &defaults);
  std::string all;
  for (const auto& d : defaults) all += "  " + d + "\n";
  // A field to_thrift() does not fill, or Full() does not set, shows here
  // (paths are field ids: see agent/control/tlswall_control.thrift).
  EXPECT_TRUE(defaults.empty()) << "left at their default:\n" << all;
}

TEST(StatusThrift, RoundTripKeepsEveryField) {
  const agent::StatusReport original = Full();
  const api::StatusReply sent = to_thrift(original);
  const api::StatusReply received = Deserialize(Serialize(sent));
  EXPECT_EQ(received, sent);
  const agent::StatusReport back = from_thrift(received);
  // from_thrift() forgetting a field changes the re-encoding...
  EXPECT_EQ(to_thrift(back), sent);
  // ...and what tlswallctl prints.
  EXPECT_EQ(agent::render_status_json(back), agent::render_status_json(original));
  EXPECT_EQ(agent::render_status_text(back), agent::render_status_text(original));
}

TEST(StatusThrift, CountersOfOtherReleases) {
  api::StatusReply r = to_thrift(Full());
  r.counters.resize(3);              // an older daemon: fewer counters
  r.drops_by_reason.push_back(999);  // a newer one: more reasons
  const agent::StatusReport s = from_thrift(r);
  EXPECT_EQ(s.counters[2], 102u);
  EXPECT_EQ(s.counters[3], 0u);
  EXPECT_EQ(s.counters[TW_CNT_MAX - 1], 0u);
  EXPECT_EQ(s.drops_by_reason[TW_REASON_MAX - 1], 200u + TW_REASON_MAX - 1);
}

TEST(StatusThrift, UnsignedCountersSurviveTheSignedWireType) {
  agent::StatusReport s = Full();
  s.counters[0] = ~0ull;
  s.events_received = 1ull << 63;
  const agent::StatusReport back = from_thrift(Deserialize(Serialize(to_thrift(s))));
  EXPECT_EQ(back.counters[0], ~0ull);
  EXPECT_EQ(back.events_received, 1ull << 63);
}

}  // namespace
}  // namespace tlswall::control
