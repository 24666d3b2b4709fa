#include "logging/disk_buffer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "logging/crc32c.h"
#include "logging/event_id.h"

namespace tlswall::logging {
namespace {

namespace fs = std::filesystem;

constexpr char kSegMagic[6] = {'T', 'W', 'B', 'S', 'E', 'G'};
constexpr uint16_t kSegVersion = 1;
constexpr uint32_t kRecMagic = 0x31425754;  // "TWB1" little-endian

void put_u16(std::string& b, uint16_t v) {
  for (int i = 0; i < 2; ++i) b += static_cast<char>((v >> (8 * i)) & 0xff);
}
void put_u32(std::string& b, uint32_t v) {
  for (int i = 0; i < 4; ++i) b += static_cast<char>((v >> (8 * i)) & 0xff);
}
void put_u64(std::string& b, uint64_t v) {
  for (int i = 0; i < 8; ++i) b += static_cast<char>((v >> (8 * i)) & 0xff);
}
uint32_t get_u32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
uint64_t get_u64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
uint16_t get_u16(const char* p) {
  return static_cast<uint16_t>(static_cast<unsigned char>(p[0]) | static_cast<unsigned char>(p[1])
                                                                      << 8);
}

uint32_t record_crc(uint32_t len, uint64_t bufseq, const char* payload) {
  std::string h;
  put_u32(h, len);
  put_u64(h, bufseq);
  return crc32c(payload, len, crc32c(h.data(), h.size()));
}

std::string errno_text(const std::string& what) { return what + ": " + std::strerror(errno); }

bool parse_segment_name(const std::string& name, uint64_t* number) {
  // seg-<20 digits>.twb
  if (name.size() != 4 + 20 + 4 || name.compare(0, 4, "seg-") != 0 ||
      name.compare(24, 4, ".twb") != 0) {
    return false;
  }
  uint64_t n = 0;
  for (size_t i = 4; i < 24; ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
    n = n * 10 + static_cast<uint64_t>(name[i] - '0');
  }
  *number = n;
  return true;
}

bool pread_all(int fd, uint64_t off, size_t len, std::string* buf) {
  buf->resize(len);
  size_t got = 0;
  while (got < len) {
    const ssize_t n = ::pread(fd, buf->data() + got, len - got, static_cast<off_t>(off + got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (n == 0) {
      errno = EIO;  // file shorter than its recorded size
      return false;
    }
    got += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

DiskBuffer::DiskBuffer(DiskBufferOptions o) : o_(std::move(o)) {}

DiskBuffer::~DiskBuffer() {
  close_write();
  if (read_fd_ >= 0) ::close(read_fd_);
}

std::string DiskBuffer::segment_path(uint64_t number) const {
  char name[40];
  std::snprintf(name, sizeof(name), "seg-%020llu.twb", static_cast<unsigned long long>(number));
  return (fs::path(o_.dir) / name).string();
}

void DiskBuffer::close_write() {
  if (write_fd_ >= 0) ::close(write_fd_);
  write_fd_ = -1;
}

uint64_t DiskBuffer::pending_records() const {
  return next_bufseq_ > read_bufseq_ ? next_bufseq_ - read_bufseq_ : 0;
}

uint64_t DiskBuffer::next_first_after(size_t index) const {
  return index + 1 < segs_.size() ? segs_[index + 1].first : next_bufseq_;
}

bool DiskBuffer::open(std::string* error) {
  const bool reopen = !segs_.empty() || write_fd_ >= 0 || read_bufseq_ > 1;
  close_write();
  if (read_fd_ >= 0) ::close(read_fd_);
  read_fd_ = -1;
  read_fd_segment_ = UINT64_MAX;
  peeked_.clear();
  segs_.clear();
  total_bytes_ = 0;
  error->clear();

  std::error_code ec;
  fs::create_directories(fs::path(o_.dir) / "quarantine", ec);
  if (ec) {
    *error = "cannot create buffer directory " + o_.dir + ": " + ec.message();
    // Fall through: what is already there may still be readable.
  }

  std::vector<std::pair<uint64_t, std::string>> files;
  ec.clear();
  for (fs::directory_iterator it(o_.dir, ec), end; !ec && it != end; it.increment(ec)) {
    uint64_t n;
    if (parse_segment_name(it->path().filename().string(), &n)) files.emplace_back(n, it->path());
  }
  std::sort(files.begin(), files.end());
  // Never reuse a segment number, not even one in quarantine.
  for (fs::directory_iterator it(fs::path(o_.dir) / "quarantine", ec), end; !ec && it != end;
       it.increment(ec)) {
    uint64_t n;
    if (parse_segment_name(it->path().filename().string(), &n))
      next_number_ = std::max(next_number_, n + 1);
  }
  ec.clear();
  for (const auto& [number, path] : files) {
    next_number_ = std::max(next_number_, number + 1);
    Segment s;
    s.number = number;
    s.path = path;
    struct stat st;
    std::string hdr;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    bool ok = fd >= 0 && ::fstat(fd, &st) == 0 &&
              static_cast<uint64_t>(st.st_size) >= kSegmentHeaderBytes &&
              pread_all(fd, 0, kSegmentHeaderBytes, &hdr);
    if (fd >= 0) ::close(fd);
    if (ok) {
      ok = std::memcmp(hdr.data(), kSegMagic, 6) == 0 && get_u16(hdr.data() + 6) == kSegVersion &&
           get_u32(hdr.data() + 16) == crc32c(hdr.data(), 16);
    }
    if (!ok) {
      segs_.push_back(s);
      segs_.back().size = 0;
      drop_segment(segs_.size() - 1, /*quarantine=*/true);
      warning_ = "quarantined " + path + ": bad segment header";
      continue;
    }
    s.first = get_u64(hdr.data() + 8);
    s.size = static_cast<uint64_t>(st.st_size);
    segs_.push_back(s);
    total_bytes_ += s.size;
  }

  uint64_t cursor = 0;
  {
    std::ifstream in((fs::path(o_.dir) / "cursor").string());
    std::string line;
    if (in && std::getline(in, line)) {
      char* end = nullptr;
      const unsigned long long v = std::strtoull(line.c_str(), &end, 10);
      if (end && *end == '\0') cursor = v;
    }
  }
  if (reopen) cursor = std::max(cursor, read_bufseq_);

  // The next bufseq to write: after the last whole record of the newest segment.
  uint64_t next = 1;
  if (!segs_.empty()) {
    const Segment& last = segs_.back();
    next = last.first;
    const int fd = ::open(last.path.c_str(), O_RDONLY | O_CLOEXEC);
    std::string body;
    if (fd >= 0 && pread_all(fd, kSegmentHeaderBytes, last.size - kSegmentHeaderBytes, &body)) {
      // Past corrupt bytes too, as peek() reads: a valid record after a
      // corrupt one is delivered, so the next record written must come
      // after it, or peek() would take the new records for delivered ones
      // (found by tests/fuzz).
      size_t pos = 0;
      std::string payload;
      uint64_t bufseq, size;
      while (pos + kRecordHeaderBytes <= body.size()) {
        if (parse_record(body, pos, body.size() - pos, &payload, &bufseq, &size)) {
          next = std::max(next, bufseq + 1);
          pos += size;
        } else {
          ++pos;
        }
      }
    }
    if (fd >= 0) ::close(fd);
  }
  next_bufseq_ = std::max({next, cursor, next_bufseq_, uint64_t{1}});

  // Segments wholly before the cursor were delivered by an earlier run.
  while (segs_.size() >= 2 && segs_[1].first <= cursor) drop_segment(0, false);
  if (segs_.size() == 1 && segs_[0].first >= next_bufseq_) drop_segment(0, false);  // no records
  if (segs_.size() == 1 && cursor >= next_bufseq_) drop_segment(0, false);          // all delivered
  read_off_ = kSegmentHeaderBytes;
  read_bufseq_ = segs_.empty() ? next_bufseq_ : std::max(cursor, segs_.front().first);

  if (!error->empty()) return false;
  return start_segment(error);
}

bool DiskBuffer::start_segment(std::string* error) {
  close_write();
  const uint64_t number = next_number_;
  const std::string path = segment_path(number);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    *error = errno_text("cannot create buffer segment " + path);
    return false;
  }
  std::string hdr(kSegMagic, 6);
  put_u16(hdr, kSegVersion);
  put_u64(hdr, next_bufseq_);
  put_u32(hdr, crc32c(hdr.data(), 16));
  put_u32(hdr, 0);
  const ssize_t n = ::write(fd, hdr.data(), hdr.size());
  if (n != static_cast<ssize_t>(hdr.size()) || (o_.fsync && ::fsync(fd) != 0)) {
    *error = errno_text("cannot write buffer segment " + path);
    ::close(fd);
    ::unlink(path.c_str());
    return false;
  }
  write_fd_ = fd;
  ++next_number_;
  Segment s;
  s.number = number;
  s.path = path;
  s.first = next_bufseq_;
  s.size = kSegmentHeaderBytes;
  if (segs_.empty()) {
    read_off_ = kSegmentHeaderBytes;
    read_bufseq_ = std::max(read_bufseq_, next_bufseq_);
  }
  segs_.push_back(s);
  total_bytes_ += s.size;
  return true;
}

void DiskBuffer::drop_segment(size_t index, bool quarantine) {
  Segment s = segs_[index];
  if (read_fd_ >= 0 && read_fd_segment_ == s.number) {
    ::close(read_fd_);
    read_fd_ = -1;
    read_fd_segment_ = UINT64_MAX;
  }
  if (quarantine) {
    const fs::path to = fs::path(o_.dir) / "quarantine" / fs::path(s.path).filename();
    if (::rename(s.path.c_str(), to.c_str()) == 0) {
      ++quarantined_;
      prune_quarantine();
    } else {
      warning_ = errno_text("cannot quarantine " + s.path);
      ::unlink(s.path.c_str());
    }
  } else if (::unlink(s.path.c_str()) != 0 && errno != ENOENT) {
    warning_ = errno_text("cannot delete " + s.path);
  }
  total_bytes_ -= std::min(total_bytes_, s.size);
  segs_.erase(segs_.begin() + static_cast<std::ptrdiff_t>(index));
}

void DiskBuffer::prune_quarantine() {
  std::error_code ec;
  std::vector<fs::path> files;
  for (fs::directory_iterator it(fs::path(o_.dir) / "quarantine", ec), end; !ec && it != end;
       it.increment(ec)) {
    files.push_back(it->path());
  }
  std::sort(files.begin(), files.end());
  while (files.size() > o_.max_quarantined) {
    fs::remove(files.front(), ec);
    files.erase(files.begin());
  }
}

void DiskBuffer::persist_cursor() {
  const std::string err = write_file_atomically((fs::path(o_.dir) / "cursor").string(),
                                                std::to_string(read_bufseq_) + "\n", o_.fsync);
  if (!err.empty()) warning_ = err;
}

// Drops exhausted head segments that are no longer written to, counting
// any bufseq gap to the next one (a torn or corrupt tail) as lost.
void DiskBuffer::finish_head() {
  bool moved = false;
  while (!segs_.empty()) {
    const bool active = segs_.size() == 1 && writable();
    Segment& s = segs_.front();
    if (active || read_off_ < s.size) break;
    const uint64_t next_first = next_first_after(0);
    if (next_first > read_bufseq_) {
      lost_corrupt_ += next_first - read_bufseq_;
      s.corrupt = true;
    }
    read_bufseq_ = std::max(read_bufseq_, next_first);
    drop_segment(0, s.corrupt);
    read_off_ = kSegmentHeaderBytes;
    moved = true;
  }
  if (moved) persist_cursor();
}

bool DiskBuffer::append(const std::vector<std::string>& records, std::string* error) {
  if (records.empty()) return true;
  if (!writable()) {
    *error = "buffer " + o_.dir + " is not writable";
    return false;
  }
  std::string buf;
  size_t total = 0;
  for (const auto& r : records) total += kRecordHeaderBytes + r.size();
  buf.reserve(total);
  uint64_t seq = next_bufseq_;
  for (const auto& r : records) {
    const uint32_t len = static_cast<uint32_t>(std::min<size_t>(r.size(), kMaxRecordBytes));
    put_u32(buf, kRecMagic);
    put_u32(buf, len);
    put_u64(buf, seq);
    put_u32(buf, record_crc(len, seq, r.data()));
    buf.append(r.data(), len);
    ++seq;
  }
  if (segs_.back().size > kSegmentHeaderBytes &&
      segs_.back().size + buf.size() > o_.segment_bytes) {
    if (!start_segment(error)) return false;
  }
  // The size cap: drop the oldest segments, counting what was unread.
  while (total_bytes_ + buf.size() > o_.max_bytes && !segs_.empty()) {
    if (segs_.size() == 1) {
      if (segs_.front().size <= kSegmentHeaderBytes) break;  // nothing left to drop
      if (!start_segment(error)) return false;
    }
    const Segment& s = segs_.front();
    const uint64_t end = next_first_after(0);
    const uint64_t from = std::max(read_bufseq_, s.first);
    if (end > from) lost_cap_ += end - from;
    read_bufseq_ = std::max(read_bufseq_, end);
    read_off_ = kSegmentHeaderBytes;
    peeked_.clear();
    drop_segment(0, s.corrupt);
    persist_cursor();
  }
  Segment& w = segs_.back();
  size_t off = 0;
  while (off < buf.size()) {
    const ssize_t n = ::write(write_fd_, buf.data() + off, buf.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      *error = errno_text("cannot write buffer segment " + w.path);
      if (::ftruncate(write_fd_, static_cast<off_t>(w.size)) != 0) {
        // The tail may hold a partial record; reading stops there (counted
        // as lost only if records were really missing).
      }
      close_write();
      return false;
    }
    off += static_cast<size_t>(n);
  }
  if (o_.fsync && ::fdatasync(write_fd_) != 0) {
    *error = errno_text("cannot sync buffer segment " + w.path);
    close_write();
    // The data was written; it stays readable.
  }
  w.size += buf.size();
  total_bytes_ += buf.size();
  next_bufseq_ = seq;
  return error->empty();
}

bool DiskBuffer::read_at(const Segment& s, uint64_t off, size_t len, std::string* buf,
                         std::string* error) {
  if (read_fd_segment_ != s.number) {
    if (read_fd_ >= 0) ::close(read_fd_);
    read_fd_ = ::open(s.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (read_fd_ < 0) {
      read_fd_segment_ = UINT64_MAX;
      *error = errno_text("cannot open buffer segment " + s.path);
      return false;
    }
    read_fd_segment_ = s.number;
  }
  if (!pread_all(read_fd_, off, len, buf)) {
    *error = errno_text("cannot read buffer segment " + s.path);
    return false;
  }
  return true;
}

bool DiskBuffer::parse_record(const std::string& buf, size_t pos, uint64_t seg_remaining,
                              std::string* payload, uint64_t* bufseq, uint64_t* size) {
  if (pos + kRecordHeaderBytes > buf.size()) return false;
  const char* p = buf.data() + pos;
  if (get_u32(p) != kRecMagic) return false;
  const uint32_t len = get_u32(p + 4);
  if (len > kMaxRecordBytes || kRecordHeaderBytes + len > seg_remaining) return false;
  if (pos + kRecordHeaderBytes + len > buf.size()) return false;
  const uint64_t seq = get_u64(p + 8);
  // bufseq starts at 1 and counts records: UINT64_MAX is never written, and
  // its successor would wrap.
  if (seq == UINT64_MAX) return false;
  if (get_u32(p + 16) != record_crc(len, seq, p + kRecordHeaderBytes)) return false;
  payload->assign(p + kRecordHeaderBytes, len);
  *bufseq = seq;
  *size = kRecordHeaderBytes + len;
  return true;
}

bool DiskBuffer::peek(size_t max_records, size_t max_bytes, std::vector<std::string>* out,
                      std::string* error) {
  out->clear();
  peeked_.clear();
  if (max_records == 0) return true;
  std::string payload;
  uint64_t bufseq = 0, rec_size = 0;
  // 1. Make the read position point at a valid, undelivered record (or the
  // end of what is written), skipping corrupt data and exhausted segments.
  // Each pass moves forward in the file or drops a segment, so this ends.
  for (;;) {
    finish_head();
    if (segs_.empty()) return true;
    Segment& s = segs_.front();
    if (read_off_ >= s.size) return true;  // the active segment, all read
    const uint64_t rem = s.size - read_off_;
    std::string hdr;
    if (rem >= kRecordHeaderBytes) {
      if (!read_at(s, read_off_, kRecordHeaderBytes, &hdr, error)) return false;
      const uint32_t len = get_u32(hdr.data() + 4);
      if (get_u32(hdr.data()) == kRecMagic && len <= kMaxRecordBytes &&
          kRecordHeaderBytes + len <= rem) {
        std::string rec;
        if (!read_at(s, read_off_, kRecordHeaderBytes + len, &rec, error)) return false;
        // A record numbered beyond what this buffer has written is not
        // one of its records: corrupt.
        if (parse_record(rec, 0, rem, &payload, &bufseq, &rec_size) && bufseq < next_bufseq_) {
          if (bufseq < read_bufseq_) {  // delivered before a restart
            read_off_ += rec_size;
            continue;
          }
          if (bufseq > read_bufseq_) {  // records missing before this one
            lost_corrupt_ += bufseq - read_bufseq_;
            s.corrupt = true;
            read_bufseq_ = bufseq;
            persist_cursor();
          }
          break;
        }
      }
    }
    // Corrupt at the read position: find the next valid record in this
    // segment; the records in between are counted when it (or the next
    // segment) is reached.
    s.corrupt = true;
    warning_ = "corrupt record in " + s.path + " at offset " + std::to_string(read_off_);
    std::string rest;
    if (!read_at(s, read_off_ + 1, rem - 1, &rest, error)) return false;
    uint64_t found = UINT64_MAX;
    for (size_t p = 0; p + kRecordHeaderBytes <= rest.size(); ++p) {
      if (get_u32(rest.data() + p) != kRecMagic) continue;
      if (parse_record(rest, p, rest.size() - p, &payload, &bufseq, &rec_size) &&
          bufseq >= read_bufseq_ && bufseq < next_bufseq_) {
        found = p;
        break;
      }
    }
    read_off_ = found == UINT64_MAX ? s.size : read_off_ + 1 + found;
    if (found == UINT64_MAX && segs_.size() == 1 && writable()) {
      // Nothing valid after it in the segment being written: start a new
      // one so this one can be quarantined.
      std::string err;
      if (!start_segment(&err)) warning_ = err;
    }
  }
  // 2. Collect consecutive records from the head segment.
  const Segment& s = segs_.front();
  const uint64_t want = std::max<uint64_t>(
      rec_size,
      std::min<uint64_t>(s.size - read_off_, max_bytes + max_records * kRecordHeaderBytes));
  std::string chunk;
  if (!read_at(s, read_off_, static_cast<size_t>(want), &chunk, error)) return false;
  size_t pos = 0, bytes = 0;
  uint64_t expected = read_bufseq_;
  while (out->size() < max_records &&
         parse_record(chunk, pos, s.size - read_off_ - pos, &payload, &bufseq, &rec_size) &&
         bufseq == expected && bufseq < next_bufseq_) {
    if (!out->empty() && bytes + payload.size() > max_bytes) break;
    bytes += payload.size();
    pos += rec_size;
    peeked_.push_back({s.number, read_off_ + pos, bufseq});
    out->push_back(std::move(payload));
    ++expected;
  }
  return true;
}

void DiskBuffer::commit(size_t n) {
  if (n == 0 || peeked_.empty()) return;
  n = std::min(n, peeked_.size());
  const Peeked p = peeked_[n - 1];
  peeked_.clear();
  if (segs_.empty() || segs_.front().number != p.segment) return;  // dropped meanwhile
  read_off_ = p.end;
  read_bufseq_ = p.bufseq + 1;
  // All delivered and the active segment holds records: start a fresh one
  // so the old one can be deleted.
  if (segs_.size() == 1 && writable() && read_off_ >= segs_.front().size &&
      read_bufseq_ >= next_bufseq_ && segs_.front().size > kSegmentHeaderBytes) {
    std::string err;
    if (!start_segment(&err)) warning_ = err;
  }
  finish_head();
  persist_cursor();
}

}  // namespace tlswall::logging
