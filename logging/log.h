// Per-subsystem loggers (agent, bpf, policy, proxy, sink, control), all to
// stderr by default so systemd/journald captures them.
#pragma once

#include <memory>
#include <string>

#include <spdlog/spdlog.h>

namespace tlswall::logging {

enum class Subsystem { kAgent, kBpf, kPolicy, kProxy, kSink, kControl };

// Creates the loggers once; later calls only change the level.
// Throws std::invalid_argument for an unknown level name.
void init(const std::string& level);

// The logger of a subsystem (init() with "info" happens on first use).
spdlog::logger& get(Subsystem s);

// "trace".."critical", "off"; returns false for anything else.
bool parse_level(const std::string& name, spdlog::level::level_enum* out);

}  // namespace tlswall::logging
