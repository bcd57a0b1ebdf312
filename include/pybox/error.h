/*
 * Compatibility only, not installed and not public: pybox's internal error
 * codes and struct pbx_error live in src/common/error.h.  This file goes once
 * its last users (src/common/buf.c, tests/unit/test_buf.c) include
 * "common/error.h" instead.
 */
#include "common/error.h"
