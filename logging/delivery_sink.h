// A sink: a bounded queue, one thread, and a Transport. The thread batches
// by size and time, backs off exponentially on errors and TRY_LATER, and,
// when a disk buffer is configured, spools to it while the destination
// cannot take events and replays it oldest first when it can again.
//
// Order is kept: what is delivered is always the oldest of
//   [disk buffer] ++ [failed batch held in memory] ++ [queue]
// and the queue only moves to the disk behind what is already there.
// Delivery is at least once (a batch that failed after the destination
// took it is sent again); receivers dedupe by event id.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>

#include "logging/disk_buffer.h"
#include "logging/event_queue.h"
#include "logging/sink.h"

namespace tlswall::logging {

struct DeliveryOptions {
  size_t queue_events = 65536;
  double reserve_share = 0.25;
  size_t batch_max_events = 1000;
  size_t batch_max_bytes = 1u << 20;
  std::chrono::milliseconds batch_delay{50};
  std::chrono::milliseconds retry_min{100};
  std::chrono::milliseconds retry_max{30000};
  std::chrono::milliseconds buffer_retry{5000};  // reopen an unwritable buffer this often
  std::optional<DiskBufferOptions> buffer;       // none: memory only
};

// New drops since the previous take_drops(), by stage.
struct SinkDrops {
  uint64_t queue_full = 0;
  uint64_t buffer_cap = 0;
  uint64_t buffer_corrupt = 0;
  uint64_t shutdown = 0;
};

class DeliverySink {
 public:
  using Clock = std::chrono::steady_clock;

  DeliverySink(std::string name, std::unique_ptr<Transport> transport, DeliveryOptions o);
  ~DeliverySink();  // stop(0)
  DeliverySink(const DeliverySink&) = delete;
  DeliverySink& operator=(const DeliverySink&) = delete;

  // Opens the disk buffer (a failure degrades the sink, it does not throw)
  // and starts the thread.
  void start();

  // Never blocks; false if the queue refused it (counted).
  bool offer(EventRef e);

  // Stops the thread: keeps delivering for up to `grace`, then moves what
  // is still in memory to the disk buffer; what cannot be kept anywhere
  // is counted as dropped at shutdown. begin_stop() + join() let several
  // sinks use their grace time in parallel.
  void stop(std::chrono::milliseconds grace) {
    begin_stop(grace);
    join();
  }
  void begin_stop(std::chrono::milliseconds grace);
  void join();

  const std::string& name() const { return name_; }
  SinkHealth health() const;
  // "" while healthy, else why it is degraded: "unreachable", "try_later",
  // "write_failed" (a file), "buffer_unwritable".
  std::string condition() const;
  std::string last_error() const;
  std::string buffer_error() const;
  // Nothing left to deliver (queue, memory and disk all empty).
  bool idle() const;
  // Drops since the last call (one caller: the pipeline thread).
  SinkDrops take_drops();

 private:
  enum class Source { kNone, kDisk, kPending, kQueue };

  void run();
  bool deliver_one(Clock::time_point now, bool stopping);
  bool spill();
  void try_open_buffer(Clock::time_point now);
  void on_failure(Transport::Status st, const std::string& err, Clock::time_point now);
  void on_success();
  void set_error(const std::string& err, bool buffer = false);
  void publish_buffer_stats();
  void final_drain();

  const std::string name_;
  std::unique_ptr<Transport> transport_;
  const DeliveryOptions o_;
  const std::string kind_;
  const std::string target_;
  EventQueue<EventRef> queue_;
  std::unique_ptr<DiskBuffer> disk_;  // owned by the thread after start()
  std::deque<std::string> pending_;   // rendered, not delivered, not on disk
  std::thread thread_;
  std::atomic<bool> stop_{false};
  Clock::time_point stop_deadline_{};

  // Backoff (thread only).
  Clock::time_point next_attempt_{};
  std::chrono::milliseconds backoff_{0};
  Clock::time_point buffer_retry_at_{};
  std::minstd_rand rng_;

  // Published state (read by health()).
  std::atomic<uint64_t> delivered_{0};
  std::atomic<uint64_t> send_failures_{0};
  std::atomic<uint64_t> try_later_{0};
  std::atomic<uint64_t> pending_count_{0};
  std::atomic<uint64_t> inflight_{0};  // taken from the queue, not yet delivered or stored
  std::atomic<uint64_t> disk_pending_{0};
  std::atomic<uint64_t> disk_bytes_{0};
  std::atomic<uint64_t> lost_cap_{0};
  std::atomic<uint64_t> lost_corrupt_{0};
  std::atomic<uint64_t> lost_shutdown_{0};
  std::atomic<uint64_t> quarantined_{0};
  std::atomic<bool> connected_{false};
  std::atomic<bool> buffer_writable_{false};
  std::atomic<bool> running_{false};
  mutable std::mutex state_mu_;
  std::string condition_;
  std::string last_error_;
  std::string last_error_at_;
  std::string buffer_error_;

  // Reported so far (pipeline thread only).
  SinkDrops reported_;
};

}  // namespace tlswall::logging
