# Compiler flags of a fuzz build (TLSWALL_FUZZ=ON, tests/fuzz/README.md):
# every object is instrumented for libFuzzer (-fsanitize=fuzzer-no-link)
# and checked by ASan and UBSan (any UB report aborts, so the fuzzer sees
# it as a crash); the fuzz targets link the libFuzzer runtime. clang only;
# without its runtime (Debian: libclang-rt-14-dev) configuring fails here,
# loudly, rather than at link time.
if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang" OR NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "TLSWALL_FUZZ=ON needs clang: configure with "
          "-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ (got "
          "${CMAKE_CXX_COMPILER_ID})")
endif()

include(CheckCXXSourceCompiles)
set(CMAKE_REQUIRED_FLAGS "-fsanitize=fuzzer,address,undefined")
set(CMAKE_REQUIRED_LINK_OPTIONS "-fsanitize=fuzzer,address,undefined")
check_cxx_source_compiles([[
#include <cstddef>
#include <cstdint>
extern "C" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }
]] TLSWALL_HAVE_LIBFUZZER)
unset(CMAKE_REQUIRED_FLAGS)
unset(CMAKE_REQUIRED_LINK_OPTIONS)
if(NOT TLSWALL_HAVE_LIBFUZZER)
  message(FATAL_ERROR "clang cannot link a libFuzzer target with ASan and UBSan: "
          "install its runtime (Debian 12: apt-get install libclang-rt-14-dev)")
endif()

add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
                    -fno-omit-frame-pointer
                    -fsanitize-ignorelist=${CMAKE_CURRENT_LIST_DIR}/fuzz_ignorelist.txt)
add_link_options(-fsanitize=address,undefined)
