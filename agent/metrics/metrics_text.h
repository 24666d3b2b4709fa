// MetricsText: renders metric families in the Prometheus text exposition
// format 0.0.4: `# HELP`, `# TYPE counter|gauge`, then one line per sample
// `name{label="value",...} value`. Names are checked, label values and help
// text escaped, so nothing a caller passes (an interface name, a rule name
// from a policy file) can break the format.
//
//   MetricsText m;
//   m.family("tlswall_packets_total", MetricType::kCounter, "Packets judged.")
//       .sample({{"interface", "eth0"}}, 123);
//   std::string body = m.str();
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace tlswall::agent {

enum class MetricType { kCounter, kGauge };

using MetricLabels = std::vector<std::pair<std::string, std::string>>;

class MetricsText {
 public:
  // Starts a family; its samples follow. Throws std::invalid_argument for a
  // name outside [a-zA-Z_:][a-zA-Z0-9_:]* or a family already started.
  MetricsText& family(const std::string& name, MetricType type, const std::string& help);

  // One sample of the current family. Throws std::invalid_argument for a
  // label name outside [a-zA-Z_][a-zA-Z0-9_]*, one starting with "__"
  // (reserved), or a label name given twice; std::logic_error before any
  // family(). Doubles: NaN, +Inf, -Inf as Prometheus spells them; integral
  // values are printed exactly.
  MetricsText& sample(const MetricLabels& labels, double value);
  template <typename T, std::enable_if_t<std::is_integral_v<T>, int> = 0>
  MetricsText& sample(const MetricLabels& labels, T value) {
    return add_line(labels, std::to_string(value));
  }
  template <typename T, std::enable_if_t<std::is_arithmetic_v<T>, int> = 0>
  MetricsText& sample(T value) {
    return sample(MetricLabels{}, value);
  }

  const std::string& str() const { return out_; }

  static bool valid_metric_name(std::string_view name);
  static bool valid_label_name(std::string_view name);
  // Backslash, double quote and newline escaped (label values).
  static std::string escape_label_value(std::string_view v);
  // Backslash and newline escaped (HELP text).
  static std::string escape_help(std::string_view v);
  static std::string format_value(double v);

 private:
  MetricsText& add_line(const MetricLabels& labels, const std::string& value);

  std::string out_;
  std::string current_;  // family being written
  std::set<std::string> families_;
};

}  // namespace tlswall::agent
