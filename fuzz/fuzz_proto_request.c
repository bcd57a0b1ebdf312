/*
 * Fuzz target: the request memfd's framing as a cell reads it
 * (src/engine/cell.c): u64 code length and the code, then ninput records
 * (u32 name length <= 255, name, u64 size, data), then nreturn names.  The
 * counts come from the job message, so here from the first two bytes.  A
 * request that parses is written again with the writer and must come out
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

#define MAX_RETURN 256 /* as cell.c */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The reader stays within the request: p + left is its end, always. */
static void check_reader(const struct pbx_proto_reader *r, const uint8_t *end)
{
    PBX_ASSERT(r->p <= end);
    PBX_ASSERT(r->left == (size_t)(end - r->p));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pbx_proto_writer w = {0};
    struct pbx_proto_reader rd;
    uint8_t *req;
    const uint8_t *end;
    const uint8_t *code;
    uint64_t code_len;
    uint32_t ninput;
    uint32_t nreturn;
    size_t req_len;
    uint32_t i;

    if (size < 2)
        return 0;
    /* Up to 16 input files and, past 256 sometimes, returned names. */
    ninput = data[0] & 0x0f;
    nreturn = data[1] == 0xff ? MAX_RETURN + 1 : data[1] & 0x1f;
    req_len = size - 2;
    /* An exact-size heap copy, so ASan catches a read past the end. */
    req = malloc(req_len ? req_len : 1);
    PBX_ASSERT(req != NULL);
    if (req_len > 0)
        memcpy(req, data + 2, req_len);
    end = req + req_len;
    rd.p = req;
    rd.left = req_len;

    if (!pbx__proto_get_u64(&rd, &code_len) || !pbx__proto_get_bytes(&rd, code_len, &code))
        goto out_free;
    check_reader(&rd, end);
    PBX_ASSERT(code >= req && code_len <= (uint64_t)(end - code));
    pbx__proto_put_u64(&w, code_len);
    pbx__proto_put_bytes(&w, code, code_len);
    for (i = 0; i < ninput; i++) {
        const uint8_t *name;
        const uint8_t *fdata;
        uint32_t nlen;
        uint64_t fsize;
        char cname[256];

        if (!pbx__proto_get_string(&rd, 255, &name, &nlen) || !pbx__proto_get_u64(&rd, &fsize) ||
            !pbx__proto_get_bytes(&rd, fsize, &fdata) ||
            !pbx__files_name_ok((const char *)name, nlen))
            goto out_free;
        check_reader(&rd, end);
        PBX_ASSERT(nlen <= 255);
        PBX_ASSERT(fdata >= req && fsize <= (uint64_t)(end - fdata));
        memcpy(cname, name, nlen);
        cname[nlen] = '\0';
        /* A good name survives the C string the cell makes of it. */
        PBX_ASSERT(strlen(cname) == nlen);
        PBX_ASSERT(pbx__files_name_ok(cname, strlen(cname)));
        pbx__proto_put_string(&w, cname, nlen);
        pbx__proto_put_u64(&w, fsize);
        pbx__proto_put_bytes(&w, fdata, fsize);
    }
    if (nreturn > MAX_RETURN)
        goto out_free;
    for (i = 0; i < nreturn; i++) {
        const uint8_t *name;
        uint32_t nlen;
        char cname[256];

        if (!pbx__proto_get_string(&rd, 255, &name, &nlen))
            goto out_free;
        check_reader(&rd, end);
        memcpy(cname, name, nlen);
        cname[nlen] = '\0';
        pbx__proto_put_string(&w, (const char *)name, nlen);
    }
    /* Parsed whole: writing it again gives the bytes that were read. */
    PBX_ASSERT(w.len == req_len - rd.left);
    PBX_ASSERT(w.len == 0 || memcmp(w.data, req, w.len) == 0);

out_free:
    free(w.data);
    free(req);
    return 0;
}
