// [events] of the agent config -> PipelineConfig, with file:line:col errors.
#include <filesystem>
#include <set>
#include <stdexcept>

#include <toml++/toml.h>

#include "logging/config_toml.h"
#include "logging/event_pipeline.h"
#include "logging/syslog_transport.h"

namespace tlswall::logging {
namespace {

using config::check_keys;
using config::fail;
using config::get_bool;
using config::get_string;
using config::get_uint;
using config::resolve;
using config::where;

constexpr const char* kDefaultJsonFile = "/var/log/tlswall/events.jsonl";

double get_share(const std::string& file, const toml::table& t, const char* key, double def) {
  const toml::node* n = t.get(key);
  if (!n) return def;
  double v;
  if (n->is_floating_point()) {
    v = n->value<double>().value();
  } else if (n->is_integer()) {
    v = static_cast<double>(n->value<int64_t>().value());
  } else {
    fail(file, *n, std::string("'") + key + "' must be a number");
  }
  if (!(v >= 0.0 && v <= 0.9))
    fail(file, *n, std::string("'") + key + "' must be between 0 and 0.9");
  return v;
}

// "host:port", "[v6addr]:port".
void parse_address(const std::string& file, const toml::node& n, const std::string& text,
                   std::string* host, int* port) {
  std::string h, p;
  if (!text.empty() && text[0] == '[') {
    const size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      fail(file, n, "address '" + text + "' must be host:port or [ipv6]:port");
    }
    h = text.substr(1, close - 1);
    p = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string::npos || text.find(':') != colon) {
      fail(file, n, "address '" + text + "' must be host:port or [ipv6]:port");
    }
    h = text.substr(0, colon);
    p = text.substr(colon + 1);
  }
  if (h.empty()) fail(file, n, "address '" + text + "' has no host");
  if (p.empty() || p.size() > 5 || p.find_first_not_of("0123456789") != std::string::npos ||
      std::stoi(p) < 1 || std::stoi(p) > 65535) {
    fail(file, n, "address '" + text + "' needs a port between 1 and 65535");
  }
  *host = h;
  *port = std::stoi(p);
}

bool valid_name(const std::string& s) {
  if (s.empty() || s.size() > 32) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
  }
  return s[0] != '-' && s[0] != '_';
}

const std::set<std::string> kCommonKeys = {
    "name",           "queue_events", "batch_max_events", "batch_max_bytes",
    "batch_delay_ms", "retry_min_ms", "retry_max_ms"};

std::set<std::string> with_common(std::set<std::string> extra) {
  extra.insert(kCommonKeys.begin(), kCommonKeys.end());
  return extra;
}

SinkCommon parse_common(const std::string& file, const toml::table& t, const std::string& name,
                        SinkCommon c) {
  c.name = name;
  c.queue_events = get_uint(file, t, "queue_events", c.queue_events, 16, 1u << 24);
  c.batch_max_events = get_uint(file, t, "batch_max_events", c.batch_max_events, 1, 100000);
  c.batch_max_bytes = get_uint(file, t, "batch_max_bytes", c.batch_max_bytes, 1024, 64u << 20);
  c.batch_delay_ms =
      static_cast<uint32_t>(get_uint(file, t, "batch_delay_ms", c.batch_delay_ms, 0, 60000));
  c.retry_min_ms =
      static_cast<uint32_t>(get_uint(file, t, "retry_min_ms", c.retry_min_ms, 10, 3600000));
  c.retry_max_ms =
      static_cast<uint32_t>(get_uint(file, t, "retry_max_ms", c.retry_max_ms, 10, 3600000));
  if (c.retry_max_ms < c.retry_min_ms) {
    fail(file, *t.get(t.contains("retry_max_ms") ? "retry_max_ms" : "retry_min_ms"),
         "'retry_max_ms' must not be smaller than 'retry_min_ms'");
  }
  return c;
}

// Visits [events.KIND] (one table) or [[events.KIND]] (several), naming
// each; `fn(table, name)`.
template <class Fn>
void each_sink_table(const std::string& file, const toml::table& events, const char* kind,
                     std::set<std::string>& names, Fn fn) {
  const toml::node* n = events.get(kind);
  if (!n) return;
  std::vector<const toml::table*> tables;
  if (const toml::table* t = n->as_table()) {
    tables.push_back(t);
  } else if (const toml::array* a = n->as_array()) {
    for (const auto& item : *a) {
      if (!item.is_table()) fail(file, item, std::string("[[events.") + kind + "]] must be tables");
      tables.push_back(item.as_table());
    }
  } else {
    fail(file, *n,
         std::string("'") + kind + "' must be a table ([events." + kind +
             "]) or an array of tables ([[events." + kind + "]])");
  }
  for (const toml::table* t : tables) {
    std::string name = get_string(file, *t, "name", "");
    const toml::node& at = t->get("name") ? *t->get("name") : static_cast<const toml::node&>(*t);
    if (name.empty()) {
      if (tables.size() > 1) {
        fail(file, *t, std::string("give each [[events.") + kind + "]] a 'name'");
      }
      name = kind;
    }
    if (!valid_name(name)) {
      fail(file, at,
           "sink name '" + name + "' must be 1-32 of a-z, 0-9, '_', '-' (it names a directory)");
    }
    if (!names.insert(name).second) fail(file, at, "sink name '" + name + "' is used twice");
    fn(*t, name);
  }
}

}  // namespace

PipelineConfig default_events_config() {
  PipelineConfig c;
  JsonSinkConfig j;
  j.common.name = "json";
  j.path = kDefaultJsonFile;
  c.json.push_back(j);
  return c;
}

void override_json_path(PipelineConfig& c, const std::string& path) {
  c.json.clear();
  JsonSinkConfig j;
  j.common.name = "json";
  j.path = path;
  c.json.push_back(j);
}

PipelineConfig parse_events_config(const toml::table& events, const std::string& file,
                                   const std::string& base_dir) {
  check_keys(file, events,
             {"state_dir", "host_id", "queue_events", "reserve_share", "aggregate_window_ms",
              "aggregate_max_keys", "report_interval_ms", "shutdown_grace_ms", "json_file", "json",
              "scribe", "syslog"},
             "[events]");
  PipelineConfig c;
  c.state_dir = resolve(base_dir, get_string(file, events, "state_dir", c.state_dir));
  if (c.state_dir.empty()) fail(file, *events.get("state_dir"), "'state_dir' must not be empty");
  c.host_id = get_string(file, events, "host_id", "");
  if (!c.host_id.empty()) {
    const bool ok =
        c.host_id.size() <= 64 &&
        c.host_id.find_first_not_of("0123456789abcdefghijklmnopqrstuvwxyz_.") == std::string::npos;
    if (!ok) fail(file, *events.get("host_id"), "'host_id' must be 1-64 of a-z, 0-9, '_', '.'");
  }
  c.queue_events = get_uint(file, events, "queue_events", c.queue_events, 16, 1u << 24);
  c.reserve_share = get_share(file, events, "reserve_share", c.reserve_share);
  c.aggregate_window_ms = static_cast<uint32_t>(
      get_uint(file, events, "aggregate_window_ms", c.aggregate_window_ms, 0, 3600000));
  c.aggregate_max_keys =
      get_uint(file, events, "aggregate_max_keys", c.aggregate_max_keys, 1, 1u << 20);
  c.report_interval_ms = static_cast<uint32_t>(
      get_uint(file, events, "report_interval_ms", c.report_interval_ms, 10, 600000));
  c.shutdown_grace_ms = static_cast<uint32_t>(
      get_uint(file, events, "shutdown_grace_ms", c.shutdown_grace_ms, 0, 600000));

  std::set<std::string> names;
  const toml::node* json_file = events.get("json_file");
  if (json_file && events.get("json")) {
    fail(file, *json_file, "use either 'json_file' or [events.json], not both");
  }
  each_sink_table(file, events, "json", names, [&](const toml::table& t, const std::string& name) {
    check_keys(file, t, with_common({"path", "max_bytes", "max_files"}), "[events.json]");
    JsonSinkConfig j;
    j.common = parse_common(file, t, name, j.common);
    if (!t.get("path")) fail(file, t, "[events.json] needs a 'path' (\"-\" for stdout)");
    j.path = resolve(base_dir, get_string(file, t, "path", ""));
    if (j.path.empty()) fail(file, *t.get("path"), "'path' must not be empty");
    j.max_bytes = get_uint(file, t, "max_bytes", j.max_bytes, 4096, 1ull << 40);
    j.max_files = get_uint(file, t, "max_files", j.max_files, 0, 1000);
    c.json.push_back(j);
  });
  const bool any_table = events.get("json") || events.get("scribe") || events.get("syslog");
  if (json_file) {
    const std::string p = resolve(base_dir, get_string(file, events, "json_file", ""));
    if (!p.empty()) {
      JsonSinkConfig j;
      j.common.name = "json";
      names.insert("json");
      j.path = p;
      c.json.push_back(j);
    }
  } else if (!any_table) {
    c.json = default_events_config().json;
    names.insert("json");
  }

  each_sink_table(
      file, events, "scribe", names, [&](const toml::table& t, const std::string& name) {
        check_keys(file, t,
                   with_common({"address", "category", "format", "timeout_ms", "buffer",
                                "buffer_dir", "buffer_max_bytes", "segment_bytes", "fsync"}),
                   "[events.scribe]");
        ScribeSinkConfig s;
        s.common = parse_common(file, t, name, s.common);
        if (const toml::node* n = t.get("address")) {
          parse_address(file, *n, get_string(file, t, "address", ""), &s.host, &s.port);
        } else {
          fail(file, t, "[events.scribe] needs an 'address' (host:port, Scribe's port is 1463)");
        }
        s.category = get_string(file, t, "category", s.category);
        if (s.category.empty()) fail(file, *t.get("category"), "'category' must not be empty");
        s.format = get_string(file, t, "format", s.format);
        if (s.format != "json" && s.format != "thrift") {
          fail(file, *t.get("format"), "'format' must be \"json\" or \"thrift\"");
        }
        s.timeout_ms =
            static_cast<uint32_t>(get_uint(file, t, "timeout_ms", s.timeout_ms, 10, 600000));
        s.buffer = get_bool(file, t, "buffer", s.buffer);
        s.buffer_dir = resolve(base_dir, get_string(file, t, "buffer_dir", ""));
        s.segment_bytes =
            get_uint(file, t, "segment_bytes", s.segment_bytes, 64u << 10, 1ull << 30);
        s.buffer_max_bytes =
            get_uint(file, t, "buffer_max_bytes", s.buffer_max_bytes, 128u << 10, 1ull << 44);
        if (s.buffer_max_bytes < 2 * s.segment_bytes) {
          fail(file,
               *(t.get("buffer_max_bytes") ? t.get("buffer_max_bytes") : t.get("segment_bytes")),
               "'buffer_max_bytes' must be at least twice 'segment_bytes'");
        }
        if (s.common.batch_max_bytes > s.segment_bytes) {
          fail(file,
               *(t.get("batch_max_bytes") ? t.get("batch_max_bytes") : t.get("segment_bytes")),
               "'batch_max_bytes' must not exceed 'segment_bytes'");
        }
        s.fsync = get_bool(file, t, "fsync", s.fsync);
        c.scribe.push_back(s);
      });

  each_sink_table(
      file, events, "syslog", names, [&](const toml::table& t, const std::string& name) {
        check_keys(
            file, t,
            with_common({"address", "facility", "app_name", "timeout_ms", "max_message_bytes"}),
            "[events.syslog]");
        SyslogSinkConfig s;
        s.common = parse_common(file, t, name, s.common);
        if (const toml::node* n = t.get("address")) {
          parse_address(file, *n, get_string(file, t, "address", ""), &s.host, &s.port);
        } else {
          fail(file, t, "[events.syslog] needs an 'address' (host:port of a TCP syslog receiver)");
        }
        s.facility = get_string(file, t, "facility", s.facility);
        if (syslog_facility(s.facility) < 0) {
          fail(file, *t.get("facility"),
               "unknown syslog facility '" + s.facility +
                   "' (kern .. local7, e.g. local0, authpriv)");
        }
        s.app_name = get_string(file, t, "app_name", s.app_name);
        if (s.app_name.empty() || s.app_name.size() > 48) {
          fail(file, *t.get("app_name"), "'app_name' must be 1-48 characters");
        }
        s.timeout_ms =
            static_cast<uint32_t>(get_uint(file, t, "timeout_ms", s.timeout_ms, 10, 600000));
        s.max_message_bytes =
            get_uint(file, t, "max_message_bytes", s.max_message_bytes, 480, 1u << 20);
        c.syslog.push_back(s);
      });
  return c;
}

}  // namespace tlswall::logging
