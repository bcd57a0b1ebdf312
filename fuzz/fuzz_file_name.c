/*
 * Fuzz target: pbx_files_name_ok() (src/sandbox/files.c) on raw bytes,
 * checked against the rule it documents.  With PYBOX_FUZZ it is a libFuzzer
 * binary; otherwise fuzz/replay.c runs it over fuzz/corpus/file_name/.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "sandbox/files.h"
#include "common/banned.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The rule of files.h, written out independently: 1..255 bytes, no NUL, no '/', not "." or "..". */
static bool reference(const uint8_t *p, size_t n)
{
    if (n < 1 || n > 255)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\0' || p[i] == '/')
            return false;
    }
    return !(n == 1 && p[0] == '.') && !(n == 2 && p[0] == '.' && p[1] == '.');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size heap copy, so ASan catches a read past the length. */
    char *name = calloc(1, size ? size : 1);
    bool ok;

    PBX_ASSERT(name != NULL);
    if (size > 0)
        memcpy(name, data, size);
    ok = pbx_files_name_ok(name, size);
    PBX_ASSERT(ok == reference(data, size));
    if (ok) {
        /* A good name never leaves the directory when opened relative to it. */
        PBX_ASSERT(memchr(name, '/', size) == NULL);
        PBX_ASSERT(memchr(name, '\0', size) == NULL);
    }
    /* Every prefix is judged by the same rule. */
    for (size_t n = 0; n < size && n < 300; n++)
        PBX_ASSERT(pbx_files_name_ok(name, n) == reference(data, n));
    free(name);
    return 0;
}
