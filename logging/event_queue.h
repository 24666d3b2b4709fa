// A bounded multi-producer queue of events with a reserved share for the
// classes that matter most (README "Floods"): a flood of `other` events can
// only fill the unreserved part, a flood of security events cannot take the
// last slots kept for control events (policy, lifecycle, drop reports).
// try_push never blocks; a refused event is counted per class.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <vector>

#include "logging/event.h"

namespace tlswall::logging {

// Admission limits for a queue: an event of a class is admitted while the
// queue holds fewer than that class's limit.
struct ClassLimits {
  size_t control = 0;
  size_t security = 0;
  size_t other = 0;
};

// capacity >= 1, reserve_share in [0, 0.9]. reserved = round(capacity *
// reserve_share): `other` may use capacity - reserved slots; the last
// reserved / 4 slots are for control events only (at least 1 when
// reserved >= 2).
inline ClassLimits class_limits(size_t capacity, double reserve_share) {
  if (capacity == 0) capacity = 1;
  if (reserve_share < 0) reserve_share = 0;
  if (reserve_share > 0.9) reserve_share = 0.9;
  size_t reserved = static_cast<size_t>(static_cast<double>(capacity) * reserve_share + 0.5);
  if (reserved >= capacity) reserved = capacity - 1;
  size_t control_reserved = reserved / 4;
  if (control_reserved == 0 && reserved >= 2) control_reserved = 1;
  return ClassLimits{capacity, capacity - control_reserved, capacity - reserved};
}

template <class T>
class EventQueue {
 public:
  using Clock = std::chrono::steady_clock;

  EventQueue(size_t capacity, double reserve_share)
      : limits_(class_limits(capacity, reserve_share)) {}
  EventQueue(const EventQueue&) = delete;
  EventQueue& operator=(const EventQueue&) = delete;

  // Never blocks beyond the queue's own short critical section. Returns
  // false (and counts) if the class's limit is reached.
  bool try_push(T&& v, EventClass c) {
    std::unique_lock<std::mutex> lk(mu_);
    if (q_.size() >= limit(c)) {
      lk.unlock();
      dropped_[static_cast<size_t>(c)].fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    q_.push_back(std::move(v));
    const bool notify = waiting_for_ != 0 && q_.size() >= waiting_for_;
    lk.unlock();
    if (notify) cv_.notify_one();
    return true;
  }

  // Moves up to `max` items (oldest first) into `out` without waiting.
  size_t pop(std::vector<T>& out, size_t max) {
    std::lock_guard<std::mutex> lk(mu_);
    size_t n = 0;
    while (n < max && !q_.empty()) {
      out.push_back(std::move(q_.front()));
      q_.pop_front();
      ++n;
    }
    return n;
  }

  // Waits until the queue holds at least `min_items`, `deadline` passes, or
  // wake() is called. Returns the size then. One consumer thread only.
  size_t wait(size_t min_items, Clock::time_point deadline) {
    std::unique_lock<std::mutex> lk(mu_);
    if (min_items == 0) min_items = 1;
    waiting_for_ = min_items;
    cv_.wait_until(lk, deadline, [&] { return q_.size() >= min_items || woken_; });
    waiting_for_ = 0;
    woken_ = false;
    return q_.size();
  }

  // Ends the current or next wait() early.
  void wake() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      woken_ = true;
    }
    cv_.notify_all();
  }

  size_t size() const {
    std::lock_guard<std::mutex> lk(mu_);
    return q_.size();
  }
  size_t capacity() const { return limits_.control; }
  const ClassLimits& limits() const { return limits_; }
  uint64_t dropped(EventClass c) const {
    return dropped_[static_cast<size_t>(c)].load(std::memory_order_relaxed);
  }
  uint64_t dropped_total() const {
    return dropped(EventClass::kControl) + dropped(EventClass::kSecurity) +
           dropped(EventClass::kOther);
  }

 private:
  size_t limit(EventClass c) const {
    switch (c) {
      case EventClass::kControl:
        return limits_.control;
      case EventClass::kSecurity:
        return limits_.security;
      case EventClass::kOther:
        return limits_.other;
    }
    return limits_.other;
  }

  const ClassLimits limits_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<T> q_;
  size_t waiting_for_ = 0;
  bool woken_ = false;
  std::array<std::atomic<uint64_t>, 3> dropped_{};
};

}  // namespace tlswall::logging
