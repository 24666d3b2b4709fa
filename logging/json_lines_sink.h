// Writes events as JSON lines to a size-rotated file, or to stdout ("-").
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include <spdlog/logger.h>

#include "logging/event.h"

namespace tlswall::logging {

class JsonLinesSink {
 public:
  // Creates parent directories as needed. Throws std::runtime_error (with
  // the path and errno text) if the file cannot be opened.
  JsonLinesSink(const std::string& path, const std::string& host, const std::string& agent_version,
                size_t max_bytes = 64u << 20, size_t max_files = 5);
  ~JsonLinesSink();
  JsonLinesSink(const JsonLinesSink&) = delete;
  JsonLinesSink& operator=(const JsonLinesSink&) = delete;

  // Never throws; a failed write is counted in failed().
  void write(const Event& e);
  void flush();

  const std::string& path() const { return path_; }
  uint64_t written() const { return written_.load(); }
  uint64_t failed() const { return failed_.load(); }

 private:
  std::string path_;
  std::string host_;
  std::string agent_version_;
  std::shared_ptr<spdlog::logger> out_;
  std::atomic<uint64_t> written_{0};
  std::atomic<uint64_t> failed_{0};
};

}  // namespace tlswall::logging
