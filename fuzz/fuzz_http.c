/*
 * libFuzzer driver: raw HTTP bytes through the whole request path of pybox
 * serve.  The input is written, as a client would, to one end of a
 * socketpair whose other end is handed to libmicrohttpd with
 * MHD_add_connection() on a daemon without a listening socket: the same
 * daemon options, routing, dialect parsing, multipart callbacks,
 * authentication, admission and answers a socket reaches.  Only the engine
 * is replaced, by a stub that answers at once with a result derived from the
 * request (so every answer shape is built), and the store is a SQLite file in
 * a private directory on tmpfs.  The admin key is "fuzz-admin"; the peer,
 * 127.0.0.1, is a trusted proxy.
 *
 * The oracle, besides the sanitizers: the server never answers 5xx except
 * 503 (busy) and 505 (libmicrohttpd's own answer to an HTTP version it does
 * not speak), and every JSON answer is valid JSON.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/xalloc.h"
#include "server/server.h"
#include "store/store.h"
#include "common/banned.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Rounds without a byte either way before a connection the server keeps open is left. */
#define MAX_IDLE_ROUNDS 64
#define MAX_ANSWER      (4u << 20)

static struct pbx_server *server;
static struct pbx_store *store;
static struct pbx_server_config cfg;
static char dir[64];

static void cleanup(void)
{
    char path[128];

    pbx__server_free(server);
    pbx_store_close(store);
    snprintf(path, sizeof(path), "%s/pybox.db", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/pybox.db-wal", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/pybox.db-shm", dir);
    unlink(path);
    rmdir(dir);
}

/* A result from the request itself, so every status and answer shape is reached. */
static int stub_execute(void *arg, enum pbx_trust trust, const struct pbx_exec_request *req,
                        struct pbx_exec_result *res, struct pbx_error **err)
{
    const char *code = req->code ? req->code : "";

    (void)arg;
    (void)trust;
    if (strstr(code, "invalid") != NULL)
        return pbx_error_set(err, PBX_E_INVAL, "the stub refuses `invalid`");
    memset(res, 0, sizeof(*res));
    res->has_exit_code = true;
    res->stdout_data = xstrndup(code, req->code_len < 4096 ? req->code_len : 4096);
    res->stdout_len = strlen(res->stdout_data);
    res->stderr_data = xstrdup("");
    if (strstr(code, "raise") != NULL) {
        res->status = PBX_STATUS_ERROR;
        res->exit_code = 1;
        res->error = json_pack("{s:s, s:s, s:s}", "type", "ValueError", "message", "stub",
                               "traceback", "Traceback: main.py");
    } else if (strstr(code, "sleep") != NULL) {
        res->status = PBX_STATUS_TIMEOUT;
        res->has_exit_code = false;
        res->signal = SIGKILL;
        res->error = json_pack("{s:s, s:s}", "type", "TimeoutError", "message", "stub");
    } else if (strstr(code, "import os") != NULL) {
        res->status = PBX_STATUS_REJECTED;
        res->has_exit_code = false;
        res->error = json_pack("{s:s, s:s, s:[s]}", "type", "ForbiddenImportError", "message",
                               "stub", "disallowed", "os");
    } else if (req->main_mode) {
        res->result = json_pack("{s:i}", "x", 1);
    }
    res->files = xcalloc(req->nreturn + 1, sizeof(*res->files));
    for (size_t i = 0; i < req->nreturn; i++) {
        /* A glob (the compatible dialect's "*" for every file) matches one file. */
        res->files[i].name =
            xstrdup(strchr(req->return_files[i], '*') != NULL ? "made.txt" : req->return_files[i]);
        if (i % 2 == 0) {
            res->files[i].data = xstrdup("file");
            res->files[i].size = 4;
        } else {
            res->files[i].error = "not found";
        }
    }
    res->nfiles = req->nreturn;
    res->duration_ms = 1.5;
    return 0;
}

static void stub_pool_stats(void *arg, struct pbx_pool_stats *st)
{
    (void)arg;
    memset(st, 0, sizeof(*st));
}

static const struct pbx_server_executor stub = {
    .execute = stub_execute, .pool_stats = stub_pool_stats, .arg = NULL};

static void start(void)
{
    struct pbx_error *err = NULL;
    char *uri;

    signal(SIGPIPE, SIG_IGN);
    /* tmpfs: the store's fsyncs cost nothing there. */
    snprintf(dir, sizeof(dir), "/dev/shm/pybox-fuzz-http-XXXXXX");
    if (mkdtemp(dir) == NULL)
        abort();
    uri = xasprintf("sqlite:%s/pybox.db", dir);
    pbx_server_config_default(&cfg);
    cfg.admin_key = "fuzz-admin";
    /* The peer (127.0.0.1) is a trusted proxy: its X-Forwarded-For and X-Request-Id are read. */
    cfg.proxies[0] = "127.0.0.1/32";
    cfg.nproxies = 1;
    cfg.quiet = true;
    cfg.anon_rpm = 1000000000;
    cfg.anon_rpd = 1000000000;
    cfg.client_timeout_s = 2;
    cfg.request_deadline_s = 0;
    cfg.max_body = 1u << 20;
    cfg.limits.input_file_bytes = 64u << 10;
    cfg.limits.stdin_bytes = 64u << 10;
    if (pbx_store_open(uri, &store, &err) < 0 ||
        pbx__server_new(&cfg, store, &stub, &server, &err) < 0 ||
        pbx__server_start(server, NULL, 0, true, &err) < 0) {
        fprintf(stderr, "fuzz_http: %s\n", err->msg);
        abort();
    }
    free(uri);
    atexit(cleanup);
}

/*
 * Each answer in `buf`: a 5xx other than 503 and 505, or a JSON body that does
 * not parse, is a bug.  Answers to HEAD have no body to check (`bodies` false).
 */
static void check_answers(const char *buf, size_t len, bool bodies)
{
    const char *p = buf;
    const char *end = buf + len;

    while (p < end && end - p >= 12 && memcmp(p, "HTTP/1.", 7) == 0) {
        /* "HTTP/1.1 NNN": three digits, within what was read. */
        int status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
        const char *hdr_end = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        const char *cl;
        size_t body_len;

        if (status >= 500 && status != 503 && status != 505) {
            fprintf(stderr, "fuzz_http: the server answered %d\n", status);
            abort();
        }
        if (hdr_end == NULL)
            return;
        cl = memmem(p, (size_t)(hdr_end - p), "Content-Length: ", 16);
        if (cl == NULL)
            return;
        body_len = strtoul(cl + 16, NULL, 10);
        hdr_end += 4;
        if ((size_t)(end - hdr_end) < body_len)
            return;
        if (!bodies)
            return;
        if (body_len > 0 && memmem(p, (size_t)(hdr_end - p), "application/json", 16) != NULL) {
            json_error_t jerr;
            json_t *j = json_loadb(hdr_end, body_len, 0, &jerr);

            if (j == NULL) {
                fprintf(stderr, "fuzz_http: a JSON answer does not parse: %s\n", jerr.text);
                abort();
            }
            json_decref(j);
        }
        p = hdr_end + body_len;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool started;
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(40000)};
    static char answer[MAX_ANSWER];
    size_t got = 0;
    size_t sent = 0;
    int sv[2];

    if (!started) {
        start();
        started = true;
    }
    peer.sin_addr.s_addr = htonl(0x7f000001);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    if (pbx__server_add_connection(server, sv[1], (struct sockaddr *)&peer, sizeof(peer)) < 0) {
        close(sv[0]);
        return 0;
    }
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    if (size == 0)
        shutdown(sv[0], SHUT_WR);
    for (unsigned idle = 0; idle < MAX_IDLE_ROUNDS;) {
        bool progress = false;
        ssize_t n;

        pbx__server_step(server);
        if (sent < size) {
            n = write(sv[0], data + sent, size - sent);
            if (n > 0) {
                sent += (size_t)n;
                progress = true;
            } else if (n < 0 && errno != EAGAIN) {
                sent = size;
            }
            if (sent == size)
                shutdown(sv[0], SHUT_WR);
        }
        n = read(sv[0], answer + got, MAX_ANSWER - got);
        if (n == 0 || (n < 0 && errno != EAGAIN))
            break; /* the server closed the connection */
        if (n > 0) {
            got += (size_t)n;
            progress = true;
            if (got == MAX_ANSWER)
                break;
        }
        idle = progress ? 0 : idle + 1;
    }
    close(sv[0]);
    check_answers(answer, got, memmem(data, size, "HEAD", 4) == NULL);
    return 0;
}
