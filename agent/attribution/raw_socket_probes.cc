#include "agent/attribution/raw_socket_probes.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "agent/bpf_classifier.h"  // read_percpu_u64_array
#include "raw_socket_probes.skel.h"

namespace tlswall::agent::attribution {
namespace {

struct Backend {
  int id;
  const char* name;
  std::vector<const char*> programs;
};

const std::vector<Backend>& backends() {
  static const std::vector<Backend> b = {
      {TW_RAW_BACKEND_FENTRY, "fentry", {"raw_socket_fentry"}},
      {TW_RAW_BACKEND_KPROBE, "kprobe", {"raw_socket_kprobe"}},
      {TW_RAW_BACKEND_TRACEPOINT, "tracepoint", {"raw_socket_enter", "raw_socket_exit"}},
  };
  return b;
}

std::string err_text(int e) {
  e = e < 0 ? -e : e;
  return std::string(strerrorname_np(e) ? strerrorname_np(e) : "error") + " (" + std::strerror(e) +
         ")";
}

}  // namespace

void RawSocketProbes::Deleter::operator()(raw_socket_probes* s) const {
  raw_socket_probes__destroy(s);
}

RawSocketProbes::RawSocketProbes(Callback on_event) : on_event_(std::move(on_event)) {
  for (const auto& b : backends()) {
    RawBackendReport r{b.name, "unavailable", ""};
    if (!active_.empty()) {
      r.state = "not-tried";
      r.why = active_ + " is active";
    } else if (try_backend(b.id, b.programs, &r.why)) {
      active_ = b.name;
      r.state = "active";
      r.why = "attached";
    }
    report_.push_back(std::move(r));
  }
}

RawSocketProbes::~RawSocketProbes() {
  if (ring_) ring_buffer__free(ring_);
  for (auto* l : links_) bpf_link__destroy(l);
}

bool RawSocketProbes::try_backend(int id, const std::vector<const char*>& programs,
                                  std::string* why) {
  std::unique_ptr<raw_socket_probes, Deleter> skel(raw_socket_probes__open());
  if (!skel) {
    *why = "open failed: " + err_text(errno);
    return false;
  }
  bpf_program* prog;
  bpf_object__for_each_program(prog, skel->obj) {
    bool mine = false;
    for (const char* n : programs) mine |= std::strcmp(bpf_program__name(prog), n) == 0;
    bpf_program__set_autoload(prog, mine);
  }
  int err = raw_socket_probes__load(skel.get());
  if (err) {
    *why = "load failed: " + err_text(err);
    return false;
  }
  std::vector<bpf_link*> links;
  for (const char* n : programs) {
    bpf_link* l = bpf_program__attach(bpf_object__find_program_by_name(skel->obj, n));
    if (!l) {
      err = -errno;
      for (auto* x : links) bpf_link__destroy(x);
      *why = std::string("attach failed: ") + err_text(err);
      if (id == TW_RAW_BACKEND_KPROBE && err == -ENOENT) *why += " (kernel without kprobes?)";
      return false;
    }
    links.push_back(l);
  }
  ring_buffer* ring = ring_buffer__new(bpf_map__fd(skel->maps.raw_socket_events),
                                       &RawSocketProbes::on_ring, this, nullptr);
  if (!ring) {
    err = -errno;
    for (auto* x : links) bpf_link__destroy(x);
    *why = "ring buffer: " + err_text(err);
    return false;
  }
  skel_ = std::move(skel);
  links_ = std::move(links);
  ring_ = ring;
  return true;
}

int RawSocketProbes::fd() const { return ring_ ? ring_buffer__epoll_fd(ring_) : -1; }

void RawSocketProbes::consume() {
  if (ring_) ring_buffer__consume(ring_);
}

int RawSocketProbes::on_ring(void* ctx, void* data, size_t size) {
  auto* self = static_cast<RawSocketProbes*>(ctx);
  tw_raw_socket_event e{};
  if (size < sizeof(e)) return 0;  // a layout this build does not know
  std::memcpy(&e, data, sizeof(e));
  if (e.version != TW_RAW_SOCKET_EVENT_VERSION) return 0;
  self->on_event_(e);
  return 0;
}

RawSocketProbes::Counters RawSocketProbes::counters() const {
  Counters c;
  if (!skel_) return c;
  uint64_t v[TW_RAW_CNT_MAX] = {};
  read_percpu_u64_array(bpf_map__fd(skel_->maps.raw_socket_counters), v, TW_RAW_CNT_MAX);
  c.seen = v[TW_RAW_CNT_SEEN];
  c.lost = v[TW_RAW_CNT_LOST];
  return c;
}

const char* RawSocketProbes::backend_name(int backend) {
  for (const auto& b : backends()) {
    if (b.id == backend) return b.name;
  }
  return "";
}

std::string RawSocketProbes::family_name(int family) {
  switch (family) {
    case TW_AF_PACKET:
      return "packet";
    case TW_AF_XDP:
      return "xdp";
    default:
      return std::to_string(family);
  }
}

std::string RawSocketProbes::type_name(int type) {
  switch (type) {
    case 1:
      return "stream";
    case 2:
      return "dgram";
    case 3:
      return "raw";
    case 5:
      return "seqpacket";
    case 10:
      return "packet";
    default:
      return std::to_string(type);
  }
}

}  // namespace tlswall::agent::attribution
