// Helpers for the pipeline integration tests: a pipeline configuration in a
// temporary state directory, paced synthetic submission, and the receiver's
// view of what arrived (parsed, deduplicated by id as the README says).
#pragma once

#include <chrono>
#include <cstdint>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "logging/event_pipeline.h"
#include "tests/logging/logging_test_support.h"
#include "tests/logging/scribe_test_server.h"

namespace tlswall::testing {

inline logging::PipelineConfig TestPipelineConfig(const TempDir& t, int scribe_port,
                                                  bool with_json = true) {
  logging::PipelineConfig c;
  c.host = "test-host";
  c.agent_version = "0.0.test";
  c.state_dir = t.str("state");
  c.host_id = "testhost";
  c.aggregate_window_ms = 0;
  c.report_interval_ms = 100;
  c.shutdown_grace_ms = 1000;
  if (scribe_port > 0) {
    logging::ScribeSinkConfig s;
    s.common.name = "scribe";
    s.host = "127.0.0.1";
    s.port = scribe_port;
    s.category = "tlswall_test";
    s.common.batch_delay_ms = 5;
    s.common.retry_min_ms = 20;
    s.common.retry_max_ms = 200;
    s.timeout_ms = 2000;
    c.scribe.push_back(s);
  }
  if (with_json) {
    logging::JsonSinkConfig j;
    j.common.name = "json";
    j.common.batch_delay_ms = 5;
    j.path = t.str("events.jsonl");
    c.json.push_back(j);
  }
  return c;
}

// Submits synthetic plaintext_blocked events numbered [from, from + n) at
// about `per_second` (0 = as fast as possible); returns the longest time a
// single submit() took.
inline std::chrono::nanoseconds SubmitPaced(logging::EventPipeline& p, int from, int n,
                                            double per_second) {
  const auto start = std::chrono::steady_clock::now();
  std::chrono::nanoseconds worst{0};
  for (int i = 0; i < n; ++i) {
    logging::Event e = flow_event(logging::EventType::kPlaintextBlocked, from + i);
    e.flow->dst = "198.18." + std::to_string(128 + (from + i) / 250 % 100) + "." +
                  std::to_string((from + i) % 250);
    const auto t0 = std::chrono::steady_clock::now();
    p.submit(std::move(e));
    worst = std::max(worst, std::chrono::steady_clock::now() - t0);
    if (per_second > 0 && i % 50 == 49) {
      std::this_thread::sleep_until(start +
                                    std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::duration<double>((i + 1) / per_second)));
    }
  }
  return worst;
}

// What a receiver sees: every message parsed, and the first occurrence of
// each id in arrival order.
struct Received {
  std::vector<std::map<std::string, std::string>> all;
  std::vector<std::map<std::string, std::string>> unique;
  size_t duplicates = 0;

  void Add(const std::string& json) {
    auto m = parse_flat_json(json);
    all.push_back(m);
    if (seen_.insert(m.at("id")).second) {
      unique.push_back(std::move(m));
    } else {
      ++duplicates;
    }
  }
  // Synthetic event numbers ("synthetic N" messages) in arrival order.
  std::vector<int> Synthetic() const {
    std::vector<int> out;
    for (const auto& m : unique) {
      auto it = m.find("message");
      if (it != m.end() && it->second.rfind("synthetic ", 0) == 0) {
        out.push_back(std::stoi(it->second.substr(10)));
      }
    }
    return out;
  }
  std::vector<std::map<std::string, std::string>> OfType(const std::string& type) const {
    std::vector<std::map<std::string, std::string>> out;
    for (const auto& m : unique) {
      if (m.at("type") == type) out.push_back(m);
    }
    return out;
  }
  // Sum of `count` of events_dropped reports about `sink` ("" = pipeline).
  uint64_t DroppedReported(const std::string& sink) const {
    uint64_t n = 0;
    for (const auto& m : OfType("events_dropped")) {
      auto s = m.find("sink");
      if ((s == m.end() ? std::string() : s->second) == sink) n += std::stoull(m.at("count"));
    }
    return n;
  }
  // What the latest reports say was lost at `sink`, all reasons together:
  // the highest `total` per reason (exact even if earlier reports were lost).
  uint64_t DroppedTotal(const std::string& sink) const {
    std::map<std::string, uint64_t> by_reason;
    for (const auto& m : OfType("events_dropped")) {
      auto s = m.find("sink");
      if ((s == m.end() ? std::string() : s->second) != sink) continue;
      uint64_t& t = by_reason[m.at("reason")];
      t = std::max<uint64_t>(t, std::stoull(m.at("total")));
    }
    uint64_t n = 0;
    for (const auto& [r, t] : by_reason) n += t;
    return n;
  }
  // True if seq increases strictly along the unique arrivals.
  bool InOrder() const {
    uint64_t last = 0;
    for (const auto& m : unique) {
      const uint64_t s = std::stoull(m.at("seq"));
      if (s <= last) return false;
      last = s;
    }
    return true;
  }

 private:
  std::set<std::string> seen_;
};

inline Received FromScribe(const ScribeTestServer& s) {
  Received r;
  for (const auto& e : s.entries()) r.Add(e.message);
  return r;
}

inline Received FromJsonFile(const std::string& path) {
  Received r;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) r.Add(line);
  return r;
}

inline std::vector<int> Range(int from, int n) {
  std::vector<int> v;
  for (int i = from; i < from + n; ++i) v.push_back(i);
  return v;
}

}  // namespace tlswall::testing
