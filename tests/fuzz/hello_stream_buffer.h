// bpf/lib/hello_stream.h in user space: its byte source is one segment's
// payload in memory (the classifier reads the skb). For the hello fuzzer
// and the unit tests; include it instead of lib/hello_stream.h.
#pragma once

#include <cstdint>
#include <cstring>

extern "C" {
#include "lib/hello_stream.h"
}

namespace tlswall::hello {

struct Payload {
  const uint8_t* data;
  uint32_t len;
};

}  // namespace tlswall::hello

extern "C" {
// Like bpf_skb_load_bytes: -EFAULT when the bytes are not all there.
static __always_inline int tw_hello_load(void* src, __u32 off, void* dst, const __u32 len) {
  const auto* p = static_cast<const tlswall::hello::Payload*>(src);
  if (off > p->len || len > p->len - off) return -14;
  std::memcpy(dst, p->data + off, len);
  return 0;
}
}
