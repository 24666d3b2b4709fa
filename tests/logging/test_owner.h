// An event Owner with the fields the logging tests set (the rest default):
// aggregate initialisation would trip -Wmissing-field-initializers whenever
// the logging room adds an attribution field.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "logging/event.h"

namespace tlswall::logging {

inline Owner TestOwner(uint32_t pid, uint32_t uid, std::string comm, std::string exe,
                       std::string cgroup, std::string container) {
  Owner o;
  o.pid = pid;
  o.uid = uid;
  o.comm = std::move(comm);
  o.exe = std::move(exe);
  o.cgroup = std::move(cgroup);
  o.container = std::move(container);
  return o;
}

}  // namespace tlswall::logging
