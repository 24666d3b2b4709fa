// Helpers the policy room's tests share: fixed dates and diagnostic matchers.
#pragma once

#include <time.h>

#include <chrono>
#include <ctime>
#include <string>

#include <gtest/gtest.h>

#include "policy/policy.h"

namespace tlswall::policy {

// A UTC time (noon unless told): an injected "now", never the wall clock.
inline std::chrono::system_clock::time_point Utc(int y, int m, int d, int hh = 12, int mm = 0,
                                                 int ss = 0) {
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = m - 1;
  tm.tm_mday = d;
  tm.tm_hour = hh;
  tm.tm_min = mm;
  tm.tm_sec = ss;
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

// Every diagnostic, one per line (for failure messages).
inline std::string All(const LoadResult& r) {
  std::string out;
  for (const auto& d : r.diagnostics) out += "  " + d.render() + "\n";
  return out;
}

inline size_t Errors(const LoadResult& r) {
  size_t n = 0;
  for (const auto& d : r.diagnostics) n += d.severity == Diagnostic::Severity::kError;
  return n;
}

// A diagnostic that renders starting with `prefix` and contains `fragment`.
inline ::testing::AssertionResult HasDiag(const LoadResult& r, const std::string& prefix,
                                          const std::string& fragment) {
  for (const auto& d : r.diagnostics) {
    const std::string s = d.render();
    if (s.rfind(prefix, 0) == 0 && s.find(fragment) != std::string::npos) {
      return ::testing::AssertionSuccess();
    }
  }
  return ::testing::AssertionFailure()
         << "no diagnostic \"" << prefix << "...'" << fragment << "'...\" among:\n"
         << All(r);
}

}  // namespace tlswall::policy
