// CRC-32C (Castagnoli), the checksum of the disk buffer's segment records.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tlswall::logging {

// crc32c(data) continuing from `crc` (0 to start). crc32c("123456789") is
// 0xe3069283.
uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);

}  // namespace tlswall::logging
