// tlswallctl's command-line parsing (agent/control/cli_args.h) and what it
// prints for flows, events, policy, reload and mode replies
// (agent/control/cli_render.h). No daemon.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "agent/control/cli_args.h"
#include "agent/control/cli_render.h"
#include "flat_json.h"

namespace tlswall::control {
namespace {

using Kind = CliCommand::Kind;
using tlswall::test_support::FlatJson;

CliCommand Ok(const std::vector<std::string>& args) {
  const CliParse p = parse_cli(args);
  EXPECT_TRUE(p.ok) << p.error;
  return p.command;
}

std::string Err(const std::vector<std::string>& args) {
  const CliParse p = parse_cli(args);
  EXPECT_FALSE(p.ok);
  return p.error;
}

std::map<std::string, std::string> Flat(const std::string& json) {
  std::map<std::string, std::string> m;
  std::string error;
  EXPECT_TRUE(FlatJson::Parse(json, &m, &error)) << error << "\n" << json;
  return m;
}

// ---- parsing ----

TEST(CliArgs, StatusAndGlobalOptionsAnywhere) {
  CliCommand c = Ok({"status"});
  EXPECT_EQ(c.kind, Kind::kStatus);
  EXPECT_FALSE(c.json);
  EXPECT_EQ(c.socket, "/run/tlswall/control.sock");
  EXPECT_EQ(c.pin_root, "/sys/fs/bpf/tlswall");
  c = Ok({"status", "--json", "--socket", "/tmp/s.sock"});
  EXPECT_TRUE(c.json);
  EXPECT_EQ(c.socket, "/tmp/s.sock");
  c = Ok({"--socket=/tmp/t.sock", "--pin-root", "/sys/fs/bpf/x", "status"});
  EXPECT_EQ(c.socket, "/tmp/t.sock");
  EXPECT_EQ(c.pin_root, "/sys/fs/bpf/x");
}

TEST(CliArgs, Help) {
  EXPECT_EQ(Ok({"--help"}).kind, Kind::kHelp);
  EXPECT_EQ(Ok({"status", "-h"}).kind, Kind::kHelp);
  // The usage text names every command the parser accepts.
  for (const char* cmd : {"status", "flows", "events", "policy show", "policy check",
                          "policy reload", "mode RULE|all monitor|enforce|policy", "teardown",
                          "--socket", "--pin-root", "Exit status"}) {
    EXPECT_NE(std::string(kCliUsage).find(cmd), std::string::npos) << cmd;
  }
}

TEST(CliArgs, Flows) {
  CliCommand c = Ok({"flows"});
  EXPECT_EQ(c.kind, Kind::kFlows);
  EXPECT_FALSE(c.verdict || c.rule || c.pid);
  EXPECT_EQ(c.limit, 50);
  c = Ok({"flows", "--verdict", "drop", "--rule=db-tls", "--pid", "42", "--limit", "5", "--json"});
  EXPECT_EQ(*c.verdict, "drop");
  EXPECT_EQ(*c.rule, "db-tls");
  EXPECT_EQ(*c.pid, 42);
  EXPECT_EQ(c.limit, 5);
  EXPECT_TRUE(c.json);
  EXPECT_EQ(Err({"flows", "--verdict", "blocked"}), "--verdict takes pass, report or drop");
  EXPECT_EQ(Err({"flows", "--pid", "x"}), "--pid needs a process id");
  EXPECT_EQ(Err({"flows", "--pid"}), "--pid needs a process id");
  EXPECT_EQ(Err({"flows", "--limit", "0"}), "--limit needs a number from 1 to 100000");
  EXPECT_EQ(Err({"flows", "--bogus"}), "'flows' does not take '--bogus'");
}

TEST(CliArgs, Events) {
  CliCommand c = Ok({"events"});
  EXPECT_EQ(c.kind, Kind::kEvents);
  EXPECT_FALSE(c.follow);
  EXPECT_TRUE(c.json);  // JSON lines by default
  EXPECT_EQ(c.count, 10);
  c = Ok({"events", "--follow", "--compact", "--count", "0"});
  EXPECT_TRUE(c.follow);
  EXPECT_TRUE(c.compact);
  EXPECT_FALSE(c.json);
  EXPECT_EQ(c.count, 0);
  EXPECT_TRUE(Ok({"events", "-f", "--json"}).follow);
  EXPECT_EQ(Err({"events", "--json", "--compact"}), "--json and --compact exclude each other");
  EXPECT_EQ(Err({"events", "--count", "-1"}), "--count needs a number from 0 to 100000");
}

TEST(CliArgs, Policy) {
  EXPECT_EQ(Ok({"policy", "show"}).kind, Kind::kPolicyShow);
  EXPECT_TRUE(Ok({"policy", "show", "--json"}).json);
  CliCommand c = Ok({"policy", "check", "/etc/tlswall/policy.d"});
  EXPECT_EQ(c.kind, Kind::kPolicyCheck);
  EXPECT_EQ(c.path, "/etc/tlswall/policy.d");
  EXPECT_EQ(Ok({"policy", "reload"}).kind, Kind::kPolicyReload);
  EXPECT_EQ(Err({"policy"}), "policy needs show, check PATH or reload");
  EXPECT_EQ(Err({"policy", "check"}), "policy check needs a PATH");
  EXPECT_EQ(Err({"policy", "reload", "now"}), "'policy' does not take 'now'");
  EXPECT_EQ(Err({"policy", "apply"}), "policy needs show, check PATH or reload, not 'apply'");
}

TEST(CliArgs, Mode) {
  CliCommand c = Ok({"mode", "db-tls", "enforce"});
  EXPECT_EQ(c.kind, Kind::kMode);
  EXPECT_EQ(c.mode_rule, "db-tls");
  EXPECT_EQ(c.mode, "enforce");
  EXPECT_EQ(Ok({"mode", "all", "policy"}).mode_rule, "all");
  EXPECT_EQ(Ok({"mode", "all", "monitor"}).mode, "monitor");
  EXPECT_EQ(Err({"mode", "all"}), "mode needs RULE|all and monitor|enforce|policy");
  EXPECT_EQ(Err({"mode", "all", "block"}), "mode takes monitor, enforce or policy, not 'block'");
  EXPECT_EQ(Err({"mode", "a", "enforce", "now"}), "'mode' does not take 'now'");
}

TEST(CliArgs, TeardownAndUnknown) {
  EXPECT_FALSE(Ok({"teardown"}).open);
  EXPECT_TRUE(Ok({"teardown", "--open"}).open);
  EXPECT_EQ(Err({"teardown", "--force"}), "'teardown' does not take '--force'");
  EXPECT_EQ(Err({"stats"}), "unknown command 'stats'");
  EXPECT_EQ(Err({}), "no command given");
  EXPECT_EQ(Err({"status", "--socket"}), "--socket needs a path");
  EXPECT_EQ(Err({"--pin-root="}), "--pin-root needs a path");
}

// ---- rendering ----

api::FlowRecord Flow() {
  api::FlowRecord f;
  f.time_us = 1763726400123456;  // 2025-11-21T12:00:00.123Z
  f.action = "drop";
  f.reason = "not_handshake_record";
  f.mode = "enforce";
  f.rule = "db-tls";
  f.boundary = "dbs";
  f.family = 4;
  f.src = "198.18.0.1";
  f.sport = 40000;
  f.dst = "198.19.0.1";
  f.dport = 5432;
  f.__set_pid(1234);
  f.__set_uid(1000);
  f.comm = "psql";
  f.cgroup = "/system.slice/app.service";
  f.owner_status = "recorded";
  f.count = 1;
  return f;
}

TEST(CliRender, FlowsTable) {
  api::FlowRecord v6 = Flow();
  v6.family = 6;
  v6.src = "2001:db8::1";
  v6.dst = "2001:db8::2";
  v6.__isset.pid = false;
  v6.__isset.uid = false;
  v6.comm.clear();
  v6.container = "web-7f9";
  v6.count = 3;
  const std::string t = render_flows_table({Flow(), v6});
  const auto nl1 = t.find('\n');
  const std::string header = t.substr(0, nl1);
  for (const char* col : {"TIME", "ACTION", "REASON", "RULE", "SRC -> DST", "PID", "COMM", "UID",
                          "CGROUP/CONTAINER"}) {
    EXPECT_NE(header.find(col), std::string::npos) << col;
  }
  for (const char* s :
       {"2025-11-21T12:00:00.123Z", "drop", "not_handshake_record", "db-tls",
        "198.18.0.1:40000 -> 198.19.0.1:5432", "1234", "psql", "1000", "/system.slice/app.service",
        "[2001:db8::1]:40000 -> [2001:db8::2]:5432", "drop x3", "web-7f9"}) {
    EXPECT_NE(t.find(s), std::string::npos) << s << "\n" << t;
  }
  // Columns line up: every row puts RULE at the same offset.
  const size_t col = header.find("RULE");
  size_t at = nl1 + 1;
  for (int row = 0; row < 2; ++row) {
    const std::string line = t.substr(at, t.find('\n', at) - at);
    EXPECT_EQ(line.find("db-tls"), col) << line;
    at = t.find('\n', at) + 1;
  }
  EXPECT_EQ(render_flows_table({}), "no flows\n");
}

TEST(CliRender, FlowsJson) {
  api::FlowRecord unknown_owner = Flow();
  unknown_owner.__isset.pid = false;
  unknown_owner.__isset.uid = false;
  const auto j = Flat(render_flows_json({Flow(), unknown_owner}));
  EXPECT_EQ(j.at("0.time"), "\"2025-11-21T12:00:00.123Z\"");
  EXPECT_EQ(j.at("0.action"), "\"drop\"");
  EXPECT_EQ(j.at("0.pid"), "1234");
  EXPECT_EQ(j.at("0.uid"), "1000");
  EXPECT_EQ(j.at("0.dport"), "5432");
  EXPECT_EQ(j.count("1.pid"), 0u);
  EXPECT_EQ(j.count("1.uid"), 0u);
  EXPECT_EQ(Flat(render_flows_json({})).at(""), "[]");
}

TEST(CliRender, CompactEvents) {
  EXPECT_EQ(render_event_compact(
                R"({"time":"2026-11-21T12:00:00.000Z","type":"plaintext_blocked","action":"drop",)"
                R"("family":4,"src":"198.18.0.1","sport":40000,"dst":"198.19.0.1","dport":5432,)"
                R"("rule":"db-tls","pid":1234,"uid":1000,"comm":"psql","container":"web",)"
                R"("count":3,"message":"blocked \"x\"","extra":{"a":[1,2,"}"]}})"),
            "2026-11-21T12:00:00.000Z plaintext_blocked drop rule=db-tls "
            "198.18.0.1:40000 -> 198.19.0.1:5432 psql[1234] uid=1000 container=web x3 "
            "blocked \"x\"");
  EXPECT_EQ(render_event_compact(R"({"time":"t","type":"agent_started","message":"up"})"),
            "t agent_started up");
  EXPECT_EQ(render_event_compact("not json"), "not json");
}

TEST(CliRender, FlatJsonReader) {
  std::map<std::string, std::string> m;
  ASSERT_TRUE(
      read_flat_json(R"( {"a":"x\u00e9\n\"","b":12,"c":true,"d":null,"e":[{"f":1}]} )", &m));
  EXPECT_EQ(m.at("a"), "x\xc3\xa9\n\"");
  EXPECT_EQ(m.at("b"), "12");
  EXPECT_EQ(m.at("c"), "true");
  EXPECT_EQ(m.at("d"), "null");
  EXPECT_EQ(m.at("e"), "");
  EXPECT_TRUE(read_flat_json("{}", &m));
  EXPECT_TRUE(m.empty());
  for (const char* bad : {"", "[]", "{", R"({"a")", R"({"a":})", R"({"a":1,})", R"({"a":1} x)",
                          R"({"a":"\q"})", R"({"a":[1,2})"}) {
    EXPECT_FALSE(read_flat_json(bad, &m)) << bad;
  }
}

api::PolicyShowReply Policy() {
  api::PolicyShowReply p;
  p.path = "/etc/tlswall/policy.d";
  p.version = "2026-11-21.1";
  p.hash = "ab12cd";
  p.loaded_at = "2026-11-21T12:00:00.000Z";
  p.generation = 7;
  p.default_mode = "monitor";
  p.files = {"10-base.toml", "20-db.toml"};
  api::PolicyBoundary b;
  b.name = "dbs";
  b.description = "database network";
  b.cidrs = {"198.19.0.0/16", "2001:db8:1::/48"};
  p.boundaries = {b};
  api::PolicyRule r;
  r.name = "db-tls";
  r.boundary = "dbs";
  r.ports = {"5432", "6432-6439"};
  r.mode = "monitor";
  r.effective_mode = "enforce";
  r.overridden = true;
  r.min_tls = "1.2";
  r.udp = "quic";
  api::OwnerSelector o;
  o.kind = "user";
  o.value = "postgres";
  r.owners = {o};
  p.rules = {r};
  api::PolicyExemption e;
  e.name = "legacy-backup";
  e.reason = "vendor agent, TLS in Q3";
  e.owner = "storage-team";
  e.expires = "2026-12-31";
  e.active = true;
  e.cidrs = {"198.19.5.0/24"};
  o.kind = "comm";
  o.value = "backupd";
  e.owners = {o};
  p.exemptions = {e};
  return p;
}

TEST(CliRender, PolicyText) {
  const std::string t = render_policy_text(Policy());
  for (const char* s :
       {"Policy 2026-11-21.1 (generation 7)", "/etc/tlswall/policy.d", "ab12cd", " UDP ", " quic ",
        "10-base.toml, 20-db.toml", "dbs: 198.19.0.0/16, 2001:db8:1::/48  (database network)",
        "db-tls", "5432,6432-6439", "enforce (override)", "user=postgres", "legacy-backup",
        "198.19.5.0/24, any port", "comm=backupd", "vendor agent, TLS in Q3", "storage-team",
        "2026-12-31"}) {
    EXPECT_NE(t.find(s), std::string::npos) << s << "\n" << t;
  }
  api::PolicyShowReply expired = Policy();
  expired.exemptions[0].active = false;
  expired.exemptions[0].expires.clear();
  const std::string t2 = render_policy_text(expired);
  EXPECT_NE(t2.find("EXPIRED"), std::string::npos);
  EXPECT_NE(t2.find("never"), std::string::npos);
}

TEST(CliRender, PolicyJson) {
  const auto j = Flat(render_policy_json(Policy()));
  EXPECT_EQ(j.at("version"), "\"2026-11-21.1\"");
  EXPECT_EQ(j.at("generation"), "7");
  EXPECT_EQ(j.at("files.1"), "\"20-db.toml\"");
  EXPECT_EQ(j.at("boundaries.0.cidrs.1"), "\"2001:db8:1::/48\"");
  EXPECT_EQ(j.at("rules.0.mode"), "\"monitor\"");
  EXPECT_EQ(j.at("rules.0.effective_mode"), "\"enforce\"");
  EXPECT_EQ(j.at("rules.0.overridden"), "true");
  EXPECT_EQ(j.at("rules.0.ports.1"), "\"6432-6439\"");
  EXPECT_EQ(j.at("rules.0.udp"), "\"quic\"");
  EXPECT_EQ(j.at("rules.0.owners.0.kind"), "\"user\"");
  EXPECT_EQ(j.at("exemptions.0.owners.0.value"), "\"backupd\"");
  EXPECT_EQ(j.at("exemptions.0.expires"), "\"2026-12-31\"");
  EXPECT_EQ(j.at("exemptions.0.active"), "true");
  EXPECT_EQ(j.at("exemptions.0.ports"), "[]");
}

TEST(CliRender, ReloadAndMode) {
  api::ReloadReply r;
  r.ok = true;
  r.changed = true;
  r.generation = 8;
  r.version = "v2";
  r.hash = "0123456789abcdef";
  EXPECT_EQ(render_reload(r), "policy generation 8 in force (version v2, hash 0123456789ab)\n");
  r.changed = false;
  EXPECT_EQ(render_reload(r),
            "policy unchanged, generation 8 in force (version v2, hash 0123456789ab)\n");
  r.ok = false;
  r.generation = 7;
  r.error = "p.toml:1:1: error: x";
  EXPECT_EQ(render_reload(r),
            "policy rejected, generation 7 stays in force: p.toml:1:1: error: x\n");

  api::ModeReply m;
  EXPECT_EQ(render_mode(m, "all", "enforce"), "no change: every rule already in enforce\n");
  EXPECT_EQ(render_mode(m, "db", "policy"), "no change: rule db already follows the policy file\n");
  api::ModeChange c;
  c.rule = "db";
  c.previous_mode = "monitor";
  c.mode = "enforce";
  c.overridden = true;
  m.changed.push_back(c);
  c.rule = "web";
  c.previous_mode = "enforce";
  c.mode = "monitor";
  c.overridden = false;
  m.changed.push_back(c);
  EXPECT_EQ(render_mode(m, "all", "enforce"),
            "db: monitor -> enforce (run-time override)\n"
            "web: enforce -> monitor (as the policy file says)\n");
}

}  // namespace
}  // namespace tlswall::control
