// Public API of the policy room: TOML policy files -> validated model ->
// compiled flat tables for the BPF classifier (bpf/abi/tlswall_abi.h).
//
// Nothing here touches the kernel; the agent writes CompiledPolicy into maps.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

extern "C" {
#include "abi/tlswall_abi.h"
}
#include "policy/compiled_rows.h"

namespace tlswall::policy {

// Where something is in a policy file (1-based; 0 = unknown).
struct SourceLocation {
  std::string file;
  uint32_t line = 0;
  uint32_t column = 0;
};

// One validation problem, rendered as "file:line:col: error: message".
struct Diagnostic {
  enum class Severity { kError, kWarning };
  Severity severity = Severity::kError;
  SourceLocation where;
  std::string message;
  std::string render() const;
};

struct Cidr {
  int family = 4;         // 4 or 6
  uint8_t addr[16] = {};  // network order; IPv4 uses the first 4 bytes
  uint8_t prefix_len = 0;
  SourceLocation where;
  std::string text;  // as written
};

struct PortRange {
  uint16_t lo = 0;
  uint16_t hi = 0;
  SourceLocation where;
};

enum class Mode { kMonitor, kEnforce };

// A user named in an owner selector: a uid, or a name resolved on the host
// that loads the policy (a name unknown there matches nothing there).
struct UserRef {
  std::string name;             // empty when given as a number
  std::optional<uint32_t> uid;  // set when given as a number
  SourceLocation where;
  std::string text() const { return uid ? std::to_string(*uid) : name; }
};

// Which sockets a rule or exemption is about, by their owner. Within a
// list any entry matches; across lists all given must match; empty = any
// owner. Matched in the kernel when the flow's decision is made:
// cgroups by path prefix (component-wise: "/a" covers "/a/b", not "/ab"),
// users by the socket's uid, comms by the process name (15 bytes, as in
// /proc/PID/comm) recorded at connect(). Traffic without a local socket
// (forwarded) has no owner and matches no selector.
struct OwnerSelector {
  std::vector<std::string> cgroups;  // absolute, normalized ("/system.slice/x.service")
  std::vector<UserRef> users;
  std::vector<std::string> comms;
  // Absolute paths of executables ([[upgrades]] only): the connecting
  // process runs this file (matched by device and inode, resolved on the
  // host and again when the file is replaced).
  std::vector<std::string> executables;
  bool empty() const {
    return cgroups.empty() && users.empty() && comms.empty() && executables.empty();
  }
  std::string describe() const;  // "cgroups=[...] users=[...]" or "any owner"
};

struct Boundary {
  std::string name;
  std::string description;
  std::vector<Cidr> cidrs;
  SourceLocation where;
};

struct Rule {
  std::string name;
  std::string boundary;
  std::vector<PortRange> ports;
  Mode mode = Mode::kMonitor;
  uint16_t min_tls = 0x0303;  // wire version; TLS 1.2 default
  OwnerSelector owners;       // empty: the rule covers every owner
  // Plaintext preambles allowed before the ClientHello: bits
  // TW_PREAMBLE_BIT(enum tw_preamble); 0 = the first byte must begin one.
  uint8_t preambles = 0;
  // What UDP to the rule's boundary and ports meets: enum tw_udp_verdict.
  // TW_UDP_ALLOW (the default: the key absent) lets it pass, as before
  // the key existed; TW_UDP_QUIC needs each flow to begin with a client's
  // QUIC Initial; TW_UDP_BLOCK allows none.
  uint8_t udp = TW_UDP_ALLOW;
  SourceLocation where;
};

// Year-month-day, UTC; an exemption is active through the end of that day.
struct Date {
  int year = 0, month = 0, day = 0;
};

struct Exemption {
  std::string name;
  std::vector<Cidr> cidrs;       // empty = any destination
  std::vector<PortRange> ports;  // empty = any port
  std::string reason;
  std::string owner;
  std::optional<Date> expires;
  OwnerSelector owners;  // empty: any owner
  SourceLocation where;
};

// Client side of transparent upgrade: plaintext connects from the selected
// owners to the boundary's ports are redirected to the local proxy, which
// re-originates them with TLS and verifies the server.
struct UpgradeRule {
  std::string name;
  std::string boundary;
  std::vector<PortRange> ports;
  OwnerSelector owners;  // empty: every local client
  // Name sent as SNI and verified against the server certificate: one for
  // every destination, or per destination (CIDR -> name, longest prefix
  // wins; server_name is the fallback). Never empty.
  std::string server_name;
  std::vector<std::pair<Cidr, std::string>> server_names;
  std::string ca_file;      // absolute; "" = the system bundle
  std::string client_cert;  // mutual TLS (both or neither), absolute
  std::string client_key;
  std::vector<std::string> alpn;
  uint16_t min_tls = 0x0303;  // 1.2 default; 1.3 allowed here
  // "" or "postgresql": the server wants an SSLRequest before the
  // ClientHello (the proxy sends it; a client's own is answered 'N').
  std::string preamble;
  SourceLocation where;
};

// Server side: a local port that accepts TLS for a legacy plaintext server.
struct Termination {
  std::string name;
  uint16_t port = 0;      // local port clients connect to
  std::string backend;    // "127.0.0.1:8080" or "[::1]:8080": loopback only
  std::string cert, key;  // absolute
  std::string client_ca;  // absolute; set = client certificates required
  bool strict = true;     // strict: TLS only; permissive: plaintext passes, reported
  SourceLocation where;
};

struct Policy {
  std::string version;
  Mode default_mode = Mode::kMonitor;
  uint16_t default_min_tls = 0x0303;
  std::vector<Boundary> boundaries;
  std::vector<Rule> rules;
  std::vector<Exemption> exemptions;
  std::vector<UpgradeRule> upgrades;
  std::vector<Termination> terminations;
  std::vector<std::string> files;  // the files it was read from, sorted
  std::string hash;                // sha256 hex over (file name, bytes) in sorted order
};

struct LoadResult {
  std::optional<Policy> policy;  // set only when there is no error
  std::vector<Diagnostic> diagnostics;
  bool ok() const { return policy.has_value(); }
};

// Reads one .toml file, or every *.toml in a directory (sorted, merged),
// parses and validates it. `now` decides whether an exemption has expired.
LoadResult load_policy(const std::string& path, std::chrono::system_clock::time_point now);

// Same from in-memory text (tests, fuzzing). `name` is used in diagnostics.
LoadResult load_policy_text(const std::string& name, const std::string& text,
                            std::chrono::system_clock::time_point now);

struct LpmRow4 {
  uint8_t addr[4];  // network order
  uint8_t prefix_len;
  tw_dest_class cls;
};

struct LpmRow6 {
  uint8_t addr[16];
  uint8_t prefix_len;
  tw_dest_class cls;
};

// A rule or exemption with an owner selector, compiled: its bit in the
// kernel's owner tables (its index in CompiledPolicy.owner_groups).
// Exemptions come first, then rules (enforce before monitor, then by
// name): the kernel takes the lowest matching bit.
struct OwnerGroup {
  bool is_exemption = false;
  uint16_t index = 0;  // rule_id or exemption index
  uint16_t boundary = 0;
  uint16_t min_tls = 0;
  uint8_t mode = 0;       // enum tw_mode (rules)
  uint8_t preambles = 0;  // TW_PREAMBLE_BIT mask (rules)
  uint8_t udp = 0;        // enum tw_udp_verdict (rules)
  OwnerSelector owners;
};

// Flat tables ready for the kernel. Indices into the name vectors are the
// numbers the kernel reports (tw_rule_entry.rule_id, boundary, exemption).
struct CompiledPolicy {
  std::string version;
  std::string hash;
  std::vector<std::string> boundary_names;
  std::vector<std::string> rule_names;
  std::vector<std::string> exemption_names;
  std::vector<std::string> rule_modes;  // "monitor" | "enforce", per rule_id
  std::vector<LpmRow4> v4;
  std::vector<LpmRow6> v6;
  std::vector<tw_rule_entry> rules;
  std::vector<tw_exempt_entry> exempts;
  std::vector<OwnerGroup> owner_groups;  // at most TW_MAX_OWNER_GROUPS
  // Earliest expiry among the exemptions compiled in: the agent recompiles then.
  std::optional<std::chrono::system_clock::time_point> next_expiry;
};

// Compiles a validated policy. Exemptions expired at `now` are left out.
// Throws std::runtime_error if a table limit is exceeded.
CompiledPolicy compile_policy(const Policy& policy, std::chrono::system_clock::time_point now);

// The classifier's tables (bpf/abi/tlswall_abi.h): address -> class, and
// (class, port prefix) -> verdict, for every port some rule protects.
struct KernelDestRow4 {
  uint8_t addr[4];  // network order
  uint8_t prefix_len;
  tw_dest_value value;
};

struct KernelDestRow6 {
  uint8_t addr[16];
  uint8_t prefix_len;
  tw_dest_value value;
};

struct KernelPortRow {
  uint16_t class_id;
  uint16_t port;       // first port of the prefix
  uint8_t prefix_len;  // 0..16 bits of the port
  tw_port_verdict verdict;
};

// How owner selectors meet this host: user names -> uids, cgroup paths ->
// cgroup ids. Either may answer "unknown" (nullopt): the selector then
// matches nothing here until it is resolved again (the agent re-resolves
// periodically, since cgroups come and go).
struct OwnerResolver {
  std::function<std::optional<uint32_t>(const std::string& user)> uid;
  std::function<std::optional<uint64_t>(const std::string& cgroup_path)> cgroup_id;
};
// getpwnam_r for users; the inode of <cgroup2_root><path> for cgroups.
OwnerResolver host_owner_resolver(const std::string& cgroup2_root);
// Depth of a cgroup path: "/" is 0, "/a" 1, "/a/b" 2 (the level
// bpf_skb_ancestor_cgroup_id() takes).
uint32_t cgroup_level(const std::string& path);

struct KernelOwnerTables {
  std::vector<tw_owner_group> groups;  // index = bit
  std::map<uint32_t, uint64_t> uids;   // uid -> groups
  std::map<std::string, uint64_t> comms;
  std::map<uint64_t, uint64_t> cgroups;  // cgroup id -> groups
  tw_slot_meta meta{};                   // all but generation
  std::vector<std::string> unresolved;   // "user \"bob\" (rule x): unknown on this host"
  bool operator==(const KernelOwnerTables& o) const;
};

struct KernelTables {
  std::vector<KernelDestRow4> v4;
  std::vector<KernelDestRow6> v6;
  std::vector<KernelPortRow> ports;
  KernelOwnerTables owners;
  size_t classes = 0;
};

// Builds the kernel tables from the compiled rows. The first matching rule
// row without owner selectors decides a (class, port) for every owner; an
// exemption row covering it marks it exempt; rules and exemptions with
// owner selectors covering it are listed as owner groups. Throws
// std::runtime_error if TW_MAX_PREFIXES, TW_MAX_CLASSES, TW_MAX_PORT_ROWS or
// TW_MAX_OWNER_KEYS would be exceeded.
KernelTables build_kernel_tables(const CompiledPolicy& compiled,
                                 const OwnerResolver& resolver = {});
// The owner part alone (cheap: the agent compares it to spot cgroups that
// appeared or went away).
KernelOwnerTables build_owner_tables(const CompiledPolicy& compiled,
                                     const OwnerResolver& resolver = {});

// Splits the inclusive port range [lo, hi] into the fewest prefixes
// (first port, prefix length over 16 bits).
std::vector<std::pair<uint16_t, uint8_t>> port_range_prefixes(uint16_t lo, uint16_t hi);

const char* mode_name(Mode m);
// "1.0" -> 0x0301 ... "1.3" -> 0x0304; 0 if unknown.
uint16_t tls_version_from_string(const std::string& s);
std::string tls_version_to_string(uint16_t wire);
// Preamble names as the policy writes them: "postgresql", "mysql".
// preamble_from_string: TW_PREAMBLE_NONE if unknown.
const char* preamble_name(uint8_t preamble);  // enum tw_preamble; "none" for 0
uint8_t preamble_from_string(const std::string& s);
// The names of a TW_PREAMBLE_BIT mask, in number order; "none" if empty.
std::string preambles_to_string(uint8_t mask);
// A rule's udp verdict as the policy writes it: "allow", "quic", "block".
// udp_verdict_from_string: TW_UDP_MAX if unknown.
const char* udp_verdict_name(uint8_t udp);  // enum tw_udp_verdict; "unknown" if out of range
uint8_t udp_verdict_from_string(const std::string& s);

}  // namespace tlswall::policy
