#include "agent/control/cli_render.h"

#include <algorithm>
#include <chrono>
#include <sstream>

#include "logging/event.h"
#include "logging/json.h"

namespace tlswall::control {
namespace {

using logging::JsonArray;
using logging::JsonObject;

std::string endpoint(const std::string& addr, int port) {
  const bool v6 = addr.find(':') != std::string::npos;
  return (v6 ? "[" + addr + "]" : addr) + ":" + std::to_string(port);
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (const auto& x : v) out += (out.empty() ? "" : sep) + x;
  return out;
}

std::string or_dash(const std::string& s) { return s.empty() ? "-" : s; }

// Columns padded to their widest cell; the last column is not padded.
std::string table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& r : rows) {
    width.resize(std::max(width.size(), r.size()));
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  std::string out;
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
    }
    out += line + "\n";
  }
  return out;
}

JsonArray string_array(const std::vector<std::string>& v) {
  JsonArray a;
  for (const auto& s : v) a.add(s);
  return a;
}

std::string owners_text(const std::vector<api::OwnerSelector>& owners) {
  std::vector<std::string> parts;
  for (const auto& o : owners) parts.push_back(o.kind + "=" + o.value);
  return join(parts, " ");
}

JsonArray owners_json(const std::vector<api::OwnerSelector>& owners) {
  JsonArray a;
  for (const auto& o : owners)
    a.add_raw(JsonObject().add("kind", o.kind).add("value", o.value).str());
  return a;
}

// ---- a small reader for flat JSON objects ----

class FlatReader {
 public:
  explicit FlatReader(std::string_view s) : s_(s) {}

  bool object(std::map<std::string, std::string>* out) {
    ws();
    if (!eat('{')) return false;
    ws();
    if (eat('}')) return end();
    for (;;) {
      std::string key;
      ws();
      if (!string(&key)) return false;
      ws();
      if (!eat(':')) return false;
      ws();
      std::string value;
      if (peek() == '"') {
        if (!string(&value)) return false;
      } else if (peek() == '{' || peek() == '[') {
        if (!skip_nested()) return false;
        value.clear();
      } else {
        const size_t start = i_;
        while (i_ < s_.size() && std::string_view(",} \t\r\n").find(s_[i_]) == std::string::npos)
          ++i_;
        if (i_ == start) return false;
        value = std::string(s_.substr(start, i_ - start));
      }
      (*out)[key] = value;
      ws();
      if (eat('}')) return end();
      if (!eat(',')) return false;
    }
  }

 private:
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  bool eat(char c) {
    if (peek() != c) return false;
    ++i_;
    return true;
  }
  void ws() {
    while (i_ < s_.size() && std::string_view(" \t\r\n").find(s_[i_]) != std::string::npos) ++i_;
  }
  bool end() {
    ws();
    return i_ == s_.size();
  }
  static void utf8(uint32_t cp, std::string* out) {
    if (cp < 0x80) {
      out->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }
  bool hex4(uint32_t* v) {
    if (i_ + 4 > s_.size()) return false;
    *v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s_[i_++];
      *v <<= 4;
      if (c >= '0' && c <= '9') {
        *v |= static_cast<uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        *v |= static_cast<uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        *v |= static_cast<uint32_t>(c - 'A' + 10);
      } else {
        return false;
      }
    }
    return true;
  }
  bool string(std::string* out) {
    if (!eat('"')) return false;
    while (i_ < s_.size()) {
      const char c = s_[i_++];
      if (c == '"') return true;
      if (c != '\\') {
        out->push_back(c);
        continue;
      }
      if (i_ >= s_.size()) return false;
      const char e = s_[i_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out->push_back(e);
          break;
        case 'b':
          out->push_back('\b');
          break;
        case 'f':
          out->push_back('\f');
          break;
        case 'n':
          out->push_back('\n');
          break;
        case 'r':
          out->push_back('\r');
          break;
        case 't':
          out->push_back('\t');
          break;
        case 'u': {
          uint32_t cp;
          if (!hex4(&cp)) return false;
          if (cp >= 0xD800 && cp < 0xDC00 && s_.substr(i_, 2) == "\\u") {
            i_ += 2;
            uint32_t lo;
            if (!hex4(&lo) || lo < 0xDC00 || lo > 0xDFFF) return false;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          utf8(cp, out);
          break;
        }
        default:
          return false;
      }
    }
    return false;
  }
  bool skip_nested() {
    int depth = 0;
    while (i_ < s_.size()) {
      const char c = peek();
      if (c == '"') {
        std::string ignored;
        if (!string(&ignored)) return false;
        continue;
      }
      ++i_;
      if (c == '{' || c == '[') ++depth;
      if (c == '}' || c == ']') {
        if (--depth == 0) return true;
      }
    }
    return false;
  }

  std::string_view s_;
  size_t i_ = 0;
};

}  // namespace

std::string format_time_us(int64_t time_us) {
  return logging::format_time(
      std::chrono::system_clock::time_point(std::chrono::microseconds(time_us)));
}

bool read_flat_json(std::string_view json, std::map<std::string, std::string>* out) {
  out->clear();
  return FlatReader(json).object(out);
}

std::string render_flows_table(const std::vector<api::FlowRecord>& flows) {
  if (flows.empty()) return "no flows\n";
  std::vector<std::vector<std::string>> rows = {
      {"TIME", "ACTION", "REASON", "RULE", "SRC -> DST", "PID", "COMM", "UID", "CGROUP/CONTAINER"}};
  for (const auto& f : flows) {
    std::string action = f.action;
    if (f.count > 1) action += " x" + std::to_string(f.count);
    const std::string where = !f.container.empty() ? f.container : f.cgroup;
    rows.push_back({format_time_us(f.time_us), or_dash(action), or_dash(f.reason), or_dash(f.rule),
                    endpoint(f.src, f.sport) + " -> " + endpoint(f.dst, f.dport),
                    f.__isset.pid ? std::to_string(f.pid) : "-", or_dash(f.comm),
                    f.__isset.uid ? std::to_string(f.uid) : "-", or_dash(where)});
  }
  return table(rows);
}

std::string render_flows_json(const std::vector<api::FlowRecord>& flows) {
  JsonArray a;
  for (const auto& f : flows) {
    JsonObject o;
    o.add("time", format_time_us(f.time_us))
        .add("action", f.action)
        .add("reason", f.reason)
        .add("mode", f.mode)
        .add("rule", f.rule)
        .add("boundary", f.boundary)
        .add("family", f.family)
        .add("src", f.src)
        .add("sport", f.sport)
        .add("dst", f.dst)
        .add("dport", f.dport)
        .add("interface", f.interface_name)
        .add("tls_version", f.tls_version);
    if (f.__isset.pid) o.add("pid", f.pid);
    if (f.__isset.uid) o.add("uid", f.uid);
    o.add("comm", f.comm)
        .add("exe", f.exe)
        .add("cgroup", f.cgroup)
        .add("container", f.container)
        .add("owner_status", f.owner_status)
        .add("policy_generation", f.policy_generation)
        .add("exemption", f.exemption)
        .add("count", f.count);
    a.add_raw(o.str());
  }
  return a.str() + "\n";
}

std::string render_event_compact(std::string_view json) {
  std::map<std::string, std::string> e;
  if (!read_flat_json(json, &e)) return std::string(json);
  auto get = [&](const char* k) {
    const auto it = e.find(k);
    return it == e.end() ? std::string() : it->second;
  };
  std::string line = or_dash(get("time")) + " " + or_dash(get("type"));
  auto add = [&](const std::string& s) {
    if (!s.empty()) line += " " + s;
  };
  add(get("action"));
  if (!get("rule").empty()) add("rule=" + get("rule"));
  if (!get("dst").empty()) {
    const int sport = std::atoi(get("sport").c_str());
    const int dport = std::atoi(get("dport").c_str());
    add(endpoint(get("src"), sport) + " -> " + endpoint(get("dst"), dport));
  }
  if (!get("comm").empty() || !get("pid").empty()) {
    add(or_dash(get("comm")) + (get("pid").empty() ? "" : "[" + get("pid") + "]"));
  }
  if (!get("uid").empty()) add("uid=" + get("uid"));
  if (!get("container").empty()) add("container=" + get("container"));
  if (!get("count").empty() && get("count") != "1") add("x" + get("count"));
  add(get("message"));
  return line;
}

std::string render_policy_text(const api::PolicyShowReply& p) {
  std::ostringstream o;
  o << "Policy " << p.version << " (generation " << p.generation << ")\n";
  o << "  path          " << p.path << "\n";
  o << "  hash          " << p.hash << "\n";
  o << "  loaded at     " << p.loaded_at << "\n";
  o << "  default mode  " << or_dash(p.default_mode) << "\n";
  if (!p.files.empty()) o << "  files         " << join(p.files, ", ") << "\n";
  o << "Boundaries\n";
  if (p.boundaries.empty()) o << "  (none)\n";
  for (const auto& b : p.boundaries) {
    o << "  " << b.name << ": " << join(b.cidrs, ", ");
    if (!b.description.empty()) o << "  (" << b.description << ")";
    o << "\n";
  }
  o << "Rules\n";
  if (p.rules.empty()) {
    o << "  (none)\n";
  } else {
    std::vector<std::vector<std::string>> rows = {
        {"  RULE", "BOUNDARY", "PORTS", "MODE", "POLICY", "MIN TLS", "UDP", "OWNERS"}};
    for (const auto& r : p.rules) {
      rows.push_back({"  " + r.name, r.boundary, or_dash(join(r.ports, ",")),
                      r.effective_mode + (r.overridden ? " (override)" : ""), r.mode,
                      or_dash(r.min_tls), or_dash(r.udp),
                      r.owners.empty() ? "any" : owners_text(r.owners)});
    }
    o << table(rows);
  }
  o << "Exemptions\n";
  if (p.exemptions.empty()) o << "  (none)\n";
  for (const auto& e : p.exemptions) {
    o << "  " << e.name << (e.active ? "" : " (EXPIRED, not in force)") << "\n";
    o << "    to       " << (e.cidrs.empty() ? "any destination" : join(e.cidrs, ", "))
      << (e.ports.empty() ? ", any port" : ", ports " + join(e.ports, ",")) << "\n";
    o << "    owners   " << (e.owners.empty() ? "any" : owners_text(e.owners)) << "\n";
    o << "    reason   " << or_dash(e.reason) << "\n";
    o << "    owner    " << or_dash(e.owner) << "\n";
    o << "    expires  " << (e.expires.empty() ? "never" : e.expires) << "\n";
  }
  return o.str();
}

std::string render_policy_json(const api::PolicyShowReply& p) {
  JsonArray boundaries;
  for (const auto& b : p.boundaries) {
    boundaries.add_raw(JsonObject()
                           .add("name", b.name)
                           .add("description", b.description)
                           .add_raw("cidrs", string_array(b.cidrs).str())
                           .str());
  }
  JsonArray rules;
  for (const auto& r : p.rules) {
    rules.add_raw(JsonObject()
                      .add("name", r.name)
                      .add("boundary", r.boundary)
                      .add_raw("ports", string_array(r.ports).str())
                      .add("mode", r.mode)
                      .add("effective_mode", r.effective_mode)
                      .add_bool("overridden", r.overridden)
                      .add("min_tls", r.min_tls)
                      .add_raw("preambles", string_array(r.preambles).str())
                      .add("udp", r.udp)
                      .add_raw("owners", owners_json(r.owners).str())
                      .str());
  }
  JsonArray exemptions;
  for (const auto& e : p.exemptions) {
    exemptions.add_raw(JsonObject()
                           .add("name", e.name)
                           .add("reason", e.reason)
                           .add("owner", e.owner)
                           .add("expires", e.expires)
                           .add_bool("active", e.active)
                           .add_raw("cidrs", string_array(e.cidrs).str())
                           .add_raw("ports", string_array(e.ports).str())
                           .add_raw("owners", owners_json(e.owners).str())
                           .str());
  }
  return JsonObject()
             .add("path", p.path)
             .add("version", p.version)
             .add("hash", p.hash)
             .add("loaded_at", p.loaded_at)
             .add("generation", p.generation)
             .add("default_mode", p.default_mode)
             .add_raw("files", string_array(p.files).str())
             .add_raw("boundaries", boundaries.str())
             .add_raw("rules", rules.str())
             .add_raw("exemptions", exemptions.str())
             .str() +
         "\n";
}

std::string render_reload(const api::ReloadReply& r) {
  if (!r.ok) {
    return "policy rejected, generation " + std::to_string(r.generation) +
           " stays in force: " + r.error + "\n";
  }
  return std::string(r.changed ? "policy generation " : "policy unchanged, generation ") +
         std::to_string(r.generation) + " in force (version " + r.version + ", hash " +
         r.hash.substr(0, 12) + ")\n";
}

std::string render_mode(const api::ModeReply& r, const std::string& rule, const std::string& mode) {
  if (r.changed.empty()) {
    return "no change: " + (rule == "all" ? std::string("every rule") : "rule " + rule) +
           " already " + (mode == "policy" ? "follows the policy file" : "in " + mode) + "\n";
  }
  std::string out;
  for (const auto& c : r.changed) {
    out += c.rule + ": " + c.previous_mode + " -> " + c.mode +
           (c.overridden ? " (run-time override)" : " (as the policy file says)") + "\n";
  }
  return out;
}

}  // namespace tlswall::control
