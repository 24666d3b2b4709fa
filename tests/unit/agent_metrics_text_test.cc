// MetricsText: exact rendering, escaping that survives a round trip through
// a strict reader, name validation, value formatting.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include "agent/metrics/metrics_text.h"
#include "tests/unit/agent_metrics_exposition_parser.h"

namespace tlswall::agent {
namespace {

TEST(MetricsTextTest, RendersHelpTypeAndSamples) {
  MetricsText m;
  m.family("tlswall_packets_total", MetricType::kCounter, "Packets judged by the classifier.")
      .sample({{"interface", "eth0"}}, 123)
      .sample({{"interface", "eth1"}}, uint64_t{4});
  m.family("tlswall_policy_generation", MetricType::kGauge, "Policy generation in force.")
      .sample(7);
  m.family("tlswall_up", MetricType::kGauge, "1 while the agent runs.").sample(1.0);
  EXPECT_EQ(m.str(),
            "# HELP tlswall_packets_total Packets judged by the classifier.\n"
            "# TYPE tlswall_packets_total counter\n"
            "tlswall_packets_total{interface=\"eth0\"} 123\n"
            "tlswall_packets_total{interface=\"eth1\"} 4\n"
            "# HELP tlswall_policy_generation Policy generation in force.\n"
            "# TYPE tlswall_policy_generation gauge\n"
            "tlswall_policy_generation 7\n"
            "# HELP tlswall_up 1 while the agent runs.\n"
            "# TYPE tlswall_up gauge\n"
            "tlswall_up 1\n");
}

TEST(MetricsTextTest, EscapesLabelValuesAndHelpAndRoundTrips) {
  const std::string nasty = "C:\\path \"quoted\"\nsecond line } , = {";
  MetricsText m;
  m.family("tlswall_rule_info", MetricType::kGauge, "Help with \\ backslash\nand newline \"q\"")
      .sample({{"rule", nasty}, {"mode", "enforce"}, {"empty", ""}}, 1);
  EXPECT_NE(m.str().find("rule=\"C:\\\\path \\\"quoted\\\"\\nsecond line } , = {\""),
            std::string::npos)
      << m.str();
  EXPECT_NE(m.str().find("# HELP tlswall_rule_info Help with \\\\ backslash\\nand newline \"q\"\n"),
            std::string::npos)
      << m.str();
  const auto parsed = metrics_test::parse_exposition(m.str());
  ASSERT_EQ(parsed.order.size(), 1u);
  const auto& f = parsed.families.at("tlswall_rule_info");
  EXPECT_EQ(f.help, "Help with \\ backslash\nand newline \"q\"");
  EXPECT_EQ(f.type, "gauge");
  ASSERT_EQ(f.samples.size(), 1u);
  ASSERT_EQ(f.samples[0].labels.size(), 3u);
  EXPECT_EQ(f.samples[0].labels[0], (std::pair<std::string, std::string>{"rule", nasty}));
  EXPECT_EQ(f.samples[0].labels[1], (std::pair<std::string, std::string>{"mode", "enforce"}));
  EXPECT_EQ(f.samples[0].labels[2], (std::pair<std::string, std::string>{"empty", ""}));
  EXPECT_EQ(f.samples[0].value, "1");
  // Every line of the output is one line: the newline never escapes.
  size_t lines = 0;
  for (char c : m.str()) lines += c == '\n';
  EXPECT_EQ(lines, 3u);
}

TEST(MetricsTextTest, ValidatesNames) {
  for (const char* ok : {"a", "_a", ":a", "tlswall_x:rate5m", "A9_:"}) {
    EXPECT_TRUE(MetricsText::valid_metric_name(ok)) << ok;
  }
  for (const char* bad : {"", "9a", "a-b", "a b", "a.b", "é", "a\n"}) {
    EXPECT_FALSE(MetricsText::valid_metric_name(bad)) << bad;
    MetricsText m;
    EXPECT_THROW(m.family(bad, MetricType::kGauge, "h"), std::invalid_argument) << bad;
  }
  EXPECT_TRUE(MetricsText::valid_label_name("interface_2"));
  EXPECT_FALSE(MetricsText::valid_label_name("a:b")) << "colons only in metric names";
  EXPECT_FALSE(MetricsText::valid_label_name("1a"));
  MetricsText m;
  m.family("x", MetricType::kCounter, "h");
  EXPECT_THROW(m.sample({{"a-b", "v"}}, 1), std::invalid_argument);
  EXPECT_THROW(m.sample({{"__name__", "v"}}, 1), std::invalid_argument) << "reserved";
  EXPECT_THROW(m.sample({{"a", "1"}, {"a", "2"}}, 1), std::invalid_argument) << "twice";
  EXPECT_THROW(m.family("x", MetricType::kGauge, "again"), std::invalid_argument);
  MetricsText empty;
  EXPECT_THROW(empty.sample(1), std::logic_error);
}

TEST(MetricsTextTest, FormatsValues) {
  EXPECT_EQ(MetricsText::format_value(0), "0");
  EXPECT_EQ(MetricsText::format_value(1e6), "1000000");
  EXPECT_EQ(MetricsText::format_value(-3), "-3");
  EXPECT_EQ(MetricsText::format_value(0.25), "0.25");
  EXPECT_EQ(MetricsText::format_value(1.0 / 3), "0.3333333333333333");
  EXPECT_EQ(MetricsText::format_value(1e300), "1e+300");
  EXPECT_EQ(MetricsText::format_value(std::nan("")), "NaN");
  EXPECT_EQ(MetricsText::format_value(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(MetricsText::format_value(-std::numeric_limits<double>::infinity()), "-Inf");
  MetricsText m;
  m.family("big_total", MetricType::kCounter, "h")
      .sample({}, std::numeric_limits<uint64_t>::max())
      .sample({{"k", "v"}}, int64_t{-5});
  EXPECT_EQ(m.str(),
            "# HELP big_total h\n# TYPE big_total counter\n"
            "big_total 18446744073709551615\nbig_total{k=\"v\"} -5\n");
}

}  // namespace
}  // namespace tlswall::agent
