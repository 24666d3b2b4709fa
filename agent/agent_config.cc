#include "agent/agent_config.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

#include <toml++/toml.h>

#include "logging/config_toml.h"

namespace tlswall::agent {
namespace {

using config::check_keys;
using config::fail;
using config::get_string;
using config::get_table;
using config::resolve;
using config::where;

uint32_t get_u32(const std::string& name, const toml::table& t, const char* key, uint32_t def,
                 uint32_t lo, uint32_t hi) {
  return static_cast<uint32_t>(config::get_uint(name, t, key, def, lo, hi));
}

}  // namespace

AgentConfig parse_agent_config(const std::string& text, const std::string& name,
                               const std::string& base_dir) {
  toml::table root;
  try {
    root = toml::parse(text, name);
  } catch (const toml::parse_error& e) {
    throw std::runtime_error(where(name, e.source()) + ": " + std::string(e.description()));
  }
  check_keys(name, root,
             {"interfaces", "policy", "watch_policy", "pin_root", "on_stop", "fail_mode", "control",
              "events", "log", "bpf", "attribution", "metrics", "upgrade"},
             "the agent config");
  AgentConfig c;
  c.source = name;
  if (const toml::node* n = root.get("interfaces")) {
    const toml::array* a = n->as_array();
    if (!a) fail(name, *n, "'interfaces' must be an array of interface names or patterns");
    for (const auto& item : *a) {
      if (!item.is_string()) fail(name, item, "interface names must be strings");
      const std::string s = item.value<std::string>().value();
      const std::string bare = !s.empty() && s[0] == '!' ? s.substr(1) : s;
      if (bare.empty() || bare.size() >= 16 || bare.find('/') != std::string::npos) {
        fail(name, item, "'" + s + "' is not a valid interface name or pattern");
      }
      c.interfaces.push_back(s);
    }
  }
  c.policy_path = resolve(base_dir, get_string(name, root, "policy", "policy.d"));
  c.pin_root = resolve(base_dir, get_string(name, root, "pin_root", c.pin_root));
  if (const toml::node* n = root.get("watch_policy")) {
    if (!n->is_boolean()) fail(name, *n, "'watch_policy' must be true or false");
    c.watch_policy = n->value<bool>().value();
  }
  if (const toml::table* t = get_table(name, root, "attribution")) {
    check_keys(name, *t, {"backends", "sock_ops_cgroup"}, "[attribution]");
    if (const toml::node* n = t->get("backends")) {
      const toml::array* a = n->as_array();
      if (!a) {
        fail(name, *n,
             "'backends' must be an array of kprobe, fentry, tp_btf, sock_ops ([] turns "
             "attribution off)");
      }
      c.attribution_backends.clear();
      for (const auto& item : *a) {
        const auto v = item.value<std::string>();
        if (!v || (*v != "kprobe" && *v != "fentry" && *v != "tp_btf" && *v != "sock_ops")) {
          fail(name, item, "unknown attribution backend; use kprobe, fentry, tp_btf or sock_ops");
        }
        c.attribution_backends.push_back(*v);
      }
    }
    c.sock_ops_cgroup = get_string(name, *t, "sock_ops_cgroup", "");
    if (!c.sock_ops_cgroup.empty() && c.sock_ops_cgroup[0] != '/') {
      fail(name, *t->get("sock_ops_cgroup"),
           "'sock_ops_cgroup' is a cgroup path such as \"/system.slice\" (under the cgroup v2 "
           "mount)");
    }
  }
  if (const toml::table* t = get_table(name, root, "upgrade")) {
    check_keys(name, *t, {"cgroup", "port", "user", "workers"}, "[upgrade]");
    c.upgrade_cgroup = get_string(name, *t, "cgroup", "");
    if (!c.upgrade_cgroup.empty() && c.upgrade_cgroup[0] != '/') {
      fail(name, *t->get("cgroup"),
           "'cgroup' is a cgroup path such as \"/system.slice\" (under the cgroup v2 mount)");
    }
    c.upgrade_port = static_cast<uint16_t>(get_u32(name, *t, "port", c.upgrade_port, 1, 65535));
    c.upgrade_user = get_string(name, *t, "user", c.upgrade_user);
    if (c.upgrade_user.empty() || c.upgrade_user == "root") {
      fail(name, *t->get("user"),
           "'user' names the unprivileged user the proxy runs as (never root)");
    }
    c.upgrade_workers = get_u32(name, *t, "workers", c.upgrade_workers, 1, 64);
  }
  if (const toml::table* t = get_table(name, root, "metrics")) {
    check_keys(name, *t, {"listen", "allow_remote"}, "[metrics]");
    c.metrics_listen = get_string(name, *t, "listen", "");
    if (const toml::node* n = t->get("allow_remote")) {
      if (!n->is_boolean()) fail(name, *n, "'allow_remote' must be true or false");
      c.metrics_allow_remote = n->value<bool>().value();
    }
  }
  c.on_stop = get_string(name, root, "on_stop", c.on_stop);
  c.fail_mode = get_string(name, root, "fail_mode", c.fail_mode);
  if (c.fail_mode != "open" && c.fail_mode != "closed") {
    fail(name, *root.get("fail_mode"), "'fail_mode' must be \"open\" or \"closed\"");
  }
  if (c.on_stop != "keep-enforcing" && c.on_stop != "detach") {
    fail(name, *root.get("on_stop"), "'on_stop' must be \"keep-enforcing\" or \"detach\"");
  }
  if (const toml::table* t = get_table(name, root, "control")) {
    check_keys(name, *t, {"socket", "group"}, "[control]");
    c.control_socket = resolve(base_dir, get_string(name, *t, "socket", c.control_socket));
    c.control_group = get_string(name, *t, "group", "");
  }
  // [events] belongs to the logging room: sinks, ids, aggregation.
  if (const toml::table* t = get_table(name, root, "events")) {
    c.events = logging::parse_events_config(*t, name, base_dir);
  } else {
    c.events = logging::parse_events_config(toml::table{}, name, base_dir);
  }
  c.events_json = c.events.json.empty() ? "" : c.events.json.front().path;
  if (const toml::table* t = get_table(name, root, "log")) {
    check_keys(name, *t, {"level"}, "[log]");
    c.log_level = get_string(name, *t, "level", c.log_level);
  }
  if (const toml::table* t = get_table(name, root, "bpf")) {
    check_keys(name, *t, {"flow_table_entries", "ringbuf_bytes"}, "[bpf]");
    c.flow_table_entries =
        get_u32(name, *t, "flow_table_entries", c.flow_table_entries, 1024, 1u << 24);
    c.ringbuf_bytes = get_u32(name, *t, "ringbuf_bytes", c.ringbuf_bytes, 4096, 1u << 30);
    if (c.ringbuf_bytes & (c.ringbuf_bytes - 1)) {
      fail(name, *t->get("ringbuf_bytes"), "'ringbuf_bytes' must be a power of two");
    }
  }
  return c;
}

AgentConfig load_agent_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot read agent config");
  std::stringstream ss;
  ss << in.rdbuf();
  const auto dir = std::filesystem::absolute(path).parent_path().string();
  return parse_agent_config(ss.str(), path, dir);
}

AgentConfig embedded_default_config() {
  static const char* kDefault =
#include "tlswalld_default_config.inc"
      ;
  AgentConfig c = parse_agent_config(kDefault, "<embedded default>", "/etc/tlswall");
  return c;
}

}  // namespace tlswall::agent
