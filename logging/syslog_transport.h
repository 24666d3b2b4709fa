// Syslog over TCP (RFC 5424 messages, RFC 6587 octet-counting framing) to a
// central rsyslog / syslog-ng, with reconnect. Plain TCP syslog has no
// acknowledgement: frames the kernel accepted before the peer went away can
// be lost without an error (README "Delivery guarantees").
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "logging/sink.h"

namespace tlswall::logging {

struct SyslogFormat {
  int facility = 16;  // local0
  std::string hostname;
  std::string app_name = "tlswalld";
  std::string procid;  // "" = "-"
  size_t max_message_bytes = 8192;
};

// Syslog facility number for a name ("kern", "user", ..., "local7"), -1 if
// unknown.
int syslog_facility(const std::string& name);
// Syslog severity of an event severity (info 6, notice 5, warning 4, error 3).
int syslog_severity(Severity s);

// One RFC 5424 message, without framing:
//   <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG
// MSGID is the event type name; MSG is the event's JSON. A message longer
// than max_message_bytes has its JSON re-rendered with "message" shortened.
std::string rfc5424_message(const RenderedEvent& e, const SyslogFormat& f,
                            const std::string& agent_version);

// RFC 6587 octet counting: "<length> <message>".
std::string octet_frame(const std::string& msg);

struct SyslogTransportOptions {
  std::string host = "127.0.0.1";
  int port = 514;
  std::chrono::milliseconds timeout{5000};
  SyslogFormat format;
  std::string agent_version;
};

class SyslogTransport : public Transport {
 public:
  explicit SyslogTransport(SyslogTransportOptions o);
  ~SyslogTransport() override;

  std::string kind() const override { return "syslog"; }
  std::string target() const override;
  std::string render(const RenderedEvent& e) override;
  Status send(const std::vector<std::string>& records, size_t* accepted,
              std::string* error) override;
  bool connected() const override { return fd_ >= 0; }
  void disconnect() override;

 private:
  bool connect_now(std::string* error);
  bool peer_closed();

  SyslogTransportOptions o_;
  int fd_ = -1;
};

}  // namespace tlswall::logging
