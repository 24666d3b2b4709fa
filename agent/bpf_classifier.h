// Owns the tc classifier: its skeleton (programs + maps, embedded in the
// binary), its tc egress attachments and the policy generation word.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

extern "C" {
#include "abi/tlswall_abi.h"
}

struct tc_classifier;  // generated skeleton
struct bpf_tc_hook;

namespace tlswall::agent {

// How a device's packets start: with a MAC header, or with the IP header.
enum class LinkKind { kEthernet, kL3 };

// The link kind of `ifname` (SIOCGIFHWADDR). Throws for link types the
// classifier cannot parse, naming the type.
LinkKind link_kind(const std::string& ifname);

// One tc egress filter we attached. Destroying it removes the filter, and
// the clsact qdisc only if we created it (someone else's stays).
class TcAttachment {
 public:
  TcAttachment(std::string ifname, int ifindex, int prog_fd);  // throws
  ~TcAttachment();
  TcAttachment(const TcAttachment&) = delete;
  TcAttachment& operator=(const TcAttachment&) = delete;

  const std::string& ifname() const { return ifname_; }
  int ifindex() const { return ifindex_; }
  bool created_qdisc() const { return created_qdisc_; }
  LinkKind kind() const { return kind_; }
  void set_kind(LinkKind k) { kind_ = k; }
  uint32_t handle() const { return handle_; }
  uint32_t priority() const { return priority_; }
  // True while our filter is still installed with our program.
  bool still_attached() const;

 private:
  std::string ifname_;
  int ifindex_;
  int prog_fd_;
  bool created_qdisc_ = false;
  LinkKind kind_ = LinkKind::kEthernet;
  uint32_t handle_ = 0;
  uint32_t priority_ = 0;
};

struct ClassifierOptions {
  uint32_t flow_table_entries = 131072;
  uint32_t ringbuf_bytes = 1u << 20;
};

class TcClassifier {
 public:
  // Opens and loads the embedded programs. Throws std::runtime_error with
  // libbpf's reason (the verifier log goes to the "bpf" logger).
  explicit TcClassifier(const ClassifierOptions& opts);
  ~TcClassifier();
  TcClassifier(const TcClassifier&) = delete;
  TcClassifier& operator=(const TcClassifier&) = delete;

  // Attaches the egress classifier to `ifname`. Throws if the interface
  // does not exist or the attach fails; attachments made so far remain
  // owned (and are removed by detach_all or the destructor).
  void attach_egress(const std::string& ifname);
  void detach_all();
  const std::vector<std::unique_ptr<TcAttachment>>& attachments() const { return attachments_; }

  // Publishes the active policy generation (one 64-bit store).
  void set_generation(uint64_t generation);
  uint64_t generation() const;

  std::array<uint64_t, TW_CNT_MAX> counters() const;
  std::array<uint64_t, TW_REASON_MAX> drops_by_reason() const;

  int egress_prog_fd() const;
  int flows_fd() const;
  int lpm4_fd() const;
  int lpm6_fd() const;
  int ports_fd() const;
  int slots_fd() const;
  int counters_fd() const;
  int events_fd() const;

 private:
  struct SkelDeleter {
    void operator()(tc_classifier* s) const;
  };
  std::unique_ptr<tc_classifier, SkelDeleter> skel_;
  std::vector<std::unique_ptr<TcAttachment>> attachments_;
};

// Sums a per-CPU u64 array map into `out` (size n). Returns false on error.
bool read_percpu_u64_array(int map_fd, uint64_t* out, uint32_t n);

// Routes libbpf's messages into the "bpf" logger (idempotent).
void route_libbpf_logs();

}  // namespace tlswall::agent
