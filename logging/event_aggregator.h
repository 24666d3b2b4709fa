// Flood control: repeated flow events with the same (type, rule, owner,
// destination) within a window become one event with a count.
//
// The first occurrence of a key is emitted at once (alerts must not wait);
// repeats inside the window [first, first + window) are folded; when the
// window ends, one summary event stands for them: a copy of the first
// repeat with count = number of repeats and first_time / last_time. A single
// repeat is emitted as itself. Sum of `count` over emitted events therefore
// equals the number of occurrences. Single-threaded (the pipeline thread);
// time is passed in, so tests drive it.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <vector>

#include "logging/event.h"

namespace tlswall::logging {

class EventAggregator {
 public:
  using Clock = std::chrono::steady_clock;

  // window 0 turns aggregation off. At most `max_keys` keys are tracked;
  // events of further keys pass through unaggregated (counted).
  EventAggregator(std::chrono::milliseconds window, size_t max_keys);

  // Whether `e` is an event type that is aggregated (flow events only;
  // control events and events that already carry a count pass through).
  static bool aggregable(const Event& e);

  // The key of an aggregable event: type, rule, owner (uid, exe or comm,
  // container or cgroup; not pid: a flood from a fork-per-request service
  // is one flood) and destination (dst, dport, protocol).
  static std::string key_of(const Event& e);

  // True: emit `e` now. False: it was folded into a pending summary.
  // Call expire(now) first, so windows that ended are closed.
  bool offer(const Event& e, Clock::time_point now);

  // Appends the summaries of windows that ended by `now`.
  void expire(Clock::time_point now, std::vector<Event>& out);

  // Appends every pending summary (shutdown, flush).
  void flush(std::vector<Event>& out);

  // When the next window ends (Clock::time_point::max() if none).
  Clock::time_point next_deadline() const;

  uint64_t folded() const { return folded_; }        // repeats folded so far
  uint64_t untracked() const { return untracked_; }  // passed: key table full
  size_t keys() const { return keys_.size(); }

 private:
  struct Window {
    Clock::time_point ends;
    uint64_t repeats = 0;
    Event first_repeat;  // valid when repeats > 0
    std::chrono::system_clock::time_point last_time;
  };
  static void close(Window& w, std::vector<Event>& out);

  std::chrono::milliseconds window_;
  size_t max_keys_;
  std::unordered_map<std::string, Window> keys_;
  std::deque<std::pair<Clock::time_point, std::string>> order_;  // window ends, oldest first
  uint64_t folded_ = 0;
  uint64_t untracked_ = 0;
};

}  // namespace tlswall::logging
