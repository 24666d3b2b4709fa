// The event pipeline the daemon hands every event to: stamps ids, aggregates
// floods, fans out to the configured sinks, and accounts for every drop.
// (Interface fixed by the agent room; the logging room implements it.)
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "logging/event.h"

namespace toml {
inline namespace v3 {
class table;
}
}  // namespace toml

namespace tlswall::logging {

// Health of one sink, as `tlswallctl status` shows it.
struct SinkHealth {
  std::string name;  // "scribe", "syslog", "json", "stdout"
  std::string target;  // host:port or path
  bool connected = false;
  uint64_t backlog = 0;    // events queued in memory + on disk
  uint64_t delivered = 0;
  uint64_t dropped = 0;
  std::string last_error;  // "" if none
  std::string last_error_at;
};

struct PipelineHealth {
  std::vector<SinkHealth> sinks;
  uint64_t submitted = 0;
  uint64_t aggregated = 0;     // events folded into another's count
  uint64_t dropped_queue = 0;  // dropped because the in-memory queue was full
};

// Configuration of the pipeline, from the agent config's [events] table.
struct PipelineConfig {
  std::string host;           // reporter host name
  std::string agent_version;
  std::string state_dir;      // where the id counter and disk buffers live
  // ... sink settings, defined by the logging room
};

class EventPipeline {
 public:
  virtual ~EventPipeline() = default;
  // Never blocks the caller for long and never throws; a drop is counted.
  virtual void submit(Event e) = 0;
  virtual PipelineHealth health() const = 0;
  // Flushes what can be flushed within `timeout_ms` (shutdown).
  virtual void flush(int timeout_ms) = 0;
};

}  // namespace tlswall::logging
