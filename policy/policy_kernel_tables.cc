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

// The port rows of one destination class.
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
    const tw_rule_entry* rule = nullptr;
    for (const auto* r : rules) {
      if (port >= r->port_lo && port <= r->port_hi) {
        rule = r;
        break;
      }
    }
    if (!rule) continue;
    tw_port_verdict v{};
    v.rule_id = rule->rule_id;
    v.boundary = rule->boundary;
    v.min_tls = rule->min_tls;
    v.mode = rule->mode;
    for (const auto* x : exempts) {
      if (port >= x->port_lo && port <= x->port_hi) {
        v.exempt = 1;
        v.exemption = x->exemption;
        break;
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

KernelTables build_kernel_tables(const CompiledPolicy& c) {
  KernelTables t;
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
      if (r.mode == TW_MODE_ENFORCE) v.flags |= TW_DEST_ANY_ENFORCE;
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
