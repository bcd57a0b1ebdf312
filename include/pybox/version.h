/* pybox version, for compile-time and run-time checks (pybox_version() in pybox/pybox.h). */
#ifndef PYBOX_VERSION_H
#define PYBOX_VERSION_H

#define PYBOX_VERSION_MAJOR  0
#define PYBOX_VERSION_MINOR  1
#define PYBOX_VERSION_PATCH  0
#define PYBOX_VERSION_STRING "0.1.0"
/* One number that compares: 0xMMmmpp. */
#define PYBOX_VERSION_HEX \
    ((PYBOX_VERSION_MAJOR << 16) | (PYBOX_VERSION_MINOR << 8) | PYBOX_VERSION_PATCH)

/* The same, under the names pybox's own sources use. */
#define PBX_VERSION_MAJOR  PYBOX_VERSION_MAJOR
#define PBX_VERSION_MINOR  PYBOX_VERSION_MINOR
#define PBX_VERSION_PATCH  PYBOX_VERSION_PATCH
#define PBX_VERSION_STRING PYBOX_VERSION_STRING

#endif
