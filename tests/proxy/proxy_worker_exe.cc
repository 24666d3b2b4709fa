// The worker binary for proxy_worker_test: what `tlswalld --proxy-worker`
// does, without the rest of the daemon. `--garbage` plays a compromised
// worker that answers the daemon's hello with a malformed message.
#include <sys/socket.h>

#include <cstring>
#include <string>

#include "proxy/worker_process.h"

int main(int argc, char** argv) {
  const std::string mode = argc == 2 ? argv[1] : "";
  if (mode == "--proxy-worker") return tlswall::proxy::run_proxy_worker(3, 4);
  if (mode == "--garbage") {
    char buf[4096];
    (void)::recv(3, buf, sizeof(buf), 0);  // the hello
    const char bad[] = {6, 1, 2};          // a reply cut short
    (void)::send(3, bad, sizeof(bad), MSG_NOSIGNAL);
    (void)::recv(3, buf, sizeof(buf), 0);  // until the daemon gives up on us
    return 0;
  }
  return 2;
}
