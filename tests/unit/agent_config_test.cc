// parse_agent_config / load_agent_config / embedded_default_config: the
// shipped config, defaults, path resolution, and error messages that point
// at file:line:col.
#include <gtest/gtest.h>

#include <regex>
#include <stdexcept>
#include <string>

#include "agent/agent_config.h"

namespace tlswall::agent {
namespace {

const std::string kShipped = std::string(TLSWALL_SOURCE_DIR) + "/configs/tlswalld.toml";

// The message of the std::runtime_error `text` raises, or "" (and a test
// failure) if it parses.
std::string ErrorOf(const std::string& text, const std::string& name = "agent.toml") {
  try {
    parse_agent_config(text, name, "/base");
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  ADD_FAILURE() << "parsed without error:\n" << text;
  return "";
}

TEST(AgentConfig, ShippedConfigParses) {
  const AgentConfig c = load_agent_config(kShipped);
  EXPECT_EQ(c.source, kShipped);
  ASSERT_EQ(c.interfaces.size(), 1u);
  EXPECT_EQ(c.interfaces[0], "eth0");
  // "policy.d" is relative to the file's directory.
  EXPECT_EQ(c.policy_path, std::string(TLSWALL_SOURCE_DIR) + "/configs/policy.d");
  EXPECT_EQ(c.pin_root, "/sys/fs/bpf/tlswall");
  EXPECT_EQ(c.control_socket, "/run/tlswall/control.sock");
  EXPECT_EQ(c.control_group, "");
  EXPECT_EQ(c.events_json, "/var/log/tlswall/events.jsonl");
  EXPECT_EQ(c.log_level, "info");
  EXPECT_EQ(c.flow_table_entries, 131072u);
  EXPECT_EQ(c.ringbuf_bytes, 1048576u);
}

TEST(AgentConfig, MissingFileThrowsWithPath) {
  const std::string path = std::string(TLSWALL_SOURCE_DIR) + "/configs/no-such-file.toml";
  try {
    load_agent_config(path);
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST(AgentConfig, EmptyConfigGivesDefaults) {
  const AgentConfig c = parse_agent_config("", "empty.toml", "/base");
  EXPECT_EQ(c.source, "empty.toml");
  EXPECT_TRUE(c.interfaces.empty());
  EXPECT_EQ(c.policy_path, "/base/policy.d");
  EXPECT_EQ(c.pin_root, "/sys/fs/bpf/tlswall");
  EXPECT_EQ(c.control_socket, "/run/tlswall/control.sock");
  EXPECT_EQ(c.control_group, "");
  EXPECT_EQ(c.events_json, "/var/log/tlswall/events.jsonl");
  EXPECT_EQ(c.log_level, "info");
  EXPECT_EQ(c.flow_table_entries, 131072u);
  EXPECT_EQ(c.ringbuf_bytes, 1u << 20);
}

TEST(AgentConfig, EmptySectionsKeepDefaults) {
  const AgentConfig c =
      parse_agent_config("[control]\n[events]\n[log]\n[bpf]\n", "sections.toml", "/base");
  EXPECT_EQ(c.control_socket, "/run/tlswall/control.sock");
  EXPECT_EQ(c.events_json, "/var/log/tlswall/events.jsonl");
  EXPECT_EQ(c.log_level, "info");
  EXPECT_EQ(c.flow_table_entries, 131072u);
  EXPECT_EQ(c.ringbuf_bytes, 1u << 20);
}

TEST(AgentConfig, AllKeysAreRead) {
  const AgentConfig c = parse_agent_config(R"(
interfaces = ["eth0", "ens3"]
policy = "/etc/tw/policy.toml"
pin_root = "/sys/fs/bpf/tw2"
[control]
socket = "/run/tw/ctl.sock"
group = "tlswall"
[events]
json_file = "/var/log/tw/ev.jsonl"
[log]
level = "debug"
[bpf]
flow_table_entries = 4096
ringbuf_bytes = 65536
)",
                                           "all.toml", "/base");
  EXPECT_EQ(c.interfaces, (std::vector<std::string>{"eth0", "ens3"}));
  EXPECT_EQ(c.policy_path, "/etc/tw/policy.toml");
  EXPECT_EQ(c.pin_root, "/sys/fs/bpf/tw2");
  EXPECT_EQ(c.control_socket, "/run/tw/ctl.sock");
  EXPECT_EQ(c.control_group, "tlswall");
  EXPECT_EQ(c.events_json, "/var/log/tw/ev.jsonl");
  EXPECT_EQ(c.log_level, "debug");
  EXPECT_EQ(c.flow_table_entries, 4096u);
  EXPECT_EQ(c.ringbuf_bytes, 65536u);
}

TEST(AgentConfig, RelativePathsResolveAgainstBaseDir) {
  const AgentConfig c = parse_agent_config(R"(
policy = "pol/main.toml"
[control]
socket = "run/../run/ctl.sock"
[events]
json_file = "../log/ev.jsonl"
)",
                                           "rel.toml", "/etc/tlswall");
  EXPECT_EQ(c.policy_path, "/etc/tlswall/pol/main.toml");
  EXPECT_EQ(c.control_socket, "/etc/tlswall/run/ctl.sock");
  EXPECT_EQ(c.events_json, "/etc/log/ev.jsonl");
}

TEST(AgentConfig, StdoutAndAbsolutePathsAreKept) {
  const AgentConfig c = parse_agent_config(R"(
policy = "/abs/policy.d"
[events]
json_file = "-"
)",
                                           "keep.toml", "/etc/tlswall");
  EXPECT_EQ(c.policy_path, "/abs/policy.d");
  EXPECT_EQ(c.events_json, "-");
}

// agent_config.h: "Relative paths are resolved against `base_dir`." pin_root
// is a path too; left relative it would depend on the daemon's cwd.
TEST(AgentConfig, RelativePinRootResolvesAgainstBaseDir) {
  const AgentConfig c = parse_agent_config("pin_root = \"pins\"\n", "pin.toml", "/etc/tlswall");
  EXPECT_EQ(c.pin_root, "/etc/tlswall/pins");
}

TEST(AgentConfig, UnknownTopLevelKeyNamesFileLineColumnAndKey) {
  const std::string e = ErrorOf("interfaces = [\"eth0\"]\n  polcy = \"x\"\n", "my.toml");
  EXPECT_EQ(e.rfind("my.toml:2:3: ", 0), 0u) << e;
  EXPECT_NE(e.find("'polcy'"), std::string::npos) << e;
  EXPECT_NE(e.find("policy"), std::string::npos) << "accepted keys listed: " << e;
}

TEST(AgentConfig, UnknownKeyInSectionNamesSectionAndKey) {
  const std::string e = ErrorOf("[control]\nsocket = \"/a\"\nmode = \"0600\"\n");
  EXPECT_EQ(e.rfind("agent.toml:3:1: ", 0), 0u) << e;
  EXPECT_NE(e.find("'mode'"), std::string::npos) << e;
  EXPECT_NE(e.find("[control]"), std::string::npos) << e;

  const std::string b = ErrorOf("[bpf]\nflow_entries = 4096\n");
  EXPECT_EQ(b.rfind("agent.toml:2:1: ", 0), 0u) << b;
  EXPECT_NE(b.find("'flow_entries'"), std::string::npos) << b;
}

TEST(AgentConfig, SyntaxErrorHasLocation) {
  const std::string e = ErrorOf("interfaces = [\"eth0\"\nlog = 1\n", "syn.toml");
  EXPECT_TRUE(std::regex_search(e, std::regex("^syn\\.toml:[12]:[0-9]+: \\S"))) << e;
}

TEST(AgentConfig, WrongTypesAreRejectedWithLocation) {
  struct Case {
    const char* text;
    const char* where;
    const char* words;
  };
  const Case cases[] = {
      {"interfaces = \"eth0\"\n", "agent.toml:1:14: ", "'interfaces' must be an array"},
      {"interfaces = [\"eth0\", 7]\n", "agent.toml:1:23: ", "must be strings"},
      {"policy = 5\n", "agent.toml:1:10: ", "'policy' must be a string"},
      {"pin_root = true\n", "agent.toml:1:12: ", "'pin_root' must be a string"},
      {"control = \"/run/x.sock\"\n", "agent.toml:1:11: ", "'control' must be a table"},
      {"[log]\nlevel = 3\n", "agent.toml:2:9: ", "'level' must be a string"},
      {"[bpf]\nflow_table_entries = \"big\"\n",
       "agent.toml:2:22: ", "'flow_table_entries' must be an integer"},
      {"[bpf]\nringbuf_bytes = 1.5\n", "agent.toml:2:17: ", "'ringbuf_bytes' must be an integer"},
  };
  for (const auto& c : cases) {
    const std::string e = ErrorOf(c.text);
    EXPECT_EQ(e.rfind(c.where, 0), 0u) << c.text << " -> " << e;
    EXPECT_NE(e.find(c.words), std::string::npos) << c.text << " -> " << e;
  }
}

TEST(AgentConfig, TableSizesOutOfRange) {
  EXPECT_NE(ErrorOf("[bpf]\nflow_table_entries = 1023\n").find("between 1024 and"),
            std::string::npos);
  EXPECT_NE(ErrorOf("[bpf]\nflow_table_entries = 16777217\n").find("between"), std::string::npos);
  EXPECT_NE(ErrorOf("[bpf]\nflow_table_entries = -1\n").find("between"), std::string::npos);
  EXPECT_NE(ErrorOf("[bpf]\nringbuf_bytes = 2048\n").find("between 4096 and"), std::string::npos);
  // Larger than 32 bits must not wrap into range.
  EXPECT_NE(ErrorOf("[bpf]\nringbuf_bytes = 4294971392\n").find("between"), std::string::npos);
  const AgentConfig lo = parse_agent_config("[bpf]\nflow_table_entries = 1024\n", "a", "/");
  EXPECT_EQ(lo.flow_table_entries, 1024u);
  const AgentConfig hi = parse_agent_config("[bpf]\nflow_table_entries = 16777216\n", "a", "/");
  EXPECT_EQ(hi.flow_table_entries, 16777216u);
}

TEST(AgentConfig, RingbufMustBeAPowerOfTwo) {
  const std::string e = ErrorOf("[bpf]\nflow_table_entries = 4096\nringbuf_bytes = 1000000\n");
  EXPECT_EQ(e.rfind("agent.toml:3:17: ", 0), 0u) << e;
  EXPECT_NE(e.find("power of two"), std::string::npos) << e;
  EXPECT_NE(ErrorOf("[bpf]\nringbuf_bytes = 12288\n").find("power of two"), std::string::npos);
  for (uint32_t v : {4096u, 8192u, 1u << 20, 1u << 30}) {
    const AgentConfig c =
        parse_agent_config("[bpf]\nringbuf_bytes = " + std::to_string(v) + "\n", "a.toml", "/");
    EXPECT_EQ(c.ringbuf_bytes, v);
  }
}

TEST(AgentConfig, InterfaceNames) {
  // IFNAMSIZ is 16 including the NUL: 15 characters is the longest name.
  const AgentConfig ok = parse_agent_config("interfaces = [\"abcdefghijklmno\"]\n", "a.toml", "/");
  ASSERT_EQ(ok.interfaces.size(), 1u);
  EXPECT_EQ(ok.interfaces[0], "abcdefghijklmno");

  const std::string e = ErrorOf("interfaces = [\"eth0\", \"abcdefghijklmnop\"]\n");
  EXPECT_EQ(e.rfind("agent.toml:1:23: ", 0), 0u) << e;
  EXPECT_NE(e.find("'abcdefghijklmnop' is not a valid interface name"), std::string::npos) << e;
  EXPECT_NE(ErrorOf("interfaces = [\"\"]\n").find("not a valid interface name"), std::string::npos);
  EXPECT_NE(ErrorOf("interfaces = [\"a/b\"]\n").find("not a valid interface name"),
            std::string::npos);
}

TEST(AgentConfig, EmbeddedDefaultIsTheShippedFileUnderEtc) {
  const AgentConfig d = embedded_default_config();
  const AgentConfig shipped = load_agent_config(kShipped);
  EXPECT_EQ(d.source, "<embedded default>");
  EXPECT_EQ(d.policy_path, "/etc/tlswall/policy.d");
  EXPECT_EQ(d.interfaces, shipped.interfaces);
  EXPECT_EQ(d.pin_root, shipped.pin_root);
  EXPECT_EQ(d.control_socket, shipped.control_socket);
  EXPECT_EQ(d.control_group, shipped.control_group);
  EXPECT_EQ(d.events_json, shipped.events_json);
  EXPECT_EQ(d.log_level, shipped.log_level);
  EXPECT_EQ(d.flow_table_entries, shipped.flow_table_entries);
  EXPECT_EQ(d.ringbuf_bytes, shipped.ringbuf_bytes);
}

}  // namespace
}  // namespace tlswall::agent
