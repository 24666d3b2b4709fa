// Helpers shared by the logging room's unit and integration tests.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>

#include "logging/event.h"

namespace tlswall::testing {

// A fresh directory under $TMPDIR, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "tw_log_XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error(std::strerror(errno));
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string str(const std::string& sub = "") const {
    return sub.empty() ? path_.string() : (path_ / sub).string();
  }

 private:
  std::filesystem::path path_;
};

// Parses one flat JSON object (our events and health rows): string values
// decoded, other values as their literal text. Throws on anything else.
inline std::map<std::string, std::string> parse_flat_json(const std::string& s) {
  std::map<std::string, std::string> out;
  size_t i = 0;
  auto ws = [&] {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r')) ++i;
  };
  auto str = [&]() {
    if (i >= s.size() || s[i] != '"') throw std::runtime_error("expected string: " + s);
    ++i;
    std::string v;
    while (i < s.size() && s[i] != '"') {
      if (s[i] == '\\') {
        ++i;
        if (i >= s.size()) break;
        const char e = s[i];
        if (e == 'n')
          v += '\n';
        else if (e == 't')
          v += '\t';
        else if (e == 'r')
          v += '\r';
        else if (e == 'u') {
          const unsigned cp = static_cast<unsigned>(std::stoul(s.substr(i + 1, 4), nullptr, 16));
          i += 4;
          if (cp < 0x80) {
            v += static_cast<char>(cp);
          } else {
            v += static_cast<char>(0xc0 | (cp >> 6));
            v += static_cast<char>(0x80 | (cp & 0x3f));
          }
        } else {
          v += e;
        }
        ++i;
      } else {
        v += s[i++];
      }
    }
    if (i >= s.size()) throw std::runtime_error("unterminated string: " + s);
    ++i;
    return v;
  };
  ws();
  if (i >= s.size() || s[i] != '{') throw std::runtime_error("expected object: " + s);
  ++i;
  ws();
  if (i < s.size() && s[i] == '}') return out;
  for (;;) {
    ws();
    const std::string k = str();
    ws();
    if (i >= s.size() || s[i] != ':') throw std::runtime_error("expected ':' in " + s);
    ++i;
    ws();
    std::string v;
    if (i < s.size() && s[i] == '"') {
      v = str();
    } else {
      const size_t start = i;
      while (i < s.size() && s[i] != ',' && s[i] != '}') ++i;
      v = s.substr(start, i - start);
      while (!v.empty() && v.back() == ' ') v.pop_back();
      if (v.empty() || v[0] == '{' || v[0] == '[') throw std::runtime_error("not flat: " + s);
    }
    if (!out.emplace(k, v).second) throw std::runtime_error("duplicate key " + k);
    ws();
    if (i < s.size() && s[i] == ',') {
      ++i;
      continue;
    }
    if (i < s.size() && s[i] == '}') {
      ++i;
      break;
    }
    throw std::runtime_error("expected ',' or '}' in " + s);
  }
  ws();
  if (i != s.size()) throw std::runtime_error("trailing data: " + s);
  return out;
}

// A synthetic flow event; `i` makes src port and message distinct.
inline logging::Event flow_event(logging::EventType type, int i, const std::string& rule = "db-tls",
                                 const std::string& dst = "198.18.130.10") {
  logging::Event e;
  e.type = type;
  e.severity = logging::Severity::kWarning;
  e.flow = logging::FlowEndpoints{4,   "198.18.0.2", static_cast<uint16_t>(10000 + i % 50000),
                                  dst, 5432,         "tcp"};
  e.action = type == logging::EventType::kPlaintextBlocked ? "drop" : "report";
  e.mode = type == logging::EventType::kPlaintextBlocked ? "enforce" : "monitor";
  e.reason = "not_handshake_record";
  e.rule = rule;
  e.boundary = "remote-region";
  e.policy_version = "2026-11-21.1";
  e.policy_generation = 1;
  e.message = "synthetic " + std::to_string(i);
  return e;
}

// Polls `pred` every few milliseconds up to `timeout`.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

}  // namespace tlswall::testing
