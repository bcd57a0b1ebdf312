/*
 * Fuzz target: the job's JSON-lines records (src/engine/meta.c), which user
 * code can write after the check record.  With PYBOX_FUZZ it is a libFuzzer
 * binary; otherwise fuzz/replay.c runs it over fuzz/corpus/meta/.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "engine/meta.h"
#include "common/banned.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An error object as meta.c promises to keep them: an object with a string type. */
static void check_error(const json_t *e)
{
    const json_t *msg;

    if (e == NULL)
        return;
    PBX_ASSERT(json_is_object(e));
    PBX_ASSERT(json_is_string(json_object_get(e, "type")));
    msg = json_object_get(e, "message");
    PBX_ASSERT(msg == NULL || json_is_string(msg) || json_is_null(msg));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pbx_meta meta;
    const char *first_nl = memchr(data, '\n', size);
    char *text;

    pbx__meta_parse((const char *)data, size, NULL, &meta);
    PBX_ASSERT(meta.check == PBX_META_CHECK_NONE || meta.check == PBX_META_CHECK_OK ||
               meta.check == PBX_META_CHECK_REJECTED);
    /* Only a complete first line can set the check. */
    PBX_ASSERT(first_nl != NULL || meta.check == PBX_META_CHECK_NONE);
    PBX_ASSERT(meta.check == PBX_META_CHECK_REJECTED || meta.reject_error == NULL);
    check_error(meta.reject_error);
    check_error(meta.error);
    /* Nothing after a rejection counts. */
    PBX_ASSERT(meta.check != PBX_META_CHECK_REJECTED || !meta.done);
    if (!meta.done) {
        PBX_ASSERT(meta.error == NULL && meta.result == NULL && !meta.result_invalid);
        PBX_ASSERT(meta.exit_code == 0);
    }
    PBX_ASSERT(meta.exit_code >= 0 && meta.exit_code <= 255);
    PBX_ASSERT(!meta.result_invalid || meta.result == NULL);
    /* Whatever was kept can be put into a result object. */
    if (meta.result != NULL) {
        text = json_dumps(meta.result, JSON_ENCODE_ANY | JSON_COMPACT);
        PBX_ASSERT(text != NULL);
        free(text);
    }
    pbx__meta_release(&meta);
    PBX_ASSERT(meta.reject_error == NULL && meta.error == NULL && meta.result == NULL);
    return 0;
}
