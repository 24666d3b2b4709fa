// The disk buffer of a sink (README "Disk buffer"), in the spirit of
// Scribe's buffer store: while the central sink is unreachable or says
// TRY_LATER, records (rendered messages) go to bounded, checksummed segment
// files in a directory of their own; they are read back oldest first; the
// read position survives restarts.
//
// On disk (all integers little-endian):
//   seg-<20-digit number>.twb   segment files, numbered in write order
//     header  "TWBSEG" u16 version=1, u64 first_bufseq, u32 crc32c(first 16 bytes), u32 0
//     record  u32 magic 'TWB1', u32 len, u64 bufseq, u32 crc32c(len, bufseq, payload), payload
//   cursor                      the next bufseq to deliver (text, replaced atomically)
//   quarantine/                 segments found corrupt, kept for inspection (bounded)
// bufseq numbers every record of this buffer consecutively, so loss is
// exact: records dropped at the size cap, or lost to corruption, are the
// gaps in bufseq, and are counted.
//
// Single-threaded: one sink thread owns a DiskBuffer.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

namespace tlswall::logging {

struct DiskBufferOptions {
  std::string dir;
  uint64_t max_bytes = 256ull << 20;    // all segments together
  uint64_t segment_bytes = 8ull << 20;  // a segment is closed past this size
  bool fsync = false;                   // fsync each append and cursor update
  size_t max_quarantined = 8;           // quarantined segments kept (oldest deleted)
};

class DiskBuffer {
 public:
  static constexpr size_t kSegmentHeaderBytes = 24;
  static constexpr size_t kRecordHeaderBytes = 20;
  static constexpr uint32_t kMaxRecordBytes = 16u << 20;

  explicit DiskBuffer(DiskBufferOptions o);
  ~DiskBuffer();
  DiskBuffer(const DiskBuffer&) = delete;
  DiskBuffer& operator=(const DiskBuffer&) = delete;

  // Opens (or reopens after a failure) the directory: creates it, recovers
  // the segments left by an earlier run and the cursor, and starts a new
  // segment for writing. Segments with a bad header are quarantined. Returns
  // false with `error` if the directory cannot be used; the buffer is then
  // closed (append() fails) but still readable if it was open before.
  bool open(std::string* error);
  bool writable() const { return write_fd_ >= 0; }

  // Appends records in order with one write. At the size cap, the oldest
  // segments are dropped first (their unread records counted in
  // lost_to_cap()). On an I/O error (disk full, read-only), nothing of this
  // call is kept, the buffer stops being writable, and false + `error`.
  bool append(const std::vector<std::string>& records, std::string* error);

  // Copies up to `max_records` records, and up to `max_bytes` of payload
  // (at least one record if any), from the read position into `out`
  // without consuming them. A batch never spans segments. Corrupt records
  // met at the read position are skipped (counted in lost_to_corruption(),
  // the segment quarantined once read). False + `error` on a read error.
  bool peek(size_t max_records, size_t max_bytes, std::vector<std::string>* out,
            std::string* error);

  // The first `n` records of the last peek() were delivered: move the read
  // position past them and persist it. Fully read segments are deleted.
  void commit(size_t n);

  uint64_t pending_records() const;  // written and not yet committed
  uint64_t bytes() const { return total_bytes_; }
  size_t segments() const { return segs_.size(); }
  uint64_t lost_to_cap() const { return lost_cap_; }
  uint64_t lost_to_corruption() const { return lost_corrupt_; }
  uint64_t quarantined() const { return quarantined_; }
  const std::string& dir() const { return o_.dir; }
  // The last problem that did not stop the buffer (quarantine, cursor
  // write), "" if none.
  const std::string& last_warning() const { return warning_; }

 private:
  struct Segment {
    uint64_t number = 0;
    std::string path;
    uint64_t first = 0;  // bufseq of its first record
    uint64_t size = 0;   // bytes in the file
    bool corrupt = false;
  };
  struct Peeked {
    uint64_t segment;
    uint64_t end;  // offset after the record
    uint64_t bufseq;
  };

  std::string segment_path(uint64_t number) const;
  bool start_segment(std::string* error);
  void close_write();
  void drop_segment(size_t index, bool quarantine);
  void finish_head();
  void persist_cursor();
  void prune_quarantine();
  bool read_at(const Segment& s, uint64_t off, size_t len, std::string* buf, std::string* error);
  // Parses a whole record at buf[pos]; fills payload/bufseq/size if valid.
  static bool parse_record(const std::string& buf, size_t pos, uint64_t seg_remaining,
                           std::string* payload, uint64_t* bufseq, uint64_t* size);
  uint64_t next_first_after(size_t index) const;

  DiskBufferOptions o_;
  std::deque<Segment> segs_;  // oldest first; the last one is written to while writable
  int write_fd_ = -1;
  int read_fd_ = -1;
  uint64_t read_fd_segment_ = UINT64_MAX;
  uint64_t next_number_ = 1;                 // of the next segment file
  uint64_t next_bufseq_ = 1;                 // of the next appended record
  uint64_t read_bufseq_ = 1;                 // of the next record to deliver
  uint64_t read_off_ = kSegmentHeaderBytes;  // in segs_.front()
  uint64_t total_bytes_ = 0;
  uint64_t lost_cap_ = 0;
  uint64_t lost_corrupt_ = 0;
  uint64_t quarantined_ = 0;
  std::vector<Peeked> peeked_;
  std::string warning_;
};

}  // namespace tlswall::logging
