#include "tests/bpf/owner_test_support.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/bpf.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <thread>
#include <vector>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "agent/sys_mounts.h"

namespace tlswall::ownertest {
namespace {

std::string errstr(int e) { return std::strerror(e); }

// What the child tells the test: 0, or the errno of the step that failed.
struct Report {
  int err;
  int step;
  pid_t tid;
};

enum Step {
  kStepCgroup = 1,
  kStepUnshare,
  kStepLoopback,
  kStepListen,
  kStepName,
  kStepCreds,
  kStepSocket,
  kStepConnect,
  kStepSend,
};

const char* step_name(int step) {
  switch (step) {
    case kStepCgroup:
      return "join cgroup";
    case kStepUnshare:
      return "unshare(CLONE_NEWNET)";
    case kStepLoopback:
      return "bring up lo";
    case kStepListen:
      return "listen";
    case kStepName:
      return "prctl(PR_SET_NAME)";
    case kStepCreds:
      return "setresgid/setresuid";
    case kStepSocket:
      return "socket";
    case kStepConnect:
      return "connect";
    case kStepSend:
      return "send the socket";
  }
  return "?";
}

// The child's whole life; only system calls and fixed buffers (we forked).
[[noreturn]] void child_main(int ctl, const ConnectSpec& spec, const char* procs) {
  auto fail = [ctl](int step) {
    Report r{errno ? errno : EIO, step, 0};
    (void)!::send(ctl, &r, sizeof(r), MSG_NOSIGNAL);
    ::_exit(1);
  };
  if (procs[0]) {
    const int fd = ::open(procs, O_WRONLY | O_CLOEXEC);
    char buf[32];
    const int n = std::snprintf(buf, sizeof(buf), "%d\n", static_cast<int>(::getpid()));
    if (fd < 0 || ::write(fd, buf, static_cast<size_t>(n)) != n) fail(kStepCgroup);
    ::close(fd);
  }
  if (::unshare(CLONE_NEWNET) != 0) fail(kStepUnshare);
  {
    const int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    if (s < 0 || ::ioctl(s, SIOCGIFFLAGS, &ifr) != 0) fail(kStepLoopback);
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
    if (::ioctl(s, SIOCSIFFLAGS, &ifr) != 0) fail(kStepLoopback);
    ::close(s);
  }

  sockaddr_storage addr{};
  socklen_t alen = 0;
  const bool v6_listener = spec.family == Family::kV6;
  if (v6_listener) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
    a->sin6_family = AF_INET6;
    a->sin6_addr = in6addr_loopback;
    alen = sizeof(*a);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&addr);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    alen = sizeof(*a);
  }
  const int lst = ::socket(v6_listener ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (lst < 0 || ::bind(lst, reinterpret_cast<sockaddr*>(&addr), alen) != 0 ||
      ::listen(lst, 8) != 0 || ::getsockname(lst, reinterpret_cast<sockaddr*>(&addr), &alen) != 0) {
    fail(kStepListen);
  }
  if (spec.family == Family::kV4MappedOnV6) {
    const auto v4 = *reinterpret_cast<sockaddr_in*>(&addr);
    auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
    std::memset(a, 0, sizeof(*a));
    a->sin6_family = AF_INET6;
    a->sin6_port = v4.sin_port;
    a->sin6_addr.s6_addr[10] = 0xff;
    a->sin6_addr.s6_addr[11] = 0xff;
    std::memcpy(&a->sin6_addr.s6_addr[12], &v4.sin_addr, 4);
    alen = sizeof(*a);
  }

  if (::prctl(PR_SET_NAME, spec.comm.c_str(), 0, 0, 0) != 0) fail(kStepName);
  if (spec.gid != 0 &&
      (::setgroups(0, nullptr) != 0 || ::setresgid(spec.gid, spec.gid, spec.gid) != 0)) {
    fail(kStepCreds);
  }
  if (spec.uid != 0 && ::setresuid(spec.uid, spec.uid, spec.uid) != 0) fail(kStepCreds);

  const int domain = spec.family == Family::kV4 ? AF_INET : AF_INET6;
  int cli = -1;
  int step = 0;
  int err = 0;
  pid_t tid = 0;
  auto do_connect = [&] {
    tid = ::gettid();
    cli = ::socket(domain, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (cli < 0) {
      err = errno;
      step = kStepSocket;
    } else if (::connect(cli, reinterpret_cast<sockaddr*>(&addr), alen) != 0) {
      err = errno;
      step = kStepConnect;
    }
  };
  if (spec.from_thread) {
    std::thread t(do_connect);
    t.join();
  } else {
    do_connect();
  }
  if (step) {
    errno = err;
    fail(step);
  }

  Report r{0, 0, tid};
  iovec iov{&r, sizeof(r)};
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = cbuf;
  msg.msg_controllen = sizeof(cbuf);
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &cli, sizeof(int));
  if (::sendmsg(ctl, &msg, MSG_NOSIGNAL) < 0) fail(kStepSend);
  // Alive (start time, /proc entry) until the test lets go.
  char b;
  while (::read(ctl, &b, 1) < 0 && errno == EINTR) {
  }
  ::_exit(0);
}

uint32_t id_of_fd(int fd, bool is_map) {
  if (is_map) {
    bpf_map_info info{};
    __u32 len = sizeof(info);
    return bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0;
  }
  bpf_link_info info{};
  __u32 len = sizeof(info);
  return bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0;
}

// Program ids that use map `map_id`, with their names.
std::vector<std::pair<uint32_t, std::string>> progs_with_map(uint32_t map_id) {
  std::vector<std::pair<uint32_t, std::string>> out;
  __u32 id = 0;
  while (bpf_prog_get_next_id(id, &id) == 0) {
    OwnedFd fd(bpf_prog_get_fd_by_id(id));
    if (fd.get() < 0) continue;  // unloaded meanwhile
    std::vector<__u32> maps(64);
    bpf_prog_info info{};
    info.nr_map_ids = static_cast<__u32>(maps.size());
    info.map_ids = reinterpret_cast<__u64>(maps.data());
    __u32 len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd.get(), &info, &len) != 0) continue;
    for (__u32 i = 0; i < std::min<__u32>(info.nr_map_ids, 64); ++i) {
      if (maps[i] == map_id) {
        out.emplace_back(id, info.name);
        break;
      }
    }
  }
  return out;
}

}  // namespace

bool path_exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

PrivateBpffs::PrivateBpffs() {
  char tmpl[] = "/tmp/tlswall-owner-pins-XXXXXX";
  if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp: " + errstr(errno));
  path_ = tmpl;
  if (::mount("bpf", path_.c_str(), "bpf", 0, "mode=0700") != 0) {
    const int e = errno;
    ::rmdir(path_.c_str());
    throw std::runtime_error("cannot mount a private bpffs at " + path_ + ": " + errstr(e));
  }
}

PrivateBpffs::~PrivateBpffs() {
  ::umount2(path_.c_str(), MNT_DETACH);
  ::rmdir(path_.c_str());
}

OwnerMaps::OwnerMaps() {
  // Socket storage maps need BTF for key (int) and value; the value type
  // only has to have the record's size.
  btf* b = btf__new_empty();
  if (!b) throw std::runtime_error("btf__new_empty: " + errstr(errno));
  const int int_id = btf__add_int(b, "int", 4, BTF_INT_SIGNED);
  const int byte_id = btf__add_int(b, "unsigned char", 1, 0);
  const int arr_id = btf__add_array(b, int_id, byte_id, sizeof(tw_owner));
  const int owner_id = btf__add_struct(b, "tw_owner", sizeof(tw_owner));
  int err = btf__add_field(b, "raw", arr_id, 0, 0);
  if (int_id < 0 || byte_id < 0 || arr_id < 0 || owner_id < 0 || err) {
    btf__free(b);
    throw std::runtime_error("cannot build the owner BTF");
  }
  err = btf__load_into_kernel(b);
  if (err) {
    btf__free(b);
    throw std::runtime_error("btf__load_into_kernel: " + errstr(-err));
  }
  LIBBPF_OPTS(bpf_map_create_opts, so, .btf_fd = static_cast<__u32>(btf__fd(b)),
              .btf_key_type_id = static_cast<__u32>(int_id),
              .btf_value_type_id = static_cast<__u32>(owner_id), .map_flags = BPF_F_NO_PREALLOC);
  owners = OwnedFd(
      bpf_map_create(BPF_MAP_TYPE_SK_STORAGE, "tw_owners", sizeof(int), sizeof(tw_owner), 0, &so));
  const int e1 = errno;
  btf__free(b);  // the map holds its own reference to the BTF
  if (owners.get() < 0) throw std::runtime_error("create tw_owners: " + errstr(e1));
  LIBBPF_OPTS(bpf_map_create_opts, to);
  tuples = OwnedFd(bpf_map_create(BPF_MAP_TYPE_LRU_HASH, "tw_owner_tuples", sizeof(tw_flow_key),
                                  sizeof(tw_owner), 16384, &to));
  if (tuples.get() < 0) throw std::runtime_error("create tw_owner_tuples: " + errstr(errno));
  owners_id = id_of_fd(owners.get(), true);
  tuples_id = id_of_fd(tuples.get(), true);
}

std::string cgroup2_mount() {
  const std::string m = agent::find_cgroup2();
  if (m.empty()) throw std::runtime_error("no cgroup2 mount in /proc/mounts");
  return m;
}

TestCgroup::TestCgroup() {
  static std::atomic<int> seq{0};
  path_ = cgroup2_mount() + "/tlswall-owner-test-" + std::to_string(::getpid()) + "-" +
          std::to_string(seq++);
  create();
}

TestCgroup::TestCgroup(const std::string& parent, const std::string& name)
    : path_(parent + "/" + name) {
  create();
}

uint32_t TestCgroup::level() const {
  const std::string rel = path_.substr(cgroup2_mount().size());
  return static_cast<uint32_t>(std::count(rel.begin(), rel.end(), '/'));
}

void TestCgroup::create() {
  if (::mkdir(path_.c_str(), 0755) != 0) {
    throw std::runtime_error("mkdir " + path_ + ": " + errstr(errno));
  }
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) throw std::runtime_error("stat " + path_);
  id_ = st.st_ino;
}

TestCgroup::~TestCgroup() {
  // Exited members leave the cgroup a moment after they are reaped.
  for (int i = 0; i < 200; ++i) {
    if (::rmdir(path_.c_str()) == 0 || errno == ENOENT) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::fprintf(stderr, "warning: cannot remove test cgroup %s: %s\n", path_.c_str(),
               std::strerror(errno));
}

uint64_t cgroup_id_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("0::", 0) != 0) continue;
    struct stat st {};
    const std::string dir = cgroup2_mount() + line.substr(3);
    return ::stat(dir.c_str(), &st) == 0 ? st.st_ino : 0;
  }
  return 0;
}

Worker::Worker(const ConnectSpec& spec) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    error_ = "socketpair: " + errstr(errno);
    return;
  }
  char procs[512] = {};
  if (!spec.cgroup.empty()) {
    std::snprintf(procs, sizeof(procs), "%s/cgroup.procs", spec.cgroup.c_str());
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    error_ = "fork: " + errstr(errno);
    ::close(sv[0]);
    ::close(sv[1]);
    return;
  }
  if (pid == 0) {
    ::close(sv[0]);
    child_main(sv[1], spec, procs);
  }
  ::close(sv[1]);
  pid_ = pid;
  ctl_ = OwnedFd(sv[0]);

  pollfd p{ctl_.get(), POLLIN, 0};
  if (::poll(&p, 1, 10000) != 1) {
    error_ = "worker did not report within 10 s";
    return;
  }
  Report r{};
  iovec iov{&r, sizeof(r)};
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = cbuf;
  msg.msg_controllen = sizeof(cbuf);
  const ssize_t n = ::recvmsg(ctl_.get(), &msg, MSG_CMSG_CLOEXEC);
  if (n != static_cast<ssize_t>(sizeof(r))) {
    error_ = "worker exited without a report";
    return;
  }
  if (r.err != 0) {
    error_ = std::string("worker failed to ") + step_name(r.step) + ": " + errstr(r.err);
    return;
  }
  tid_ = r.tid;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int fd = -1;
      std::memcpy(&fd, CMSG_DATA(c), sizeof(int));
      sock_ = OwnedFd(fd);
    }
  }
  if (sock_.get() < 0) error_ = "worker sent no socket";
}

Worker::~Worker() {
  if (pid_ <= 0) return;
  ctl_.reset();  // the child's read returns: it exits
  for (int i = 0; i < 500; ++i) {
    if (::waitpid(pid_, nullptr, WNOHANG) == pid_) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
}

std::optional<tw_owner> owner_of_socket(int owners_fd, int sock) {
  tw_owner o{};
  if (bpf_map_lookup_elem(owners_fd, &sock, &o) != 0) return std::nullopt;
  return o;
}

tw_flow_key flow_key_of_socket(int sock) {
  sockaddr_storage local{}, peer{};
  socklen_t llen = sizeof(local), plen = sizeof(peer);
  if (::getsockname(sock, reinterpret_cast<sockaddr*>(&local), &llen) != 0 ||
      ::getpeername(sock, reinterpret_cast<sockaddr*>(&peer), &plen) != 0) {
    throw std::runtime_error("getsockname/getpeername: " + errstr(errno));
  }
  tw_flow_key k{};
  k.proto = IPPROTO_TCP;
  if (local.ss_family == AF_INET) {
    const auto* l = reinterpret_cast<const sockaddr_in*>(&local);
    const auto* p = reinterpret_cast<const sockaddr_in*>(&peer);
    k.family = 4;
    k.saddr[10] = k.saddr[11] = k.daddr[10] = k.daddr[11] = 0xff;
    std::memcpy(k.saddr + 12, &l->sin_addr, 4);
    std::memcpy(k.daddr + 12, &p->sin_addr, 4);
    k.sport = l->sin_port;
    k.dport = p->sin_port;
    return k;
  }
  const auto* l = reinterpret_cast<const sockaddr_in6*>(&local);
  const auto* p = reinterpret_cast<const sockaddr_in6*>(&peer);
  // An IPv4-mapped peer means IPv4 on the wire: the classifier sees family 4
  // with the same ::ffff:a.b.c.d addresses.
  k.family = IN6_IS_ADDR_V4MAPPED(&p->sin6_addr) ? 4 : 6;
  std::memcpy(k.saddr, &l->sin6_addr, 16);
  std::memcpy(k.daddr, &p->sin6_addr, 16);
  k.sport = l->sin6_port;
  k.dport = p->sin6_port;
  return k;
}

std::multiset<std::string> programs_using_map(uint32_t map_id) {
  std::multiset<std::string> out;
  for (const auto& [id, name] : progs_with_map(map_id)) out.insert(name);
  return out;
}

size_t links_using_map(uint32_t map_id) {
  std::set<uint32_t> progs;
  for (const auto& [id, name] : progs_with_map(map_id)) progs.insert(id);
  size_t n = 0;
  __u32 id = 0;
  while (bpf_link_get_next_id(id, &id) == 0) {
    OwnedFd fd(bpf_link_get_fd_by_id(id));
    if (fd.get() < 0) continue;
    bpf_link_info info{};
    __u32 len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd.get(), &info, &len) == 0 && progs.count(info.prog_id)) ++n;
  }
  return n;
}

std::multiset<std::string> wait_programs_using_map(uint32_t map_id,
                                                   const std::multiset<std::string>& want) {
  std::multiset<std::string> got;
  for (int i = 0; i < 200; ++i) {
    got = programs_using_map(map_id);
    if (got == want) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return got;
}

uint32_t pinned_link_id(const std::string& path) {
  OwnedFd fd(bpf_obj_get(path.c_str()));
  return fd.get() < 0 ? 0 : id_of_fd(fd.get(), false);
}

size_t sock_ops_programs_on(const std::string& dir) {
  OwnedFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return 0;
  __u32 ids[16];
  __u32 cnt = 16;
  __u32 flags = 0;
  if (bpf_prog_query(fd.get(), BPF_CGROUP_SOCK_OPS, 0, &flags, ids, &cnt) != 0) return 0;
  return cnt;
}

}  // namespace tlswall::ownertest
