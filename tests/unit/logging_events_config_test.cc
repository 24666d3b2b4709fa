// parse_events_config: the [events] table of the agent config, with
// defaults, several sinks at once, and file:line:col errors for every
// mistake, unknown keys included.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include <toml++/toml.h>

#include "logging/event_pipeline.h"

namespace tlswall::logging {
namespace {

PipelineConfig Parse(const std::string& text) {
  toml::table root = toml::parse(text, std::string("agent.toml"));
  const toml::table* events = root["events"].as_table();
  toml::table empty;
  return parse_events_config(events ? *events : empty, "agent.toml", "/etc/tlswall");
}

// The error message of parsing `text`, "" if it parsed.
std::string Error(const std::string& text) {
  try {
    Parse(text);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST(EventsConfig, DefaultsToOneJsonFile) {
  const PipelineConfig c = Parse("");
  ASSERT_EQ(c.json.size(), 1u);
  EXPECT_EQ(c.json[0].path, "/var/log/tlswall/events.jsonl");
  EXPECT_EQ(c.json[0].common.name, "json");
  EXPECT_TRUE(c.scribe.empty());
  EXPECT_TRUE(c.syslog.empty());
  EXPECT_EQ(c.state_dir, "/var/lib/tlswall");
  EXPECT_EQ(c.aggregate_window_ms, 10000u);
  EXPECT_DOUBLE_EQ(c.reserve_share, 0.25);
  const PipelineConfig d = default_events_config();
  ASSERT_EQ(d.json.size(), 1u);
  EXPECT_EQ(d.json[0].path, c.json[0].path);
}

TEST(EventsConfig, JsonFileShorthandStillWorks) {
  EXPECT_EQ(Parse("[events]\njson_file = \"ev.jsonl\"\n").json.at(0).path, "/etc/tlswall/ev.jsonl");
  EXPECT_EQ(Parse("[events]\njson_file = \"-\"\n").json.at(0).path, "-");
  EXPECT_TRUE(Parse("[events]\njson_file = \"\"\n").json.empty());
}

TEST(EventsConfig, AllSinksAtOnce) {
  const PipelineConfig c = Parse(R"(
[events]
state_dir = "state"
host_id = "web1"
queue_events = 1000
reserve_share = 0.5
aggregate_window_ms = 0
json_file = "/var/log/tw.jsonl"

[events.scribe]
address = "198.18.0.9:1463"
category = "security_tlswall"
format = "thrift"
batch_max_events = 200
batch_delay_ms = 0
retry_max_ms = 5000
buffer_max_bytes = 1048576
segment_bytes = 131072
batch_max_bytes = 65536
fsync = true

[[events.syslog]]
name = "central"
address = "[2001:db8::5]:6514"
facility = "authpriv"

[[events.syslog]]
name = "backup"
address = "logs.example:514"
)");
  EXPECT_EQ(c.state_dir, "/etc/tlswall/state");
  EXPECT_EQ(c.host_id, "web1");
  EXPECT_EQ(c.queue_events, 1000u);
  EXPECT_DOUBLE_EQ(c.reserve_share, 0.5);
  EXPECT_EQ(c.aggregate_window_ms, 0u);
  ASSERT_EQ(c.json.size(), 1u);
  EXPECT_EQ(c.json[0].path, "/var/log/tw.jsonl");
  ASSERT_EQ(c.scribe.size(), 1u);
  const auto& s = c.scribe[0];
  EXPECT_EQ(s.common.name, "scribe");
  EXPECT_EQ(s.host, "198.18.0.9");
  EXPECT_EQ(s.port, 1463);
  EXPECT_EQ(s.category, "security_tlswall");
  EXPECT_EQ(s.format, "thrift");
  EXPECT_EQ(s.common.batch_max_events, 200u);
  EXPECT_EQ(s.common.batch_delay_ms, 0u);
  EXPECT_EQ(s.common.retry_max_ms, 5000u);
  EXPECT_TRUE(s.buffer);
  EXPECT_TRUE(s.fsync);
  EXPECT_EQ(s.buffer_max_bytes, 1048576u);
  ASSERT_EQ(c.syslog.size(), 2u);
  EXPECT_EQ(c.syslog[0].common.name, "central");
  EXPECT_EQ(c.syslog[0].host, "2001:db8::5");
  EXPECT_EQ(c.syslog[0].port, 6514);
  EXPECT_EQ(c.syslog[0].facility, "authpriv");
  EXPECT_EQ(c.syslog[1].host, "logs.example");
  // Scribe lingers longest to fill batches (a Thrift call each).
  EXPECT_EQ(c.syslog[0].common.batch_delay_ms, 5u);
  EXPECT_EQ(c.json[0].common.batch_delay_ms, 5u);
  EXPECT_EQ(Parse("[events.scribe]\naddress = \"h:1\"\n").scribe[0].common.batch_delay_ms, 50u);
}

TEST(EventsConfig, ExplicitJsonTables) {
  const PipelineConfig c = Parse(R"(
[[events.json]]
name = "file"
path = "events.jsonl"
max_bytes = 1048576
max_files = 3
[[events.json]]
name = "journal"
path = "-"
)");
  ASSERT_EQ(c.json.size(), 2u);
  EXPECT_EQ(c.json[0].path, "/etc/tlswall/events.jsonl");
  EXPECT_EQ(c.json[0].max_files, 3u);
  EXPECT_EQ(c.json[1].path, "-");
}

TEST(EventsConfig, OnlyAScribeSinkMeansNoDefaultJsonFile) {
  const PipelineConfig c = Parse("[events.scribe]\naddress = \"127.0.0.1:1463\"\n");
  EXPECT_TRUE(c.json.empty());
  EXPECT_EQ(c.scribe.size(), 1u);
}

TEST(EventsConfig, OverrideJsonPath) {
  PipelineConfig c = Parse("[events.scribe]\naddress = \"127.0.0.1:1463\"\n");
  override_json_path(c, "-");
  ASSERT_EQ(c.json.size(), 1u);
  EXPECT_EQ(c.json[0].path, "-");
  EXPECT_EQ(c.scribe.size(), 1u);
}

struct BadCase {
  const char* toml;
  const char* where;  // "line:col"
  const char* says;
};

TEST(EventsConfig, ErrorsNameFileLineAndColumn) {
  const BadCase cases[] = {
      {"[events]\nbogus = 1\n", "agent.toml:2:1", "unknown key 'bogus' in [events]"},
      {"[events.scribe]\naddress = \"h:1\"\ncolour = \"red\"\n", "agent.toml:3:1",
       "unknown key 'colour' in [events.scribe]"},
      {"[events.scribe]\ncategory = \"x\"\n", "agent.toml:1:1", "needs an 'address'"},
      {"[events.scribe]\naddress = \"nohostport\"\n", "agent.toml:2:11", "host:port"},
      {"[events.scribe]\naddress = \"h:70000\"\n", "agent.toml:2:11", "port between 1 and 65535"},
      {"[events.scribe]\naddress = \"::1:1463\"\n", "agent.toml:2:11", "[ipv6]:port"},
      {"[events.scribe]\naddress = \"h:1\"\nformat = \"xml\"\n", "agent.toml:3:10",
       "\"json\" or \"thrift\""},
      {"[events.scribe]\naddress = \"h:1\"\nbuffer_max_bytes = 131072\nsegment_bytes = 131072\n",
       "agent.toml:3:20", "at least twice"},
      {"[events.scribe]\naddress = \"h:1\"\nretry_min_ms = 500\nretry_max_ms = 100\n",
       "agent.toml:4:16", "must not be smaller"},
      {"[events.syslog]\naddress = \"h:514\"\nfacility = \"local9\"\n", "agent.toml:3:12",
       "unknown syslog facility 'local9'"},
      {"[events]\nreserve_share = 0.95\n", "agent.toml:2:17", "between 0 and 0.9"},
      {"[events]\nqueue_events = 3\n", "agent.toml:2:16", "between 16 and"},
      {"[events]\nqueue_events = \"many\"\n", "agent.toml:2:16", "must be an integer"},
      {"[events]\njson_file = \"a\"\n[events.json]\npath = \"b\"\n", "agent.toml:2:13",
       "either 'json_file' or [events.json]"},
      {"[[events.syslog]]\naddress = \"h:1\"\n[[events.syslog]]\naddress = \"h:2\"\n",
       "agent.toml:", "give each [[events.syslog]] a 'name'"},
      {"[[events.syslog]]\nname = \"a\"\naddress = \"h:1\"\n[[events.scribe]]\nname = "
       "\"a\"\naddress = \"h:2\"\n",
       "agent.toml:2:8", "sink name 'a' is used twice"},
      {"[events.json]\nname = \"Bad/Name\"\npath = \"x\"\n", "agent.toml:2:8", "must be 1-32 of"},
      {"[events.json]\nmax_files = 2\n", "agent.toml:1:1", "needs a 'path'"},
      {"[events]\nscribe = 5\n", "agent.toml:2:10", "must be a table"},
      {"[events.scribe]\naddress = \"h:1\"\nbuffer = \"yes\"\n", "agent.toml:3:10",
       "true or false"},
  };
  for (const auto& c : cases) {
    const std::string err = Error(c.toml);
    EXPECT_EQ(err.rfind(c.where, 0), 0u) << "for:\n" << c.toml << "\ngot: " << err;
    EXPECT_NE(err.find(c.says), std::string::npos) << "for:\n" << c.toml << "\ngot: " << err;
  }
}

}  // namespace
}  // namespace tlswall::logging
