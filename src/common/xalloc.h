/*
 * Allocation that cannot fail: the engine and the server abort on OOM (sandbox
 * memory is bounded by cgroups, not by malloc).  Never used by the client
 * library, which returns PBX_E_NOMEM instead.
 */
#ifndef PBX_COMMON_XALLOC_H
#define PBX_COMMON_XALLOC_H

#include <stdarg.h>
#include <stddef.h>

void *xmalloc(size_t size);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *ptr, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
void *xmemdup(const void *p, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *xvasprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

#endif
