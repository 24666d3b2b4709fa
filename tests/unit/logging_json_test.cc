// json_escape, JsonObject / JsonArray and the event JSON rendering
// (render_json, format_time): stable field names, always-valid output.
#include <gtest/gtest.h>

#include <time.h>

#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <string_view>

#include "flat_json.h"
#include "logging/event.h"
#include "logging/json.h"

namespace tlswall::logging {
namespace {

using tlswall::test_support::FlatJson;

std::map<std::string, std::string> Flat(const std::string& json) {
  std::map<std::string, std::string> m;
  std::string error;
  EXPECT_TRUE(FlatJson::Parse(json, &m, &error)) << error << "\n" << json;
  return m;
}

std::string Q(const std::string& s) { return "\"" + s + "\""; }

// True if s is well-formed UTF-8 (RFC 3629: shortest form, no surrogates,
// nothing above U+10FFFF).
bool IsStrictUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) {
      n = 2;
      cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 3;
      cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += n;
  }
  return true;
}

// The string json_escape(s) decodes to, read back as a JSON string.
std::string RoundTrip(std::string_view s) {
  const auto m = Flat("{\"k\":\"" + json_escape(s) + "\"}");
  const auto it = m.find("k");
  if (it == m.end()) return "<unparsable>";
  return it->second.substr(1, it->second.size() - 2);
}

std::chrono::system_clock::time_point Utc(int y, int mo, int d, int h, int mi, int s, int ms) {
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  return std::chrono::system_clock::from_time_t(timegm(&tm)) + std::chrono::milliseconds(ms);
}

// ---- json_escape ----

TEST(JsonEscape, QuotesAndBackslash) {
  EXPECT_EQ(json_escape(R"(say "hi" \ bye)"), R"(say \"hi\" \\ bye)");
  EXPECT_EQ(json_escape(""), "");
  EXPECT_EQ(json_escape("plain/text"), "plain/text");
}

TEST(JsonEscape, ControlCharacters) {
  EXPECT_EQ(json_escape("a\nb\rc\td"), "a\\nb\\rc\\td");
  EXPECT_EQ(json_escape("\x01"), "\\u0001");
  EXPECT_EQ(json_escape("\x1f"), "\\u001f");
  EXPECT_EQ(json_escape(std::string_view("a\0b", 3)), "a\\u0000b");
  // Every control character comes out escaped and reads back the same.
  for (int c = 0; c < 0x20; ++c) {
    const std::string in(1, static_cast<char>(c));
    const std::string out = json_escape(in);
    EXPECT_EQ(out[0], '\\') << "control " << c;
    EXPECT_EQ(RoundTrip(in), in) << "control " << c;
  }
  EXPECT_EQ(json_escape("\x7f"), "\x7f");  // DEL needs no escape in JSON
}

TEST(JsonEscape, InvalidUtf8BytesBecomeU00XX) {
  EXPECT_EQ(json_escape("\xff"), "\\u00ff");
  EXPECT_EQ(json_escape("\xfe\xfe"), "\\u00fe\\u00fe");
  EXPECT_EQ(json_escape("\x80"), "\\u0080");                        // lone continuation
  EXPECT_EQ(json_escape("a\xc3"), "a\\u00c3");                      // truncated 2-byte
  EXPECT_EQ(json_escape("\xc3(x"), "\\u00c3(x");                    // bad continuation
  EXPECT_EQ(json_escape("\xe2\x82"), "\\u00e2\\u0082");             // truncated 3-byte
  EXPECT_EQ(json_escape("\xf0\x9f\x98"), "\\u00f0\\u009f\\u0098");  // truncated 4-byte
  EXPECT_EQ(json_escape("ok\xff\xc3\xa9"), "ok\\u00ff\xc3\xa9");    // resyncs after the bad byte
}

TEST(JsonEscape, ValidMultibyteKept) {
  for (const char* s : {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xe6\x97\xa5\xe6\x9c\xac",
                        "caf\xc3\xa9 \xe2\x82\xac"
                        "5",
                        "\xef\xbf\xbd", "\xf4\x8f\xbf\xbf"}) {
    EXPECT_EQ(json_escape(s), s);
  }
}

// "Bytes that are not valid UTF-8 are written as \u00XX of the byte so the
// output is always valid": overlong forms, UTF-16 surrogates and code
// points above U+10FFFF are not valid UTF-8 either.
TEST(JsonEscape, MalformedSequencesThatLookWellShapedAreEscaped) {
  for (const char* s : {"\xc0\xaf",          // overlong '/'
                        "\xc1\xbf",          // overlong 0x7f
                        "\xe0\x80\xaf",      // overlong 3-byte
                        "\xf0\x80\x80\xaf",  // overlong 4-byte
                        "\xed\xa0\x80",      // U+D800 surrogate
                        "\xed\xbf\xbf",      // U+DFFF surrogate
                        "\xf4\x90\x80\x80",  // U+110000
                        "\xf5\x80\x80\x80", "\xf7\xbf\xbf\xbf"}) {
    const std::string out = json_escape(s);
    EXPECT_TRUE(IsStrictUtf8(out)) << "raw malformed UTF-8 passed through for input "
                                   << testing::PrintToString(std::string(s));
  }
}

TEST(JsonEscapeProperty, OutputIsAlwaysValidJsonStringText) {
  std::mt19937 rng(0x15a1u);
  for (int n = 0; n < 20000; ++n) {
    std::string s(rng() % 12, '\0');
    for (auto& c : s) {
      // Biased towards bytes that start or continue multibyte sequences.
      const uint32_t r = rng();
      c = static_cast<char>((r & 3) == 0 ? 0x80 + ((r >> 8) % 0x80) : (r >> 8) & 0xff);
    }
    const std::string out = json_escape(s);
    ASSERT_TRUE(IsStrictUtf8(out))
        << "input " << testing::PrintToString(s) << " -> " << testing::PrintToString(out);
    for (char c : out) {
      ASSERT_GE(static_cast<unsigned char>(c), 0x20) << testing::PrintToString(s);
    }
    if (IsStrictUtf8(s)) {
      ASSERT_EQ(RoundTrip(s), s) << testing::PrintToString(s);
    }
  }
}

// ---- JsonObject / JsonArray ----

TEST(JsonObject, EmptyAndEveryValueKind) {
  EXPECT_EQ(JsonObject().str(), "{}");
  const std::string j = JsonObject()
                            .add("s", "x")
                            .add("str", std::string("y"))
                            .add("i", int64_t{-5})
                            .add("u", std::numeric_limits<uint64_t>::max())
                            .add("n", 3)
                            .add("un", 4u)
                            .add("d", 1.5)
                            .add_bool("b", true)
                            .add_bool("f", false)
                            .add_raw("r", "[1,2]")
                            .str();
  EXPECT_EQ(j, R"({"s":"x","str":"y","i":-5,"u":18446744073709551615,"n":3,"un":4,"d":1.500,)"
               R"("b":true,"f":false,"r":[1,2]})");
  const auto m = Flat(j);
  EXPECT_EQ(m.size(), 11u);  // the raw array flattens to r.0 and r.1
  EXPECT_EQ(m.at("r.1"), "2");
}

TEST(JsonObject, KeysAndValuesAreEscaped) {
  EXPECT_EQ(JsonObject().add("a\"b", "c\nd").str(), R"({"a\"b":"c\nd"})");
}

TEST(JsonObject, NonFiniteDoublesAreNull) {
  const std::string j = JsonObject()
                            .add("nan", std::nan(""))
                            .add("inf", std::numeric_limits<double>::infinity())
                            .str();
  EXPECT_EQ(j, R"({"nan":null,"inf":null})");
}

TEST(JsonArray, StringsAndRaw) {
  EXPECT_EQ(JsonArray().str(), "[]");
  EXPECT_EQ(JsonArray().add("a").add("b\"").add_raw("{}").add_raw("7").str(),
            R"(["a","b\"",{},7])");
  EXPECT_EQ(JsonObject().add_raw("list", JsonArray().add("x").str()).str(), R"({"list":["x"]})");
}

// ---- events ----

static_assert(static_cast<uint16_t>(EventType::kAgentStarted) == 1);
static_assert(static_cast<uint16_t>(EventType::kAgentStopped) == 2);
static_assert(static_cast<uint16_t>(EventType::kPolicyApplied) == 3);
static_assert(static_cast<uint16_t>(EventType::kPolicyRejected) == 4);
static_assert(static_cast<uint16_t>(EventType::kPlaintextReported) == 5);
static_assert(static_cast<uint16_t>(EventType::kPlaintextBlocked) == 6);
static_assert(static_cast<uint16_t>(EventType::kTlsBelowMinimum) == 7);
static_assert(static_cast<uint16_t>(EventType::kStateLost) == 8);
static_assert(static_cast<uint16_t>(EventType::kEventsDropped) == 9);
static_assert(static_cast<uint16_t>(EventType::kSocketDestroyFailed) == 10);
static_assert(static_cast<uint16_t>(EventType::kInterfaceDetached) == 11);

TEST(EventNames, StableAndDistinct) {
  const std::pair<EventType, const char*> expected[] = {
      {EventType::kAgentStarted, "agent_started"},
      {EventType::kAgentStopped, "agent_stopped"},
      {EventType::kPolicyApplied, "policy_applied"},
      {EventType::kPolicyRejected, "policy_rejected"},
      {EventType::kPlaintextReported, "plaintext_reported"},
      {EventType::kPlaintextBlocked, "plaintext_blocked"},
      {EventType::kTlsBelowMinimum, "tls_below_minimum"},
      {EventType::kStateLost, "state_lost"},
      {EventType::kEventsDropped, "events_dropped"},
      {EventType::kSocketDestroyFailed, "socket_destroy_failed"},
      {EventType::kInterfaceDetached, "interface_detached"},
  };
  std::set<std::string> seen;
  for (const auto& [t, name] : expected) {
    EXPECT_STREQ(event_type_name(t), name);
    EXPECT_TRUE(seen.insert(event_type_name(t)).second);
  }
  EXPECT_STREQ(severity_name(Severity::kInfo), "info");
  EXPECT_STREQ(severity_name(Severity::kNotice), "notice");
  EXPECT_STREQ(severity_name(Severity::kWarning), "warning");
  EXPECT_STREQ(severity_name(Severity::kError), "error");
}

Event BlockedFlow() {
  Event e;
  e.type = EventType::kPlaintextBlocked;
  e.severity = Severity::kWarning;
  e.time = Utc(2026, 11, 21, 12, 34, 56, 789);
  e.flow = FlowEndpoints{4, "10.0.0.5", 40000, "10.1.2.3", 5432};
  e.action = "drop";
  e.reason = "not_handshake_record";
  e.mode = "enforce";
  e.boundary = "db";
  e.rule = "db-tls";
  e.interface = "eth0";
  e.policy_version = "2026-11-21.1";
  e.policy_generation = 7;
  e.sock_cookie = 99;
  return e;
}

std::set<std::string> Keys(const std::map<std::string, std::string>& m) {
  std::set<std::string> k;
  for (const auto& [key, v] : m) k.insert(key);
  return k;
}

TEST(RenderJson, FlowEventHasTheStableFieldNames) {
  const auto m = Flat(render_json(BlockedFlow(), "web-1", "0.1.0"));
  EXPECT_EQ(m.at("time"), Q("2026-11-21T12:34:56.789Z"));
  EXPECT_EQ(m.at("host"), Q("web-1"));
  EXPECT_EQ(m.at("agent_version"), Q("0.1.0"));
  EXPECT_EQ(m.at("type"), Q("plaintext_blocked"));
  EXPECT_EQ(m.at("type_id"), "6");
  EXPECT_EQ(m.at("severity"), Q("warning"));
  EXPECT_EQ(m.at("action"), Q("drop"));
  EXPECT_EQ(m.at("reason"), Q("not_handshake_record"));
  EXPECT_EQ(m.at("mode"), Q("enforce"));
  EXPECT_EQ(m.at("family"), "4");
  EXPECT_EQ(m.at("src"), Q("10.0.0.5"));
  EXPECT_EQ(m.at("sport"), "40000");
  EXPECT_EQ(m.at("dst"), Q("10.1.2.3"));
  EXPECT_EQ(m.at("dport"), "5432");
  EXPECT_EQ(m.at("protocol"), Q("tcp"));
  EXPECT_EQ(m.at("boundary"), Q("db"));
  EXPECT_EQ(m.at("rule"), Q("db-tls"));
  EXPECT_EQ(m.at("interface"), Q("eth0"));
  EXPECT_EQ(m.at("policy_version"), Q("2026-11-21.1"));
  EXPECT_EQ(m.at("policy_generation"), "7");
  EXPECT_EQ(m.at("sock_cookie"), "99");
  // Fields that do not apply are left out, not written empty.
  const std::set<std::string> expected = {
      "time",        "host",          "agent_version", "type",           "type_id",
      "severity",    "action",        "reason",        "mode",           "family",
      "src",         "sport",         "dst",           "dport",          "protocol",
      "boundary",    "rule",          "interface",     "policy_version", "policy_generation",
      "sock_cookie", "schema_version"};
  EXPECT_EQ(Keys(m), expected);
}

TEST(RenderJson, EventWithoutFlowHasNoEndpointFields) {
  Event e;
  e.type = EventType::kPolicyApplied;
  e.severity = Severity::kNotice;
  e.time = Utc(2026, 1, 2, 3, 4, 5, 6);
  e.policy_version = "v9";
  e.policy_generation = 9;
  e.message = "3 rules, 1 exemption";
  const auto m = Flat(render_json(e, "h", "1.2.3"));
  EXPECT_EQ(m.at("type"), Q("policy_applied"));
  EXPECT_EQ(m.at("type_id"), "3");
  EXPECT_EQ(m.at("severity"), Q("notice"));
  EXPECT_EQ(m.at("time"), Q("2026-01-02T03:04:05.006Z"));
  EXPECT_EQ(m.at("policy_version"), Q("v9"));
  EXPECT_EQ(m.at("message"), Q("3 rules, 1 exemption"));
  for (const char* k : {"src", "dst", "sport", "dport", "family", "protocol", "action", "reason",
                        "rule", "boundary", "count", "sock_cookie", "tls_version"}) {
    EXPECT_EQ(m.count(k), 0u) << k;
  }
}

TEST(RenderJson, AggregateCountAndTlsVersion) {
  Event e = BlockedFlow();
  e.type = EventType::kTlsBelowMinimum;
  e.tls_version = "1.0";
  e.count = 12;
  const auto m = Flat(render_json(e, "h", "v"));
  EXPECT_EQ(m.at("type"), Q("tls_below_minimum"));
  EXPECT_EQ(m.at("type_id"), "7");
  EXPECT_EQ(m.at("tls_version"), Q("1.0"));
  EXPECT_EQ(m.at("count"), "12");
}

TEST(RenderJson, HostileStringsStayInsideTheirField) {
  Event e = BlockedFlow();
  e.rule = "r\",\"type\":\"agent_started";
  e.message = "bad \xff byte\nnext";
  const auto m = Flat(render_json(e, "h\"ost", "v"));
  EXPECT_EQ(m.at("type"), Q("plaintext_blocked"));
  EXPECT_EQ(m.at("rule"), Q("r\",\"type\":\"agent_started"));
  EXPECT_EQ(m.at("host"), Q("h\"ost"));
  EXPECT_EQ(m.at("message"), Q("bad \xc3\xbf byte\nnext"));  // \u00ff reads back as U+00FF
}

TEST(RenderJson, Ipv6Flow) {
  Event e = BlockedFlow();
  e.flow = FlowEndpoints{6, "fd00::5", 1, "2001:db8::1", 443};
  const auto m = Flat(render_json(e, "h", "v"));
  EXPECT_EQ(m.at("family"), "6");
  EXPECT_EQ(m.at("src"), Q("fd00::5"));
  EXPECT_EQ(m.at("dst"), Q("2001:db8::1"));
  EXPECT_EQ(m.at("dport"), "443");
}

// ---- format_time ----

TEST(FormatTime, Rfc3339UtcWithMilliseconds) {
  EXPECT_EQ(format_time(std::chrono::system_clock::time_point{}), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(format_time(Utc(2026, 11, 21, 12, 34, 56, 789)), "2026-11-21T12:34:56.789Z");
  EXPECT_EQ(format_time(Utc(2024, 2, 29, 23, 59, 59, 999)), "2024-02-29T23:59:59.999Z");
  EXPECT_EQ(format_time(Utc(2100, 1, 1, 0, 0, 0, 1)), "2100-01-01T00:00:00.001Z");
}

TEST(FormatTime, SubMillisecondsAreTruncatedNotRounded) {
  const auto t = Utc(2026, 12, 31, 23, 59, 59, 999) + std::chrono::microseconds(999);
  EXPECT_EQ(format_time(t), "2026-12-31T23:59:59.999Z");
}

}  // namespace
}  // namespace tlswall::logging
