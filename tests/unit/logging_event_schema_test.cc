// The event schema: C++ enum, Thrift IDL and JSON agree; every type has a
// stable name, number and class; the Thrift binary form round-trips and
// carries the same fields as the JSON form.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "../logging/test_owner.h"
#include "logging/event.h"
#include "logging/event_thrift.h"
#include "tests/logging/logging_test_support.h"
#include "tlswall_event_constants.h"

namespace tlswall::logging {
namespace {

using testing::parse_flat_json;

TEST(EventSchema, VersionMatchesTheIdl) {
  EXPECT_EQ(schema::g_tlswall_event_constants.SCHEMA_VERSION, kSchemaVersion);
}

TEST(EventSchema, EveryTypeHasANameInTheIdlAndAClass) {
  std::set<std::string> names;
  for (uint16_t n = 1; n <= kEventTypeMax; ++n) {
    const auto t = static_cast<EventType>(n);
    const std::string name = event_type_name(t);
    EXPECT_NE(name, "unknown") << n;
    EXPECT_TRUE(names.insert(name).second) << name;
    // The IDL names the same type, in upper case.
    const auto it = schema::_EventType_VALUES_TO_NAMES.find(n);
    ASSERT_NE(it, schema::_EventType_VALUES_TO_NAMES.end()) << "IDL lacks type " << n;
    std::string upper;
    for (char c : name) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    EXPECT_EQ(upper, it->second);
  }
  EXPECT_EQ(schema::_EventType_VALUES_TO_NAMES.size(), kEventTypeMax);
  EXPECT_STREQ(event_type_name(static_cast<EventType>(kEventTypeMax + 1)), "unknown");
}

TEST(EventSchema, NewTypesHaveTheirNumbersAndNames) {
  // Receivers key alerts on these; they may never change.
  EXPECT_EQ(static_cast<int>(EventType::kUpgraded), 12);
  EXPECT_STREQ(event_type_name(EventType::kUpgraded), "upgraded");
  EXPECT_EQ(static_cast<int>(EventType::kUpgradeFailed), 13);
  EXPECT_STREQ(event_type_name(EventType::kUpgradeFailed), "upgrade_failed");
  EXPECT_EQ(static_cast<int>(EventType::kModeChanged), 14);
  EXPECT_STREQ(event_type_name(EventType::kModeChanged), "mode_changed");
  EXPECT_EQ(static_cast<int>(EventType::kSinkDegraded), 15);
  EXPECT_STREQ(event_type_name(EventType::kSinkDegraded), "sink_degraded");
  EXPECT_EQ(static_cast<int>(EventType::kSinkRecovered), 16);
  EXPECT_STREQ(event_type_name(EventType::kSinkRecovered), "sink_recovered");
}

TEST(EventSchema, Classes) {
  for (auto t : {EventType::kPlaintextReported, EventType::kPlaintextBlocked,
                 EventType::kTlsBelowMinimum, EventType::kUpgradeFailed}) {
    EXPECT_EQ(event_class(t), EventClass::kSecurity) << event_type_name(t);
  }
  for (auto t : {EventType::kPolicyApplied, EventType::kPolicyRejected, EventType::kModeChanged,
                 EventType::kEventsDropped, EventType::kSinkDegraded, EventType::kAgentStarted}) {
    EXPECT_EQ(event_class(t), EventClass::kControl) << event_type_name(t);
  }
  for (auto t : {EventType::kStateLost, EventType::kUpgraded, EventType::kSocketDestroyFailed}) {
    EXPECT_EQ(event_class(t), EventClass::kOther) << event_type_name(t);
  }
  EXPECT_STREQ(event_class_name(EventClass::kSecurity), "security");
}

Event FullEvent() {
  Event e = testing::flow_event(EventType::kPlaintextBlocked, 7);
  e.time = std::chrono::system_clock::time_point{} + std::chrono::microseconds(1763720340123456);
  e.id = "abc-42";
  e.seq = 42;
  e.owner =
      logging::TestOwner(4242u, 1000u, "psql", "/usr/bin/psql", "/user.slice/u.slice", "c0ffee");
  e.interface = "eth0";
  e.tls_version = "1.0";
  e.preamble = "postgresql";
  e.server_tls_version = "1.2";
  e.evidence = "server_hello";
  e.sock_cookie = 0xfedcba9876543210ull;  // above INT64_MAX: carried as its bits
  e.count = 12;
  e.first_time = e.time - std::chrono::seconds(9);
  e.last_time = e.time;
  e.previous_mode = "monitor";
  e.sink = "scribe";
  return e;
}

TEST(EventSchema, JsonHasTheSchemaVersion2Fields) {
  const auto m = parse_flat_json(render_json(FullEvent(), "web-1", "0.2.0"));
  EXPECT_EQ(m.at("schema_version"), "5");
  EXPECT_EQ(m.at("server_tls_version"), "1.2");
  EXPECT_EQ(m.at("evidence"), "server_hello");
  EXPECT_EQ(m.at("id"), "abc-42");
  EXPECT_EQ(m.at("seq"), "42");
  EXPECT_EQ(m.at("pid"), "4242");
  EXPECT_EQ(m.at("uid"), "1000");
  EXPECT_EQ(m.at("comm"), "psql");
  EXPECT_EQ(m.at("exe"), "/usr/bin/psql");
  EXPECT_EQ(m.at("cgroup"), "/user.slice/u.slice");
  EXPECT_EQ(m.at("container"), "c0ffee");
  EXPECT_EQ(m.at("count"), "12");
  EXPECT_EQ(m.at("first_time"), "2025-11-21T10:18:51.123Z");
  EXPECT_EQ(m.at("last_time"), "2025-11-21T10:19:00.123Z");
  EXPECT_EQ(m.at("previous_mode"), "monitor");
  EXPECT_EQ(m.at("sink"), "scribe");
  EXPECT_EQ(m.at("sock_cookie"), "18364758544493064720");
}

TEST(EventSchema, OwnerPartsAreEachOptional) {
  Event e = testing::flow_event(EventType::kPlaintextReported, 1);
  e.owner = Owner{};
  e.owner->comm = "curl";
  const auto m = parse_flat_json(render_json(e, "h", "v"));
  EXPECT_EQ(m.at("comm"), "curl");
  for (const char* k : {"pid", "uid", "exe", "cgroup", "container"}) EXPECT_EQ(m.count(k), 0u) << k;
}

TEST(EventSchema, ThriftRoundTripCarriesTheSameFieldsAsJson) {
  const Event e = FullEvent();
  const schema::Event t = to_thrift(e, "web-1", "0.2.0");
  schema::Event back;
  ASSERT_TRUE(parse_binary(serialize_binary(t), &back));
  EXPECT_EQ(back, t);
  EXPECT_EQ(back.schema_version, 5);
  EXPECT_EQ(back.preamble, "postgresql");
  EXPECT_EQ(back.server_tls_version, "1.2");
  EXPECT_EQ(back.evidence, "server_hello");
  EXPECT_EQ(back.id, "abc-42");
  EXPECT_EQ(back.seq, 42);
  EXPECT_EQ(back.time_us, 1763720340123456);
  EXPECT_EQ(back.host, "web-1");
  EXPECT_EQ(back.type, schema::EventType::PLAINTEXT_BLOCKED);
  EXPECT_EQ(back.severity, schema::Severity::WARNING);
  EXPECT_EQ(back.dst, "198.18.130.10");
  EXPECT_EQ(back.dport, 5432);
  EXPECT_EQ(back.protocol, "tcp");
  EXPECT_EQ(back.interface_name, "eth0");
  EXPECT_EQ(static_cast<uint64_t>(back.sock_cookie), 0xfedcba9876543210ull);
  EXPECT_EQ(back.pid, 4242);
  EXPECT_EQ(back.container, "c0ffee");
  EXPECT_EQ(back.count, 12);
  EXPECT_EQ(back.last_time_us - back.first_time_us, 9000000);
  EXPECT_EQ(back.sink, "scribe");

  // Every JSON key has its Thrift field set, and the reverse.
  const auto m = parse_flat_json(render_json(e, "web-1", "0.2.0"));
  const std::map<std::string, bool> isset = {
      {"id", true},
      {"seq", true},
      {"host", true},
      {"agent_version", true},
      {"action", bool(back.__isset.action)},
      {"reason", bool(back.__isset.reason)},
      {"mode", bool(back.__isset.mode)},
      {"previous_mode", bool(back.__isset.previous_mode)},
      {"family", bool(back.__isset.family)},
      {"src", bool(back.__isset.src)},
      {"sport", bool(back.__isset.sport)},
      {"dst", bool(back.__isset.dst)},
      {"dport", bool(back.__isset.dport)},
      {"protocol", bool(back.__isset.protocol)},
      {"interface", bool(back.__isset.interface_name)},
      {"sock_cookie", bool(back.__isset.sock_cookie)},
      {"tls_version", bool(back.__isset.tls_version)},
      {"preamble", bool(back.__isset.preamble)},
      {"server_tls_version", bool(back.__isset.server_tls_version)},
      {"evidence", bool(back.__isset.evidence)},
      {"pid", bool(back.__isset.pid)},
      {"uid", bool(back.__isset.uid)},
      {"comm", bool(back.__isset.comm)},
      {"exe", bool(back.__isset.exe)},
      {"cgroup", bool(back.__isset.cgroup)},
      {"container", bool(back.__isset.container)},
      {"boundary", bool(back.__isset.boundary)},
      {"rule", bool(back.__isset.rule)},
      {"policy_version", bool(back.__isset.policy_version)},
      {"policy_generation", bool(back.__isset.policy_generation)},
      {"count", bool(back.__isset.count)},
      {"first_time", bool(back.__isset.first_time_us)},
      {"last_time", bool(back.__isset.last_time_us)},
      {"sink", bool(back.__isset.sink)},
      {"message", bool(back.__isset.message)},
      {"time", true},
      {"type", true},
      {"type_id", true},
      {"severity", true},
      {"schema_version", true}};
  for (const auto& [k, v] : m) {
    ASSERT_TRUE(isset.count(k)) << "JSON field " << k << " has no Thrift counterpart";
    EXPECT_TRUE(isset.at(k)) << k;
  }
  for (const auto& [k, set] : isset) {
    if (set) {
      EXPECT_TRUE(m.count(k)) << "Thrift field for " << k << " missing in JSON";
    }
  }
}

TEST(EventSchema, MinimalEventLeavesOptionalThriftFieldsUnset) {
  Event e;
  e.type = EventType::kAgentStarted;
  const schema::Event t = to_thrift(e, "h", "v");
  EXPECT_FALSE(t.__isset.src);
  EXPECT_FALSE(t.__isset.count);
  EXPECT_FALSE(t.__isset.pid);
  EXPECT_FALSE(t.__isset.sink);
}

TEST(EventSchema, ParseRejectsGarbage) {
  schema::Event out;
  EXPECT_FALSE(parse_binary("not thrift at all", &out));
  const std::string good = serialize_binary(to_thrift(FullEvent(), "h", "v"));
  EXPECT_FALSE(parse_binary(good.substr(0, good.size() / 2), &out));
}

TEST(Base64, KnownVectorsAndRoundTrip) {
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  std::string back;
  for (size_t n = 0; n < all.size(); n += 37) {
    ASSERT_TRUE(base64_decode(base64_encode(all.substr(0, n)), &back));
    EXPECT_EQ(back, all.substr(0, n));
  }
  EXPECT_FALSE(base64_decode("abc", &back));
  EXPECT_FALSE(base64_decode("ab!d", &back));
  EXPECT_FALSE(base64_decode("a=bc", &back));
}

}  // namespace
}  // namespace tlswall::logging
