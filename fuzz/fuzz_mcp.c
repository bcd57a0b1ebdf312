/*
 * Fuzz target: one MCP message's bytes through pbx_mcp_accept() (src/mcp/),
 * the entry point `pybox mcp` gives every line of stdin, with a stub backend
 * whose results are fixed; an accepted tools/call is run too.  Every answer
 * must be one JSON object.  With PYBOX_FUZZ it is a libFuzzer binary;
 * otherwise fuzz/replay.c runs it over fuzz/corpus/mcp/.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/error.h"
#include "common/xalloc.h"
#include "mcp/mcp.h"
#include "common/banned.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void describe(void *arg, struct pbx_mcp_limits *l)
{
    l->timeout_s = 10;
    l->sessions = true;
    snprintf(l->modules, sizeof(l->modules), "math");
}

static int run(void *arg, void *ctx, const struct pbx_mcp_run *r, char **result,
               struct pbx_error **err)
{
    (void)ctx;
    if (r->code_len % 3 == 1)
        return pbx_error_set(err, PBX_E_NOTFOUND, "no session");
    *result = xstrdup("{\"status\":\"ok\",\"exit_code\":0,\"stdout\":\"2\\n\",\"stderr\":\"\","
                      "\"outputs\":[{\"type\":\"display\",\"data\":{\"image/png\":\"iVBORw0KGgo=\"}"
                      ",\"metadata\":{}}],\"files\":{\"a.txt\":{\"content_base64\":\"aGk=\","
                      "\"size\":2},\"b\":{\"error\":\"not found\"}}}");
    return 0;
}

static int create(void *arg, void *ctx, unsigned ttl, const struct pbx_mcp_file *f, size_t n,
                  char **info, struct pbx_error **err)
{
    (void)ctx;
    *info = xstrdup("{\"session_id\":\"ses_1\",\"expires_at\":null,\"limits\":{}}");
    return 0;
}

static int closes(void *arg, void *ctx, const char *id, struct pbx_error **err)
{
    (void)ctx;
    return 0;
}

static int write_files(void *arg, void *ctx, const char *id, const struct pbx_mcp_file *f, size_t n,
                       struct pbx_error **err)
{
    (void)ctx;
    return 0;
}

static int read_file(void *arg, void *ctx, const char *id, const char *path, void **data,
                     size_t *size, struct pbx_error **err)
{
    (void)ctx;
    *data = xstrdup("\x89PNG");
    *size = 4;
    return 0;
}

static int list(void *arg, void *ctx, const char *id, char **json, struct pbx_error **err)
{
    (void)ctx;
    *json = xstrdup("[]");
    return 0;
}

static const struct pbx_mcp_backend backend = {
    .describe = describe,
    .run = run,
    .session_create = create,
    .session_close = closes,
    .files_write = write_files,
    .file_read = read_file,
    .files_list = list,
};

static void check(char *reply)
{
    json_error_t e;
    json_t *j;

    if (reply == NULL)
        return;
    j = json_loads(reply, 0, &e);
    PBX_ASSERT(json_is_object(j));
    PBX_ASSERT(json_object_get(j, "result") != NULL || json_object_get(j, "error") != NULL);
    json_decref(j);
    free(reply);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct pbx_mcp *m;
    /* An exact-size heap copy, so ASan catches a read past the length. */
    char *copy = xmalloc(size ? size : 1);
    struct pbx_mcp_call *call;
    char *reply = NULL;

    if (m == NULL)
        m = pbx_mcp_new(&backend, &(struct pbx_mcp_options){.store_max = 4096});
    memcpy(copy, data, size);
    call = pbx_mcp_accept(m, copy, size, &reply);
    if (call != NULL) {
        PBX_ASSERT(reply == NULL);
        reply = pbx_mcp_call_run(m, call, NULL, NULL);
    }
    check(reply);
    free(copy);
    return 0;
}
