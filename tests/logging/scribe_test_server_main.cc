// tlswall_scribe_test_server: the test Scribe server as a program, for
// end-to-end runs with tlswalld and for benchmarks.
//
//   tlswall_scribe_test_server [--port N] [--out FILE] [--no-keep]
//
// Listens on 127.0.0.1:N (0 = any free port), prints "port N" on stdout,
// then reads commands, one per line, on stdin and answers each on stdout:
//   ok | try_later | fail_after_accept   answer mode
//   delay MS                             delay before each answer
//   stop | start                         stop listening / listen again (same port)
//   count                                "count ACCEPTED CALLS TRY_LATER"
//   dump                                 writes accepted messages to --out, one per line
//   quit                                 (also on end of input)
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>

#include "tests/logging/scribe_test_server.h"

int main(int argc, char** argv) {
  int port = 0;
  std::string out;
  bool keep = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--port" && i + 1 < argc) {
      port = std::atoi(argv[++i]);
    } else if (a == "--out" && i + 1 < argc) {
      out = argv[++i];
    } else if (a == "--no-keep") {
      keep = false;
    } else {
      std::fprintf(stderr, "usage: %s [--port N] [--out FILE] [--no-keep]\n", argv[0]);
      return 2;
    }
  }
  using tlswall::testing::ScribeTestServer;
  ScribeTestServer server(port, keep);
  try {
    server.start();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  std::cout << "port " << server.port() << std::endl;
  for (std::string line; std::getline(std::cin, line);) {
    if (line == "ok") {
      server.set_mode(ScribeTestServer::Mode::kOk);
    } else if (line == "try_later") {
      server.set_mode(ScribeTestServer::Mode::kTryLater);
    } else if (line == "fail_after_accept") {
      server.set_mode(ScribeTestServer::Mode::kAcceptThenFail);
    } else if (line.rfind("delay ", 0) == 0) {
      server.set_delay(std::chrono::milliseconds(std::atoi(line.c_str() + 6)));
    } else if (line == "stop") {
      server.stop();
    } else if (line == "start") {
      try {
        server.start();
      } catch (const std::exception& e) {
        std::cout << "error " << e.what() << std::endl;
        continue;
      }
    } else if (line == "count") {
      std::cout << "count " << server.accepted() << " " << server.calls() << " "
                << server.try_later_answers() << std::endl;
      continue;
    } else if (line == "dump") {
      if (out.empty()) {
        std::cout << "error no --out" << std::endl;
        continue;
      }
      // One snapshot, written and closed before the answer: a reader that
      // sees "dumped N" finds all N lines.
      const auto entries = server.entries();
      {
        std::ofstream f(out, std::ios::trunc);
        for (const auto& e : entries) f << e.message << "\n";
      }
      std::cout << "dumped " << entries.size() << std::endl;
      continue;
    } else if (line == "quit") {
      break;
    } else {
      std::cout << "error unknown command" << std::endl;
      continue;
    }
    std::cout << "ok" << std::endl;
  }
  server.stop();
  return 0;
}
