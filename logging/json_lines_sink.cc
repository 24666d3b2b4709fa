#include "logging/json_lines_sink.h"

#include <filesystem>
#include <stdexcept>

#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace tlswall::logging {

JsonLinesSink::JsonLinesSink(const std::string& path, const std::string& host,
                             const std::string& agent_version, size_t max_bytes, size_t max_files)
    : path_(path), host_(host), agent_version_(agent_version) {
  spdlog::sink_ptr sink;
  if (path == "-") {
    sink = std::make_shared<spdlog::sinks::stdout_sink_mt>();
  } else {
    try {
      const auto parent = std::filesystem::path(path).parent_path();
      if (!parent.empty()) std::filesystem::create_directories(parent);
      sink = std::make_shared<spdlog::sinks::rotating_file_sink_mt>(path, max_bytes, max_files);
    } catch (const std::exception& e) {
      throw std::runtime_error("cannot open events file " + path + ": " + e.what());
    }
  }
  out_ = std::make_shared<spdlog::logger>("events", sink);
  out_->set_pattern("%v");
  out_->set_level(spdlog::level::info);
  out_->flush_on(spdlog::level::info);
  out_->set_error_handler([this](const std::string&) { failed_.fetch_add(1); });
}

JsonLinesSink::~JsonLinesSink() { flush(); }

void JsonLinesSink::write(const Event& e) {
  const uint64_t before = failed_.load();
  out_->info(render_json(e, host_, agent_version_));
  if (failed_.load() == before) written_.fetch_add(1);
}

void JsonLinesSink::flush() { out_->flush(); }

}  // namespace tlswall::logging
