// The pin root: where the classifier's programs, tables and records live in
// bpffs so the kernel side outlives the daemon. Names carry the table's
// schema version ("flows_v1"). Also the two user-space-only records: the
// metadata (who owns the pins, gap accounting) and the interface list.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

extern "C" {
#include "abi/tlswall_abi.h"
}

#include "agent/owned_fd.h"

namespace tlswall::agent {

// "<root>/<table>_v<schema>".
std::string pin_path(const std::string& root, const std::string& table, uint32_t schema);

// Whether `name` (no directory) is a name pin_path() makes: "<name>_v<N>"
// of a-z, 0-9 and '_'. bpffs's own entries (maps.debug, ...) are not.
bool is_pin_name(const std::string& name);

// Pins of `table` present under root, any schema: (schema, path), ascending.
std::vector<std::pair<uint32_t, std::string>> find_table_pins(const std::string& root,
                                                              const std::string& table);

// Opens a pinned object; an empty OwnedFd if nothing is pinned there.
// Throws if something is there but cannot be opened.
OwnedFd open_pin(const std::string& path);

// Pins fd at path, replacing whatever was pinned there. Throws.
void pin_replace(int fd, const std::string& path);

// The metadata and interface records, created on first use.
class PinnedRecords {
 public:
  // Opens (or creates and pins) "meta_v1" and "ifaces_v1" under root.
  explicit PinnedRecords(const std::string& root);

  // The record as the previous owner left it; nullopt on first start.
  const std::optional<tw_meta>& previous() const { return previous_; }
  tw_meta read_meta() const;
  void write_meta(const tw_meta& m);

  std::vector<tw_iface_rec> ifaces() const;
  void put_iface(const tw_iface_rec& rec);  // by ifindex; throws if full
  void remove_iface(uint32_t ifindex);

 private:
  OwnedFd meta_;
  OwnedFd ifaces_;
  std::optional<tw_meta> previous_;
};

// Removes every tlswall pin under root (every "<name>_v<N>": tables of any
// schema, programs, records) and the directory itself if then empty.
// Returns what it removed.
std::vector<std::string> remove_all_pins(const std::string& root);

}  // namespace tlswall::agent
