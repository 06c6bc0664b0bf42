# ctest package_consumer: installs the build tree into a scratch prefix, then configures,
# builds and runs tests/consumer against that prefix with find_package(tillsync).
#
# Inputs (-D): SOURCE_DIR (tillsync source tree), BUILD_DIR (its configured and built
# binary tree), WORK_DIR (scratch directory, wiped first), GENERATOR (CMake generator).
# Any failing step stops the test with message(FATAL_ERROR) and the step's output.
cmake_minimum_required(VERSION 3.25)

foreach(var SOURCE_DIR BUILD_DIR WORK_DIR GENERATOR)
  if("${${var}}" STREQUAL "")
    message(FATAL_ERROR "run_consumer_test.cmake: -D${var}=... is required")
  endif()
endforeach()

set(prefix "${WORK_DIR}/prefix")
set(consumer_build "${WORK_DIR}/build")
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

# Build the consumer with the compiler and build tool the libraries were built with.
load_cache("${BUILD_DIR}" READ_WITH_PREFIX main_ CMAKE_CXX_COMPILER CMAKE_MAKE_PROGRAM)
set(toolchain_args)
if(main_CMAKE_CXX_COMPILER)
  list(APPEND toolchain_args "-DCMAKE_CXX_COMPILER=${main_CMAKE_CXX_COMPILER}")
endif()
if(main_CMAKE_MAKE_PROGRAM)
  list(APPEND toolchain_args "-DCMAKE_MAKE_PROGRAM=${main_CMAKE_MAKE_PROGRAM}")
endif()

function(run_step name)
  execute_process(COMMAND ${ARGN}
    RESULT_VARIABLE rc
    OUTPUT_VARIABLE out
    ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    string(JOIN " " command ${ARGN})
    message(FATAL_ERROR "package_consumer: ${name} failed (${rc})\n"
      "command: ${command}\n--- stdout ---\n${out}\n--- stderr ---\n${err}")
  endif()
  message(STATUS "package_consumer: ${name}: ok")
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

run_step(install "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${prefix}")

# DESIGN: public headers expose no SQLite, ZeroMQ or cereal types.
file(GLOB_RECURSE installed_headers "${prefix}/include/*")
if(NOT installed_headers)
  message(FATAL_ERROR "package_consumer: the install put no headers under ${prefix}/include")
endif()
set(leaks)
foreach(header IN LISTS installed_headers)
  file(STRINGS "${header}" hits REGEX "^[ \t]*#[ \t]*include[ \t]*[<\"](sqlite3|zmq|cereal/)")
  if(hits)
    list(APPEND leaks "${header}: ${hits}")
  endif()
endforeach()
if(leaks)
  list(JOIN leaks "\n" leaks)
  message(FATAL_ERROR "package_consumer: public headers include dependency headers:\n${leaks}")
endif()

run_step(configure "${CMAKE_COMMAND}"
  -S "${SOURCE_DIR}/tests/consumer"
  -B "${consumer_build}"
  -G "${GENERATOR}"
  ${toolchain_args}
  -DCMAKE_BUILD_TYPE=Release
  "-DCMAKE_PREFIX_PATH=${prefix}"
  "-DTILLSYNC_EXPECTED_PREFIX=${prefix}"
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)

run_step(build "${CMAKE_COMMAND}" --build "${consumer_build}")

run_step(run "${consumer_build}/tillsync_consumer")
message(STATUS "${step_output}")
