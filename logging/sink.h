// What every sink shares: the event as the pipeline hands it over, the
// transport seam a delivery sink drives, and the health a sink reports.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "logging/event.h"

namespace tlswall::logging {

// An event after the pipeline stamped and rendered it; shared read-only by
// all sinks.
struct RenderedEvent {
  Event event;
  std::string json;  // render_json() of it
  EventClass cls = EventClass::kOther;
};
using EventRef = std::shared_ptr<const RenderedEvent>;

// One destination protocol. Called from one sink thread only.
class Transport {
 public:
  enum class Status { kOk, kTryLater, kError };
  virtual ~Transport() = default;
  virtual std::string kind() const = 0;    // "scribe" | "syslog" | "json"
  virtual std::string target() const = 0;  // host:port, path, "stdout"
  // The bytes this transport sends (and the disk buffer stores) for e.
  virtual std::string render(const RenderedEvent& e) = 0;
  // Sends records in order. `accepted` = how many leading records the
  // destination took (all of them on kOk; Scribe is all or nothing).
  // Never throws.
  virtual Status send(const std::vector<std::string>& records, size_t* accepted,
                      std::string* error) = 0;
  virtual bool connected() const = 0;
  virtual void disconnect() = 0;
};

// Health of one sink, as `tlswallctl status` shows it.
struct SinkHealth {
  std::string name;    // configured name, e.g. "scribe", "central-syslog"
  std::string kind;    // "scribe" | "syslog" | "json"
  std::string target;  // host:port or path
  std::string state;   // "ok" or the reason it is degraded (see README)
  bool connected = false;
  uint64_t backlog = 0;       // events waiting: memory + disk
  uint64_t buffered = 0;      // of which on disk
  uint64_t buffer_bytes = 0;  // disk buffer size
  bool buffer_writable = false;
  uint64_t delivered = 0;
  uint64_t dropped = 0;  // all reasons together
  uint64_t dropped_queue_full = 0;
  uint64_t dropped_buffer_cap = 0;
  uint64_t dropped_buffer_corrupt = 0;
  uint64_t dropped_shutdown = 0;
  uint64_t quarantined_segments = 0;
  uint64_t send_failures = 0;  // errors and TRY_LATER answers
  uint64_t try_later = 0;
  std::string last_error;  // "" if none
  std::string last_error_at;
  std::string buffer_error;  // last disk buffer problem, "" if none (or since it recovered)
};

}  // namespace tlswall::logging
