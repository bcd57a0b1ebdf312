/*
 * JSON bodies of execution requests (`POST /execute`, `POST /v1/execute`,
 * the sessions' bodies): the body is checked for its size and shape and
 * parsed whole, then each of its keys goes to its field's taker in the
 * dialect's table (request.c); under S4's rules, S4's schema first.
 */
#include <jansson.h>
#include <string.h>

#include "common/jsonlimit.h"
#include "server/request.h"
#include "server/request_internal.h"
#include "common/banned.h"

#define INVALID     "InvalidRequest"
#define VALIDATION  "ValidationError"
#define UNPROCESSED "UnprocessableEntity"

/*
 * The most values a valid request can hold: a dozen fields, and for each
 * input file and each name to return an object of a few fields.  Nothing a
 * valid request needs nests deeper than 4.
 */
static size_t max_values(const struct pbx_request_caps *caps)
{
    return 4096 + 8 * (caps->max_files + caps->max_return);
}
#define MAX_DEPTH 8

static json_t *load_object(const char *body, size_t len, const struct pbx_request_caps *caps,
                           const char **etype, struct pbx_error **err)
{
    struct pbx_json_shape shape;
    json_error_t jerr;
    json_t *root;

    if (len == 0) {
        *etype = INVALID;
        pbx_error_set(err, PBX_E_INVAL, "the request body is empty; send a JSON object");
        return NULL;
    }
    if (!pbx_json_within(body, len, max_values(caps), MAX_DEPTH, &shape)) {
        *etype = INVALID;
        if (shape.depth > MAX_DEPTH)
            pbx_error_set(err, PBX_E_INVAL, "the request nests deeper than %d levels", MAX_DEPTH);
        else
            pbx_error_set(err, PBX_E_INVAL, "the request holds more than %zu JSON values",
                          max_values(caps));
        return NULL;
    }
    root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (root == NULL) {
        *etype = INVALID;
        pbx_error_set(err, PBX_E_INVAL, "malformed JSON at line %d, column %d: %s", jerr.line,
                      jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        *etype = INVALID;
        pbx_error_set(err, PBX_E_INVAL, "the request body must be a JSON object");
        return NULL;
    }
    return root;
}

/*
 * The keys of `root`, each through the taker of its field in `fields`; then
 * the code, when `fields` has one.
 */
static int take_fields(const struct field *fields, json_t *root,
                       const struct pbx_request_caps *caps, struct pbx_http_request *out,
                       struct pbx_error **err)
{
    const char *key;
    json_t *v;
    int rc = 0;

    json_object_foreach(root, key, v)
    {
        const struct field *f = pbx__request_find_field(fields, key);
        const struct value value = {.json = v};

        if (f == NULL)
            rc = pbx__request_refuse_unknown(fields, key, err);
        else
            rc = f->take(out, caps, f->name, &value, err);
        if (rc < 0)
            return -1;
    }
    return pbx__request_find_field(fields, "code") != NULL ? pbx__request_finish_code(out, err) : 0;
}

/* The fields S4's schema has, in the order FastAPI's model declares them. */
static const char *const s4_fields[] = {"code", "timeout", "allow_network", "files", NULL};

/* S4's schema over a JSON body: its fields' types and ranges, and `code` (or `script`) given. */
static int s4_check_json(json_t *root, struct pbx_request_shape *shape, struct pbx_error **err)
{
    if (json_object_get(root, "code") == NULL && json_object_get(root, "script") == NULL)
        return pbx__request_s4_refuse(shape, "code", "missing", "Field required", err);
    for (size_t i = 0; s4_fields[i] != NULL; i++) {
        json_t *v = json_object_get(root, s4_fields[i]);
        const struct value value = {.json = v};

        if (v != NULL && pbx__request_s4_check(s4_fields[i], &value, shape, err) < 0)
            return -1;
    }
    return 0;
}

/*
 * A JSON body, each key through the taker of its field in `fields`.  With
 * `shape`, whose rules it follows too, and under S4's its schema first.
 */
static int parse_json(const struct field *fields, const char *body, size_t len,
                      const struct pbx_request_caps *caps, struct pbx_request_shape *shape,
                      struct pbx_http_request *out, const char **etype, struct pbx_error **err)
{
    json_t *root;
    int rc;

    memset(out, 0, sizeof(*out));
    if (shape != NULL)
        memset(shape, 0, sizeof(*shape));
    root = load_object(body, len, caps, etype, err);
    if (root == NULL)
        return -1;
    /* S4's client sends all three on every request; S1's and S2's send none of them. */
    if (shape != NULL)
        shape->s4 = json_object_get(root, "timeout") != NULL ||
                    json_object_get(root, "allow_network") != NULL ||
                    json_object_get(root, "files") != NULL;
    if (shape != NULL && shape->s4 && s4_check_json(root, shape, err) < 0) {
        *etype = UNPROCESSED;
        rc = -1;
    } else {
        *etype = VALIDATION;
        rc = take_fields(fields, root, caps, out, err);
    }
    json_decref(root);
    if (rc < 0) {
        pbx__request_release(out);
        return -1;
    }
    return 0;
}

int pbx__request_json_parse_compat(const char *body, size_t len,
                                   const struct pbx_request_caps *caps,
                                   struct pbx_http_request *out, const char **etype,
                                   struct pbx_error **err)
{
    return parse_json(pbx__request_compat_fields, body, len, caps, NULL, out, etype, err);
}

int pbx__request_json_parse_execute(const char *body, size_t len,
                                    const struct pbx_request_caps *caps,
                                    struct pbx_http_request *out, struct pbx_request_shape *shape,
                                    const char **etype, struct pbx_error **err)
{
    int rc = parse_json(pbx__request_compat_fields, body, len, caps, shape, out, etype, err);

    /* The Python Sandbox API documents a body that is no JSON object as a ValidationError. */
    if (rc < 0 && *etype != NULL && strcmp(*etype, INVALID) == 0)
        *etype = VALIDATION;
    return rc;
}

int pbx__request_json_parse_v1(const char *body, size_t len, const struct pbx_request_caps *caps,
                               struct pbx_http_request *out, const char **etype,
                               struct pbx_error **err)
{
    return parse_json(pbx__request_v1_fields, body, len, caps, NULL, out, etype, err);
}

int pbx__request_json_parse_session(const char *body, size_t len, bool patch,
                                    const struct pbx_request_caps *caps,
                                    struct pbx_http_request *out, const char **etype,
                                    struct pbx_error **err)
{
    /* Every field is optional: an empty body asks nothing. */
    if (len == 0) {
        body = "{}";
        len = 2;
    }
    return parse_json(patch ? pbx__request_session_patch_fields : pbx__request_session_fields, body,
                      len, caps, NULL, out, etype, err);
}

int pbx__request_json_parse_session_call(const char *body, size_t len,
                                         const struct pbx_request_caps *caps,
                                         struct pbx_http_request *out, const char **etype,
                                         struct pbx_error **err)
{
    return parse_json(pbx__request_session_call_fields, body, len, caps, NULL, out, etype, err);
}
