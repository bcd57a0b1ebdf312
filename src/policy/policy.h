/*
 * Import policy: the allowlist user code may import from.  The check itself
 * runs inside the sandboxed interpreter (src/engine/bootstrap.py, given this
 * list by the zygote); this module owns the list so the check, the server's
 * /v1/info and `pybox doctor` use the same one.
 */
#ifndef PBX_POLICY_POLICY_H
#define PBX_POLICY_POLICY_H

/*
 * The default allowlist: top-level module names, NULL-terminated, static.
 * bootstrap.py allows an import when the part of its dotted name before the
 * first dot equals one of them exactly.
 */
extern const char *const pbx_policy_default_modules[];

#endif
