/* The result of an execution: release, names and the result object of docs/api.md. */
#include <math.h>
#include <sodium.h>
#include <string.h>

#include "common/signame.h"
#include "common/utf8.h"
#include "common/xalloc.h"
#include "engine/engine.h"
#include "common/banned.h"

const char *pbx_status_name(enum pbx_status status)
{
    switch (status) {
    case PBX_STATUS_OK:
        return "ok";
    case PBX_STATUS_ERROR:
        return "error";
    case PBX_STATUS_TIMEOUT:
        return "timeout";
    case PBX_STATUS_MEMORY_LIMIT:
        return "memory_limit";
    case PBX_STATUS_KILLED:
        return "killed";
    case PBX_STATUS_REJECTED:
        return "rejected";
    }
    return "error";
}

void pbx_exec_result_release(struct pbx_exec_result *res)
{
    free(res->stdout_data);
    free(res->stderr_data);
    json_decref(res->result);
    json_decref(res->error);
    json_decref(res->outputs);
    for (size_t i = 0; i < res->nfiles; i++) {
        free(res->files[i].name);
        free(res->files[i].data);
    }
    free(res->files);
    memset(res, 0, sizeof(*res));
}

/* Output is text for JSON: invalid UTF-8 is replaced, so the JSON stays valid. */
static json_t *text_value(const char *data, size_t len)
{
    json_t *s = json_stringn(data, len);
    size_t n;
    char *fixed;

    if (s != NULL)
        return s;
    fixed = pbx_utf8_sanitize(data, len, &n);
    s = json_stringn(fixed, n);
    free(fixed);
    return s ? s : json_string("");
}

static json_t *base64_value(const char *data, size_t len)
{
    size_t b64len = sodium_base64_encoded_len(len, sodium_base64_VARIANT_ORIGINAL);
    char *b64 = xmalloc(b64len);
    json_t *v;

    sodium_bin2base64(b64, b64len, (const unsigned char *)data, len,
                      sodium_base64_VARIANT_ORIGINAL);
    v = json_string(b64);
    free(b64);
    return v;
}

json_t *pbx_exec_result_to_json(const struct pbx_exec_result *res)
{
    json_t *o = json_object();
    json_t *files = json_object();

    json_object_set_new(o, "status", json_string(pbx_status_name(res->status)));
    json_object_set_new(o, "exit_code",
                        res->has_exit_code ? json_integer(res->exit_code) : json_null());
    json_object_set_new(o, "signal",
                        res->signal ? json_string(pbx_signal_name(res->signal)) : json_null());
    json_object_set_new(o, "stdout",
                        text_value(res->stdout_data ? res->stdout_data : "", res->stdout_len));
    json_object_set_new(o, "stderr",
                        text_value(res->stderr_data ? res->stderr_data : "", res->stderr_len));
    json_object_set_new(o, "stdout_truncated", json_boolean(res->stdout_truncated));
    json_object_set_new(o, "stderr_truncated", json_boolean(res->stderr_truncated));
    json_object_set_new(o, "result", res->result ? json_incref(res->result) : json_null());
    json_object_set_new(o, "outputs", res->outputs ? json_incref(res->outputs) : json_array());
    for (size_t i = 0; i < res->nfiles; i++) {
        const struct pbx_file_out *f = &res->files[i];

        if (!pbx_utf8_valid(f->name, strlen(f->name))) {
            /* A glob matched a name JSON cannot carry: said, under the name made valid. */
            char *shown = pbx_utf8_sanitize(f->name, strlen(f->name), NULL);

            json_object_set_new(files, shown,
                                json_pack("{s:s}", "error", "the file name is not UTF-8"));
            free(shown);
        } else if (f->error != NULL)
            json_object_set_new(files, f->name, json_pack("{s:s}", "error", f->error));
        else
            json_object_set_new(files, f->name,
                                json_pack("{s:o, s:I}", "content_base64",
                                          base64_value(f->data ? f->data : "", f->size), "size",
                                          (json_int_t)f->size));
    }
    json_object_set_new(o, "files", files);
    json_object_set_new(o, "error", res->error ? json_incref(res->error) : json_null());
    json_object_set_new(o, "duration_ms", json_real(round(res->duration_ms * 1000) / 1000));
    json_object_set_new(o, "cpu_ms", json_real(round(res->cpu_ms * 1000) / 1000));
    json_object_set_new(o, "max_rss_kb", json_integer((json_int_t)res->max_rss_kb));
    return o;
}
