#include "agent/metrics/metrics_text.h"

#include <charconv>
#include <cmath>
#include <stdexcept>

namespace tlswall::agent {
namespace {

bool alpha_(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool digit(char c) { return c >= '0' && c <= '9'; }

}  // namespace

bool MetricsText::valid_metric_name(std::string_view n) {
  if (n.empty() || !(alpha_(n[0]) || n[0] == ':')) return false;
  for (char c : n) {
    if (!(alpha_(c) || digit(c) || c == ':')) return false;
  }
  return true;
}

bool MetricsText::valid_label_name(std::string_view n) {
  if (n.empty() || !alpha_(n[0])) return false;
  for (char c : n) {
    if (!(alpha_(c) || digit(c))) return false;
  }
  return true;
}

std::string MetricsText::escape_label_value(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string MetricsText::escape_help(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string MetricsText::format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  // Integral values below 2^53 exactly, without an exponent.
  if (std::fabs(v) < 9007199254740992.0 && v == std::trunc(v)) {
    return std::to_string(static_cast<int64_t>(v));
  }
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);  // shortest round trip
  return std::string(buf, r.ptr);
}

MetricsText& MetricsText::family(const std::string& name, MetricType type,
                                 const std::string& help) {
  if (!valid_metric_name(name)) {
    throw std::invalid_argument("metric name '" + name + "' is not [a-zA-Z_:][a-zA-Z0-9_:]*");
  }
  if (!families_.insert(name).second) {
    throw std::invalid_argument("metric family '" + name + "' given twice");
  }
  current_ = name;
  out_ += "# HELP " + name + " " + escape_help(help) + "\n";
  out_ += "# TYPE " + name + (type == MetricType::kCounter ? " counter\n" : " gauge\n");
  return *this;
}

MetricsText& MetricsText::sample(const MetricLabels& labels, double value) {
  return add_line(labels, format_value(value));
}

MetricsText& MetricsText::add_line(const MetricLabels& labels, const std::string& value) {
  if (current_.empty()) throw std::logic_error("metric sample before any family()");
  std::string line = current_;
  if (!labels.empty()) {
    std::set<std::string> seen;
    line += '{';
    bool first = true;
    for (const auto& [k, v] : labels) {
      if (!valid_label_name(k) || k.compare(0, 2, "__") == 0) {
        throw std::invalid_argument("label name '" + k + "' of " + current_ +
                                    " is not [a-zA-Z_][a-zA-Z0-9_]* (or starts with __)");
      }
      if (!seen.insert(k).second) {
        throw std::invalid_argument("label '" + k + "' given twice in " + current_);
      }
      if (!first) line += ',';
      first = false;
      line += k + "=\"" + escape_label_value(v) + '"';
    }
    line += '}';
  }
  out_ += line + ' ' + value + '\n';
  return *this;
}

}  // namespace tlswall::agent
