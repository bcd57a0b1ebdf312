/*
 * Fuzz target: the bytes a cell hands the supervisor or reads from it,
 * through the decoders of src/engine/proto.c that the processes run.
 *
 * The request memfd as a cell reads it, through the cell's own decoder,
 * pbx__proto_request_read(): the code, ninput input files, nreturn names to
 * return and the extra modules.  The counts come from the job message, so
 * here from the first two bytes.  A request that parses is written again
 * with the supervisor's writer and must come out byte for byte the same.
 *
 * The same bytes, whole, as the output memfd's returned-file records
 * (pbx__proto_file_next()), and as a cell's report on a real SOCK_SEQPACKET
 * socketpair, read as the supervisor reads a zygote's or a spare's READY
 * (pbx__proto_wait_ready(), then pbx__proto_failed_error() for FAILED); and
 * laid over a report with the right magic, so the corpus reaches the fields
 * (the step times of a DONE report too, through pbx__proto_done_times_ok()).
 * And as a session's file listing (pbx__proto_list_next(), with the path
 * rule pbx_files_path_ok()) and a file operation's request
 * (pbx__proto_file_op_read()).
 *
 * With PYBOX_FUZZ it is a libFuzzer binary; otherwise fuzz/replay.c runs it
 * over fuzz/corpus/proto_request/.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

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
    PBX_ASSERT(pbx_files_name_ok(name, strlen(name)));
    PBX_ASSERT(fdata >= c->start && fsize <= (uint64_t)(c->end - fdata));
    pbx__proto_request_input(c->w, name, fdata, fsize);
    return 0;
}

/* Every record lies within the bytes, under a name no longer than a cell may send. */
static void check_files(const uint8_t *bytes, size_t len)
{
    struct pbx_proto_reader rd = {.p = bytes, .left = len};
    const uint8_t *name;
    const uint8_t *fdata;
    uint32_t state;
    uint32_t nlen;
    uint64_t fsize;

    while (pbx__proto_file_next(&rd, &state, &name, &nlen, &fsize, &fdata)) {
        PBX_ASSERT(nlen <= PBX_PROTO_MAX_NAME);
        PBX_ASSERT(name >= bytes && nlen <= (size_t)(bytes + len - name));
        PBX_ASSERT(fdata >= name + nlen && fsize <= (uint64_t)(bytes + len - fdata));
        (void)pbx__proto_file_state_text(state);
    }
}

/*
 * The bytes as a session cell's file listing, read as pbx_session_file_list()
 * reads it: each record within the bytes, each path one a put could make.
 */
static void check_list(const uint8_t *bytes, size_t len)
{
    struct pbx_proto_reader rd = {.p = bytes, .left = len};
    const uint8_t *path;
    uint32_t plen;
    uint64_t fsize;
    uint64_t mtime;

    while (pbx__proto_list_next(&rd, &path, &plen, &fsize, &mtime)) {
        PBX_ASSERT(plen <= PBX_PROTO_MAX_PATH);
        PBX_ASSERT(path >= bytes && plen <= (size_t)(bytes + len - path));
        if (pbx_files_path_ok((const char *)path, plen))
            PBX_ASSERT(plen <= PBX_FILES_PATH_MAX && memchr(path, 0, plen) == NULL &&
                       path[0] != '/' && path[plen - 1] != '/');
    }
}

/* The bytes as a file operation's request, as a session's cell reads it. */
static void check_file_op(const uint8_t *bytes, size_t len)
{
    static char path[PBX_PROTO_MAX_PATH + 1];
    const uint8_t *fdata;
    uint64_t flen;

    if (!pbx__proto_file_op_read(bytes, len, path, &fdata, &flen))
        return;
    PBX_ASSERT(strlen(path) <= PBX_PROTO_MAX_PATH);
    PBX_ASSERT(fdata >= bytes && flen <= (uint64_t)(bytes + len - fdata));
    (void)pbx_files_path_ok(path, strlen(path));
}

/* Send `len` bytes as one message and read it as a report the supervisor waits for. */
static void check_report(const void *msg, size_t len)
{
    static int sv[2] = {-1, -1};
    struct pbx_proto_done d;
    struct pbx_error *err = NULL;
    int fds[2];
    int nfds;
    int r;

    if (sv[0] < 0)
        PBX_ASSERT(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
    /* What one message can carry; a longer one fails to send and is never read. */
    if (len > 65536 || send(sv[0], msg, len, MSG_DONTWAIT) != (ssize_t)len)
        return;
    r = pbx__proto_wait_ready(sv[1], 0, &d);
    PBX_ASSERT(r == PBX_PROTO_READY || r == PBX_PROTO_FAILED || r == 0);
    if (r == PBX_PROTO_READY || r == PBX_PROTO_FAILED)
        PBX_ASSERT(len == sizeof(d) && d.magic == PBX_PROTO_MAGIC);
    if (r == PBX_PROTO_FAILED) {
        PBX_ASSERT(pbx__proto_failed_error(&d, &err) < 0);
        PBX_ASSERT(err->code == PBX_E_SANDBOX || err->code == PBX_E_TOO_LARGE);
        PBX_ASSERT(strlen(err->msg) <= sizeof("root filesystem: ") + sizeof(d.msg));
        pbx_error_free(&err);
    }
    /* One message, read whole: nothing is left. */
    PBX_ASSERT(pbx__proto_recv_done(sv[1], &d, fds, &nfds) == -EAGAIN && nfds == 0);
}

/*
 * A DONE report's step times, checked as the supervisor checks them: within
 * the bounds the times themselves give, and within bounds around a time of
 * theirs; a report that passes has each step after the one before.
 */
static void check_times(const struct pbx_proto_done *d)
{
    const uint64_t bounds[][2] = {
        {0, UINT64_MAX},
        {d->go_ns, d->collected_ns},
        {d->go_ns / 2, d->collected_ns + (UINT64_MAX - d->collected_ns) / 2},
        {d->handed_ns, d->reaped_ns},
    };

    for (size_t i = 0; i < sizeof(bounds) / sizeof(bounds[0]); i++) {
        if (!pbx__proto_done_times_ok(d, bounds[i][0], bounds[i][1]))
            continue;
        PBX_ASSERT(bounds[i][0] <= d->go_ns && d->go_ns <= d->handed_ns);
        PBX_ASSERT(d->handed_ns <= d->reaped_ns && d->reaped_ns <= d->collected_ns);
        PBX_ASSERT(d->collected_ns <= bounds[i][1]);
    }
}

/* The bytes as a report's, its magic right; as they are, then as a FAILED one. */
static void check_report_fields(const uint8_t *data, size_t size)
{
    struct pbx_proto_done d;

    memset(&d, 0, sizeof(d));
    memcpy(&d, data, size < sizeof(d) ? size : sizeof(d));
    d.magic = PBX_PROTO_MAGIC;
    check_report(&d, sizeof(d));
    check_times(&d);
    d.kind = PBX_PROTO_FAILED;
    check_report(&d, sizeof(d));
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

    check_files(data, size);
    check_list(data, size);
    check_file_op(data, size);
    check_report(data, size);
    check_report_fields(data, size);
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
