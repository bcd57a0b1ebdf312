/*
 * libpybox: the result of an execution, parsed from the result object, and its accessors.
 * An output's data is kept decoded (a PNG as its bytes), so a caller never decodes base64.
 */
#include <fnmatch.h>
#include <signal.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "client/client.h"
#include "common/signame.h"
#include "engine/engine.h"
#include "common/banned.h"

/* The public statuses are the engine's, named by the engine: one list of names. */
_Static_assert(PYBOX_STATUS_OK == (int)PBX_STATUS_OK &&
                   PYBOX_STATUS_ERROR == (int)PBX_STATUS_ERROR &&
                   PYBOX_STATUS_TIMEOUT == (int)PBX_STATUS_TIMEOUT &&
                   PYBOX_STATUS_MEMORY_LIMIT == (int)PBX_STATUS_MEMORY_LIMIT &&
                   PYBOX_STATUS_KILLED == (int)PBX_STATUS_KILLED &&
                   PYBOX_STATUS_REJECTED == (int)PBX_STATUS_REJECTED,
               "enum pybox_status and enum pbx_status differ");

const char *pybox_status_name(int status)
{
    if (status < PYBOX_STATUS_OK || status > PYBOX_STATUS_REJECTED)
        return "unknown";
    return pbx_status_name((enum pbx_status)status);
}

void pybox_result_free(struct pybox_result *res)
{
    if (res == NULL)
        return;
    free(res->out);
    free(res->err);
    free(res->value);
    free(res->error_type);
    free(res->error_message);
    for (size_t i = 0; i < res->nfiles; i++) {
        free(res->files[i].name);
        free(res->files[i].data);
        free(res->files[i].error);
    }
    free(res->files);
    for (size_t i = 0; i < res->noutputs; i++) {
        struct pbx_result_output *o = &res->outputs[i];

        for (size_t j = 0; j < o->nmimes; j++) {
            free(o->mimes[j].mime);
            free(o->mimes[j].data);
        }
        free(o->mimes);
        free(o->type);
        free(o->metadata);
        free(o->json);
    }
    free(res->outputs);
    free(res->outputs_json);
    free(res->dead_reason);
    free(res->json);
    free(res);
}

/* A NUL-terminated copy of a JSON string member (NULs inside kept); NULL on OOM. */
static char *string_copy(json_t *s, size_t *len)
{
    size_t n = json_string_length(s);
    char *c = malloc(n + 1);

    if (c == NULL)
        return NULL;
    memcpy(c, json_string_value(s), n);
    c[n] = '\0';
    if (len != NULL)
        *len = n;
    return c;
}

enum parse_rc {
    PARSE_OK = 0,
    PARSE_BAD = -1,   /* not a result object */
    PARSE_NOMEM = -2, /* out of memory */
};

static enum parse_rc parse_file(const char *name, json_t *f, struct pbx_result_file *out)
{
    json_t *b64 = json_object_get(f, "content_base64");
    json_t *size = json_object_get(f, "size");
    json_t *error = json_object_get(f, "error");
    const char *text;
    size_t bin_len = 0;
    size_t max;

    memset(out, 0, sizeof(*out));
    out->name = strdup(name);
    if (out->name == NULL)
        return PARSE_NOMEM;
    if (!json_is_object(f))
        return PARSE_BAD;
    if (json_is_string(error)) {
        out->error = strdup(json_string_value(error));
        return out->error ? PARSE_OK : PARSE_NOMEM;
    }
    if (!json_is_string(b64) || !json_is_integer(size) || json_integer_value(size) < 0)
        return PARSE_BAD;
    text = json_string_value(b64);
    max = json_string_length(b64) / 4 * 3 + 3;
    out->data = malloc(max + 1);
    if (out->data == NULL)
        return PARSE_NOMEM;
    if (sodium_base642bin((unsigned char *)out->data, max, text, json_string_length(b64), NULL,
                          &bin_len, NULL, sodium_base64_VARIANT_ORIGINAL) != 0 ||
        bin_len != (size_t)json_integer_value(size))
        return PARSE_BAD;
    out->data[bin_len] = '\0';
    out->size = bin_len;
    return PARSE_OK;
}

/* A PNG's bytes from base64 in *out (NUL-terminated) and *len. */
static enum parse_rc decode_base64(json_t *b64, char **out, size_t *len)
{
    size_t max = json_string_length(b64) / 4 * 3 + 3;

    *out = malloc(max + 1);
    if (*out == NULL)
        return PARSE_NOMEM;
    if (sodium_base642bin((unsigned char *)*out, max, json_string_value(b64),
                          json_string_length(b64), NULL, len, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0)
        return PARSE_BAD;
    (*out)[*len] = '\0';
    return PARSE_OK;
}

/*
 * One output, {"type": "display"|"result", "data": {MIME: value}, "metadata": {}}:
 * strings kept as text, image/png decoded, any other value as compact JSON text.
 */
static enum parse_rc parse_output(json_t *o, struct pbx_result_output *out)
{
    json_t *type = json_object_get(o, "type");
    json_t *data = json_object_get(o, "data");
    json_t *meta = json_object_get(o, "metadata");
    const char *mime;
    json_t *v;

    if (!json_is_object(o) || !json_is_string(type) || !json_is_object(data) ||
        !(meta == NULL || json_is_object(meta)))
        return PARSE_BAD;
    if (strcmp(json_string_value(type), "display") != 0 &&
        strcmp(json_string_value(type), "result") != 0)
        return PARSE_BAD;
    out->type = strdup(json_string_value(type));
    out->json = json_dumps(o, PBX_JSON_FLAGS);
    out->metadata = meta != NULL ? json_dumps(meta, PBX_JSON_FLAGS) : strdup("{}");
    if (out->type == NULL || out->json == NULL || out->metadata == NULL)
        return PARSE_NOMEM;
    if (json_object_size(data) > 0) {
        out->mimes = calloc(json_object_size(data), sizeof(*out->mimes));
        if (out->mimes == NULL)
            return PARSE_NOMEM;
    }
    json_object_foreach(data, mime, v)
    {
        struct pbx_result_mime *m = &out->mimes[out->nmimes++];
        enum parse_rc rc = PARSE_OK;

        m->mime = strdup(mime);
        if (m->mime == NULL)
            return PARSE_NOMEM;
        if (strcmp(mime, "image/png") == 0) {
            if (!json_is_string(v))
                return PARSE_BAD;
            rc = decode_base64(v, &m->data, &m->len);
        } else if (json_is_string(v) && strcmp(mime, "application/json") != 0) {
            m->data = string_copy(v, &m->len);
            rc = m->data != NULL ? PARSE_OK : PARSE_NOMEM;
        } else {
            m->data = json_dumps(v, PBX_JSON_VALUE_FLAGS);
            m->len = m->data != NULL ? strlen(m->data) : 0;
            rc = m->data != NULL ? PARSE_OK : PARSE_NOMEM;
        }
        if (rc != PARSE_OK)
            return rc;
        if (strcmp(mime, "text/plain") == 0 && json_is_string(v))
            out->text = m->data;
    }
    /* Every output has a text/plain (the server and the engine check it). */
    return out->text != NULL ? PARSE_OK : PARSE_BAD;
}

static enum parse_rc parse_outputs(json_t *outputs, struct pybox_result *r)
{
    size_t i;
    json_t *o;

    if (outputs == NULL)
        outputs = json_array(); /* an answer of an older server: none */
    else
        json_incref(outputs);
    if (!json_is_array(outputs)) {
        json_decref(outputs);
        return PARSE_BAD;
    }
    r->outputs_json = json_dumps(outputs, PBX_JSON_FLAGS);
    if (r->outputs_json == NULL) {
        json_decref(outputs);
        return PARSE_NOMEM;
    }
    if (json_array_size(outputs) > 0) {
        r->outputs = calloc(json_array_size(outputs), sizeof(*r->outputs));
        if (r->outputs == NULL) {
            json_decref(outputs);
            return PARSE_NOMEM;
        }
    }
    json_array_foreach(outputs, i, o)
    {
        enum parse_rc rc = parse_output(o, &r->outputs[r->noutputs++]);

        if (rc != PARSE_OK) {
            json_decref(outputs);
            return rc;
        }
    }
    json_decref(outputs);
    return PARSE_OK;
}

/*
 * A session's run adds execution_count, state_preserved and session {id,
 * status, dead_reason}: read when there, each of its type.
 */
static enum parse_rc parse_session_fields(json_t *o, struct pybox_result *r)
{
    json_t *count = json_object_get(o, "execution_count");
    json_t *kept = json_object_get(o, "state_preserved");
    json_t *session = json_object_get(o, "session");
    json_t *reason = json_object_get(session, "dead_reason");

    if ((count != NULL && (!json_is_integer(count) || json_integer_value(count) < 0)) ||
        (kept != NULL && !json_is_boolean(kept)) || (session != NULL && !json_is_object(session)) ||
        (reason != NULL && !json_is_string(reason) && !json_is_null(reason)))
        return PARSE_BAD;
    r->execution_count = count != NULL ? (uint64_t)json_integer_value(count) : 0;
    r->state_preserved = json_is_true(kept);
    if (json_is_string(reason)) {
        r->dead_reason = strdup(json_string_value(reason));
        if (r->dead_reason == NULL)
            return PARSE_NOMEM;
    }
    return PARSE_OK;
}

static enum parse_rc parse_object(json_t *o, struct pybox_result *r)
{
    json_t *status = json_object_get(o, "status");
    json_t *exit_code = json_object_get(o, "exit_code");
    json_t *sig = json_object_get(o, "signal");
    json_t *out = json_object_get(o, "stdout");
    json_t *err = json_object_get(o, "stderr");
    json_t *out_trunc = json_object_get(o, "stdout_truncated");
    json_t *err_trunc = json_object_get(o, "stderr_truncated");
    json_t *value = json_object_get(o, "result");
    json_t *files = json_object_get(o, "files");
    json_t *error = json_object_get(o, "error");
    json_t *duration = json_object_get(o, "duration_ms");
    json_t *cpu = json_object_get(o, "cpu_ms");
    json_t *rss = json_object_get(o, "max_rss_kb");
    bool known = false;
    const char *key;
    json_t *v;

    if (!json_is_string(status) || !json_is_string(out) || !json_is_string(err) ||
        !json_is_boolean(out_trunc) || !json_is_boolean(err_trunc) || !json_is_object(files) ||
        !(json_is_integer(exit_code) || json_is_null(exit_code)) ||
        !(json_is_string(sig) || json_is_null(sig)) ||
        !(json_is_object(error) || json_is_null(error)) || value == NULL ||
        !json_is_number(duration) || !json_is_number(cpu) || !json_is_integer(rss))
        return PARSE_BAD;
    for (int i = PYBOX_STATUS_OK; i <= PYBOX_STATUS_REJECTED; i++) {
        if (strcmp(json_string_value(status), pybox_status_name(i)) == 0) {
            r->status = (enum pybox_status)i;
            known = true;
        }
    }
    if (!known)
        return PARSE_BAD;
    r->has_exit_code = json_is_integer(exit_code);
    r->exit_code = r->has_exit_code ? (int)json_integer_value(exit_code) : -1;
    r->signal = json_is_string(sig) ? pbx_signal_number(json_string_value(sig)) : 0;
    r->out = string_copy(out, &r->out_len);
    r->err = string_copy(err, &r->err_len);
    if (r->out == NULL || r->err == NULL)
        return PARSE_NOMEM;
    r->out_truncated = json_is_true(out_trunc);
    r->err_truncated = json_is_true(err_trunc);
    if (!json_is_null(value)) {
        r->value = json_dumps(value, PBX_JSON_VALUE_FLAGS);
        if (r->value == NULL)
            return PARSE_NOMEM;
    }
    if (json_is_object(error)) {
        json_t *type = json_object_get(error, "type");
        json_t *message = json_object_get(error, "message");

        if (json_is_string(type) && (r->error_type = strdup(json_string_value(type))) == NULL)
            return PARSE_NOMEM;
        if (json_is_string(message) &&
            (r->error_message = strdup(json_string_value(message))) == NULL)
            return PARSE_NOMEM;
    }
    if (json_object_size(files) > 0) {
        r->files = calloc(json_object_size(files), sizeof(*r->files));
        if (r->files == NULL)
            return PARSE_NOMEM;
    }
    json_object_foreach(files, key, v)
    {
        enum parse_rc rc = parse_file(key, v, &r->files[r->nfiles]);

        r->nfiles++;
        if (rc != PARSE_OK)
            return rc;
    }
    r->duration_ms = json_number_value(duration);
    r->cpu_ms = json_number_value(cpu);
    r->max_rss_kb = json_integer_value(rss) > 0 ? (uint64_t)json_integer_value(rss) : 0;
    {
        enum parse_rc rc = parse_outputs(json_object_get(o, "outputs"), r);

        if (rc != PARSE_OK)
            return rc;
    }
    return parse_session_fields(o, r);
}

/*
 * Whether `name` is one the request asked back: a name it gave, or a match of
 * one of its patterns as the engine's cell matches them (fnmatch() with
 * FNM_PERIOD, src/engine/cell.c collect_glob).  No names asked is no file
 * (POST /v1/execute without return_files, and the local engine, return
 * none).  A pattern itself is asked for too: the engine reports a pattern
 * that matched nothing, or more than it returns, under the pattern's name.
 */
static bool asked_for(const struct pybox_exec *exec, const char *name)
{
    for (size_t i = 0; i < exec->nreturn; i++) {
        const char *asked = exec->returns[i];

        if (strcmp(asked, name) == 0)
            return true;
        if (strpbrk(asked, "*?[") != NULL && fnmatch(asked, name, FNM_PERIOD) == 0)
            return true;
    }
    return false;
}

/*
 * The first returned file `r` must not have: a name that is not a flat name
 * (pbx_engine_check_name()), or one `exec` did not ask for.  A caller saves
 * returned files under their names (pybox run --out DIR), so a server that
 * answered `../x` or `/etc/x` would write outside DIR: such an answer is not
 * a pybox result, whoever sent it.  NULL when every name is fine.
 */
static const char *refused_file(const struct pybox_exec *exec, const struct pybox_result *r)
{
    for (size_t i = 0; i < r->nfiles; i++) {
        const char *name = r->files[i].name;

        if (!pbx_engine_check_name(name, NULL) || !asked_for(exec, name))
            return name;
    }
    return NULL;
}

enum pybox_code pbx__client_result_parse(const char *text, size_t len,
                                         const struct pybox_exec *exec, struct pybox_result **out,
                                         struct pybox_error **err)
{
    json_error_t jerr;
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    struct pybox_result *r;
    const char *bad;
    enum parse_rc rc;

    if (o == NULL)
        return pbx__client_fail(err, PYBOX_E_PROTOCOL, 0, 0,
                                "the result is not JSON: %s at byte %d", jerr.text, jerr.position);
    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        json_decref(o);
        return pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "out of memory");
    }
    rc = json_is_object(o) ? parse_object(o, r) : PARSE_BAD;
    if (rc == PARSE_OK && (bad = refused_file(exec, r)) != NULL) {
        enum pybox_code code =
            pbx__client_fail(err, PYBOX_E_PROTOCOL, 0, 0,
                             "the answer returns a file `%s`, which is not a flat name the "
                             "request asked back: refused, no file of it kept",
                             bad);

        json_decref(o);
        pybox_result_free(r);
        return code;
    }
    if (rc == PARSE_OK) {
        json_object_del(o, "request_id");
        r->json = json_dumps(o, PBX_JSON_FLAGS);
        if (r->json == NULL)
            rc = PARSE_NOMEM;
    }
    json_decref(o);
    if (rc != PARSE_OK) {
        pybox_result_free(r);
        return rc == PARSE_NOMEM ? pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "out of memory")
                                 : pbx__client_fail(err, PYBOX_E_PROTOCOL, 0, 0,
                                                    "the answer is not a pybox result object");
    }
    *out = r;
    return PYBOX_OK;
}

/* ---- accessors ---- */

enum pybox_status pybox_result_status(const struct pybox_result *res)
{
    return res->status;
}

bool pybox_result_has_exit_code(const struct pybox_result *res)
{
    return res->has_exit_code;
}

int pybox_result_exit_code(const struct pybox_result *res)
{
    return res->has_exit_code ? res->exit_code : -1;
}

int pybox_result_signal(const struct pybox_result *res)
{
    return res->signal;
}

const char *pybox_result_stdout(const struct pybox_result *res, size_t *len)
{
    if (len != NULL)
        *len = res->out_len;
    return res->out;
}

const char *pybox_result_stderr(const struct pybox_result *res, size_t *len)
{
    if (len != NULL)
        *len = res->err_len;
    return res->err;
}

bool pybox_result_stdout_truncated(const struct pybox_result *res)
{
    return res->out_truncated;
}

bool pybox_result_stderr_truncated(const struct pybox_result *res)
{
    return res->err_truncated;
}

const char *pybox_result_json(const struct pybox_result *res)
{
    return res->value;
}

const char *pybox_result_error_type(const struct pybox_result *res)
{
    return res->error_type;
}

const char *pybox_result_error_message(const struct pybox_result *res)
{
    return res->error_message;
}

size_t pybox_result_file_count(const struct pybox_result *res)
{
    return res->nfiles;
}

const char *pybox_result_file_name(const struct pybox_result *res, size_t i)
{
    return i < res->nfiles ? res->files[i].name : NULL;
}

const void *pybox_result_file_data(const struct pybox_result *res, size_t i, size_t *size)
{
    if (i >= res->nfiles || res->files[i].error != NULL) {
        if (size != NULL)
            *size = 0;
        return NULL;
    }
    if (size != NULL)
        *size = res->files[i].size;
    return res->files[i].data;
}

const char *pybox_result_file_error(const struct pybox_result *res, size_t i)
{
    return i < res->nfiles ? res->files[i].error : NULL;
}

long pybox_result_file_find(const struct pybox_result *res, const char *name)
{
    for (size_t i = 0; name != NULL && i < res->nfiles; i++) {
        if (strcmp(res->files[i].name, name) == 0)
            return (long)i;
    }
    return -1;
}

double pybox_result_duration_ms(const struct pybox_result *res)
{
    return res->duration_ms;
}

double pybox_result_cpu_ms(const struct pybox_result *res)
{
    return res->cpu_ms;
}

uint64_t pybox_result_max_rss_kb(const struct pybox_result *res)
{
    return res->max_rss_kb;
}

const char *pybox_result_to_json(const struct pybox_result *res)
{
    return res->json;
}

size_t pybox_result_output_count(const struct pybox_result *res)
{
    return res->noutputs;
}

const char *pybox_result_output_type(const struct pybox_result *res, size_t i)
{
    return i < res->noutputs ? res->outputs[i].type : NULL;
}

size_t pybox_result_output_mime_count(const struct pybox_result *res, size_t i)
{
    return i < res->noutputs ? res->outputs[i].nmimes : 0;
}

const char *pybox_result_output_mime(const struct pybox_result *res, size_t i, size_t j)
{
    return i < res->noutputs && j < res->outputs[i].nmimes ? res->outputs[i].mimes[j].mime : NULL;
}

const void *pybox_result_output_data(const struct pybox_result *res, size_t i, const char *mime,
                                     size_t *len)
{
    for (size_t j = 0; mime != NULL && i < res->noutputs && j < res->outputs[i].nmimes; j++) {
        const struct pbx_result_mime *m = &res->outputs[i].mimes[j];

        if (strcmp(m->mime, mime) == 0) {
            if (len != NULL)
                *len = m->len;
            return m->data;
        }
    }
    if (len != NULL)
        *len = 0;
    return NULL;
}

const char *pybox_result_output_text(const struct pybox_result *res, size_t i)
{
    return i < res->noutputs ? res->outputs[i].text : NULL;
}

const char *pybox_result_output_metadata(const struct pybox_result *res, size_t i)
{
    return i < res->noutputs ? res->outputs[i].metadata : NULL;
}

const char *pybox_result_output_json(const struct pybox_result *res, size_t i)
{
    return i < res->noutputs ? res->outputs[i].json : NULL;
}

const char *pybox_result_outputs_json(const struct pybox_result *res)
{
    return res->outputs_json;
}

uint64_t pybox_result_execution_count(const struct pybox_result *res)
{
    return res->execution_count;
}

bool pybox_result_state_preserved(const struct pybox_result *res)
{
    return res->state_preserved;
}
