// ScopedNetns: moves the calling thread into a fresh network namespace for
// its lifetime and back afterwards. Interfaces a test creates in it vanish
// with the namespace's last reference (this thread leaving it and the
// sockets opened in it closing), also when the test fails or crashes. Tests
// that need it skip when ok() is false and never touch host interfaces.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "agent/owned_fd.h"

namespace tlswall::agent::watch_test {

class ScopedNetns {
 public:
  ScopedNetns() {
    orig_ = OwnedFd(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    struct stat before {};
    if (orig_.get() < 0 || ::fstat(orig_.get(), &before) != 0) {
      error_ = std::string("cannot open /proc/thread-self/ns/net: ") + std::strerror(errno);
      return;
    }
    if (::unshare(CLONE_NEWNET) != 0) {
      error_ = std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno);
      orig_.reset();
      return;
    }
    struct stat after {};
    if (::stat("/proc/thread-self/ns/net", &after) != 0 || after.st_ino == before.st_ino) {
      error_ = "still in the original network namespace";
      return;
    }
    ok_ = true;
  }
  ~ScopedNetns() {
    if (orig_.get() >= 0 && ::setns(orig_.get(), CLONE_NEWNET) != 0) {
      ADD_FAILURE() << "cannot return to the original network namespace: " << std::strerror(errno);
    }
  }
  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }

 private:
  OwnedFd orig_;
  bool ok_ = false;
  std::string error_;
};

}  // namespace tlswall::agent::watch_test
