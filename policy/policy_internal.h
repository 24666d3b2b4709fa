// Internals of the policy room shared by parser, validator, compiler and
// loader. Not part of the public API (policy/policy.h); may change freely.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "policy/policy.h"

namespace tlswall::policy::internal {

// Collects diagnostics in the order they are found; the loader sorts them.
class Diagnostics {
 public:
  void error(const SourceLocation& where, std::string message);
  void warning(const SourceLocation& where, std::string message);
  bool has_errors() const { return errors_ > 0; }
  size_t error_count() const { return errors_; }
  std::vector<Diagnostic>& list() { return list_; }

 private:
  std::vector<Diagnostic> list_;
  size_t errors_ = 0;
};

// "file:line:col" (or less when unknown), for messages that point elsewhere.
std::string location_string(const SourceLocation& where);

// A top-level setting that at most one file may set.
template <typename T>
struct Setting {
  std::optional<T> value;
  SourceLocation where;  // of the value
  bool present = false;  // written in some file, valid or not
};

struct ParsedBoundary {
  Boundary boundary;  // boundary.where = location of its name (the table key)
  bool ok = true;     // false: something in it was rejected
};

struct ParsedRule {
  Rule rule;  // rule.where = the [[rules]] table; mode/min_tls filled by the validator
  SourceLocation name_where;
  SourceLocation boundary_where;
  std::optional<Mode> mode;         // as written; empty = default_mode
  std::optional<uint16_t> min_tls;  // as written; empty = default_min_tls
  bool ok = true;
};

struct ParsedExemption {
  Exemption exemption;  // exemption.where = the [[exemptions]] table
  SourceLocation name_where;
  SourceLocation expires_where;
  bool ok = true;
};

// Everything read from all files, before cross-file validation.
struct ParsedPolicy {
  Setting<std::string> version;
  Setting<Mode> default_mode;
  Setting<uint16_t> default_min_tls;
  std::vector<ParsedBoundary> boundaries;
  std::vector<ParsedRule> rules;
  std::vector<ParsedExemption> exemptions;
  std::vector<UpgradeRule> upgrades;      // entries the parser accepted
  std::vector<Termination> terminations;  // idem
  std::vector<std::string> files;         // display names, in load order
  bool incomplete = false;                // some file could not be read or parsed at all
};

// policy_parser.cc: parses one file's text and appends what it defines to
// `out`. Reports syntax, type, key and value errors; never throws.
void parse_policy_file(const std::string& file, std::string_view text, ParsedPolicy& out,
                       Diagnostics& diags);

// policy_validator.cc: cross-file checks (duplicates, references, overlaps,
// expiry, table limits); applies defaults and returns the model. The result
// is meaningful only if no error was reported.
Policy validate_policy(ParsedPolicy&& parsed, std::chrono::system_clock::time_point now,
                       Diagnostics& diags);

// ---- CIDRs (policy_common.cc) ----

struct CidrParseResult {
  std::optional<Cidr> cidr;
  std::string error;  // set when cidr is empty: what is wrong and what would be right
};
// Parses "addr/len" strictly: explicit prefix, no host bits, no IPv4-mapped IPv6.
CidrParseResult parse_cidr(std::string_view text);
std::string cidr_to_string(int family, const uint8_t* addr, unsigned prefix_len);
// True if every address of `inner` is in `outer` (same family, outer no longer).
bool cidr_contains(const Cidr& outer, const Cidr& inner);
bool cidrs_intersect(const Cidr& a, const Cidr& b);
Cidr any_v4();  // 0.0.0.0/0
Cidr any_v6();  // ::/0

// A distinct prefix of one family, ordered by address then length.
struct PrefixKey {
  std::array<uint8_t, 16> addr{};
  uint8_t prefix_len = 0;
  bool operator<(const PrefixKey& o) const {
    return addr != o.addr ? addr < o.addr : prefix_len < o.prefix_len;
  }
  bool operator==(const PrefixKey& o) const { return addr == o.addr && prefix_len == o.prefix_len; }
};
PrefixKey prefix_key(const Cidr& c);
// `key` cut down to its first `len` bits.
PrefixKey truncate_prefix(const PrefixKey& key, uint8_t len);

// The CIDRs an exemption contributes to the LPM tables (any = both /0).
std::vector<Cidr> exemption_cidrs(const Exemption& e);

// ---- ports ----
bool ranges_intersect(const PortRange& a, const PortRange& b);
std::string port_range_string(uint16_t lo, uint16_t hi);  // "443" or "8000-8100"

// ---- dates (UTC, proleptic Gregorian) ----
int64_t days_from_civil(int year, int month, int day);  // days since 1970-01-01
bool is_valid_date(int year, int month, int day);
std::string date_to_string(const Date& d);  // YYYY-MM-DD
// Parses exactly "YYYY-MM-DD" into a valid calendar date.
std::optional<Date> parse_date(std::string_view text);
int64_t utc_day(std::chrono::system_clock::time_point t);  // floor(days since epoch)
// An exemption is active through the end of its expiry day (UTC).
bool is_expired(const Exemption& e, std::chrono::system_clock::time_point now);
std::chrono::system_clock::time_point end_of_day(const Date& d);  // next UTC midnight

// ---- names ----
// [A-Za-z0-9_.-]{1,63}
bool is_valid_name(std::string_view name);
// The closest of `candidates` to `word` if it is a plausible typo, else "".
std::string closest_match(std::string_view word, const std::vector<std::string>& candidates);

// ---- table limits shared by the validator and the compiler ----
size_t exempt_entry_count(const Exemption& e);  // ports.size(), or 1 for any port

// ---- hashing (policy_loader.cc) ----
struct SourceFile {
  std::string display_name;  // used in diagnostics
  std::string path;          // absolute path for Policy.files
  std::string base_name;     // hashed
  std::string bytes;
};
// sha256 hex over (base name, NUL, decimal length, NUL, bytes) per file.
std::string policy_hash(const std::vector<SourceFile>& files);

}  // namespace tlswall::policy::internal
