// Shared by the control API tests: a fake ControlHandler with canned,
// distinct replies, a fixture running a real ControlServer on a Unix socket
// in a temporary directory (dispatch() driven from epoll on a thread, as the
// daemon's loop does), and helpers to act as another user (fork, then
// setgroups/setgid/setuid) for the access-control tests.
#pragma once

#include <gtest/gtest.h>

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "agent/control/control_server.h"
#include "agent/control/status_convert.h"
#include "tlswall_control_constants.h"

namespace tlswall::control::test {

// Unused ids for the unprivileged callers the access tests become.
constexpr uid_t kMemberUid = 4242;
constexpr uid_t kOutsiderUid = 4243;

// An existing unprivileged group to give the socket to ("users", else
// "nogroup"); "" if neither exists.
inline std::string TestGroup() {
  for (const char* g : {"users", "nogroup"}) {
    if (::getgrnam(g)) return g;
  }
  return "";
}

inline gid_t GroupId(const std::string& name) { return ::getgrnam(name.c_str())->gr_gid; }

inline agent::StatusReport SampleStatus() {
  agent::StatusReport s;
  s.version = "9.9.9";
  s.uptime_s = 3600;
  s.started_at = "2026-11-21T11:00:00.000Z";
  s.host = "web-1";
  s.policy_path = "/etc/tlswall/policy.d";
  s.policy_version = "2026-11-21.1";
  s.policy_hash = "ab12cd";
  s.policy_generation = 7;
  s.rules = {{"db-tls", "enforce"}, {"web-tls", "monitor"}};
  s.tables = {{"flows", 1}, {"lpm4", 1}, {"counters", 1}, {"events", 1}};
  for (uint32_t c = 0; c < TW_CNT_MAX; ++c) s.counters[c] = 100 + c;
  return s;
}

// Canned, distinct replies; records what it was asked and by whom.
class FakeHandler : public ControlHandler {
 public:
  struct Call {
    std::string method;
    std::string args;
    Peer peer;
  };

  void ping(api::PingReply& r) override {
    Record("ping", "");
    r.version = "9.9.9";
    r.api_version = api::g_tlswall_control_constants.API_VERSION;
    r.pid = ::getpid();
  }
  void status(api::StatusReply& r) override {
    Record("status", "");
    r = to_thrift(SampleStatus());
  }
  void flows(std::vector<api::FlowRecord>& r, const api::FlowsQuery& q) override {
    Record("flows", (q.__isset.verdict ? "verdict=" + q.verdict + " " : std::string()) +
                        (q.__isset.rule ? "rule=" + q.rule + " " : std::string()) +
                        (q.__isset.pid ? "pid=" + std::to_string(q.pid) + " " : std::string()) +
                        (q.__isset.limit ? "limit=" + std::to_string(q.limit) : std::string()));
    std::lock_guard<std::mutex> l(mu_);
    r = flows_;
  }
  void events(api::EventsReply& r, int64_t after_seq, int32_t max) override {
    Record("events", std::to_string(after_seq) + " " + std::to_string(max));
    std::lock_guard<std::mutex> l(mu_);
    r.next_seq = after_seq;
    // after_seq 0, or one beyond the newest: a new reader gets the newest
    // `max` (the IDL's contract, as the daemon's RecentEvents does it).
    if (!events_.empty() && (after_seq == 0 || after_seq > events_.back().seq)) {
      const size_t n = std::min(events_.size(), static_cast<size_t>(std::max(max, 0)));
      after_seq = n == events_.size() ? 0 : events_[events_.size() - n - 1].seq;
      r.next_seq = n ? after_seq : events_.back().seq;
    }
    for (const auto& e : events_) {
      if (e.seq <= after_seq) continue;
      if (static_cast<int32_t>(r.events.size()) >= max) break;
      r.events.push_back(e);
      r.next_seq = e.seq;
    }
    if (!events_.empty()) {
      r.oldest_seq = events_.front().seq;
      r.newest_seq = events_.back().seq;
      if (after_seq > 0) r.skipped = std::max<int64_t>(0, r.oldest_seq - after_seq - 1);
    }
  }
  void policy_show(api::PolicyShowReply& r) override {
    Record("policy_show", "");
    r.path = "/etc/tlswall/policy.d";
    r.version = "2026-11-21.1";
    r.hash = "ab12cd";
    r.generation = 7;
    api::PolicyRule rule;
    rule.name = "db-tls";
    rule.boundary = "dbs";
    rule.ports = {"5432"};
    rule.mode = "monitor";
    rule.effective_mode = "enforce";
    rule.overridden = true;
    r.rules.push_back(rule);
  }
  void reload(api::ReloadReply& r) override {
    Record("reload", "");
    std::lock_guard<std::mutex> l(mu_);
    r.ok = !reject_reload_;
    r.error = reject_reload_ ? "p.toml:3:1: error: unknown boundary 'dbs'" : "";
    r.version = "2026-11-21.2";
    r.hash = "ef34567890abcdef";
    r.generation = reject_reload_ ? 7 : 8;
    r.changed = !reject_reload_;
  }
  void set_mode(api::ModeReply& r, const std::string& rule, const std::string& mode) override {
    Record("set_mode", rule + " " + mode);
    if (rule == "nope") {
      api::ControlError e;
      e.message = "no rule named 'nope'";
      throw e;
    }
    if (rule == "boom") throw std::runtime_error("the handler broke");
    api::ModeChange c;
    c.rule = rule == "all" ? "db-tls" : rule;
    c.previous_mode = "monitor";
    c.mode = mode == "policy" ? "monitor" : mode;
    c.overridden = mode != "policy";
    r.changed.push_back(c);
    r.generation = 9;
  }
  void teardown(api::TeardownReply& r, bool open) override {
    Record("teardown", open ? "open" : "");
    r.message = std::string("tearing down") + (open ? " (open)" : "");
  }

  std::vector<Call> Calls() {
    std::lock_guard<std::mutex> l(mu_);
    return calls_;
  }
  void SetFlows(std::vector<api::FlowRecord> f) {
    std::lock_guard<std::mutex> l(mu_);
    flows_ = std::move(f);
  }
  void AddEvent(int64_t seq, const std::string& json) {
    std::lock_guard<std::mutex> l(mu_);
    api::EventLine e;
    e.seq = seq;
    e.json = json;
    events_.push_back(e);
  }
  void DropEventsThrough(int64_t seq) {
    std::lock_guard<std::mutex> l(mu_);
    while (!events_.empty() && events_.front().seq <= seq) events_.erase(events_.begin());
  }
  void RejectReload(bool reject) {
    std::lock_guard<std::mutex> l(mu_);
    reject_reload_ = reject;
  }

 private:
  void Record(const std::string& method, const std::string& args) {
    std::lock_guard<std::mutex> l(mu_);
    calls_.push_back({method, args, current_peer()});
  }

  std::mutex mu_;
  std::vector<Call> calls_;
  std::vector<api::FlowRecord> flows_;
  std::vector<api::EventLine> events_;
  bool reject_reload_ = false;
};

// A ControlServer in a temporary directory, served by a thread that waits
// on server.fd() with epoll and calls dispatch(), as the daemon does.
class ControlServerFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tw_ctl_XXXXXX";  // short: sun_path holds 108 bytes
    ASSERT_NE(::mkdtemp(tmpl), nullptr) << std::strerror(errno);
    dir_ = tmpl;
    ::chmod(dir_.c_str(), 0755);  // other users reach the socket; its mode decides
    path_ = dir_ + "/run/control.sock";
  }
  void TearDown() override {
    Stop();
    server_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // Unprivileged, the test's own uid stands in for root.
  void Start(ControlServerOptions o = {}) {
    o.path = path_;
    o.privileged_uid = ::geteuid();
    server_ = std::make_unique<ControlServer>(o, handler_, [this](const AuditRecord& a) {
      std::lock_guard<std::mutex> l(audit_mu_);
      audits_.push_back(a);
    });
    Resume();
  }
  // Runs dispatch() on a thread until Stop().
  void Resume() {
    stop_ = false;
    loop_ = std::thread([this] {
      const int ep = ::epoll_create1(EPOLL_CLOEXEC);
      epoll_event ev{};
      ev.events = EPOLLIN;
      ::epoll_ctl(ep, EPOLL_CTL_ADD, server_->fd(), &ev);
      while (!stop_) {
        epoll_event out;
        if (::epoll_wait(ep, &out, 1, 20) > 0) {
          std::lock_guard<std::mutex> l(server_mu_);
          server_->dispatch();
        }
      }
      ::close(ep);
    });
  }
  void Stop() {
    stop_ = true;
    if (loop_.joinable()) loop_.join();
  }
  ControlServer::Stats Stats() {
    std::lock_guard<std::mutex> l(server_mu_);
    return server_->stats();
  }
  std::vector<AuditRecord> Audits() {
    std::lock_guard<std::mutex> l(audit_mu_);
    return audits_;
  }

  // Runs `body` in a child process as `uid` with primary group `gid` and
  // supplementary `groups`, the server serving meanwhile; returns what the
  // child wrote to its pipe. The dispatch thread is paused across fork()
  // so the child starts from a quiet, single-threaded copy.
  std::string RunAs(uid_t uid, gid_t gid, const std::vector<gid_t>& groups,
                    const std::function<std::string()>& body) {
    int p[2];
    if (::pipe(p) != 0) return "pipe failed";
    Stop();
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::close(p[0]);
      std::string out;
      if (::setgroups(groups.size(), groups.data()) != 0 || ::setgid(gid) != 0 ||
          ::setuid(uid) != 0) {
        out = std::string("cannot drop privileges: ") + std::strerror(errno);
      } else {
        try {
          out = body();
        } catch (const std::exception& e) {
          out = std::string("child threw: ") + e.what();
        }
      }
      (void)!::write(p[1], out.data(), out.size());
      ::_exit(0);
    }
    Resume();
    ::close(p[1]);
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(p[0], buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
    ::close(p[0]);
    int st = 0;
    ::waitpid(pid, &st, 0);
    return out;
  }

  struct Run {
    int rc = -1;
    std::string out, err;
  };
  // Runs a program (argv[0] = path), optionally as another user. It is
  // killed (rc = -SIGKILL) after `limit`, or once `stop_when` says so of
  // the standard output so far.
  static Run Spawn(const std::vector<std::string>& argv, std::optional<uid_t> uid = {},
                   gid_t gid = 0, const std::vector<gid_t>& groups = {},
                   std::chrono::milliseconds limit = std::chrono::seconds(20),
                   const std::function<bool(const std::string& out_so_far)>& stop_when = {}) {
    int o[2], e[2];
    if (::pipe2(o, O_CLOEXEC) != 0 || ::pipe2(e, O_CLOEXEC) != 0) return {};
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::dup2(o[1], 1);
      ::dup2(e[1], 2);
      if (uid && (::setgroups(groups.size(), groups.data()) != 0 || ::setgid(gid) != 0 ||
                  ::setuid(*uid) != 0)) {
        ::_exit(126);
      }
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    ::close(o[1]);
    ::close(e[1]);
    Run r;
    const auto end = std::chrono::steady_clock::now() + limit;
    pollfd fds[2] = {{o[0], POLLIN, 0}, {e[0], POLLIN, 0}};
    int open = 2;
    bool killed = false;
    while (open > 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          end - std::chrono::steady_clock::now());
      if (left.count() <= 0 && !killed) {
        ::kill(pid, SIGKILL);
        killed = true;
      }
      if (::poll(fds, 2, killed ? 1000 : static_cast<int>(std::min<int64_t>(left.count(), 100))) <
          0)
        break;
      for (auto& f : fds) {
        if (f.fd < 0 || !(f.revents & (POLLIN | POLLHUP))) continue;
        char buf[4096];
        const ssize_t n = ::read(f.fd, buf, sizeof(buf));
        if (n <= 0) {
          ::close(f.fd);
          f.fd = -1;
          --open;
          continue;
        }
        (f.fd == o[0] ? r.out : r.err).append(buf, static_cast<size_t>(n));
        if (stop_when && f.fd == o[0] && !killed && stop_when(r.out)) {
          ::kill(pid, SIGKILL);
          killed = true;
        }
      }
    }
    int st = 0;
    ::waitpid(pid, &st, 0);
    r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
    return r;
  }

  static bool IsRoot() { return ::geteuid() == 0; }

  FakeHandler handler_;
  std::unique_ptr<ControlServer> server_;
  std::string dir_, path_;

 private:
  std::thread loop_;
  std::atomic<bool> stop_{false};
  std::mutex server_mu_;
  std::mutex audit_mu_;
  std::vector<AuditRecord> audits_;
};

}  // namespace tlswall::control::test
