// Cost of the classifier (egress, and the ingress side of its deeper
// checks) per packet kind, measured in the kernel with
// BPF_PROG_TEST_RUN (the kernel times each run; no network stack, no peer).
// Separates the program's own cost from the tc hook's and the stack's, which
// bench_enforce.py measures together. Loads the real classifier with a
// private bpffs pin root; attaches nothing. Run as root:
//   build/tests/bench/tlswall_bench_classifier
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include <bpf/bpf.h>

#include "agent/bpf_classifier.h"
#include "agent/policy_tables.h"
#include "packet_builder.h"
#include "policy/policy.h"

using namespace tlswall;
using bpftest::Bytes;
using bpftest::PacketBuilder;

namespace {

const char kPolicy[] = R"(
version = "bench"
[boundaries.remote]
cidrs = ["198.18.128.0/17", "2001:db8:2::/48"]
[[rules]]
name = "remote"
boundary = "remote"
ports = [443, 80, "8000-8099"]
mode = "enforce"
[[rules]]
name = "remote-quic"
boundary = "remote"
ports = [4433]
mode = "enforce"
udp = "quic"
)";

Bytes hello() {
  Bytes h = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03};
  h.resize(517, 0x5a);
  return h;
}

// One run of `frame`; returns the kernel-measured ns (repeat runs averaged).
uint32_t run_ns(int prog, const Bytes& frame, int repeat, int* retval) {
  Bytes out(frame.size() + 256);
  LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = frame.data(), .data_out = out.data(),
              .data_size_in = static_cast<uint32_t>(frame.size()),
              .data_size_out = static_cast<uint32_t>(out.size()), .repeat = repeat);
  if (bpf_prog_test_run_opts(prog, &o) != 0) throw std::runtime_error("test_run failed");
  if (retval) *retval = static_cast<int>(o.retval);
  return o.duration;
}

struct Stat {
  std::vector<uint32_t> ns;
  void add(uint32_t v) { ns.push_back(v); }
  double median() {
    std::sort(ns.begin(), ns.end());
    return ns.empty() ? 0 : ns[ns.size() / 2];
  }
};

}  // namespace

int main(int argc, char** argv) {
  const int flows = argc > 1 ? std::atoi(argv[1]) : 50000;
  char tmpl[] = "/tmp/tlswall-bench-pins-XXXXXX";
  if (!mkdtemp(tmpl) || mount("bpf", tmpl, "bpf", 0, "mode=0700") != 0) {
    std::perror("private bpffs");
    return 1;
  }
  int rc = 0;
  try {
    agent::ClassifierOptions opts;
    opts.pin_root = tmpl;
    agent::TcClassifier cls(opts);
    agent::BpfPolicyMaps maps(
        cls.policy_fds(), [&](uint64_t g) { cls.set_generation(g); },
        [&] { return cls.generation(); });
    agent::PolicyPublisher pub(maps);
    const auto now = std::chrono::system_clock::now();
    auto loaded = policy::load_policy_text("bench.toml", kPolicy, now);
    if (!loaded.ok()) throw std::runtime_error("bench policy invalid");
    pub.publish(policy::compile_policy(*loaded.policy, now));
    const int prog = cls.egress_prog_fd();
    const int ingress = cls.prog_fd_for(agent::LinkKind::kEthernet, agent::TcDirection::kIngress);
    const Bytes h = hello();
    const Bytes answer = bpftest::server_hello();

    Stat syn_prot, syn_miss, syn_unprot, hello_pkt, data_after, pure_ack, server_hello_pkt,
        ingress_unchecked;
    Stat udp_unprot, udp_allow, udp_quic_new, udp_quic_later;
    int ret = 0;
    for (int i = 0; i < flows; ++i) {
      const uint16_t sport = static_cast<uint16_t>(1024 + (i % 60000));
      const char* src = i < 60000 ? "198.18.0.1" : (i < 120000 ? "198.18.0.2" : "198.18.0.3");
      const uint32_t isn = 1000u + static_cast<uint32_t>(i) * 7u;
      syn_prot.add(run_ns(
          prog,
          PacketBuilder().ipv4(src, "198.18.130.10").tcp(sport, 443, bpftest::kSyn, isn).build(), 1,
          &ret));
      hello_pkt.add(run_ns(prog,
                           PacketBuilder()
                               .ipv4(src, "198.18.130.10")
                               .tcp(sport, 443, bpftest::kAck | bpftest::kPsh, isn + 1, 1)
                               .payload(h)
                               .build(),
                           1, &ret));
      if (ret != -1) throw std::runtime_error("a valid hello was not passed");
      // The server's answer (the hello acknowledged sequence 1): judged at
      // ingress, with the check record the hello made.
      server_hello_pkt.add(run_ns(ingress,
                                  PacketBuilder()
                                      .ipv4("198.18.130.10", src)
                                      .tcp(443, sport, bpftest::kAck | bpftest::kPsh, 1, isn + 518)
                                      .payload(answer)
                                      .build(),
                                  1, &ret));
      if (ret != -1) throw std::runtime_error("a valid ServerHello was not passed");
      // A protected destination seen for the first time: the decision
      // cache misses (32,000 distinct addresses, 1,024 cache entries).
      const std::string fresh =
          "198.18." + std::to_string(128 + (i / 250) % 128) + "." + std::to_string(i % 250 + 1);
      syn_miss.add(run_ns(
          prog, PacketBuilder().ipv4(src, fresh).tcp(sport, 8080, bpftest::kSyn, isn).build(), 1,
          &ret));
      syn_unprot.add(run_ns(
          prog,
          PacketBuilder().ipv4(src, "198.18.1.10").tcp(sport, 443, bpftest::kSyn, isn).build(), 1,
          &ret));
      // A new UDP flow judged on a udp = "quic" rule: its first datagram
      // (a QUIC Initial) is classified and its state inserted.
      udp_quic_new.add(run_ns(prog,
                              PacketBuilder()
                                  .ipv4(src, "198.18.130.10")
                                  .udp(sport, 4433)
                                  .payload(bpftest::quic_initial())
                                  .build(),
                              1, &ret));
      if (ret != -1) throw std::runtime_error("a QUIC Initial was not passed");
    }
    // Steady state of a verified flow: later data and pure ACKs (repeated).
    const Bytes later = PacketBuilder()
                            .ipv4("198.18.0.1", "198.18.130.10")
                            .tcp(1024, 443, bpftest::kAck | bpftest::kPsh, 1000u + 1 + 517, 1)
                            .payload(bpftest::tls_record(23, 1400))
                            .build();
    const Bytes ack = PacketBuilder()
                          .ipv4("198.18.0.1", "198.18.130.10")
                          .tcp(1024, 443, bpftest::kAck, 1000u + 1 + 517, 1)
                          .build();
    // Ingress data of a flow without a check record (an unprotected one,
    // or one whose checks are done: almost everything received).
    const Bytes in_data = PacketBuilder()
                              .ipv4("198.18.1.10", "198.18.0.1")
                              .tcp(443, 1024, bpftest::kAck | bpftest::kPsh, 5000, 1)
                              .payload(bpftest::tls_record(23, 1400))
                              .build();
    // UDP: no rule (no state: the decision only), a rule with udp allow
    // (the same), a later datagram of a judged QUIC flow (decision + lookup).
    const Bytes dgram(1200, 0x41);
    const Bytes u_unprot =
        PacketBuilder().ipv4("198.18.0.1", "198.18.1.10").udp(1024, 4433).payload(dgram).build();
    const Bytes u_allow =
        PacketBuilder().ipv4("198.18.0.1", "198.18.130.10").udp(1024, 8000).payload(dgram).build();
    const Bytes u_later =
        PacketBuilder().ipv4("198.18.0.1", "198.18.130.10").udp(1024, 4433).payload(dgram).build();
    for (int i = 0; i < 50; ++i) {
      data_after.add(run_ns(prog, later, 1000, &ret));
      if (ret != -1) throw std::runtime_error("later data of a verified flow was not passed");
      pure_ack.add(run_ns(prog, ack, 1000, &ret));
      ingress_unchecked.add(run_ns(ingress, in_data, 1000, &ret));
      udp_unprot.add(run_ns(prog, u_unprot, 1000, &ret));
      udp_allow.add(run_ns(prog, u_allow, 1000, &ret));
      udp_quic_later.add(run_ns(prog, u_later, 1000, &ret));
      if (ret != -1) throw std::runtime_error("a judged QUIC flow was not passed");
    }
    std::printf("classifier cost per packet (median ns, BPF_PROG_TEST_RUN, %d new flows):\n",
                flows);
    std::printf("  SYN, protected destination (decide + flow insert)   %6.0f\n", syn_prot.median());
    std::printf("  SYN, protected, destination new to the cache         %6.0f\n",
                syn_miss.median());
    std::printf("  SYN, unprotected destination                        %6.0f\n",
                syn_unprot.median());
    std::printf("  first data packet: whole ClientHello judged          %6.0f\n",
                hello_pkt.median());
    std::printf("  later data packet of a verified flow (1 lookup)      %6.0f\n",
                data_after.median());
    std::printf("  pure ACK (no lookup)                                 %6.0f\n",
                pure_ack.median());
    std::printf("  ingress: the server's ServerHello judged             %6.0f\n",
                server_hello_pkt.median());
    std::printf("  ingress: data of a flow without checks (1 lookup)    %6.0f\n",
                ingress_unchecked.median());
    std::printf("  UDP datagram, unprotected destination (decision)     %6.0f\n",
                udp_unprot.median());
    std::printf("  UDP datagram, rule with udp allow (decision)         %6.0f\n",
                udp_allow.median());
    std::printf("  UDP, new flow on a quic rule (classify + insert)     %6.0f\n",
                udp_quic_new.median());
    std::printf("  UDP, later datagram of a judged QUIC flow            %6.0f\n",
                udp_quic_later.median());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_classifier: %s\n", e.what());
    rc = 1;
  }
  umount2(tmpl, MNT_DETACH);
  rmdir(tmpl);
  return rc;
}
