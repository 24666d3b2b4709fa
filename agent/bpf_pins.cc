#include "agent/bpf_pins.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include <bpf/bpf.h>

namespace tlswall::agent {
namespace {

std::string errstr(int e) { return std::strerror(e); }

OwnedFd open_or_create_array(const std::string& path, uint32_t value_size, uint32_t entries,
                             const char* name, bool* created) {
  OwnedFd fd = open_pin(path);
  *created = false;
  std::vector<std::vector<uint8_t>> carried;  // an older, shorter record's elements
  if (fd.get() >= 0) {
    bpf_map_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd.get(), &info, &len) != 0 || info.type != BPF_MAP_TYPE_ARRAY ||
        info.key_size != sizeof(uint32_t) || info.max_entries != entries) {
      throw std::runtime_error(path + " is not a tlswall record this release understands");
    }
    if (info.value_size >= value_size) return fd;
    // Records are append-only: an older release's shorter record is copied
    // into a new one (new fields zero) that replaces it.
    for (uint32_t k = 0; k < entries; ++k) {
      std::vector<uint8_t> v(std::max(value_size, info.value_size), 0);
      bpf_map_lookup_elem(fd.get(), &k, v.data());
      v.resize(value_size);
      carried.push_back(std::move(v));
    }
  }
  LIBBPF_OPTS(bpf_map_create_opts, opts);
  const int f =
      bpf_map_create(BPF_MAP_TYPE_ARRAY, name, sizeof(uint32_t), value_size, entries, &opts);
  if (f < 0) throw std::runtime_error(std::string("cannot create ") + name + ": " + errstr(errno));
  OwnedFd out(f);
  for (uint32_t k = 0; k < carried.size(); ++k) {
    bpf_map_update_elem(out.get(), &k, carried[k].data(), BPF_ANY);
  }
  pin_replace(out.get(), path);
  *created = carried.empty();
  return out;
}

}  // namespace

std::string pin_path(const std::string& root, const std::string& table, uint32_t schema) {
  // bpffs refuses names with a dot, hence "_v".
  return root + "/" + table + "_v" + std::to_string(schema);
}

bool is_pin_name(const std::string& name) {
  const auto v = name.rfind("_v");
  return v != std::string::npos && v != 0 && v + 2 != name.size() &&
         name.find_first_not_of("0123456789", v + 2) == std::string::npos &&
         name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") == std::string::npos;
}

std::vector<std::pair<uint32_t, std::string>> find_table_pins(const std::string& root,
                                                              const std::string& table) {
  std::vector<std::pair<uint32_t, std::string>> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    const std::string prefix = table + "_v";
    if (name.rfind(prefix, 0) != 0) continue;
    const std::string num = name.substr(prefix.size());
    if (num.empty() || num.find_first_not_of("0123456789") != std::string::npos) continue;
    out.emplace_back(static_cast<uint32_t>(std::stoul(num)), e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

OwnedFd open_pin(const std::string& path) {
  const int fd = bpf_obj_get(path.c_str());
  if (fd >= 0) return OwnedFd(fd);
  if (errno == ENOENT) return OwnedFd();
  throw std::runtime_error("cannot open pinned " + path + ": " + errstr(errno));
}

void pin_replace(int fd, const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    throw std::runtime_error("cannot replace pin " + path + ": " + errstr(errno));
  }
  if (bpf_obj_pin(fd, path.c_str()) != 0) {
    throw std::runtime_error("cannot pin " + path + ": " + errstr(errno));
  }
}

PinnedRecords::PinnedRecords(const std::string& root) {
  bool created = false;
  meta_ = open_or_create_array(pin_path(root, "meta", TW_SCHEMA_META), sizeof(tw_meta), 1,
                               "tw_meta", &created);
  if (!created) {
    const tw_meta m = read_meta();
    if (m.magic == TW_META_MAGIC) previous_ = m;
  }
  ifaces_ = open_or_create_array(pin_path(root, "ifaces", 1), sizeof(tw_iface_rec), TW_MAX_IFACES,
                                 "tw_ifaces", &created);
}

tw_meta PinnedRecords::read_meta() const {
  tw_meta m{};
  uint32_t k = 0;
  if (bpf_map_lookup_elem(meta_.get(), &k, &m) != 0) {
    throw std::runtime_error("cannot read pinned metadata: " + errstr(errno));
  }
  return m;
}

void PinnedRecords::write_meta(const tw_meta& m) {
  uint32_t k = 0;
  if (bpf_map_update_elem(meta_.get(), &k, &m, BPF_ANY) != 0) {
    throw std::runtime_error("cannot write pinned metadata: " + errstr(errno));
  }
}

std::vector<tw_iface_rec> PinnedRecords::ifaces() const {
  std::vector<tw_iface_rec> out;
  for (uint32_t k = 0; k < TW_MAX_IFACES; ++k) {
    tw_iface_rec r{};
    if (bpf_map_lookup_elem(ifaces_.get(), &k, &r) == 0 && r.ifindex != 0) out.push_back(r);
  }
  return out;
}

void PinnedRecords::put_iface(const tw_iface_rec& rec) {
  int free_slot = -1;
  for (uint32_t k = 0; k < TW_MAX_IFACES; ++k) {
    tw_iface_rec r{};
    if (bpf_map_lookup_elem(ifaces_.get(), &k, &r) != 0) continue;
    if (r.ifindex == rec.ifindex) {
      free_slot = static_cast<int>(k);
      break;
    }
    if (r.ifindex == 0 && free_slot < 0) free_slot = static_cast<int>(k);
  }
  if (free_slot < 0) throw std::runtime_error("interface record table is full");
  const uint32_t k = static_cast<uint32_t>(free_slot);
  if (bpf_map_update_elem(ifaces_.get(), &k, &rec, BPF_ANY) != 0) {
    throw std::runtime_error("cannot record interface: " + errstr(errno));
  }
}

void PinnedRecords::remove_iface(uint32_t ifindex) {
  for (uint32_t k = 0; k < TW_MAX_IFACES; ++k) {
    tw_iface_rec r{};
    if (bpf_map_lookup_elem(ifaces_.get(), &k, &r) == 0 && r.ifindex == ifindex) {
      const tw_iface_rec empty{};
      bpf_map_update_elem(ifaces_.get(), &k, &empty, BPF_ANY);
    }
  }
}

std::vector<std::string> remove_all_pins(const std::string& root) {
  // Every pin the agent makes is "<name>_v<N>" (pin_path); bpffs's own
  // entries (maps.debug, ...) and anything else are left alone.
  std::vector<std::string> removed;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(root, ec)) {
    if (!is_pin_name(e.path().filename().string())) continue;
    if (::unlink(e.path().c_str()) == 0) removed.push_back(e.path().string());
  }
  ::rmdir(root.c_str());  // only if nothing else is in it
  return removed;
}

}  // namespace tlswall::agent
