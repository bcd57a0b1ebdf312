/*
 * The wire format between supervisor, zygote and cells: the job messages,
 * the reports, the request memfd and the returned-file records (proto.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/xalloc.h"
#include "engine/proto.h"
#include "common/banned.h"

void pbx__proto_job_init(struct pbx_proto_job *job, enum pbx_job_kind kind, uint64_t id)
{
    memset(job, 0, sizeof(*job));
    job->magic = PBX_PROTO_MAGIC;
    job->version = PBX_PROTO_VERSION;
    job->kind = kind;
    job->id = id;
}

bool pbx__proto_job_valid(const struct pbx_proto_job *job, size_t len, int nfds)
{
    if (len != sizeof(*job) || job->magic != PBX_PROTO_MAGIC || job->version != PBX_PROTO_VERSION ||
        job->ncgroup_fds > PBX_PROTO_MAX_CGROUP_FDS)
        return false;
    switch (job->kind) {
    case PBX_JOB_RUN:
        return nfds == PBX_FD_FIXED + (int)job->ncgroup_fds;
    case PBX_JOB_SPARE:
        return nfds == 2 + (int)job->ncgroup_fds + ((job->flags & PBX_JOB_HOLDER) != 0);
    case PBX_JOB_GO:
        return nfds == 2;
    case PBX_JOB_CALL:
        return nfds == PBX_FD_FIXED - 1;
    case PBX_JOB_SESSION:
        return nfds == 2 + (int)job->ncgroup_fds;
    case PBX_JOB_INTERRUPT:
    case PBX_JOB_RESTART:
        return nfds == 0;
    case PBX_JOB_FILE:
        return nfds == 2;
    default:
        return false;
    }
}

int pbx__proto_send_job(int sock, const struct pbx_proto_job *job, const int *fds, int nfds,
                        struct pbx_error **err)
{
    int r = pbx__proto_send(sock, job, sizeof(*job), fds, nfds);

    return r < 0 ? pbx_error_set(err, -r, "send the job to the zygote") : 0;
}

void pbx__proto_done_init(struct pbx_proto_done *d, enum pbx_proto_kind kind)
{
    memset(d, 0, sizeof(*d));
    d->magic = PBX_PROTO_MAGIC;
    d->kind = kind;
}

int pbx__proto_send_done(int sock, const struct pbx_proto_done *d, const int *fds, int nfds)
{
    return pbx__proto_send(sock, d, sizeof(*d), fds, nfds);
}

void pbx__proto_send_failed(int sock, int stage, int errnum, const char *msg)
{
    struct pbx_proto_done d;

    pbx__proto_done_init(&d, PBX_PROTO_FAILED);
    d.stage = stage;
    d.err = errnum;
    memcpy(d.msg, msg, strnlen(msg, sizeof(d.msg) - 1));
    (void)pbx__proto_send_done(sock, &d, NULL, 0);
}

ssize_t pbx__proto_recv_done(int sock, struct pbx_proto_done *d, int *fds, int *nfds)
{
    ssize_t n = pbx__proto_recv(sock, d, sizeof(*d), fds, 2, nfds, MSG_DONTWAIT);

    if (n > 0 && ((size_t)n != sizeof(*d) || d->magic != PBX_PROTO_MAGIC))
        return -EPROTO;
    return n;
}

static const char *stage_text(int stage)
{
    static const char *const names[] = {
        [PBX_STAGE_NONE] = "setup",
        [PBX_STAGE_CGROUP] = "cgroup",
        [PBX_STAGE_NAMESPACE] = "namespaces",
        [PBX_STAGE_MOUNT] = "mounts",
        [PBX_STAGE_INPUT] = "input files",
        [PBX_STAGE_FORK] = "fork",
        [PBX_STAGE_WAIT] = "wait",
        [PBX_STAGE_ROOTFS] = "root filesystem",
        [PBX_STAGE_PYTHON] = "Python",
        [PBX_STAGE_SECCOMP] = "seccomp",
    };

    if (stage < 0 || (size_t)stage >= sizeof(names) / sizeof(names[0]) || names[stage] == NULL)
        return "setup";
    return names[stage];
}

int pbx__proto_failed_error(const struct pbx_proto_done *d, struct pbx_error **err)
{
    char msg[sizeof(d->msg) + 1];

    memcpy(msg, d->msg, sizeof(d->msg));
    msg[sizeof(d->msg)] = '\0';
    return pbx_error_set(err, d->stage == PBX_STAGE_INPUT ? PBX_E_TOO_LARGE : PBX_E_SANDBOX,
                         "%s: %s", stage_text(d->stage), msg);
}

int pbx__proto_done_check(const struct pbx_proto_done *d, uint32_t max_files,
                          struct pbx_error **err)
{
    if (d->nfiles > max_files)
        return pbx_error_set(err, PBX_E_ENGINE,
                             "the cell's report is malformed: %" PRIu32
                             " returned-file records, at most %" PRIu32 " asked",
                             d->nfiles, max_files);
    return 0;
}

bool pbx__proto_done_times_ok(const struct pbx_proto_done *d, uint64_t sent_ns, uint64_t done_ns)
{
    return sent_ns <= d->go_ns && d->go_ns <= d->handed_ns && d->handed_ns <= d->reaped_ns &&
           d->reaped_ns <= d->collected_ns && d->collected_ns <= done_ns;
}

int pbx__proto_wait_ready(int sock, int timeout_ms, struct pbx_proto_done *d)
{
    int fds[2];
    int nfds;
    ssize_t n;

    for (;;) {
        struct pollfd p = {.fd = sock, .events = POLLIN};
        int r = poll(&p, 1, timeout_ms);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -ETIMEDOUT;
        n = pbx__proto_recv_done(sock, d, fds, &nfds);
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        if (n == -EAGAIN)
            continue;
        break;
    }
    if (n > 0 && (d->kind == PBX_PROTO_READY || d->kind == PBX_PROTO_FAILED))
        return (int)d->kind;
    return 0;
}

const char *pbx__proto_file_state_text(uint32_t state)
{
    switch (state) {
    case PBX_FILE_OK:
        return NULL;
    case PBX_FILE_NOT_FOUND:
        return "not found";
    case PBX_FILE_NOT_REGULAR:
        return "not a regular file";
    case PBX_FILE_SYMLINK:
        return "is a symbolic link";
    case PBX_FILE_TOO_LARGE:
        return "file too large";
    case PBX_FILE_BAD_NAME:
        return "invalid file name";
    case PBX_FILE_OVER_ANSWER:
        return "over what the answer may still carry (the `answer` limit)";
    case PBX_PROTO_FILE_MORE:
        return "more files matched than are returned (the `output_files` limit): the first "
               "ones in name order came back";
    case PBX_FILE_UNREADABLE:
    default:
        return "could not be read";
    }
}

bool pbx__proto_get_bytes(struct pbx_proto_reader *r, size_t n, const uint8_t **data)
{
    if (n > r->left)
        return false;
    *data = r->p;
    r->p += n;
    r->left -= n;
    return true;
}

bool pbx__proto_get_u32(struct pbx_proto_reader *r, uint32_t *v)
{
    const uint8_t *p;

    if (!pbx__proto_get_bytes(r, sizeof(*v), &p))
        return false;
    memcpy(v, p, sizeof(*v));
    return true;
}

bool pbx__proto_get_u64(struct pbx_proto_reader *r, uint64_t *v)
{
    const uint8_t *p;

    if (!pbx__proto_get_bytes(r, sizeof(*v), &p))
        return false;
    memcpy(v, p, sizeof(*v));
    return true;
}

bool pbx__proto_get_string(struct pbx_proto_reader *r, size_t max, const uint8_t **s, uint32_t *len)
{
    uint32_t n;

    if (!pbx__proto_get_u32(r, &n) || n > max)
        return false;
    if (!pbx__proto_get_bytes(r, n, s))
        return false;
    *len = n;
    return true;
}

void pbx__proto_put_bytes(struct pbx_proto_writer *w, const void *p, size_t n)
{
    if (w->len + n > w->alloc) {
        size_t alloc = w->alloc ? w->alloc : 4096;

        while (alloc < w->len + n)
            alloc *= 2;
        w->data = xrealloc(w->data, alloc);
        w->alloc = alloc;
    }
    if (n)
        memcpy(w->data + w->len, p, n);
    w->len += n;
}

void pbx__proto_put_u32(struct pbx_proto_writer *w, uint32_t v)
{
    pbx__proto_put_bytes(w, &v, sizeof(v));
}

void pbx__proto_put_u64(struct pbx_proto_writer *w, uint64_t v)
{
    pbx__proto_put_bytes(w, &v, sizeof(v));
}

void pbx__proto_put_string(struct pbx_proto_writer *w, const char *s, size_t n)
{
    pbx__proto_put_u32(w, (uint32_t)n);
    pbx__proto_put_bytes(w, s, n);
}

uint64_t pbx__proto_request_code(struct pbx_proto_writer *w, const char *code, size_t len)
{
    uint64_t at;

    pbx__proto_put_u64(w, len);
    at = w->len;
    pbx__proto_put_bytes(w, code, len);
    return at;
}

void pbx__proto_request_input(struct pbx_proto_writer *w, const char *name, const void *data,
                              size_t size)
{
    pbx__proto_put_string(w, name, strlen(name));
    pbx__proto_put_u64(w, size);
    pbx__proto_put_bytes(w, data, size);
}

void pbx__proto_request_return(struct pbx_proto_writer *w, const char *name)
{
    pbx__proto_put_string(w, name, strlen(name));
}

void pbx__proto_request_modules(struct pbx_proto_writer *w, const char *modules)
{
    pbx__proto_put_string(w, modules ? modules : "", modules ? strlen(modules) : 0);
}

int pbx__proto_request_read(const uint8_t *p, size_t len, uint32_t ninput, uint32_t nreturn,
                            int (*on_input)(void *arg, const char *name, const uint8_t *data,
                                            uint64_t size),
                            void *arg, struct pbx_proto_request *req, const char **what)
{
    struct pbx_proto_reader rd = {.p = p, .left = len};
    const uint8_t *mods;
    uint32_t mlen;

    if (!pbx__proto_get_u64(&rd, &req->code_len) ||
        !pbx__proto_get_bytes(&rd, req->code_len, &req->code)) {
        *what = "code";
        return -EPROTO;
    }
    for (uint32_t i = 0; i < ninput; i++) {
        char cname[PBX_PROTO_MAX_NAME + 1];
        const uint8_t *name;
        const uint8_t *data;
        uint32_t nlen;
        uint64_t size;
        int r;

        if (!pbx__proto_get_string(&rd, PBX_PROTO_MAX_NAME, &name, &nlen) ||
            !pbx__proto_get_u64(&rd, &size) || !pbx__proto_get_bytes(&rd, size, &data) ||
            !pbx_files_name_ok((const char *)name, nlen)) {
            *what = "input file";
            return -EPROTO;
        }
        memcpy(cname, name, nlen);
        cname[nlen] = '\0';
        r = on_input(arg, cname, data, size);
        if (r < 0)
            return r;
    }
    if (nreturn > PBX_PROTO_MAX_RETURN) {
        *what = "too many returned files";
        return -EPROTO;
    }
    for (uint32_t i = 0; i < nreturn; i++) {
        const uint8_t *name;
        uint32_t nlen;

        /* A NUL would cut the name short of what was asked: refused, as in input names. */
        if (!pbx__proto_get_string(&rd, PBX_PROTO_MAX_NAME, &name, &nlen) ||
            memchr(name, '\0', nlen) != NULL) {
            *what = "returned file";
            return -EPROTO;
        }
        memcpy(req->returns[i], name, nlen);
        req->returns[i][nlen] = '\0';
    }
    req->nreturn = nreturn;
    if (!pbx__proto_get_string(&rd, PBX_PROTO_MAX_MODULES, &mods, &mlen) ||
        memchr(mods, '\0', mlen) != NULL) {
        *what = "modules";
        return -EPROTO;
    }
    memcpy(req->modules, mods, mlen);
    req->modules[mlen] = '\0';
    return 0;
}

bool pbx__proto_file_next(struct pbx_proto_reader *r, uint32_t *state, const uint8_t **name,
                          uint32_t *name_len, uint64_t *size, const uint8_t **data)
{
    return pbx__proto_get_u32(r, state) &&
           pbx__proto_get_string(r, PBX_PROTO_MAX_NAME, name, name_len) &&
           pbx__proto_get_u64(r, size) && pbx__proto_get_bytes(r, *size, data);
}

int pbx__proto_send(int sock, const void *msg, size_t len, const int *fds, int nfds)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * PBX_PROTO_MAX_FDS)];
        struct cmsghdr align;
    } u;
    struct iovec iov = {.iov_base = (void *)msg, .iov_len = len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    ssize_t n;

    if (nfds < 0 || nfds > PBX_PROTO_MAX_FDS)
        return -EINVAL;
    if (nfds > 0) {
        struct cmsghdr *c;

        memset(&u, 0, sizeof(u));
        mh.msg_control = u.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    do {
        n = sendmsg(sock, &mh, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    return (size_t)n == len ? 0 : -EPROTO;
}

ssize_t pbx__proto_recv(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds, int flags)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * PBX_PROTO_MAX_FDS)];
        struct cmsghdr align;
    } u;
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    struct msghdr mh = {
        .msg_iov = &iov,
        .msg_iovlen = 1,
        .msg_control = u.buf,
        .msg_controllen = sizeof(u.buf),
    };
    ssize_t n;

    *nfds = 0;
    do {
        n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | flags);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
            int fd;

            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (*nfds < maxfds)
                fds[(*nfds)++] = fd;
            else
                close(fd);
        }
    }
    if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        for (int i = 0; i < *nfds; i++)
            close(fds[i]);
        *nfds = 0;
        return -EPROTO;
    }
    return n;
}

void pbx__proto_file_op_write(struct pbx_proto_writer *w, const char *path, const void *data,
                              size_t len)
{
    pbx__proto_put_string(w, path, strlen(path));
    pbx__proto_put_u64(w, len);
    pbx__proto_put_bytes(w, data, len);
}

bool pbx__proto_file_op_read(const uint8_t *p, size_t len, char path[PBX_PROTO_MAX_PATH + 1],
                             const uint8_t **data, uint64_t *data_len)
{
    struct pbx_proto_reader r = {.p = p, .left = len};
    const uint8_t *s;
    uint32_t n;

    if (!pbx__proto_get_string(&r, PBX_PROTO_MAX_PATH, &s, &n) || memchr(s, 0, n) != NULL ||
        !pbx__proto_get_u64(&r, data_len) || *data_len > r.left ||
        !pbx__proto_get_bytes(&r, (size_t)*data_len, data))
        return false;
    memcpy(path, s, n);
    path[n] = '\0';
    return true;
}

bool pbx__proto_list_next(struct pbx_proto_reader *r, const uint8_t **path, uint32_t *path_len,
                          uint64_t *size, uint64_t *mtime_ms)
{
    return pbx__proto_get_string(r, PBX_PROTO_MAX_PATH, path, path_len) &&
           pbx__proto_get_u64(r, size) && pbx__proto_get_u64(r, mtime_ms);
}
