// Blind-spot probes: reports processes that open AF_PACKET or AF_XDP
// sockets (bpf/raw_socket_probes.bpf.c). Frames sent through such a socket
// can leave without passing the tc egress classifier (AF_PACKET with
// PACKET_QDISC_BYPASS, AF_XDP), so the agent cannot judge them; the probes
// name who opened one, as a raw_socket_opened event.
//
// Backends, tried in this order; the first that loads and attaches runs:
//   fentry      fentry/security_socket_post_create  (socket(2) and io_uring)
//   kprobe      kprobe/security_socket_post_create  (the same, production kernels)
//   tracepoint  syscalls/sys_enter_socket + sys_exit_socket (socket(2) only)
// All of them only observe. Not pinned: while no daemon runs, nothing is
// reported (the gap is the same as for the daemon's other user-space work).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

extern "C" {
#include <linux/types.h>

#include "abi/raw_socket_abi.h"
}

struct raw_socket_probes;  // generated skeleton
struct ring_buffer;
struct bpf_link;

namespace tlswall::agent::attribution {

struct RawBackendReport {
  std::string name;   // fentry | kprobe | tracepoint
  std::string state;  // active | not-tried (an earlier one is active) | unavailable
  std::string why;
};

class RawSocketProbes {
 public:
  using Callback = std::function<void(const tw_raw_socket_event&)>;

  // Loads and attaches the first backend that works; none working is not an
  // error (active() is then empty and report() says why).
  explicit RawSocketProbes(Callback on_event);
  ~RawSocketProbes();
  RawSocketProbes(const RawSocketProbes&) = delete;
  RawSocketProbes& operator=(const RawSocketProbes&) = delete;

  std::string active() const { return active_; }  // "" = none
  const std::vector<RawBackendReport>& report() const { return report_; }
  int fd() const;  // ring buffer epoll fd; -1 if none is active
  void consume();  // delivers queued records to the callback

  struct Counters {
    uint64_t seen = 0;  // raw sockets reported by the kernel side
    uint64_t lost = 0;  // records lost (ring buffer full)
  };
  Counters counters() const;

  // "fentry" | "kprobe" | "tracepoint" for enum tw_raw_backend; "" else.
  static const char* backend_name(int backend);
  // "packet" | "xdp" | the number.
  static std::string family_name(int family);
  // "raw" | "dgram" | ... | the number.
  static std::string type_name(int type);

 private:
  struct Deleter {
    void operator()(raw_socket_probes* s) const;
  };
  bool try_backend(int backend, const std::vector<const char*>& programs, std::string* why);
  static int on_ring(void* ctx, void* data, size_t size);

  Callback on_event_;
  std::unique_ptr<raw_socket_probes, Deleter> skel_;
  std::vector<bpf_link*> links_;
  ring_buffer* ring_ = nullptr;
  std::string active_;
  std::vector<RawBackendReport> report_;
};

}  // namespace tlswall::agent::attribution
