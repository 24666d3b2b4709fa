// Validated Policy -> flat tables for the BPF classifier (tlswall_abi.h).
//
// Index spaces (boundary, rule_id, exemption) are positions in name order,
// so the same policy always compiles to the same numbers. LPM rows are
// emitted for every distinct prefix with every covering boundary/exemption
// folded in, which makes the kernel's longest-prefix match exact.
#include <algorithm>
#include <map>
#include <stdexcept>

#include "policy/policy_internal.h"

namespace tlswall::policy {
namespace {

using internal::PrefixKey;

void set_bit(__u64 mask[TW_MASK_WORDS], size_t bit) {
  mask[bit / 64] |= static_cast<__u64>(1) << (bit % 64);
}

void fold(tw_dest_class& into, const tw_dest_class& from) {
  for (int w = 0; w < TW_MASK_WORDS; ++w) {
    into.boundary_mask[w] |= from.boundary_mask[w];
    into.exempt_mask[w] |= from.exempt_mask[w];
  }
}

void check_limit(size_t count, size_t limit, const std::string& what, const char* macro) {
  if (count > limit) {
    throw std::runtime_error("policy needs " + std::to_string(count) + " " + what +
                             ", the kernel tables hold at most " + std::to_string(limit) + " (" +
                             macro + ")");
  }
}

template <typename T>
std::vector<const T*> sorted_by_name(const std::vector<T>& items, const char* what) {
  std::vector<const T*> out;
  for (const T& t : items) out.push_back(&t);
  std::sort(out.begin(), out.end(), [](const T* a, const T* b) { return a->name < b->name; });
  for (size_t i = 1; i < out.size(); ++i) {
    if (out[i]->name == out[i - 1]->name) {
      throw std::runtime_error(std::string("duplicate ") + what + " name \"" + out[i]->name + "\"");
    }
  }
  return out;
}

}  // namespace

CompiledPolicy compile_policy(const Policy& policy, std::chrono::system_clock::time_point now) {
  CompiledPolicy out;
  out.version = policy.version;
  out.hash = policy.hash;

  const auto boundaries = sorted_by_name(policy.boundaries, "boundary");
  check_limit(boundaries.size(), TW_MAX_BOUNDARIES, "boundaries", "TW_MAX_BOUNDARIES");
  std::map<std::string, size_t> boundary_index;
  for (size_t i = 0; i < boundaries.size(); ++i) {
    out.boundary_names.push_back(boundaries[i]->name);
    boundary_index[boundaries[i]->name] = i;
  }

  const auto rules = sorted_by_name(policy.rules, "rule");
  for (const Rule* r : rules) {
    out.rule_names.push_back(r->name);
    out.rule_modes.push_back(mode_name(r->mode));
  }

  std::vector<Exemption> active;
  for (const Exemption& x : policy.exemptions) {
    if (!internal::is_expired(x, now)) active.push_back(x);
  }
  const auto exemptions = sorted_by_name(active, "exemption");
  check_limit(exemptions.size(), TW_MAX_EXEMPTIONS, "exemptions", "TW_MAX_EXEMPTIONS");
  for (const Exemption* x : exemptions) {
    out.exemption_names.push_back(x->name);
    if (x->expires) {
      const auto end = internal::end_of_day(*x->expires);
      if (!out.next_expiry || end < *out.next_expiry) out.next_expiry = end;
    }
  }

  // LPM rows: what each distinct prefix is directly named by, then folded
  // with every shorter prefix that covers it.
  std::map<PrefixKey, tw_dest_class> direct[2];  // [0] IPv4, [1] IPv6
  auto add = [&](const Cidr& c, bool is_boundary, size_t index) {
    tw_dest_class& cls = direct[c.family == 4 ? 0 : 1][internal::prefix_key(c)];
    set_bit(is_boundary ? cls.boundary_mask : cls.exempt_mask, index);
  };
  for (size_t i = 0; i < boundaries.size(); ++i) {
    for (const Cidr& c : boundaries[i]->cidrs) add(c, true, i);
  }
  for (size_t i = 0; i < exemptions.size(); ++i) {
    for (const Cidr& c : internal::exemption_cidrs(*exemptions[i])) add(c, false, i);
  }
  check_limit(direct[0].size(), TW_MAX_PREFIXES, "distinct IPv4 prefixes", "TW_MAX_PREFIXES");
  check_limit(direct[1].size(), TW_MAX_PREFIXES, "distinct IPv6 prefixes", "TW_MAX_PREFIXES");
  for (int f = 0; f < 2; ++f) {
    for (const auto& [key, own] : direct[f]) {
      tw_dest_class cls = own;
      for (int len = 0; len < key.prefix_len; ++len) {
        auto it = direct[f].find(internal::truncate_prefix(key, static_cast<uint8_t>(len)));
        if (it != direct[f].end()) fold(cls, it->second);
      }
      if (f == 0) {
        LpmRow4 row{};
        std::copy(key.addr.begin(), key.addr.begin() + 4, row.addr);
        row.prefix_len = key.prefix_len;
        row.cls = cls;
        out.v4.push_back(row);
      } else {
        LpmRow6 row{};
        std::copy(key.addr.begin(), key.addr.end(), row.addr);
        row.prefix_len = key.prefix_len;
        row.cls = cls;
        out.v6.push_back(row);
      }
    }
  }

  // Owner groups: exemptions first, then rules enforce-first in name order
  // (the kernel takes the lowest matching bit).
  std::vector<uint8_t> exemption_group(exemptions.size(), TW_NO_OWNER_GROUP);
  std::vector<uint8_t> rule_group(rules.size(), TW_NO_OWNER_GROUP);
  auto add_group = [&](OwnerGroup g) {
    check_limit(out.owner_groups.size() + 1, TW_MAX_OWNER_GROUPS,
                "rules and exemptions with owner selectors", "TW_MAX_OWNER_GROUPS");
    out.owner_groups.push_back(std::move(g));
    return static_cast<uint8_t>(out.owner_groups.size());  // bit + 1
  };
  for (size_t i = 0; i < exemptions.size(); ++i) {
    if (exemptions[i]->owners.empty()) continue;
    OwnerGroup g;
    g.is_exemption = true;
    g.index = static_cast<uint16_t>(i);
    g.owners = exemptions[i]->owners;
    exemption_group[i] = add_group(std::move(g));
  }
  for (const Mode pass : {Mode::kEnforce, Mode::kMonitor}) {
    for (size_t id = 0; id < rules.size(); ++id) {
      const Rule& r = *rules[id];
      if (r.mode != pass || r.owners.empty()) continue;
      auto b = boundary_index.find(r.boundary);
      OwnerGroup g;
      g.index = static_cast<uint16_t>(id);
      g.boundary = b == boundary_index.end() ? 0 : static_cast<uint16_t>(b->second);
      g.min_tls = r.min_tls;
      g.mode = r.mode == Mode::kEnforce ? TW_MODE_ENFORCE : TW_MODE_MONITOR;
      g.preambles = r.preambles;
      g.udp = r.udp;
      g.owners = r.owners;
      rule_group[id] = add_group(std::move(g));
    }
  }

  // Rule rows, enforce rules first: the classifier notes "some enforce rule
  // covers this address" only for rows it scans before the first port match,
  // so enforce rows must not hide behind monitor rows. The validator rejects
  // overlapping rows that disagree, so the order never changes a decision.
  for (const Mode pass : {Mode::kEnforce, Mode::kMonitor}) {
    for (size_t id = 0; id < rules.size(); ++id) {
      const Rule& r = *rules[id];
      if (r.mode != pass) continue;
      auto b = boundary_index.find(r.boundary);
      if (b == boundary_index.end()) {
        throw std::runtime_error("rule \"" + r.name + "\" names unknown boundary \"" + r.boundary +
                                 "\"");
      }
      for (const PortRange& p : r.ports) {
        tw_rule_entry e{};
        e.boundary = static_cast<__u16>(b->second);
        e.port_lo = p.lo;
        e.port_hi = p.hi;
        e.rule_id = static_cast<__u16>(id);
        e.min_tls = r.min_tls;
        e.mode = r.mode == Mode::kEnforce ? TW_MODE_ENFORCE : TW_MODE_MONITOR;
        e.preambles = r.preambles;
        e.udp = r.udp;
        e.owner_group = rule_group[id];
        out.rules.push_back(e);
      }
    }
  }
  check_limit(out.rules.size(), TW_MAX_RULE_ENTRIES, "rule entries", "TW_MAX_RULE_ENTRIES");

  for (size_t i = 0; i < exemptions.size(); ++i) {
    std::vector<PortRange> ports = exemptions[i]->ports;
    if (ports.empty()) ports.push_back({1, 65535, {}});
    for (const PortRange& p : ports) {
      tw_exempt_entry e{};
      e.exemption = static_cast<__u16>(i);
      e.port_lo = p.lo;
      e.port_hi = p.hi;
      e.owner_group = exemption_group[i];
      out.exempts.push_back(e);
    }
  }
  check_limit(out.exempts.size(), TW_MAX_EXEMPT_ENTRIES, "exemption entries",
              "TW_MAX_EXEMPT_ENTRIES");
  return out;
}

}  // namespace tlswall::policy
