/* The default import allowlist (README.md, "Allowed imports"). */
#include <stddef.h>

#include "policy/policy.h"
#include "common/banned.h"

/*
 * The documented list of the "Python Sandbox API", plus sys and io so its
 * documented stdin example (`import sys; sys.stdin.read()`) runs verbatim,
 * then what data-science code expects (the nsjail runner documents numpy and
 * pandas; the client library's README reads a CSV with csv.DictReader), then
 * what everyday scripts import.
 *
 * This list is policy and an early, helpful error; the wall is the kernel
 * sandbox (no network, seccomp, the read-only view of rootfs.c, the cell's own
 * capped tmpfs as the only writable place), so a module missing from this list
 * is never a security hole, and a module on it opens nothing the wall does not
 * already bound: any allowed module that imports os reaches os (random._os does
 * today), and tests/security/test_policy.py proves what that reaches.  Each
 * addition gives user code no capability that open() and print() do not
 * already give it, or only one over what the wall already confines:
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
 * - pathlib, glob, fnmatch: paths as objects, and listing and matching the
 *   names of directories.  Listing shows only the jail's view (no /home, /proc
 *   or host /etc); what they create, rename or delete is in the cell's own
 *   /work, /tmp and /dev/shm, every other mount being read-only.
 * - tempfile: files and directories in the cell's /tmp, through open() and
 *   mkdir.
 * - zlib, gzip, bz2, lzma, zipfile, binascii: compress, archive and encode
 *   bytes in memory or in files opened as open() opens them; a decompression
 *   bomb meets the memory cgroup and the disk limit of the tmpfs.  zipfile
 *   extracts below the directory given, in the same tmpfs.
 * - logging, traceback: format records and exceptions and write them to
 *   stderr or to files opened as open() opens them.  logging.handlers' socket,
 *   syslog and SMTP handlers fail as every socket does (seccomp); a handler's
 *   thread counts against the pids limit.
 * - difflib, shlex, html (and html.parser): pure text processing.
 * - contextlib, abc, argparse: language helpers; argparse reads sys.argv
 *   (["main.py"] in the jail) and prints help or exits as sys.exit() does.
 * - hmac: keyed hashes over hashlib, which is already here.
 * - IPython: its display module (display, HTML, SVG, Image, JSON, Markdown),
 *   which the bootstrap provides when IPython is not installed: notebook code
 *   shows rich outputs with it.
 *
 * Modules that stay out, all bounded by the wall as well, because what they
 * are for is what the jail takes away, so refusing them early explains a
 * failure a script would otherwise meet later and less clearly:
 *
 * - os, shutil, subprocess, signal, resource, pty: processes and the system.
 *   The view holds no program but Python, processes and threads share a pids
 *   limit of 10, and the rest is the host's interface, not the data's.
 * - socket, ssl, select, asyncio, http, urllib, ftplib, smtplib, requests:
 *   the network, which the jail has none of (seccomp refuses every socket).
 * - multiprocessing, threading, concurrent: parallelism, which one core and
 *   the pids limit make pointless.
 * - ctypes, cffi, mmap: memory and foreign calls, a way around the
 *   interpreter rather than a need of any script.
 * - importlib, builtins: they would reach every module around this list.
 * - tarfile: recreates an archive's links, owners and modes; zipfile serves
 *   data exchange.
 *
 * A key's policy (`pybox keys create --modules`), `pybox serve --modules` and
 * `pybox run --allow-all-imports` widen or lift the list.
 */
const char *const pbx_policy_default_modules[] = {
    "math",     "statistics",  "decimal",     "fractions",    "numbers",   "random",
    "numpy",    "datetime",    "time",        "calendar",     "string",    "re",
    "textwrap", "unicodedata", "collections", "itertools",    "functools", "operator",
    "bisect",   "heapq",       "array",       "json",         "ast",       "typing",
    "enum",     "dataclasses", "copy",        "pprint",       "hashlib",   "uuid",
    "secrets",  "base64",      "PIL",         "reportlab",    "fpdf",      "sys",
    "io",       "pandas",      "matplotlib",  "mpl_toolkits", "scipy",     "csv",
    "cmath",    "struct",      "warnings",    "zoneinfo",     "pathlib",   "glob",
    "fnmatch",  "tempfile",    "zlib",        "gzip",         "bz2",       "lzma",
    "zipfile",  "binascii",    "logging",     "traceback",    "difflib",   "shlex",
    "html",     "contextlib",  "abc",         "argparse",     "hmac",      "IPython",
    NULL,
};
