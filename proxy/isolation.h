// What lets the proxy handle network input without privileges: the worker
// process that runs the Engine (proxy/worker_process.h) drops to an
// unprivileged uid/gid with no capabilities before it starts the engine.
#pragma once

#include <sys/types.h>

namespace tlswall::proxy {

// Irreversibly drops the calling process to uid/gid: supplementary groups
// cleared, every capability dropped (effective, permitted, inheritable,
// ambient and the bounding set), PR_SET_NO_NEW_PRIVS set. Call it while the
// process is single-threaded (capability sets are per thread), i.e. before
// Engine::start(). Throws std::system_error; on a throw the caller must exit.
void drop_privileges(uid_t uid, gid_t gid);

// True if the calling thread has empty effective, permitted and inheritable
// capability sets.
bool has_no_capabilities();

}  // namespace tlswall::proxy
