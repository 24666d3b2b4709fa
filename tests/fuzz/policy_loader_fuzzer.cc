// libFuzzer target: the policy loader. The input is the text of a policy
// file; load_policy_text() parses, validates and (when valid) compiles it
// into the kernel tables. It must never crash or throw, only return
// diagnostics. Checked besides the sanitizers:
//  - a policy is returned exactly when no diagnostic is an error, and every
//    diagnostic names the file and says something;
//  - a policy it accepted compiles, and its kernel tables build, also with
//    every owner selector resolved (as on a host where they all exist);
//  - loading the same text twice gives the same hash and tables.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <optional>
#include <string>

#include "logging/log.h"
#include "policy/policy.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using tlswall::policy::Diagnostic;
namespace policy = tlswall::policy;

// A fixed "now" (inside the shipped examples' exemption dates), so a run
// is reproducible.
const auto kNow = std::chrono::system_clock::time_point(std::chrono::seconds(1795000000));

policy::OwnerResolver ResolveAll() {
  policy::OwnerResolver r;
  r.uid = [](const std::string& name) -> std::optional<uint32_t> {
    return static_cast<uint32_t>(std::hash<std::string>()(name) & 0xffff);
  };
  r.cgroup_id = [](const std::string& path) -> std::optional<uint64_t> {
    return std::hash<std::string>()(path) | 1;
  };
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  tlswall::logging::init("off");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  policy::LoadResult r;
  try {
    r = policy::load_policy_text("fuzz.toml", text, kNow);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "load_policy_text threw: %s\n", e.what());
    FUZZ_CHECK(!"load_policy_text throws");
  }
  bool errors = false;
  for (const Diagnostic& d : r.diagnostics) {
    errors = errors || d.severity == Diagnostic::Severity::kError;
    FUZZ_CHECK(!d.message.empty());
    FUZZ_CHECK(d.where.file.empty() || d.where.file == "fuzz.toml");
    FUZZ_CHECK(!d.render().empty());
  }
  FUZZ_CHECK(r.ok() == !errors);
  if (!r.ok()) return 0;

  FUZZ_CHECK(r.policy->hash.size() == 64);
  try {
    const policy::CompiledPolicy c = policy::compile_policy(*r.policy, kNow);
    const policy::KernelTables plain = policy::build_kernel_tables(c);
    const policy::KernelTables resolved = policy::build_kernel_tables(c, ResolveAll());
    FUZZ_CHECK(plain.v4.size() == resolved.v4.size());
    FUZZ_CHECK(plain.ports.size() == resolved.ports.size());

    const policy::LoadResult again = policy::load_policy_text("fuzz.toml", text, kNow);
    FUZZ_CHECK(again.ok());
    FUZZ_CHECK(again.policy->hash == r.policy->hash);
    const policy::KernelTables t2 =
        policy::build_kernel_tables(policy::compile_policy(*again.policy, kNow));
    FUZZ_CHECK(t2.v4.size() == plain.v4.size() && t2.v6.size() == plain.v6.size() &&
               t2.ports.size() == plain.ports.size() && t2.classes == plain.classes);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "an accepted policy failed to compile: %s\n", e.what());
    FUZZ_CHECK(!"accepted policy compiles");
  }
  return 0;
}
