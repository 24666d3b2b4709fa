# tlswall_bpf_skeleton(NAME <name> SOURCE <file.bpf.c>)
#
# Compiles a BPF object with clang (-g -O2 -Wall -Werror, CO-RE against a
# vmlinux.h generated from the build machine's kernel BTF) and generates
# <name>.skel.h with bpftool. clang writes a depfile, so editing any header
# the program includes (bpf/abi/*.h, bpf/lib/*.h) rebuilds object and
# skeleton. Generated files live only in the build tree.
# Defines target tlswall_bpf_<name> (INTERFACE, include dir of the skeleton).

find_program(BPF_CLANG NAMES clang-14 clang REQUIRED)
find_program(BPFTOOL NAMES bpftool PATHS /usr/sbin /usr/local/sbin REQUIRED)
find_program(BPF_LLVM_STRIP NAMES llvm-strip-14 llvm-strip REQUIRED)

set(TLSWALL_BTF_SOURCE "/sys/kernel/btf/vmlinux" CACHE FILEPATH
    "Kernel BTF that vmlinux.h is generated from")
set(TLSWALL_BPF_GEN_DIR ${CMAKE_BINARY_DIR}/bpf-gen)
file(MAKE_DIRECTORY ${TLSWALL_BPF_GEN_DIR})

if(NOT EXISTS ${TLSWALL_BTF_SOURCE})
  message(FATAL_ERROR "kernel BTF not found at ${TLSWALL_BTF_SOURCE}: "
          "tlswall generates vmlinux.h from it (set TLSWALL_BTF_SOURCE)")
endif()

add_custom_command(
  OUTPUT ${TLSWALL_BPF_GEN_DIR}/vmlinux.h
  COMMAND ${BPFTOOL} btf dump file ${TLSWALL_BTF_SOURCE} format c
          > ${TLSWALL_BPF_GEN_DIR}/vmlinux.h.tmp
  COMMAND ${CMAKE_COMMAND} -E rename ${TLSWALL_BPF_GEN_DIR}/vmlinux.h.tmp
          ${TLSWALL_BPF_GEN_DIR}/vmlinux.h
  COMMENT "Generating vmlinux.h from ${TLSWALL_BTF_SOURCE}"
  VERBATIM)
add_custom_target(tlswall_vmlinux_h DEPENDS ${TLSWALL_BPF_GEN_DIR}/vmlinux.h)

if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  set(TLSWALL_BPF_ARCH x86)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "aarch64|arm64")
  set(TLSWALL_BPF_ARCH arm64)
else()
  set(TLSWALL_BPF_ARCH ${CMAKE_SYSTEM_PROCESSOR})
endif()

function(tlswall_bpf_skeleton)
  # VARIANT: a second build of the same program with DEFINES (e.g. the
  # upgrade test's next table schema); its skeleton has the same name in its
  # own directory, and the target is tlswall_bpf_<name>_<variant>.
  cmake_parse_arguments(ARG "" "NAME;SOURCE;VARIANT" "DEFINES" ${ARGN})
  get_filename_component(src ${ARG_SOURCE} ABSOLUTE)
  set(gen ${TLSWALL_BPF_GEN_DIR})
  set(target tlswall_bpf_${ARG_NAME})
  if(ARG_VARIANT)
    set(gen ${CMAKE_BINARY_DIR}/bpf-gen-${ARG_VARIANT})
    set(target tlswall_bpf_${ARG_NAME}_${ARG_VARIANT})
    file(MAKE_DIRECTORY ${gen})
  endif()
  set(defs)
  foreach(d ${ARG_DEFINES})
    list(APPEND defs -D${d})
  endforeach()
  set(obj ${gen}/${ARG_NAME}.bpf.o)
  set(skel ${gen}/${ARG_NAME}.skel.h)
  set(dep ${gen}/${ARG_NAME}.bpf.d)
  add_custom_command(
    OUTPUT ${obj}
    COMMAND ${BPF_CLANG} -g -O2 -Wall -Werror -target bpf
            -D__TARGET_ARCH_${TLSWALL_BPF_ARCH} ${defs}
            -I${TLSWALL_BPF_GEN_DIR} -I${CMAKE_SOURCE_DIR}/bpf
            -MD -MF ${dep} -MT ${obj}
            -c ${src} -o ${obj}.tmp
    COMMAND ${BPF_LLVM_STRIP} -g ${obj}.tmp -o ${obj}
    DEPENDS ${src}
    DEPFILE ${dep}
    COMMENT "BPF ${ARG_NAME}: ${ARG_SOURCE}"
    VERBATIM)
  add_custom_command(
    OUTPUT ${skel}
    COMMAND ${BPFTOOL} gen skeleton ${obj} name ${ARG_NAME} > ${skel}.tmp
    COMMAND ${CMAKE_COMMAND} -E rename ${skel}.tmp ${skel}
    DEPENDS ${obj}
    COMMENT "BPF skeleton ${ARG_NAME}.skel.h"
    VERBATIM)
  add_custom_target(${target}_gen DEPENDS ${skel})
  # vmlinux.h comes from another directory's rule: order by target; once it
  # exists the depfile tracks it like any other header.
  add_dependencies(${target}_gen tlswall_vmlinux_h)
  add_library(${target} INTERFACE)
  add_dependencies(${target} ${target}_gen)
  target_include_directories(${target} INTERFACE ${gen} ${CMAKE_SOURCE_DIR}/bpf)
  target_compile_definitions(${target} INTERFACE ${ARG_DEFINES})
  target_link_libraries(${target} INTERFACE PkgConfig::LIBBPF)
endfunction()
