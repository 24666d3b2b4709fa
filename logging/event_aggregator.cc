#include "logging/event_aggregator.h"

namespace tlswall::logging {

EventAggregator::EventAggregator(std::chrono::milliseconds window, size_t max_keys)
    : window_(window), max_keys_(max_keys) {}

bool EventAggregator::aggregable(const Event& e) {
  if (e.count != 1) return false;
  switch (e.type) {
    case EventType::kPlaintextReported:
    case EventType::kPlaintextBlocked:
    case EventType::kTlsBelowMinimum:
    case EventType::kStateLost:
    case EventType::kUpgraded:
    case EventType::kUpgradeFailed:
    case EventType::kSocketDestroyFailed:
      return true;
    default:
      return false;
  }
}

std::string EventAggregator::key_of(const Event& e) {
  // Fields joined with a separator that cannot occur unescaped: '\0'.
  std::string k;
  k.reserve(96);
  k += std::to_string(static_cast<unsigned>(e.type));
  k += '\0';
  k += e.rule;
  k += '\0';
  if (e.owner) {
    if (e.owner->uid) k += std::to_string(*e.owner->uid);
    k += '\0';
    k += e.owner->exe.empty() ? e.owner->comm : e.owner->exe;
    k += '\0';
    k += e.owner->container.empty() ? e.owner->cgroup : e.owner->container;
  }
  k += '\0';
  if (e.flow) {
    k += e.flow->dst;
    k += '\0';
    k += std::to_string(e.flow->dport);
    k += '\0';
    k += e.flow->protocol;
  }
  return k;
}

bool EventAggregator::offer(const Event& e, Clock::time_point now) {
  if (window_.count() <= 0 || !aggregable(e)) return true;
  std::string key = key_of(e);
  auto it = keys_.find(key);
  if (it != keys_.end() && now < it->second.ends) {
    Window& w = it->second;
    if (w.repeats == 0) w.first_repeat = e;
    ++w.repeats;
    w.last_time = e.time;
    ++folded_;
    return false;
  }
  // A window that ended but was not expired yet (the caller is expected to
  // call expire(now) first): pass, its summary comes with the next expire().
  if (it != keys_.end()) return true;
  if (keys_.size() >= max_keys_) {
    ++untracked_;
    return true;
  }
  Window w;
  w.ends = now + window_;
  keys_.emplace(key, std::move(w));
  order_.emplace_back(now + window_, std::move(key));
  return true;
}

void EventAggregator::close(Window& w, std::vector<Event>& out) {
  if (w.repeats == 1) {
    out.push_back(std::move(w.first_repeat));
  } else if (w.repeats > 1) {
    Event s = std::move(w.first_repeat);
    s.first_time = s.time;
    s.last_time = w.last_time;
    s.time = w.last_time;
    s.count = w.repeats;
    out.push_back(std::move(s));
  }
}

void EventAggregator::expire(Clock::time_point now, std::vector<Event>& out) {
  while (!order_.empty() && order_.front().first <= now) {
    auto it = keys_.find(order_.front().second);
    if (it != keys_.end()) {
      close(it->second, out);
      keys_.erase(it);
    }
    order_.pop_front();
  }
}

void EventAggregator::flush(std::vector<Event>& out) {
  for (auto& [deadline, key] : order_) {
    auto it = keys_.find(key);
    if (it != keys_.end()) {
      close(it->second, out);
      keys_.erase(it);
    }
  }
  order_.clear();
}

EventAggregator::Clock::time_point EventAggregator::next_deadline() const {
  return order_.empty() ? Clock::time_point::max() : order_.front().first;
}

}  // namespace tlswall::logging
