#include "logging/event_pipeline.h"

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "logging/delivery_sink.h"
#include "logging/event_aggregator.h"
#include "logging/event_id.h"
#include "logging/event_queue.h"
#include "logging/json.h"
#include "logging/json_lines_sink.h"
#include "logging/log.h"
#include "logging/scribe_transport.h"
#include "logging/syslog_transport.h"

namespace tlswall::logging {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Drops left unreported when the previous run stopped (reported at start).
constexpr const char* kUnreportedDropsFile = "unreported_drops";

DeliveryOptions delivery_options(const SinkCommon& c, double reserve_share) {
  DeliveryOptions o;
  o.queue_events = c.queue_events;
  o.reserve_share = reserve_share;
  o.batch_max_events = c.batch_max_events;
  o.batch_max_bytes = c.batch_max_bytes;
  o.batch_delay = std::chrono::milliseconds(c.batch_delay_ms);
  o.retry_min = std::chrono::milliseconds(c.retry_min_ms);
  o.retry_max = std::chrono::milliseconds(c.retry_max_ms);
  return o;
}

struct Drop {
  std::string sink;  // "" = the pipeline itself
  std::string reason;
  uint64_t count;
  uint64_t total = 0;  // cumulative, this run
};

Event drop_event(const Drop& d, const std::string& when) {
  Event e;
  e.type = EventType::kEventsDropped;
  e.severity = Severity::kError;
  e.count = d.count;
  e.total = d.total;
  e.reason = d.reason;
  e.sink = d.sink;
  std::string where = d.sink.empty() ? "at the pipeline queue" : "at sink " + d.sink;
  std::string why;
  if (d.reason == "pipeline_queue_full" || d.reason == "sink_queue_full") {
    why = "the queue was full";
  } else if (d.reason == "buffer_cap") {
    why = "the disk buffer reached its size cap (oldest dropped)";
  } else if (d.reason == "buffer_corrupt") {
    why = "a disk buffer segment was corrupt (quarantined)";
  } else if (d.reason == "shutdown") {
    why = "they could be neither delivered nor buffered at shutdown";
  } else {
    why = d.reason;
  }
  e.message = std::to_string(d.count) + " events lost " + where + ": " + why + when;
  return e;
}

class Pipeline final : public EventPipeline {
 public:
  Pipeline(const PipelineConfig& c, std::vector<std::unique_ptr<DeliverySink>> sinks)
      : c_(c),
        ids_(EventIdSource::Options{c.state_dir, c.host_id, "/etc/machine-id", 65536, nullptr}),
        intake_(c.queue_events, c.reserve_share),
        agg_(std::chrono::milliseconds(c.aggregate_window_ms), c.aggregate_max_keys),
        sinks_(std::move(sinks)),
        conditions_(sinks_.size()) {
    if (!ids_.last_error().empty()) {
      logging::get(Subsystem::kSink)
          .warn("event ids: {} (ids stay unique: the sequence is seeded from the clock)",
                ids_.last_error());
    }
    ids_persistent_.store(ids_.persistent());
    next_seq_.store(ids_.peek_next());
    load_unreported_drops();
    for (auto& s : sinks_) s->start();
    thread_ = std::thread([this] { run(); });
  }

  ~Pipeline() override {
    stop_.store(true);
    intake_.wake();
    if (thread_.joinable()) thread_.join();
    const auto grace = std::chrono::milliseconds(c_.shutdown_grace_ms);
    for (auto& s : sinks_) s->begin_stop(grace);
    for (auto& s : sinks_) s->join();
    save_unreported_drops();
  }

  void submit(Event e) override {
    submitted_.fetch_add(1, std::memory_order_relaxed);
    try {
      const EventClass c = event_class(e.type);
      intake_.try_push(std::move(e), c);
    } catch (...) {
      alloc_failures_.fetch_add(1, std::memory_order_relaxed);  // out of memory: counted
    }
  }

  PipelineHealth health() const override {
    PipelineHealth h;
    for (const auto& s : sinks_) h.sinks.push_back(s->health());
    h.submitted = submitted_.load();
    h.emitted = emitted_.load();
    h.aggregated = aggregated_.load();
    h.dropped_queue = intake_.dropped_total() + alloc_failures_.load();
    h.dropped_queue_security =
        intake_.dropped(EventClass::kControl) + intake_.dropped(EventClass::kSecurity);
    h.intake_backlog = intake_.size();
    h.ids_persistent = ids_persistent_.load();
    h.host_id = ids_.host_id();
    h.next_seq = next_seq_.load();
    {
      std::lock_guard<std::mutex> lk(mu_);
      h.last_error = last_error_;
    }
    return h;
  }

  bool flush(int timeout_ms) override {
    const auto deadline = Clock::now() + std::chrono::milliseconds(std::max(0, timeout_ms));
    const uint64_t want = flush_requested_.fetch_add(1) + 1;
    intake_.wake();
    for (;;) {
      bool done = flush_done_.load() >= want && intake_.size() == 0;
      for (const auto& s : sinks_) done = done && s->idle();
      if (done) return true;
      if (Clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }

 private:
  void run() {
    std::vector<Event> batch, out;
    auto next_report = Clock::now() + std::chrono::milliseconds(c_.report_interval_ms);
    report_pending_drops();
    for (;;) {
      const bool stopping = stop_.load();
      auto deadline = std::min(next_report, agg_.next_deadline());
      if (!stopping && flush_done_.load() >= flush_requested_.load()) intake_.wait(1, deadline);
      batch.clear();
      intake_.pop(batch, 1024);
      const auto now = Clock::now();
      out.clear();
      agg_.expire(now, out);
      for (auto& e : out) emit(std::move(e));
      for (auto& e : batch) {
        if (agg_.offer(e, now)) emit(std::move(e));
      }
      aggregated_.store(agg_.folded());
      const uint64_t req = flush_requested_.load();
      const bool flushing = req > flush_done_.load() && intake_.size() == 0;
      if (stopping && intake_.size() == 0) break;
      if (flushing) {
        out.clear();
        agg_.flush(out);
        for (auto& e : out) emit(std::move(e));
        report();
        flush_done_.store(req);
      } else if (now >= next_report) {
        report();
        next_report = now + std::chrono::milliseconds(c_.report_interval_ms);
      }
    }
    out.clear();
    agg_.flush(out);
    for (auto& e : out) emit(std::move(e));
    aggregated_.store(agg_.folded());
    report();
  }

  void emit(Event e) {
    const EventIdSource::Id id = ids_.next();
    e.id = id.id;
    e.seq = id.seq;
    auto r = std::make_shared<RenderedEvent>();
    r->cls = event_class(e.type);
    r->json = render_json(e, c_.host, c_.agent_version);
    if (c_.on_emit) c_.on_emit(e, r->json);
    r->event = std::move(e);
    EventRef ref = std::move(r);
    for (auto& s : sinks_) s->offer(ref);
    emitted_.fetch_add(1, std::memory_order_relaxed);
    next_seq_.store(ids_.peek_next(), std::memory_order_relaxed);
    if (ids_.persistent() != ids_persistent_.load()) {
      ids_persistent_.store(ids_.persistent());
      std::lock_guard<std::mutex> lk(mu_);
      last_error_ = ids_.persistent() ? "" : ids_.last_error();
    }
  }

  // Drop reports and sink state changes, as events.
  void report() {
    std::vector<Drop> drops;
    const uint64_t intake_now = intake_.dropped_total() + alloc_failures_.load();
    if (intake_now > intake_reported_) {
      drops.push_back({"", "pipeline_queue_full", intake_now - intake_reported_});
      intake_reported_ = intake_now;
    }
    for (size_t i = 0; i < sinks_.size(); ++i) {
      auto& s = *sinks_[i];
      const SinkDrops d = s.take_drops();
      if (d.queue_full) drops.push_back({s.name(), "sink_queue_full", d.queue_full});
      if (d.buffer_cap) drops.push_back({s.name(), "buffer_cap", d.buffer_cap});
      if (d.buffer_corrupt) drops.push_back({s.name(), "buffer_corrupt", d.buffer_corrupt});
      if (d.shutdown) drops.push_back({s.name(), "shutdown", d.shutdown});
      const std::string cond = s.condition();
      if (cond != conditions_[i]) {
        Event e;
        e.sink = s.name();
        if (cond.empty()) {
          e.type = EventType::kSinkRecovered;
          e.severity = Severity::kNotice;
          e.reason = conditions_[i];
          e.message = "sink " + s.name() + " delivers again";
          logging::get(Subsystem::kSink).info("sink {} recovered", s.name());
        } else {
          e.type = EventType::kSinkDegraded;
          e.severity = Severity::kError;
          e.reason = cond;
          e.message = cond == "buffer_unwritable" ? s.buffer_error() : s.last_error();
          logging::get(Subsystem::kSink)
              .error("sink {} degraded ({}): {}", s.name(), cond, e.message);
        }
        conditions_[i] = cond;
        emit(std::move(e));
      }
    }
    for (auto& d : drops) {
      d.total = (totals_[d.sink + "\n" + d.reason] += d.count);
      logging::get(Subsystem::kSink)
          .error("{} events dropped ({}{})", d.count, d.reason,
                 d.sink.empty() ? "" : ", sink " + d.sink);
      emit(drop_event(d, ""));
    }
  }

  void report_pending_drops() {
    for (auto& d : previous_drops_) {
      d.total = d.count;  // that run's total
      emit(drop_event(d, " (before the last shutdown)"));
    }
    previous_drops_.clear();
  }

  void load_unreported_drops() {
    const fs::path p = fs::path(c_.state_dir) / kUnreportedDropsFile;
    std::ifstream in(p);
    for (std::string line; in && std::getline(in, line);) {
      std::istringstream ls(line);
      Drop d;
      if (ls >> d.sink >> d.reason >> d.count && d.count > 0) {
        if (d.sink == "-") d.sink.clear();
        previous_drops_.push_back(d);
      }
    }
    std::error_code ec;
    fs::remove(p, ec);
  }

  // After the sinks stopped: what could not be reported as events goes to
  // state_dir, to be reported at the next start.
  void save_unreported_drops() {
    std::string text;
    const uint64_t intake_now = intake_.dropped_total() + alloc_failures_.load();
    if (intake_now > intake_reported_) {
      text += "- pipeline_queue_full " + std::to_string(intake_now - intake_reported_) + "\n";
    }
    for (auto& s : sinks_) {
      const SinkDrops d = s->take_drops();
      auto line = [&](const char* reason, uint64_t n) {
        if (n) text += s->name() + " " + reason + " " + std::to_string(n) + "\n";
      };
      line("sink_queue_full", d.queue_full);
      line("buffer_cap", d.buffer_cap);
      line("buffer_corrupt", d.buffer_corrupt);
      line("shutdown", d.shutdown);
    }
    if (text.empty()) return;
    const std::string err =
        write_file_atomically((fs::path(c_.state_dir) / kUnreportedDropsFile).string(), text);
    if (!err.empty()) {
      logging::get(Subsystem::kSink).error("cannot keep the count of undelivered events: {}", err);
    }
  }

  const PipelineConfig c_;
  EventIdSource ids_;
  EventQueue<Event> intake_;
  EventAggregator agg_;
  std::vector<std::unique_ptr<DeliverySink>> sinks_;
  std::vector<std::string> conditions_;  // last reported per sink (pipeline thread)
  std::vector<Drop> previous_drops_;
  std::map<std::string, uint64_t> totals_;  // "sink\nreason" -> reported so far
  uint64_t intake_reported_ = 0;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> flush_requested_{0};
  std::atomic<uint64_t> flush_done_{0};
  std::atomic<uint64_t> submitted_{0};
  std::atomic<uint64_t> emitted_{0};
  std::atomic<uint64_t> aggregated_{0};
  std::atomic<uint64_t> alloc_failures_{0};
  std::atomic<uint64_t> next_seq_{0};
  std::atomic<bool> ids_persistent_{false};
  mutable std::mutex mu_;
  std::string last_error_;
};

}  // namespace

std::unique_ptr<EventPipeline> make_event_pipeline(const PipelineConfig& config) {
  PipelineConfig c = config;
  if (c.host.empty()) {
    char buf[256] = {};
    c.host = ::gethostname(buf, sizeof(buf) - 1) == 0 ? buf : "unknown";
  }
  std::vector<std::unique_ptr<DeliverySink>> sinks;
  for (const auto& j : c.json) {
    std::unique_ptr<Transport> t;
    try {
      t = std::make_unique<JsonLinesTransport>(j.path, j.max_bytes, j.max_files);
    } catch (const std::exception& e) {
      throw std::runtime_error("events sink '" + j.common.name + "': " + e.what());
    }
    sinks.push_back(std::make_unique<DeliverySink>(j.common.name, std::move(t),
                                                   delivery_options(j.common, c.reserve_share)));
  }
  for (const auto& s : c.scribe) {
    ScribeTransportOptions so;
    so.host = s.host;
    so.port = s.port;
    so.category = s.category;
    so.format = s.format;
    so.timeout = std::chrono::milliseconds(s.timeout_ms);
    so.reporter_host = c.host;
    so.agent_version = c.agent_version;
    DeliveryOptions o = delivery_options(s.common, c.reserve_share);
    if (s.buffer) {
      DiskBufferOptions b;
      b.dir = s.buffer_dir.empty() ? (fs::path(c.state_dir) / "buffer" / s.common.name).string()
                                   : s.buffer_dir;
      b.max_bytes = s.buffer_max_bytes;
      b.segment_bytes = s.segment_bytes;
      b.fsync = s.fsync;
      o.buffer = b;
    }
    sinks.push_back(std::make_unique<DeliverySink>(
        s.common.name, std::make_unique<ScribeTransport>(so), std::move(o)));
  }
  for (const auto& s : c.syslog) {
    SyslogTransportOptions so;
    so.host = s.host;
    so.port = s.port;
    so.timeout = std::chrono::milliseconds(s.timeout_ms);
    so.format.facility = syslog_facility(s.facility);
    if (so.format.facility < 0) {
      throw std::runtime_error("events sink '" + s.common.name + "': unknown syslog facility '" +
                               s.facility + "'");
    }
    so.format.hostname = c.host;
    so.format.app_name = s.app_name;
    so.format.procid = std::to_string(::getpid());
    so.format.max_message_bytes = s.max_message_bytes;
    so.agent_version = c.agent_version;
    sinks.push_back(std::make_unique<DeliverySink>(s.common.name,
                                                   std::make_unique<SyslogTransport>(so),
                                                   delivery_options(s.common, c.reserve_share)));
  }
  return std::make_unique<Pipeline>(c, std::move(sinks));
}

std::string render_health_json(const PipelineHealth& h) {
  JsonArray sinks;
  for (const auto& s : h.sinks) {
    JsonObject dropped;
    dropped.add("queue_full", s.dropped_queue_full)
        .add("buffer_cap", s.dropped_buffer_cap)
        .add("buffer_corrupt", s.dropped_buffer_corrupt)
        .add("shutdown", s.dropped_shutdown);
    JsonObject o;
    o.add("name", s.name)
        .add("kind", s.kind)
        .add("target", s.target)
        .add("state", s.state)
        .add_bool("connected", s.connected)
        .add("backlog", s.backlog)
        .add("buffered", s.buffered)
        .add("buffer_bytes", s.buffer_bytes)
        .add_bool("buffer_writable", s.buffer_writable)
        .add("delivered", s.delivered)
        .add("dropped", s.dropped)
        .add_raw("dropped_by_reason", dropped.str())
        .add("quarantined_segments", s.quarantined_segments)
        .add("send_failures", s.send_failures)
        .add("try_later", s.try_later)
        .add("last_error", s.last_error)
        .add("last_error_at", s.last_error_at)
        .add("buffer_error", s.buffer_error);
    sinks.add_raw(o.str());
  }
  JsonObject o;
  o.add("submitted", h.submitted)
      .add("emitted", h.emitted)
      .add("aggregated", h.aggregated)
      .add("dropped_queue", h.dropped_queue)
      .add("dropped_queue_security", h.dropped_queue_security)
      .add("intake_backlog", h.intake_backlog)
      .add_bool("ids_persistent", h.ids_persistent)
      .add("host_id", h.host_id)
      .add("next_seq", h.next_seq)
      .add("last_error", h.last_error)
      .add_raw("sinks", sinks.str());
  return o.str();
}

std::vector<std::pair<std::string, std::string>> health_rows(const PipelineHealth& h) {
  std::vector<std::pair<std::string, std::string>> r;
  auto n = [](uint64_t v) { return std::to_string(v); };
  r.emplace_back("submitted", n(h.submitted));
  r.emplace_back("emitted", n(h.emitted) + " (" + n(h.aggregated) + " folded into aggregates)");
  r.emplace_back("dropped at intake",
                 n(h.dropped_queue) + " (" + n(h.dropped_queue_security) + " control/security)");
  r.emplace_back("event ids", h.host_id + "-" + n(h.next_seq) + " next" +
                                  (h.ids_persistent ? "" : ", NOT persisted: " + h.last_error));
  for (const auto& s : h.sinks) {
    r.emplace_back("sink " + s.name, s.kind + " " + s.target + ": " + s.state +
                                         (s.connected ? ", connected" : ", not connected"));
    r.emplace_back("  delivered", n(s.delivered));
    std::string backlog = n(s.backlog);
    if (s.kind == "scribe") {
      backlog += " (" + n(s.buffered) + " on disk, " + n(s.buffer_bytes) + " bytes, buffer " +
                 (s.buffer_writable ? "writable" : "NOT writable") + ")";
    }
    r.emplace_back("  backlog", backlog);
    r.emplace_back("  dropped", n(s.dropped) + " (queue full " + n(s.dropped_queue_full) +
                                    ", buffer cap " + n(s.dropped_buffer_cap) + ", corrupt " +
                                    n(s.dropped_buffer_corrupt) + ", shutdown " +
                                    n(s.dropped_shutdown) + ")");
    if (s.send_failures) {
      r.emplace_back("  send failures", n(s.send_failures) + " (" + n(s.try_later) + " TRY_LATER)");
    }
    if (!s.last_error.empty())
      r.emplace_back("  last error", s.last_error + " at " + s.last_error_at);
    if (!s.buffer_error.empty()) r.emplace_back("  buffer error", s.buffer_error);
  }
  return r;
}

}  // namespace tlswall::logging
