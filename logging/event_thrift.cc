#include "logging/event_thrift.h"

#include <memory>

#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/transport/TBufferTransports.h>

#include "tlswall_event_constants.h"

namespace tlswall::logging {
namespace {

using apache::thrift::protocol::TBinaryProtocol;
using apache::thrift::transport::TMemoryBuffer;

// The C++ enum and the IDL must agree number for number.
#define TW_SAME(cpp, idl)                                                   \
  static_assert(static_cast<int>(EventType::cpp) == schema::EventType::idl, \
                "EventType::" #cpp " differs from tlswall_event.thrift")
TW_SAME(kAgentStarted, AGENT_STARTED);
TW_SAME(kAgentStopped, AGENT_STOPPED);
TW_SAME(kPolicyApplied, POLICY_APPLIED);
TW_SAME(kPolicyRejected, POLICY_REJECTED);
TW_SAME(kPlaintextReported, PLAINTEXT_REPORTED);
TW_SAME(kPlaintextBlocked, PLAINTEXT_BLOCKED);
TW_SAME(kTlsBelowMinimum, TLS_BELOW_MINIMUM);
TW_SAME(kStateLost, STATE_LOST);
TW_SAME(kEventsDropped, EVENTS_DROPPED);
TW_SAME(kSocketDestroyFailed, SOCKET_DESTROY_FAILED);
TW_SAME(kInterfaceDetached, INTERFACE_DETACHED);
TW_SAME(kUpgraded, UPGRADED);
TW_SAME(kUpgradeFailed, UPGRADE_FAILED);
TW_SAME(kModeChanged, MODE_CHANGED);
TW_SAME(kSinkDegraded, SINK_DEGRADED);
TW_SAME(kSinkRecovered, SINK_RECOVERED);
TW_SAME(kAttachmentRestored, ATTACHMENT_RESTORED);
TW_SAME(kUserSpaceGap, USER_SPACE_GAP);
TW_SAME(kTakeoverFailed, TAKEOVER_FAILED);
TW_SAME(kControlAudit, CONTROL_AUDIT);
TW_SAME(kInterfaceAttached, INTERFACE_ATTACHED);
TW_SAME(kRawSocketOpened, RAW_SOCKET_OPENED);
#undef TW_SAME
static_assert(static_cast<int>(Severity::kInfo) == schema::Severity::INFO);
static_assert(static_cast<int>(Severity::kNotice) == schema::Severity::NOTICE);
static_assert(static_cast<int>(Severity::kWarning) == schema::Severity::WARNING);
static_assert(static_cast<int>(Severity::kError) == schema::Severity::ERROR);

// Every C++ type must have its IDL twin: a new enumerator without a case
// here fails the build (-Wswitch), a wrong number fails the asserts above.
schema::EventType::type idl_type(EventType t) {
  switch (t) {
    case EventType::kAgentStarted:
    case EventType::kAgentStopped:
    case EventType::kPolicyApplied:
    case EventType::kPolicyRejected:
    case EventType::kPlaintextReported:
    case EventType::kPlaintextBlocked:
    case EventType::kTlsBelowMinimum:
    case EventType::kStateLost:
    case EventType::kEventsDropped:
    case EventType::kSocketDestroyFailed:
    case EventType::kInterfaceDetached:
    case EventType::kUpgraded:
    case EventType::kUpgradeFailed:
    case EventType::kModeChanged:
    case EventType::kSinkDegraded:
    case EventType::kSinkRecovered:
    case EventType::kAttachmentRestored:
    case EventType::kUserSpaceGap:
    case EventType::kTakeoverFailed:
    case EventType::kControlAudit:
    case EventType::kInterfaceAttached:
    case EventType::kRawSocketOpened:
      return static_cast<schema::EventType::type>(t);
  }
  return static_cast<schema::EventType::type>(t);
}

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

}  // namespace

schema::Event to_thrift(const Event& e, const std::string& host, const std::string& agent_version) {
  schema::Event t;
  t.__set_schema_version(schema::g_tlswall_event_constants.SCHEMA_VERSION);
  t.__set_id(e.id);
  t.__set_seq(static_cast<int64_t>(e.seq));
  t.__set_time_us(to_unix_us(e.time));
  t.__set_host(host);
  t.__set_agent_version(agent_version);
  t.__set_type(idl_type(e.type));
  t.__set_severity(static_cast<schema::Severity::type>(e.severity));
  auto opt = [](const std::string& v, auto setter) {
    if (!v.empty()) setter(v);
  };
  opt(e.action, [&](const std::string& v) { t.__set_action(v); });
  opt(e.reason, [&](const std::string& v) { t.__set_reason(v); });
  opt(e.mode, [&](const std::string& v) { t.__set_mode(v); });
  opt(e.previous_mode, [&](const std::string& v) { t.__set_previous_mode(v); });
  if (e.flow) {
    t.__set_family(e.flow->family);
    t.__set_src(e.flow->src);
    t.__set_sport(e.flow->sport);
    t.__set_dst(e.flow->dst);
    t.__set_dport(e.flow->dport);
    t.__set_protocol(e.flow->protocol.empty() ? std::string("tcp") : e.flow->protocol);
  }
  opt(e.interface, [&](const std::string& v) { t.__set_interface_name(v); });
  if (e.sock_cookie) t.__set_sock_cookie(static_cast<int64_t>(e.sock_cookie));
  opt(e.tls_version, [&](const std::string& v) { t.__set_tls_version(v); });
  opt(e.preamble, [&](const std::string& v) { t.__set_preamble(v); });
  opt(e.server_tls_version, [&](const std::string& v) { t.__set_server_tls_version(v); });
  opt(e.evidence, [&](const std::string& v) { t.__set_evidence(v); });
  opt(e.server_name, [&](const std::string& v) { t.__set_server_name(v); });
  opt(e.server_subject, [&](const std::string& v) { t.__set_server_subject(v); });
  opt(e.client_subject, [&](const std::string& v) { t.__set_client_subject(v); });
  opt(e.cipher, [&](const std::string& v) { t.__set_cipher(v); });
  opt(e.alpn, [&](const std::string& v) { t.__set_alpn(v); });
  if (e.bytes_up) t.__set_bytes_up(static_cast<int64_t>(e.bytes_up));
  if (e.bytes_down) t.__set_bytes_down(static_cast<int64_t>(e.bytes_down));
  if (e.owner) {
    if (e.owner->pid) t.__set_pid(*e.owner->pid);
    if (e.owner->uid) t.__set_uid(*e.owner->uid);
    opt(e.owner->comm, [&](const std::string& v) { t.__set_comm(v); });
    opt(e.owner->exe, [&](const std::string& v) { t.__set_exe(v); });
    opt(e.owner->cgroup, [&](const std::string& v) { t.__set_cgroup(v); });
    opt(e.owner->container, [&](const std::string& v) { t.__set_container(v); });
    if (e.owner->tid) t.__set_tid(*e.owner->tid);
    if (e.owner->gid) t.__set_gid(*e.owner->gid);
    if (e.owner->cgroup_id) t.__set_cgroup_id(static_cast<int64_t>(e.owner->cgroup_id));
    opt(e.owner->cmdline, [&](const std::string& v) { t.__set_cmdline(v); });
    opt(e.owner->unit, [&](const std::string& v) { t.__set_unit(v); });
    opt(e.owner->attribution, [&](const std::string& v) { t.__set_attribution(v); });
    opt(e.owner->backend, [&](const std::string& v) { t.__set_attribution_backend(v); });
    opt(e.owner->process, [&](const std::string& v) { t.__set_process(v); });
    opt(e.owner->detail, [&](const std::string& v) { t.__set_attribution_detail(v); });
  }
  opt(e.boundary, [&](const std::string& v) { t.__set_boundary(v); });
  opt(e.rule, [&](const std::string& v) { t.__set_rule(v); });
  opt(e.policy_version, [&](const std::string& v) { t.__set_policy_version(v); });
  if (e.policy_generation) t.__set_policy_generation(static_cast<int64_t>(e.policy_generation));
  if (e.count != 1) t.__set_count(static_cast<int64_t>(e.count));
  if (e.first_time) t.__set_first_time_us(to_unix_us(*e.first_time));
  if (e.last_time) t.__set_last_time_us(to_unix_us(*e.last_time));
  opt(e.sink, [&](const std::string& v) { t.__set_sink(v); });
  if (e.total) t.__set_total(static_cast<int64_t>(e.total));
  opt(e.message, [&](const std::string& v) { t.__set_message(v); });
  return t;
}

std::string serialize_binary(const schema::Event& e) {
  auto buf = std::make_shared<TMemoryBuffer>();
  TBinaryProtocol proto(buf);
  e.write(&proto);
  return buf->getBufferAsString();
}

bool parse_binary(std::string_view bytes, schema::Event* out) {
  try {
    auto buf = std::make_shared<TMemoryBuffer>(
        reinterpret_cast<uint8_t*>(const_cast<char*>(bytes.data())),
        static_cast<uint32_t>(bytes.size()), TMemoryBuffer::OBSERVE);
    TBinaryProtocol proto(buf);
    *out = schema::Event();
    out->read(&proto);
    return buf->available_read() == 0;
  } catch (const std::exception&) {
    return false;
  }
}

std::string base64_encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const uint32_t v = static_cast<uint8_t>(in[i]) << 16 | static_cast<uint8_t>(in[i + 1]) << 8 |
                       static_cast<uint8_t>(in[i + 2]);
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += kB64[v & 63];
  }
  if (i + 1 == in.size()) {
    const uint32_t v = static_cast<uint8_t>(in[i]) << 16;
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    const uint32_t v = static_cast<uint8_t>(in[i]) << 16 | static_cast<uint8_t>(in[i + 1]) << 8;
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

bool base64_decode(std::string_view in, std::string* out) {
  if (in.size() % 4 != 0) return false;
  out->clear();
  out->reserve(in.size() / 4 * 3);
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  for (size_t i = 0; i < in.size(); i += 4) {
    const bool last = i + 4 == in.size();
    const int pad = last ? (in[i + 3] == '=') + (in[i + 2] == '=') : 0;
    if (pad == 1 && in[i + 2] == '=') return false;
    int v[4];
    for (int k = 0; k < 4 - pad; ++k) {
      v[k] = val(in[i + static_cast<size_t>(k)]);
      if (v[k] < 0) return false;
    }
    for (int k = 4 - pad; k < 4; ++k) v[k] = 0;
    const uint32_t n = static_cast<uint32_t>(v[0] << 18 | v[1] << 12 | v[2] << 6 | v[3]);
    out->push_back(static_cast<char>(n >> 16));
    if (pad < 2) out->push_back(static_cast<char>((n >> 8) & 0xff));
    if (pad < 1) out->push_back(static_cast<char>(n & 0xff));
  }
  return true;
}

}  // namespace tlswall::logging
