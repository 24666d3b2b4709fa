#include "agent/control/recent_events.h"

#include <algorithm>

namespace tlswall::control {

RecentEvents::RecentEvents(size_t max_events, size_t max_flows)
    : max_events_(std::max<size_t>(max_events, 1)), max_flows_(std::max<size_t>(max_flows, 1)) {}

void RecentEvents::add(const logging::Event& e, const std::string& json) {
  std::lock_guard<std::mutex> lk(mu_);
  events_.push_back({e.seq, json});
  while (events_.size() > max_events_) events_.pop_front();
  if (e.flow && !e.action.empty()) {
    flows_.push_back(e);
    while (flows_.size() > max_flows_) flows_.pop_front();
  }
}

EventsPage RecentEvents::page(uint64_t after_seq, size_t max) const {
  std::lock_guard<std::mutex> lk(mu_);
  EventsPage p;
  p.next_seq = after_seq;
  if (events_.empty()) return p;
  p.oldest_seq = events_.front().seq;
  p.newest_seq = events_.back().seq;
  if (after_seq > p.newest_seq) after_seq = 0;  // numbered by another daemon
  // The first held event after after_seq (seqs increase along the deque).
  auto it = std::upper_bound(events_.begin(), events_.end(), after_seq,
                             [](uint64_t s, const EventsPage::Line& l) { return s < l.seq; });
  if (after_seq == 0) {
    // A new follower starts at the newest `max`.
    const size_t n = std::min(max, events_.size());
    it = events_.end() - static_cast<std::ptrdiff_t>(n);
  } else if (it == events_.begin() && after_seq + 1 < p.oldest_seq) {
    // Events between the reader's cursor and the oldest one held fell out
    // (an upper bound: sequence numbers may have gaps).
    p.skipped = p.oldest_seq - after_seq - 1;
  }
  for (; it != events_.end() && p.events.size() < max; ++it) p.events.push_back(*it);
  if (!p.events.empty()) {
    p.next_seq = p.events.back().seq;
  } else if (after_seq == 0) {
    p.next_seq = p.newest_seq;  // a new reader with max 0: start after the newest
  }
  return p;
}

std::vector<logging::Event> RecentEvents::flows(const FlowFilter& f) const {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<logging::Event> out;
  for (auto it = flows_.rbegin(); it != flows_.rend() && out.size() < f.limit; ++it) {
    if (f.action && it->action != *f.action) continue;
    if (f.rule && it->rule != *f.rule) continue;
    if (f.pid && !(it->owner && it->owner->pid && *it->owner->pid == *f.pid)) continue;
    out.push_back(*it);
  }
  return out;
}

}  // namespace tlswall::control
