// A strict reader of the Prometheus text exposition format 0.0.4, for tests:
// parses what MetricsText renders back into families and samples, undoing
// the escapes, and fails on anything malformed.
#pragma once

#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace tlswall::agent::metrics_test {

struct ParsedSample {
  std::string name;
  std::vector<std::pair<std::string, std::string>> labels;
  std::string value;
};

struct ParsedFamily {
  std::string help;
  std::string type;
  std::vector<ParsedSample> samples;
};

struct ParsedExposition {
  std::vector<std::string> order;  // family names as they appeared
  std::map<std::string, ParsedFamily> families;
};

inline std::string unescape(const std::string& s, size_t& i, char end, bool quotes) {
  std::string out;
  while (i < s.size() && s[i] != end) {
    char c = s[i++];
    if (c == '\\') {
      if (i >= s.size()) throw std::runtime_error("dangling backslash");
      const char e = s[i++];
      if (e == 'n') {
        c = '\n';
      } else if (e == '\\') {
        c = '\\';
      } else if (e == '"' && quotes) {
        c = '"';
      } else {
        throw std::runtime_error(std::string("bad escape \\") + e);
      }
    } else if (c == '"' && quotes) {
      throw std::runtime_error("unescaped quote");
    }
    out += c;
  }
  return out;
}

inline ParsedExposition parse_exposition(const std::string& text) {
  ParsedExposition out;
  if (!text.empty() && text.back() != '\n') throw std::runtime_error("no final newline");
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    const std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) {
      const bool help = line[2] == 'H';
      const size_t sp = line.find(' ', 7);
      if (sp == std::string::npos) throw std::runtime_error("comment without text: " + line);
      const std::string name = line.substr(7, sp - 7);
      auto [it, fresh] = out.families.try_emplace(name);
      if (fresh) out.order.push_back(name);
      if (help) {
        size_t i = sp + 1;
        it->second.help = unescape(line, i, '\0', false);
      } else {
        it->second.type = line.substr(sp + 1);
        if (it->second.type != "counter" && it->second.type != "gauge")
          throw std::runtime_error("bad type: " + line);
      }
      continue;
    }
    if (line.empty() || line[0] == '#') throw std::runtime_error("unexpected line: " + line);
    ParsedSample s;
    size_t i = line.find_first_of("{ ");
    if (i == std::string::npos) throw std::runtime_error("no value: " + line);
    s.name = line.substr(0, i);
    if (line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        const size_t eq = line.find('=', i);
        if (eq == std::string::npos || eq + 1 >= line.size() || line[eq + 1] != '"')
          throw std::runtime_error("bad label: " + line);
        const std::string k = line.substr(i, eq - i);
        i = eq + 2;
        const std::string v = unescape(line, i, '"', true);
        if (i >= line.size()) throw std::runtime_error("unterminated label value: " + line);
        ++i;  // closing quote
        s.labels.emplace_back(k, v);
        if (i < line.size() && line[i] == ',') ++i;
      }
      if (i >= line.size()) throw std::runtime_error("unterminated labels: " + line);
      ++i;  // '}'
    }
    if (i >= line.size() || line[i] != ' ') throw std::runtime_error("no value: " + line);
    s.value = line.substr(i + 1);
    if (s.value.empty() || s.value.find(' ') != std::string::npos)
      throw std::runtime_error("bad value: " + line);
    const auto f = out.families.find(s.name);
    if (f == out.families.end()) throw std::runtime_error("sample before its TYPE: " + line);
    f->second.samples.push_back(std::move(s));
  }
  return out;
}

}  // namespace tlswall::agent::metrics_test
