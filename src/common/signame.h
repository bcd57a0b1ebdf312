/* Signal names as results carry them: "SIGKILL", "SIGSEGV", ... */
#ifndef PBX_COMMON_SIGNAME_H
#define PBX_COMMON_SIGNAME_H

/* "SIG" and the abbreviation of `sig` (a static string), or "SIGUNKNOWN". Thread-safe. */
const char *pbx_signal_name(int sig);

/* The number of a signal name ("SIGKILL" -> 9), or 0 for a name this system does not know. */
int pbx_signal_number(const char *name);

#endif
