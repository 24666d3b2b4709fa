#include "logging/json_lines_sink.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace tlswall::logging {
namespace {

namespace fs = std::filesystem;

}  // namespace

JsonLinesFile::JsonLinesFile(std::string path, uint64_t max_bytes, size_t max_files)
    : path_(std::move(path)), max_bytes_(max_bytes), max_files_(max_files), stdout_(path_ == "-") {
  if (stdout_) return;
  std::string err;
  if (!open_file(&err)) throw std::runtime_error("cannot open events file " + err);
}

JsonLinesFile::~JsonLinesFile() {
  if (fd_ >= 0) ::close(fd_);
}

std::string JsonLinesFile::rotated_name(size_t n) const {
  const fs::path p(path_);
  const std::string ext = p.extension().string();
  const std::string stem = p.stem().string();
  return (p.parent_path() / (stem + "." + std::to_string(n) + ext)).string();
}

bool JsonLinesFile::open_file(std::string* error) {
  std::error_code ec;
  const auto parent = fs::path(path_).parent_path();
  if (!parent.empty()) fs::create_directories(parent, ec);
  if (ec) {
    *error = path_ + ": " + ec.message();
    return false;
  }
  const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) {
    *error = path_ + ": " + std::strerror(errno);
    return false;
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    *error = path_ + ": " + std::strerror(errno);
    ::close(fd);
    return false;
  }
  fd_ = fd;
  // A FIFO or device (/dev/stdout, a collector's pipe) is written, never rotated.
  regular_ = S_ISREG(st.st_mode);
  size_ = regular_ ? static_cast<uint64_t>(st.st_size) : 0;
  return true;
}

bool JsonLinesFile::rotate(std::string* error) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (max_files_ == 0) {
    ::unlink(path_.c_str());
  } else {
    ::unlink(rotated_name(max_files_).c_str());
    for (size_t i = max_files_; i > 1; --i) {
      ::rename(rotated_name(i - 1).c_str(), rotated_name(i).c_str());
    }
    if (::rename(path_.c_str(), rotated_name(1).c_str()) != 0 && errno != ENOENT) {
      *error = "cannot rotate " + path_ + ": " + std::strerror(errno);
      // Keep writing to the same file rather than losing events.
    }
  }
  return open_file(error);
}

bool JsonLinesFile::write_all(const std::string& buf, std::string* error) {
  const int fd = stdout_ ? STDOUT_FILENO : fd_;
  size_t off = 0;
  while (off < buf.size()) {
    const ssize_t n = ::write(fd, buf.data() + off, buf.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      *error = path_ + ": " + std::strerror(errno);
      if (!stdout_) {
        // Cut the partial tail so the file stays whole lines.
        if (off > 0 && regular_ && ::ftruncate(fd_, static_cast<off_t>(size_)) != 0) {
          // Cannot cut it: the torn tail stays in the file.
        }
        ::close(fd_);
        fd_ = -1;
      }
      return false;
    }
    off += static_cast<size_t>(n);
  }
  size_ += buf.size();
  return true;
}

size_t JsonLinesFile::write_lines(const std::vector<std::string>& lines, std::string* error) {
  if (!stdout_ && fd_ < 0 && !open_file(error)) return 0;
  std::string buf;
  size_t done = 0, in_buf = 0;
  for (const auto& l : lines) {
    const uint64_t add = l.size() + 1;
    if (!stdout_ && regular_ && max_bytes_ > 0 && size_ + buf.size() + add > max_bytes_ &&
        size_ + buf.size() > 0) {
      if (!buf.empty()) {
        if (!write_all(buf, error)) return done;
        done += in_buf;
        buf.clear();
        in_buf = 0;
      }
      if (!rotate(error)) return done;
    }
    buf += l;
    buf += '\n';
    ++in_buf;
  }
  if (!buf.empty()) {
    if (!write_all(buf, error)) return done;
    done += in_buf;
  }
  return done;
}

JsonLinesTransport::JsonLinesTransport(const std::string& path, uint64_t max_bytes,
                                       size_t max_files)
    : file_(path, max_bytes, max_files) {}

std::string JsonLinesTransport::target() const {
  return file_.path() == "-" ? "stdout" : file_.path();
}

Transport::Status JsonLinesTransport::send(const std::vector<std::string>& records,
                                           size_t* accepted, std::string* error) {
  *accepted = file_.write_lines(records, error);
  return *accepted == records.size() ? Status::kOk : Status::kError;
}

JsonLinesSink::JsonLinesSink(const std::string& path, const std::string& host,
                             const std::string& agent_version, size_t max_bytes, size_t max_files)
    : file_(path, max_bytes, max_files), host_(host), agent_version_(agent_version) {}

JsonLinesSink::~JsonLinesSink() = default;

void JsonLinesSink::write(const Event& e) {
  std::string err;
  if (file_.write_lines({render_json(e, host_, agent_version_)}, &err) == 1) {
    written_.fetch_add(1);
  } else {
    failed_.fetch_add(1);
  }
}

}  // namespace tlswall::logging
