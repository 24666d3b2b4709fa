// Event ids: "<host_id>-<seq>", unique per host across restarts, so that a
// receiver can dedupe at-least-once delivery by id (README "Event ids").
//
// host_id: configured, else /etc/machine-id, else a random id persisted in
// state_dir/host_id. seq: starts at max(persisted high-water mark, wall
// clock in microseconds) and increases by one per event. Blocks of
// sequence numbers are reserved ahead in state_dir/event_seq (atomically
// replaced, fsynced), so a restart never reuses a number even if the state
// file cannot be written (the clock seed still moves forward); the unused
// rest of a reserved block shows as a jump in seq across a restart.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace tlswall::logging {

class EventIdSource {
 public:
  struct Options {
    std::string state_dir;
    std::string host_id;  // "" = machine id
    std::string machine_id_path = "/etc/machine-id";
    uint64_t block = 65536;            // numbers reserved per state write
    std::function<uint64_t()> now_us;  // default: system clock
  };

  // Never throws for file problems: ids stay unique (clock seed) and
  // persistent() / last_error() say what went wrong.
  explicit EventIdSource(Options o);

  struct Id {
    uint64_t seq;
    std::string id;
  };
  // Not thread-safe: one caller (the pipeline thread).
  Id next();

  const std::string& host_id() const { return host_id_; }
  bool persistent() const { return persistent_; }
  const std::string& last_error() const { return last_error_; }
  uint64_t peek_next() const { return next_; }

 private:
  bool reserve(uint64_t upto);

  Options o_;
  std::string host_id_;
  std::string prefix_;
  uint64_t next_ = 1;
  uint64_t reserved_ = 0;  // next_ < reserved_ may be handed out
  bool persistent_ = false;
  std::string last_error_;
};

// Writes `content` to `path` atomically (temp file, fsync, rename, fsync of
// the directory). Returns "" or an error text.
std::string write_file_atomically(const std::string& path, const std::string& content,
                                  bool sync = true);

}  // namespace tlswall::logging
