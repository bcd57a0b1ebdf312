/*
 * Unit tests for src/engine/proto.c: the writer and the reader of the request
 * and output memfds, the job messages and the reports.  The reader is what a
 * cell and the supervisor run over bytes they did not write, so every getter
 * must fail cleanly past the end; reports travel over real SOCK_SEQPACKET
 * socketpairs, as between the processes.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine/proto.h"
#include "common/banned.h"

static struct pbx_proto_reader reader(const void *p, size_t n)
{
    struct pbx_proto_reader r = {.p = p, .left = n};

    return r;
}

START_TEST(test_round_trip)
{
    struct pbx_proto_writer w = {0};
    struct pbx_proto_reader r;
    uint8_t big[100000];
    const uint8_t *p;
    const uint8_t *s;
    uint32_t u32;
    uint64_t u64;
    uint32_t len;

    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 7 + 3);
    pbx__proto_put_u32(&w, 0);
    pbx__proto_put_u32(&w, UINT32_MAX);
    pbx__proto_put_u64(&w, UINT64_C(0x0123456789abcdef));
    pbx__proto_put_u64(&w, UINT64_MAX);
    pbx__proto_put_string(&w, "in.txt", 6);
    pbx__proto_put_string(&w, NULL, 0);
    pbx__proto_put_bytes(&w, NULL, 0);
    pbx__proto_put_u64(&w, sizeof(big));
    /* Larger than the first allocation: the writer grows more than once. */
    pbx__proto_put_bytes(&w, big, sizeof(big));
    pbx__proto_put_string(&w, "a\0b", 3);
    pbx__proto_put_u32(&w, 42); /* unaligned: after a 3-byte string */
    pbx__proto_put_u64(&w, 43);
    ck_assert_uint_eq(w.len, 4 + 4 + 8 + 8 + (4 + 6) + 4 + 8 + sizeof(big) + (4 + 3) + 4 + 8);
    ck_assert_uint_ge(w.alloc, w.len);

    r = reader(w.data, w.len);
    ck_assert(pbx__proto_get_u32(&r, &u32));
    ck_assert_uint_eq(u32, 0);
    ck_assert(pbx__proto_get_u32(&r, &u32));
    ck_assert_uint_eq(u32, UINT32_MAX);
    ck_assert(pbx__proto_get_u64(&r, &u64));
    ck_assert_uint_eq(u64, UINT64_C(0x0123456789abcdef));
    ck_assert(pbx__proto_get_u64(&r, &u64));
    ck_assert_uint_eq(u64, UINT64_MAX);
    ck_assert(pbx__proto_get_string(&r, 255, &s, &len));
    ck_assert_uint_eq(len, 6);
    ck_assert_mem_eq(s, "in.txt", 6);
    ck_assert(pbx__proto_get_string(&r, 255, &s, &len));
    ck_assert_uint_eq(len, 0);
    ck_assert(pbx__proto_get_u64(&r, &u64));
    ck_assert_uint_eq(u64, sizeof(big));
    ck_assert(pbx__proto_get_bytes(&r, u64, &p));
    ck_assert_mem_eq(p, big, sizeof(big));
    ck_assert(pbx__proto_get_string(&r, 3, &s, &len));
    ck_assert_uint_eq(len, 3);
    ck_assert_mem_eq(s, "a\0b", 3);
    ck_assert(pbx__proto_get_u32(&r, &u32));
    ck_assert_uint_eq(u32, 42);
    ck_assert(pbx__proto_get_u64(&r, &u64));
    ck_assert_uint_eq(u64, 43);
    ck_assert_uint_eq(r.left, 0);
    ck_assert_ptr_eq(r.p, w.data + w.len);

    /* At the end, every getter fails; zero bytes can still be taken. */
    ck_assert(!pbx__proto_get_u32(&r, &u32));
    ck_assert(!pbx__proto_get_u64(&r, &u64));
    ck_assert(!pbx__proto_get_bytes(&r, 1, &p));
    ck_assert(!pbx__proto_get_string(&r, 255, &s, &len));
    ck_assert(pbx__proto_get_bytes(&r, 0, &p));
    free(w.data);
}
END_TEST

/* A failing getter leaves the reader and its output untouched. */
START_TEST(test_short_reads)
{
    static const uint8_t data[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    struct pbx_proto_reader r;
    const uint8_t *p = NULL;
    uint32_t u32 = 77;
    uint64_t u64 = 77;

    for (size_t n = 0; n < 4; n++) {
        r = reader(data, n);
        ck_assert(!pbx__proto_get_u32(&r, &u32));
        ck_assert_uint_eq(u32, 77);
        ck_assert_uint_eq(r.left, n);
        ck_assert_ptr_eq(r.p, data);
    }
    for (size_t n = 0; n < 8; n++) {
        r = reader(data, n);
        ck_assert(!pbx__proto_get_u64(&r, &u64));
        ck_assert_uint_eq(u64, 77);
        ck_assert_uint_eq(r.left, n);
        ck_assert_ptr_eq(r.p, data);
    }
    for (size_t n = 0; n < sizeof(data); n++) {
        r = reader(data, n);
        ck_assert(!pbx__proto_get_bytes(&r, n + 1, &p));
        ck_assert_ptr_null(p);
        ck_assert_uint_eq(r.left, n);
        ck_assert(pbx__proto_get_bytes(&r, n, &p));
        ck_assert_ptr_eq(p, data);
        ck_assert_uint_eq(r.left, 0);
        p = NULL;
    }
    /* Lengths that would wrap a pointer or a size. */
    r = reader(data, sizeof(data));
    ck_assert(!pbx__proto_get_bytes(&r, SIZE_MAX, &p));
    ck_assert(!pbx__proto_get_bytes(&r, SIZE_MAX - 8, &p));
    ck_assert(!pbx__proto_get_bytes(&r, (size_t)1 << 63, &p));
    ck_assert_ptr_null(p);
    ck_assert_uint_eq(r.left, sizeof(data));
    /* Exactly four and eight bytes are enough. */
    r = reader(data, 4);
    ck_assert(pbx__proto_get_u32(&r, &u32));
    ck_assert_uint_eq(r.left, 0);
    r = reader(data, 8);
    ck_assert(pbx__proto_get_u64(&r, &u64));
    ck_assert_uint_eq(r.left, 0);
}
END_TEST

/* An empty reader (a request of length 0 maps to NULL) is safe. */
START_TEST(test_empty_reader)
{
    struct pbx_proto_reader r = reader(NULL, 0);
    const uint8_t *p = NULL;
    const uint8_t *s = NULL;
    uint32_t u32;
    uint64_t u64;
    uint32_t len = 5;

    ck_assert(!pbx__proto_get_u32(&r, &u32));
    ck_assert(!pbx__proto_get_u64(&r, &u64));
    ck_assert(!pbx__proto_get_bytes(&r, 1, &p));
    ck_assert(!pbx__proto_get_string(&r, 255, &s, &len));
    ck_assert_uint_eq(len, 5);
    ck_assert_ptr_null(r.p);
    ck_assert_uint_eq(r.left, 0);
}
END_TEST

static void put_raw_string(struct pbx_proto_writer *w, uint32_t len, const char *s, size_t n)
{
    pbx__proto_put_u32(w, len);
    pbx__proto_put_bytes(w, s, n);
}

START_TEST(test_string_limits)
{
    struct pbx_proto_writer w = {0};
    struct pbx_proto_reader r;
    const uint8_t *s = NULL;
    uint32_t len = 9;
    char name[300];

    memset(name, 'n', sizeof(name));
    /* len == max is accepted, len > max refused. */
    pbx__proto_put_string(&w, name, 255);
    r = reader(w.data, w.len);
    ck_assert(pbx__proto_get_string(&r, 255, &s, &len));
    ck_assert_uint_eq(len, 255);
    r = reader(w.data, w.len);
    len = 9;
    ck_assert(!pbx__proto_get_string(&r, 254, &s, &len));
    ck_assert_uint_eq(len, 9);
    free(w.data);

    /* A length far past the data, and one that would wrap. */
    memset(&w, 0, sizeof(w));
    put_raw_string(&w, 256, name, 256);
    r = reader(w.data, w.len);
    ck_assert(!pbx__proto_get_string(&r, 255, &s, &len));
    r = reader(w.data, w.len);
    ck_assert(pbx__proto_get_string(&r, 256, &s, &len));
    ck_assert_uint_eq(len, 256);
    free(w.data);

    memset(&w, 0, sizeof(w));
    put_raw_string(&w, UINT32_MAX, name, 10);
    r = reader(w.data, w.len);
    len = 9;
    ck_assert(!pbx__proto_get_string(&r, SIZE_MAX, &s, &len));
    ck_assert_uint_eq(len, 9);
    free(w.data);

    /* The length fits the max but the bytes are not all there. */
    memset(&w, 0, sizeof(w));
    put_raw_string(&w, 10, name, 9);
    r = reader(w.data, w.len);
    ck_assert(!pbx__proto_get_string(&r, 255, &s, &len));
    ck_assert_uint_eq(len, 9);
    free(w.data);

    /* A truncated length prefix. */
    r = reader("\x01\x00", 2);
    ck_assert(!pbx__proto_get_string(&r, 255, &s, &len));

    /* max 0 allows only the empty string. */
    memset(&w, 0, sizeof(w));
    pbx__proto_put_string(&w, "", 0);
    pbx__proto_put_string(&w, "x", 1);
    r = reader(w.data, w.len);
    ck_assert(pbx__proto_get_string(&r, 0, &s, &len));
    ck_assert_uint_eq(len, 0);
    ck_assert(!pbx__proto_get_string(&r, 0, &s, &len));
    free(w.data);
}
END_TEST

START_TEST(test_file_state_text)
{
    ck_assert_ptr_null(pbx__proto_file_state_text(PBX_FILE_OK));
    ck_assert_str_eq(pbx__proto_file_state_text(PBX_FILE_NOT_FOUND), "not found");
    ck_assert_str_eq(pbx__proto_file_state_text(PBX_FILE_NOT_REGULAR), "not a regular file");
    ck_assert_str_eq(pbx__proto_file_state_text(PBX_FILE_SYMLINK), "is a symbolic link");
    ck_assert_str_eq(pbx__proto_file_state_text(PBX_FILE_TOO_LARGE), "file too large");
    ck_assert_str_eq(pbx__proto_file_state_text(PBX_FILE_UNREADABLE), "could not be read");
    ck_assert_str_eq(pbx__proto_file_state_text(PBX_FILE_BAD_NAME), "invalid file name");
    ck_assert_str_eq(pbx__proto_file_state_text(PBX_FILE_OVER_ANSWER),
                     "over what the answer may still carry (the `answer` limit)");
    /* A state the cell never sends still has a text. */
    ck_assert_str_eq(pbx__proto_file_state_text(8), "could not be read");
    ck_assert_str_eq(pbx__proto_file_state_text(UINT32_MAX), "could not be read");
}
END_TEST

/* The fixed-size messages keep their layout: both ends are the same binary, but sizes matter. */
START_TEST(test_message_layout)
{
    struct pbx_proto_done d;

    ck_assert_uint_eq(sizeof(d.msg), 512);
    ck_assert_uint_eq(PBX_PROTO_MSG_MAX, 512);
    ck_assert_uint_eq(sizeof(struct pbx_proto_done) % 8, 0);
    ck_assert_uint_eq(sizeof(struct pbx_proto_job) % 8, 0);
    ck_assert_uint_le(PBX_PROTO_MAX_FDS, 253); /* SCM_MAX_FD */
    ck_assert_uint_eq(PBX_PROTO_MAGIC, 0x70796278u);
}
END_TEST

struct inputs {
    unsigned n;       /* files seen */
    char names[4][8]; /* their names */
    uint64_t size[4]; /* and sizes */
    int fail_at;      /* return -EIO for this one (-1: never) */
};

static int on_input(void *arg, const char *name, const uint8_t *data, uint64_t size)
{
    struct inputs *in = arg;

    (void)data;
    if ((int)in->n == in->fail_at)
        return -EIO;
    snprintf(in->names[in->n], sizeof(in->names[0]), "%s", name);
    in->size[in->n++] = size;
    return 0;
}

static struct pbx_proto_request req;

START_TEST(test_request_round_trip)
{
    struct pbx_proto_writer w = {0};
    struct inputs in = {.fail_at = -1};
    const char *what = NULL;

    pbx__proto_request_code(&w, "print(1)", 8);
    pbx__proto_request_input(&w, "a.txt", "abc", 3);
    pbx__proto_request_input(&w, "b.bin", "", 0);
    pbx__proto_request_return(&w, "out.png");
    pbx__proto_request_return(&w, "*.csv");
    pbx__proto_request_modules(&w, "pandas scipy");
    ck_assert_int_eq(pbx__proto_request_read(w.data, w.len, 2, 2, on_input, &in, &req, &what), 0);
    ck_assert_uint_eq(req.code_len, 8);
    ck_assert_mem_eq(req.code, "print(1)", 8);
    ck_assert_uint_eq(in.n, 2);
    ck_assert_str_eq(in.names[0], "a.txt");
    ck_assert_uint_eq(in.size[0], 3);
    ck_assert_str_eq(in.names[1], "b.bin");
    ck_assert_uint_eq(req.nreturn, 2);
    ck_assert_str_eq(req.returns[0], "out.png");
    ck_assert_str_eq(req.returns[1], "*.csv");
    ck_assert_str_eq(req.modules, "pandas scipy");
    /* Cut anywhere, it is malformed, never read past its end. */
    for (size_t cut = 0; cut < w.len; cut++) {
        struct inputs none = {.fail_at = -1};

        what = NULL;
        ck_assert_int_eq(pbx__proto_request_read(w.data, cut, 2, 2, on_input, &none, &req, &what),
                         -EPROTO);
        ck_assert_ptr_nonnull(what);
    }
    /* The callback's error comes back as it is. */
    in = (struct inputs){.fail_at = 1};
    ck_assert_int_eq(pbx__proto_request_read(w.data, w.len, 2, 2, on_input, &in, &req, &what),
                     -EIO);
    free(w.data);
}
END_TEST

START_TEST(test_request_refuses)
{
    struct pbx_proto_writer w = {0};
    struct inputs in = {.fail_at = -1};
    const char *what = NULL;

    /* An input file named "..": never written into /work. */
    pbx__proto_request_code(&w, "x", 1);
    pbx__proto_request_input(&w, "..", "z", 1);
    pbx__proto_request_modules(&w, "");
    ck_assert_int_eq(pbx__proto_request_read(w.data, w.len, 1, 0, on_input, &in, &req, &what),
                     -EPROTO);
    ck_assert_str_eq(what, "input file");
    ck_assert_uint_eq(in.n, 0);
    free(w.data);
    /* A name to return with a NUL in it would ask for a shorter name than was sent. */
    w = (struct pbx_proto_writer){0};
    pbx__proto_request_code(&w, "x", 1);
    pbx__proto_put_string(&w, "a\0b", 3);
    pbx__proto_request_modules(&w, "");
    ck_assert_int_eq(pbx__proto_request_read(w.data, w.len, 0, 1, on_input, &in, &req, &what),
                     -EPROTO);
    ck_assert_str_eq(what, "returned file");
    free(w.data);
    /* More names than a cell keeps. */
    w = (struct pbx_proto_writer){0};
    pbx__proto_request_code(&w, "x", 1);
    ck_assert_int_eq(pbx__proto_request_read(w.data, w.len, 0, PBX_PROTO_MAX_RETURN + 1, on_input,
                                             &in, &req, &what),
                     -EPROTO);
    ck_assert_str_eq(what, "too many returned files");
    free(w.data);
}
END_TEST

/* A SOCK_SEQPACKET socketpair, as between the supervisor and a zygote or a cell. */
static void seqpacket_pair(int sv[2])
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
}

START_TEST(test_job_valid)
{
    struct pbx_proto_job job;

    pbx__proto_job_init(&job, PBX_JOB_RUN, 7);
    ck_assert_uint_eq(job.magic, PBX_PROTO_MAGIC);
    ck_assert_uint_eq(job.version, PBX_PROTO_VERSION);
    ck_assert_uint_eq(job.kind, PBX_JOB_RUN);
    ck_assert_uint_eq(job.id, 7);
    ck_assert_uint_eq(job.flags, 0);
    ck_assert(pbx__proto_job_valid(&job, sizeof(job), PBX_FD_FIXED));
    ck_assert(!pbx__proto_job_valid(&job, sizeof(job), PBX_FD_FIXED + 1));
    ck_assert(!pbx__proto_job_valid(&job, sizeof(job) - 1, PBX_FD_FIXED));
    job.ncgroup_fds = 2;
    ck_assert(pbx__proto_job_valid(&job, sizeof(job), PBX_FD_FIXED + 2));
    job.ncgroup_fds = PBX_PROTO_MAX_CGROUP_FDS + 1;
    ck_assert(!pbx__proto_job_valid(&job, sizeof(job), PBX_PROTO_MAX_FDS + 1));

    /* A spare: its status socket, its job's GO socket, the cgroup.procs fds (and a holder's). */
    pbx__proto_job_init(&job, PBX_JOB_SPARE, 8);
    job.ncgroup_fds = 3;
    ck_assert(pbx__proto_job_valid(&job, sizeof(job), 5));
    ck_assert(!pbx__proto_job_valid(&job, sizeof(job), 4));
    ck_assert(!pbx__proto_job_valid(&job, sizeof(job), PBX_FD_FIXED + 3));
    job.flags = PBX_JOB_HOLDER;
    ck_assert(pbx__proto_job_valid(&job, sizeof(job), 6));
    ck_assert(!pbx__proto_job_valid(&job, sizeof(job), 5));

    /* A spare cell's GO: the request and output memfds (the job has the rest). */
    pbx__proto_job_init(&job, PBX_JOB_GO, 9);
    ck_assert(pbx__proto_job_valid(&job, sizeof(job), 2));
    ck_assert(!pbx__proto_job_valid(&job, sizeof(job), PBX_FD_FIXED - 1));
    ck_assert(!pbx__proto_job_valid(&job, sizeof(job), 1));

    job.kind = 99; /* no such kind */
    ck_assert(!pbx__proto_job_valid(&job, sizeof(job), 2));
    pbx__proto_job_init(&job, PBX_JOB_GO, 9);
    job.magic ^= 1;
    ck_assert(!pbx__proto_job_valid(&job, sizeof(job), 2));
    pbx__proto_job_init(&job, PBX_JOB_GO, 9);
    job.version++;
    ck_assert(!pbx__proto_job_valid(&job, sizeof(job), 2));
}
END_TEST

/* A job message sent with fds arrives whole, with its fds. */
START_TEST(test_job_send)
{
    struct pbx_proto_job job;
    struct pbx_proto_job got;
    struct pbx_error *err = NULL;
    int fds[PBX_PROTO_MAX_FDS];
    int nfds;
    int sv[2];
    int fd[2];
    ssize_t n;

    seqpacket_pair(sv);
    fd[0] = sv[0];
    fd[1] = sv[0];
    pbx__proto_job_init(&job, PBX_JOB_SPARE, 42);
    ck_assert_int_eq(pbx__proto_send_job(sv[0], &job, fd, 2, &err), 0);
    ck_assert_ptr_null(err);
    n = pbx__proto_recv(sv[1], &got, sizeof(got), fds, PBX_PROTO_MAX_FDS, &nfds, 0);
    ck_assert_int_eq(n, sizeof(got));
    ck_assert_int_eq(nfds, 2);
    ck_assert(pbx__proto_job_valid(&got, (size_t)n, nfds));
    ck_assert_uint_eq(got.id, 42);
    close(fds[0]);
    close(fds[1]);
    /* The peer gone: an error, no signal. */
    close(sv[1]);
    ck_assert_int_lt(pbx__proto_send_job(sv[0], &job, fd, 1, &err), 0);
    ck_assert_ptr_nonnull(err);
    ck_assert_ptr_nonnull(strstr(err->msg, "send the job"));
    pbx_error_free(&err);
    close(sv[0]);
}
END_TEST

START_TEST(test_done_round_trip)
{
    struct pbx_proto_done d;
    struct pbx_proto_done got;
    int pass[2];
    int fds[2];
    int nfds;
    int sv[2];

    seqpacket_pair(sv);
    /* Nothing yet. */
    ck_assert_int_eq(pbx__proto_recv_done(sv[1], &got, fds, &nfds), -EAGAIN);
    /* STARTED with two fds. */
    pbx__proto_done_init(&d, PBX_PROTO_STARTED);
    pass[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pass[1] = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ck_assert_int_eq(pbx__proto_send_done(sv[0], &d, pass, 2), 0);
    close(pass[0]);
    close(pass[1]);
    ck_assert_int_eq(pbx__proto_recv_done(sv[1], &got, fds, &nfds), sizeof(got));
    ck_assert_uint_eq(got.kind, PBX_PROTO_STARTED);
    ck_assert_int_eq(nfds, 2);
    ck_assert_int_eq(fcntl(fds[0], F_GETFD), FD_CLOEXEC);
    close(fds[0]);
    close(fds[1]);
    /* DONE with its fields. */
    pbx__proto_done_init(&d, PBX_PROTO_DONE);
    d.wait_status = 9;
    d.nfiles = 2;
    d.output_len = 1234;
    ck_assert_int_eq(pbx__proto_send_done(sv[0], &d, NULL, 0), 0);
    ck_assert_int_eq(pbx__proto_recv_done(sv[1], &got, fds, &nfds), sizeof(got));
    ck_assert_int_eq(nfds, 0);
    ck_assert_mem_eq(&got, &d, sizeof(d));
    /* EOF. */
    close(sv[0]);
    ck_assert_int_eq(pbx__proto_recv_done(sv[1], &got, fds, &nfds), 0);
    close(sv[1]);
}
END_TEST

/*
 * A cell's step times give a breakdown only in order and within the
 * supervisor's own [job sent, DONE received]: an unordered, early or late
 * one, or all zero (a cell that sent none), gives none.
 */
START_TEST(test_done_times)
{
    struct pbx_proto_done d;

    pbx__proto_done_init(&d, PBX_PROTO_DONE);
    ck_assert(!pbx__proto_done_times_ok(&d, 100, 200)); /* no times: before the sending */
    d.go_ns = 110;
    d.handed_ns = 120;
    d.reaped_ns = 150;
    d.collected_ns = 160;
    ck_assert(pbx__proto_done_times_ok(&d, 100, 200));
    ck_assert(pbx__proto_done_times_ok(&d, 110, 160));  /* the bounds themselves */
    ck_assert(!pbx__proto_done_times_ok(&d, 111, 200)); /* GO before it was sent */
    ck_assert(!pbx__proto_done_times_ok(&d, 100, 159)); /* collected after DONE came */
    d.handed_ns = 151;                                  /* handed after the reaping */
    ck_assert(!pbx__proto_done_times_ok(&d, 100, 200));
    d.handed_ns = 120;
    d.go_ns = 121; /* got GO after handing the job its fds */
    ck_assert(!pbx__proto_done_times_ok(&d, 100, 200));
    d.go_ns = 110;
    d.collected_ns = 149; /* collected before the reaping */
    ck_assert(!pbx__proto_done_times_ok(&d, 100, 200));
    d.collected_ns = UINT64_MAX;
    ck_assert(!pbx__proto_done_times_ok(&d, 100, UINT64_MAX - 1));
    ck_assert(pbx__proto_done_times_ok(&d, 100, UINT64_MAX));
}
END_TEST

/*
 * A cell's counts are not trusted either: a DONE report of more returned-file
 * records than were asked is refused before anything is sized by it (the
 * supervisor once allocated d->nfiles records, up to 2^32, and aborted).
 */
START_TEST(test_done_check)
{
    struct pbx_proto_done d;
    struct pbx_error *err = NULL;

    pbx__proto_done_init(&d, PBX_PROTO_DONE);
    ck_assert_int_eq(pbx__proto_done_check(&d, 10, &err), 0);
    d.nfiles = 10;
    ck_assert_int_eq(pbx__proto_done_check(&d, 10, &err), 0);
    ck_assert_ptr_null(err);
    d.nfiles = 11;
    ck_assert_int_lt(pbx__proto_done_check(&d, 10, &err), 0);
    ck_assert_int_eq(err->code, PBX_E_ENGINE);
    ck_assert_ptr_nonnull(strstr(err->msg, "malformed"));
    pbx_error_free(&err);
    d.nfiles = UINT32_MAX;
    ck_assert_int_lt(pbx__proto_done_check(&d, 0, &err), 0);
    pbx_error_free(&err);
}
END_TEST

/* A report from a cell is not trusted: anything but one whole report is -EPROTO. */
START_TEST(test_done_malformed)
{
    struct pbx_proto_done d;
    struct pbx_proto_done got;
    char big[sizeof(d) + 1];
    int fds[2];
    int nfds;
    int sv[2];

    seqpacket_pair(sv);
    pbx__proto_done_init(&d, PBX_PROTO_DONE);
    /* Short. */
    ck_assert_int_eq(send(sv[0], &d, sizeof(d) - 1, 0), sizeof(d) - 1);
    ck_assert_int_eq(pbx__proto_recv_done(sv[1], &got, fds, &nfds), -EPROTO);
    /* Long: cut by the receiver. */
    memset(big, 0, sizeof(big));
    memcpy(big, &d, sizeof(d));
    ck_assert_int_eq(send(sv[0], big, sizeof(big), 0), sizeof(big));
    ck_assert_int_eq(pbx__proto_recv_done(sv[1], &got, fds, &nfds), -EPROTO);
    /* Another magic. */
    d.magic = 0;
    ck_assert_int_eq(pbx__proto_send_done(sv[0], &d, NULL, 0), 0);
    ck_assert_int_eq(pbx__proto_recv_done(sv[1], &got, fds, &nfds), -EPROTO);
    close(sv[0]);
    close(sv[1]);
}
END_TEST

START_TEST(test_failed_error)
{
    struct pbx_proto_done d;
    struct pbx_proto_done got;
    struct pbx_error *err = NULL;
    char longmsg[PBX_PROTO_MSG_MAX + 100];
    int fds[2];
    int nfds;
    int sv[2];

    seqpacket_pair(sv);
    pbx__proto_send_failed(sv[0], PBX_STAGE_MOUNT, EPERM, "mount /work");
    ck_assert_int_eq(pbx__proto_recv_done(sv[1], &got, fds, &nfds), sizeof(got));
    ck_assert_uint_eq(got.kind, PBX_PROTO_FAILED);
    ck_assert_int_eq(got.stage, PBX_STAGE_MOUNT);
    ck_assert_int_eq(got.err, EPERM);
    ck_assert_int_lt(pbx__proto_failed_error(&got, &err), 0);
    ck_assert_int_eq(err->code, PBX_E_SANDBOX);
    ck_assert_str_eq(err->msg, "mounts: mount /work");
    pbx_error_free(&err);
    /* The input files did not fit. */
    pbx__proto_send_failed(sv[0], PBX_STAGE_INPUT, ENOSPC, "write a.txt");
    ck_assert_int_eq(pbx__proto_recv_done(sv[1], &got, fds, &nfds), sizeof(got));
    pbx__proto_failed_error(&got, &err);
    ck_assert_int_eq(err->code, PBX_E_TOO_LARGE);
    ck_assert_str_eq(err->msg, "input files: write a.txt");
    pbx_error_free(&err);
    /* A long text is cut to fit, NUL-terminated. */
    memset(longmsg, 'x', sizeof(longmsg) - 1);
    longmsg[sizeof(longmsg) - 1] = '\0';
    pbx__proto_send_failed(sv[0], PBX_STAGE_FORK, 0, longmsg);
    ck_assert_int_eq(pbx__proto_recv_done(sv[1], &got, fds, &nfds), sizeof(got));
    ck_assert_int_eq(got.msg[PBX_PROTO_MSG_MAX - 1], '\0');
    pbx__proto_failed_error(&got, &err);
    ck_assert_uint_eq(strlen(err->msg), strlen("fork: ") + PBX_PROTO_MSG_MAX - 1);
    pbx_error_free(&err);
    close(sv[0]);
    close(sv[1]);

    /* A cell's text with no NUL, and stages nobody names: read within the report. */
    pbx__proto_done_init(&d, PBX_PROTO_FAILED);
    memset(d.msg, 'y', sizeof(d.msg));
    d.stage = -1;
    pbx__proto_failed_error(&d, &err);
    ck_assert_int_eq(err->code, PBX_E_SANDBOX);
    ck_assert_uint_eq(strlen(err->msg), strlen("setup: ") + PBX_PROTO_MSG_MAX);
    ck_assert(strncmp(err->msg, "setup: yyy", 10) == 0);
    pbx_error_free(&err);
    d.stage = PBX_STAGE_SECCOMP + 1;
    d.msg[0] = '\0';
    pbx__proto_failed_error(&d, &err);
    ck_assert_str_eq(err->msg, "setup: ");
    pbx_error_free(&err);
    d.stage = PBX_STAGE_SECCOMP;
    pbx__proto_failed_error(&d, &err);
    ck_assert_str_eq(err->msg, "seccomp: ");
    pbx_error_free(&err);
}
END_TEST

START_TEST(test_wait_ready)
{
    struct pbx_proto_done d;
    struct pbx_proto_done got;
    int fd[1];
    int sv[2];

    /* READY, after a report of another kind is refused. */
    seqpacket_pair(sv);
    pbx__proto_done_init(&d, PBX_PROTO_READY);
    fd[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ck_assert_int_eq(pbx__proto_send_done(sv[0], &d, fd, 1), 0);
    close(fd[0]);
    ck_assert_int_eq(pbx__proto_wait_ready(sv[1], 1000, &got), PBX_PROTO_READY);
    pbx__proto_done_init(&d, PBX_PROTO_DONE);
    ck_assert_int_eq(pbx__proto_send_done(sv[0], &d, NULL, 0), 0);
    ck_assert_int_eq(pbx__proto_wait_ready(sv[1], 1000, &got), 0);
    /* FAILED, with the report. */
    pbx__proto_send_failed(sv[0], PBX_STAGE_PYTHON, 0, "no numpy");
    ck_assert_int_eq(pbx__proto_wait_ready(sv[1], 1000, &got), PBX_PROTO_FAILED);
    ck_assert_str_eq(got.msg, "no numpy");
    /* Malformed. */
    ck_assert_int_eq(send(sv[0], "x", 1, 0), 1);
    ck_assert_int_eq(pbx__proto_wait_ready(sv[1], 1000, &got), 0);
    /* Nothing in time. */
    ck_assert_int_eq(pbx__proto_wait_ready(sv[1], 10, &got), -ETIMEDOUT);
    /* The peer ended. */
    close(sv[0]);
    ck_assert_int_eq(pbx__proto_wait_ready(sv[1], 1000, &got), 0);
    close(sv[1]);
}
END_TEST

static Suite *proto_suite(void)
{
    Suite *s = suite_create("proto");
    TCase *tc = tcase_create("framing");

    tcase_add_test(tc, test_round_trip);
    tcase_add_test(tc, test_short_reads);
    tcase_add_test(tc, test_empty_reader);
    tcase_add_test(tc, test_string_limits);
    tcase_add_test(tc, test_file_state_text);
    tcase_add_test(tc, test_message_layout);
    tcase_add_test(tc, test_request_round_trip);
    tcase_add_test(tc, test_request_refuses);
    suite_add_tcase(s, tc);

    tc = tcase_create("messages");
    tcase_add_test(tc, test_job_valid);
    tcase_add_test(tc, test_job_send);
    tcase_add_test(tc, test_done_round_trip);
    tcase_add_test(tc, test_done_malformed);
    tcase_add_test(tc, test_done_check);
    tcase_add_test(tc, test_done_times);
    tcase_add_test(tc, test_failed_error);
    tcase_add_test(tc, test_wait_ready);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(proto_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
