#include "logging/config_toml.h"

#include <filesystem>
#include <stdexcept>

namespace tlswall::config {

std::string where(const std::string& file, const toml::source_region& r) {
  return file + ":" + std::to_string(r.begin.line) + ":" + std::to_string(r.begin.column);
}

void fail(const std::string& file, const toml::node& n, const std::string& msg) {
  throw std::runtime_error(where(file, n.source()) + ": " + msg);
}

void check_keys(const std::string& file, const toml::table& t, const std::set<std::string>& allowed,
                const std::string& section) {
  for (const auto& [k, v] : t) {
    if (!allowed.count(std::string(k.str()))) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      throw std::runtime_error(where(file, k.source()) + ": unknown key '" + std::string(k.str()) +
                               "' in " + section + " (accepted: " + list + ")");
    }
  }
}

std::string get_string(const std::string& file, const toml::table& t, const char* key,
                       const std::string& def) {
  const toml::node* n = t.get(key);
  if (!n) return def;
  if (!n->is_string()) fail(file, *n, std::string("'") + key + "' must be a string");
  return n->value<std::string>().value();
}

bool get_bool(const std::string& file, const toml::table& t, const char* key, bool def) {
  const toml::node* n = t.get(key);
  if (!n) return def;
  if (!n->is_boolean()) fail(file, *n, std::string("'") + key + "' must be true or false");
  return n->value<bool>().value();
}

uint64_t get_uint(const std::string& file, const toml::table& t, const char* key, uint64_t def,
                  uint64_t lo, uint64_t hi) {
  const toml::node* n = t.get(key);
  if (!n) return def;
  if (!n->is_integer()) fail(file, *n, std::string("'") + key + "' must be an integer");
  const int64_t v = n->value<int64_t>().value();
  if (v < 0 || static_cast<uint64_t>(v) < lo || static_cast<uint64_t>(v) > hi) {
    fail(file, *n,
         std::string("'") + key + "' must be between " + std::to_string(lo) + " and " +
             std::to_string(hi));
  }
  return static_cast<uint64_t>(v);
}

const toml::table* get_table(const std::string& file, const toml::table& t, const char* key) {
  const toml::node* n = t.get(key);
  if (!n) return nullptr;
  if (!n->is_table()) fail(file, *n, std::string("'") + key + "' must be a table");
  return n->as_table();
}

std::string resolve(const std::string& base_dir, const std::string& p) {
  if (p.empty() || p == "-" || std::filesystem::path(p).is_absolute()) return p;
  return (std::filesystem::path(base_dir) / p).lexically_normal().string();
}

}  // namespace tlswall::config
