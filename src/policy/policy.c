/* The default import allowlist (README.md, "Allowed imports"). */
#include <stddef.h>

#include "policy/policy.h"
#include "common/banned.h"

/*
 * The documented list of the "Python Sandbox API", plus sys and io so its
 * documented stdin example (`import sys; sys.stdin.read()`) runs verbatim,
 * then what data-science code expects (the nsjail runner documents numpy and
 * pandas; the client library's README reads a CSV with csv.DictReader).
 *
 * This list is policy and an early, helpful error; the wall is the kernel
 * sandbox (no network, seccomp, the read-only view of rootfs.c), so a module
 * missing from this list is never a security hole, and a module on it opens
 * nothing the wall does not already bound: any allowed module that imports
 * os reaches os (random._os does today), and tests/security/test_policy.py
 * proves what that reaches.  Each addition gives user code no capability that
 * open() and print() do not already give it:
 *
 * - pandas, matplotlib (and mpl_toolkits, shipped with it), scipy: compute,
 *   and read and write files through open() as user code may; their readers
 *   take URLs, which fail as every socket does in the jail; matplotlib draws
 *   with Agg only (MPLBACKEND=Agg, no display) and keeps its cache in the
 *   cell's own /tmp.  At import, pandas runs `uname -p` (Debian's patch, through
 *   platform.uname()), a process the jail's pids limit already bounds and the
 *   view lacks; scipy starts no thread and no process (Debian's scipy links
 *   the reference BLAS).
 * - csv: parses and writes text on file objects the caller opened.
 * - cmath, struct: complex numbers; packing numbers into bytes.
 * - warnings: what warnings print (data-science code silences pandas' often).
 * - zoneinfo: reads the time zone database, /usr/share/zoneinfo, read-only in
 *   the view (datetime with a time zone, as pandas does already).
 */
const char *const pbx_policy_default_modules[] = {
    "math",     "statistics",  "decimal",     "fractions",    "numbers",   "random",
    "numpy",    "datetime",    "time",        "calendar",     "string",    "re",
    "textwrap", "unicodedata", "collections", "itertools",    "functools", "operator",
    "bisect",   "heapq",       "array",       "json",         "ast",       "typing",
    "enum",     "dataclasses", "copy",        "pprint",       "hashlib",   "uuid",
    "secrets",  "base64",      "PIL",         "reportlab",    "fpdf",      "sys",
    "io",       "pandas",      "matplotlib",  "mpl_toolkits", "scipy",     "csv",
    "cmath",    "struct",      "warnings",    "zoneinfo",     NULL,
};
