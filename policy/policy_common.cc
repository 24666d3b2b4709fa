// Small shared pieces of the policy room: diagnostics, names of modes and TLS
// versions, CIDR and date arithmetic.
#include <arpa/inet.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "policy/policy_internal.h"

namespace tlswall::policy {

std::string Diagnostic::render() const {
  std::string out = internal::location_string(where);
  out += severity == Severity::kError ? ": error: " : ": warning: ";
  out += message;
  return out;
}

const char* mode_name(Mode m) { return m == Mode::kEnforce ? "enforce" : "monitor"; }

const char* preamble_name(uint8_t preamble) {
  switch (preamble) {
    case TW_PREAMBLE_POSTGRESQL:
      return "postgresql";
    case TW_PREAMBLE_MYSQL:
      return "mysql";
    default:
      return "none";
  }
}

uint8_t preamble_from_string(const std::string& s) {
  for (uint8_t p = TW_PREAMBLE_NONE + 1; p < TW_PREAMBLE_MAX; ++p) {
    if (s == preamble_name(p)) return p;
  }
  return TW_PREAMBLE_NONE;
}

std::string preambles_to_string(uint8_t mask) {
  std::string out;
  for (uint8_t p = TW_PREAMBLE_NONE + 1; p < TW_PREAMBLE_MAX; ++p) {
    if (!(mask & TW_PREAMBLE_BIT(p))) continue;
    if (!out.empty()) out += ", ";
    out += preamble_name(p);
  }
  return out.empty() ? "none" : out;
}

const char* udp_verdict_name(uint8_t udp) {
  switch (udp) {
    case TW_UDP_ALLOW:
      return "allow";
    case TW_UDP_QUIC:
      return "quic";
    case TW_UDP_BLOCK:
      return "block";
    default:
      return "unknown";
  }
}

uint8_t udp_verdict_from_string(const std::string& s) {
  for (uint8_t u = 0; u < TW_UDP_MAX; ++u) {
    if (s == udp_verdict_name(u)) return u;
  }
  return TW_UDP_MAX;
}

uint16_t tls_version_from_string(const std::string& s) {
  if (s == "1.0") return 0x0301;
  if (s == "1.1") return 0x0302;
  if (s == "1.2") return 0x0303;
  if (s == "1.3") return 0x0304;
  return 0;
}

std::string tls_version_to_string(uint16_t wire) {
  switch (wire) {
    case 0x0300:
      return "SSL3.0";
    case 0x0301:
      return "1.0";
    case 0x0302:
      return "1.1";
    case 0x0303:
      return "1.2";
    case 0x0304:
      return "1.3";
    default: {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "0x%04x", wire);
      return buf;
    }
  }
}

namespace internal {

void Diagnostics::error(const SourceLocation& where, std::string message) {
  list_.push_back({Diagnostic::Severity::kError, where, std::move(message)});
  ++errors_;
}

void Diagnostics::warning(const SourceLocation& where, std::string message) {
  list_.push_back({Diagnostic::Severity::kWarning, where, std::move(message)});
}

std::string location_string(const SourceLocation& where) {
  std::string out = where.file.empty() ? "<policy>" : where.file;
  if (where.line != 0) {
    out += ":" + std::to_string(where.line);
    if (where.column != 0) out += ":" + std::to_string(where.column);
  }
  return out;
}

// ---- CIDRs ----

namespace {

unsigned max_prefix(int family) { return family == 4 ? 32 : 128; }

// Clears every bit after the first `len` bits of addr[0..bytes).
void mask_bits(uint8_t* addr, size_t bytes, unsigned len) {
  for (size_t i = 0; i < bytes; ++i) {
    const unsigned bit = static_cast<unsigned>(i) * 8;
    if (bit >= len) {
      addr[i] = 0;
    } else if (len - bit < 8) {
      addr[i] &= static_cast<uint8_t>(0xff << (8 - (len - bit)));
    }
  }
}

bool is_v4_mapped(const uint8_t* a) {
  for (int i = 0; i < 10; ++i) {
    if (a[i] != 0) return false;
  }
  return a[10] == 0xff && a[11] == 0xff;
}

}  // namespace

std::string cidr_to_string(int family, const uint8_t* addr, unsigned prefix_len) {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(family == 4 ? AF_INET : AF_INET6, addr, buf, sizeof(buf));
  return std::string(buf) + "/" + std::to_string(prefix_len);
}

CidrParseResult parse_cidr(std::string_view text) {
  CidrParseResult r;
  const std::string quoted = "\"" + std::string(text) + "\"";
  const size_t slash = text.find('/');
  const std::string addr_text(text.substr(0, slash));
  const int family = addr_text.find(':') != std::string::npos ? 6 : 4;

  Cidr c;
  c.family = family;
  c.text = std::string(text);
  if (inet_pton(family == 4 ? AF_INET : AF_INET6, addr_text.c_str(), c.addr) != 1) {
    r.error = quoted + " is not a valid CIDR: \"" + addr_text + "\" is not an IPv" +
              std::to_string(family) +
              " address; write a network address and prefix length, e.g. \"198.18.0.0/16\" or "
              "\"2001:db8::/32\"";
    return r;
  }
  if (slash == std::string_view::npos) {
    r.error = quoted + " is not a CIDR: the prefix length is missing; for a single host write \"" +
              addr_text + "/" + std::to_string(max_prefix(family)) + "\"";
    return r;
  }
  const std::string_view len_text = text.substr(slash + 1);
  if (len_text.empty() || len_text.size() > 3 ||
      !std::all_of(len_text.begin(), len_text.end(),
                   [](char ch) { return ch >= '0' && ch <= '9'; })) {
    r.error = quoted + " is not a valid CIDR: the prefix length \"" + std::string(len_text) +
              "\" is not a number from 0 to " + std::to_string(max_prefix(family));
    return r;
  }
  const unsigned len = static_cast<unsigned>(std::stoul(std::string(len_text)));
  if (len > max_prefix(family)) {
    r.error = quoted + ": prefix length /" + std::to_string(len) + " is out of range for IPv" +
              std::to_string(family) + " (0-" + std::to_string(max_prefix(family)) + ")";
    return r;
  }
  c.prefix_len = static_cast<uint8_t>(len);

  uint8_t masked[16];
  std::memcpy(masked, c.addr, sizeof(masked));
  mask_bits(masked, family == 4 ? 4 : 16, len);

  if (family == 6 && len >= 96 && is_v4_mapped(c.addr)) {
    r.error = quoted +
              " is an IPv4-mapped IPv6 CIDR, which tlswall does not accept; write it as IPv4: \"" +
              cidr_to_string(4, masked + 12, len - 96) + "\"";
    return r;
  }
  if (std::memcmp(masked, c.addr, sizeof(masked)) != 0) {
    r.error = quoted + " has host bits set after the /" + std::to_string(len) +
              " prefix; did you mean \"" + cidr_to_string(family, masked, len) + "\"?";
    return r;
  }
  r.cidr = std::move(c);
  return r;
}

bool cidr_contains(const Cidr& outer, const Cidr& inner) {
  if (outer.family != inner.family || outer.prefix_len > inner.prefix_len) return false;
  uint8_t a[16], b[16];
  std::memcpy(a, outer.addr, 16);
  std::memcpy(b, inner.addr, 16);
  mask_bits(a, 16, outer.prefix_len);
  mask_bits(b, 16, outer.prefix_len);
  return std::memcmp(a, b, 16) == 0;
}

bool cidrs_intersect(const Cidr& a, const Cidr& b) {
  return cidr_contains(a, b) || cidr_contains(b, a);
}

Cidr any_v4() {
  Cidr c;
  c.family = 4;
  c.text = "0.0.0.0/0";
  return c;
}

Cidr any_v6() {
  Cidr c;
  c.family = 6;
  c.text = "::/0";
  return c;
}

PrefixKey prefix_key(const Cidr& c) {
  PrefixKey k;
  std::memcpy(k.addr.data(), c.addr, 16);
  k.prefix_len = c.prefix_len;
  mask_bits(k.addr.data(), 16, c.prefix_len);
  return k;
}

PrefixKey truncate_prefix(const PrefixKey& key, uint8_t len) {
  PrefixKey k = key;
  k.prefix_len = len;
  mask_bits(k.addr.data(), 16, len);
  return k;
}

std::vector<Cidr> exemption_cidrs(const Exemption& e) {
  if (!e.cidrs.empty()) return e.cidrs;
  Cidr v4 = any_v4(), v6 = any_v6();
  v4.where = v6.where = e.where;
  return {v4, v6};
}

// ---- ports ----

bool ranges_intersect(const PortRange& a, const PortRange& b) {
  return a.lo <= b.hi && b.lo <= a.hi;
}

std::string port_range_string(uint16_t lo, uint16_t hi) {
  return lo == hi ? std::to_string(lo) : std::to_string(lo) + "-" + std::to_string(hi);
}

// ---- dates ----

// Howard Hinnant's days_from_civil (public domain algorithm).
int64_t days_from_civil(int year, int month, int day) {
  const int64_t y = static_cast<int64_t>(year) - (month <= 2 ? 1 : 0);
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t mp = (month + 9) % 12;
  const int64_t doy = (153 * mp + 2) / 5 + day - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

bool is_valid_date(int year, int month, int day) {
  if (year < 1 || year > 9999 || month < 1 || month > 12 || day < 1) return false;
  static const int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  const int max = month == 2 && leap ? 29 : kDays[month - 1];
  return day <= max;
}

std::string date_to_string(const Date& d) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02d", d.year % 10000, d.month % 100, d.day % 100);
  return buf;
}

std::optional<Date> parse_date(std::string_view text) {
  if (text.size() != 10 || text[4] != '-' || text[7] != '-') return std::nullopt;
  for (size_t i : {0, 1, 2, 3, 5, 6, 8, 9}) {
    if (text[i] < '0' || text[i] > '9') return std::nullopt;
  }
  auto num = [&](size_t pos, size_t n) {
    int v = 0;
    for (size_t i = pos; i < pos + n; ++i) v = v * 10 + (text[i] - '0');
    return v;
  };
  Date d{num(0, 4), num(5, 2), num(8, 2)};
  if (!is_valid_date(d.year, d.month, d.day)) return std::nullopt;
  return d;
}

int64_t utc_day(std::chrono::system_clock::time_point t) {
  const auto secs = std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
  return secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
}

bool is_expired(const Exemption& e, std::chrono::system_clock::time_point now) {
  return e.expires &&
         days_from_civil(e.expires->year, e.expires->month, e.expires->day) < utc_day(now);
}

std::chrono::system_clock::time_point end_of_day(const Date& d) {
  using Clock = std::chrono::system_clock;
  const int64_t days = days_from_civil(d.year, d.month, d.day) + 1;
  // The clock counts nanoseconds in 64 bits: about 1677-2262. A TOML date
  // may say year 9999 (found by tests/fuzz); beyond the clock is "never"
  // (or "always", before it), not a signed overflow.
  constexpr int64_t kMaxDays =
      std::chrono::duration_cast<std::chrono::seconds>(Clock::duration::max()).count() / 86400;
  if (days >= kMaxDays) return Clock::time_point::max();
  if (days <= -kMaxDays) return Clock::time_point::min();
  return Clock::time_point(
      std::chrono::duration_cast<Clock::duration>(std::chrono::seconds(days * 86400)));
}

// ---- names ----

bool is_valid_name(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  return std::all_of(name.begin(), name.end(), [](char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == '.' || ch == '-';
  });
}

namespace {
// Optimal string alignment distance: insertions, deletions, substitutions
// and swaps of two neighbouring letters ("prot" -> "port") each cost 1.
size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}
}  // namespace

std::string closest_match(std::string_view word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = 0;
  for (const auto& c : candidates) {
    const size_t d = edit_distance(word, c);
    if (best.empty() || d < best_distance) {
      best = c;
      best_distance = d;
    }
  }
  // A typo, not a different word: two edits, or a third of a longer word.
  if (best.empty() || best_distance == 0 || best_distance > std::max<size_t>(2, word.size() / 3) ||
      best_distance >= word.size()) {
    return "";
  }
  return best;
}

size_t exempt_entry_count(const Exemption& e) { return e.ports.empty() ? 1 : e.ports.size(); }

}  // namespace internal
}  // namespace tlswall::policy
