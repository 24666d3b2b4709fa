// Reading TOML configuration tables with file:line:col errors, shared by the
// agent config (agent/agent_config.cc) and its [events] table
// (logging/event_pipeline_config.cc). Every function throws
// std::runtime_error("file:line:col: message") on bad input.
#pragma once

#include <cstdint>
#include <set>
#include <string>

#include <toml++/toml.h>

namespace tlswall::config {

// "file:line:col" of a node's start.
std::string where(const std::string& file, const toml::source_region& r);

[[noreturn]] void fail(const std::string& file, const toml::node& n, const std::string& msg);

// Rejects keys not in `allowed`, naming the key and listing the accepted ones.
void check_keys(const std::string& file, const toml::table& t, const std::set<std::string>& allowed,
                const std::string& section);

// The value of `key`, or `def` when absent; a wrong type is an error.
std::string get_string(const std::string& file, const toml::table& t, const char* key,
                       const std::string& def);
bool get_bool(const std::string& file, const toml::table& t, const char* key, bool def);
// An integer within [lo, hi].
uint64_t get_uint(const std::string& file, const toml::table& t, const char* key, uint64_t def,
                  uint64_t lo, uint64_t hi);
// A sub-table, or nullptr when absent.
const toml::table* get_table(const std::string& file, const toml::table& t, const char* key);

// `p` relative to `base_dir` unless empty, "-" (stdout) or absolute.
std::string resolve(const std::string& base_dir, const std::string& p);

}  // namespace tlswall::config
