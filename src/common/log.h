/* Diagnostics on stderr, one line each, prefixed "pybox: ". Thread-safe. */
#ifndef PBX_COMMON_LOG_H
#define PBX_COMMON_LOG_H

enum pbx_log_level {
    PBX_LOG_ERROR = 0,
    PBX_LOG_WARN = 1,
    PBX_LOG_INFO = 2,
    PBX_LOG_DEBUG = 3,
};

/* Messages above this level are dropped (default PBX_LOG_WARN; PYBOX_LOG=debug). */
void pbx_log_set_level(enum pbx_log_level level);
void pbx_log(enum pbx_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
