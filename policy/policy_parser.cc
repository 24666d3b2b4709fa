// TOML text of one policy file -> ParsedPolicy entries, with a diagnostic
// (file:line:col of the offending key or value) for every problem found.
// Checks here are local to one value or one table; cross-file checks live in
// policy_validator.cc.
#include <arpa/inet.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cctype>

#include "policy/policy_internal.h"

namespace tlswall::policy::internal {
namespace {

const std::vector<std::string> kTopKeys = {"version",    "default_mode", "default_min_tls",
                                           "boundaries", "rules",        "exemptions",
                                           "upgrades",   "terminations"};
const std::vector<std::string> kUpgradeKeys = {
    "name",    "boundary", "ports",       "server_name", "server_names",
    "ca_file", "alpn",     "client_cert", "client_key",  "min_tls",
    "cgroups", "users",    "comms",       "executables", "preamble"};
const std::vector<std::string> kTerminationKeys = {"name", "port",      "backend", "cert",
                                                   "key",  "client_ca", "mode"};

// A name a server certificate can be verified against: a DNS host name
// (labels of [A-Za-z0-9-], not starting or ending with '-', dot-separated,
// at most 253 bytes), or an IP address literal (then verified against the
// certificate's IP SANs, and no SNI is sent).
bool is_host_name(const std::string& h) {
  in6_addr a6{};
  in_addr a4{};
  if (inet_pton(AF_INET, h.c_str(), &a4) == 1 || inet_pton(AF_INET6, h.c_str(), &a6) == 1) {
    return true;
  }
  if (h.empty() || h.size() > 253 || h.front() == '.' || h.back() == '.') return false;
  size_t label = 0;
  bool alpha = false;
  for (size_t i = 0; i < h.size(); ++i) {
    const char c = h[i];
    if (c == '.') {
      if (label == 0 || h[i - 1] == '-') return false;
      label = 0;
      continue;
    }
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-')) return false;
    if (label == 0 && c == '-') return false;
    if (std::isalpha(static_cast<unsigned char>(c))) alpha = true;
    if (++label > 63) return false;
  }
  return alpha;
}
const std::vector<std::string> kBoundaryKeys = {"description", "cidrs"};
const std::vector<std::string> kRuleKeys = {"name",    "boundary", "ports", "mode",      "min_tls",
                                            "cgroups", "users",    "comms", "preambles", "udp"};
const std::vector<std::string> kExemptionKeys = {"name",    "cidrs",   "ports", "reason", "owner",
                                                 "expires", "cgroups", "users", "comms"};

// A cgroup v2 path as written in a selector: absolute, no empty, "." or
// ".." components, no trailing slash. Returns what is wrong, or "".
std::string cgroup_path_problem(const std::string& p) {
  if (p.empty() || p[0] != '/')
    return "must be an absolute cgroup path such as /system.slice/x.service";
  if (p == "/") return "\"/\" would select every process; drop the selector instead";
  if (p.back() == '/') return "must not end with \"/\"";
  size_t start = 1;
  uint32_t depth = 0;
  while (start <= p.size()) {
    size_t end = p.find('/', start);
    if (end == std::string::npos) end = p.size();
    const std::string part = p.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") {
      return "has an empty, \".\" or \"..\" component";
    }
    ++depth;
    start = end + 1;
  }
  if (depth >= TW_MAX_CGROUP_LEVEL) {
    return "is " + std::to_string(depth) + " levels deep; selectors reach level " +
           std::to_string(TW_MAX_CGROUP_LEVEL - 1) + " at most (TW_MAX_CGROUP_LEVEL)";
  }
  return "";
}

// A login name as useradd accepts it (portable subset plus '.', '-', '$').
bool is_user_name(const std::string& n) {
  if (n.empty() || n.size() > 32 || n[0] == '-') return false;
  for (char c : n) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' ||
          c == '$')) {
      return false;
    }
  }
  return true;
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) {
    if (!out.empty()) out += ", ";
    out += s;
  }
  return out;
}

std::string quote(std::string_view s) { return "\"" + std::string(s) + "\""; }

std::string type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a floating-point number";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    default:
      return "nothing";
  }
}

bool is_blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; });
}

class FileParser {
 public:
  FileParser(const std::string& file, ParsedPolicy& out, Diagnostics& diags)
      : file_(file), out_(out), diags_(diags) {}

  void parse(std::string_view text) {
    toml::table root;
    try {
      root = toml::parse(text, std::string_view(file_));
    } catch (const toml::parse_error& e) {
      out_.incomplete = true;
      diags_.error(at(e.source()), "syntax error: " + std::string(e.description()));
      return;
    }
    for (auto&& [key, value] : root) {
      const std::string k(key.str());
      if (k == "version") {
        out_.version.present = true;
        parse_version(value);
      } else if (k == "default_mode") {
        out_.default_mode.present = true;
        if (auto m = parse_mode(value, "default_mode")) set_once(out_.default_mode, k, *m, value);
      } else if (k == "default_min_tls") {
        out_.default_min_tls.present = true;
        if (auto v = parse_tls(value, "default_min_tls")) {
          set_once(out_.default_min_tls, k, *v, value);
        }
      } else if (k == "boundaries") {
        parse_boundaries(value);
      } else if (k == "rules") {
        parse_array_of_tables(value, "rules", [&](const toml::table& t) { parse_rule(t); });
      } else if (k == "exemptions") {
        parse_array_of_tables(value, "exemptions",
                              [&](const toml::table& t) { parse_exemption(t); });
      } else if (k == "upgrades") {
        parse_array_of_tables(value, "upgrades", [&](const toml::table& t) { parse_upgrade(t); });
      } else if (k == "terminations") {
        parse_array_of_tables(value, "terminations",
                              [&](const toml::table& t) { parse_termination(t); });
      } else {
        unknown_key(key, "at the top level", kTopKeys);
      }
    }
  }

 private:
  SourceLocation at(const toml::source_region& r) const {
    return SourceLocation{file_, r.begin.line, r.begin.column};
  }
  SourceLocation at(const toml::node& n) const { return at(n.source()); }
  SourceLocation at(const toml::key& k) const { return at(k.source()); }

  void unknown_key(const toml::key& key, const std::string& where,
                   const std::vector<std::string>& accepted) {
    std::string msg = "unknown key " + quote(key.str()) + " " + where;
    const std::string near = closest_match(key.str(), accepted);
    if (!near.empty()) msg += " (did you mean " + quote(near) + "?)";
    msg += "; accepted keys: " + join(accepted);
    diags_.error(at(key), msg);
  }

  void wrong_type(const toml::node& n, const std::string& what, const std::string& expected) {
    diags_.error(at(n), what + " must be " + expected + ", not " + type_name(n));
  }

  std::optional<std::string> get_string(const toml::node& n, const std::string& what) {
    if (auto s = n.value_exact<std::string>()) return s;
    wrong_type(n, what, "a string");
    return std::nullopt;
  }

  // A required, non-blank string.
  std::optional<std::string> get_text(const toml::node& n, const std::string& what) {
    auto s = get_string(n, what);
    if (s && is_blank(*s)) {
      diags_.error(at(n), what + " must not be empty");
      return std::nullopt;
    }
    return s;
  }

  template <typename T>
  void set_once(Setting<T>& setting, const std::string& key, const T& value, const toml::node& n) {
    if (setting.value) {
      diags_.error(at(n), key + " is set again here; it was already set at " +
                              location_string(setting.where) +
                              " (a policy directory may set it in one file only)");
      return;
    }
    setting.value = value;
    setting.where = at(n);
  }

  void parse_version(const toml::node& n) {
    auto v = get_string(n, "version");
    if (!v) return;
    if (is_blank(*v)) {
      diags_.error(at(n), "version must not be empty; write e.g. version = \"2026-11-21.1\"");
      return;
    }
    if (v->size() > 128 || std::any_of(v->begin(), v->end(), [](char c) {
          return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
        })) {
      diags_.error(at(n), "version must be at most 128 characters without control characters");
      return;
    }
    if (out_.version.value) {
      std::string msg = "version is set again here";
      if (*out_.version.value != *v) {
        msg += " to " + quote(*v) + "; it was already set to " + quote(*out_.version.value);
      } else {
        msg += "; it was already set";
      }
      msg += " at " + location_string(out_.version.where) +
             " (a policy directory may set version in one file only)";
      diags_.error(at(n), msg);
      return;
    }
    out_.version.value = *v;
    out_.version.where = at(n);
  }

  std::optional<Mode> parse_mode(const toml::node& n, const std::string& what) {
    auto s = get_string(n, what);
    if (!s) return std::nullopt;
    if (*s == "monitor") return Mode::kMonitor;
    if (*s == "enforce") return Mode::kEnforce;
    diags_.error(at(n),
                 "unknown " + what + " " + quote(*s) + "; accepted: \"monitor\", \"enforce\"");
    return std::nullopt;
  }

  std::optional<uint16_t> parse_tls(const toml::node& n, const std::string& what) {
    if (n.is_floating_point() || n.is_integer()) {
      diags_.error(at(n), what + " must be a quoted string such as \"1.2\", not " + type_name(n));
      return std::nullopt;
    }
    auto s = get_string(n, what);
    if (!s) return std::nullopt;
    const uint16_t v = tls_version_from_string(*s);
    if (v == 0) {
      diags_.error(at(n), "unknown TLS version " + quote(*s) + " in " + what +
                              "; accepted: \"1.0\", \"1.1\", \"1.2\", \"1.3\"");
      return std::nullopt;
    }
    return v;
  }

  // `preambles = ["postgresql", "mysql"]`: the plaintext a rule lets come
  // before the ClientHello. Returns false (errors reported) if invalid.
  bool parse_preambles(const toml::node& n, const std::string& what, uint8_t& out) {
    static const char* kAccepted = "accepted: \"postgresql\", \"mysql\"";
    const toml::array* a = n.as_array();
    if (!a) {
      wrong_type(n, what, std::string("an array of preamble names (") + kAccepted + ")");
      return false;
    }
    if (a->empty()) {
      diags_.error(at(n), what + " is empty; remove the key to allow no preamble");
      return false;
    }
    bool ok = true;
    for (const toml::node& e : *a) {
      auto s = e.value_exact<std::string>();
      if (!s) {
        wrong_type(e, "each entry of " + what, "a string");
        ok = false;
        continue;
      }
      const uint8_t p = preamble_from_string(*s);
      if (p == TW_PREAMBLE_NONE) {
        diags_.error(at(e), "unknown preamble " + quote(*s) + " in " + what + "; " + kAccepted +
                                " (SMTP STARTTLS and protocols where the server speaks first "
                                "cannot be judged from the client's first bytes: exempt them)");
        ok = false;
        continue;
      }
      if (out & TW_PREAMBLE_BIT(p)) {
        diags_.error(at(e), what + " lists " + quote(*s) + " twice");
        ok = false;
        continue;
      }
      out |= static_cast<uint8_t>(TW_PREAMBLE_BIT(p));
    }
    return ok;
  }

  // `udp = "allow" | "quic" | "block"`: what UDP to the rule's boundary and
  // ports meets. Returns false (errors reported) if invalid.
  bool parse_udp(const toml::node& n, const std::string& what, uint8_t& out) {
    static const char* kAccepted = "accepted: \"allow\", \"quic\", \"block\"";
    auto s = n.value_exact<std::string>();
    if (!s) {
      wrong_type(n, what, std::string("a string (") + kAccepted + ")");
      return false;
    }
    const uint8_t u = udp_verdict_from_string(*s);
    if (u == TW_UDP_MAX) {
      diags_.error(at(n), "unknown " + what + " " + quote(*s) + "; " + kAccepted);
      return false;
    }
    out = u;
    return true;
  }

  // Validates a name value; returns it even when invalid so references to it
  // do not cascade into more errors.
  std::optional<std::string> parse_name(const toml::node& n, const std::string& what, bool& ok) {
    auto s = get_string(n, what);
    if (!s) {
      ok = false;
      return std::nullopt;
    }
    if (!is_valid_name(*s)) {
      ok = false;
      diags_.error(at(n), what + " " + quote(*s) +
                              " is invalid: use 1-63 characters from A-Z a-z 0-9 _ . -");
    }
    return s;
  }

  void parse_boundaries(const toml::node& n) {
    const toml::table* t = n.as_table();
    if (!t) {
      wrong_type(n, "boundaries", "a table of boundaries ([boundaries.NAME])");
      return;
    }
    for (auto&& [key, value] : *t) {
      ParsedBoundary pb;
      Boundary& b = pb.boundary;
      b.name = std::string(key.str());
      b.where = at(key);
      if (!is_valid_name(b.name)) {
        pb.ok = false;
        diags_.error(at(key), "boundary name " + quote(b.name) +
                                  " is invalid: use 1-63 characters from A-Z a-z 0-9 _ . -");
      }
      const toml::table* bt = value.as_table();
      if (!bt) {
        wrong_type(value, "boundary " + quote(b.name),
                   "a table ([boundaries." + b.name + "] with cidrs = [...])");
        pb.ok = false;
        out_.boundaries.push_back(std::move(pb));
        continue;
      }
      bool have_cidrs = false;
      for (auto&& [bkey, bval] : *bt) {
        const std::string k(bkey.str());
        if (k == "description") {
          if (auto d = get_string(bval, "description")) b.description = *d;
        } else if (k == "cidrs") {
          have_cidrs = true;
          const std::string what = "cidrs of boundary " + quote(b.name);
          if (!parse_cidrs(bval, what, b.cidrs)) pb.ok = false;
          if (const auto* a = bval.as_array(); a && a->empty()) {
            pb.ok = false;
            diags_.error(at(bval), "boundary " + quote(b.name) +
                                       " is empty: list at least one CIDR, e.g. cidrs = "
                                       "[\"198.18.0.0/16\"]");
          }
        } else {
          unknown_key(bkey, "in boundary " + quote(b.name), kBoundaryKeys);
        }
      }
      if (!have_cidrs) {
        pb.ok = false;
        diags_.error(at(key), "boundary " + quote(b.name) +
                                  " is empty: it has no cidrs; add e.g. cidrs = "
                                  "[\"198.18.0.0/16\"]");
      }
      out_.boundaries.push_back(std::move(pb));
    }
  }

  // Appends the valid CIDRs of array `n`; false if anything was rejected.
  bool parse_cidrs(const toml::node& n, const std::string& what, std::vector<Cidr>& out) {
    const toml::array* a = n.as_array();
    if (!a) {
      wrong_type(n, what, "an array of CIDR strings, e.g. [\"198.18.0.0/16\"]");
      return false;
    }
    bool ok = true;
    for (const toml::node& e : *a) {
      auto s = e.value_exact<std::string>();
      if (!s) {
        wrong_type(e, "each of " + what, "a CIDR string such as \"198.18.0.0/16\"");
        ok = false;
        continue;
      }
      CidrParseResult r = parse_cidr(*s);
      if (!r.cidr) {
        diags_.error(at(e), r.error);
        ok = false;
        continue;
      }
      r.cidr->where = at(e);
      out.push_back(std::move(*r.cidr));
    }
    return ok;
  }

  static std::optional<uint16_t> port_number(std::string_view s) {
    if (s.empty() || s.size() > 5 ||
        !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return std::nullopt;
    }
    const unsigned long v = std::stoul(std::string(s));
    if (v > 65535) return std::nullopt;
    return static_cast<uint16_t>(v);
  }

  // Appends the valid port ranges of array `n`; false if anything was rejected.
  bool parse_ports(const toml::node& n, const std::string& what, std::vector<PortRange>& out) {
    const toml::array* a = n.as_array();
    if (!a) {
      wrong_type(n, what, "an array of ports, e.g. [443, \"8000-8100\"]");
      return false;
    }
    if (a->empty()) {
      diags_.error(at(n), what + " is empty; list at least one port, e.g. [443]");
      return false;
    }
    bool ok = true;
    for (const toml::node& e : *a) {
      if (auto i = e.value_exact<int64_t>()) {
        if (*i < 1 || *i > 65535) {
          diags_.error(at(e), "port " + std::to_string(*i) + " is out of range; ports are 1-65535");
          ok = false;
          continue;
        }
        out.push_back({static_cast<uint16_t>(*i), static_cast<uint16_t>(*i), at(e)});
        continue;
      }
      auto s = e.value_exact<std::string>();
      if (!s) {
        wrong_type(e, "each of " + what, "a port number or a \"LO-HI\" range string");
        ok = false;
        continue;
      }
      const size_t dash = s->find('-');
      const std::string lo_text = s->substr(0, dash);
      const std::string hi_text = dash == std::string::npos ? lo_text : s->substr(dash + 1);
      const bool digits_only =
          !lo_text.empty() && !hi_text.empty() &&
          std::all_of(lo_text.begin(), lo_text.end(),
                      [](char c) { return c >= '0' && c <= '9'; }) &&
          std::all_of(hi_text.begin(), hi_text.end(), [](char c) { return c >= '0' && c <= '9'; });
      if (!digits_only) {
        diags_.error(at(e), "port " + quote(*s) +
                                " is malformed; write a number (443) or a range string "
                                "(\"8000-8100\")");
        ok = false;
        continue;
      }
      auto lo = port_number(lo_text), hi = port_number(hi_text);
      if (!lo || !hi || *lo == 0 || *hi == 0) {
        diags_.error(at(e), "port " + quote(*s) + " is out of range; ports are 1-65535");
        ok = false;
        continue;
      }
      if (*lo > *hi) {
        diags_.error(at(e), "port range " + quote(*s) + " is reversed (" + lo_text + " > " +
                                hi_text + "); did you mean " + quote(hi_text + "-" + lo_text) +
                                "?");
        ok = false;
        continue;
      }
      out.push_back({*lo, *hi, at(e)});
    }
    return ok;
  }

  template <typename F>
  void parse_array_of_tables(const toml::node& n, const std::string& key, F&& each) {
    const toml::array* a = n.as_array();
    if (!a) {
      wrong_type(n, key, "an array of tables: write each entry as [[" + key + "]]");
      return;
    }
    for (const toml::node& e : *a) {
      if (const toml::table* t = e.as_table()) {
        each(*t);
      } else {
        wrong_type(e, "each entry of " + key, "a table ([[" + key + "]])");
      }
    }
  }

  void missing(const toml::table& t, const std::string& what, const std::string& key,
               const std::string& example) {
    diags_.error(at(t),
                 what + " is missing required key " + quote(key) + " (e.g. " + example + ")");
  }

  static bool is_owner_key(const std::string& k) {
    return k == "cgroups" || k == "users" || k == "comms";
  }

  // Parses an owner selector key into `out`. Returns true if the key was an
  // owner key and its value was valid; false otherwise (errors reported).
  bool parse_owner_key(const std::string& k, const toml::node& value, const std::string& what,
                       OwnerSelector& out) {
    if (!is_owner_key(k)) return false;
    const std::string label = k + " of " + what;
    const toml::array* a = value.as_array();
    if (!a) {
      wrong_type(value, label, "an array");
      return false;
    }
    if (a->empty()) {
      diags_.error(at(value), label + " is empty; remove the key to select any owner");
      return false;
    }
    bool ok = true;
    for (const toml::node& e : *a) {
      if (k == "users") {
        if (auto n = e.value_exact<int64_t>()) {
          if (*n < 0 || *n > 4294967294LL) {
            diags_.error(
                at(e), label + ": uid " + std::to_string(*n) + " is out of range (0..4294967294)");
            ok = false;
            continue;
          }
          out.users.push_back({"", static_cast<uint32_t>(*n), at(e)});
        } else if (auto s = e.value_exact<std::string>()) {
          if (!is_user_name(*s)) {
            diags_.error(at(e), label + ": " + quote(*s) +
                                    " is not a user name; write a name such as \"postgres\" "
                                    "or a uid such as 1001");
            ok = false;
            continue;
          }
          out.users.push_back({*s, std::nullopt, at(e)});
        } else {
          wrong_type(e, "each entry of " + label, "a user name or a uid");
          ok = false;
        }
        continue;
      }
      auto s = e.value_exact<std::string>();
      if (!s) {
        wrong_type(e, "each entry of " + label, "a string");
        ok = false;
        continue;
      }
      if (k == "cgroups") {
        const std::string problem = cgroup_path_problem(*s);
        if (!problem.empty()) {
          diags_.error(at(e), label + ": " + quote(*s) + " " + problem);
          ok = false;
          continue;
        }
        out.cgroups.push_back(*s);
      } else {
        if (s->empty() || s->size() > 15) {
          diags_.error(at(e), label + ": " + quote(*s) +
                                  " must be 1 to 15 bytes: the kernel keeps the first 15 bytes "
                                  "of a process name (see /proc/PID/comm)");
          ok = false;
          continue;
        }
        out.comms.push_back(*s);
      }
    }
    return ok;
  }

  // An absolute file path (certificates, keys, CA bundles).
  std::optional<std::string> parse_path(const toml::node& n, const std::string& what) {
    auto s = get_text(n, what);
    if (!s) return std::nullopt;
    if ((*s)[0] != '/') {
      diags_.error(at(n), what + " " + quote(*s) + " must be an absolute path");
      return std::nullopt;
    }
    return s;
  }

  // Transparent upgrade, client side: [[upgrades]].
  void parse_upgrade(const toml::table& t) {
    UpgradeRule u;
    u.where = at(t);
    bool ok = true;
    std::string what = "upgrade";
    if (const toml::node* n = t.get("name")) {
      if (auto name = parse_name(*n, "upgrade name", ok)) {
        u.name = *name;
        what = "upgrade " + quote(u.name);
      }
    } else {
      ok = false;
      missing(t, what, "name", "name = \"billing-db-upgrade\"");
    }
    bool have_boundary = false, have_ports = false;
    for (auto&& [key, value] : t) {
      const std::string k(key.str());
      if (k == "name") continue;
      if (k == "boundary") {
        have_boundary = true;
        if (auto b = get_text(value, "boundary of " + what)) {
          u.boundary = *b;
        } else {
          ok = false;
        }
      } else if (k == "ports") {
        have_ports = true;
        if (!parse_ports(value, "ports of " + what, u.ports)) ok = false;
      } else if (k == "server_name") {
        auto s = get_string(value, "server_name of " + what);
        if (!s || !is_host_name(*s)) {
          if (s) {
            diags_.error(at(value), "server_name of " + what + " " + quote(*s) +
                                        " is not a host name: the proxy sends it as SNI and "
                                        "verifies the certificate against it");
          }
          ok = false;
        } else {
          u.server_name = *s;
        }
      } else if (k == "server_names") {
        const toml::table* m = value.as_table();
        if (!m) {
          wrong_type(value, "server_names of " + what,
                     "a table of CIDR = \"host name\", e.g. { \"198.18.160.10/32\" = "
                     "\"db1.example\" }");
          ok = false;
          continue;
        }
        for (auto&& [ck, cv] : *m) {
          const CidrParseResult c = parse_cidr(ck.str());
          auto name = get_string(cv, "server_names entry of " + what);
          if (!c.cidr) {
            diags_.error(at(ck), "server_names of " + what + ": " + c.error);
            ok = false;
          } else if (!name || !is_host_name(*name)) {
            if (name) {
              diags_.error(at(cv),
                           "server_names of " + what + ": " + quote(*name) + " is not a host name");
            }
            ok = false;
          } else {
            u.server_names.emplace_back(*c.cidr, *name);
          }
        }
      } else if (k == "ca_file" || k == "client_cert" || k == "client_key") {
        auto p = parse_path(value, k + " of " + what);
        if (!p) {
          ok = false;
        } else {
          (k == "ca_file" ? u.ca_file : k == "client_cert" ? u.client_cert : u.client_key) = *p;
        }
      } else if (k == "alpn") {
        const toml::array* a = value.as_array();
        if (!a) {
          wrong_type(value, "alpn of " + what, "an array of protocol names, e.g. [\"http/1.1\"]");
          ok = false;
          continue;
        }
        for (const toml::node& e : *a) {
          auto s = get_string(e, "each alpn of " + what);
          if (!s || s->empty() || s->size() > 255) {
            if (s) diags_.error(at(e), "alpn protocol names are 1 to 255 bytes");
            ok = false;
          } else {
            u.alpn.push_back(*s);
          }
        }
      } else if (k == "preamble") {
        auto s = get_string(value, "preamble of " + what);
        if (s && *s != "postgresql") {
          diags_.error(at(value), "unknown preamble \"" + *s + "\" of " + what +
                                      ": the upgrade proxy knows \"postgresql\" (SSLRequest); "
                                      "leave it out for protocols that start with TLS");
          ok = false;
        } else if (!s) {
          ok = false;
        } else {
          u.preamble = *s;
        }
      } else if (k == "min_tls") {
        // Here 1.3 is a valid minimum: the proxy makes the handshake itself.
        auto s = get_string(value, "min_tls of " + what);
        const uint16_t v = s ? tls_version_from_string(*s) : 0;
        if (v != 0x0303 && v != 0x0304) {
          if (s) {
            diags_.error(at(value), "min_tls of " + what + " " + quote(*s) +
                                        " is not allowed for an upgrade; accepted: \"1.2\", "
                                        "\"1.3\"");
          }
          ok = false;
        } else {
          u.min_tls = v;
        }
      } else if (k == "executables") {
        const toml::array* a = value.as_array();
        if (!a || a->empty()) {
          if (!a) wrong_type(value, "executables of " + what, "an array of absolute paths");
          if (a) diags_.error(at(value), "executables of " + what + " is empty; remove the key");
          ok = false;
          continue;
        }
        for (const toml::node& e : *a) {
          auto p = parse_path(e, "executables of " + what);
          if (!p) {
            ok = false;
            continue;
          }
          u.owners.executables.push_back(*p);
        }
      } else if (parse_owner_key(k, value, what, u.owners)) {
        continue;
      } else if (is_owner_key(k)) {
        ok = false;
      } else {
        unknown_key(key, "in " + what, kUpgradeKeys);
      }
    }
    if (!have_boundary) {
      ok = false;
      missing(t, what, "boundary", "boundary = \"db-region\"");
    }
    if (!have_ports) {
      ok = false;
      missing(t, what, "ports", "ports = [5432]");
    }
    if (u.server_name.empty() && u.server_names.empty() && ok) {
      ok = false;
      diags_.error(at(t), what +
                              " needs server_name (or server_names): the name the proxy "
                              "verifies the server's certificate against; verification is "
                              "never off");
    }
    if (u.client_cert.empty() != u.client_key.empty()) {
      ok = false;
      diags_.error(at(t), what +
                              " sets only one of client_cert and client_key; mutual TLS "
                              "needs both");
    }
    if (ok) out_.upgrades.push_back(std::move(u));  // else: reported, the load fails
  }

  // Transparent upgrade, server side: [[terminations]].
  void parse_termination(const toml::table& t) {
    Termination x;
    x.where = at(t);
    bool ok = true;
    std::string what = "termination";
    if (const toml::node* n = t.get("name")) {
      if (auto name = parse_name(*n, "termination name", ok)) {
        x.name = *name;
        what = "termination " + quote(x.name);
      }
    } else {
      ok = false;
      missing(t, what, "name", "name = \"legacy-app-tls\"");
    }
    for (auto&& [key, value] : t) {
      const std::string k(key.str());
      if (k == "name") continue;
      if (k == "port") {
        auto p = value.value_exact<int64_t>();
        if (!p || *p < 1 || *p > 65535) {
          diags_.error(at(value), "port of " + what + " must be a number 1-65535");
          ok = false;
        } else {
          x.port = static_cast<uint16_t>(*p);
        }
      } else if (k == "backend") {
        auto s = get_text(value, "backend of " + what);
        const bool loopback = s && (s->rfind("127.", 0) == 0 || s->rfind("[::1]:", 0) == 0) &&
                              s->find(':') != std::string::npos;
        if (!loopback) {
          if (s) {
            diags_.error(at(value), "backend of " + what + " " + quote(*s) +
                                        " must be a loopback address and port, e.g. "
                                        "\"127.0.0.1:8080\" or \"[::1]:8080\": plaintext "
                                        "never leaves the host");
          }
          ok = false;
        } else {
          x.backend = *s;
        }
      } else if (k == "cert" || k == "key" || k == "client_ca") {
        auto p = parse_path(value, k + " of " + what);
        if (!p) {
          ok = false;
        } else {
          (k == "cert" ? x.cert : k == "key" ? x.key : x.client_ca) = *p;
        }
      } else if (k == "mode") {
        auto s = get_string(value, "mode of " + what);
        if (s && (*s == "strict" || *s == "permissive")) {
          x.strict = *s == "strict";
        } else {
          if (s) {
            diags_.error(at(value), "mode of " + what + " " + quote(*s) +
                                        " is unknown; accepted: \"strict\" (TLS only), "
                                        "\"permissive\" (plaintext passes, reported)");
          }
          ok = false;
        }
      } else {
        unknown_key(key, "in " + what, kTerminationKeys);
      }
    }
    for (const char* req : {"port", "backend", "cert", "key"}) {
      if (!t.get(req)) {
        ok = false;
        missing(t, what, req,
                std::string(req) == "port"      ? "port = 8443"
                : std::string(req) == "backend" ? "backend = \"127.0.0.1:8080\""
                : std::string(req) == "cert"    ? "cert = \"/etc/tlswall/app.pem\""
                                                : "key = \"/etc/tlswall/app.key\"");
      }
    }
    if (ok) out_.terminations.push_back(std::move(x));  // else: reported, the load fails
  }

  void parse_rule(const toml::table& t) {
    ParsedRule pr;
    Rule& r = pr.rule;
    r.where = at(t);
    std::string what = "rule";
    if (const toml::node* n = t.get("name")) {
      if (auto name = parse_name(*n, "rule name", pr.ok)) {
        r.name = *name;
        what = "rule " + quote(r.name);
      }
      pr.name_where = at(*n);
    } else {
      pr.ok = false;
      missing(t, what, "name", "name = \"remote-region-tls\"");
    }
    bool have_boundary = false, have_ports = false;
    for (auto&& [key, value] : t) {
      const std::string k(key.str());
      if (k == "name") {
        continue;
      } else if (k == "boundary") {
        have_boundary = true;
        pr.boundary_where = at(value);
        if (auto b = get_text(value, "boundary of " + what)) {
          r.boundary = *b;
        } else {
          pr.ok = false;
        }
      } else if (k == "ports") {
        have_ports = true;
        if (!parse_ports(value, "ports of " + what, r.ports)) pr.ok = false;
      } else if (k == "mode") {
        pr.mode = parse_mode(value, "mode");
        if (!pr.mode) pr.ok = false;
      } else if (k == "min_tls") {
        pr.min_tls = parse_tls(value, "min_tls");
        if (!pr.min_tls) pr.ok = false;
      } else if (k == "preambles") {
        if (!parse_preambles(value, "preambles of " + what, r.preambles)) pr.ok = false;
      } else if (k == "udp") {
        if (!parse_udp(value, "udp of " + what, r.udp)) pr.ok = false;
      } else if (parse_owner_key(k, value, what, r.owners)) {
        continue;
      } else if (is_owner_key(k)) {
        pr.ok = false;
      } else {
        unknown_key(key, "in " + what, kRuleKeys);
      }
    }
    if (!have_boundary) {
      pr.ok = false;
      missing(t, what, "boundary", "boundary = \"remote-region\"");
    }
    if (!have_ports) {
      pr.ok = false;
      missing(t, what, "ports", "ports = [443]");
    }
    out_.rules.push_back(std::move(pr));
  }

  void parse_exemption(const toml::table& t) {
    ParsedExemption px;
    Exemption& x = px.exemption;
    x.where = at(t);
    std::string what = "exemption";
    if (const toml::node* n = t.get("name")) {
      if (auto name = parse_name(*n, "exemption name", px.ok)) {
        x.name = *name;
        what = "exemption " + quote(x.name);
      }
      px.name_where = at(*n);
    } else {
      px.ok = false;
      missing(t, what, "name", "name = \"legacy-ldap\"");
    }
    bool have_cidrs = false, have_ports = false, have_reason = false, have_owner = false;
    for (auto&& [key, value] : t) {
      const std::string k(key.str());
      if (k == "name") {
        continue;
      } else if (k == "cidrs") {
        have_cidrs = true;
        if (!parse_cidrs(value, "cidrs of " + what, x.cidrs)) px.ok = false;
        if (const auto* a = value.as_array(); a && a->empty()) {
          px.ok = false;
          diags_.error(at(value), "cidrs of " + what +
                                      " is empty; remove the key to exempt any destination, or "
                                      "list CIDRs");
        }
      } else if (k == "ports") {
        have_ports = true;
        if (!parse_ports(value, "ports of " + what, x.ports)) px.ok = false;
      } else if (k == "reason") {
        have_reason = true;
        if (auto s = get_text(value, "reason of " + what)) {
          x.reason = *s;
        } else {
          px.ok = false;
        }
      } else if (k == "owner") {
        have_owner = true;
        if (auto s = get_text(value, "owner of " + what)) {
          x.owner = *s;
        } else {
          px.ok = false;
        }
      } else if (parse_owner_key(k, value, what, x.owners)) {
        continue;
      } else if (is_owner_key(k)) {
        px.ok = false;
      } else if (k == "expires") {
        px.expires_where = at(value);
        if (auto d = value.value_exact<toml::date>()) {
          x.expires = Date{d->year, d->month, d->day};
        } else if (auto s = value.value_exact<std::string>()) {
          x.expires = parse_date(*s);
          if (!x.expires) {
            px.ok = false;
            diags_.error(at(value), "expires of " + what + " " + quote(*s) +
                                        " is not a valid date; write YYYY-MM-DD, e.g. "
                                        "expires = 2027-01-31");
          }
        } else {
          px.ok = false;
          wrong_type(value, "expires of " + what, "a date such as 2027-01-31 (no time of day)");
        }
      } else {
        unknown_key(key, "in " + what, kExemptionKeys);
      }
    }
    if (!have_cidrs && !have_ports && x.owners.empty()) {
      px.ok = false;
      diags_.error(at(t), what +
                              " must limit cidrs, ports or owners (cgroups, users, comms); an "
                              "exemption for every destination, port and process would switch "
                              "tlswall off");
    }
    if (!have_reason) {
      px.ok = false;
      missing(t, what, "reason", "reason = \"appliance cannot do TLS until firmware 9\"");
    }
    if (!have_owner) {
      px.ok = false;
      missing(t, what, "owner", "owner = \"identity-team\"");
    }
    out_.exemptions.push_back(std::move(px));
  }

  const std::string file_;
  ParsedPolicy& out_;
  Diagnostics& diags_;
};

}  // namespace

void parse_policy_file(const std::string& file, std::string_view text, ParsedPolicy& out,
                       Diagnostics& diags) {
  out.files.push_back(file);
  FileParser(file, out, diags).parse(text);
}

}  // namespace tlswall::policy::internal
