// render_status_json / render_status_text / overall_mode and the stable
// counter, reason, class and action names `tlswallctl status` and events use.
#include <gtest/gtest.h>

#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <string_view>

#include "agent/status_report.h"
#include "flat_json.h"

namespace tlswall::agent {
namespace {

using tlswall::test_support::FlatJson;

std::map<std::string, std::string> Flat(const std::string& json) {
  std::map<std::string, std::string> m;
  std::string error;
  EXPECT_TRUE(FlatJson::Parse(json, &m, &error)) << error << "\n" << json;
  return m;
}

std::string Q(const std::string& s) { return "\"" + s + "\""; }

size_t CountUnder(const std::map<std::string, std::string>& m, const std::string& prefix) {
  size_t n = 0;
  for (const auto& [k, v] : m) n += k.rfind(prefix, 0) == 0;
  return n;
}

const uint32_t kCounters[] = {
    TW_CNT_PACKETS,         TW_CNT_FLOWS_SEEN,         TW_CNT_FLOWS_TLS,
    TW_CNT_FLOWS_NOT_TLS,   TW_CNT_PLAINTEXT_REPORTED, TW_CNT_PLAINTEXT_BLOCKED,
    TW_CNT_EXEMPT,          TW_CNT_STATE_LOST,         TW_CNT_PACKETS_DROPPED,
    TW_CNT_EVENTS_LOST,     TW_CNT_HELD_OUT_OF_WINDOW, TW_CNT_FRAGMENTS,
    TW_CNT_FLOW_TABLE_FULL, TW_CNT_PARSE_ERRORS,       TW_CNT_TLS_BELOW_MINIMUM,
    TW_CNT_FLOWS_INBOUND,   TW_CNT_FLOWS_REAPED,       TW_CNT_FLOWS_KEPT,
    TW_CNT_SERVERS_CHECKED, TW_CNT_SERVERS_NOT_TLS,    TW_CNT_SERVER_VERSION_UNKNOWN,
    TW_CNT_BAD_RECORDS,     TW_CNT_UDP_FLOWS,          TW_CNT_UDP_NOT_ALLOWED,
};

const uint32_t kReasons[] = {
    TW_REASON_NONE,
    TW_REASON_NOT_HANDSHAKE_RECORD,
    TW_REASON_BAD_RECORD_VERSION,
    TW_REASON_BAD_RECORD_LENGTH,
    TW_REASON_NOT_CLIENT_HELLO,
    TW_REASON_BAD_HANDSHAKE_LENGTH,
    TW_REASON_BAD_CLIENT_VERSION,
    TW_REASON_TLS_BELOW_MINIMUM,
    TW_REASON_OVERLAP_MISMATCH,
    TW_REASON_UNDECIDABLE,
    TW_REASON_FRAGMENTED,
    TW_REASON_STATE_LOST,
    TW_REASON_OUT_OF_WINDOW,
    TW_REASON_OPAQUE_HEADERS,
    TW_REASON_BAD_PREAMBLE,
    TW_REASON_PREAMBLE_NOT_ALLOWED,
    TW_REASON_BAD_RECORD,
    TW_REASON_SERVER_NOT_TLS,
    TW_REASON_UDP_NOT_ALLOWED,
    TW_REASON_NOT_QUIC,
};

StatusReport Sample() {
  StatusReport s;
  s.version = "0.1.0";
  s.uptime_s = 3600;
  s.host = "web-1";
  s.policy_path = "/etc/tlswall/policy.d";
  s.policy_version = "2026-11-21.1";
  s.policy_hash = "ab12cd";
  s.policy_generation = 7;
  s.policy_loaded_at = "2026-11-21T12:00:00.000Z";
  s.rules = {{"db-tls", "enforce"}, {"web-tls", "monitor"}};
  s.exemptions_active = {"legacy-backup"};
  s.interfaces = {{"eth0", 2, true, true, "tc egress"}, {"eth1", 3, false, false, "tc egress"}};
  s.bpffs = "/sys/fs/bpf";
  s.pin_root = "/sys/fs/bpf/tlswall";
  s.cgroup2 = "/sys/fs/cgroup";
  for (uint32_t c = 0; c < TW_CNT_MAX; ++c) s.counters[c] = 100 + c;
  s.drops_by_reason[TW_REASON_NOT_HANDSHAKE_RECORD] = 4;
  s.drops_by_reason[TW_REASON_TLS_BELOW_MINIMUM] = 2;
  s.events_received = 11;
  s.events_written = 10;
  s.events_write_failed = 1;
  s.sockets_destroyed = 3;
  s.socket_destroy_failed = 1;
  s.events_path = "/var/log/tlswall/events.jsonl";
  return s;
}

TEST(StatusJson, HasEveryFieldWithItsValue) {
  const auto j = Flat(render_status_json(Sample()));
  EXPECT_EQ(j.at("version"), Q("0.1.0"));
  EXPECT_EQ(j.at("host"), Q("web-1"));
  EXPECT_EQ(j.at("uptime_s"), "3600");
  EXPECT_EQ(j.at("mode"), Q("mixed"));
  EXPECT_EQ(j.at("policy.path"), Q("/etc/tlswall/policy.d"));
  EXPECT_EQ(j.at("policy.version"), Q("2026-11-21.1"));
  EXPECT_EQ(j.at("policy.hash"), Q("ab12cd"));
  EXPECT_EQ(j.at("policy.generation"), "7");
  EXPECT_EQ(j.at("policy.loaded_at"), Q("2026-11-21T12:00:00.000Z"));
  EXPECT_EQ(j.at("policy.last_error"), Q(""));
  EXPECT_EQ(j.at("rules.0.name"), Q("db-tls"));
  EXPECT_EQ(j.at("rules.0.mode"), Q("enforce"));
  EXPECT_EQ(j.at("rules.1.name"), Q("web-tls"));
  EXPECT_EQ(j.at("rules.1.mode"), Q("monitor"));
  EXPECT_EQ(j.at("exemptions_active.0"), Q("legacy-backup"));
  EXPECT_EQ(j.at("interfaces.0.name"), Q("eth0"));
  EXPECT_EQ(j.at("interfaces.0.ifindex"), "2");
  EXPECT_EQ(j.at("interfaces.0.hook"), Q("tc egress"));
  EXPECT_EQ(j.at("interfaces.0.attached"), "true");
  EXPECT_EQ(j.at("interfaces.0.created_qdisc"), "true");
  EXPECT_EQ(j.at("interfaces.1.attached"), "false");
  EXPECT_EQ(j.at("interfaces.1.created_qdisc"), "false");
  EXPECT_EQ(j.at("bpf.abi_version"), std::to_string(TW_ABI_VERSION));
  EXPECT_EQ(j.at("bpf.bpffs"), Q("/sys/fs/bpf"));
  EXPECT_EQ(j.at("bpf.pin_root"), Q("/sys/fs/bpf/tlswall"));
  EXPECT_EQ(j.at("bpf.cgroup2"), Q("/sys/fs/cgroup"));
  EXPECT_EQ(j.at("events.path"), Q("/var/log/tlswall/events.jsonl"));
  EXPECT_EQ(j.at("events.received"), "11");
  EXPECT_EQ(j.at("events.written"), "10");
  EXPECT_EQ(j.at("events.write_failed"), "1");
  EXPECT_EQ(j.at("events.lost_in_kernel"), std::to_string(100 + TW_CNT_EVENTS_LOST));
  EXPECT_EQ(j.at("sockets.destroyed"), "3");
  EXPECT_EQ(j.at("sockets.destroy_failed"), "1");
}

TEST(StatusJson, EveryDefinedCounterIsReportedByName) {
  const auto j = Flat(render_status_json(Sample()));
  for (uint32_t c : kCounters) {
    const std::string key = std::string("counters.") + counter_name(c);
    ASSERT_TRUE(j.count(key)) << key;
    EXPECT_EQ(j.at(key), std::to_string(100 + c)) << key;
  }
  EXPECT_EQ(CountUnder(j, "counters."), std::size(kCounters));
}

TEST(StatusJson, DropsListOnlyReasonsThatDropped) {
  const auto j = Flat(render_status_json(Sample()));
  EXPECT_EQ(j.at("drops_by_reason.not_handshake_record"), "4");
  EXPECT_EQ(j.at("drops_by_reason.tls_below_minimum"), "2");
  EXPECT_EQ(CountUnder(j, "drops_by_reason."), 2u);
}

TEST(StatusJson, EmptyReportIsValidJson) {
  const auto j = Flat(render_status_json(StatusReport{}));
  EXPECT_EQ(j.at("mode"), Q("none"));
  EXPECT_EQ(j.at("rules"), "[]");
  EXPECT_EQ(j.at("exemptions_active"), "[]");
  EXPECT_EQ(j.at("interfaces"), "[]");
  EXPECT_EQ(j.at("drops_by_reason"), "{}");
  EXPECT_EQ(j.at("policy.generation"), "0");
}

TEST(StatusJson, StringsAreEscaped) {
  StatusReport s = Sample();
  s.host = "we\"b\\1\n";
  s.policy_last_error = "p.toml:3:1: error: bad\tvalue \x01";
  s.rules = {{"rule \"q\"", "monitor"}};
  const auto j = Flat(render_status_json(s));
  EXPECT_EQ(j.at("host"), Q("we\"b\\1\n"));
  EXPECT_EQ(j.at("policy.last_error"), Q("p.toml:3:1: error: bad\tvalue \x01"));
  EXPECT_EQ(j.at("rules.0.name"), Q("rule \"q\""));
}

// A newer classifier can count drops under reason numbers this agent has no
// name for. Each must still be its own JSON key: two keys both named
// "unknown" make a document many JSON readers reject or silently collapse.
TEST(StatusJson, DropsUnderUnnamedReasonsKeepDistinctKeys) {
  StatusReport s = Sample();
  s.drops_by_reason[14] = 5;
  s.drops_by_reason[15] = 6;
  std::map<std::string, std::string> j;
  std::string error;
  ASSERT_TRUE(FlatJson::Parse(render_status_json(s), &j, &error)) << error << "\n"
                                                                  << render_status_json(s);
  EXPECT_EQ(CountUnder(j, "drops_by_reason."), 4u);
}

// The fields added with the control API (issue 3), beside the first
// release's keys that tests/e2e read.
StatusReport Extended() {
  StatusReport s = Sample();
  s.started_at = "2026-11-21T11:00:00.000Z";
  s.policy_watch = "inotify on /etc/tlswall/policy.d";
  s.rules[0].boundary = "dbs";
  s.rules[0].policy_mode = "monitor";
  s.rules[0].overridden = true;
  s.interfaces[0].pattern = "eth*";
  s.interfaces[0].hooks = {"tc egress", "cgroup connect4"};
  s.tables = {{"flows", 2}, {"lpm4", 1}, {"counters", 1}, {"events", 1}, {"owners", 1}};
  s.attribution.active_backend = "tp_btf";
  s.attribution.backends = {{"kprobe", "unavailable", "kprobes are not in this kernel"},
                            {"tp_btf", "active", ""}};
  s.metrics_listen = "127.0.0.1:9465";
  return s;
}

TEST(StatusJson, ControlApiFields) {
  const auto j = Flat(render_status_json(Extended()));
  EXPECT_EQ(j.at("started_at"), Q("2026-11-21T11:00:00.000Z"));
  EXPECT_EQ(j.at("policy.watch"), Q("inotify on /etc/tlswall/policy.d"));
  // Rules keep name + mode (the effective one) and gain the rest.
  EXPECT_EQ(j.at("rules.0.name"), Q("db-tls"));
  EXPECT_EQ(j.at("rules.0.mode"), Q("enforce"));
  EXPECT_EQ(j.at("rules.0.boundary"), Q("dbs"));
  EXPECT_EQ(j.at("rules.0.policy_mode"), Q("monitor"));
  EXPECT_EQ(j.at("rules.0.overridden"), "true");
  EXPECT_EQ(j.at("rules.1.policy_mode"), Q("monitor"));  // "" = as effective
  EXPECT_EQ(j.at("rules.1.overridden"), "false");
  EXPECT_EQ(j.at("interfaces.0.pattern"), Q("eth*"));
  EXPECT_EQ(j.at("interfaces.0.hooks.1"), Q("cgroup connect4"));
  EXPECT_EQ(j.at("interfaces.1.hooks"), "[]");
  EXPECT_EQ(j.at("tables.flows"), "2");
  EXPECT_EQ(j.at("tables.owners"), "1");
  // The first release's schema keys come from the daemon's tables too.
  EXPECT_EQ(j.at("bpf.schema_flows"), "2");
  EXPECT_EQ(j.at("bpf.schema_policy"), "1");
  EXPECT_EQ(j.at("bpf.tables"), Q(""));
  EXPECT_EQ(j.at("attribution.active_backend"), Q("tp_btf"));
  EXPECT_EQ(j.at("attribution.backends.0.name"), Q("kprobe"));
  EXPECT_EQ(j.at("attribution.backends.0.state"), Q("unavailable"));
  EXPECT_EQ(j.at("attribution.backends.0.reason"), Q("kprobes are not in this kernel"));
  EXPECT_EQ(j.at("metrics_listen"), Q("127.0.0.1:9465"));
}

TEST(StatusJson, SchemaKeysOnlyForReportedTables) {
  StatusReport s = Sample();
  s.tables.clear();
  const auto j = Flat(render_status_json(s));
  EXPECT_EQ(j.count("bpf.schema_flows"), 0u);
  EXPECT_EQ(j.at("tables"), "{}");
}

TEST(StatusText, ControlApiFields) {
  const std::string t = render_status_text(Extended());
  for (const char* s :
       {"up 3600s (since 2026-11-21T11:00:00.000Z)", "inotify on /etc/tlswall/policy.d",
        "enforce, boundary dbs, run-time override (policy: monitor)", "matched by 'eth*'",
        "tc egress, cgroup connect4", "flows_v2, lpm4_v1", "owners_v1", "Attribution\n", "tp_btf",
        "unavailable: kprobes are not in this kernel", "127.0.0.1:9465"}) {
    EXPECT_NE(t.find(s), std::string::npos) << "missing " << s << "\n" << t;
  }
  const std::string plain = render_status_text(Sample());
  EXPECT_NE(plain.find("none (flows carry no owner)"), std::string::npos) << plain;
  EXPECT_NE(plain.find("metrics endpoint"), std::string::npos) << plain;
  EXPECT_EQ(plain.find("override"), std::string::npos) << plain;
}

TEST(OverallMode, FromTheRules) {
  StatusReport s;
  EXPECT_EQ(overall_mode(s), "none");
  s.rules = {{"a", "monitor"}, {"b", "monitor"}};
  EXPECT_EQ(overall_mode(s), "monitor");
  s.rules = {{"a", "enforce"}};
  EXPECT_EQ(overall_mode(s), "enforce");
  s.rules = {{"a", "enforce"}, {"b", "monitor"}};
  EXPECT_EQ(overall_mode(s), "mixed");
  s.rules = {{"a", "monitor"}, {"b", "enforce"}, {"c", "enforce"}};
  EXPECT_EQ(overall_mode(s), "mixed");
}

TEST(StatusText, HasTheSectionsInOrder) {
  const std::string t = render_status_text(Sample());
  size_t at = 0;
  for (const char* section : {"Policy\n", "Rules\n", "Exemptions in force\n", "Attached\n",
                              "Counters\n", "Drops by reason\n", "Events\n"}) {
    const size_t p = t.find(section, at);
    ASSERT_NE(p, std::string::npos) << "missing or out of order: " << section << "\n" << t;
    at = p;
  }
  EXPECT_EQ(t.rfind("tlswalld 0.1.0 on web-1, up 3600s\n", 0), 0u) << t;
}

TEST(StatusText, ShowsTheValues) {
  const std::string t = render_status_text(Sample());
  for (const char* s :
       {"mixed", "2026-11-21.1", "ab12cd", "/etc/tlswall/policy.d", "db-tls", "enforce", "web-tls",
        "legacy-backup", "eth0", "attached", "(clsact ours)", "eth1", "NOT ATTACHED",
        "(clsact pre-existing)", "/sys/fs/bpf (pin root /sys/fs/bpf/tlswall)", "/sys/fs/cgroup",
        "/var/log/tlswall/events.jsonl", "3 (failed 1)"}) {
    EXPECT_NE(t.find(s), std::string::npos) << "missing " << s << "\n" << t;
  }
  for (uint32_t c : kCounters) {
    EXPECT_NE(t.find(counter_name(c)), std::string::npos) << counter_name(c);
  }
  EXPECT_NE(t.find("not_handshake_record"), std::string::npos);
}

TEST(StatusText, OptionalSectionsAndPlaceholders) {
  StatusReport s = Sample();
  s.exemptions_active.clear();
  s.drops_by_reason = {};
  s.cgroup2.clear();
  const std::string t = render_status_text(s);
  EXPECT_EQ(t.find("Exemptions in force"), std::string::npos) << t;
  EXPECT_EQ(t.find("Drops by reason"), std::string::npos) << t;
  EXPECT_NE(t.find("not mounted"), std::string::npos) << t;
  const size_t err = t.find("last reload error");
  ASSERT_NE(err, std::string::npos);
  const std::string line = t.substr(err, t.find('\n', err) - err);
  ASSERT_GT(line.size(), 5u);
  EXPECT_EQ(line.substr(line.size() - 5), " none") << line;
}

TEST(StatusText, ReloadErrorShownWithItsTime) {
  StatusReport s = Sample();
  s.policy_last_error = "p.toml:3:1: unknown boundary 'dbs'";
  s.policy_last_error_at = "2026-11-21T12:05:00.000Z";
  const std::string t = render_status_text(s);
  EXPECT_NE(t.find("2026-11-21T12:05:00.000Z p.toml:3:1: unknown boundary 'dbs'"),
            std::string::npos)
      << t;
}

// The reload error is what an operator runs `status` for; a validator
// message with a long path must not be cut short.
TEST(StatusText, LongValuesAreNotTruncated) {
  StatusReport s = Sample();
  s.policy_last_error = "/etc/tlswall/policy.d/" + std::string(200, 'x') +
                        ".toml:12:5: error: boundary 'payments' overlaps 'pci' on 443";
  s.policy_path = "/srv/" + std::string(300, 'p');
  const std::string t = render_status_text(s);
  EXPECT_NE(t.find(s.policy_last_error), std::string::npos) << t;
  EXPECT_NE(t.find(s.policy_path), std::string::npos) << t;
}

TEST(StatusNames, EveryDefinedCounterHasADistinctName) {
  std::set<std::string> seen;
  for (uint32_t c : kCounters) {
    const char* n = counter_name(c);
    ASSERT_NE(n, nullptr) << "counter " << c;
    EXPECT_TRUE(seen.insert(n).second) << "duplicate name " << n;
    for (const char* p = n; *p; ++p) EXPECT_TRUE(std::islower(*p) || *p == '_') << n;
  }
  EXPECT_EQ(counter_name(TW_CNT_MAX), nullptr);
  EXPECT_EQ(counter_name(1000), nullptr);
}

TEST(StatusNames, EveryDefinedReasonHasADistinctName) {
  std::set<std::string> seen;
  for (uint32_t r : kReasons) {
    const std::string n = reason_name(r);
    EXPECT_NE(n, "unknown") << "reason " << r;
    EXPECT_EQ(n.rfind("reason_", 0), std::string::npos) << "reason " << r << " has no name";
    EXPECT_TRUE(seen.insert(n).second) << "duplicate name " << n;
  }
  EXPECT_EQ(reason_name(TW_REASON_NONE), "none");
  EXPECT_EQ(reason_name(TW_REASON_TLS_BELOW_MINIMUM), "tls_below_minimum");
}

// status_report.h: reason_name returns "reason_N" for unknown reasons.
TEST(StatusNames, UnknownReasonIsNamedByNumber) {
  EXPECT_EQ(reason_name(TW_REASON_MAX), "reason_" + std::to_string(TW_REASON_MAX));
  EXPECT_EQ(reason_name(200), "reason_200");
}

TEST(StatusNames, ClassesAndActions) {
  std::set<std::string> classes;
  for (uint32_t c :
       {TW_CLASS_PENDING, TW_CLASS_TLS, TW_CLASS_NOT_TLS, TW_CLASS_UNTRACKED, TW_CLASS_INBOUND}) {
    const std::string n = class_name(c);
    EXPECT_NE(n, "unknown") << "class " << c;
    EXPECT_TRUE(classes.insert(n).second) << n;
  }
  EXPECT_STREQ(class_name(TW_CLASS_NOT_TLS), "not_tls");
  EXPECT_STREQ(action_name(TW_ACTION_PASS), "pass");
  EXPECT_STREQ(action_name(TW_ACTION_REPORT), "report");
  EXPECT_STREQ(action_name(TW_ACTION_DROP), "drop");
  EXPECT_STREQ(action_name(99), "unknown");
}

}  // namespace
}  // namespace tlswall::agent
