// The event pipeline against the test Scribe server (generated from the
// Scribe IDL, on 127.0.0.1, port 0): outages, TRY_LATER, lost answers,
// a small disk buffer, a restart, floods; every event accounted for.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>

#include "logging/event_pipeline.h"
#include "logging/event_thrift.h"
#include "test_owner.h"
#include "tests/logging/logging_pipeline_harness.h"

namespace tlswall::testing {
namespace {

using namespace std::chrono_literals;
using logging::EventType;
using logging::make_event_pipeline;

TEST(ScribePipeline, OutageThenRecoveryDeliversEveryEventOnceInOrder) {
  TempDir t;
  ScribeTestServer server;
  server.start();
  auto p = make_event_pipeline(TestPipelineConfig(t, server.port()));

  // A steady stream: 1 s with the server up, 1.5 s down, 1 s up again.
  SubmitPaced(*p, 0, 2000, 2000);
  server.stop();
  SubmitPaced(*p, 2000, 3000, 2000);
  ASSERT_TRUE(eventually([&] { return p->health().sinks.at(1).buffered > 0; }, 5s))
      << "events must go to the disk buffer while the server is down";
  server.start();
  SubmitPaced(*p, 5000, 2000, 2000);
  ASSERT_TRUE(p->flush(30000)) << logging::render_health_json(p->health());

  const Received r = FromScribe(server);
  EXPECT_EQ(r.Synthetic(), Range(0, 7000)) << "exactly once, in order, after dedupe by id";
  EXPECT_TRUE(r.InOrder());
  // The outage itself is on record, in the same stream.
  EXPECT_GE(r.OfType("sink_degraded").size(), 1u);
  EXPECT_GE(r.OfType("sink_recovered").size(), 1u);
  EXPECT_EQ(r.OfType("sink_degraded").at(0).at("sink"), "scribe");
  EXPECT_EQ(r.OfType("events_dropped").size(), 0u);
  for (const auto& m : r.unique) {
    EXPECT_EQ(m.at("host"), "test-host");
    EXPECT_EQ(m.at("id"), "testhost-" + m.at("seq"));
  }
  // The JSON file got the same events.
  const Received j = FromJsonFile(t.str("events.jsonl"));
  EXPECT_EQ(j.Synthetic(), Range(0, 7000));
  EXPECT_EQ(j.duplicates, 0u);

  const auto h = p->health();
  ASSERT_EQ(h.sinks.size(), 2u);
  const auto& s = h.sinks[1];
  EXPECT_EQ(s.name, "scribe");
  EXPECT_EQ(s.state, "ok");
  EXPECT_EQ(s.dropped, 0u);
  EXPECT_EQ(s.backlog, 0u);
  EXPECT_GE(s.send_failures, 1u);
  EXPECT_EQ(h.dropped_queue, 0u);
  EXPECT_EQ(h.submitted, 7000u);
}

TEST(ScribePipeline, LostAnswersCauseDuplicatesThatDedupeByIdRemoves) {
  TempDir t;
  ScribeTestServer server;
  server.start();
  auto p = make_event_pipeline(TestPipelineConfig(t, server.port(), false));
  SubmitPaced(*p, 0, 500, 5000);
  ASSERT_TRUE(p->flush(10000));
  // The server takes batches but the call fails: the client resends.
  server.set_mode(ScribeTestServer::Mode::kAcceptThenFail);
  SubmitPaced(*p, 500, 500, 5000);
  ASSERT_TRUE(eventually([&] { return server.failed_calls() >= 3; }, 10s));
  server.set_mode(ScribeTestServer::Mode::kOk);
  SubmitPaced(*p, 1000, 500, 5000);
  ASSERT_TRUE(p->flush(30000)) << logging::render_health_json(p->health());
  const Received r = FromScribe(server);
  EXPECT_GT(r.duplicates, 0u) << "at-least-once: a failed answer means a resend";
  EXPECT_EQ(r.Synthetic(), Range(0, 1500));
  EXPECT_TRUE(r.InOrder());
}

TEST(ScribePipeline, TryLaterIsHonoured) {
  TempDir t;
  ScribeTestServer server;
  server.set_mode(ScribeTestServer::Mode::kTryLater);
  server.start();
  auto cfg = TestPipelineConfig(t, server.port(), false);
  cfg.scribe[0].common.retry_min_ms = 100;
  cfg.scribe[0].common.retry_max_ms = 400;
  auto p = make_event_pipeline(cfg);
  SubmitPaced(*p, 0, 300, 0);
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(server.accepted(), 0u);
  // Backoff 100, 200, 400, 400 ms (with jitter down to half): a handful of
  // calls in 1.5 s, not a retry storm.
  EXPECT_GE(server.calls(), 2u);
  EXPECT_LE(server.calls(), 12u);
  auto h = p->health().sinks.at(0);
  EXPECT_EQ(h.state, "try_later");
  EXPECT_GE(h.try_later, 2u);
  EXPECT_EQ(h.buffered + h.backlog - h.buffered, h.backlog);
  EXPECT_GE(h.backlog, 300u);
  EXPECT_NE(h.last_error.find("TRY_LATER"), std::string::npos) << h.last_error;

  server.set_mode(ScribeTestServer::Mode::kOk);
  ASSERT_TRUE(p->flush(20000)) << logging::render_health_json(p->health());
  const Received r = FromScribe(server);
  EXPECT_EQ(r.Synthetic(), Range(0, 300));
  ASSERT_GE(r.OfType("sink_degraded").size(), 1u);
  EXPECT_EQ(r.OfType("sink_degraded")[0].at("reason"), "try_later");
  EXPECT_EQ(p->health().sinks.at(0).state, "ok");
}

TEST(ScribePipeline, SmallBufferCapLossIsExactlyWhatGapEventsReport) {
  TempDir t;
  ScribeTestServer server;
  server.start();
  auto cfg = TestPipelineConfig(t, server.port(), false);
  cfg.scribe[0].buffer_max_bytes = 96 << 10;  // a few hundred events
  cfg.scribe[0].segment_bytes = 16 << 10;
  cfg.scribe[0].common.batch_max_bytes = 16 << 10;
  auto p = make_event_pipeline(cfg);
  const uint64_t first_seq = p->health().next_seq;
  SubmitPaced(*p, 0, 200, 4000);
  ASSERT_TRUE(p->flush(10000));
  server.stop();
  SubmitPaced(*p, 200, 4000, 4000);  // far more than the cap holds
  ASSERT_TRUE(eventually([&] { return p->health().sinks.at(0).dropped_buffer_cap > 0; }, 10s));
  server.start();
  SubmitPaced(*p, 4200, 200, 4000);
  ASSERT_TRUE(p->flush(30000)) << logging::render_health_json(p->health());
  const auto h = p->health();
  const uint64_t last_seq = h.next_seq - 1;

  const Received r = FromScribe(server);
  EXPECT_TRUE(r.InOrder());
  // Ids are consecutive per host: the ones that never arrived are the loss.
  std::set<uint64_t> got;
  for (const auto& m : r.unique) got.insert(std::stoull(m.at("seq")));
  uint64_t missing = 0;
  for (uint64_t s = first_seq; s <= last_seq; ++s) missing += !got.count(s);
  EXPECT_GT(missing, 0u);
  EXPECT_EQ(missing, r.DroppedTotal("scribe"))
      << "the gap events report exactly what the Scribe sink lost";
  EXPECT_LE(r.DroppedReported("scribe"), missing)
      << "(gap events lost in the buffer are themselves in the next total)";
  EXPECT_EQ(missing, h.sinks.at(0).dropped);
  // What arrived is the oldest (before the outage), then the newest.
  // What arrived is the oldest (before the outage), then the newest, each
  // contiguous: the cap dropped the oldest of the outage.
  const auto syn = r.Synthetic();
  ASSERT_GT(syn.size(), 200u);
  EXPECT_EQ(std::vector<int>(syn.begin(), syn.begin() + 200), Range(0, 200));
  const int tail_from = syn[200];
  EXPECT_GT(tail_from, 200);
  EXPECT_EQ(std::vector<int>(syn.begin() + 200, syn.end()), Range(tail_from, 4400 - tail_from));
  for (const auto& m : r.OfType("events_dropped")) {
    EXPECT_TRUE(m.at("reason") == "buffer_cap" || m.at("reason") == "sink_queue_full")
        << m.at("reason");
  }
}

TEST(ScribePipeline, RestartResumesReplayFromDiskAndNeverReusesIds) {
  TempDir t;
  ScribeTestServer server;
  server.start();
  const int port = server.port();
  server.stop();
  uint64_t last_seq_first_run = 0;
  {
    auto cfg = TestPipelineConfig(t, port, false);
    cfg.shutdown_grace_ms = 0;
    auto p = make_event_pipeline(cfg);
    SubmitPaced(*p, 0, 3000, 0);
    ASSERT_TRUE(eventually([&] { return p->health().intake_backlog == 0; }, 5s));
    last_seq_first_run = p->health().next_seq - 1;
  }  // stops with the server still down: everything stays on disk
  server.start();
  auto p = make_event_pipeline(TestPipelineConfig(t, port, false));
  SubmitPaced(*p, 3000, 100, 0);
  ASSERT_TRUE(p->flush(30000)) << logging::render_health_json(p->health());
  const Received r = FromScribe(server);
  EXPECT_EQ(r.Synthetic(), Range(0, 3100));
  EXPECT_TRUE(r.InOrder()) << "replayed events come first, then the new run's";
  EXPECT_EQ(r.duplicates, 0u);
  for (const auto& m : r.unique) {
    if (m.at("message") == "synthetic 3000") {
      EXPECT_GT(std::stoull(m.at("seq")), last_seq_first_run);
    }
  }
}

TEST(ScribePipeline, ThriftFormatCarriesTheSchemaStruct) {
  TempDir t;
  ScribeTestServer server;
  server.start();
  auto cfg = TestPipelineConfig(t, server.port(), false);
  cfg.scribe[0].format = "thrift";
  auto p = make_event_pipeline(cfg);
  logging::Event e = flow_event(EventType::kTlsBelowMinimum, 1);
  e.tls_version = "1.0";
  e.owner = logging::TestOwner(77u, 1000u, "curl", "/usr/bin/curl", "/a.slice", "");
  p->submit(e);
  ASSERT_TRUE(p->flush(10000));
  const auto entries = server.entries();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].category, "tlswall_test");
  std::string bytes;
  ASSERT_TRUE(logging::base64_decode(entries[0].message, &bytes));
  logging::schema::Event got;
  ASSERT_TRUE(logging::parse_binary(bytes, &got));
  EXPECT_EQ(got.type, logging::schema::EventType::TLS_BELOW_MINIMUM);
  EXPECT_EQ(got.tls_version, "1.0");
  EXPECT_EQ(got.comm, "curl");
  EXPECT_EQ(got.pid, 77);
  EXPECT_EQ(got.host, "test-host");
  EXPECT_EQ(got.id, "testhost-" + std::to_string(got.seq));
}

// The upgrade proxy's session fields reach Scribe in both formats.
TEST(ScribePipeline, UpgradeSessionFieldsInJsonAndThrift) {
  for (const std::string format : {"json", "thrift"}) {
    SCOPED_TRACE(format);
    TempDir t;
    ScribeTestServer server;
    server.start();
    auto cfg = TestPipelineConfig(t, server.port(), false);
    cfg.scribe[0].format = format;
    auto p = make_event_pipeline(cfg);
    logging::Event e = flow_event(EventType::kUpgraded, 1);
    e.tls_version = "TLSv1.3";
    e.server_name = "db.example.internal";
    e.server_subject = "CN=db.example.internal";
    e.client_subject = "O=tlswall,CN=legacy-client";
    e.cipher = "TLS_AES_256_GCM_SHA384";
    e.alpn = "http/1.1";
    e.bytes_up = 123;
    e.bytes_down = 4567;
    p->submit(e);
    ASSERT_TRUE(p->flush(10000));
    const auto entries = server.entries();
    ASSERT_EQ(entries.size(), 1u);
    if (format == "json") {
      const std::string& m = entries[0].message;
      for (const char* want : {"\"server_name\":\"db.example.internal\"",
                               "\"server_subject\":\"CN=db.example.internal\"",
                               "\"client_subject\":\"O=tlswall,CN=legacy-client\"",
                               "\"cipher\":\"TLS_AES_256_GCM_SHA384\"", "\"alpn\":\"http/1.1\"",
                               "\"bytes_up\":123", "\"bytes_down\":4567"}) {
        EXPECT_NE(m.find(want), std::string::npos) << want << " in " << m;
      }
      continue;
    }
    std::string bytes;
    ASSERT_TRUE(logging::base64_decode(entries[0].message, &bytes));
    logging::schema::Event got;
    ASSERT_TRUE(logging::parse_binary(bytes, &got));
    EXPECT_EQ(got.server_name, "db.example.internal");
    EXPECT_EQ(got.server_subject, "CN=db.example.internal");
    EXPECT_EQ(got.client_subject, "O=tlswall,CN=legacy-client");
    EXPECT_EQ(got.cipher, "TLS_AES_256_GCM_SHA384");
    EXPECT_EQ(got.alpn, "http/1.1");
    EXPECT_EQ(got.bytes_up, 123);
    EXPECT_EQ(got.bytes_down, 4567);
  }
}

TEST(ScribePipeline, FloodOfOtherEventsCannotPushOutSecurityEvents) {
  TempDir t;
  ScribeTestServer server;
  server.start();
  auto cfg = TestPipelineConfig(t, server.port(), false);
  cfg.queue_events = 200;
  cfg.scribe[0].buffer = false;  // memory only: the queue is all there is
  cfg.scribe[0].common.queue_events = 200;
  auto p = make_event_pipeline(cfg);
  server.stop();
  for (int i = 0; i < 20000; ++i) {
    logging::Event e = flow_event(EventType::kStateLost, i);
    e.message = "flood " + std::to_string(i);
    p->submit(std::move(e));
  }
  ASSERT_TRUE(eventually([&] { return p->health().intake_backlog == 0; }, 5s));
  logging::Event rejected;
  rejected.type = EventType::kPolicyRejected;
  rejected.severity = logging::Severity::kError;
  rejected.message = "synthetic 100000";
  p->submit(rejected);
  for (int i = 0; i < 5; ++i) p->submit(flow_event(EventType::kPlaintextBlocked, 100001 + i));
  ASSERT_TRUE(eventually([&] { return p->health().intake_backlog == 0; }, 5s));
  server.start();
  ASSERT_TRUE(p->flush(30000)) << logging::render_health_json(p->health());
  const Received r = FromScribe(server);
  EXPECT_EQ(r.Synthetic(), Range(100000, 6)) << "security and policy events survive the flood";
  const auto h = p->health();
  const uint64_t lost = h.dropped_queue + h.sinks.at(0).dropped;
  EXPECT_GT(lost, 0u);
  size_t flood_arrived = 0;
  for (const auto& m : r.unique) flood_arrived += m.at("type") == "state_lost";
  EXPECT_EQ(flood_arrived + lost, 20000u) << "every flood event arrived or was counted";
  EXPECT_EQ(r.DroppedTotal("") + r.DroppedTotal("scribe"), lost)
      << "and every count was reported as an events_dropped event";
}

TEST(ScribePipeline, AggregationFoldsARepeatedFloodIntoCounts) {
  TempDir t;
  ScribeTestServer server;
  server.start();
  auto cfg = TestPipelineConfig(t, server.port(), false);
  cfg.aggregate_window_ms = 300;
  auto p = make_event_pipeline(cfg);
  for (int i = 0; i < 5000; ++i) {
    logging::Event e = flow_event(EventType::kPlaintextBlocked, i);  // same key, new src port
    e.owner = logging::TestOwner(static_cast<uint32_t>(1000 + i), 33u, "php-fpm",
                                 "/usr/sbin/php-fpm", "/system.slice/php.service", "");
    p->submit(std::move(e));
  }
  ASSERT_TRUE(p->flush(10000));
  const Received r = FromScribe(server);
  uint64_t occurrences = 0;
  const auto blocked = r.OfType("plaintext_blocked");
  for (const auto& m : blocked) occurrences += m.count("count") ? std::stoull(m.at("count")) : 1;
  EXPECT_EQ(occurrences, 5000u);
  EXPECT_LE(blocked.size(), 10u) << "a flood of one key becomes a few counted events";
  bool saw_aggregate = false;
  for (const auto& m : blocked) {
    if (m.count("count")) {
      saw_aggregate = true;
      EXPECT_TRUE(m.count("first_time") && m.count("last_time"));
    }
  }
  EXPECT_TRUE(saw_aggregate);
  uint64_t folded = 0;
  for (const auto& m : blocked) folded += m.count("count") ? std::stoull(m.at("count")) : 0;
  EXPECT_EQ(p->health().aggregated, folded) << "folded events are the summaries' counts";
}

TEST(ScribePipeline, UnreachableAtStartIsNotAStartupError) {
  TempDir t;
  ScribeTestServer probe;
  probe.start();
  const int port = probe.port();
  probe.stop();
  auto p = make_event_pipeline(TestPipelineConfig(t, port));
  p->submit(flow_event(EventType::kPlaintextBlocked, 1));
  ASSERT_TRUE(eventually([&] { return p->health().sinks.at(1).state == "unreachable"; }, 5s));
  EXPECT_FALSE(p->health().sinks.at(1).connected);
  EXPECT_EQ(p->health().sinks.at(1).target, "127.0.0.1:" + std::to_string(port));
  // The local JSON file has the event and the sink_degraded report.
  ASSERT_TRUE(eventually(
      [&] { return FromJsonFile(t.str("events.jsonl")).OfType("sink_degraded").size() == 1; }, 5s));
  const auto deg = FromJsonFile(t.str("events.jsonl")).OfType("sink_degraded")[0];
  EXPECT_EQ(deg.at("sink"), "scribe");
  EXPECT_EQ(deg.at("reason"), "unreachable");
  EXPECT_NE(deg.at("message").find("127.0.0.1"), std::string::npos);
}

TEST(ScribePipeline, JsonFileThatCannotBeOpenedIsAStartupErrorWithThePath) {
  TempDir t;
  { std::ofstream(t.path() / "file") << "x"; }
  auto cfg = TestPipelineConfig(t, 0);
  cfg.json[0].path = t.str("file/events.jsonl");
  try {
    make_event_pipeline(cfg);
    FAIL() << "started";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(cfg.json[0].path), std::string::npos) << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << "one line";
  }
}

TEST(ScribePipeline, LossAtShutdownIsReportedAtTheNextStart) {
  TempDir t;
  ScribeTestServer probe;
  probe.start();
  const int port = probe.port();
  probe.stop();
  {
    auto cfg = TestPipelineConfig(t, port);
    cfg.scribe[0].buffer = false;  // nowhere to keep them
    cfg.shutdown_grace_ms = 100;
    auto p = make_event_pipeline(cfg);
    SubmitPaced(*p, 0, 50, 0);
    ASSERT_TRUE(eventually([&] { return p->health().intake_backlog == 0; }, 5s));
  }
  EXPECT_TRUE(std::filesystem::exists(t.str("state/unreported_drops")));
  auto p = make_event_pipeline(TestPipelineConfig(t, 0));
  ASSERT_TRUE(p->flush(10000));
  const auto reports = FromJsonFile(t.str("events.jsonl")).OfType("events_dropped");
  ASSERT_FALSE(reports.empty());
  uint64_t lost = 0;
  for (const auto& m : reports) {
    EXPECT_EQ(m.at("sink"), "scribe");
    EXPECT_EQ(m.at("reason"), "shutdown");
    EXPECT_NE(m.at("message").find("before the last shutdown"), std::string::npos);
    lost += std::stoull(m.at("count"));
  }
  EXPECT_GE(lost, 50u) << "the 50 events plus the reports about the outage";
  EXPECT_FALSE(std::filesystem::exists(t.str("state/unreported_drops")));
}

}  // namespace
}  // namespace tlswall::testing
