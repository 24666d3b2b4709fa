// Policies and addresses the fixtures share.
//
//   remote   198.18.128.0/17, 2001:db8:2::/48   enforce, ports 80 443 5432 9100 6000-6009
//   staging  198.18.64.0/18,  2001:db8:3::/48   monitor, port 8080
//   exemption legacy-metrics: 198.18.200.0/24 port 9100
//
// Port 9100 is in the enforce rule on purpose: an exemption only narrows a
// rule, so without it the exemption could never apply (`policy check` warns).
#pragma once

#include <string>

namespace tlswall::bpftest {

inline const std::string kClient4 = "198.18.0.10";
inline const std::string kClient6 = "2001:db8:1::10";
inline const std::string kRemote4 = "198.18.130.20";    // remote, enforce
inline const std::string kRemote6 = "2001:db8:2::20";   // remote, enforce
inline const std::string kExempt4 = "198.18.200.9";     // remote + legacy-metrics
inline const std::string kStaging4 = "198.18.64.30";    // staging, monitor
inline const std::string kStaging6 = "2001:db8:3::30";  // staging, monitor
inline const std::string kOutside4 = "198.18.5.40";     // in no boundary
inline const std::string kOutside6 = "2001:db8:9::40";  // in no boundary

inline const char* const kRemoteRule = "remote-tls";
inline const char* const kStagingRule = "staging-tls";

// The policy of most cases. `staging_mode` lets a case flip the staging rule.
inline std::string fixture_policy(const std::string& staging_mode = "monitor",
                                  const std::string& version = "bpf-fixtures-1") {
  return "version = \"" + version + R"("
default_mode = "monitor"
default_min_tls = "1.2"

[boundaries.remote]
description = "enforced region"
cidrs = ["198.18.128.0/17", "2001:db8:2::/48"]

[boundaries.staging]
description = "monitored region"
cidrs = ["198.18.64.0/18", "2001:db8:3::/48"]

[[rules]]
name = "remote-tls"
boundary = "remote"
ports = [80, 443, 5432, 9100, "6000-6009"]
mode = "enforce"

[[rules]]
name = "staging-tls"
boundary = "staging"
ports = [8080]
mode = ")" +
         staging_mode + R"("

[[exemptions]]
name = "legacy-metrics"
cidrs = ["198.18.200.0/24"]
ports = [9100]
reason = "plaintext node exporters"
owner = "fixtures"
expires = 2099-12-31
)";
}

// Only the remote boundary: staging is in no boundary at all.
inline std::string remote_only_policy() {
  return R"(
version = "bpf-fixtures-remote-only"
default_min_tls = "1.2"

[boundaries.remote]
cidrs = ["198.18.128.0/17", "2001:db8:2::/48"]

[[rules]]
name = "remote-tls"
boundary = "remote"
ports = [80, 443, 5432, 9100]
mode = "enforce"
)";
}

// Preambles: the remote boundary with TLS only on 443 and a database rule on
// 3306 and 5432 that allows `preambles` (a TOML array body, e.g.
// "\"postgresql\", \"mysql\""; empty: the key is left out).
inline const char* const kDbRule = "remote-db";
inline std::string preamble_policy(const std::string& preambles,
                                   const std::string& version = "bpf-preambles-1") {
  return "version = \"" + version + R"("
default_min_tls = "1.2"

[boundaries.remote]
cidrs = ["198.18.128.0/17", "2001:db8:2::/48"]

[[rules]]
name = "remote-tls"
boundary = "remote"
ports = [443]
mode = "enforce"

[[rules]]
name = "remote-db"
boundary = "remote"
ports = [3306, 5432]
mode = "enforce"
)" + (preambles.empty() ? std::string() : "preambles = [" + preambles + "]\n");
}

}  // namespace tlswall::bpftest
