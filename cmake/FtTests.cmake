# Test registration. ft_add_test(name) builds tests/name.c against the float32
# core as `name`; with F64 it also builds `name_f64` against the float64 core.
set(FT_TEST_ENV "OPENBLAS_NUM_THREADS=1;OMP_NUM_THREADS=1;FT_SOURCE_DIR=${CMAKE_SOURCE_DIR};FT_BINARY_DIR=${CMAKE_BINARY_DIR}")

function(ft_add_test name)
  cmake_parse_arguments(T "F64" "TIMEOUT" "" ${ARGN})
  set(src ${CMAKE_SOURCE_DIR}/tests/${name}.c ${CMAKE_SOURCE_DIR}/tests/ft_test.c)
  add_executable(${name} ${src})
  target_link_libraries(${name} flowtrain_core PkgConfig::CMOCKA)
  add_test(NAME ${name} COMMAND ${name})
  set(variants ${name})
  if(T_F64)
    add_executable(${name}_f64 ${src})
    target_link_libraries(${name}_f64 flowtrain_core_f64 PkgConfig::CMOCKA)
    add_test(NAME ${name}_f64 COMMAND ${name}_f64)
    list(APPEND variants ${name}_f64)
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  set_tests_properties(${variants} PROPERTIES ENVIRONMENT "${FT_TEST_ENV}" TIMEOUT ${T_TIMEOUT})
endfunction()

# ft_add_mpi_test(name NP 1 2 4): runs tests/name.c under mpiexec with each rank count.
function(ft_add_mpi_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "NP" ${ARGN})
  add_executable(${name} ${CMAKE_SOURCE_DIR}/tests/${name}.c ${CMAKE_SOURCE_DIR}/tests/ft_test.c)
  target_link_libraries(${name} flowtrain_core PkgConfig::CMOCKA)
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  foreach(np ${T_NP})
    add_test(NAME ${name}_np${np}
             COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${np} ${MPIEXEC_PREFLAGS}
                     $<TARGET_FILE:${name}> ${MPIEXEC_POSTFLAGS})
    set_tests_properties(${name}_np${np} PROPERTIES TIMEOUT ${T_TIMEOUT}
      ENVIRONMENT "${FT_TEST_ENV};OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1")
  endforeach()
endfunction()

# ft_add_mpi_script(name SCRIPT tests/x.sh [PROGRAM prog] [TIMEOUT s] [SKIP_RETURN_CODE c]):
# a shell test that runs mpiexec itself (several world sizes in sequence, kills,
# expected failures). The script gets: the program (or flowtrain), mpiexec, then
# MPIEXEC_PREFLAGS. With SKIP_RETURN_CODE, exiting with that code marks the test
# skipped (the script prints why).
function(ft_add_mpi_script name)
  cmake_parse_arguments(T "" "SCRIPT;PROGRAM;TIMEOUT;SKIP_RETURN_CODE" "" ${ARGN})
  if(T_PROGRAM)
    if(NOT TARGET ${T_PROGRAM})
      add_executable(${T_PROGRAM} ${CMAKE_SOURCE_DIR}/tests/${T_PROGRAM}.c ${CMAKE_SOURCE_DIR}/tests/ft_test.c)
      target_link_libraries(${T_PROGRAM} flowtrain_core PkgConfig::CMOCKA)
    endif()
    set(prog $<TARGET_FILE:${T_PROGRAM}>)
  else()
    set(prog $<TARGET_FILE:flowtrain>)
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 600)
  endif()
  add_test(NAME ${name}
           COMMAND bash ${CMAKE_SOURCE_DIR}/${T_SCRIPT} ${prog} ${MPIEXEC_EXECUTABLE} ${MPIEXEC_PREFLAGS})
  set_tests_properties(${name} PROPERTIES TIMEOUT ${T_TIMEOUT}
    ENVIRONMENT "${FT_TEST_ENV};FT_FLOWTRAIN=$<TARGET_FILE:flowtrain>;OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1")
  if(T_SKIP_RETURN_CODE)
    set_tests_properties(${name} PROPERTIES SKIP_RETURN_CODE ${T_SKIP_RETURN_CODE})
  endif()
endfunction()
