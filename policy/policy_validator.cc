// Cross-file validation of a parsed policy: duplicate names, references,
// conflicting overlaps, expiry, reachability of exemptions and the kernel
// table limits. Checks that would only echo an earlier error (a rule whose
// own values were rejected, a file that did not parse) are skipped.
#include <algorithm>
#include <map>
#include <set>
#include <tuple>

#include "policy/policy_internal.h"

namespace tlswall::policy::internal {
namespace {

std::string quote(std::string_view s) { return "\"" + std::string(s) + "\""; }

// The prefixes of one boundary (or exemption), for fast intersection tests.
class PrefixSet {
 public:
  void add(const Cidr& c) { set(c.family).insert(prefix_key(c)); }

  // A CIDR in both `c` and this set (the narrower of an intersecting pair).
  std::optional<Cidr> intersection(const Cidr& c) const {
    const std::set<PrefixKey>& s = set(c.family);
    if (s.empty()) return std::nullopt;
    const PrefixKey k = prefix_key(c);
    for (int len = 0; len <= k.prefix_len; ++len) {
      if (s.count(truncate_prefix(k, static_cast<uint8_t>(len)))) return c;  // covers c
    }
    // Anything in the set inside c starts at or after c's network address
    // and at or before its last address.
    PrefixKey last = k;
    const unsigned bits = c.family == 4 ? 32 : 128;
    for (unsigned bit = k.prefix_len; bit < bits; ++bit) {
      last.addr[bit / 8] |= static_cast<uint8_t>(0x80 >> (bit % 8));
    }
    auto it = s.lower_bound(k);
    if (it != s.end() && it->addr <= last.addr) {
      Cidr inner;
      inner.family = c.family;
      std::copy(it->addr.begin(), it->addr.end(), inner.addr);
      inner.prefix_len = it->prefix_len;
      return inner;
    }
    return std::nullopt;
  }

  std::optional<Cidr> intersection(const PrefixSet& other) const {
    for (const int family : {4, 6}) {
      for (const PrefixKey& k : set(family)) {
        Cidr c;
        c.family = family;
        std::copy(k.addr.begin(), k.addr.end(), c.addr);
        c.prefix_len = k.prefix_len;
        if (auto r = other.intersection(c)) return r;
      }
    }
    return std::nullopt;
  }

 private:
  std::set<PrefixKey>& set(int family) { return family == 4 ? v4_ : v6_; }
  const std::set<PrefixKey>& set(int family) const { return family == 4 ? v4_ : v6_; }
  std::set<PrefixKey> v4_, v6_;
};

std::optional<PortRange> port_intersection(const std::vector<PortRange>& a,
                                           const std::vector<PortRange>& b) {
  for (const auto& x : a) {
    for (const auto& y : b) {
      if (ranges_intersect(x, y)) {
        return PortRange{std::max(x.lo, y.lo), std::min(x.hi, y.hi), {}};
      }
    }
  }
  return std::nullopt;
}

std::string settings(const Rule& r) {
  std::string s =
      std::string(mode_name(r.mode)) + " with min_tls " + tls_version_to_string(r.min_tls);
  if (r.preambles) s += " and preambles " + preambles_to_string(r.preambles);
  if (r.udp != TW_UDP_ALLOW) s += std::string(" and udp ") + udp_verdict_name(r.udp);
  return s;
}

class Validator {
 public:
  Validator(ParsedPolicy& parsed, std::chrono::system_clock::time_point now, Diagnostics& diags)
      : parsed_(parsed), now_(now), diags_(diags), complete_(!parsed.incomplete) {}

  Policy run() {
    Policy p;
    p.version = parsed_.version.value.value_or("");
    p.default_mode = parsed_.default_mode.value.value_or(Mode::kMonitor);
    p.default_min_tls = parsed_.default_min_tls.value.value_or(0x0303);
    check_version();
    check_duplicates();
    for (size_t i : rules_) {
      ParsedRule& pr = parsed_.rules[i];
      pr.rule.mode = pr.mode.value_or(p.default_mode);
      pr.rule.min_tls = pr.min_tls.value_or(p.default_min_tls);
    }
    check_references();
    check_overlaps();
    check_expiry();
    check_users();
    check_upgrades();
    if (complete_) {
      check_limits();
      check_reachability();
    }
    for (size_t i : boundaries_) p.boundaries.push_back(parsed_.boundaries[i].boundary);
    for (size_t i : rules_) p.rules.push_back(parsed_.rules[i].rule);
    for (size_t i : exemptions_) p.exemptions.push_back(parsed_.exemptions[i].exemption);
    p.upgrades = parsed_.upgrades;
    p.terminations = parsed_.terminations;
    return p;
  }

 private:
  SourceLocation policy_start() const {
    return SourceLocation{parsed_.files.empty() ? "" : parsed_.files.front(), 1, 1};
  }

  // Position of a location in load order, for "first"/"beyond the limit".
  std::tuple<size_t, uint32_t, uint32_t> order(const SourceLocation& w) const {
    const auto it = std::find(parsed_.files.begin(), parsed_.files.end(), w.file);
    return {static_cast<size_t>(it - parsed_.files.begin()), w.line, w.column};
  }

  void check_version() {
    if (complete_ && !parsed_.version.present) {
      diags_.error(policy_start(),
                   "the policy has no version; set version = \"...\" at the top level of one "
                   "file, e.g. version = \"2026-11-21.1\"");
    }
  }

  // Keeps the first of each name (in load order); later ones are errors and
  // take no further part in validation.
  void check_duplicates() {
    std::vector<size_t> b(parsed_.boundaries.size());
    for (size_t i = 0; i < b.size(); ++i) b[i] = i;
    std::stable_sort(b.begin(), b.end(), [&](size_t x, size_t y) {
      return order(parsed_.boundaries[x].boundary.where) <
             order(parsed_.boundaries[y].boundary.where);
    });
    std::map<std::string, size_t> seen;
    for (size_t i : b) {
      const Boundary& bd = parsed_.boundaries[i].boundary;
      auto [it, fresh] = seen.emplace(bd.name, i);
      if (!fresh) {
        diags_.error(bd.where, "duplicate boundary name " + quote(bd.name) +
                                   "; it is already defined at " +
                                   location_string(parsed_.boundaries[it->second].boundary.where));
        continue;
      }
      boundaries_.push_back(i);
      boundary_index_[bd.name] = i;
    }

    seen.clear();
    for (size_t i = 0; i < parsed_.rules.size(); ++i) {
      const ParsedRule& pr = parsed_.rules[i];
      if (!pr.rule.name.empty()) {
        auto [it, fresh] = seen.emplace(pr.rule.name, i);
        if (!fresh) {
          diags_.error(pr.name_where, "duplicate rule name " + quote(pr.rule.name) +
                                          "; it is already defined at " +
                                          location_string(parsed_.rules[it->second].name_where));
          continue;
        }
      }
      rules_.push_back(i);
    }

    seen.clear();
    for (size_t i = 0; i < parsed_.exemptions.size(); ++i) {
      const ParsedExemption& px = parsed_.exemptions[i];
      if (!px.exemption.name.empty()) {
        auto [it, fresh] = seen.emplace(px.exemption.name, i);
        if (!fresh) {
          diags_.error(px.name_where,
                       "duplicate exemption name " + quote(px.exemption.name) +
                           "; it is already defined at " +
                           location_string(parsed_.exemptions[it->second].name_where));
          continue;
        }
      }
      exemptions_.push_back(i);
    }
  }

  void check_references() {
    std::vector<std::string> names;
    for (size_t i : boundaries_) names.push_back(parsed_.boundaries[i].boundary.name);
    std::sort(names.begin(), names.end());
    for (size_t i : rules_) {
      ParsedRule& pr = parsed_.rules[i];
      if (pr.rule.boundary.empty()) continue;  // missing or not a string: reported already
      if (boundary_index_.count(pr.rule.boundary)) continue;
      pr.ok = false;
      if (!complete_) continue;  // it may be defined in the file that did not parse
      std::string msg =
          "rule " + quote(pr.rule.name) + " names unknown boundary " + quote(pr.rule.boundary);
      if (names.empty()) {
        msg += "; no boundaries are defined (add [boundaries." + pr.rule.boundary + "])";
      } else {
        const std::string near = closest_match(pr.rule.boundary, names);
        if (!near.empty()) msg += " (did you mean " + quote(near) + "?)";
        msg += "; defined boundaries: ";
        for (size_t n = 0; n < names.size() && n < 10; ++n) {
          msg += (n ? ", " : "") + names[n];
        }
        if (names.size() > 10) msg += ", ... (" + std::to_string(names.size()) + " in all)";
      }
      diags_.error(pr.boundary_where, msg);
    }
  }

  const PrefixSet& boundary_prefixes(const std::string& name) {
    auto it = prefix_sets_.find(name);
    if (it != prefix_sets_.end()) return it->second;
    PrefixSet& s = prefix_sets_[name];
    for (const Cidr& c : parsed_.boundaries[boundary_index_.at(name)].boundary.cidrs) s.add(c);
    return s;
  }

  void check_overlaps() {
    std::vector<size_t> usable;
    for (size_t i : rules_) {
      if (parsed_.rules[i].ok) usable.push_back(i);
    }
    for (size_t j = 0; j < usable.size(); ++j) {
      const ParsedRule& b = parsed_.rules[usable[j]];
      for (size_t i = 0; i < j; ++i) {
        const ParsedRule& a = parsed_.rules[usable[i]];
        if (a.rule.mode == b.rule.mode && a.rule.min_tls == b.rule.min_tls &&
            a.rule.preambles == b.rule.preambles && a.rule.udp == b.rule.udp) {
          continue;
        }
        // A rule with owner selectors takes precedence over one without for
        // the owners it selects: that overlap is the point, not a conflict.
        if (a.rule.owners.empty() != b.rule.owners.empty()) continue;
        const auto ports = port_intersection(a.rule.ports, b.rule.ports);
        if (!ports) continue;
        const auto cidr =
            boundary_prefixes(a.rule.boundary).intersection(boundary_prefixes(b.rule.boundary));
        if (!cidr) continue;
        diags_.error(
            b.rule.where,
            "rule " + quote(b.rule.name) + " conflicts with rule " + quote(a.rule.name) + " (at " +
                location_string(a.rule.where) + "): both cover " +
                cidr_to_string(cidr->family, cidr->addr, cidr->prefix_len) + " port " +
                port_range_string(ports->lo, ports->hi) + ", but " + quote(b.rule.name) + " is " +
                settings(b.rule) + " and " + quote(a.rule.name) + " is " + settings(a.rule) +
                "; give overlapping rules the same mode, min_tls, preambles and udp, or make "
                "their boundaries or ports disjoint");
      }
    }
  }

  // [[upgrades]] name a defined boundary, have unique names; [[terminations]]
  // have unique names and ports.
  void check_upgrades() {
    std::map<std::string, SourceLocation> names;
    for (const UpgradeRule& u : parsed_.upgrades) {
      auto [it, fresh] = names.emplace(u.name, u.where);
      if (!fresh) {
        diags_.error(u.where, "duplicate upgrade name " + quote(u.name) +
                                  "; it is already defined at " + location_string(it->second));
      }
      if (complete_ && !boundary_index_.count(u.boundary)) {
        std::vector<std::string> known;
        for (size_t i : boundaries_) known.push_back(parsed_.boundaries[i].boundary.name);
        const std::string near = closest_match(u.boundary, known);
        diags_.error(u.where, "upgrade " + quote(u.name) + " names unknown boundary " +
                                  quote(u.boundary) +
                                  (near.empty() ? "" : " (did you mean " + quote(near) + "?)"));
      }
    }
    std::map<std::string, SourceLocation> tnames;
    std::map<uint16_t, const Termination*> ports;
    for (const Termination& t : parsed_.terminations) {
      auto [it, fresh] = tnames.emplace(t.name, t.where);
      if (!fresh) {
        diags_.error(t.where, "duplicate termination name " + quote(t.name) +
                                  "; it is already defined at " + location_string(it->second));
      }
      auto [pit, pfresh] = ports.emplace(t.port, &t);
      if (!pfresh) {
        diags_.error(t.where, "termination " + quote(t.name) + " uses port " +
                                  std::to_string(t.port) + ", which termination " +
                                  quote(pit->second->name) + " (at " +
                                  location_string(pit->second->where) + ") already uses");
      }
    }
  }

  // A user name unknown here is not an error: one policy goes to many
  // hosts, and the user may exist only on some. It matches nothing here.
  void check_users() {
    const OwnerResolver host = host_owner_resolver("");
    auto check = [&](const OwnerSelector& owners, const std::string& what) {
      for (const UserRef& u : owners.users) {
        if (u.uid || host.uid(u.name)) continue;
        diags_.warning(u.where, "user " + quote(u.name) + " of " + what +
                                    " does not exist on this host; here the selector matches "
                                    "nothing");
      }
    };
    for (size_t i : rules_)
      check(parsed_.rules[i].rule.owners, "rule " + quote(parsed_.rules[i].rule.name));
    for (size_t i : exemptions_) {
      check(parsed_.exemptions[i].exemption.owners,
            "exemption " + quote(parsed_.exemptions[i].exemption.name));
    }
  }

  void check_expiry() {
    for (size_t i : exemptions_) {
      const ParsedExemption& px = parsed_.exemptions[i];
      if (!is_expired(px.exemption, now_)) continue;
      diags_.error(px.expires_where, "exemption " + quote(px.exemption.name) + " expired on " +
                                         date_to_string(*px.exemption.expires) +
                                         "; remove it or extend expires");
    }
  }

  void check_limits() {
    auto by_order = [&](std::vector<std::pair<SourceLocation, size_t>>& v) {
      std::stable_sort(v.begin(), v.end(), [&](const auto& x, const auto& y) {
        return order(x.first) < order(y.first);
      });
    };
    // Emits one error at the item whose cumulative count first exceeds `limit`.
    auto over = [&](std::vector<std::pair<SourceLocation, size_t>> items, size_t limit,
                    const std::string& what, const std::string& macro, const std::string& advice) {
      by_order(items);
      size_t total = 0;
      for (const auto& it : items) total += it.second;
      if (total <= limit) return;
      size_t sum = 0;
      for (const auto& it : items) {
        sum += it.second;
        if (sum > limit) {
          diags_.error(it.first, "too many " + what + ": the policy needs " +
                                     std::to_string(total) + ", the kernel tables hold at most " +
                                     std::to_string(limit) + " (" + macro + "); " + advice);
          return;
        }
      }
    };

    std::vector<std::pair<SourceLocation, size_t>> items;
    for (size_t i : boundaries_) items.push_back({parsed_.boundaries[i].boundary.where, 1});
    over(items, TW_MAX_BOUNDARIES, "boundaries", "TW_MAX_BOUNDARIES", "merge boundaries");

    std::vector<const Exemption*> active;
    for (size_t i : exemptions_) {
      if (!is_expired(parsed_.exemptions[i].exemption, now_)) {
        active.push_back(&parsed_.exemptions[i].exemption);
      }
    }
    items.clear();
    for (const Exemption* x : active) items.push_back({x->where, 1});
    over(items, TW_MAX_EXEMPTIONS, "exemptions", "TW_MAX_EXEMPTIONS", "merge exemptions");

    items.clear();
    for (size_t i : rules_) {
      if (!parsed_.rules[i].rule.owners.empty()) items.push_back({parsed_.rules[i].rule.where, 1});
    }
    for (const Exemption* x : active) {
      if (!x->owners.empty()) items.push_back({x->where, 1});
    }
    over(items, TW_MAX_OWNER_GROUPS, "rules and exemptions with owner selectors",
         "TW_MAX_OWNER_GROUPS", "merge selectors that share destinations");

    items.clear();
    for (size_t i : rules_) {
      items.push_back({parsed_.rules[i].rule.where, parsed_.rules[i].rule.ports.size()});
    }
    over(items, TW_MAX_RULE_ENTRIES, "rule entries (one per rule and port range)",
         "TW_MAX_RULE_ENTRIES", "merge port ranges or rules");

    items.clear();
    for (const Exemption* x : active) items.push_back({x->where, exempt_entry_count(*x)});
    over(items, TW_MAX_EXEMPT_ENTRIES, "exemption entries (one per exemption and port range)",
         "TW_MAX_EXEMPT_ENTRIES", "merge port ranges or exemptions");

    // Distinct prefixes per family, as the compiler will emit them.
    for (const int family : {4, 6}) {
      std::vector<std::pair<SourceLocation, PrefixKey>> cidrs;
      auto add = [&](const Cidr& c) {
        if (c.family == family) cidrs.push_back({c.where, prefix_key(c)});
      };
      for (size_t i : boundaries_) {
        for (const Cidr& c : parsed_.boundaries[i].boundary.cidrs) add(c);
      }
      for (const Exemption* x : active) {
        for (const Cidr& c : exemption_cidrs(*x)) add(c);
      }
      std::stable_sort(cidrs.begin(), cidrs.end(), [&](const auto& x, const auto& y) {
        return order(x.first) < order(y.first);
      });
      std::set<PrefixKey> distinct;
      items.clear();
      for (const auto& [where, key] : cidrs) {
        if (distinct.insert(key).second) items.push_back({where, 1});
      }
      over(items, TW_MAX_PREFIXES, "distinct IPv" + std::to_string(family) + " prefixes",
           "TW_MAX_PREFIXES", "merge adjacent CIDRs");
    }
  }

  // Warnings that make sense only for a policy without errors in its rules.
  void check_reachability() {
    if (rules_.empty()) {
      diags_.warning(policy_start(),
                     "the policy has no rules, so nothing is protected; add a [[rules]] entry");
      return;
    }
    for (size_t i : rules_) {
      if (!parsed_.rules[i].ok) return;
    }
    for (size_t i : exemptions_) {
      const ParsedExemption& px = parsed_.exemptions[i];
      if (!px.ok) continue;
      const Exemption& x = px.exemption;
      PrefixSet xs;
      for (const Cidr& c : exemption_cidrs(x)) xs.add(c);
      bool reachable = false;
      for (size_t r : rules_) {
        const Rule& rule = parsed_.rules[r].rule;
        if (!x.ports.empty() && !port_intersection(x.ports, rule.ports)) continue;
        if (!xs.intersection(boundary_prefixes(rule.boundary))) continue;
        reachable = true;
        break;
      }
      if (!reachable) {
        diags_.warning(x.where, "exemption " + quote(x.name) +
                                    " can never apply: no rule covers any of its destinations "
                                    "and ports; fix its cidrs/ports or remove it");
      }
    }
  }

  ParsedPolicy& parsed_;
  const std::chrono::system_clock::time_point now_;
  Diagnostics& diags_;
  const bool complete_;
  std::vector<size_t> boundaries_, rules_, exemptions_;  // kept (not duplicate) indices
  std::map<std::string, size_t> boundary_index_;
  std::map<std::string, PrefixSet> prefix_sets_;
};

}  // namespace

Policy validate_policy(ParsedPolicy&& parsed, std::chrono::system_clock::time_point now,
                       Diagnostics& diags) {
  ParsedPolicy p = std::move(parsed);
  return Validator(p, now, diags).run();
}

}  // namespace tlswall::policy::internal
