/* The default import allowlist (README.md, "Allowed imports"). */
#include <stddef.h>

#include "policy/policy.h"
#include "common/banned.h"

/*
 * The documented list of the "Python Sandbox API", plus sys and io so its
 * documented stdin example (`import sys; sys.stdin.read()`) runs verbatim.
 * This list is policy and an early, helpful error; the wall is the kernel
 * sandbox, so a module missing from this list is never a security hole.
 */
const char *const pbx_policy_default_modules[] = {
    "math",     "statistics",  "decimal",     "fractions", "numbers",   "random",
    "numpy",    "datetime",    "time",        "calendar",  "string",    "re",
    "textwrap", "unicodedata", "collections", "itertools", "functools", "operator",
    "bisect",   "heapq",       "array",       "json",      "ast",       "typing",
    "enum",     "dataclasses", "copy",        "pprint",    "hashlib",   "uuid",
    "secrets",  "base64",      "PIL",         "reportlab", "fpdf",      "sys",
    "io",       NULL,
};
