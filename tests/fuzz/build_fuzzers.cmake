# cmake -DSOURCE_DIR= -DBUILD_DIR= -DCC= -DCXX= -P build_fuzzers.cmake
# Configures (once) and builds the fuzz build that tests/fuzz runs: its own
# directory, clang, TLSWALL_FUZZ=ON. Any failure fails the fuzz_build test.
if(NOT EXISTS ${BUILD_DIR}/CMakeCache.txt)
  execute_process(
    COMMAND ${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${BUILD_DIR} -DTLSWALL_FUZZ=ON
            -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=${CC}
            -DCMAKE_CXX_COMPILER=${CXX}
    RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    file(REMOVE ${BUILD_DIR}/CMakeCache.txt)
    message(FATAL_ERROR "configuring the fuzz build in ${BUILD_DIR} failed")
  endif()
endif()
include(ProcessorCount)
ProcessorCount(jobs)
if(jobs EQUAL 0)
  set(jobs 2)
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BUILD_DIR} --target tlswall_fuzzers
                        -j ${jobs}
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building the fuzz targets in ${BUILD_DIR} failed")
endif()
