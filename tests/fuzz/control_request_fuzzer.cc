// libFuzzer target: the control API's request decoding (ControlCalls in
// agent/control/control_server.h, what the daemon does with the bytes a
// control connection sent). The input is those bytes: frames (4-byte
// big-endian length, then a Thrift binary-protocol message) split and served
// as the server does, until the server would close the connection. Frames
// alternate between three callers: root, a member of the control group, an
// outsider. A fake handler gives small canned replies. Checked besides the
// sanitizers:
//  - every reply is one framed-able Thrift message: a reply or exception
//    for the method and sequence id asked;
//  - a state-changing call is audited exactly once, allowed only for root;
//    the handler runs only for calls the caller may make.
//
// TLSWALL_FUZZ_WRITE_SEEDS=DIR: writes the seed corpus instead (what the
// generated client, as tlswallctl uses it, sends for each method, and a
// pipelined session; corpus/control_request/) and exits.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/transport/TBufferTransports.h>

#include "agent/control/control_server.h"
#include "logging/log.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using namespace tlswall::control;  // NOLINT: one test file
using apache::thrift::protocol::TBinaryProtocol;
using apache::thrift::protocol::TMessageType;
using apache::thrift::transport::TFramedTransport;
using apache::thrift::transport::TMemoryBuffer;

constexpr uid_t kMemberUid = 4242;
constexpr uid_t kOutsiderUid = 4243;

class Handler : public ControlHandler {
 public:
  int calls = 0;
  bool last_caller_may = true;

  void ping(api::PingReply& r) override {
    Ran(false);
    r.version = "9.9.9";
    r.api_version = 1;
    r.pid = 1;
  }
  void status(api::StatusReply& r) override {
    Ran(false);
    r.version = "9.9.9";
  }
  void flows(std::vector<api::FlowRecord>& r, const api::FlowsQuery& q) override {
    Ran(false);
    api::FlowRecord f;
    f.rule = q.rule;
    r.push_back(f);
  }
  void events(api::EventsReply& r, int64_t after_seq, int32_t max) override {
    Ran(false);
    r.next_seq = after_seq;
    for (int32_t i = 0; i < max && i < 3; ++i) {
      api::EventLine e;
      e.seq = after_seq + i + 1;
      e.json = "{}";
      r.events.push_back(e);
    }
  }
  void policy_show(api::PolicyShowReply& r) override {
    Ran(false);
    r.version = "v";
  }
  void reload(api::ReloadReply& r) override {
    Ran(true);
    r.ok = true;
  }
  void set_mode(api::ModeReply& r, const std::string& rule, const std::string& mode) override {
    Ran(true);
    if (rule.empty()) {
      api::ControlError e;
      e.message = "no rule named ''";
      throw e;
    }
    if (rule == "boom") throw std::runtime_error("the handler broke");
    api::ModeChange c;
    c.rule = rule;
    c.mode = mode;
    r.changed.push_back(c);
  }
  void teardown(api::TeardownReply& r, bool open) override {
    Ran(true);
    r.message = open ? "open" : "closed";
  }

 private:
  void Ran(bool root_only) {
    ++calls;
    const Peer& p = current_peer();
    FUZZ_CHECK(p.uid == 0 || (!root_only && p.in_group));
  }
};

struct Setup {
  ControlServerOptions options;
  Handler handler;
  std::vector<AuditRecord> audits;
  std::unique_ptr<ControlCalls> calls;
  Setup() {
    options.max_frame_bytes = 1u << 16;
    options.max_reply_bytes = 1u << 16;
    calls = std::make_unique<ControlCalls>(options, /*has_group=*/true, handler,
                                           [this](const AuditRecord& a) { audits.push_back(a); });
  }
};

Setup* g_setup = nullptr;

bool Audited(const std::string& m) { return m == "reload" || m == "set_mode" || m == "teardown"; }

// The message header at the start of `bytes`; throws TException.
void ReadHeader(const std::string& bytes, std::string* name, TMessageType* type, int32_t* seqid) {
  auto buf =
      std::make_shared<TMemoryBuffer>(reinterpret_cast<uint8_t*>(const_cast<char*>(bytes.data())),
                                      static_cast<uint32_t>(bytes.size()), TMemoryBuffer::OBSERVE);
  TBinaryProtocol(buf).readMessageBegin(*name, *type, *seqid);
}

void WriteSeeds(const std::string& out) {
  auto mem = std::make_shared<TMemoryBuffer>();
  api::TlswallControlClient client(
      std::make_shared<TBinaryProtocol>(std::make_shared<TFramedTransport>(mem)));
  std::string session;
  auto take = [&](const std::string& name) {
    const std::string bytes = mem->getBufferAsString();
    mem->resetBuffer();
    session += bytes;
    std::FILE* f = std::fopen((out + "/" + name).c_str(), "wb");
    FUZZ_CHECK(f && std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size());
    std::fclose(f);
  };
  client.send_ping();
  take("ping");
  client.send_status();
  take("status");
  api::FlowsQuery q;
  client.send_flows(q);
  take("flows");
  q.__set_verdict("drop");
  q.__set_rule("db-tls");
  q.__set_pid(4242);
  q.__set_limit(20);
  client.send_flows(q);
  take("flows-filtered");
  client.send_events(0, 100);
  take("events");
  client.send_policy_show();
  take("policy-show");
  client.send_reload();
  take("reload");
  client.send_set_mode("db-tls", "enforce");
  take("set-mode");
  client.send_set_mode("all", "policy");
  take("set-mode-all");
  client.send_teardown(true);
  take("teardown-open");
  mem->write(reinterpret_cast<const uint8_t*>(session.data()),
             static_cast<uint32_t>(session.size()));
  take("session");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  tlswall::logging::init("off");
  if (const char* seeds = std::getenv("TLSWALL_FUZZ_WRITE_SEEDS")) {
    WriteSeeds(seeds);
    std::exit(0);
  }
  g_setup = new Setup();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Setup& s = *g_setup;
  const char* in = reinterpret_cast<const char*>(data);
  size_t off = 0;
  for (int i = 0;; ++i) {
    const int64_t len = s.calls->frame_length(in + off, size - off);
    if (len <= 0) break;  // more bytes needed, or a bad frame: the connection ends
    const std::string frame(in + off + 4, static_cast<size_t>(len));
    off += 4 + static_cast<size_t>(len);

    Peer peer;
    peer.pid = 1;
    peer.gid = 1000;
    peer.uid = i % 3 == 0 ? 0 : (i % 3 == 1 ? kMemberUid : kOutsiderUid);
    peer.in_group = i % 3 == 1;
    s.audits.clear();
    s.handler.calls = 0;
    const std::string reply = s.calls->serve(peer, frame);
    if (reply.empty()) {
      FUZZ_CHECK(s.audits.empty());
      break;  // not a call: the connection ends
    }

    // The request's header was readable: the reply answers it.
    std::string method, rmethod;
    TMessageType type, rtype;
    int32_t seqid = 0, rseqid = 0;
    ReadHeader(frame, &method, &type, &seqid);
    FUZZ_CHECK(type == apache::thrift::protocol::T_CALL);
    ReadHeader(reply, &rmethod, &rtype, &rseqid);
    FUZZ_CHECK(rmethod == method);
    FUZZ_CHECK(rseqid == seqid);
    FUZZ_CHECK(rtype == apache::thrift::protocol::T_REPLY ||
               rtype == apache::thrift::protocol::T_EXCEPTION);
    FUZZ_CHECK(reply.size() <= s.options.max_reply_bytes + 256);

    FUZZ_CHECK(s.handler.calls <= 1);
    if (Audited(method)) {
      FUZZ_CHECK(s.audits.size() == 1);
      FUZZ_CHECK(s.audits[0].method == method);
      FUZZ_CHECK(s.audits[0].allowed == (peer.uid == 0));
    } else {
      FUZZ_CHECK(s.audits.empty());
    }
  }
  return 0;
}
