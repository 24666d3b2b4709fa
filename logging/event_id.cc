#include "logging/event_id.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

namespace tlswall::logging {
namespace {

namespace fs = std::filesystem;

std::string read_first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (in) std::getline(in, line);
  return line;
}

bool is_hex_id(const std::string& s) {
  if (s.size() < 8 || s.size() > 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string random_hex(size_t bytes) {
  std::random_device rd;
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < bytes; ++i) {
    const unsigned v = rd() & 0xff;
    out += kHex[v >> 4];
    out += kHex[v & 0xf];
  }
  return out;
}

uint64_t system_now_us() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace

std::string write_file_atomically(const std::string& path, const std::string& content, bool sync) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return "cannot create " + tmp + ": " + std::strerror(errno);
  size_t off = 0;
  while (off < content.size()) {
    const ssize_t n = ::write(fd, content.data() + off, content.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      const std::string err = "cannot write " + tmp + ": " + std::strerror(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      return err;
    }
    off += static_cast<size_t>(n);
  }
  if (sync && ::fsync(fd) != 0) {
    const std::string err = "cannot sync " + tmp + ": " + std::strerror(errno);
    ::close(fd);
    ::unlink(tmp.c_str());
    return err;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string err = "cannot replace " + path + ": " + std::strerror(errno);
    ::unlink(tmp.c_str());
    return err;
  }
  if (sync) {
    const std::string dir = fs::path(path).parent_path().string();
    const int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }
  return "";
}

EventIdSource::EventIdSource(Options o) : o_(std::move(o)) {
  if (!o_.now_us) o_.now_us = system_now_us;
  if (o_.block == 0) o_.block = 1;
  std::error_code ec;
  if (!o_.state_dir.empty()) fs::create_directories(o_.state_dir, ec);
  if (ec) last_error_ = "cannot create state directory " + o_.state_dir + ": " + ec.message();

  host_id_ = o_.host_id;
  if (host_id_.empty()) {
    const std::string mid = read_first_line(o_.machine_id_path);
    if (is_hex_id(mid)) host_id_ = mid;
  }
  const std::string host_file = (fs::path(o_.state_dir) / "host_id").string();
  if (host_id_.empty()) {
    const std::string saved = read_first_line(host_file);
    if (is_hex_id(saved)) {
      host_id_ = saved;
    } else {
      host_id_ = random_hex(16);
      const std::string err = write_file_atomically(host_file, host_id_ + "\n");
      if (!err.empty()) last_error_ = err;
    }
  }
  prefix_ = host_id_ + "-";

  uint64_t high_water = 0;
  const std::string seq_line = read_first_line((fs::path(o_.state_dir) / "event_seq").string());
  if (!seq_line.empty()) {
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(seq_line.c_str(), &end, 10);
    if (errno == 0 && end && *end == '\0') high_water = v;
  }
  next_ = std::max<uint64_t>({high_water, o_.now_us(), 1});
  reserve(next_ + o_.block);
}

bool EventIdSource::reserve(uint64_t upto) {
  const std::string err = write_file_atomically((fs::path(o_.state_dir) / "event_seq").string(),
                                                std::to_string(upto) + "\n");
  if (!err.empty()) {
    persistent_ = false;
    last_error_ = err;
    // Keep handing out numbers; retry persisting at the next block.
    reserved_ = upto;
    return false;
  }
  persistent_ = true;
  reserved_ = upto;
  return true;
}

EventIdSource::Id EventIdSource::next() {
  if (next_ >= reserved_) reserve(next_ + o_.block);
  const uint64_t s = next_++;
  return Id{s, prefix_ + std::to_string(s)};
}

}  // namespace tlswall::logging
