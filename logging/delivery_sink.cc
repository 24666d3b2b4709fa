#include "logging/delivery_sink.h"

#include <algorithm>
#include <functional>
#include <limits>

#include "logging/log.h"

namespace tlswall::logging {
namespace {

// Records moved from memory to the disk buffer per spill step.
constexpr size_t kSpillChunk = 4096;

}  // namespace

DeliverySink::DeliverySink(std::string name, std::unique_ptr<Transport> transport,
                           DeliveryOptions o)
    : name_(std::move(name)),
      transport_(std::move(transport)),
      o_(std::move(o)),
      kind_(transport_->kind()),
      target_(transport_->target()),
      queue_(o_.queue_events, o_.reserve_share),
      rng_(static_cast<uint32_t>(std::hash<std::string>{}(name_))) {}

DeliverySink::~DeliverySink() { stop(std::chrono::milliseconds(0)); }

void DeliverySink::start() {
  if (running_.exchange(true)) return;
  if (o_.buffer) {
    disk_ = std::make_unique<DiskBuffer>(*o_.buffer);
    try_open_buffer(Clock::now());
  }
  thread_ = std::thread([this] { run(); });
}

bool DeliverySink::offer(EventRef e) {
  const EventClass c = e->cls;
  if (!queue_.try_push(std::move(e), c)) return false;
  return true;
}

void DeliverySink::begin_stop(std::chrono::milliseconds grace) {
  if (!thread_.joinable() || stop_.load()) return;
  stop_deadline_ = Clock::now() + grace;
  stop_.store(true);
  queue_.wake();
}

void DeliverySink::join() {
  if (thread_.joinable()) thread_.join();
}

void DeliverySink::set_error(const std::string& err, bool buffer) {
  std::lock_guard<std::mutex> lk(state_mu_);
  last_error_ = err;
  last_error_at_ = format_time(std::chrono::system_clock::now());
  if (buffer) buffer_error_ = err;
}

std::string DeliverySink::condition() const {
  std::lock_guard<std::mutex> lk(state_mu_);
  return condition_;
}

std::string DeliverySink::last_error() const {
  std::lock_guard<std::mutex> lk(state_mu_);
  return last_error_;
}

std::string DeliverySink::buffer_error() const {
  std::lock_guard<std::mutex> lk(state_mu_);
  return buffer_error_;
}

void DeliverySink::try_open_buffer(Clock::time_point now) {
  std::string err;
  const bool ok = disk_->open(&err);
  buffer_writable_.store(ok);
  publish_buffer_stats();
  if (ok) return;
  buffer_retry_at_ = now + o_.buffer_retry;
  set_error(err, /*buffer=*/true);
  logging::get(Subsystem::kSink).warn("sink {}: disk buffer unusable, memory only: {}", name_, err);
}

void DeliverySink::publish_buffer_stats() {
  if (!disk_) return;
  disk_pending_.store(disk_->pending_records());
  disk_bytes_.store(disk_->bytes());
  lost_cap_.store(disk_->lost_to_cap());
  lost_corrupt_.store(disk_->lost_to_corruption());
  quarantined_.store(disk_->quarantined());
  buffer_writable_.store(disk_->writable());
  {
    std::lock_guard<std::mutex> lk(state_mu_);
    if (!disk_->writable()) {
      condition_ = "buffer_unwritable";
    } else if (condition_ == "buffer_unwritable") {
      condition_ = connected_.load() ? "" : "unreachable";
      buffer_error_.clear();
    }
  }
}

void DeliverySink::on_success() {
  backoff_ = std::chrono::milliseconds(0);
  next_attempt_ = Clock::time_point{};
  connected_.store(true);
  std::lock_guard<std::mutex> lk(state_mu_);
  if (condition_ != "buffer_unwritable") condition_.clear();
}

void DeliverySink::on_failure(Transport::Status st, const std::string& err, Clock::time_point now) {
  send_failures_.fetch_add(1);
  if (st == Transport::Status::kTryLater) {
    try_later_.fetch_add(1);
  } else {
    transport_->disconnect();
    connected_.store(false);
  }
  set_error(err);
  backoff_ = backoff_.count() == 0 ? o_.retry_min : std::min(o_.retry_max, backoff_ * 2);
  // Jitter in [backoff/2, backoff] so that many agents do not retry in step.
  const auto half = backoff_.count() / 2;
  const auto jitter = half > 0 ? static_cast<int64_t>(rng_() % static_cast<uint32_t>(half + 1)) : 0;
  next_attempt_ = now + std::chrono::milliseconds(backoff_.count() - half + jitter);
  std::lock_guard<std::mutex> lk(state_mu_);
  const bool was_ok = condition_.empty();
  if (condition_ != "buffer_unwritable") {
    condition_ = st == Transport::Status::kTryLater ? "try_later"
                 : kind_ == "json"                  ? "write_failed"
                                                    : "unreachable";
  }
  if (was_ok) {
    logging::get(Subsystem::kSink)
        .warn("sink {} ({}): {}; retrying with backoff{}", name_, target_, err,
              disk_ ? ", buffering to disk" : "");
  }
}

// Sends one batch from the head of the logical order. Returns whether it
// did anything.
bool DeliverySink::deliver_one(Clock::time_point now, bool stopping) {
  std::vector<std::string> batch;
  Source src = Source::kNone;
  std::string err;
  if (disk_ && disk_->pending_records() > 0) {
    if (!disk_->peek(o_.batch_max_events, o_.batch_max_bytes, &batch, &err)) {
      set_error(err, /*buffer=*/true);
      publish_buffer_stats();
      return false;
    }
    publish_buffer_stats();  // peek may have skipped corrupt data
    if (!batch.empty()) src = Source::kDisk;
  }
  if (src == Source::kNone && !pending_.empty()) {
    size_t bytes = 0;
    for (size_t i = 0; i < pending_.size() && batch.size() < o_.batch_max_events; ++i) {
      if (!batch.empty() && bytes + pending_[i].size() > o_.batch_max_bytes) break;
      bytes += pending_[i].size();
      batch.push_back(pending_[i]);
    }
    src = Source::kPending;
  }
  if (src == Source::kNone) {
    if (queue_.size() == 0) return false;
    if (!stopping && o_.batch_delay.count() > 0 && queue_.size() < o_.batch_max_events) {
      queue_.wait(o_.batch_max_events, now + o_.batch_delay);
    }
    std::vector<EventRef> events;
    inflight_.store(o_.batch_max_events);  // before the queue looks empty
    queue_.pop(events, o_.batch_max_events);
    inflight_.store(events.size());
    if (events.empty()) return false;
    size_t bytes = 0;
    for (auto& e : events) {
      std::string r = transport_->render(*e);
      if (!batch.empty() && bytes + r.size() > o_.batch_max_bytes) {
        pending_.push_back(std::move(r));  // next batch; pending_ was empty
        continue;
      }
      if (!pending_.empty()) {
        pending_.push_back(std::move(r));
        continue;
      }
      bytes += r.size();
      batch.push_back(std::move(r));
    }
    src = Source::kQueue;
  }
  if (batch.empty()) return false;

  size_t accepted = 0;
  err.clear();
  const Transport::Status st = transport_->send(batch, &accepted, &err);
  if (st == Transport::Status::kOk) accepted = batch.size();
  accepted = std::min(accepted, batch.size());
  delivered_.fetch_add(accepted);
  switch (src) {
    case Source::kDisk:
      disk_->commit(accepted);
      publish_buffer_stats();
      break;
    case Source::kPending:
      pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(accepted));
      break;
    case Source::kQueue:
      // The rest goes back to the front of the memory backlog, in order.
      pending_.insert(pending_.begin(), std::make_move_iterator(batch.begin() + accepted),
                      std::make_move_iterator(batch.end()));
      break;
    case Source::kNone:
      break;
  }
  pending_count_.store(pending_.size());
  inflight_.store(0);
  if (st == Transport::Status::kOk) {
    on_success();
  } else {
    on_failure(st, err.empty() ? "send failed" : err, now);
  }
  return true;
}

// Moves the memory backlog, then the queue, behind what is on disk. Only
// while the destination cannot take events or the disk still holds older
// ones. Returns whether it moved anything.
bool DeliverySink::spill() {
  if (!disk_ || !disk_->writable()) return false;
  std::vector<std::string> records;
  std::string err;
  if (!pending_.empty()) {
    records.assign(std::make_move_iterator(pending_.begin()),
                   std::make_move_iterator(pending_.end()));
    pending_.clear();
  } else {
    std::vector<EventRef> events;
    inflight_.store(kSpillChunk);
    queue_.pop(events, kSpillChunk);
    inflight_.store(events.size());
    if (events.empty()) return false;
    records.reserve(events.size());
    for (const auto& e : events) records.push_back(transport_->render(*e));
  }
  if (!disk_->append(records, &err)) {
    // Keep them in memory, in order, ahead of the queue.
    pending_.insert(pending_.begin(), std::make_move_iterator(records.begin()),
                    std::make_move_iterator(records.end()));
    pending_count_.store(pending_.size());
    inflight_.store(0);
    set_error(err, /*buffer=*/true);
    buffer_retry_at_ = Clock::now() + o_.buffer_retry;
    logging::get(Subsystem::kSink)
        .error("sink {}: disk buffer write failed, memory only until it recovers: {}", name_, err);
    publish_buffer_stats();
    return false;
  }
  pending_count_.store(pending_.size());
  publish_buffer_stats();
  inflight_.store(0);
  return true;
}

void DeliverySink::run() {
  for (;;) {
    const auto now = Clock::now();
    const bool stopping = stop_.load();
    if (stopping && now >= stop_deadline_) break;
    if (disk_ && !disk_->writable() && now >= buffer_retry_at_) {
      try_open_buffer(now);
      if (disk_->writable()) {
        logging::get(Subsystem::kSink).info("sink {}: disk buffer writable again", name_);
      }
    }
    bool did = false;
    if (now >= next_attempt_) did = deliver_one(now, stopping);
    const bool backing_off = Clock::now() < next_attempt_;
    const bool disk_behind = disk_ && disk_->pending_records() > 0;
    if (disk_ && disk_->writable() && (backing_off || disk_behind)) {
      // Spill in steps so a long spill does not delay the next attempt.
      for (int i = 0; i < 8 && spill(); ++i) did = true;
    }
    if (stopping && queue_.size() == 0 && pending_.empty() &&
        (!disk_behind || backing_off || !connected_.load())) {
      break;
    }
    if (did) continue;
    // Nothing to do now: sleep until the next attempt, the buffer retry,
    // new events (if they could be taken), or stop.
    auto deadline = Clock::now() + std::chrono::seconds(1);
    const bool have_backlog = !pending_.empty() || disk_behind;
    if (backing_off && (have_backlog || queue_.size() > 0)) {
      deadline = std::min(deadline, next_attempt_);
    }
    if (disk_ && !disk_->writable()) deadline = std::min(deadline, buffer_retry_at_);
    if (stopping) deadline = std::min(deadline, stop_deadline_);
    const bool can_take = (!backing_off && !have_backlog) || (disk_ && disk_->writable());
    const size_t want = can_take ? 1 : std::numeric_limits<size_t>::max();
    queue_.wait(want, deadline);  // begin_stop() wakes it once
  }
  final_drain();
}

// At stop: keep on disk what can be kept; count the rest.
void DeliverySink::final_drain() {
  while (spill()) {
  }
  uint64_t lost = pending_.size() + queue_.size();
  pending_.clear();
  std::vector<EventRef> rest;
  queue_.pop(rest, std::numeric_limits<size_t>::max());
  pending_count_.store(0);
  if (lost > 0) {
    lost_shutdown_.fetch_add(lost);
    logging::get(Subsystem::kSink)
        .error("sink {}: {} events could not be delivered or buffered before shutdown", name_,
               lost);
  }
  publish_buffer_stats();
  transport_->disconnect();
  connected_.store(false);
}

bool DeliverySink::idle() const {
  // In this order: the thread marks a batch in flight before taking it from
  // the queue, and clears the mark only after storing or delivering it.
  if (queue_.size() != 0) return false;
  if (inflight_.load() != 0) return false;
  return pending_count_.load() == 0 && disk_pending_.load() == 0;
}

SinkHealth DeliverySink::health() const {
  SinkHealth h;
  h.name = name_;
  h.kind = kind_;
  h.target = target_;
  {
    std::lock_guard<std::mutex> lk(state_mu_);
    h.state = condition_.empty() ? "ok" : condition_;
    h.last_error = last_error_;
    h.last_error_at = last_error_at_;
    h.buffer_error = buffer_error_;
  }
  h.connected = connected_.load();
  h.buffered = disk_pending_.load();
  h.backlog = queue_.size() + inflight_.load() + pending_count_.load() + h.buffered;
  h.buffer_bytes = disk_bytes_.load();
  h.buffer_writable = buffer_writable_.load();
  h.delivered = delivered_.load();
  h.dropped_queue_full = queue_.dropped_total();
  h.dropped_buffer_cap = lost_cap_.load();
  h.dropped_buffer_corrupt = lost_corrupt_.load();
  h.dropped_shutdown = lost_shutdown_.load();
  h.dropped =
      h.dropped_queue_full + h.dropped_buffer_cap + h.dropped_buffer_corrupt + h.dropped_shutdown;
  h.quarantined_segments = quarantined_.load();
  h.send_failures = send_failures_.load();
  h.try_later = try_later_.load();
  return h;
}

SinkDrops DeliverySink::take_drops() {
  SinkDrops now{queue_.dropped_total(), lost_cap_.load(), lost_corrupt_.load(),
                lost_shutdown_.load()};
  SinkDrops d{now.queue_full - reported_.queue_full, now.buffer_cap - reported_.buffer_cap,
              now.buffer_corrupt - reported_.buffer_corrupt, now.shutdown - reported_.shutdown};
  reported_ = now;
  return d;
}

}  // namespace tlswall::logging
