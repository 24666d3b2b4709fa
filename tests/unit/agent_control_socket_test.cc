// ControlServer / control_call over a Unix socket in a temporary directory:
// round trips, error replies, refusing a live socket, replacing a stale one,
// and cutting off malformed or silent clients. Works as root and non-root.
#include <gtest/gtest.h>

#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "agent/control_socket.h"

namespace tlswall::agent {
namespace {

namespace fs = std::filesystem;
using Handler = std::function<ControlReply(const ControlRequest&)>;

class ControlSocketTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Short, under /tmp: sun_path holds 108 bytes.
    char tmpl[] = "/tmp/tw_ctl_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr) << std::strerror(errno);
    dir_ = tmpl;
    path_ = dir_ + "/control.sock";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // A handler that records requests and answers by command.
  Handler Recording() {
    return [this](const ControlRequest& r) {
      {
        std::lock_guard<std::mutex> l(mu_);
        requests_.push_back(r);
      }
      if (r.command == "ping") return ControlReply{true, "pong\nsecond line\n"};
      if (r.command == "status json") return ControlReply{true, "{\"mode\":\"monitor\"}\n"};
      return ControlReply{false, "unknown command '" + r.command + "'"};
    };
  }

  std::vector<ControlRequest> Requests() {
    std::lock_guard<std::mutex> l(mu_);
    return requests_;
  }

  std::string dir_, path_;
  std::mutex mu_;
  std::vector<ControlRequest> requests_;
};

// Serves `server` on a thread until destroyed.
class Serving {
 public:
  Serving(ControlServer& server, Handler handler)
      : thread_([this, &server, handler] {
          while (!stop_) {
            pollfd p{server.fd(), POLLIN, 0};
            if (::poll(&p, 1, 20) > 0) server.serve_one(handler);
          }
        }) {}
  ~Serving() {
    stop_ = true;
    thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

int Connect(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Reads until EOF or `timeout_ms` passes without data.
std::string ReadAll(int fd, int timeout_ms) {
  std::string out;
  char buf[1024];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) break;
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

TEST_F(ControlSocketTest, RoundTripOk) {
  ControlServer server(path_, "");
  EXPECT_EQ(server.path(), path_);
  Serving serving(server, Recording());
  const ControlReply r = control_call(path_, "ping");
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(r.body, "pong\nsecond line\n");
  const ControlReply s = control_call(path_, "status json");
  EXPECT_TRUE(s.ok);
  EXPECT_EQ(s.body, "{\"mode\":\"monitor\"}\n");

  const auto reqs = Requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].command, "ping");
  EXPECT_EQ(reqs[1].command, "status json");
  // The peer's credentials come from the kernel (SO_PEERCRED).
  EXPECT_EQ(reqs[0].uid, ::getuid());
  EXPECT_EQ(reqs[0].pid, ::getpid());
}

TEST_F(ControlSocketTest, ErrorReply) {
  ControlServer server(path_, "");
  Serving serving(server, Recording());
  const ControlReply r = control_call(path_, "frobnicate");
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.body, "unknown command 'frobnicate'");
}

TEST_F(ControlSocketTest, SocketIsOwnerOnlyAndRemovedOnDestruction) {
  {
    ControlServer server(path_, "");
    struct stat st {};
    ASSERT_EQ(::stat(path_.c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0600u);
  }
  EXPECT_FALSE(fs::exists(path_));
  try {
    control_call(path_, "ping");
    FAIL() << "reached a daemon that is gone";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot reach tlswalld at " + path_), std::string::npos)
        << e.what();
  }
}

TEST_F(ControlSocketTest, CreatesTheSocketDirectory) {
  const std::string nested = dir_ + "/run/tw/control.sock";
  ControlServer server(nested, "");
  EXPECT_TRUE(fs::is_socket(nested));
  Serving serving(server, Recording());
  EXPECT_TRUE(control_call(nested, "ping").ok);
}

TEST_F(ControlSocketTest, SecondServerOnALivePathIsRefused) {
  ControlServer first(path_, "");
  try {
    ControlServer second(path_, "");
    FAIL() << "two daemons bound the same control socket";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("another tlswalld"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path_), std::string::npos) << e.what();
  }
  // The refused one must not have taken the socket away from the first.
  EXPECT_TRUE(fs::is_socket(path_));
  Serving serving(first, Recording());
  EXPECT_TRUE(control_call(path_, "ping").ok);
}

TEST_F(ControlSocketTest, StaleSocketFileIsReplaced) {
  {
    // A socket file nobody listens on: what a killed daemon leaves behind.
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path_.c_str(), sizeof(a.sun_path) - 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0) << std::strerror(errno);
    ::close(fd);
  }
  ASSERT_TRUE(fs::is_socket(path_));
  ASSERT_EQ(Connect(path_), -1);

  ControlServer server(path_, "");
  Serving serving(server, Recording());
  EXPECT_TRUE(control_call(path_, "ping").ok);
}

// "removes a stale socket file": a regular file at the configured path
// (a typo in the config, run as root) is not a stale socket and must not
// be deleted.
TEST_F(ControlSocketTest, RegularFileAtThePathIsNotDeleted) {
  {
    std::ofstream f(path_);
    f << "precious\n";
  }
  bool threw = false;
  try {
    ControlServer server(path_, "");
  } catch (const std::runtime_error&) {
    threw = true;
  }
  EXPECT_TRUE(threw) << "bound over a regular file";
  ASSERT_TRUE(fs::is_regular_file(path_)) << "the file was removed";
  std::ifstream f(path_);
  std::string line;
  std::getline(f, line);
  EXPECT_EQ(line, "precious");
}

TEST_F(ControlSocketTest, RequestWithoutNewlineIsCutOffWithAnError) {
  ControlServer server(path_, "");
  const int c = Connect(path_);
  ASSERT_GE(c, 0);
  ASSERT_EQ(::send(c, "status", 6, MSG_NOSIGNAL), 6);
  // The client stays silent with the connection open: serve_one must give
  // up after its timeout instead of blocking the daemon.
  const auto start = std::chrono::steady_clock::now();
  server.serve_one(Recording());
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_LT(took, std::chrono::seconds(5));
  const std::string reply = ReadAll(c, 2000);
  ::close(c);
  EXPECT_EQ(reply.rfind("error: ", 0), 0u) << reply;
  EXPECT_TRUE(Requests().empty()) << "handler ran on a partial request";
}

TEST_F(ControlSocketTest, ClientThatClosesBeforeNewlineGetsAnError) {
  ControlServer server(path_, "");
  const int c = Connect(path_);
  ASSERT_GE(c, 0);
  ASSERT_EQ(::send(c, "ping", 4, MSG_NOSIGNAL), 4);
  ASSERT_EQ(::shutdown(c, SHUT_WR), 0);
  server.serve_one(Recording());
  const std::string reply = ReadAll(c, 2000);
  ::close(c);
  EXPECT_EQ(reply.rfind("error: ", 0), 0u) << reply;
  EXPECT_TRUE(Requests().empty());
}

TEST_F(ControlSocketTest, OversizedRequestIsRejected) {
  ControlServer server(path_, "");
  const int c = Connect(path_);
  ASSERT_GE(c, 0);
  const std::string big(5000, 'a');
  ASSERT_EQ(::send(c, big.data(), big.size(), MSG_NOSIGNAL), static_cast<ssize_t>(big.size()));
  server.serve_one(Recording());
  const std::string reply = ReadAll(c, 2000);
  ::close(c);
  EXPECT_EQ(reply.rfind("error: ", 0), 0u) << reply;
  EXPECT_TRUE(Requests().empty());
}

TEST_F(ControlSocketTest, ServeOneWithNothingPendingReturns) {
  ControlServer server(path_, "");
  server.serve_one(Recording());  // non-blocking accept: returns at once
  EXPECT_TRUE(Requests().empty());
}

TEST_F(ControlSocketTest, PathTooLongIsAnError) {
  const std::string longpath = dir_ + "/" + std::string(120, 's');
  EXPECT_THROW({ ControlServer s(longpath, ""); }, std::runtime_error);
  EXPECT_THROW(control_call(longpath, "ping"), std::runtime_error);
}

}  // namespace
}  // namespace tlswall::agent
