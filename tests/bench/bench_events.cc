// tlswall_bench_events: sustained events per second through the event
// pipeline into the test Scribe server without loss, and the CPU it costs.
//
//   tlswall_bench_events [--rates 10000,25000,50000,100000,150000,200000]
//                        [--seconds 5] [--sinks scribe,scribe+json]
//                        [--server PATH] [--write]
//
// For each rate: a fresh pipeline (Scribe sink with its disk buffer
// enabled, aggregation off so every event is delivered as itself) gets
// synthetic plaintext_blocked events (flow + owner fields, ~600 bytes of
// JSON) submitted at that rate from one thread for --seconds; then it is
// flushed, and the events the server accepted are counted. The server runs
// in its own process (tlswall_scribe_test_server, counting only), so the
// CPU measured is the pipeline's: getrusage(RUSAGE_SELF) over the run,
// with and without the submitting thread's own CPU (RUSAGE_THREAD).
// --sinks lists the configurations to measure: "scribe" alone, or
// "scribe+json" (plus a JSON-lines file in a temp directory).
// --write replaces the section between "<!-- bench_events -->" and
// "<!-- /bench_events -->" in BENCHMARKS.md (appending it if absent).
// Not a test: prints tables and the command that produced them.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "../logging/test_owner.h"
#include "logging/event_pipeline.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace tlswall::logging;

double cpu_seconds(int who) {
  rusage ru{};
  ::getrusage(who, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// The test Scribe server as a child process, driven over its stdin/stdout.
class ServerProcess {
 public:
  explicit ServerProcess(const std::string& path) {
    int in[2], out[2];
    if (::pipe(in) != 0 || ::pipe(out) != 0) std::exit(1);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // never outlives the benchmark
      ::dup2(in[0], 0);
      ::dup2(out[1], 1);
      ::close(in[1]);
      ::close(out[0]);
      ::execl(path.c_str(), path.c_str(), "--no-keep", static_cast<char*>(nullptr));
      std::perror(path.c_str());
      ::_exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    to_ = ::fdopen(in[1], "w");
    from_ = ::fdopen(out[0], "r");
    const std::string first = line();
    if (first.rfind("port ", 0) != 0) {
      std::fprintf(stderr, "bench: server did not start: %s\n", first.c_str());
      std::exit(1);
    }
    port_ = std::atoi(first.c_str() + 5);
  }
  ~ServerProcess() {
    command("quit");
    std::fclose(to_);
    int st;
    ::waitpid(pid_, &st, 0);
    std::fclose(from_);
  }
  int port() const { return port_; }
  uint64_t accepted() {
    const std::string r = command("count");
    return std::strtoull(r.c_str() + 6, nullptr, 10);
  }

 private:
  std::string line() {
    char buf[256];
    if (!std::fgets(buf, sizeof(buf), from_)) return "";
    std::string s(buf);
    while (!s.empty() && s.back() == '\n') s.pop_back();
    return s;
  }
  std::string command(const char* c) {
    std::fprintf(to_, "%s\n", c);
    std::fflush(to_);
    return std::string(c) == "quit" ? "" : line();
  }
  pid_t pid_ = -1;
  FILE* to_ = nullptr;
  FILE* from_ = nullptr;
  int port_ = 0;
};

Event make_event(uint64_t i) {
  Event e;
  e.type = EventType::kPlaintextBlocked;
  e.severity = Severity::kWarning;
  e.flow = FlowEndpoints{4,
                         "198.18.0.2",
                         static_cast<uint16_t>(10000 + i % 50000),
                         "198.18." + std::to_string(128 + i % 100) + "." + std::to_string(i % 250),
                         5432,
                         "tcp"};
  e.owner = TestOwner(static_cast<uint32_t>(1000 + i % 30000), 1000u, "psql", "/usr/bin/psql",
                      "/system.slice/billing-report.service", "");
  e.action = "drop";
  e.reason = "not_handshake_record";
  e.mode = "enforce";
  e.boundary = "remote-region";
  e.rule = "remote-region-tls";
  e.interface = "eth0";
  e.policy_version = "2026-11-21.1";
  e.policy_generation = 3;
  e.sock_cookie = 0x10000 + i;
  return e;
}

struct Result {
  double rate = 0;
  double achieved = 0;
  uint64_t submitted = 0;
  uint64_t delivered = 0;
  uint64_t dropped = 0;
  double drain_s = 0;
  double cpu_total = 0;  // cores
  double cpu_pipeline = 0;
  bool flushed = false;
};

Result run(ServerProcess& server, double rate, double seconds, bool with_json) {
  const fs::path dir = fs::temp_directory_path() / ("tw_bench_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  PipelineConfig c;
  c.host = "bench-host";
  c.agent_version = TLSWALL_VERSION;
  c.state_dir = (dir / "state").string();
  c.host_id = "bench";
  c.aggregate_window_ms = 0;
  ScribeSinkConfig s;
  s.common.name = "scribe";
  s.host = "127.0.0.1";
  s.port = server.port();
  c.scribe.push_back(s);
  if (with_json) {
    JsonSinkConfig j;
    j.common.name = "json";
    j.path = (dir / "events.jsonl").string();
    j.max_bytes = 256ull << 20;
    j.max_files = 1;
    c.json.push_back(j);
  }
  const uint64_t before = server.accepted();
  Result r;
  r.rate = rate;
  {
    auto p = make_event_pipeline(c);
    const double cpu0 = cpu_seconds(RUSAGE_SELF);
    double gen_cpu = 0;
    const auto t0 = Clock::now();
    const uint64_t n = static_cast<uint64_t>(rate * seconds);
    std::thread gen([&] {
      const double g0 = cpu_seconds(RUSAGE_THREAD);
      for (uint64_t i = 0; i < n; ++i) {
        p->submit(make_event(i));
        if (i % 64 == 63) {
          std::this_thread::sleep_until(
              t0 + std::chrono::duration_cast<Clock::duration>(
                       std::chrono::duration<double>(static_cast<double>(i + 1) / rate)));
        }
      }
      gen_cpu = cpu_seconds(RUSAGE_THREAD) - g0;
    });
    gen.join();
    const auto t_submitted = Clock::now();
    r.flushed = p->flush(60000);
    const auto t_done = Clock::now();
    const double cpu = cpu_seconds(RUSAGE_SELF) - cpu0;
    const double wall = std::chrono::duration<double>(t_done - t0).count();
    const PipelineHealth h = p->health();
    r.submitted = n;
    r.achieved = static_cast<double>(n) / std::chrono::duration<double>(t_submitted - t0).count();
    r.drain_s = std::chrono::duration<double>(t_done - t_submitted).count();
    r.cpu_total = cpu / wall;
    r.cpu_pipeline = (cpu - gen_cpu) / wall;
    r.dropped = h.dropped_queue;
    for (const auto& sh : h.sinks) r.dropped += sh.dropped;
  }
  r.delivered = server.accepted() - before;
  fs::remove_all(dir);
  return r;
}

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof(buf), f, ap);
  va_end(ap);
  return buf;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// "abc1234" or "abc1234 (dirty tree)", "unknown" outside a checkout.
std::string git_tree() {
  const std::string dir = TLSWALL_SOURCE_DIR;
  std::string out = "unknown";
  if (FILE* p = ::popen(("git -C " + dir + " rev-parse --short HEAD 2>/dev/null").c_str(), "r")) {
    char buf[64] = {};
    if (std::fgets(buf, sizeof(buf), p)) {
      out = buf;
      while (!out.empty() && out.back() == '\n') out.pop_back();
    }
    ::pclose(p);
  }
  if (FILE* p = ::popen(("git -C " + dir + " status --porcelain 2>/dev/null").c_str(), "r")) {
    char buf[8];
    if (std::fgets(buf, sizeof(buf), p)) out += " (dirty tree)";
    ::pclose(p);
  }
  return out;
}

// Replaces (or appends) the marked section of BENCHMARKS.md.
bool write_section(const std::string& path, const std::string& body) {
  const std::string begin = "<!-- bench_events -->", end = "<!-- /bench_events -->";
  std::string text = read_text(path);
  const std::string section = begin + "\n" + body + end + "\n";
  const size_t b = text.find(begin);
  const size_t e = text.find(end);
  if (b != std::string::npos && e != std::string::npos && e > b) {
    text.replace(b, e + end.size() - b + (text.compare(e + end.size(), 1, "\n") == 0 ? 1 : 0),
                 section);
  } else {
    if (!text.empty() && text.back() != '\n') text += "\n";
    text += "\n" + section;
  }
  std::ofstream out(path, std::ios::trunc);
  out << text;
  return static_cast<bool>(out);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<double> rates = {10000, 25000, 50000, 100000, 150000, 200000};
  std::vector<std::string> sinks = {"scribe", "scribe+json"};
  double seconds = 5;
  bool write = false;
  std::string server_path =
      (fs::read_symlink("/proc/self/exe").parent_path() / "tlswall_scribe_test_server").string();
  std::string cmd = "tlswall_bench_events";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a != "--write") cmd += " " + a;
    if (a == "--rates" && i + 1 < argc) {
      cmd += std::string(" ") + argv[i + 1];
      rates.clear();
      std::string list = argv[++i];
      for (size_t pos = 0; pos < list.size();) {
        const size_t comma = list.find(',', pos);
        rates.push_back(std::atof(list.substr(pos, comma - pos).c_str()));
        pos = comma == std::string::npos ? list.size() : comma + 1;
      }
    } else if (a == "--sinks" && i + 1 < argc) {
      cmd += std::string(" ") + argv[i + 1];
      sinks.clear();
      std::string list = argv[++i];
      for (size_t pos = 0; pos < list.size();) {
        const size_t comma = list.find(',', pos);
        sinks.push_back(list.substr(pos, comma - pos));
        pos = comma == std::string::npos ? list.size() : comma + 1;
      }
    } else if (a == "--seconds" && i + 1 < argc) {
      cmd += std::string(" ") + argv[i + 1];
      seconds = std::atof(argv[++i]);
    } else if (a == "--server" && i + 1 < argc) {
      server_path = argv[++i];
    } else if (a == "--write") {
      write = true;
    } else {
      std::fprintf(stderr,
                   "usage: %s [--rates R1,R2,...] [--seconds S] [--sinks scribe,scribe+json]"
                   " [--server PATH] [--write]\n",
                   argv[0]);
      return 2;
    }
  }
  for (const auto& k : sinks) {
    if (k != "scribe" && k != "scribe+json") {
      std::fprintf(stderr, "bench: unknown sink set '%s'\n", k.c_str());
      return 2;
    }
  }
  utsname u{};
  ::uname(&u);
  double load0[3] = {0, 0, 0}, load1[3] = {0, 0, 0};
  ::getloadavg(load0, 3);
  const auto wall0 = Clock::now();
  std::string md;
  std::printf("# %s\n", cmd.c_str());
  ServerProcess server(server_path);
  std::vector<std::pair<std::string, double>> best;
  for (const auto& kind : sinks) {
    const bool with_json = kind == "scribe+json";
    std::string table =
        std::string("Sinks: ") +
        (with_json ? "Scribe (disk buffer on) + JSON-lines file" : "Scribe (disk buffer on)") +
        ".\n\n"
        "| target ev/s | achieved ev/s | submitted | delivered | lost | drain after "
        "last submit | CPU (cores) | CPU without the generator | per 10k ev/s | verdict |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
    std::printf("\n%s", table.c_str());
    double top = 0;
    for (double rate : rates) {
      const Result r = run(server, rate, seconds, with_json);
      const uint64_t lost = r.submitted > r.delivered ? r.submitted - r.delivered : 0;
      const bool clean =
          lost == 0 && r.dropped == 0 && r.flushed && r.drain_s < 1.0 && r.achieved >= 0.97 * rate;
      if (clean) top = std::max(top, r.achieved);
      const std::string row = fmt(
          "| %.0f | %.0f | %llu | %llu | %llu | %.3f s | %.3f | %.3f | %.1f %% of a core | %s |\n",
          r.rate, r.achieved, static_cast<unsigned long long>(r.submitted),
          static_cast<unsigned long long>(r.delivered), static_cast<unsigned long long>(lost),
          r.drain_s, r.cpu_total, r.cpu_pipeline, 100.0 * r.cpu_pipeline / (rate / 10000.0),
          clean ? "sustained" : "not sustained");
      table += row;
      std::printf("%s", row.c_str());
      std::fflush(stdout);
    }
    best.emplace_back(kind, top);
    md += table + "\n";
  }
  ::getloadavg(load1, 3);
  std::string summary;
  for (const auto& [k, top] : best) {
    summary +=
        fmt("- **%s**: sustained without loss up to %.0f events/s (the highest rate tried "
            "that was delivered completely, with under 1 s to drain).\n",
            k.c_str(), top);
  }
  std::printf("\n%s", summary.c_str());
  if (!write) return 0;

  char date[64];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  const std::string body =
      "## Event pipeline: events per second into Scribe, and CPU\n\n"
      "Generated by `tlswall_bench_events --write` (`tests/bench/bench_events.cc`); do not edit "
      "by hand.\n\n" +
      summary + "\n" + md +
      "`CPU (cores)`: CPU time of the whole process (pipeline thread, sink threads, and the "
      "thread generating the events) divided by the wall time from the first submit until "
      "everything was delivered. `CPU without the generator` leaves out the generating thread's "
      "own CPU (building the events, which the daemon does anyway). `per 10k ev/s` = that, per "
      "10,000 events/s of load, as a share of one core. `lost` = submitted minus accepted by the "
      "server; `sustained` = nothing lost, the rate reached, and the backlog gone within 1 s "
      "of the last submit.\n\n"
      "### What it measures\n\n"
      "- One thread submits synthetic `plaintext_blocked` events (flow, owner and policy "
      "fields; about 600 bytes of JSON each) at a fixed rate for " +
      fmt("%g", seconds) +
      " s, through a fresh pipeline per rate (aggregation off, so every event is delivered as "
      "itself; the Scribe sink's disk buffer enabled, as in production, and unused while "
      "Scribe keeps up), into `tlswall_scribe_test_server` (the Scribe server generated from "
      "`logging/scribe.thrift`) in its own process on 127.0.0.1, which counts what it "
      "accepted.\n"
      "- Not measured here: the kernel -> ring buffer -> daemon part (the BPF event, "
      "enrichment, `submit()` from the daemon's thread): the section \"Events from the kernel "
      "to Scribe\" below measures that path end to end.\n"
      "- The server shares this VM's CPUs with the pipeline; at the top rates it competes for "
      "them.\n\n"
      "### Environment\n\n" +
      fmt("- date: %s\n- kernel: %s, %u CPUs\n- load average (1 min) at start %.2f, at end "
          "%.2f; wall time %.0f s (the VM is shared with builds and other tests)\n"
          "- tlswall %s, tree %s\n\n",
          date, u.release, std::thread::hardware_concurrency(), load0[0], load1[0],
          std::chrono::duration<double>(Clock::now() - wall0).count(), TLSWALL_VERSION,
          git_tree().c_str()) +
      "### Reproduce\n\n```\ncmake --build build --target tlswall_bench_events "
      "tlswall_scribe_test_server\nbuild/tests/logging/" +
      cmd + " --write\n```\n\n";
  const std::string path = std::string(TLSWALL_SOURCE_DIR) + "/BENCHMARKS.md";
  if (!write_section(path, body)) {
    std::fprintf(stderr, "bench: cannot write %s\n", path.c_str());
    return 1;
  }
  std::printf("wrote the bench_events section of %s\n", path.c_str());
  return 0;
}
