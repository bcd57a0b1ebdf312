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

/* The outputs as meta.c promises to keep them: each {type, data: {text/plain, ...}, metadata}. */
static void check_outputs(const struct pbx_meta *meta)
{
    struct pbx_outputs_max om;
    struct pbx_limits l;
    size_t i;
    json_t *o;

    if (meta->outputs == NULL) {
        PBX_ASSERT(meta->outputs_bytes == 0);
        return;
    }
    pbx_limits_default(&l);
    pbx_limits_outputs_max(&l, &om);
    PBX_ASSERT(json_is_array(meta->outputs));
    PBX_ASSERT(json_array_size(meta->outputs) <= (size_t)om.count + 1);
    PBX_ASSERT(meta->outputs_bytes <= om.total);
    json_array_foreach(meta->outputs, i, o)
    {
        const char *type = json_string_value(json_object_get(o, "type"));
        json_t *data = json_object_get(o, "data");

        PBX_ASSERT(type != NULL && (strcmp(type, "display") == 0 || strcmp(type, "result") == 0));
        PBX_ASSERT(json_is_object(data));
        PBX_ASSERT(json_is_string(json_object_get(data, "text/plain")));
        PBX_ASSERT(json_is_object(json_object_get(o, "metadata")));
        PBX_ASSERT(json_object_size(o) == 3);
    }
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
    check_outputs(&meta);
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
    PBX_ASSERT(meta.reject_error == NULL && meta.error == NULL && meta.result == NULL &&
               meta.outputs == NULL);
    return 0;
}
