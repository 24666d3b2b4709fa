// JSON lines: one event per line, to a size-rotated file or to stdout ("-",
// for journald). JsonLinesFile is the writer; JsonLinesTransport drives it
// from a pipeline sink thread; JsonLinesSink is the synchronous form.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "logging/event.h"
#include "logging/sink.h"

namespace tlswall::logging {

// Appends lines to `path`; when a line would take the file past max_bytes,
// the file is rotated first: path -> base.1.ext -> base.2.ext ... up to
// max_files rotated files (events.jsonl -> events.1.jsonl). "-" = stdout.
class JsonLinesFile {
 public:
  // Creates parent directories. Throws std::runtime_error (with the path
  // and errno text) if the file cannot be opened.
  JsonLinesFile(std::string path, uint64_t max_bytes, size_t max_files);
  ~JsonLinesFile();
  JsonLinesFile(const JsonLinesFile&) = delete;
  JsonLinesFile& operator=(const JsonLinesFile&) = delete;

  // Writes each record plus '\n'. Returns how many whole lines were
  // written; on an error (disk full, ...) the partial line is cut off, the
  // file is reopened on the next call, and `error` says why.
  size_t write_lines(const std::vector<std::string>& lines, std::string* error);

  const std::string& path() const { return path_; }
  bool is_open() const { return fd_ >= 0; }
  // Rotated file number n (1 = newest) of path.
  std::string rotated_name(size_t n) const;

 private:
  bool open_file(std::string* error);
  bool rotate(std::string* error);
  bool write_all(const std::string& buf, std::string* error);

  std::string path_;
  uint64_t max_bytes_;
  size_t max_files_;
  bool stdout_;
  bool regular_ = true;
  int fd_ = -1;
  uint64_t size_ = 0;
};

class JsonLinesTransport : public Transport {
 public:
  // Throws like JsonLinesFile.
  JsonLinesTransport(const std::string& path, uint64_t max_bytes, size_t max_files);
  std::string kind() const override { return "json"; }
  std::string target() const override;
  std::string render(const RenderedEvent& e) override { return e.json; }
  Status send(const std::vector<std::string>& records, size_t* accepted,
              std::string* error) override;
  bool connected() const override { return file_.is_open(); }
  void disconnect() override {}

 private:
  JsonLinesFile file_;
};

// Synchronous writer of rendered events (no queue, no thread).
class JsonLinesSink {
 public:
  // Throws std::runtime_error (with the path and errno text) if the file
  // cannot be opened.
  JsonLinesSink(const std::string& path, const std::string& host, const std::string& agent_version,
                size_t max_bytes = 64u << 20, size_t max_files = 5);
  ~JsonLinesSink();
  JsonLinesSink(const JsonLinesSink&) = delete;
  JsonLinesSink& operator=(const JsonLinesSink&) = delete;

  // Never throws; a failed write is counted in failed().
  void write(const Event& e);
  void flush() {}  // every line is written through as it comes

  const std::string& path() const { return file_.path(); }
  uint64_t written() const { return written_.load(); }
  uint64_t failed() const { return failed_.load(); }

 private:
  JsonLinesFile file_;
  std::string host_;
  std::string agent_version_;
  std::atomic<uint64_t> written_{0};
  std::atomic<uint64_t> failed_{0};
};

}  // namespace tlswall::logging
