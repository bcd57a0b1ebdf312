/* pybox: the umbrella header of the public API. */
#ifndef PYBOX_PYBOX_H
#define PYBOX_PYBOX_H

#include "pybox/version.h"
#include "pybox/error.h"

#endif
