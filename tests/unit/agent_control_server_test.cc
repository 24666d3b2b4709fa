// ControlServer and ControlClient over a real Unix socket in a temporary
// directory, with a fake handler: every method, framing (byte by byte,
// pipelined, oversize, garbage), timeouts, the connection limit, concurrent
// clients, binding rules, client error messages, and access control as
// other users (root only: those tests fork and drop to unused uids).
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <fstream>

#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/transport/TBufferTransports.h>

#include "agent/control/control_client.h"
#include "agent/owned_fd.h"
#include "agent_control_test_support.h"

namespace tlswall::control::test {
namespace {

using agent::OwnedFd;
using apache::thrift::protocol::TBinaryProtocol;
using apache::thrift::transport::TFramedTransport;
using apache::thrift::transport::TMemoryBuffer;
using Kind = ControlClientError::Kind;
using namespace std::chrono_literals;

// Requests and replies as bytes, through the generated client on memory.
class Wire {
 public:
  Wire()
      : mem_(std::make_shared<TMemoryBuffer>()),
        framed_(std::make_shared<TFramedTransport>(mem_)),
        client_(std::make_shared<TBinaryProtocol>(framed_)) {}
  api::TlswallControlClient& client() { return client_; }
  // The framed bytes the calls since the last take() wrote.
  std::string take() {
    std::string s = mem_->getBufferAsString();
    mem_->resetBuffer();
    return s;
  }
  void feed(const std::string& bytes) {
    mem_->resetBuffer();
    mem_->write(reinterpret_cast<const uint8_t*>(bytes.data()),
                static_cast<uint32_t>(bytes.size()));
  }

 private:
  std::shared_ptr<TMemoryBuffer> mem_;
  std::shared_ptr<TFramedTransport> framed_;
  api::TlswallControlClient client_;
};

OwnedFd RawConnect(const std::string& path) {
  OwnedFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof(a)) != 0) return OwnedFd();
  timeval tv{5, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

bool SendAll(int fd, const std::string& s) {
  return ::send(fd, s.data(), s.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(s.size());
}

// Reads exactly one frame (header included); "" on EOF or timeout.
std::string ReadFrame(int fd) {
  uint32_t be = 0;
  if (::recv(fd, &be, 4, MSG_WAITALL) != 4) return "";
  std::string body(ntohl(be), '\0');
  if (!body.empty() &&
      ::recv(fd, body.data(), body.size(), MSG_WAITALL) != static_cast<ssize_t>(body.size())) {
    return "";
  }
  return std::string(reinterpret_cast<const char*>(&be), 4) + body;
}

// True if the server closes `fd` within `limit` (EOF or reset).
bool ClosedWithin(int fd, std::chrono::milliseconds limit) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(limit.count())) <= 0) return false;
  char c;
  return ::recv(fd, &c, 1, MSG_DONTWAIT) <= 0;
}

std::string PingRequest() {
  Wire w;
  w.client().send_ping();
  return w.take();
}

api::PingReply PingReplyOf(const std::string& frame) {
  Wire w;
  w.feed(frame);
  api::PingReply r;
  w.client().recv_ping(r);
  return r;
}

std::string OwnComm() {
  std::ifstream f("/proc/self/comm");
  std::string c;
  std::getline(f, c);
  return c;
}

class ControlServerTest : public ControlServerFixture {};

TEST_F(ControlServerTest, EveryMethodRoundTrips) {
  Start();
  ControlClient c(path_);

  const api::PingReply ping = c.ping();
  EXPECT_EQ(ping.version, "9.9.9");
  EXPECT_EQ(ping.api_version, api::g_tlswall_control_constants.API_VERSION);
  EXPECT_EQ(ping.pid, ::getpid());

  EXPECT_EQ(c.status(), to_thrift(SampleStatus()));

  api::FlowRecord f1;
  f1.time_us = 1763726400000000;
  f1.action = "drop";
  f1.rule = "db-tls";
  f1.src = "198.18.0.1";
  f1.dst = "198.19.0.1";
  f1.__set_pid(4242);
  api::FlowRecord f2 = f1;
  f2.action = "report";
  f2.__isset.pid = false;
  handler_.SetFlows({f1, f2});
  api::FlowsQuery q;
  q.__set_verdict("drop");
  q.__set_rule("db-tls");
  q.__set_pid(42);
  q.__set_limit(5);
  const auto flows = c.flows(q);
  ASSERT_EQ(flows.size(), 2u);
  EXPECT_EQ(flows[0], f1);
  EXPECT_EQ(flows[1], f2);
  EXPECT_FALSE(flows[1].__isset.pid);

  handler_.AddEvent(1, R"({"type":"agent_started"})");
  handler_.AddEvent(2, R"({"type":"plaintext_blocked"})");
  const api::EventsReply ev = c.events(0, 10);
  ASSERT_EQ(ev.events.size(), 2u);
  EXPECT_EQ(ev.events[1].seq, 2);
  EXPECT_EQ(ev.events[1].json, R"({"type":"plaintext_blocked"})");
  EXPECT_EQ(ev.next_seq, 2);
  EXPECT_EQ(ev.newest_seq, 2);

  const api::PolicyShowReply pol = c.policy_show();
  ASSERT_EQ(pol.rules.size(), 1u);
  EXPECT_EQ(pol.rules[0].effective_mode, "enforce");
  EXPECT_TRUE(pol.rules[0].overridden);

  const api::ReloadReply rel = c.reload();
  EXPECT_TRUE(rel.ok);
  EXPECT_EQ(rel.generation, 8);

  const api::ModeReply mode = c.set_mode("db-tls", "enforce");
  ASSERT_EQ(mode.changed.size(), 1u);
  EXPECT_EQ(mode.changed[0].mode, "enforce");

  EXPECT_EQ(c.teardown(true).message, "tearing down (open)");

  const auto calls = handler_.Calls();
  std::vector<std::string> methods;
  for (const auto& call : calls) methods.push_back(call.method);
  EXPECT_EQ(methods, (std::vector<std::string>{"ping", "status", "flows", "events", "policy_show",
                                               "reload", "set_mode", "teardown"}));
  EXPECT_EQ(calls[2].args, "verdict=drop rule=db-tls pid=42 limit=5");
  EXPECT_EQ(calls[3].args, "0 10");
  EXPECT_EQ(calls[6].args, "db-tls enforce");
  EXPECT_EQ(calls[7].args, "open");

  // Only the state-changing calls are audited, with what they asked and got.
  const auto audits = Audits();
  ASSERT_EQ(audits.size(), 3u);
  EXPECT_EQ(audits[0].method, "reload");
  EXPECT_EQ(audits[0].args, "");
  EXPECT_TRUE(audits[0].allowed);
  EXPECT_EQ(audits[0].result, "ok: generation 8 version 2026-11-21.2 hash ef34567890abcdef");
  EXPECT_EQ(audits[1].method, "set_mode");
  EXPECT_EQ(audits[1].args, "rule=db-tls mode=enforce");
  EXPECT_EQ(audits[1].result, "ok: 1 rule(s) changed: db-tls monitor->enforce (override)");
  EXPECT_EQ(audits[2].method, "teardown");
  EXPECT_EQ(audits[2].args, "open=true");
  EXPECT_EQ(audits[2].result, "ok: tearing down (open)");
  for (const auto& a : audits) {
    EXPECT_EQ(a.peer.uid, ::geteuid());
    EXPECT_EQ(a.peer.pid, ::getpid());
  }
}

TEST_F(ControlServerTest, HandlerSeesTheCaller) {
  Start();
  ControlClient c(path_);
  c.ping();
  const auto calls = handler_.Calls();
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].peer.uid, ::geteuid());
  EXPECT_EQ(calls[0].peer.gid, ::getegid());
  EXPECT_EQ(calls[0].peer.pid, ::getpid());
  EXPECT_EQ(calls[0].peer.comm, OwnComm());
}

TEST_F(ControlServerTest, RejectedReloadIsAReplyAndAudited) {
  Start();
  handler_.RejectReload(true);
  ControlClient c(path_);
  const api::ReloadReply r = c.reload();
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.generation, 7);
  const auto audits = Audits();
  ASSERT_EQ(audits.size(), 1u);
  EXPECT_EQ(audits[0].result, "rejected: p.toml:3:1: error: unknown boundary 'dbs'");
}

TEST_F(ControlServerTest, ControlErrorReachesTheClientAndTheConnectionStaysUsable) {
  Start();
  ControlClient c(path_);
  try {
    c.set_mode("nope", "enforce");
    FAIL() << "no error";
  } catch (const ControlClientError& e) {
    EXPECT_EQ(e.kind(), Kind::kDaemonError);
    EXPECT_STREQ(e.what(), "no rule named 'nope'");
  }
  EXPECT_EQ(c.ping().version, "9.9.9");
  EXPECT_EQ(Stats().accepted, 1u);
  const auto audits = Audits();
  ASSERT_EQ(audits.size(), 1u);
  EXPECT_EQ(audits[0].args, "rule=nope mode=enforce");
  EXPECT_EQ(audits[0].result, "error: no rule named 'nope'");
}

TEST_F(ControlServerTest, UndeclaredHandlerFailureIsAnApplicationError) {
  Start();
  ControlClient c(path_);
  try {
    c.set_mode("boom", "monitor");
    FAIL() << "no error";
  } catch (const ControlClientError& e) {
    EXPECT_EQ(e.kind(), Kind::kProtocol);
    EXPECT_NE(std::string(e.what()).find("the handler broke"), std::string::npos) << e.what();
  }
  const auto audits = Audits();
  ASSERT_EQ(audits.size(), 1u);
  EXPECT_EQ(audits[0].result, "failed: the handler broke");
  EXPECT_EQ(c.ping().version, "9.9.9");  // reconnects
}

TEST_F(ControlServerTest, ManyCallsOnOneConnection) {
  Start();
  ControlClient c(path_);
  for (int i = 0; i < 200; ++i) {
    c.ping();
    c.status();
  }
  EXPECT_EQ(Stats().accepted, 1u);
  EXPECT_EQ(Stats().calls, 400u);
}

TEST_F(ControlServerTest, PipelinedRequestsAreAnsweredInOrder) {
  Start();
  Wire w;
  for (int i = 0; i < 3; ++i) w.client().send_ping();
  w.client().send_teardown(false);
  OwnedFd fd = RawConnect(path_);
  ASSERT_GE(fd.get(), 0);
  ASSERT_TRUE(SendAll(fd.get(), w.take()));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(PingReplyOf(ReadFrame(fd.get())).version, "9.9.9");
  Wire r;
  r.feed(ReadFrame(fd.get()));
  api::TeardownReply t;
  r.client().recv_teardown(t);
  EXPECT_EQ(t.message, "tearing down");
}

TEST_F(ControlServerTest, ARequestWrittenByteByByteIsServed) {
  Start();
  OwnedFd fd = RawConnect(path_);
  ASSERT_GE(fd.get(), 0);
  const std::string req = PingRequest();
  for (char b : req) {
    ASSERT_TRUE(SendAll(fd.get(), std::string(1, b)));
    std::this_thread::sleep_for(2ms);
  }
  EXPECT_EQ(PingReplyOf(ReadFrame(fd.get())).version, "9.9.9");
  // And again on the same connection, split across the frame header.
  ASSERT_TRUE(SendAll(fd.get(), req.substr(0, 2)));
  std::this_thread::sleep_for(20ms);
  ASSERT_TRUE(SendAll(fd.get(), req.substr(2)));
  EXPECT_EQ(PingReplyOf(ReadFrame(fd.get())).version, "9.9.9");
}

TEST_F(ControlServerTest, OversizeFrameClosesTheConnection) {
  ControlServerOptions o;
  o.max_frame_bytes = 1u << 20;
  Start(o);
  OwnedFd fd = RawConnect(path_);
  ASSERT_GE(fd.get(), 0);
  const uint32_t len = htonl((1u << 20) + 1);
  ASSERT_TRUE(SendAll(fd.get(), std::string(reinterpret_cast<const char*>(&len), 4)));
  EXPECT_TRUE(ClosedWithin(fd.get(), 2s));
  EXPECT_EQ(Stats().closed_bad_frame, 1u);
  EXPECT_TRUE(handler_.Calls().empty());
  // Others are still served.
  ControlClient c(path_);
  EXPECT_EQ(c.ping().version, "9.9.9");
}

TEST_F(ControlServerTest, AFrameAtTheLimitIsServed) {
  ControlServerOptions o;
  o.max_frame_bytes = 4096;
  Start(o);
  ControlClient c(path_);
  // A rule name that makes the request frame just under 4096 bytes.
  EXPECT_EQ(c.set_mode(std::string(4000, 'r'), "monitor").changed.size(), 1u);
  try {
    c.set_mode(std::string(4100, 'r'), "monitor");
    FAIL() << "no error";
  } catch (const ControlClientError& e) {
    EXPECT_EQ(e.kind(), Kind::kUnreachable) << e.what();
  }
}

TEST_F(ControlServerTest, GarbageAndNonCallsCloseTheConnection) {
  Start();
  const std::vector<std::string> bad = {
      std::string("\0\0\0\0", 4),                                     // empty frame
      std::string("\0\0\0\x05hello", 9),                              // not a Thrift message
      std::string("\0\0\0\x08\x7f\xff\xff\xffname", 12),              // unversioned, "2 GB" name
      std::string("\0\0\0\x0c\x80\x01\0\x02\0\0\0\0\0\0\0\x01", 16),  // a reply, not a call
  };
  for (const auto& b : bad) {
    OwnedFd fd = RawConnect(path_);
    ASSERT_GE(fd.get(), 0);
    ASSERT_TRUE(SendAll(fd.get(), b));
    EXPECT_TRUE(ClosedWithin(fd.get(), 500ms)) << b.size();  // no huge allocation first
  }
  EXPECT_EQ(Stats().closed_bad_frame, bad.size());
  EXPECT_TRUE(handler_.Calls().empty());
}

TEST_F(ControlServerTest, UnknownMethodGetsAnErrorReply) {
  Start();
  // A "ping" request renamed to a method this server does not have.
  std::string req = PingRequest();
  const size_t at = req.find("ping");
  ASSERT_NE(at, std::string::npos);
  req.replace(at, 4, "pong");
  OwnedFd fd = RawConnect(path_);
  ASSERT_TRUE(SendAll(fd.get(), req));
  const std::string reply = ReadFrame(fd.get());
  ASSERT_FALSE(reply.empty());
  EXPECT_NE(reply.find("Invalid method name"), std::string::npos);
  EXPECT_TRUE(handler_.Calls().empty());
}

TEST_F(ControlServerTest, IdleAndSlowConnectionsAreClosed) {
  ControlServerOptions o;
  o.timeout = 300ms;
  Start(o);
  OwnedFd idle = RawConnect(path_);
  OwnedFd slow = RawConnect(path_);
  ASSERT_GE(idle.get(), 0);
  ASSERT_GE(slow.get(), 0);
  // The slow one keeps sending, a byte every 100 ms: progress within the
  // frame does not extend its time.
  const std::string req = PingRequest();
  const auto t0 = std::chrono::steady_clock::now();
  bool slow_closed = false;
  for (size_t i = 0; i < req.size() && !slow_closed; ++i) {
    if (!SendAll(slow.get(), req.substr(i, 1))) slow_closed = true;
    slow_closed = slow_closed || ClosedWithin(slow.get(), 100ms);
  }
  EXPECT_TRUE(slow_closed);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_TRUE(ClosedWithin(idle.get(), 2s));
  EXPECT_EQ(Stats().closed_timeout, 2u);
  EXPECT_TRUE(handler_.Calls().empty());
  // A client that keeps calling is not cut off.
  ControlClient c(path_);
  for (int i = 0; i < 5; ++i) {
    c.ping();
    std::this_thread::sleep_for(100ms);
  }
}

TEST_F(ControlServerTest, ConnectionsOverTheLimitAreClosedAtOnce) {
  ControlServerOptions o;
  o.max_connections = 2;
  Start(o);
  OwnedFd a = RawConnect(path_), b = RawConnect(path_);
  ASSERT_GE(a.get(), 0);
  ASSERT_GE(b.get(), 0);
  ControlClient c(path_, 2s);
  try {
    c.ping();
    FAIL() << "served over the limit";
  } catch (const ControlClientError& e) {
    EXPECT_EQ(e.kind(), Kind::kUnreachable);
    EXPECT_NE(std::string(e.what()).find("closed the connection"), std::string::npos) << e.what();
  }
  EXPECT_EQ(Stats().refused_busy, 1u);
  a.reset();  // frees a slot once the server sees the EOF
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(c.ping().version, "9.9.9");
}

TEST_F(ControlServerTest, ConcurrentClients) {
  Start();
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      ControlClient c(path_);
      for (int i = 0; i < 50; ++i) {
        try {
          if (c.ping().version == "9.9.9" && c.status().version == "9.9.9") ++ok;
        } catch (const std::exception&) {
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 400);
  EXPECT_EQ(Stats().accepted, 8u);
}

TEST_F(ControlServerTest, AReplyOverTheLimitBecomesAnError) {
  ControlServerOptions o;
  o.max_reply_bytes = 64 * 1024;
  Start(o);
  std::vector<api::FlowRecord> many(2000);
  for (auto& f : many) f.comm = std::string(64, 'c');
  handler_.SetFlows(many);
  ControlClient c(path_);
  try {
    c.flows({});
    FAIL() << "no error";
  } catch (const ControlClientError& e) {
    EXPECT_EQ(e.kind(), Kind::kProtocol);
    EXPECT_NE(std::string(e.what()).find("reply too large"), std::string::npos) << e.what();
  }
  handler_.SetFlows({});
  EXPECT_TRUE(c.flows({}).empty());
}

TEST_F(ControlServerTest, FlushSendsPendingReplies) {
  Start();
  ControlClient c(path_);
  EXPECT_EQ(c.teardown(false).message, "tearing down");
  Stop();
  EXPECT_TRUE(server_->flush(100ms));
}

// ---- binding (as the first release's server) ----

TEST_F(ControlServerTest, SocketModeAndOwnership) {
  Start();
  struct stat st {};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  if (!IsRoot()) GTEST_SKIP() << "giving the socket to a group needs root";
  const std::string group = TestGroup();
  if (group.empty()) GTEST_SKIP() << "no users/nogroup group";
  Stop();
  server_.reset();
  ControlServerOptions o;
  o.group = group;
  Start(o);
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_gid, GroupId(group));
}

TEST_F(ControlServerTest, UnknownGroupIsAStartError) {
  ControlServerOptions o;
  o.path = path_;
  o.group = "tlswall-no-such-group";
  try {
    ControlServer s(o, handler_, nullptr);
    FAIL() << "started";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("no such group"), std::string::npos) << e.what();
  }
}

TEST_F(ControlServerTest, RefusesWhenAnotherDaemonAnswers) {
  Start();
  ControlServerOptions o;
  o.path = path_;
  try {
    ControlServer second(o, handler_, nullptr);
    FAIL() << "second server started";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("already answering"), std::string::npos) << e.what();
  }
  ControlClient c(path_);
  EXPECT_EQ(c.ping().version, "9.9.9");  // the first is untouched
}

TEST_F(ControlServerTest, ReplacesAStaleSocketButNothingElse) {
  std::filesystem::create_directories(dir_ + "/run");
  {
    // A socket file nobody listens on: a daemon that died.
    OwnedFd s(::socket(AF_UNIX, SOCK_STREAM, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path_.c_str(), sizeof(a.sun_path) - 1);
    ASSERT_EQ(::bind(s.get(), reinterpret_cast<const sockaddr*>(&a), sizeof(a)), 0);
  }
  Start();
  ControlClient c(path_);
  EXPECT_EQ(c.ping().version, "9.9.9");
  Stop();
  server_.reset();
  EXPECT_FALSE(std::filesystem::exists(path_));  // unlinked on destruction

  std::ofstream(path_) << "not a socket";
  ControlServerOptions o;
  o.path = path_;
  EXPECT_THROW((ControlServer{o, handler_, nullptr}), std::runtime_error);
  EXPECT_TRUE(std::filesystem::is_regular_file(path_));
}

// A stale socket is replaced only if root's (or the daemon's own user's):
// another user's socket, a symlink at the path and a symlinked directory
// are refused with one line naming the path, and left as they were.
void BindStale(const std::string& path) {
  OwnedFd s(::socket(AF_UNIX, SOCK_STREAM, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
  ASSERT_EQ(::bind(s.get(), reinterpret_cast<const sockaddr*>(&a), sizeof(a)), 0);
}

std::string StartError(const std::string& path, ControlHandler& handler) {
  ControlServerOptions o;
  o.path = path;
  try {
    ControlServer s(o, handler, nullptr);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST_F(ControlServerTest, RefusesAnotherUsersStaleSocket) {
  if (!IsRoot()) GTEST_SKIP() << "needs root to chown";
  std::filesystem::create_directories(dir_ + "/run");
  BindStale(path_);
  ASSERT_EQ(::lchown(path_.c_str(), 65534, 65534), 0);
  const std::string err = StartError(path_, handler_);
  EXPECT_NE(err.find("control socket " + path_ + " is a socket of uid 65534"), std::string::npos)
      << err;
  EXPECT_NE(err.find("rm " + path_), std::string::npos) << err;
  struct stat st {};
  ASSERT_EQ(::lstat(path_.c_str(), &st), 0) << "not replaced";
  EXPECT_EQ(st.st_uid, 65534u);
}

TEST_F(ControlServerTest, RefusesASymlinkAtTheSocketPath) {
  std::filesystem::create_directories(dir_ + "/run");
  std::filesystem::create_directories(dir_ + "/elsewhere");
  BindStale(dir_ + "/elsewhere/sock");
  std::filesystem::create_symlink(dir_ + "/elsewhere/sock", path_);
  const std::string err = StartError(path_, handler_);
  EXPECT_NE(err.find(path_ + " is a symlink"), std::string::npos) << err;
  EXPECT_TRUE(std::filesystem::is_symlink(path_));
  EXPECT_TRUE(std::filesystem::is_socket(dir_ + "/elsewhere/sock")) << "target untouched";
}

TEST_F(ControlServerTest, RefusesASymlinkedOrForeignSocketDirectory) {
  std::filesystem::create_directories(dir_ + "/elsewhere");
  std::filesystem::create_directory_symlink(dir_ + "/elsewhere", dir_ + "/run");
  std::string err = StartError(path_, handler_);
  EXPECT_NE(err.find("control socket directory " + dir_ + "/run is a symlink"), std::string::npos)
      << err;
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/elsewhere/control.sock"));
  std::filesystem::remove(dir_ + "/run");
  std::filesystem::create_directories(dir_ + "/run");
  ::chmod((dir_ + "/run").c_str(), 0777);
  err = StartError(path_, handler_);
  EXPECT_NE(err.find(dir_ + "/run is writable by everyone"), std::string::npos) << err;
  if (!IsRoot()) return;
  ::chmod((dir_ + "/run").c_str(), 0755);
  ASSERT_EQ(::chown((dir_ + "/run").c_str(), 65534, 65534), 0);
  err = StartError(path_, handler_);
  EXPECT_NE(err.find(dir_ + "/run is owned by uid 65534"), std::string::npos) << err;
  EXPECT_FALSE(std::filesystem::exists(path_));
}

// ---- client errors ----

TEST_F(ControlServerTest, ClientSaysTheDaemonIsNotRunning) {
  ControlClient c(path_);
  try {
    c.ping();
    FAIL() << "no error";
  } catch (const ControlClientError& e) {
    EXPECT_EQ(e.kind(), Kind::kNotRunning);
    EXPECT_EQ(std::string(e.what()), "tlswalld is not running (no socket at " + path_ + ")");
  }
  std::filesystem::create_directories(dir_ + "/run");
  {
    OwnedFd s(::socket(AF_UNIX, SOCK_STREAM, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path_.c_str(), sizeof(a.sun_path) - 1);
    ASSERT_EQ(::bind(s.get(), reinterpret_cast<const sockaddr*>(&a), sizeof(a)), 0);
  }
  try {
    c.ping();
    FAIL() << "no error";
  } catch (const ControlClientError& e) {
    EXPECT_EQ(e.kind(), Kind::kNotRunning);
    EXPECT_EQ(std::string(e.what()), "tlswalld is not running (nothing answers on " + path_ + ")");
  }
}

TEST_F(ControlServerTest, ClientTimesOutOnASilentDaemon) {
  // Listening, but nobody dispatches.
  ControlServerOptions o;
  o.path = path_;
  ControlServer silent(o, handler_, nullptr);
  ControlClient c(path_, 300ms);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    c.ping();
    FAIL() << "no error";
  } catch (const ControlClientError& e) {
    EXPECT_EQ(e.kind(), Kind::kUnreachable);
    EXPECT_EQ(std::string(e.what()), "tlswalld did not answer on " + path_ + " within 300 ms");
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
}

// ---- access control, as other users (root only) ----

class ControlAccessTest : public ControlServerFixture {
 protected:
  void SetUp() override {
    ControlServerFixture::SetUp();
    if (!IsRoot()) GTEST_SKIP() << "needs root to become other users";
    group_ = TestGroup();
    if (group_.empty()) GTEST_SKIP() << "no users/nogroup group";
    gid_ = GroupId(group_);
    ControlServerOptions o;
    o.group = group_;
    Start(o);
  }

  // Makes `calls` as the given user; one line per call: "ok" or
  // "<kind>: <message>".
  std::string CallsAs(uid_t uid, gid_t gid, const std::vector<gid_t>& groups,
                      const std::vector<std::string>& calls) {
    return RunAs(uid, gid, groups, [&] {
      std::string out;
      ControlClient c(path_);
      for (const auto& call : calls) {
        try {
          if (call == "ping") c.ping();
          if (call == "status") c.status();
          if (call == "flows") c.flows({});
          if (call == "events") c.events(0, 10);
          if (call == "policy_show") c.policy_show();
          if (call == "reload") c.reload();
          if (call == "set_mode") c.set_mode("all", "enforce");
          if (call == "teardown") c.teardown(false);
          out += "ok\n";
        } catch (const ControlClientError& e) {
          out += std::to_string(static_cast<int>(e.kind())) + ": " + e.what() + "\n";
        }
      }
      return out;
    });
  }

  std::string group_;
  gid_t gid_ = 0;
};

const std::string kAccessDenied = std::to_string(static_cast<int>(Kind::kAccessDenied));
const std::string kPermissionDenied = std::to_string(static_cast<int>(Kind::kPermissionDenied));

TEST_F(ControlAccessTest, GroupMemberMayReadButNotChangeState) {
  // The group as a supplementary group only: SO_PEERGROUPS must find it.
  const std::string out = CallsAs(
      kMemberUid, kMemberUid, {gid_},
      {"ping", "status", "flows", "events", "policy_show", "reload", "set_mode", "teardown"});
  const std::string root_only = kAccessDenied + ": permission denied: ";
  EXPECT_EQ(out, "ok\nok\nok\nok\nok\n" + root_only +
                     "reload changes the daemon's state: root only\n" + root_only +
                     "set_mode changes the daemon's state: root only\n" + root_only +
                     "teardown changes the daemon's state: root only\n");
  // The handler ran the reads only, each knowing its caller.
  const auto calls = handler_.Calls();
  ASSERT_EQ(calls.size(), 5u);
  for (const auto& c : calls) {
    EXPECT_EQ(c.peer.uid, kMemberUid);
    EXPECT_TRUE(c.peer.in_group);
  }
  // Every refused state change is audited.
  const auto audits = Audits();
  ASSERT_EQ(audits.size(), 3u);
  EXPECT_EQ(audits[0].method, "reload");
  EXPECT_EQ(audits[1].method, "set_mode");
  EXPECT_EQ(audits[1].args, "rule=all mode=enforce");
  EXPECT_EQ(audits[2].method, "teardown");
  EXPECT_EQ(audits[2].args, "open=false");
  for (const auto& a : audits) {
    EXPECT_FALSE(a.allowed);
    EXPECT_EQ(a.peer.uid, kMemberUid);
    EXPECT_NE(a.peer.pid, ::getpid());
    EXPECT_EQ(a.result.rfind("denied: permission denied: ", 0), 0u) << a.result;
  }
  EXPECT_EQ(Stats().denied, 3u);
}

TEST_F(ControlAccessTest, PrimaryGroupCountsToo) {
  EXPECT_EQ(CallsAs(kMemberUid, gid_, {}, {"ping", "reload"}),
            "ok\n" + kAccessDenied +
                ": permission denied: reload changes the daemon's state: root only\n");
}

TEST_F(ControlAccessTest, OutsiderCannotEvenConnect) {
  EXPECT_EQ(CallsAs(kOutsiderUid, kOutsiderUid, {}, {"ping", "reload"}),
            kPermissionDenied + ": permission denied: " + path_ + " (root or group " + group_ +
                " only)\n" + kPermissionDenied + ": permission denied: " + path_ +
                " (root or group " + group_ + " only)\n");
  EXPECT_TRUE(handler_.Calls().empty());
  EXPECT_EQ(Stats().accepted, 0u);
}

TEST_F(ControlAccessTest, OutsiderOnAnOpenSocketIsRefusedByTheServer) {
  // Someone loosened the socket file: SO_PEERCRED still keeps reads to the group.
  ASSERT_EQ(::chmod(path_.c_str(), 0666), 0);
  EXPECT_EQ(CallsAs(kOutsiderUid, kOutsiderUid, {}, {"ping", "status", "set_mode"}),
            kAccessDenied + ": permission denied: only root and group '" + group_ +
                "' may use the control socket\n" + kAccessDenied +
                ": permission denied: only root and group '" + group_ +
                "' may use the control socket\n" + kAccessDenied +
                ": permission denied: set_mode changes the daemon's state: root only\n");
  EXPECT_TRUE(handler_.Calls().empty());
  ASSERT_EQ(Audits().size(), 1u);
  EXPECT_FALSE(Audits()[0].peer.in_group);
}

TEST_F(ControlAccessTest, WithoutAGroupTheSocketIsRootOnly) {
  Stop();
  server_.reset();
  Start();
  EXPECT_EQ(CallsAs(kMemberUid, gid_, {gid_}, {"ping"}),
            kPermissionDenied + ": permission denied: " + path_ + " (root only)\n");
  ASSERT_EQ(::chmod(path_.c_str(), 0666), 0);
  EXPECT_EQ(CallsAs(kMemberUid, gid_, {gid_}, {"ping"}),
            kAccessDenied + ": permission denied: only root may use the control socket\n");
}

}  // namespace
}  // namespace tlswall::control::test
