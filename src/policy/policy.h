/*
 * Import policy: the allowlist user code may import from.  The check itself
 * runs inside the sandboxed interpreter (src/engine/bootstrap.py); this module
 * owns the list so the CLI, the server and the docs print the same one.
 */
#ifndef PBX_POLICY_POLICY_H
#define PBX_POLICY_POLICY_H

#include <stdbool.h>
#include <stddef.h>

/* The default allowlist: top-level module names, NULL-terminated, static. */
extern const char *const pbx_policy_default_modules[];

/* Whether `module` (a dotted name) is allowed by the default list. */
bool pbx_policy_module_allowed(const char *module);

/* The default list as one space-separated string (static storage). */
const char *pbx_policy_default_modules_text(void);

#endif
