// The daemon's memory of recent events, for `tlswallctl events --follow`
// and `tlswallctl flows`: the last N events as emitted (JSON line and seq),
// and the last M flow verdicts with their owners. Filled from the event
// pipeline's thread (PipelineConfig::on_emit), read from the daemon's loop:
// thread-safe. Bounded: the oldest entries fall out, and a reader is told
// how many it missed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "logging/event.h"

namespace tlswall::control {

struct EventsPage {
  struct Line {
    uint64_t seq = 0;
    std::string json;
  };
  std::vector<Line> events;  // seq > after_seq, oldest first, at most max
  uint64_t next_seq = 0;     // pass as after_seq next time
  uint64_t skipped = 0;      // events after after_seq no longer held
  uint64_t oldest_seq = 0;   // 0 if empty
  uint64_t newest_seq = 0;
};

struct FlowFilter {
  std::optional<std::string> action;  // pass | report | drop
  std::optional<std::string> rule;
  std::optional<uint32_t> pid;
  size_t limit = 50;
};

class RecentEvents {
 public:
  RecentEvents(size_t max_events = 4096, size_t max_flows = 4096);

  // Every emitted event; those with a flow and an action are also flows.
  void add(const logging::Event& e, const std::string& json);

  // Events with seq > after_seq (after_seq 0 from a new follower: the newest
  // `max` only, nothing skipped).
  EventsPage page(uint64_t after_seq, size_t max) const;

  // Newest first, filtered.
  std::vector<logging::Event> flows(const FlowFilter& f) const;

 private:
  mutable std::mutex mu_;
  size_t max_events_, max_flows_;
  std::deque<EventsPage::Line> events_;
  std::deque<logging::Event> flows_;
};

}  // namespace tlswall::control
