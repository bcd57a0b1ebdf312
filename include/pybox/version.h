/* pybox version, for compile-time and run-time checks. */
#ifndef PYBOX_VERSION_H
#define PYBOX_VERSION_H

#define PBX_VERSION_MAJOR  0
#define PBX_VERSION_MINOR  1
#define PBX_VERSION_PATCH  0
#define PBX_VERSION_STRING "0.1.0"

#endif
