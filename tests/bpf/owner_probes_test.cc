// The attribution probes on the real kernel (root). This machine's kernel
// has no kprobes (they load but cannot attach) and refuses fentry (EPERM at
// load): the tests say so where it matters, check the kprobe program
// through the verifier and its recording logic from the equivalent sock_ops
// point, and check attach and behaviour with tp_btf and sock_ops.
// Traffic only on loopback inside network namespaces the workers create;
// sock_ops only on child cgroups the tests create.
#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>

#include "agent/attribution/owner_probes.h"
#include "agent/attribution/process_info.h"
#include "owner_key_probe.skel.h"
#include "owner_probes.skel.h"
#include "tests/bpf/owner_test_support.h"

namespace tlswall::ownertest {
namespace {

using agent::attribution::backend_name;
using agent::attribution::BackendReport;
using agent::attribution::BackendState;
using agent::attribution::OwnerBackend;
using agent::attribution::OwnerProbes;
using agent::attribution::OwnerProbesOptions;

constexpr uid_t kUid = 4242;
constexpr gid_t kGid = 4343;

std::string comm_of(const tw_owner& o) {
  return std::string(o.comm, strnlen(o.comm, sizeof(o.comm)));
}

BackendReport report_of(const OwnerProbes& p, OwnerBackend b) {
  for (const auto& r : p.report()) {
    if (r.backend == b) return r;
  }
  throw std::runtime_error(std::string("no report for ") + backend_name(b));
}

std::string describe(const OwnerProbes& p) {
  std::string s;
  for (const auto& r : p.report()) {
    s += "\n  " + r.name + ": " + agent::attribution::backend_state_name(r.state) + " (" + r.why +
         ")";
  }
  return s;
}

bool kernel_has_kprobes() { return path_exists("/sys/bus/event_source/devices/kprobe"); }

class OwnerProbesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(geteuid(), 0u) << "the owner probe tests load BPF and must run as root; "
                                "they never skip";
    bpffs_ = std::make_unique<PrivateBpffs>();
    maps_ = std::make_unique<OwnerMaps>();
  }
  void TearDown() override {
    if (bpffs_) OwnerProbes::remove_pins(bpffs_->path());
  }

  OwnerProbesOptions options(std::vector<OwnerBackend> pref, const std::string& cgroup = "",
                             bool pin = true) const {
    OwnerProbesOptions o;
    o.owners_fd = maps_->owners.get();
    o.owner_tuples_fd = maps_->tuples.get();
    o.preference = std::move(pref);
    o.sock_ops_cgroup = cgroup;
    o.pin_dir = pin ? bpffs_->path() : "";
    return o;
  }

  std::unique_ptr<PrivateBpffs> bpffs_;
  std::unique_ptr<OwnerMaps> maps_;
};

// ---- (a) every program through the verifier, one at a time ----

TEST_F(OwnerProbesTest, EveryProgramPassesTheVerifierOneAtATime) {
  std::vector<std::string> names;
  {
    std::unique_ptr<owner_probes, OwnerProbes::SkelDeleter> s(owner_probes__open());
    ASSERT_TRUE(s) << "owner_probes__open: " << std::strerror(errno);
    bpf_program* p = nullptr;
    bpf_object__for_each_program(p, s->obj) names.push_back(bpf_program__name(p));
  }
  EXPECT_EQ(names, (std::vector<std::string>{"owner_kprobe", "owner_fentry", "owner_tp_btf",
                                             "owner_sock_ops"}));
  for (const auto& name : names) {
    SCOPED_TRACE(name);
    std::unique_ptr<owner_probes, OwnerProbes::SkelDeleter> s(owner_probes__open());
    ASSERT_TRUE(s);
    bpf_program* p = nullptr;
    bpf_object__for_each_program(p, s->obj) {
      bpf_program__set_autoload(p, name == bpf_program__name(p));
    }
    ASSERT_EQ(bpf_map__reuse_fd(s->maps.tw_owners, maps_->owners.get()), 0);
    ASSERT_EQ(bpf_map__reuse_fd(s->maps.tw_owner_tuples, maps_->tuples.get()), 0);
    const int err = owner_probes__load(s.get());
    if (name == "owner_fentry" && err == -EPERM) {
      // This machine refuses fentry programs at load (DESIGN.md): the
      // expected outcome here, reported, not hidden. Where fentry loads,
      // the program must pass like the others (the branch below).
      std::printf(
          "[ NOTE     ] owner_fentry: load EPERM on this kernel "
          "(fentry/BPF trampolines not permitted here), as expected\n");
      RecordProperty("owner_fentry", "EPERM (fentry not permitted on this kernel)");
      continue;
    }
    EXPECT_EQ(err, 0) << name << " does not load: " << std::strerror(-err)
                      << " (verifier log in the test output)";
    if (!err) {
      EXPECT_GE(bpf_program__fd(bpf_object__find_program_by_name(s->obj, name.c_str())), 0);
    }
  }
}

TEST_F(OwnerProbesTest, KprobeRecordingLogicLoadsAsTheTestProbe) {
  std::unique_ptr<owner_key_probe, decltype(&owner_key_probe__destroy)> s(owner_key_probe__open(),
                                                                          owner_key_probe__destroy);
  ASSERT_TRUE(s);
  ASSERT_EQ(bpf_map__reuse_fd(s->maps.tw_owners, maps_->owners.get()), 0);
  ASSERT_EQ(bpf_map__reuse_fd(s->maps.tw_owner_tuples, maps_->tuples.get()), 0);
  EXPECT_EQ(owner_key_probe__load(s.get()), 0);
}

// ---- (b) backend choice and report with the default preference ----

TEST_F(OwnerProbesTest, DefaultPreferencePicksTheBestBackendAndSaysWhyNotTheOthers) {
  TestCgroup cg;
  OwnerProbesOptions o = options(agent::attribution::default_backend_preference(), cg.path());
  OwnerProbes probes(o);
  const std::string all = describe(probes);
  SCOPED_TRACE(all);

  const auto report = probes.report();
  ASSERT_EQ(report.size(), 4u);
  EXPECT_EQ(report[0].name, "kprobe");
  EXPECT_EQ(report[1].name, "fentry");
  EXPECT_EQ(report[2].name, "tp_btf");
  EXPECT_EQ(report[3].name, "sock_ops");

  if (kernel_has_kprobes()) {
    // A production-like kernel: the first preference wins.
    EXPECT_EQ(probes.active(), OwnerBackend::kKprobe);
    return;
  }
  // This machine: no kprobes, no fentry, so tp_btf.
  EXPECT_EQ(probes.active(), OwnerBackend::kTpBtf);
  const BackendReport kp = report_of(probes, OwnerBackend::kKprobe);
  EXPECT_EQ(kp.state, BackendState::kUnavailable);
  EXPECT_NE(kp.why.find("attach failed: ENOENT"), std::string::npos) << kp.why;
  EXPECT_NE(kp.why.find("CONFIG_KPROBES"), std::string::npos) << kp.why;
  const BackendReport fe = report_of(probes, OwnerBackend::kFentry);
  EXPECT_EQ(fe.state, BackendState::kUnavailable);
  EXPECT_EQ(fe.why, "load failed: EPERM (fentry/BPF trampolines not permitted here)");
  const BackendReport tp = report_of(probes, OwnerBackend::kTpBtf);
  EXPECT_EQ(tp.state, BackendState::kActive);
  const BackendReport so = report_of(probes, OwnerBackend::kSockOps);
  EXPECT_EQ(so.state, BackendState::kAvailableNotChosen);
  // The probe of sock_ops was undone: nothing stays on the cgroup.
  EXPECT_EQ(sock_ops_programs_on(cg.path()), 0u);

  // Exactly the active backend's link is pinned, under its versioned name.
  const std::string pin = bpffs_->path() + "/" + OwnerProbes::pin_name(OwnerBackend::kTpBtf);
  EXPECT_EQ(OwnerProbes::pin_name(OwnerBackend::kTpBtf), "owner_link_tp_btf_v1");
  EXPECT_EQ(probes.pins(), std::vector<std::string>{pin});
  EXPECT_NE(pinned_link_id(pin), 0u);
  // And only its program runs on our tables.
  EXPECT_EQ(wait_programs_using_map(maps_->owners_id, {"owner_tp_btf"}),
            std::multiset<std::string>{"owner_tp_btf"});
}

TEST_F(OwnerProbesTest, SockOpsWithoutACgroupIsUnavailableAndUnlistedBackendsAreNotLoaded) {
  OwnerProbes probes(options({OwnerBackend::kSockOps, OwnerBackend::kTpBtf}));
  SCOPED_TRACE(describe(probes));
  const auto report = probes.report();
  ASSERT_EQ(report.size(), 4u);
  EXPECT_EQ(report[0].name, "sock_ops");
  EXPECT_EQ(report[0].state, BackendState::kUnavailable);
  EXPECT_EQ(report[0].why, "no cgroup configured");
  EXPECT_EQ(report[1].name, "tp_btf");
  EXPECT_EQ(report[1].state, BackendState::kActive);
  for (size_t i = 2; i < 4; ++i) {
    EXPECT_EQ(report[i].state, BackendState::kUnavailable);
    EXPECT_EQ(report[i].why, "not in the configured backend list");
  }
  EXPECT_EQ(probes.active(), OwnerBackend::kTpBtf);
}

TEST_F(OwnerProbesTest, NoUsableBackendIsAReportNotAnException) {
  OwnerProbes probes(options({OwnerBackend::kSockOps}));
  EXPECT_FALSE(probes.active());
  EXPECT_TRUE(probes.pins().empty());
  EXPECT_EQ(probes.counters().recorded, 0u);
  EXPECT_TRUE(OwnerProbes::remove_pins(bpffs_->path()).empty());
}

TEST_F(OwnerProbesTest, BackendNamesRoundTrip) {
  for (OwnerBackend b : agent::attribution::default_backend_preference()) {
    EXPECT_EQ(agent::attribution::parse_backend(backend_name(b)), b);
  }
  EXPECT_FALSE(agent::attribution::parse_backend("kretprobe"));
  EXPECT_EQ(static_cast<int>(OwnerBackend::kSockOps), TW_BACKEND_SOCK_OPS);
}

// ---- (c) tp_btf records the connecting process ----

struct FamilyCase {
  Family family;
  bool from_thread;
  const char* name;
};

// Readable test names and failure messages.
void PrintTo(const FamilyCase& c, std::ostream* os) { *os << c.name; }

class TpBtfRecordTest : public OwnerProbesTest, public ::testing::WithParamInterface<FamilyCase> {};

TEST_P(TpBtfRecordTest, RecordNamesTheConnectingProcess) {
  OwnerProbes probes(options({OwnerBackend::kTpBtf}));
  ASSERT_EQ(probes.active(), OwnerBackend::kTpBtf) << describe(probes);
  const uint64_t recorded_before = probes.counters().recorded;

  ConnectSpec spec;
  spec.family = GetParam().family;
  spec.from_thread = GetParam().from_thread;
  spec.comm = "tw-owner-tpbtf";
  spec.uid = kUid;
  spec.gid = kGid;
  Worker w(spec);
  ASSERT_TRUE(w.ok()) << w.error();

  const auto rec = owner_of_socket(maps_->owners.get(), w.sock());
  ASSERT_TRUE(rec) << "no owner record in tw_owners for the worker's socket";
  EXPECT_EQ(rec->backend, TW_BACKEND_TP_BTF);
  EXPECT_EQ(rec->tgid, static_cast<uint32_t>(w.pid()));
  EXPECT_EQ(rec->pid, static_cast<uint32_t>(w.tid()));
  if (GetParam().from_thread) {
    EXPECT_NE(rec->pid, rec->tgid);
  }
  EXPECT_EQ(rec->uid, kUid);
  EXPECT_EQ(rec->gid, kGid);
  EXPECT_EQ(comm_of(*rec), "tw-owner-tpbtf");
  const uint64_t cg = cgroup_id_of(w.pid());
  ASSERT_NE(cg, 0u);
  EXPECT_EQ(rec->cgroup_id, cg);
  for (uint8_t b : rec->pad) EXPECT_EQ(b, 0);

  // The start time is the process's, as /proc shows it (within a tick), and
  // user-space enrichment recognises the live process from it.
  agent::attribution::ProcessInfoResolver resolver;
  const uint64_t proc_start = resolver.start_boottime_ns(w.pid());
  const uint64_t tick = 1000000000ull / static_cast<uint64_t>(sysconf(_SC_CLK_TCK));
  ASSERT_NE(rec->start_boottime_ns, 0u);
  EXPECT_LE(proc_start, rec->start_boottime_ns);
  EXPECT_LT(rec->start_boottime_ns - proc_start, tick);
  const auto info = resolver.resolve(rec->tgid, rec->start_boottime_ns, rec->cgroup_id);
  EXPECT_EQ(info.status, agent::attribution::ProcessStatus::kLive);
  char self_exe[4096];
  const ssize_t n = readlink("/proc/self/exe", self_exe, sizeof(self_exe));
  ASSERT_GT(n, 0);
  EXPECT_EQ(info.exe, std::string(self_exe, static_cast<size_t>(n)));
  EXPECT_FALSE(info.cgroup_path.empty());

  EXPECT_GE(probes.counters().recorded, recorded_before + 1);
  EXPECT_EQ(probes.probe_failures(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Families, TpBtfRecordTest,
                         ::testing::Values(FamilyCase{Family::kV4, false, "IPv4"},
                                           FamilyCase{Family::kV6, false, "IPv6"},
                                           FamilyCase{Family::kV4MappedOnV6, false, "IPv4Mapped"},
                                           FamilyCase{Family::kV4, true, "IPv4FromThread"}),
                         [](const auto& info) { return std::string(info.param.name); });

// ---- (d) sock_ops on a child cgroup ----

TEST_F(OwnerProbesTest, SockOpsRecordsSocketsOfItsCgroupOnly) {
  TestCgroup cg;
  OwnerProbes probes(options({OwnerBackend::kSockOps}, cg.path()));
  ASSERT_EQ(probes.active(), OwnerBackend::kSockOps) << describe(probes);
  EXPECT_EQ(sock_ops_programs_on(cg.path()), 1u);

  ConnectSpec inside;
  inside.cgroup = cg.path();
  inside.comm = "tw-owner-sockop";
  inside.uid = kUid;
  inside.gid = kGid;
  {
    Worker w(inside);
    ASSERT_TRUE(w.ok()) << w.error();
    const auto rec = owner_of_socket(maps_->owners.get(), w.sock());
    ASSERT_TRUE(rec) << "no record for a socket of the sock_ops cgroup";
    EXPECT_EQ(rec->backend, TW_BACKEND_SOCK_OPS);
    EXPECT_EQ(rec->cgroup_id, cg.id());
    EXPECT_EQ(rec->tgid, static_cast<uint32_t>(w.pid()));
    EXPECT_EQ(rec->pid, static_cast<uint32_t>(w.tid()));
    EXPECT_EQ(rec->uid, kUid);
    EXPECT_EQ(rec->gid, kGid);
    EXPECT_EQ(comm_of(*rec), "tw-owner-sockop");
    EXPECT_EQ(rec->start_boottime_ns, 0u) << "sock_ops cannot reach the task";
  }
  {
    ConnectSpec outside = inside;
    outside.cgroup.clear();
    Worker w(outside);
    ASSERT_TRUE(w.ok()) << w.error();
    EXPECT_FALSE(owner_of_socket(maps_->owners.get(), w.sock()))
        << "a socket outside the cgroup got a record";
  }
}

// ---- the kprobe backend's key and record, from the same kernel point ----

class KprobeKeyTest : public OwnerProbesTest, public ::testing::WithParamInterface<FamilyCase> {};

TEST_P(KprobeKeyTest, TupleRecordIsKeyedLikeTheClassifiersFlowKey) {
  TestCgroup cg;
  std::unique_ptr<owner_key_probe, decltype(&owner_key_probe__destroy)> s(owner_key_probe__open(),
                                                                          owner_key_probe__destroy);
  ASSERT_TRUE(s);
  ASSERT_EQ(bpf_map__reuse_fd(s->maps.tw_owners, maps_->owners.get()), 0);
  ASSERT_EQ(bpf_map__reuse_fd(s->maps.tw_owner_tuples, maps_->tuples.get()), 0);
  ASSERT_EQ(owner_key_probe__load(s.get()), 0);
  OwnedFd cgfd(open(cg.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_GE(cgfd.get(), 0);
  std::unique_ptr<bpf_link, OwnerProbes::LinkDeleter> link(
      bpf_program__attach_cgroup(s->progs.owner_key_probe, cgfd.get()));
  ASSERT_TRUE(link) << std::strerror(errno);

  ConnectSpec spec;
  spec.family = GetParam().family;
  spec.cgroup = cg.path();
  spec.comm = "tw-owner-kprobe";
  spec.uid = kUid;
  spec.gid = kGid;
  Worker w(spec);
  ASSERT_TRUE(w.ok()) << w.error();

  const tw_flow_key key = flow_key_of_socket(w.sock());
  EXPECT_EQ(key.family, GetParam().family == Family::kV6 ? 6 : 4);
  tw_owner rec{};
  ASSERT_EQ(bpf_map_lookup_elem(maps_->tuples.get(), &key, &rec), 0)
      << "no tuple record under the classifier's key for this socket ("
      << "family " << int(key.family) << ", sport " << ntohs(key.sport) << ", dport "
      << ntohs(key.dport) << ")";
  EXPECT_EQ(rec.backend, TW_BACKEND_KPROBE);
  EXPECT_EQ(rec.tgid, static_cast<uint32_t>(w.pid()));
  EXPECT_EQ(rec.uid, kUid);
  EXPECT_EQ(comm_of(rec), "tw-owner-kprobe");
  EXPECT_EQ(rec.cgroup_id, cg.id());
  // One connection, one record: nothing under any other key.
  tw_flow_key cur{}, next{};
  size_t entries = 0;
  for (int err = bpf_map_get_next_key(maps_->tuples.get(), nullptr, &next); err == 0;
       err = bpf_map_get_next_key(maps_->tuples.get(), &cur, &next)) {
    cur = next;
    ++entries;
  }
  EXPECT_EQ(entries, 1u);
}

INSTANTIATE_TEST_SUITE_P(Families, KprobeKeyTest,
                         ::testing::Values(FamilyCase{Family::kV4, false, "IPv4"},
                                           FamilyCase{Family::kV6, false, "IPv6"},
                                           FamilyCase{Family::kV4MappedOnV6, false, "IPv4Mapped"}),
                         [](const auto& info) { return std::string(info.param.name); });

// ---- (e) never half-attached ----

TEST_F(OwnerProbesTest, FailedBackendsLeaveNothingLoadedOrAttached) {
  // sock_ops on a directory that is no cgroup loads and fails to attach on
  // every kernel; here kprobe fails the same way and fentry at load.
  char tmpl[] = "/tmp/tlswall-owner-notcgroup-XXXXXX";
  ASSERT_TRUE(mkdtemp(tmpl));
  const std::string not_cgroup = tmpl;
  {
    OwnerProbes probes(options({OwnerBackend::kSockOps, OwnerBackend::kKprobe,
                                OwnerBackend::kFentry, OwnerBackend::kTpBtf},
                               not_cgroup));
    SCOPED_TRACE(describe(probes));
    const BackendReport so = report_of(probes, OwnerBackend::kSockOps);
    EXPECT_EQ(so.state, BackendState::kUnavailable);
    EXPECT_EQ(so.why, "attach failed: EBADF (not a cgroup v2 directory) on " + not_cgroup);
    ASSERT_TRUE(probes.active());
    const std::string prog = std::string("owner_") + backend_name(*probes.active());
    if (!kernel_has_kprobes()) {
      EXPECT_EQ(probes.active(), OwnerBackend::kTpBtf);
    }
    // Only the active backend's program is loaded on our tables, with one
    // link; the failed ones left neither.
    const std::multiset<std::string> want{prog};
    const uint32_t map_id =
        probes.active() == OwnerBackend::kKprobe ? maps_->tuples_id : maps_->owners_id;
    EXPECT_EQ(wait_programs_using_map(map_id, want), want);
    EXPECT_EQ(links_using_map(map_id), 1u);
    if (probes.active() != OwnerBackend::kKprobe) {
      EXPECT_TRUE(programs_using_map(maps_->tuples_id).empty());
    }
  }
  rmdir(not_cgroup.c_str());
}

TEST_F(OwnerProbesTest, AttachedButUnpinnableBackendIsRolledBack) {
  // tp_btf and sock_ops attach fine, then pinning fails (the pin directory
  // is not on bpffs): each is undone, nothing records.
  char tmpl[] = "/tmp/tlswall-owner-notbpffs-XXXXXX";
  ASSERT_TRUE(mkdtemp(tmpl));
  const std::string not_bpffs = tmpl;
  TestCgroup cg;
  {
    OwnerProbesOptions o = options({OwnerBackend::kTpBtf, OwnerBackend::kSockOps}, cg.path());
    o.pin_dir = not_bpffs;
    OwnerProbes probes(o);
    SCOPED_TRACE(describe(probes));
    EXPECT_FALSE(probes.active());
    for (OwnerBackend b : {OwnerBackend::kTpBtf, OwnerBackend::kSockOps}) {
      const BackendReport r = report_of(probes, b);
      EXPECT_EQ(r.state, BackendState::kUnavailable);
      EXPECT_EQ(r.why, "pin failed: " + not_bpffs + " is not on bpffs");
    }
    EXPECT_EQ(wait_programs_using_map(maps_->owners_id, {}), std::multiset<std::string>{});
    EXPECT_EQ(sock_ops_programs_on(cg.path()), 0u);

    ConnectSpec spec;
    spec.cgroup = cg.path();
    Worker w(spec);
    ASSERT_TRUE(w.ok()) << w.error();
    EXPECT_FALSE(owner_of_socket(maps_->owners.get(), w.sock()));
  }
  rmdir(not_bpffs.c_str());
}

// ---- (f) restart continuity ----

TEST_F(OwnerProbesTest, NewDaemonTakesOverThePinnedLinkWithoutAGap) {
  const std::string pin = bpffs_->path() + "/owner_link_tp_btf_v1";
  auto first = std::make_unique<OwnerProbes>(options({OwnerBackend::kTpBtf}));
  ASSERT_EQ(first->active(), OwnerBackend::kTpBtf);
  const uint32_t first_link = pinned_link_id(pin);
  ASSERT_NE(first_link, 0u);
  EXPECT_TRUE(first->replaced_pins().empty());

  // The old daemon exits: its link keeps recording through the pin.
  first.reset();
  EXPECT_EQ(pinned_link_id(pin), first_link);
  {
    Worker w(ConnectSpec{});
    ASSERT_TRUE(w.ok()) << w.error();
    EXPECT_TRUE(owner_of_socket(maps_->owners.get(), w.sock())) << "no record between daemons";
  }

  // The next daemon: its own link first, then the old pin goes.
  OwnerProbes second(options({OwnerBackend::kTpBtf}));
  ASSERT_EQ(second.active(), OwnerBackend::kTpBtf);
  const uint32_t second_link = pinned_link_id(pin);
  EXPECT_NE(second_link, 0u);
  EXPECT_NE(second_link, first_link);
  EXPECT_EQ(second.replaced_pins(), std::vector<std::string>{pin});
  EXPECT_EQ(second.pins(), std::vector<std::string>{pin});
  // The old link had no holder but its pin: it is gone with it.
  EXPECT_EQ(wait_programs_using_map(maps_->owners_id, {"owner_tp_btf"}),
            std::multiset<std::string>{"owner_tp_btf"});
  EXPECT_EQ(links_using_map(maps_->owners_id), 1u);
  Worker w(ConnectSpec{});
  ASSERT_TRUE(w.ok()) << w.error();
  const auto rec = owner_of_socket(maps_->owners.get(), w.sock());
  ASSERT_TRUE(rec);
  EXPECT_EQ(rec->backend, TW_BACKEND_TP_BTF);
}

TEST_F(OwnerProbesTest, NewDaemonWithoutABackendLeavesTheOldLinkRecording) {
  { OwnerProbes first(options({OwnerBackend::kTpBtf})); }
  const std::string pin = bpffs_->path() + "/owner_link_tp_btf_v1";
  const uint32_t old_link = pinned_link_id(pin);
  ASSERT_NE(old_link, 0u);

  // Nothing attaches for the new daemon (sock_ops without a cgroup): the
  // old link is not retired, so connections are still attributed.
  OwnerProbes second(options({OwnerBackend::kSockOps}));
  EXPECT_FALSE(second.active());
  EXPECT_TRUE(second.replaced_pins().empty());
  EXPECT_EQ(pinned_link_id(pin), old_link);
  Worker w(ConnectSpec{});
  ASSERT_TRUE(w.ok()) << w.error();
  const auto rec = owner_of_socket(maps_->owners.get(), w.sock());
  ASSERT_TRUE(rec);
  EXPECT_EQ(rec->backend, TW_BACKEND_TP_BTF);
}

TEST_F(OwnerProbesTest, TakeOverAcrossBackendsDetachesTheOldCgroupLink) {
  TestCgroup cg;
  // Old daemon: sock_ops, still running (holds its link fd).
  OwnerProbes old_daemon(options({OwnerBackend::kSockOps}, cg.path()));
  ASSERT_EQ(old_daemon.active(), OwnerBackend::kSockOps) << describe(old_daemon);
  ASSERT_EQ(sock_ops_programs_on(cg.path()), 1u);
  const std::string old_pin = bpffs_->path() + "/owner_link_sock_ops_v1";
  ASSERT_NE(pinned_link_id(old_pin), 0u);

  // New daemon prefers tp_btf: takes over, and the old cgroup link is
  // detached (cgroup links support BPF_LINK_DETACH) although its owner
  // still holds it.
  OwnerProbes new_daemon(options({OwnerBackend::kTpBtf, OwnerBackend::kSockOps}, cg.path()));
  ASSERT_EQ(new_daemon.active(), OwnerBackend::kTpBtf) << describe(new_daemon);
  EXPECT_EQ(new_daemon.replaced_pins(), std::vector<std::string>{old_pin});
  EXPECT_FALSE(path_exists(old_pin));
  EXPECT_TRUE(path_exists(bpffs_->path() + "/owner_link_tp_btf_v1"));
  EXPECT_EQ(sock_ops_programs_on(cg.path()), 0u);

  ConnectSpec spec;
  spec.cgroup = cg.path();
  Worker w(spec);
  ASSERT_TRUE(w.ok()) << w.error();
  const auto rec = owner_of_socket(maps_->owners.get(), w.sock());
  ASSERT_TRUE(rec);
  EXPECT_EQ(rec->backend, TW_BACKEND_TP_BTF) << "the old sock_ops link still records";

  // Teardown removes every owner pin; with no daemon holding it, the
  // program is gone.
  EXPECT_EQ(OwnerProbes::remove_pins(bpffs_->path()),
            std::vector<std::string>{bpffs_->path() + "/owner_link_tp_btf_v1"});
}

TEST_F(OwnerProbesTest, TeardownRemovesPinsAndUnloadsWhenNoDaemonHoldsThem) {
  { OwnerProbes probes(options({OwnerBackend::kTpBtf})); }
  EXPECT_EQ(wait_programs_using_map(maps_->owners_id, {"owner_tp_btf"}),
            std::multiset<std::string>{"owner_tp_btf"})
      << "the pinned link must outlive the daemon";
  const auto removed = OwnerProbes::remove_pins(bpffs_->path());
  EXPECT_EQ(removed, std::vector<std::string>{bpffs_->path() + "/owner_link_tp_btf_v1"});
  EXPECT_EQ(wait_programs_using_map(maps_->owners_id, {}), std::multiset<std::string>{});
}

}  // namespace
}  // namespace tlswall::ownertest
