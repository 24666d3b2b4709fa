#include "tests/logging/scribe_test_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <thrift/TOutput.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/transport/TBufferTransports.h>
#include <thrift/transport/TSocket.h>

#include "scribe.h"

namespace tlswall::testing {

using apache::thrift::protocol::TBinaryProtocol;
using apache::thrift::transport::TFramedTransport;
using apache::thrift::transport::TSocket;

class ScribeTestServer::Handler : public scribe::thrift::scribeIf {
 public:
  explicit Handler(ScribeTestServer* s) : s_(s) {}
  scribe::thrift::ResultCode::type Log(
      const std::vector<scribe::thrift::LogEntry>& messages) override {
    std::vector<Entry> batch;
    batch.reserve(messages.size());
    for (const auto& m : messages) batch.push_back({m.category, m.message});
    const int r = s_->log(batch);
    if (r < 0) throw std::runtime_error("test server: failing this call after taking the batch");
    return r == 0 ? scribe::thrift::ResultCode::OK : scribe::thrift::ResultCode::TRY_LATER;
  }

 private:
  ScribeTestServer* s_;
};

struct ScribeTestServer::Conn {
  std::mutex mu;
  int fd = -1;  // owned by `socket`; shut down by stop()
  bool closed = false;
  std::thread thread;
};

ScribeTestServer::ScribeTestServer(int port, bool keep_messages)
    : port_(port), keep_(keep_messages) {
  // Thrift reports every closed connection on stderr; tests do not need it.
  apache::thrift::GlobalOutput.setOutputFunction([](const char*) {});
}

ScribeTestServer::~ScribeTestServer() { stop(); }

void ScribeTestServer::start() {
  if (running_.load()) return;
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port_));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || ::listen(fd, 64) != 0) {
    const std::string err = std::strerror(errno);
    ::close(fd);
    throw std::runtime_error(
        "scribe test server: cannot listen on 127.0.0.1:" + std::to_string(port_) + ": " + err);
  }
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.sin_port);
  if (::pipe2(wake_pipe_, O_CLOEXEC) != 0) {
    ::close(fd);
    throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  }
  listen_fd_ = fd;
  running_.store(true);
  acceptor_ = std::thread([this] { accept_loop(); });
}

void ScribeTestServer::stop() {
  if (!running_.exchange(false)) return;
  const char b = 1;
  (void)!::write(wake_pipe_[1], &b, 1);
  if (acceptor_.joinable()) acceptor_.join();
  ::close(listen_fd_);
  listen_fd_ = -1;
  ::close(wake_pipe_[0]);
  ::close(wake_pipe_[1]);
  wake_pipe_[0] = wake_pipe_[1] = -1;
  std::vector<std::shared_ptr<Conn>> conns;
  {
    std::lock_guard<std::mutex> lk(conns_mu_);
    conns.swap(conns_);
  }
  for (auto& c : conns) {
    {
      std::lock_guard<std::mutex> lk(c->mu);
      if (!c->closed) ::shutdown(c->fd, SHUT_RDWR);
    }
    if (c->thread.joinable()) c->thread.join();
  }
}

void ScribeTestServer::accept_loop() {
  for (;;) {
    pollfd p[2] = {{listen_fd_, POLLIN, 0}, {wake_pipe_[0], POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (p[1].revents) return;
    if (!(p[0].revents & POLLIN)) continue;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    auto c = std::make_shared<Conn>();
    c->fd = fd;
    std::lock_guard<std::mutex> lk(conns_mu_);
    conns_.push_back(c);
    c->thread = std::thread([this, c] { serve(c); });
  }
}

void ScribeTestServer::serve(std::shared_ptr<Conn> c) {
  auto socket = std::make_shared<TSocket>(c->fd);
  auto framed = std::make_shared<TFramedTransport>(socket);
  auto proto = std::make_shared<TBinaryProtocol>(framed);
  scribe::thrift::scribeProcessor processor(std::make_shared<Handler>(this));
  try {
    while (processor.process(proto, proto, nullptr)) {
    }
  } catch (const std::exception&) {
    // The client went away, or stop() shut the socket down.
  }
  std::lock_guard<std::mutex> lk(c->mu);
  c->closed = true;
  try {
    socket->close();
  } catch (const std::exception&) {
  }
}

int ScribeTestServer::log(const std::vector<Entry>& batch) {
  calls_.fetch_add(1);
  const int64_t d = delay_ms_.load();
  if (d > 0) std::this_thread::sleep_for(std::chrono::milliseconds(d));
  const Mode m = mode_.load();
  if (m == Mode::kTryLater) {
    try_later_.fetch_add(1);
    return 1;
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (keep_) entries_.insert(entries_.end(), batch.begin(), batch.end());
    accepted_.fetch_add(batch.size());
  }
  cv_.notify_all();
  if (m == Mode::kAcceptThenFail) {
    failed_.fetch_add(1);
    return -1;
  }
  return 0;
}

std::vector<ScribeTestServer::Entry> ScribeTestServer::entries() const {
  std::lock_guard<std::mutex> lk(mu_);
  return entries_;
}

bool ScribeTestServer::wait_for(uint64_t n, std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lk(mu_);
  return cv_.wait_for(lk, timeout, [&] { return accepted_.load() >= n; });
}

}  // namespace tlswall::testing
