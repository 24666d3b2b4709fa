// Compiled rows -> the classifier's loop-free lookup tables.
#include <algorithm>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "policy/policy.h"

namespace tlswall::policy {
namespace {

bool has_bit(const __u64 mask[TW_MASK_WORDS], uint32_t bit) {
  return (mask[(bit >> 6) % TW_MASK_WORDS] >> (bit & 63)) & 1;
}

using MaskKey = std::pair<std::vector<__u64>, std::vector<__u64>>;

MaskKey key_of(const tw_dest_class& c) {
  return {std::vector<__u64>(c.boundary_mask, c.boundary_mask + TW_MASK_WORDS),
          std::vector<__u64>(c.exempt_mask, c.exempt_mask + TW_MASK_WORDS)};
}

bool same_verdict(const tw_port_verdict& a, const tw_port_verdict& b) {
  return std::memcmp(&a, &b, sizeof(a)) == 0;
}

void check(size_t n, size_t limit, const char* what, const char* name) {
  if (n > limit) {
    throw std::runtime_error(std::string("policy needs ") + std::to_string(n) + " " + what +
                             ", more than the kernel table holds (" + name + " = " +
                             std::to_string(limit) + ")");
  }
}

bool covers(uint32_t port, uint16_t lo, uint16_t hi) { return port >= lo && port <= hi; }

// The port rows of one destination class. A segment of ports gets a row if
// some rule covers it: the first rule without owner selectors decides for
// every owner (has_rule), and the rules and exemptions with selectors that
// cover it are listed as owner groups.
void add_class_ports(uint16_t class_id, const tw_dest_class& cls, const CompiledPolicy& c,
                     std::vector<KernelPortRow>& out) {
  std::vector<const tw_rule_entry*> rules;
  std::vector<const tw_exempt_entry*> exempts;
  for (const auto& r : c.rules) {
    if (has_bit(cls.boundary_mask, r.boundary)) rules.push_back(&r);
  }
  if (rules.empty()) return;
  for (const auto& x : c.exempts) {
    if (has_bit(cls.exempt_mask, x.exemption)) exempts.push_back(&x);
  }
  // Every port where some row starts or ends begins a segment whose ports
  // all get the same decision.
  std::vector<uint32_t> cuts = {0, 65536};
  for (const auto* r : rules) cuts.insert(cuts.end(), {r->port_lo, uint32_t(r->port_hi) + 1});
  for (const auto* x : exempts) cuts.insert(cuts.end(), {x->port_lo, uint32_t(x->port_hi) + 1});
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());

  struct Segment {
    uint32_t lo, hi;
    tw_port_verdict v;
  };
  std::vector<Segment> segs;
  for (size_t i = 0; i + 1 < cuts.size(); ++i) {
    const uint32_t port = cuts[i];
    tw_port_verdict v{};
    bool any_rule = false;
    for (const auto* r : rules) {
      if (!covers(port, r->port_lo, r->port_hi)) continue;
      any_rule = true;
      if (r->owner_group != TW_NO_OWNER_GROUP) {
        v.owner_groups |= uint64_t{1} << (r->owner_group - 1);
      } else if (!v.has_rule) {
        v.has_rule = 1;
        v.rule_id = r->rule_id;
        v.boundary = r->boundary;
        v.min_tls = r->min_tls;
        v.mode = r->mode;
        v.preambles = r->preambles;
        v.udp = r->udp;
      }
    }
    if (!any_rule) continue;
    for (const auto* x : exempts) {
      if (!covers(port, x->port_lo, x->port_hi)) continue;
      if (x->owner_group != TW_NO_OWNER_GROUP) {
        v.owner_groups |= uint64_t{1} << (x->owner_group - 1);
      } else if (!v.exempt) {
        v.exempt = 1;
        v.exemption = x->exemption;
      }
    }
    const uint32_t hi = cuts[i + 1] - 1;
    if (!segs.empty() && segs.back().hi + 1 == port && same_verdict(segs.back().v, v)) {
      segs.back().hi = hi;
    } else {
      segs.push_back({port, hi, v});
    }
  }
  for (const auto& s : segs) {
    for (const auto& [first, len] :
         port_range_prefixes(static_cast<uint16_t>(s.lo), static_cast<uint16_t>(s.hi))) {
      out.push_back({class_id, first, len, s.v});
    }
  }
}

std::string group_name(const CompiledPolicy& c, const OwnerGroup& g) {
  if (g.is_exemption) {
    return "exemption \"" +
           (g.index < c.exemption_names.size() ? c.exemption_names[g.index] : "?") + "\"";
  }
  return "rule \"" + (g.index < c.rule_names.size() ? c.rule_names[g.index] : "?") + "\"";
}

}  // namespace

std::vector<std::pair<uint16_t, uint8_t>> port_range_prefixes(uint16_t lo, uint16_t hi) {
  std::vector<std::pair<uint16_t, uint8_t>> out;
  uint32_t cur = lo;
  const uint32_t end = hi;
  while (cur <= end) {
    // The largest aligned block starting at cur that stays within end.
    uint32_t size = cur == 0 ? 65536 : (cur & (~cur + 1));
    while (cur + size - 1 > end) size >>= 1;
    uint8_t bits = 0;
    while ((1u << bits) < size) ++bits;
    out.emplace_back(static_cast<uint16_t>(cur), static_cast<uint8_t>(16 - bits));
    cur += size;
  }
  return out;
}

std::string OwnerSelector::describe() const {
  if (empty()) return "any owner";
  std::string out;
  auto list = [&](const char* key, const std::vector<std::string>& items) {
    if (items.empty()) return;
    if (!out.empty()) out += " ";
    out += std::string(key) + "=[";
    for (size_t i = 0; i < items.size(); ++i) out += (i ? "," : "") + items[i];
    out += "]";
  };
  std::vector<std::string> users;
  for (const auto& u : this->users) users.push_back(u.text());
  list("cgroups", cgroups);
  list("users", users);
  list("comms", comms);
  list("executables", executables);
  return out;
}

uint32_t cgroup_level(const std::string& path) {
  uint32_t n = 0;
  for (size_t i = 0; i < path.size(); ++i) {
    if (path[i] == '/' && i + 1 < path.size()) ++n;
  }
  return n;
}

bool KernelOwnerTables::operator==(const KernelOwnerTables& o) const {
  return groups.size() == o.groups.size() &&
         std::equal(groups.begin(), groups.end(), o.groups.begin(),
                    [](const tw_owner_group& a, const tw_owner_group& b) {
                      return std::memcmp(&a, &b, sizeof(a)) == 0;
                    }) &&
         uids == o.uids && comms == o.comms && cgroups == o.cgroups &&
         std::memcmp(&meta, &o.meta, sizeof(meta)) == 0;
}

KernelOwnerTables build_owner_tables(const CompiledPolicy& c, const OwnerResolver& resolver) {
  KernelOwnerTables t;
  check(c.owner_groups.size(), TW_MAX_OWNER_GROUPS, "rules and exemptions with owner selectors",
        "TW_MAX_OWNER_GROUPS");
  for (size_t bit = 0; bit < c.owner_groups.size(); ++bit) {
    const OwnerGroup& g = c.owner_groups[bit];
    const uint64_t mask = uint64_t{1} << bit;
    tw_owner_group k{};
    if (g.is_exemption) {
      k.is_exemption = 1;
      k.exemption = g.index;
      t.meta.exempt_groups |= mask;
    } else {
      k.rule_id = g.index;
      k.boundary = g.boundary;
      k.min_tls = g.min_tls;
      k.mode = g.mode;
      k.preambles = g.preambles;
      k.udp = g.udp;
    }
    t.groups.push_back(k);
    t.meta.groups |= mask;
    if (g.owners.users.empty()) t.meta.uid_free |= mask;
    if (g.owners.comms.empty()) t.meta.comm_free |= mask;
    if (g.owners.cgroups.empty()) t.meta.cgroup_free |= mask;
    for (const UserRef& u : g.owners.users) {
      std::optional<uint32_t> uid = u.uid;
      if (!uid && resolver.uid) uid = resolver.uid(u.name);
      if (!uid) {
        t.unresolved.push_back("user \"" + u.name + "\" of " + group_name(c, g) +
                               " is unknown on this host: it matches nothing here");
        continue;
      }
      t.uids[*uid] |= mask;
    }
    for (const std::string& comm : g.owners.comms) t.comms[comm] |= mask;
    for (const std::string& path : g.owners.cgroups) {
      std::optional<uint64_t> id;
      if (resolver.cgroup_id) id = resolver.cgroup_id(path);
      if (!id) {
        t.unresolved.push_back("cgroup " + path + " of " + group_name(c, g) +
                               " does not exist (yet): it matches nothing until it appears");
        continue;
      }
      t.cgroups[*id] |= mask;
      t.meta.cgroup_levels |= 1u << cgroup_level(path);
    }
  }
  check(t.uids.size(), TW_MAX_OWNER_KEYS, "users in owner selectors", "TW_MAX_OWNER_KEYS");
  check(t.comms.size(), TW_MAX_OWNER_KEYS, "comms in owner selectors", "TW_MAX_OWNER_KEYS");
  check(t.cgroups.size(), TW_MAX_OWNER_KEYS, "cgroups in owner selectors", "TW_MAX_OWNER_KEYS");
  return t;
}

KernelTables build_kernel_tables(const CompiledPolicy& c, const OwnerResolver& resolver) {
  KernelTables t;
  t.owners = build_owner_tables(c, resolver);
  std::map<MaskKey, uint16_t> class_ids;
  std::vector<const tw_dest_class*> classes;
  auto class_of = [&](const tw_dest_class& cls) -> tw_dest_value {
    auto [it, fresh] = class_ids.emplace(key_of(cls), static_cast<uint16_t>(classes.size()));
    if (fresh) {
      check(classes.size() + 1, TW_MAX_CLASSES, "destination classes", "TW_MAX_CLASSES");
      classes.push_back(&cls);
    }
    tw_dest_value v{};
    v.class_id = it->second;
    for (const auto& r : c.rules) {
      if (!has_bit(cls.boundary_mask, r.boundary)) continue;
      v.flags |= TW_DEST_ANY_RULE;
      // Fragments carry no owner to match: only rules for every owner
      // drop them.
      if (r.mode == TW_MODE_ENFORCE && r.owner_group == TW_NO_OWNER_GROUP) {
        v.flags |= TW_DEST_ANY_ENFORCE;
      }
      // UDP fragments meet only rules that restrict UDP (QUIC is never
      // fragmented: RFC 9000 14); the rest pass as before the udp key.
      if (r.udp != TW_UDP_ALLOW) {
        v.flags |= TW_DEST_ANY_UDP_RULE;
        if (r.mode == TW_MODE_ENFORCE && r.owner_group == TW_NO_OWNER_GROUP) {
          v.flags |= TW_DEST_ANY_UDP_ENFORCE;
        }
      }
    }
    return v;
  };
  check(c.v4.size(), TW_MAX_PREFIXES, "IPv4 prefixes", "TW_MAX_PREFIXES");
  check(c.v6.size(), TW_MAX_PREFIXES, "IPv6 prefixes", "TW_MAX_PREFIXES");
  for (const auto& r : c.v4) {
    KernelDestRow4 k{};
    std::memcpy(k.addr, r.addr, 4);
    k.prefix_len = r.prefix_len;
    k.value = class_of(r.cls);
    t.v4.push_back(k);
  }
  for (const auto& r : c.v6) {
    KernelDestRow6 k{};
    std::memcpy(k.addr, r.addr, 16);
    k.prefix_len = r.prefix_len;
    k.value = class_of(r.cls);
    t.v6.push_back(k);
  }
  for (size_t id = 0; id < classes.size(); ++id) {
    add_class_ports(static_cast<uint16_t>(id), *classes[id], c, t.ports);
  }
  check(t.ports.size(), TW_MAX_PORT_ROWS, "(class, port) rows", "TW_MAX_PORT_ROWS");
  t.classes = classes.size();
  return t;
}

}  // namespace tlswall::policy
