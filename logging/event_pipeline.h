// The event pipeline the daemon hands every event to: stamps ids, aggregates
// floods, fans out to the configured sinks, and accounts for every drop.
//
//   submit() --> [intake queue] --> pipeline thread: aggregate, stamp id,
//   render JSON --> [one queue + thread per sink] --> Scribe (+ disk
//   buffer) / syslog / JSON lines
//
// Every queue is bounded with a reserved share for control and security
// events; every drop is counted per stage, reported in health() and as an
// events_dropped event (README "Floods", "Accounting").
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "logging/disk_buffer.h"
#include "logging/event.h"
#include "logging/sink.h"

namespace toml {
inline namespace v3 {
class table;
}
}  // namespace toml

namespace tlswall::logging {

struct PipelineHealth {
  std::vector<SinkHealth> sinks;
  uint64_t submitted = 0;               // submit() calls
  uint64_t emitted = 0;                 // events handed to the sinks (ids assigned)
  uint64_t aggregated = 0;              // events folded into another's count
  uint64_t dropped_queue = 0;           // dropped because the intake queue was full
  uint64_t dropped_queue_security = 0;  // of which control or security events
  uint64_t intake_backlog = 0;
  bool ids_persistent = false;  // the id high-water mark is being saved in state_dir
  std::string host_id;
  uint64_t next_seq = 0;
  std::string last_error;  // state_dir problems; "" if none
};

// ---- configuration ([events] in the agent config; README "Configuration") ----

struct SinkCommon {
  std::string name;  // unique, [a-z0-9_-]; names the buffer directory
  size_t queue_events = 65536;
  size_t batch_max_events = 1000;
  size_t batch_max_bytes = 1u << 20;
  // How long a batch may wait to fill: fewer wake-ups and writes per event.
  // Scribe: 50 ms (a Thrift call per batch); syslog and files: 5 ms.
  uint32_t batch_delay_ms = 50;
  uint32_t retry_min_ms = 100;
  uint32_t retry_max_ms = 30000;
};

inline SinkCommon short_delay() {
  SinkCommon c;
  c.batch_delay_ms = 5;
  return c;
}

struct ScribeSinkConfig {
  SinkCommon common;
  std::string host = "127.0.0.1";
  int port = 1463;
  std::string category = "tlswall";
  std::string format = "json";  // json | thrift
  uint32_t timeout_ms = 5000;
  bool buffer = true;
  std::string buffer_dir;  // "" = <state_dir>/buffer/<name>
  uint64_t buffer_max_bytes = 256ull << 20;
  uint64_t segment_bytes = 8ull << 20;
  bool fsync = false;
};

struct SyslogSinkConfig {
  SinkCommon common = short_delay();
  std::string host = "127.0.0.1";
  int port = 514;
  std::string facility = "local0";
  std::string app_name = "tlswalld";
  uint32_t timeout_ms = 5000;
  size_t max_message_bytes = 8192;
};

struct JsonSinkConfig {
  SinkCommon common = short_delay();
  std::string path;  // "-" = stdout
  uint64_t max_bytes = 64ull << 20;
  size_t max_files = 5;
};

struct PipelineConfig {
  std::string host;                            // reporter host name (the daemon sets it)
  std::string agent_version;                   // (the daemon sets it)
  std::string state_dir = "/var/lib/tlswall";  // id counter, disk buffers
  std::string host_id;                         // "" = /etc/machine-id
  size_t queue_events = 65536;                 // intake queue
  double reserve_share = 0.25;                 // of every queue, for control + security events
  uint32_t aggregate_window_ms = 10000;        // 0 = no aggregation
  size_t aggregate_max_keys = 4096;
  uint32_t report_interval_ms = 1000;  // drop reports and sink state checks
  uint32_t shutdown_grace_ms = 2000;   // delivery time left to sinks at destruction
  std::vector<ScribeSinkConfig> scribe;
  std::vector<SyslogSinkConfig> syslog;
  std::vector<JsonSinkConfig> json;
  // Called on the pipeline's thread for every event as it is emitted (id and
  // seq set), with its JSON line: e.g. the daemon's recent-events buffer for
  // `tlswallctl events --follow`. Must be quick and must not throw.
  std::function<void(const Event&, const std::string& json)> on_emit;
};

// Parses the [events] table of the agent config. Relative paths are
// resolved against `base_dir`. With no sink configured, one JSON-lines sink
// writes /var/log/tlswall/events.jsonl (json_file = "" turns it off).
// Throws std::runtime_error("file:line:col: message") on any error,
// including unknown keys.
PipelineConfig parse_events_config(const toml::table& events, const std::string& file,
                                   const std::string& base_dir);

// The configuration when the agent config has no [events] table.
PipelineConfig default_events_config();

// `tlswalld --events PATH`: replaces the JSON-lines sinks by one on PATH.
void override_json_path(PipelineConfig& c, const std::string& path);

// ---- the pipeline ----

class EventPipeline {
 public:
  virtual ~EventPipeline() = default;
  // Never blocks the caller for long and never throws; a drop is counted.
  virtual void submit(Event e) = 0;
  virtual PipelineHealth health() const = 0;
  // Emits pending aggregates and waits up to `timeout_ms` until every sink
  // has delivered everything (memory and disk). True if it did.
  virtual bool flush(int timeout_ms) = 0;
};

// Starts the pipeline and its sink threads. Throws std::runtime_error with
// one line at start-up (a JSON file that cannot be opened, an invalid
// config); an unreachable central sink or an unusable disk buffer is not a
// start-up error: the sink starts degraded and says so.
std::unique_ptr<EventPipeline> make_event_pipeline(const PipelineConfig& config);

// ---- status helpers for `tlswallctl status` ----

// {"submitted":..,"emitted":..,...,"sinks":[{...},...]}
std::string render_health_json(const PipelineHealth& h);
// Label/value rows for the text status, one block per sink.
std::vector<std::pair<std::string, std::string>> health_rows(const PipelineHealth& h);

}  // namespace tlswall::logging
