/*
 * Fuzz target: pbx_limits_set() (src/policy/limits.c) on "NAME=VALUE" text
 * from the CLI, the environment and API keys.  With PYBOX_FUZZ it is a
 * libFuzzer binary; otherwise fuzz/replay.c runs it over fuzz/corpus/limits/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "policy/limits.h"
#include "common/banned.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    struct pbx_limits l;
    struct pbx_error *err = NULL;
    char *desc;
    int r;

    PBX_ASSERT(text != NULL);
    if (size > 0)
        memcpy(text, data, size);
    text[size] = '\0';
    pbx_limits_default(&l);
    r = pbx_limits_set(&l, text, &err);
    if (r == 0) {
        /* What the parser accepts is always within bounds. */
        PBX_ASSERT(err == NULL);
        PBX_ASSERT(pbx_limits_check(&l, &err) == 0);
        PBX_ASSERT(err == NULL);
    } else {
        PBX_ASSERT(r == -PBX_E_INVAL);
        PBX_ASSERT(err != NULL && err->code == PBX_E_INVAL && err->msg != NULL);
        pbx_error_free(&err);
        /* A refused assignment changes nothing. */
        PBX_ASSERT(pbx_limits_check(&l, &err) == 0);
    }
    desc = pbx_limits_describe(&l);
    PBX_ASSERT(desc != NULL && desc[0] != '\0');
    free(desc);
    free(text);
    return 0;
}
