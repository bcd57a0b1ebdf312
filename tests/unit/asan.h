/*
 * TEST_ASAN is 1 when this test binary is built with AddressSanitizer, else 0
 * (gcc defines __SANITIZE_ADDRESS__; clang answers __has_feature).
 */
#ifndef PBX_TESTS_UNIT_ASAN_H
#define PBX_TESTS_UNIT_ASAN_H

#if defined(__SANITIZE_ADDRESS__)
#    define TEST_ASAN 1
#elif defined(__has_feature)
#    if __has_feature(address_sanitizer)
#        define TEST_ASAN 1
#    endif
#endif
#ifndef TEST_ASAN
#    define TEST_ASAN 0
#endif

#endif
