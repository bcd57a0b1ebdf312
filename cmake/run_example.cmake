# ctest: run one example; it must exit 0 and its stdout must match the regular expression in
# EXPECT_FILE.  Run as cmake -DEXE=... -DEXPECT_FILE=... -P run_example.cmake.
file(READ ${EXPECT_FILE} expect)
string(STRIP "${expect}" expect)
execute_process(COMMAND ${EXE} OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
message("${out}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${EXE} exited with ${rc}: ${err}")
endif()
if(NOT out MATCHES "${expect}")
  message(FATAL_ERROR "the output of ${EXE} does not match `${expect}`; stderr: ${err}")
endif()
