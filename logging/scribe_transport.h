// The Scribe client transport: Log(list<LogEntry>) over a framed transport
// with the binary protocol (logging/scribe.thrift), OK or TRY_LATER.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "logging/sink.h"

namespace tlswall::logging {

struct ScribeTransportOptions {
  std::string host = "127.0.0.1";
  int port = 1463;
  std::string category = "tlswall";
  std::string format = "json";              // "json" | "thrift" (base64 TBinaryProtocol)
  std::chrono::milliseconds timeout{5000};  // connect, send and receive each
  std::string reporter_host;                // for the thrift format
  std::string agent_version;
};

class ScribeTransport : public Transport {
 public:
  explicit ScribeTransport(ScribeTransportOptions o);
  ~ScribeTransport() override;

  std::string kind() const override { return "scribe"; }
  std::string target() const override;
  std::string render(const RenderedEvent& e) override;
  Status send(const std::vector<std::string>& records, size_t* accepted,
              std::string* error) override;
  bool connected() const override;
  void disconnect() override;

 private:
  struct Conn;
  ScribeTransportOptions o_;
  std::unique_ptr<Conn> conn_;
};

}  // namespace tlswall::logging
