/*
 * Fuzz target: the request memfd as a cell reads it, through the cell's own
 * decoder, pbx__proto_request_read() (src/engine/proto.c): the code, ninput
 * input files, nreturn names to return and the extra modules.  The counts
 * come from the job message, so here from the first two bytes.  A request
 * that parses is written again with the supervisor's writer and must come out
 * byte for byte the same.  With PYBOX_FUZZ it is a libFuzzer binary;
 * otherwise fuzz/replay.c runs it over fuzz/corpus/proto_request/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "engine/proto.h"
#include "sandbox/files.h"
#include "common/banned.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct check {
    const uint8_t *start;       /* the request's bytes */
    const uint8_t *end;         /* and their end */
    struct pbx_proto_writer *w; /* the request written again */
};

/* Each input file lies within the request, under a name the cell may create. */
static int on_input(void *arg, const char *name, const uint8_t *fdata, uint64_t fsize)
{
    struct check *c = arg;

    PBX_ASSERT(strlen(name) <= PBX_PROTO_MAX_NAME);
    PBX_ASSERT(pbx__files_name_ok(name, strlen(name)));
    PBX_ASSERT(fdata >= c->start && fsize <= (uint64_t)(c->end - fdata));
    pbx__proto_request_input(c->w, name, fdata, fsize);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct pbx_proto_request req;
    struct pbx_proto_writer w = {0};
    struct pbx_proto_writer head = {0};
    const char *what = NULL;
    struct check c;
    uint32_t ninput;
    uint32_t nreturn;
    size_t req_len;
    uint8_t *bytes;

    if (size < 2)
        return 0;
    /* Up to 16 input files and, past 256 sometimes, returned names. */
    ninput = data[0] & 0x0f;
    nreturn = data[1] == 0xff ? PBX_PROTO_MAX_RETURN + 1 : data[1] & 0x1f;
    req_len = size - 2;
    /* An exact-size heap copy, so ASan catches a read past the end. */
    bytes = malloc(req_len ? req_len : 1);
    PBX_ASSERT(bytes != NULL);
    if (req_len > 0)
        memcpy(bytes, data + 2, req_len);
    c.start = bytes;
    c.end = bytes + req_len;
    c.w = &w;
    if (pbx__proto_request_read(bytes, req_len, ninput, nreturn, on_input, &c, &req, &what) < 0) {
        PBX_ASSERT(what != NULL);
        goto out_free;
    }
    PBX_ASSERT(req.code >= bytes && req.code_len <= (uint64_t)(c.end - req.code));
    PBX_ASSERT(req.nreturn == nreturn);
    /* Parsed whole: writing it again, in order, gives the bytes that were read. */
    pbx__proto_request_code(&head, (const char *)req.code, req.code_len);
    pbx__proto_put_bytes(&head, w.data, w.len);
    for (uint32_t i = 0; i < req.nreturn; i++)
        pbx__proto_request_return(&head, req.returns[i]);
    pbx__proto_request_modules(&head, req.modules);
    PBX_ASSERT(head.len <= req_len);
    PBX_ASSERT(head.len == 0 || memcmp(head.data, bytes, head.len) == 0);

out_free:
    free(head.data);
    free(w.data);
    free(bytes);
    return 0;
}
