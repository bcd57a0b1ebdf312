/* The default import allowlist (DESIGN.md section 4.3). */
#include <string.h>

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

bool pbx_policy_module_allowed(const char *module)
{
    size_t top = strcspn(module, ".");

    for (size_t i = 0; pbx_policy_default_modules[i] != NULL; i++) {
        const char *m = pbx_policy_default_modules[i];

        if (strlen(m) == top && strncmp(m, module, top) == 0)
            return true;
    }
    return false;
}

const char *pbx_policy_default_modules_text(void)
{
    return "math statistics decimal fractions numbers random numpy datetime time calendar string "
           "re textwrap unicodedata collections itertools functools operator bisect heapq array "
           "json ast typing enum dataclasses copy pprint hashlib uuid secrets base64 PIL "
           "reportlab fpdf sys io";
}
