// tlswall_verifier_stats: loads every BPF program tlswalld embeds (the
// tc_classifier, owner_probes, raw_socket_probes and upgrade_redirect skeletons), one program
// at a time, through this kernel's verifier, and prints one JSON line per
// program:
//   {"object":"tc_classifier","program":"tw_egress","type":"sched_cls",
//    "loaded":true,"verified_insns":1234,"processed_insns":1234,"error":""}
// verified_insns comes from bpf_prog_info (kernels 5.16+; -1 before),
// processed_insns from the "processed N insns" line of the verifier's
// statistics log (every kernel since 5.2; -1 if absent). A program that
// does not load gets "loaded":false and the reason: libbpf's warnings
// (CO-RE relocation failures are reported there) and the tail of the
// verifier log. Nothing is attached or pinned: each program lives only
// as long as its load. Exit status: 0 if every program loaded, 1 if not,
// 2 on a usage error. Used by tests/kernel_matrix/ (the kernel matrix).
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "owner_probes.skel.h"
#include "raw_socket_probes.skel.h"
#include "tc_classifier.skel.h"
#include "upgrade_redirect.skel.h"

namespace {

struct ObjectDef {
  const char* name;
  const void* (*elf_bytes)(size_t*);
};

const ObjectDef kObjects[] = {
    {"tc_classifier", tc_classifier__elf_bytes},
    {"owner_probes", owner_probes__elf_bytes},
    {"raw_socket_probes", raw_socket_probes__elf_bytes},
    {"upgrade_redirect", upgrade_redirect__elf_bytes},
};

// libbpf's warnings during one load, kept for the error text.
std::string g_libbpf_warnings;

int capture_libbpf(enum libbpf_print_level level, const char* fmt, va_list ap) {
  if (level > LIBBPF_WARN) return 0;
  char buf[1024];
  const int n = std::vsnprintf(buf, sizeof(buf), fmt, ap);
  if (n > 0) g_libbpf_warnings += buf;
  return n;
}

struct ObjectDeleter {
  void operator()(bpf_object* o) const { bpf_object__close(o); }
};
using Object = std::unique_ptr<bpf_object, ObjectDeleter>;

std::string json_escape(const std::string& s) {
  std::string o;
  for (const unsigned char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += static_cast<char>(c);
    } else if (c == '\n') {
      o += "\\n";
    } else if (c < 0x20) {
      char b[8];
      std::snprintf(b, sizeof(b), "\\u%04x", c);
      o += b;
    } else {
      o += static_cast<char>(c);
    }
  }
  return o;
}

// The last `lines` non-empty lines of a verifier log.
std::string tail_lines(const std::string& log, size_t lines) {
  std::vector<std::string> v;
  size_t start = 0;
  while (start < log.size()) {
    size_t end = log.find('\n', start);
    if (end == std::string::npos) end = log.size();
    if (end > start) v.push_back(log.substr(start, end - start));
    start = end + 1;
  }
  std::string o;
  for (size_t i = v.size() > lines ? v.size() - lines : 0; i < v.size(); ++i) {
    o += (o.empty() ? "" : " | ") + v[i];
  }
  return o;
}

long long processed_insns(const std::string& log) {
  static const std::regex re("processed ([0-9]+) insns");
  std::smatch m;
  if (std::regex_search(log, m, re)) return std::stoll(m[1].str());
  return -1;
}

struct Result {
  std::string type;
  bool loaded = false;
  long long verified = -1;
  long long processed = -1;
  std::string error;
};

// Opens `def`'s object afresh and loads only `prog_name` with the given
// verifier log level into `log`.
Result load_one(const ObjectDef& def, const std::string& prog_name, uint32_t log_level,
                std::vector<char>& log) {
  Result r;
  size_t sz = 0;
  const void* bytes = def.elf_bytes(&sz);
  LIBBPF_OPTS(bpf_object_open_opts, oo, .object_name = def.name);
  Object obj(bpf_object__open_mem(bytes, sz, &oo));
  if (!obj) {
    r.error = std::string("open failed: ") + std::strerror(errno);
    return r;
  }
  bpf_program* target = nullptr;
  bpf_program* p = nullptr;
  bpf_object__for_each_program(p, obj.get()) {
    const bool wanted = prog_name == bpf_program__name(p);
    bpf_program__set_autoload(p, wanted);
    if (wanted) target = p;
  }
  if (!target) {
    r.error = "program not in the object";
    return r;
  }
  r.type = libbpf_bpf_prog_type_str(bpf_program__type(target));
  log.assign(log.size(), '\0');
  bpf_program__set_log_buf(target, log.data(), log.size());
  bpf_program__set_log_level(target, log_level);
  g_libbpf_warnings.clear();
  const int err = bpf_object__load(obj.get());
  const std::string text(log.data());
  r.processed = processed_insns(text);
  if (err) {
    r.error = std::string("load failed: ") + std::strerror(-err);
    const std::string warn = tail_lines(g_libbpf_warnings, 6);
    if (!warn.empty()) r.error += "; " + warn;
    const std::string vlog = tail_lines(text, 6);
    if (!vlog.empty()) r.error += "; verifier: " + vlog;
    return r;
  }
  r.loaded = true;
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(bpf_program__fd(target), &info, &len) == 0 &&
      len > offsetof(bpf_prog_info, verified_insns)) {
    r.verified = info.verified_insns;
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) {
    std::fprintf(stderr, "usage: %s (no arguments; root)\n", argv[0]);
    return 2;
  }
  libbpf_set_print(capture_libbpf);
  bool all_loaded = true;
  std::vector<char> stats_log(1 << 20);
  std::vector<char> full_log;
  for (const ObjectDef& def : kObjects) {
    // The program names, from one open of the object.
    std::vector<std::string> names;
    {
      size_t sz = 0;
      const void* bytes = def.elf_bytes(&sz);
      LIBBPF_OPTS(bpf_object_open_opts, oo, .object_name = def.name);
      Object obj(bpf_object__open_mem(bytes, sz, &oo));
      if (!obj) {
        std::printf(
            "{\"object\":\"%s\",\"program\":\"\",\"loaded\":false,\"error\":\"open: %s\"}\n",
            def.name, json_escape(std::strerror(errno)).c_str());
        all_loaded = false;
        continue;
      }
      bpf_program* p = nullptr;
      bpf_object__for_each_program(p, obj.get()) names.emplace_back(bpf_program__name(p));
    }
    for (const auto& n : names) {
      // Statistics only (BPF_LOG_STATS = 4): small and cheap.
      Result r = load_one(def, n, 4, stats_log);
      if (!r.loaded) {
        // Again with the full log (level 1), for the verifier's reason.
        if (full_log.empty()) full_log.resize(64u << 20);
        Result again = load_one(def, n, 1, full_log);
        if (!again.loaded) r.error = again.error;
        all_loaded = false;
      }
      std::printf(
          "{\"object\":\"%s\",\"program\":\"%s\",\"type\":\"%s\",\"loaded\":%s,"
          "\"verified_insns\":%lld,\"processed_insns\":%lld,\"error\":\"%s\"}\n",
          def.name, json_escape(n).c_str(), r.type.c_str(), r.loaded ? "true" : "false", r.verified,
          r.processed, json_escape(r.error).c_str());
      std::fflush(stdout);
    }
  }
  return all_loaded ? 0 : 1;
}
