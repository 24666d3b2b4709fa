#include "logging/scribe_transport.h"

#include <mutex>

#include <thrift/TOutput.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/transport/TBufferTransports.h>
#include <thrift/transport/TSocket.h>

#include "logging/event_thrift.h"
#include "logging/log.h"
#include "scribe.h"

namespace tlswall::logging {
namespace {

using apache::thrift::TException;
using apache::thrift::protocol::TBinaryProtocol;
using apache::thrift::transport::TFramedTransport;
using apache::thrift::transport::TSocket;

// Thrift prints connection errors to stderr itself; route them to the sink
// logger at debug level (the sink reports failures once, with a counter).
void quiet_thrift_output() {
  static std::once_flag once;
  std::call_once(once, [] {
    apache::thrift::GlobalOutput.setOutputFunction(
        [](const char* msg) { logging::get(Subsystem::kSink).debug("thrift: {}", msg); });
  });
}

}  // namespace

struct ScribeTransport::Conn {
  std::shared_ptr<TSocket> socket;
  std::shared_ptr<TFramedTransport> framed;
  std::unique_ptr<scribe::thrift::scribeClient> client;
  std::vector<scribe::thrift::LogEntry> entries;
};

ScribeTransport::ScribeTransport(ScribeTransportOptions o) : o_(std::move(o)) {
  quiet_thrift_output();
}

ScribeTransport::~ScribeTransport() { disconnect(); }

std::string ScribeTransport::target() const {
  const bool v6 = o_.host.find(':') != std::string::npos;
  return (v6 ? "[" + o_.host + "]" : o_.host) + ":" + std::to_string(o_.port);
}

std::string ScribeTransport::render(const RenderedEvent& e) {
  if (o_.format == "thrift") {
    return base64_encode(serialize_binary(to_thrift(e.event, o_.reporter_host, o_.agent_version)));
  }
  return e.json;
}

bool ScribeTransport::connected() const { return conn_ && conn_->framed->isOpen(); }

void ScribeTransport::disconnect() {
  if (!conn_) return;
  try {
    conn_->framed->close();
  } catch (const std::exception&) {
  }
  conn_.reset();
}

Transport::Status ScribeTransport::send(const std::vector<std::string>& records, size_t* accepted,
                                        std::string* error) {
  *accepted = 0;
  try {
    if (!conn_) {
      auto c = std::make_unique<Conn>();
      c->socket = std::make_shared<TSocket>(o_.host, o_.port);
      const int ms = static_cast<int>(o_.timeout.count());
      c->socket->setConnTimeout(ms);
      c->socket->setSendTimeout(ms);
      c->socket->setRecvTimeout(ms);
      c->socket->setNoDelay(true);
      c->framed = std::make_shared<TFramedTransport>(c->socket);
      c->client = std::make_unique<scribe::thrift::scribeClient>(
          std::make_shared<TBinaryProtocol>(c->framed));
      c->framed->open();
      conn_ = std::move(c);
    }
    auto& entries = conn_->entries;
    entries.resize(records.size());
    for (size_t i = 0; i < records.size(); ++i) {
      entries[i].category = o_.category;
      entries[i].message = records[i];
    }
    const scribe::thrift::ResultCode::type r = conn_->client->Log(entries);
    if (r == scribe::thrift::ResultCode::OK) {
      *accepted = records.size();
      return Status::kOk;
    }
    *error = "scribe at " + target() + " answered TRY_LATER";
    return Status::kTryLater;
  } catch (const TException& e) {
    *error = "scribe at " + target() + ": " + e.what();
  } catch (const std::exception& e) {
    *error = "scribe at " + target() + ": " + e.what();
  }
  disconnect();
  return Status::kError;
}

}  // namespace tlswall::logging
