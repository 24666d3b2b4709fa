#include "logging/log.h"

#include <array>
#include <mutex>
#include <stdexcept>

#include <spdlog/sinks/stdout_sinks.h>

namespace tlswall::logging {
namespace {

constexpr std::array<const char*, 6> kNames = {"agent", "bpf",  "policy",
                                               "proxy", "sink", "control"};

std::once_flag g_once;
std::array<std::shared_ptr<spdlog::logger>, kNames.size()> g_loggers;

void create_loggers() {
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  for (size_t i = 0; i < kNames.size(); ++i) {
    g_loggers[i] = std::make_shared<spdlog::logger>(kNames[i], sink);
    g_loggers[i]->set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %^%l%$ [%n] %v");
    g_loggers[i]->set_level(spdlog::level::info);
  }
}

}  // namespace

bool parse_level(const std::string& name, spdlog::level::level_enum* out) {
  static const std::array<std::pair<const char*, spdlog::level::level_enum>, 7> kLevels = {{
      {"trace", spdlog::level::trace},
      {"debug", spdlog::level::debug},
      {"info", spdlog::level::info},
      {"warn", spdlog::level::warn},
      {"error", spdlog::level::err},
      {"critical", spdlog::level::critical},
      {"off", spdlog::level::off},
  }};
  for (const auto& [n, l] : kLevels) {
    if (name == n) {
      *out = l;
      return true;
    }
  }
  return false;
}

void init(const std::string& level) {
  spdlog::level::level_enum l;
  if (!parse_level(level, &l)) {
    throw std::invalid_argument("unknown log level '" + level +
                                "' (trace, debug, info, warn, error, critical, off)");
  }
  std::call_once(g_once, create_loggers);
  for (auto& lg : g_loggers) lg->set_level(l);
}

spdlog::logger& get(Subsystem s) {
  std::call_once(g_once, create_loggers);
  return *g_loggers[static_cast<size_t>(s)];
}

}  // namespace tlswall::logging
