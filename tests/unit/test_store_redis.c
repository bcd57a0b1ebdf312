/*
 * Unit tests for the Redis store (src/store/store_redis*.c) against a real redis-server, which
 * the test starts on a free loopback port (and a few tests start their own,
 * to kill and restart it): the cases every backend shares (store_cases.h),
 * then Redis's own: URIs, authentication and databases, a server that dies
 * (calls fail within their timeout, and succeed again once it is back), a
 * server that never answers, values of the wrong type or shape under
 * pybox's keys (errors, never crashes), and the token never in Redis.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <regex.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "common/xalloc.h"
#include "store/store.h"
#include "common/banned.h"

/* The shared server, started by the fixture for the whole run. */
static int shared_port;
static pid_t shared_pid;

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A loopback port nothing listens on right now. */
static int free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int port;

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

/* A command on a fresh connection to the server at `port`; NULL when it does not answer. */
static redisReply *raw(int port, const char *fmt, ...)
{
    struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    redisReply *reply = NULL;
    va_list ap;

    if (c == NULL)
        return NULL;
    if (c->err == 0) {
        redisSetTimeout(c, tv);
        va_start(ap, fmt);
        reply = redisvCommand(c, fmt, ap);
        va_end(ap);
    }
    redisFree(c);
    return reply;
}

/* A command that must succeed (not an error reply). */
static void raw_ok(int port, const char *fmt, ...)
{
    struct timeval tv = {.tv_sec = 1, .tv_usec = 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    redisReply *reply;
    va_list ap;

    ck_assert_ptr_nonnull(c);
    ck_assert_msg(c->err == 0, "connect: %s", c->errstr);
    va_start(ap, fmt);
    reply = redisvCommand(c, fmt, ap);
    va_end(ap);
    ck_assert_ptr_nonnull(reply);
    ck_assert_msg(reply->type != REDIS_REPLY_ERROR, "%s: %s", fmt, reply->str);
    freeReplyObject(reply);
    redisFree(c);
}

static bool pings(int port)
{
    redisReply *reply = raw(port, "PING");
    bool ok = reply != NULL && reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "PONG") == 0;

    if (reply != NULL)
        freeReplyObject(reply);
    return ok;
}

/*
 * The pid of the redis-server answering on `port` (INFO's process_id), 0
 * when none answers: so that a server another program started on the port
 * in the meantime is not taken for ours.
 */
static long serving_pid(int port, const char *password)
{
    struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    redisReply *reply = NULL;
    long pid = 0;

    if (c == NULL)
        return 0;
    if (c->err == 0) {
        redisSetTimeout(c, tv);
        if (password != NULL) {
            reply = redisCommand(c, "AUTH %s", password);
            if (reply != NULL)
                freeReplyObject(reply);
        }
        reply = redisCommand(c, "INFO server");
    }
    if (reply != NULL && reply->type == REDIS_REPLY_STRING) {
        const char *p = strstr(reply->str, "process_id:");

        if (p != NULL)
            pid = strtol(p + strlen("process_id:"), NULL, 10);
    }
    if (reply != NULL)
        freeReplyObject(reply);
    redisFree(c);
    return pid;
}

/*
 * Start redis-server on `port` (no persistence, loopback only) and wait,
 * up to 10 s, until it answers (INFO, as its own pid): its pid, or -1 when it exited first
 * (the port was taken in the meantime).
 */
static pid_t start_redis_on(int port, const char *password)
{
    char port_s[16];
    pid_t pid;
    double deadline = now_s() + 10;

    snprintf(port_s, sizeof(port_s), "%d", port);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);

        dup2(devnull, STDOUT_FILENO);
        dup2(devnull, STDERR_FILENO);
        if (password != NULL)
            execlp("redis-server", "redis-server", "--port", port_s, "--save", "", "--appendonly",
                   "no", "--bind", "127.0.0.1", "--dir", "/tmp", "--requirepass", password,
                   (char *)NULL);
        else
            execlp("redis-server", "redis-server", "--port", port_s, "--save", "", "--appendonly",
                   "no", "--bind", "127.0.0.1", "--dir", "/tmp", (char *)NULL);
        _exit(127);
    }
    while (now_s() < deadline) {
        int status;

        if (waitpid(pid, &status, WNOHANG) == pid)
            return -1;
        if (serving_pid(port, password) == (long)pid)
            return pid;
        usleep(10000); /* the poll's interval, under a deadline */
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    ck_abort_msg("redis-server on port %d did not answer within 10 s", port);
    return -1;
}

/* Start a redis-server on a free port, trying a few ports; *port gets it. */
static pid_t start_redis(int *port, const char *password)
{
    for (int attempt = 0; attempt < 5; attempt++) {
        pid_t pid;

        *port = free_port();
        pid = start_redis_on(*port, password);
        if (pid > 0)
            return pid;
    }
    ck_abort_msg("redis-server would not start (is it installed? scripts/install-deps --test)");
    return -1;
}

static void stop_redis(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static void server_setup(void)
{
    shared_pid = start_redis(&shared_port, NULL);
}

static void server_teardown(void)
{
    stop_redis(shared_pid);
}

#include "store_cases.h"

/* The shared server emptied, and a store on it; `name` is the test's, for symmetry with SQLite. */
static struct pbx_store *new_store(const char *name, char **uri_out)
{
    char *uri = xasprintf("redis://127.0.0.1:%d/0", shared_port);
    struct pbx_store *store;

    (void)name;
    raw_ok(shared_port, "FLUSHALL");
    store = open_ok(uri);
    if (uri_out != NULL)
        *uri_out = uri;
    else
        free(uri);
    return store;
}

START_TEST(test_redis_uris)
{
    static const char *const bad[] = {
        "redis://",
        "redis://:6379",
        "redis://127.0.0.1:0",
        "redis://127.0.0.1:65536",
        "redis://127.0.0.1:x",
        "redis://127.0.0.1:6379/x",
        "redis://127.0.0.1:6379/0/1",
        "redis://127.0.0.1?timeout_ms=0",
        "redis://127.0.0.1?timeout_ms=600000",
        "redis://127.0.0.1?timeout_ms",
        "redis://127.0.0.1?pool=0",
        "redis://127.0.0.1?bogus=1",
        "redis://nocolon@127.0.0.1",
        "redis://:%zz@127.0.0.1",
        "redis://:a%00b@127.0.0.1",
        "redis://[::1",
        "redis://host name",
        "redis://h;rm",
    };
    struct pbx_store *store = (struct pbx_store *)1;
    struct pbx_error *err = NULL;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(pbx_store_open(bad[i], &store, &err) == -PBX_E_INVAL, "%s: %s", bad[i],
                      err ? err->msg : "opened");
        ck_assert_ptr_null(store);
        ck_assert_msg(strstr(err->msg, "redis://") != NULL, "%s", err->msg);
        pbx_error_free(&err);
    }
    /* What messages show of a URI: never its user and password. */
    {
        static const char *const cases[][2] = {
            {"redis://u:p%2Fw@h:1/2?timeout_ms=5", "redis://h:1/2?timeout_ms=5"},
            {"redis://:p/w?x@y@h", "redis://h"},
            {"redis://h:1/2", "redis://h:1/2"},
            {"rediss://u:p@h", "rediss://h"},
            {"sqlite:/a@b/c.db", "sqlite:/a@b/c.db"},
        };

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            char *shown = pbx_store_uri_redact(cases[i][0]);

            ck_assert_str_eq(shown, cases[i][1]);
            free(shown);
        }
        ck_assert_ptr_null(pbx_store_uri_redact(NULL));
    }
    /* A password in a refused URI is not repeated. */
    ck_assert_int_eq(pbx_store_open("redis://u:sekrit@127.0.0.1:1?pool=0", &store, &err),
                     -PBX_E_INVAL);
    ck_assert_msg(strstr(err->msg, "sekrit") == NULL, "%s", err->msg);
    pbx_error_free(&err);
}
END_TEST

/*
 * An unreachable server: the store opens (a node starts while Redis is
 * down), each call fails within the timeout with a clear error naming the
 * URI but not its password, and once a redis-server starts on that port
 * calls succeed.
 */
START_TEST(test_redis_unreachable)
{
    int port = free_port();
    char *uri = xasprintf("redis://127.0.0.1:%d", port);
    char *secret = xasprintf("redis://pybox:sekrit@127.0.0.1:%d", port);
    struct pbx_store *store = open_ok(uri);
    struct pbx_store *existing = NULL;
    struct pbx_key_info *keys = NULL;
    struct pbx_key_info info;
    struct pbx_error *err = NULL;
    char *token = NULL;
    size_t n = 0;
    double deadline;
    double t0 = now_s();
    int r;

    ck_assert_int_eq(pbx_store_ping(store, &err), -ECONNREFUSED);
    ck_assert_double_lt(now_s() - t0, 1.0);
    ck_assert_msg(strstr(err->msg, uri) != NULL, "%s", err->msg);
    ck_assert_msg(strstr(err->msg, "refused") != NULL, "%s", err->msg);
    pbx_error_free(&err);
    /* open_existing() alike, as `pybox keys` uses it: its first call fails, the password unshown.
     */
    ck_assert_int_eq(pbx_store_open_existing(secret, &existing, &err), 0);
    ck_assert_ptr_nonnull(existing);
    t0 = now_s();
    ck_assert_int_eq(pbx_store_key_list(existing, &keys, &n, &err), -ECONNREFUSED);
    ck_assert_double_lt(now_s() - t0, 1.0);
    ck_assert_msg(strstr(err->msg, uri) != NULL, "%s", err->msg);
    ck_assert_msg(strstr(err->msg, "sekrit") == NULL, "%s", err->msg);
    ck_assert_msg(strchr(err->msg, '\n') == NULL, "%s", err->msg);
    pbx_error_free(&err);
    pbx_store_close(existing);
    /* Each call fails within the timeout, most at once in the backoff. */
    for (int i = 0; i < 10; i++) {
        t0 = now_s();
        ck_assert_int_lt(pbx_store_key_lookup(
                             store, "pbx_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &info, &err),
                         0);
        ck_assert_double_lt(now_s() - t0, 1.0);
        ck_assert_msg(strstr(err->msg, uri) != NULL, "%s", err->msg);
        pbx_error_free(&err);
    }

    /* A redis-server on that port: the same store serves, within the backoff's 2 s. */
    {
        pid_t pid = start_redis_on(port, NULL);

        ck_assert_int_gt(pid, 0);
        deadline = now_s() + 5;
        do {
            r = pbx_store_key_create(store, "late", NULL, &token, &err);
            pbx_error_free(&err);
            if (r < 0)
                usleep(20000); /* the poll's interval, under a deadline */
        } while (r < 0 && now_s() < deadline);
        ck_assert_int_eq(r, 0);
        ck_assert_int_eq(pbx_store_key_lookup(store, token, &info, &err), 1);
        ck_assert_str_eq(info.name, "late");
        pbx_key_info_release(&info);
        ck_assert_int_eq(pbx_store_ping(store, &err), 0);
        ck_assert_ptr_null(err);
        /* The store was opened to create: its first call wrote the layout's version. */
        {
            redisReply *reply = raw(port, "GET pbx:{keys}:schema");

            ck_assert_ptr_nonnull(reply);
            ck_assert_int_eq(reply->type, REDIS_REPLY_STRING);
            ck_assert_str_eq(reply->str, "1");
            freeReplyObject(reply);
        }
        pbx_store_close(store);
        stop_redis(pid);
    }
    free(token);
    free(secret);
    free(uri);
}
END_TEST

/* A server that accepts connections and never answers: calls end at the timeout. */
START_TEST(test_redis_silent_server)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct pbx_store *store = NULL;
    struct pbx_error *err = NULL;
    char *uri;
    double t0;
    double took;

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(fd, 16), 0); /* the kernel completes connections; none is served */
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    uri = xasprintf("redis://127.0.0.1:%d?timeout_ms=150", ntohs(sa.sin_port));
    store = open_ok(uri); /* opening waits for nothing */
    t0 = now_s();
    ck_assert_int_eq(pbx_store_ping(store, &err), -ETIMEDOUT);
    took = now_s() - t0;
    ck_assert_msg(took >= 0.14 && took < 1.0, "took %.3f s", took);
    ck_assert_msg(strstr(err->msg, "redis://127.0.0.1:") != NULL, "%s", err->msg);
    pbx_error_free(&err);
    pbx_store_close(store);
    close(fd);
    free(uri);
}
END_TEST

/* A server that answers its first command with `hostile_reply`, then waits for the hang-up. */
static const char *hostile_reply;

static void *hostile_serve(void *arg)
{
    int lfd = *(int *)arg;
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    char buf[4096];

    ck_assert_int_ge(fd, 0);
    ck_assert_int_gt(read(fd, buf, sizeof(buf)), 0);
    ck_assert_int_eq(write(fd, hostile_reply, strlen(hostile_reply)),
                     (ssize_t)strlen(hostile_reply));
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
    close(fd);
    return NULL;
}

/*
 * A reply declaring more array elements than any of pybox's holds (hiredis
 * would allocate them at once: 16 GiB for "*2147483647"; or the elements
 * of nested arrays, summed): the call fails at once as a protocol error.
 */
START_TEST(test_redis_huge_array)
{
    static const char *const replies[] = {"*2147483647\r\n", "*2\r\n*16777215\r\n*2\r\n"};

    for (size_t i = 0; i < sizeof(replies) / sizeof(replies[0]); i++) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(sa);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct pbx_store *store;
        struct pbx_error *err = NULL;
        pthread_t server;
        char *uri;
        double t0;

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        ck_assert_int_eq(listen(fd, 16), 0);
        ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
        hostile_reply = replies[i];
        ck_assert_int_eq(pthread_create(&server, NULL, hostile_serve, &fd), 0);
        uri = xasprintf("redis://127.0.0.1:%d?timeout_ms=5000", ntohs(sa.sin_port));
        store = open_ok(uri);
        t0 = now_s();
        ck_assert_int_eq(pbx_store_ping(store, &err), -PBX_E_PROTO);
        ck_assert_msg(now_s() - t0 < 1.0, "took %.3f s", now_s() - t0);
        ck_assert_msg(strstr(err->msg, "a reply of more than 16777216 array elements") != NULL,
                      "%s", err->msg);
        pbx_error_free(&err);
        pbx_store_close(store); /* the hang-up ends the server */
        ck_assert_int_eq(pthread_join(server, NULL), 0);
        close(fd);
        free(uri);
    }
}
END_TEST

/*
 * A killed redis-server: every call fails, each within 1 s (most at once,
 * in the backoff); once it is back on the same port, calls succeed again.
 */
START_TEST(test_redis_kill_and_restart)
{
    int port = 0;
    pid_t pid = start_redis(&port, NULL);
    char *uri = xasprintf("redis://127.0.0.1:%d", port);
    struct pbx_store *store = open_ok(uri);
    struct pbx_audit rec = {
        .time_ms = 1, .client = "c", .route = "/v1/execute", .code_sha256 = "ab", .status = "ok"};
    struct pbx_error *err = NULL;
    struct pbx_key_info info;
    char *token = create_ok(store, "k", NULL);
    int64_t count = 0;
    double worst = 0;
    double deadline;
    int r = -1;

    ck_assert_int_eq(pbx_store_key_lookup(store, token, &info, NULL), 1);
    pbx_key_info_release(&info);
    stop_redis(pid);
    ck_assert(!pings(port));
    {
        double t0 = now_s();

        ck_assert_int_lt(pbx_store_ping(store, &err), 0);
        ck_assert_double_lt(now_s() - t0, 1.0);
        ck_assert_msg(strstr(err->msg, uri) != NULL, "%s", err->msg);
        pbx_error_free(&err);
    }
    for (int i = 0; i < 40; i++) {
        double t0 = now_s();
        struct pbx_key_info *keys = NULL;
        size_t n = 0;
        char *text = NULL;

        switch (i % 5) {
        case 0:
            r = pbx_store_key_lookup(store, token, &info, &err);
            break;
        case 1:
            r = pbx_store_quota_take(store, "c", "2026-01-01", 10, &count, &err);
            break;
        case 2:
            r = pbx_store_audit(store, &rec, &err);
            break;
        case 3:
            r = pbx_store_key_list(store, &keys, &n, &err);
            break;
        default:
            r = pbx_store_audit_tail(store, 5, &text, &err);
            break;
        }
        if (now_s() - t0 > worst)
            worst = now_s() - t0;
        ck_assert_msg(r < 0, "call %d succeeded with the server dead", i);
        ck_assert_ptr_nonnull(err);
        ck_assert_msg(strstr(err->msg, uri) != NULL, "%s", err->msg);
        pbx_error_free(&err);
        ck_assert_double_lt(now_s() - t0, 1.0);
    }
    ck_assert_double_lt(worst, 1.0);

    /* Back on the same port (empty: it kept nothing), calls succeed again within the backoff. */
    pid = start_redis_on(port, NULL);
    ck_assert_int_gt(pid, 0);
    deadline = now_s() + 5;
    do {
        r = pbx_store_quota_take(store, "c", "2026-01-01", 10, &count, &err);
        pbx_error_free(&err);
        if (r < 0)
            usleep(20000); /* the poll's interval, under a deadline */
    } while (r < 0 && now_s() < deadline);
    ck_assert_int_eq(r, 1);
    ck_assert_int_eq(count, 1);
    ck_assert_int_eq(pbx_store_ping(store, &err), 0);
    /* Every connection of the pool is a fresh one now: a run of calls, all fine. */
    for (int i = 0; i < 20; i++) {
        ck_assert_int_eq(pbx_store_quota_take(store, "c", "2026-01-01", 100, &count, &err), 1);
        ck_assert_int_eq(pbx_store_key_lookup(store, token, &info, &err), 0); /* it kept nothing */
        ck_assert_int_eq(pbx_store_audit(store, &rec, &err), 0);
    }
    ck_assert_ptr_null(err);
    /* SCRIPT FLUSH: the scripts are loaded again (NOSCRIPT), unseen by callers. */
    raw_ok(port, "SCRIPT FLUSH");
    ck_assert_int_eq(pbx_store_quota_take(store, "c", "2026-01-01", 100, &count, &err), 1);
    ck_assert_int_eq(count, 22);
    free(token);
    token = create_ok(store, "k", NULL);
    pbx_store_close(store);
    stop_redis(pid);
    free(token);
    free(uri);
}
END_TEST

/*
 * Connections the server closed while they were kept (its idle timeout, an
 * operator's CLIENT KILL): a call that only reads goes again on a new one,
 * unseen; a charge or an audit record is never sent twice, so that call
 * fails, and the next ones succeed.
 */
START_TEST(test_redis_closed_connections)
{
    struct pbx_store *store = new_store("closed", NULL);
    struct pbx_error *err = NULL;
    struct pbx_key_info info;
    struct pbx_key_info *keys = NULL;
    struct pbx_audit rec = {
        .time_ms = 1, .client = "c", .route = "/execute", .code_sha256 = "ab", .status = "ok"};
    size_t n = 0;
    int64_t count = -1;
    char *token = create_ok(store, "k", NULL);
    char *text = NULL;
    double deadline;
    int r;

    /* Every connection of the pool open, then all closed by the server. */
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(pbx_store_quota_take(store, "c", "2026-01-01", -1, &count, NULL), 1);
    raw_ok(shared_port, "CLIENT KILL TYPE normal");
    ck_assert_int_eq(pbx_store_key_lookup(store, token, &info, &err), 1);
    pbx_key_info_release(&info);
    ck_assert_ptr_null(err);
    raw_ok(shared_port, "CLIENT KILL TYPE normal");
    ck_assert_int_eq(pbx_store_quota_get(store, "c", "2026-01-01", &count, &err), 0);
    ck_assert_int_eq(count, 8);
    raw_ok(shared_port, "CLIENT KILL TYPE normal");
    ck_assert_int_eq(pbx_store_key_list(store, &keys, &n, &err), 0);
    ck_assert_uint_eq(n, 1);
    pbx_key_info_free_array(keys, n);
    raw_ok(shared_port, "CLIENT KILL TYPE normal");
    ck_assert_int_eq(pbx_store_audit_tail(store, 3, &text, &err), 0);
    free(text);
    raw_ok(shared_port, "CLIENT KILL TYPE normal");
    ck_assert_int_eq(pbx_store_ping(store, &err), 0);
    raw_ok(shared_port, "CLIENT KILL TYPE normal");
    ck_assert_int_eq(pbx_store_key_revoke(store, "k", &err), 0);
    ck_assert_ptr_null(err);

    /* A charge on a closed connection fails (it is not sent again); later ones are served. */
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(pbx_store_quota_get(store, "c", "2026-01-01", &count, NULL), 0);
    raw_ok(shared_port, "CLIENT KILL TYPE normal");
    ck_assert_int_lt(pbx_store_quota_take(store, "c", "2026-01-01", -1, &count, &err), 0);
    ck_assert_ptr_nonnull(err);
    pbx_error_free(&err);
    deadline = now_s() + 5;
    do {
        r = pbx_store_audit(store, &rec, &err);
        pbx_error_free(&err);
        if (r < 0)
            usleep(10000); /* the poll's interval, under a deadline */
    } while (r < 0 && now_s() < deadline);
    ck_assert_int_eq(r, 0);
    ck_assert_int_eq(pbx_store_quota_take(store, "c", "2026-01-01", -1, &count, &err), 1);
    ck_assert_int_eq(count, 9); /* the failed charge was not counted */
    free(token);
    pbx_store_close(store);
}
END_TEST

/* A password (AUTH) and a database (SELECT) of the URI; the wrong password fails clearly. */
START_TEST(test_redis_auth_and_db)
{
    int port = 0;
    pid_t pid = start_redis(&port, "p@ss:w/rd");
    char *good = xasprintf("redis://:p%%40ss%%3Aw%%2Frd@127.0.0.1:%d/3", port);
    char *wrong = xasprintf("redis://:nope@127.0.0.1:%d/3", port);
    char *db0 = xasprintf("redis://default:p%%40ss%%3Aw%%2Frd@127.0.0.1:%d", port);
    struct pbx_store *store = NULL;
    struct pbx_store *other = NULL;
    struct pbx_error *err = NULL;
    struct pbx_key_info *keys = NULL;
    size_t n = 9;
    char *token;

    /* A wrong password: the first call fails, saying so. */
    store = open_ok(wrong);
    ck_assert_int_lt(pbx_store_key_list(store, &keys, &n, &err), 0);
    ck_assert_msg(strstr(err->msg, "authenticate") != NULL && strstr(err->msg, "nope") == NULL,
                  "%s", err->msg);
    pbx_error_free(&err);
    pbx_store_close(store);
    store = open_ok(good);
    token = create_ok(store, "in3", NULL);
    /* Database 0 (user and password both given) is another store. */
    other = open_ok(db0);
    ck_assert_int_eq(pbx_store_key_list(other, &keys, &n, &err), 0);
    ck_assert_uint_eq(n, 0);
    pbx_key_info_free_array(keys, n);
    ck_assert_int_eq(pbx_store_key_list(store, &keys, &n, &err), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(keys[0].name, "in3");
    pbx_key_info_free_array(keys, n);
    pbx_store_close(other);
    pbx_store_close(store);
    stop_redis(pid);
    free(token);
    free(db0);
    free(wrong);
    free(good);
}
END_TEST

/* Whether `needle` is anywhere in what Redis holds: every key's name and values, by type. */
static bool redis_contains(int port, const char *needle)
{
    redisReply *keys = raw(port, "KEYS *");
    bool found = false;

    ck_assert_ptr_nonnull(keys);
    ck_assert_int_eq(keys->type, REDIS_REPLY_ARRAY);
    for (size_t i = 0; i < keys->elements && !found; i++) {
        const char *key = keys->element[i]->str;
        redisReply *type = raw(port, "TYPE %s", key);
        redisReply *val = NULL;

        found = strstr(key, needle) != NULL;
        if (strcmp(type->str, "hash") == 0)
            val = raw(port, "HGETALL %s", key);
        else if (strcmp(type->str, "zset") == 0)
            val = raw(port, "ZRANGE %s 0 -1", key);
        else if (strcmp(type->str, "string") == 0)
            val = raw(port, "GET %s", key);
        else if (strcmp(type->str, "stream") == 0)
            val = raw(port, "XRANGE %s - +", key);
        else
            ck_abort_msg("unexpected type %s of %s", type->str, key);
        if (val->type == REDIS_REPLY_STRING)
            found = found || strstr(val->str, needle) != NULL;
        for (size_t j = 0; val->type == REDIS_REPLY_ARRAY && j < val->elements; j++) {
            const redisReply *e = val->element[j];

            found = found || (e->type == REDIS_REPLY_STRING && strstr(e->str, needle) != NULL);
        }
        freeReplyObject(val);
        freeReplyObject(type);
    }
    freeReplyObject(keys);
    return found;
}

/* Redis holds the hash of a token, never the token; and what lives where. */
START_TEST(test_redis_layout)
{
    struct pbx_store *store = new_store("layout", NULL);
    struct pbx_audit rec = {.time_ms = 5,
                            .client = "c",
                            .route = "/v1/execute",
                            .code_sha256 = "ab",
                            .status = "ok",
                            .duration_ms = 0.25};
    int64_t count = 0;
    char *token = create_ok(store, "secret", NULL);
    redisReply *reply;

    ck_assert_int_eq(pbx_store_quota_take(store, "1.2.3.4", "2026-02-03", 5, &count, NULL), 1);
    ck_assert_int_eq(pbx_store_audit(store, &rec, NULL), 0);
    ck_assert(!redis_contains(shared_port, token));
    ck_assert(!redis_contains(shared_port, token + 4));
    ck_assert(redis_contains(shared_port, "secret"));
    /* The name index, the order, the day's counter with its expiry, the stream. */
    reply = raw(shared_port, "HGET pbx:{keys}:names secret");
    ck_assert_int_eq(reply->type, REDIS_REPLY_STRING);
    ck_assert_uint_eq(reply->len, 64);
    freeReplyObject(reply);
    reply = raw(shared_port, "ZCARD pbx:{keys}:created");
    ck_assert_int_eq(reply->integer, 1);
    freeReplyObject(reply);
    reply = raw(shared_port, "TTL pbx:quota:{1.2.3.4}:2026-02-03");
    ck_assert_int_gt(reply->integer, 2 * 86400);
    ck_assert_int_le(reply->integer, 5 * 86400);
    freeReplyObject(reply);
    reply = raw(shared_port, "XLEN pbx:audit");
    ck_assert_int_eq(reply->integer, 1);
    freeReplyObject(reply);
    free(token);
    pbx_store_close(store);
}
END_TEST

/* A call that must fail with a PBX_E_PROTO error (or another), not crash nor succeed. */
#define ASSERT_FAILS(call)                                                             \
    do {                                                                               \
        int r_ = (call);                                                               \
        ck_assert_msg(r_ < 0, "%s: %d", #call, r_);                                    \
        ck_assert_ptr_nonnull(err);                                                    \
        ck_assert_msg(strstr(err->msg, "redis://127.0.0.1:") != NULL, "%s", err->msg); \
        pbx_error_free(&err);                                                          \
    } while (0)

/* Values of the wrong type or shape under pybox's keys: errors, never crashes. */
START_TEST(test_redis_wrong_types)
{
    /* A field of a key's record: a value that is refused, then one that is fine again. */
    static const char *const bad_fields[][3] = {
        {"rpm", "12x", "5"},
        {"rpm", "99999999999999999999999", "5"},
        {"rpm", "-7", "5"},
        {"admin", "2", "0"},
    };
    /* A quota counter that is not a count, and the limit of the charge refused on it. */
    static const struct {
        const char *value;
        int64_t limit;
    } bad_counts[] = {{"abc", 5}, {"-4", 5}, {"1.5", 1}, {"99999999999999999999999", -1}};
    char *uri = NULL;
    struct pbx_store *store = new_store("types", &uri);
    struct pbx_store *other = NULL;
    struct pbx_error *err = NULL;
    struct pbx_key_info info;
    struct pbx_key_info *keys = NULL;
    struct pbx_audit rec = {
        .time_ms = 5, .client = "c", .route = "/v1/execute", .code_sha256 = "ab", .status = "ok"};
    size_t n = 0;
    int64_t count = 0;
    char *text = NULL;
    char *token = create_ok(store, "k", NULL);
    char *tok = NULL;
    char *big = xmalloc(1 << 20);
    char hex[65];
    redisReply *reply;

    reply = raw(shared_port, "HGET pbx:{keys}:names k");
    ck_assert_int_eq(reply->type, REDIS_REPLY_STRING);
    snprintf(hex, sizeof(hex), "%s", reply->str);
    freeReplyObject(reply);

    /* Fields of the record: malformed numbers, missing fields, a huge string. */
    for (size_t i = 0; i < sizeof(bad_fields) / sizeof(bad_fields[0]); i++) {
        raw_ok(shared_port, "HSET pbx:{keys}:key:%s %s %s", hex, bad_fields[i][0],
               bad_fields[i][1]);
        ASSERT_FAILS(pbx_store_key_lookup(store, token, &info, &err));
        ASSERT_FAILS(pbx_store_key_list(store, &keys, &n, &err));
        raw_ok(shared_port, "HSET pbx:{keys}:key:%s %s %s", hex, bad_fields[i][0],
               bad_fields[i][2]);
    }
    ck_assert_int_eq(pbx_store_key_lookup(store, token, &info, &err), 1);
    ck_assert_int_eq(info.policy.rpm, 5);
    pbx_key_info_release(&info);
    raw_ok(shared_port, "HDEL pbx:{keys}:key:%s admin", hex);
    ASSERT_FAILS(pbx_store_key_lookup(store, token, &info, &err));
    raw_ok(shared_port, "HSET pbx:{keys}:key:%s admin 0", hex);
    memset(big, 'n', (1 << 20) - 1);
    big[(1 << 20) - 1] = '\0';
    raw_ok(shared_port, "HSET pbx:{keys}:key:%s name %s", hex, big);
    ASSERT_FAILS(pbx_store_key_lookup(store, token, &info, &err));
    raw_ok(shared_port, "HSET pbx:{keys}:key:%s name k hash %s", hex, "zz");
    ASSERT_FAILS(pbx_store_key_lookup(store, token, &info, &err));
    /* A hash that is another key's: looked up by one token, never authenticates as it. */
    raw_ok(shared_port, "HSET pbx:{keys}:key:%s hash %064d", hex, 0);
    ck_assert_int_eq(pbx_store_key_lookup(store, token, &info, &err), 0);
    ck_assert_ptr_null(err);
    /* Out-of-range session counts read as the server's, as in SQLite. */
    raw_ok(shared_port, "HSET pbx:{keys}:key:%s hash %s sessions -1 session_idle_ttl_s 99999999999",
           hex, hex);
    ck_assert_int_eq(pbx_store_key_lookup(store, token, &info, &err), 1);
    ck_assert_uint_eq(info.policy.sessions, 0);
    ck_assert_uint_eq(info.policy.session_idle_ttl_s, 0);
    pbx_key_info_release(&info);

    /* The record of the wrong type. */
    raw_ok(shared_port, "DEL pbx:{keys}:key:%s", hex);
    raw_ok(shared_port, "SET pbx:{keys}:key:%s oops", hex);
    ASSERT_FAILS(pbx_store_key_lookup(store, token, &info, &err));
    ASSERT_FAILS(pbx_store_key_list(store, &keys, &n, &err));
    ASSERT_FAILS(pbx_store_key_revoke(store, "k", &err));
    /* The name index and the order of the wrong type, or holding junk. */
    raw_ok(shared_port, "DEL pbx:{keys}:names");
    raw_ok(shared_port, "SET pbx:{keys}:names x");
    ASSERT_FAILS(pbx_store_key_create(store, "new", NULL, &tok, &err));
    ck_assert_ptr_null(tok);
    ASSERT_FAILS(pbx_store_key_revoke(store, "k", &err));
    raw_ok(shared_port, "DEL pbx:{keys}:names");
    raw_ok(shared_port, "HSET pbx:{keys}:names k not-a-hash");
    ASSERT_FAILS(pbx_store_key_revoke(store, "k", &err));
    raw_ok(shared_port, "ZADD pbx:{keys}:created 99 junk");
    ASSERT_FAILS(pbx_store_key_list(store, &keys, &n, &err));
    raw_ok(shared_port, "DEL pbx:{keys}:created");
    raw_ok(shared_port, "SET pbx:{keys}:created x");
    ASSERT_FAILS(pbx_store_key_list(store, &keys, &n, &err));
    raw_ok(shared_port, "DEL pbx:{keys}:seq");
    raw_ok(shared_port, "DEL pbx:{keys}:names");
    raw_ok(shared_port, "DEL pbx:{keys}:created");
    raw_ok(shared_port, "HSET pbx:{keys}:seq a b");
    ASSERT_FAILS(pbx_store_key_create(store, "new", NULL, &tok, &err));
    raw_ok(shared_port, "DEL pbx:{keys}:seq");

    /* Quota counters: the wrong type, not a number, negative. */
    raw_ok(shared_port, "HSET pbx:quota:{c}:2026-01-01 a b");
    ASSERT_FAILS(pbx_store_quota_take(store, "c", "2026-01-01", 5, &count, &err));
    ASSERT_FAILS(pbx_store_quota_get(store, "c", "2026-01-01", &count, &err));
    raw_ok(shared_port, "DEL pbx:quota:{c}:2026-01-01");
    for (size_t i = 0; i < sizeof(bad_counts) / sizeof(bad_counts[0]); i++) {
        raw_ok(shared_port, "SET pbx:quota:{c}:2026-01-01 %s", bad_counts[i].value);
        ASSERT_FAILS(pbx_store_quota_get(store, "c", "2026-01-01", &count, &err));
        ASSERT_FAILS(
            pbx_store_quota_take(store, "c", "2026-01-01", bad_counts[i].limit, &count, &err));
    }
    raw_ok(shared_port, "SET pbx:quota:{c}:2026-01-01 3");
    ck_assert_int_eq(pbx_store_quota_take(store, "c", "2026-01-01", 5, &count, &err), 1);
    ck_assert_int_eq(count, 4);

    /* The audit stream: the wrong type, then entries of the wrong shape. */
    raw_ok(shared_port, "SET pbx:audit x");
    ASSERT_FAILS(pbx_store_audit(store, &rec, &err));
    ASSERT_FAILS(pbx_store_audit_tail(store, 5, &text, &err));
    ck_assert_ptr_null(text);
    raw_ok(shared_port, "DEL pbx:audit");
    raw_ok(shared_port, "XADD pbx:audit * time_ms soon client c");
    ASSERT_FAILS(pbx_store_audit_tail(store, 5, &text, &err));
    raw_ok(shared_port, "DEL pbx:audit");
    raw_ok(shared_port, "XADD pbx:audit * time_ms 7 duration_ms nan");
    ASSERT_FAILS(pbx_store_audit_tail(store, 5, &text, &err));
    raw_ok(shared_port, "DEL pbx:audit");
    /* Missing or non-UTF-8 text fields are null, as in SQLite. */
    raw_ok(shared_port, "XADD pbx:audit * time_ms 7 duration_ms 1.5 status %b", "\xff\xfe", 2);
    ck_assert_int_eq(pbx_store_audit_tail(store, 5, &text, &err), 0);
    ck_assert_str_eq(text, "{\"time_ms\":7,\"client\":null,\"key_name\":null,\"route\":null,"
                           "\"code_sha256\":null,\"status\":null,\"duration_ms\":1.5}\n");
    free(text);

    /* The layout's version: junk, or newer than this pybox. */
    /* A new store's first call reads it, and fails; again on each call until it is fixed. */
    raw_ok(shared_port, "SET pbx:{keys}:schema banana");
    other = open_ok(uri);
    ck_assert_int_eq(pbx_store_ping(other, &err), -PBX_E_PROTO);
    pbx_error_free(&err);
    raw_ok(shared_port, "SET pbx:{keys}:schema 99");
    ck_assert_int_eq(pbx_store_ping(other, &err), -PBX_E_UNSUPPORTED);
    ck_assert_msg(strstr(err->msg, "version 99") != NULL, "%s", err->msg);
    pbx_error_free(&err);
    pbx_store_close(other);

    /* The store still serves once the junk is gone. */
    raw_ok(shared_port, "FLUSHALL");
    tok = create_ok(store, "after", NULL);
    ck_assert_int_eq(pbx_store_key_lookup(store, tok, &info, &err), 1);
    pbx_key_info_release(&info);
    free(tok);
    free(big);
    free(token);
    free(uri);
    pbx_store_close(store);
}
END_TEST

/* Two servers on one Redis: a key made on one authenticates on the other, until revoked there. */
START_TEST(test_redis_two_nodes)
{
    char *uri = NULL;
    struct pbx_store *a = new_store("nodes", &uri);
    struct pbx_store *b = open_ok(uri);
    struct pbx_error *err = NULL;
    struct pbx_key_info info;
    int64_t count = 0;
    char *token = create_ok(a, "shared", NULL);
    char *again = NULL;

    ck_assert_int_eq(pbx_store_key_lookup(b, token, &info, &err), 1);
    ck_assert_str_eq(info.name, "shared");
    pbx_key_info_release(&info);
    ck_assert_int_eq(pbx_store_key_create(b, "shared", NULL, &again, &err), -EEXIST);
    pbx_error_free(&err);
    ck_assert_int_eq(pbx_store_quota_take(a, "key:shared", "2026-04-01", 2, &count, &err), 1);
    ck_assert_int_eq(pbx_store_quota_take(b, "key:shared", "2026-04-01", 2, &count, &err), 1);
    ck_assert_int_eq(count, 2);
    ck_assert_int_eq(pbx_store_quota_take(a, "key:shared", "2026-04-01", 2, &count, &err), 0);
    ck_assert_int_eq(pbx_store_key_revoke(b, "shared", &err), 0);
    ck_assert_int_eq(pbx_store_key_lookup(a, token, &info, &err), 0);
    ck_assert_ptr_null(err);
    pbx_store_close(b);
    pbx_store_close(a);
    free(token);
    free(uri);
}
END_TEST

/* Redis's clock, in ms, as the window script reads it. */
static int64_t redis_now_ms(int port)
{
    redisReply *t = raw(port, "TIME");
    int64_t ms;

    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->type, REDIS_REPLY_ARRAY);
    ck_assert_int_eq(t->elements, 2);
    ms =
        strtoll(t->element[0]->str, NULL, 10) * 1000 + strtoll(t->element[1]->str, NULL, 10) / 1000;
    freeReplyObject(t);
    return ms;
}

static int64_t window_len(int port, const char *client)
{
    redisReply *n = raw(port, "ZCARD pbx:window:{%s}", client);
    int64_t len;

    ck_assert_ptr_nonnull(n);
    ck_assert_int_eq(n->type, REDIS_REPLY_INTEGER);
    len = n->integer;
    freeReplyObject(n);
    return len;
}

/* The shared window: its limit, Retry-After, a release, and two stores (two servers) sharing it. */
START_TEST(test_redis_window)
{
    char *uri = NULL;
    struct pbx_store *a = new_store("window", &uri);
    struct pbx_store *b = open_ok(uri);
    struct pbx_error *err = NULL;
    unsigned retry = 99;
    redisReply *ttl;

    ck_assert(pbx_store_has_windows(a));
    /* Five places, taken through both stores. */
    for (int i = 0; i < 5; i++) {
        char ticket[16];

        snprintf(ticket, sizeof(ticket), "t%d", i);
        ck_assert_int_eq(pbx_store_window_hold(i % 2 ? b : a, "key:w", ticket, 5, &retry, &err), 1);
    }
    ck_assert_int_eq(window_len(shared_port, "key:w"), 5);
    /* Full for either: the oldest leaves in about a minute. */
    ck_assert_int_eq(pbx_store_window_hold(a, "key:w", "t5", 5, &retry, &err), 0);
    ck_assert_uint_ge(retry, 59);
    ck_assert_uint_le(retry, 60);
    ck_assert_int_eq(pbx_store_window_hold(b, "key:w", "t6", 5, &retry, &err), 0);
    /* A refusal takes no place. */
    ck_assert_int_eq(window_len(shared_port, "key:w"), 5);
    /* A release (a request not admitted) frees one, on the other store too; twice is fine. */
    ck_assert_int_eq(pbx_store_window_release(b, "key:w", "t2", &err), 0);
    ck_assert_int_eq(pbx_store_window_release(a, "key:w", "t2", &err), 0);
    ck_assert_int_eq(pbx_store_window_hold(a, "key:w", "t7", 5, &retry, &err), 1);
    ck_assert_int_eq(pbx_store_window_hold(b, "key:w", "t8", 5, &retry, &err), 0);
    /* Another client has its own window; a limit of 0 refuses all; none (< 0) takes no place. */
    ck_assert_int_eq(pbx_store_window_hold(b, "key:other", "t9", 5, &retry, &err), 1);
    ck_assert_int_eq(pbx_store_window_hold(b, "key:zero", "t10", 0, &retry, &err), 0);
    ck_assert_uint_eq(retry, 60);
    ck_assert_int_eq(pbx_store_window_hold(b, "key:none", "t11", -1, &retry, &err), 1);
    ck_assert_int_eq(window_len(shared_port, "key:none"), 0);
    /* The set expires about a minute after its last place. */
    ttl = raw(shared_port, "PTTL pbx:window:{key:w}");
    ck_assert_ptr_nonnull(ttl);
    ck_assert_int_gt(ttl->integer, 55000);
    ck_assert_int_le(ttl->integer, 61000);
    freeReplyObject(ttl);
    ck_assert_ptr_null(err);
    /* Bad tickets and clients. */
    ck_assert_int_eq(pbx_store_window_hold(a, "key:w", "", 5, &retry, &err), -PBX_E_INVAL);
    pbx_error_free(&err);
    ck_assert_int_eq(pbx_store_window_hold(a, "key:w", "a b", 5, &retry, &err), -PBX_E_INVAL);
    pbx_error_free(&err);
    ck_assert_int_eq(pbx_store_window_hold(a, "", "t", 5, &retry, &err), -PBX_E_INVAL);
    pbx_error_free(&err);
    pbx_store_close(b);
    pbx_store_close(a);
    free(uri);
}
END_TEST

/*
 * Places age out by Redis's clock: places taken 61 s ago (a server that died
 * holding them) are trimmed, ones of 59.5 s ago still count and leave within
 * a second or so.
 */
START_TEST(test_redis_window_ages_out)
{
    struct pbx_store *store = new_store("aging", NULL);
    struct pbx_error *err = NULL;
    unsigned retry = 0;
    int64_t now = redis_now_ms(shared_port);

    for (int i = 0; i < 10; i++)
        raw_ok(shared_port, "ZADD pbx:window:{key:dead} %lld old%d", (long long)(now - 61000), i);
    ck_assert_int_eq(pbx_store_window_hold(store, "key:dead", "new0", 3, &retry, &err), 1);
    ck_assert_int_eq(window_len(shared_port, "key:dead"), 1);
    /* Two places of 59.5 s ago and the one just taken fill a limit of 3. */
    raw_ok(shared_port, "ZADD pbx:window:{key:dead} %lld late0 %lld late1",
           (long long)(now - 59500), (long long)(now - 59400));
    ck_assert_int_eq(pbx_store_window_hold(store, "key:dead", "new1", 3, &retry, &err), 0);
    ck_assert_uint_ge(retry, 1);
    ck_assert_uint_le(retry, 2);
    /* Exactly at the edge (60 s ago) a place has left. */
    raw_ok(shared_port, "ZADD pbx:window:{key:dead} %lld late0", (long long)(now - 60000 - 5));
    ck_assert_int_eq(pbx_store_window_hold(store, "key:dead", "new2", 3, &retry, &err), 1);
    ck_assert_ptr_null(err);
    pbx_store_close(store);
}
END_TEST

static int64_t zcard(int port, const char *key)
{
    redisReply *n = raw(port, "ZCARD %s", key);
    int64_t len;

    ck_assert_ptr_nonnull(n);
    ck_assert_int_eq(n->type, REDIS_REPLY_INTEGER);
    len = n->integer;
    freeReplyObject(n);
    return len;
}

/* Admit `ticket` of `ask` (its limits): the verdict. */
static enum pbx_store_verdict admit_as(struct pbx_store *store, struct pbx_store_admit *ask,
                                       const char *ticket, struct pbx_store_admission *adm)
{
    struct pbx_error *err = NULL;

    ask->ticket = ticket;
    ck_assert_int_eq(pbx_store_admit(store, ask, adm, &err), 0);
    ck_assert_ptr_null(err);
    return adm->verdict;
}

/*
 * One call admits: the window, the day's quota and the leases, checked
 * together and charged only when all three have room, by Redis's clock,
 * through two stores (two servers) alike; a refusal charges nothing; an
 * undo gives all of it back; a lease ends, or runs out by itself.
 */
START_TEST(test_redis_admit)
{
    char *uri = NULL;
    struct pbx_store *a = new_store("admit", &uri);
    struct pbx_store *b = open_ok(uri);
    struct pbx_error *err = NULL;
    struct pbx_store_admit ask = {
        .client = "key:adm", .rpm = 3, .rpd = 5, .concurrency = 2, .lease_ms = 60000};
    struct pbx_store_admission adm = {0};
    struct pbx_store_admission t3 = {0};
    int64_t count = -1;
    time_t secs = (time_t)(redis_now_ms(shared_port) / 1000);
    struct tm tm;
    char day[16];

    /* The day is Redis's UTC day. */
    gmtime_r(&secs, &tm);
    strftime(day, sizeof(day), "%Y-%m-%d", &tm);
    ck_assert_int_eq(admit_as(a, &ask, "t1", &adm), PBX_STORE_ADMITTED);
    ck_assert_str_eq(adm.day, day);
    ck_assert(adm.leased && !adm.repeat);
    ck_assert_int_eq(adm.today, 1);
    ck_assert_int_eq(admit_as(b, &ask, "t2", &adm), PBX_STORE_ADMITTED);
    ck_assert_int_eq(adm.today, 2);
    /* Two leases held: a third execution at once is refused, and charged nothing. */
    ck_assert_int_eq(admit_as(a, &ask, "t3", &adm), PBX_STORE_CONCURRENT);
    ck_assert_uint_eq(adm.retry_after, 1);
    ck_assert_int_eq(zcard(shared_port, "pbx:window:{key:adm}"), 2);
    ck_assert_int_eq(zcard(shared_port, "pbx:lease:{key:adm}"), 2);
    ck_assert_int_eq(pbx_store_quota_get(a, "key:adm", day, &count, &err), 0);
    ck_assert_int_eq(count, 2);
    /* One ends (on the other server): room again. */
    ck_assert_int_eq(pbx_store_lease_end(b, "key:adm", "t1", &err), 0);
    ck_assert_int_eq(pbx_store_lease_end(b, "key:adm", "t1", &err), 0); /* twice is fine */
    ck_assert_int_eq(admit_as(a, &ask, "t3", &t3), PBX_STORE_ADMITTED);
    ck_assert_int_eq(t3.today, 3);
    /* Three in the minute: the window is full, the oldest leaves in about 60 s. */
    ck_assert_int_eq(pbx_store_lease_end(a, "key:adm", "t2", &err), 0);
    ck_assert_int_eq(admit_as(b, &ask, "t4", &adm), PBX_STORE_RATE);
    ck_assert_uint_ge(adm.retry_after, 59);
    ck_assert_uint_le(adm.retry_after, 60);
    ck_assert_int_eq(adm.today, 3);
    /* t3 undone (no slot for it): its place, its count and its lease are given back. */
    ck_assert_int_eq(pbx_store_admit_undo(b,
                                          &(struct pbx_store_admit){.client = "key:adm",
                                                                    .ticket = "t3",
                                                                    .concurrency = 2,
                                                                    .lease_ms = 60000},
                                          &t3, &err),
                     0);
    ck_assert_ptr_null(err);
    ck_assert_int_eq(zcard(shared_port, "pbx:window:{key:adm}"), 2);
    ck_assert_int_eq(zcard(shared_port, "pbx:lease:{key:adm}"), 0);
    ck_assert_int_eq(pbx_store_quota_get(a, "key:adm", day, &count, &err), 0);
    ck_assert_int_eq(count, 2);
    /* The day's quota: two more pass a window of no limit, the next is refused until midnight. */
    ask.rpm = -1;
    ck_assert_int_eq(admit_as(a, &ask, "t5", &adm), PBX_STORE_ADMITTED);
    ck_assert_int_eq(pbx_store_lease_end(a, "key:adm", "t5", &err), 0);
    ck_assert_int_eq(admit_as(a, &ask, "t6", &adm), PBX_STORE_ADMITTED);
    ck_assert_int_eq(adm.today, 4);
    ck_assert_int_eq(pbx_store_lease_end(a, "key:adm", "t6", &err), 0);
    ask.rpd = 4;
    ck_assert_int_eq(admit_as(b, &ask, "t7", &adm), PBX_STORE_QUOTA);
    ck_assert_uint_ge(adm.retry_after, 1);
    ck_assert_uint_le(adm.retry_after, 86400);
    ck_assert_int_eq(adm.today, 4);
    ck_assert_int_eq(zcard(shared_port, "pbx:lease:{key:adm}"), 0);
    pbx_store_close(b);
    pbx_store_close(a);
    free(uri);
}
END_TEST

/* An idempotency key: charged to the day once, through either server; an undo forgets it. */
START_TEST(test_redis_admit_once)
{
    char *uri = NULL;
    struct pbx_store *a = new_store("admitonce", &uri);
    struct pbx_store *b = open_ok(uri);
    struct pbx_error *err = NULL;
    struct pbx_store_admit ask = {
        .client = "key:once", .once = "retry-1", .rpm = 10, .rpd = 2, .concurrency = -1};
    struct pbx_store_admission first = {0};
    struct pbx_store_admission adm = {0};

    ck_assert_int_eq(admit_as(a, &ask, "o1", &first), PBX_STORE_ADMITTED);
    ck_assert(!first.repeat && !first.leased);
    ck_assert_int_eq(first.today, 1);
    /* Sent again, to the other server: admitted, in the window, not counted again. */
    ck_assert_int_eq(admit_as(b, &ask, "o2", &adm), PBX_STORE_ADMITTED);
    ck_assert(adm.repeat);
    ck_assert_int_eq(adm.today, 1);
    ck_assert_int_eq(zcard(shared_port, "pbx:window:{key:once}"), 2);
    ck_assert_int_eq(zcard(shared_port, "pbx:lease:{key:once}"), 0); /* no limit, no lease */
    /* Undoing the repeat leaves the first charge alone. */
    ask.ticket = "o2";
    ck_assert_int_eq(pbx_store_admit_undo(b, &ask, &adm, &err), 0);
    ck_assert_int_eq(admit_as(a, &ask, "o3", &adm), PBX_STORE_ADMITTED);
    ck_assert(adm.repeat);
    ck_assert_int_eq(adm.today, 1);
    /* Undoing the first forgets the key: the next one of it counts. */
    ask.ticket = "o1";
    ck_assert_int_eq(pbx_store_admit_undo(a, &ask, &first, &err), 0);
    ck_assert_int_eq(admit_as(b, &ask, "o4", &adm), PBX_STORE_ADMITTED);
    ck_assert(!adm.repeat);
    ck_assert_int_eq(adm.today, 1);
    /* A repeat passes a spent quota: it was paid for. */
    ask.once = "retry-2";
    ck_assert_int_eq(admit_as(a, &ask, "o5", &adm), PBX_STORE_ADMITTED);
    ck_assert_int_eq(adm.today, 2);
    ask.once = NULL;
    ck_assert_int_eq(admit_as(a, &ask, "o6", &adm), PBX_STORE_QUOTA);
    ask.once = "retry-2";
    ck_assert_int_eq(admit_as(b, &ask, "o7", &adm), PBX_STORE_ADMITTED);
    ck_assert(adm.repeat);
    ck_assert_ptr_null(err);
    /* A mark kept a day, or as long as asked; longer than a day is refused. */
    {
        redisReply *ttl = raw(shared_port, "TTL pbx:quota:{key:once}:%s:once:retry-2", adm.day);

        ck_assert_int_gt(ttl->integer, 86000);
        freeReplyObject(ttl);
        ask.rpd = -1;
        ask.once = "short";
        ask.once_ttl_s = 30;
        ck_assert_int_eq(admit_as(a, &ask, "o8", &adm), PBX_STORE_ADMITTED);
        ttl = raw(shared_port, "TTL pbx:quota:{key:once}:%s:once:short", adm.day);
        ck_assert_int_gt(ttl->integer, 0);
        ck_assert_int_le(ttl->integer, 30);
        freeReplyObject(ttl);
        ask.once_ttl_s = 86401;
        ck_assert_int_eq(pbx_store_admit(a, &ask, &adm, &err), -PBX_E_INVAL);
        pbx_error_free(&err);
    }
    pbx_store_close(b);
    pbx_store_close(a);
    free(uri);
}
END_TEST

/* A lease never ended (a server that died) ends by itself when its time is up. */
START_TEST(test_redis_admit_lease_runs_out)
{
    struct pbx_store *store = new_store("leases", NULL);
    struct pbx_store_admit ask = {
        .client = "key:lease", .rpm = -1, .rpd = -1, .concurrency = 1, .lease_ms = 300};
    struct pbx_store_admission adm = {0};
    struct timespec t0;
    struct timespec t;
    double waited = 0;

    ck_assert_int_eq(admit_as(store, &ask, "l1", &adm), PBX_STORE_ADMITTED);
    ck_assert_int_eq(admit_as(store, &ask, "l2", &adm), PBX_STORE_CONCURRENT);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (admit_as(store, &ask, "l2", &adm) != PBX_STORE_ADMITTED) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        waited = (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9;
        ck_assert_msg(waited < 5, "the lease did not run out");
        usleep(20000);
    }
    pbx_store_close(store);
}
END_TEST

/*
 * Leases of different lives: the set lasts as long as its longest, so a
 * short one admitted after a long one runs out alone and the long one stays.
 */
START_TEST(test_redis_admit_lease_longest)
{
    struct pbx_store *store = new_store("leaselong", NULL);
    struct pbx_store_admit ask = {
        .client = "key:long", .rpm = -1, .rpd = -1, .concurrency = 2, .lease_ms = 600000};
    struct pbx_store_admission adm = {0};
    struct timespec t0;
    struct timespec t;
    redisReply *ttl;

    ck_assert_int_eq(admit_as(store, &ask, "long", &adm), PBX_STORE_ADMITTED);
    ask.lease_ms = 300;
    ck_assert_int_eq(admit_as(store, &ask, "short", &adm), PBX_STORE_ADMITTED);
    ttl = raw(shared_port, "PTTL pbx:lease:{key:long}");
    ck_assert_ptr_nonnull(ttl);
    ck_assert_int_eq(ttl->type, REDIS_REPLY_INTEGER);
    ck_assert_int_gt(ttl->integer, 590000);
    ck_assert_int_le(ttl->integer, 601000);
    freeReplyObject(ttl);
    ck_assert_int_eq(admit_as(store, &ask, "third", &adm), PBX_STORE_CONCURRENT);
    /* The short one runs out: room for one, the long one still held. */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (admit_as(store, &ask, "third", &adm) != PBX_STORE_ADMITTED) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        ck_assert_msg((double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9 < 5,
                      "the short lease did not run out");
        usleep(20000);
    }
    ck_assert_int_eq(admit_as(store, &ask, "fourth", &adm), PBX_STORE_CONCURRENT);
    ck_assert_int_eq(zcard(shared_port, "pbx:lease:{key:long}"), 2);
    pbx_store_close(store);
}
END_TEST

/* Input refused before Redis sees it, and a counter that is not one. */
START_TEST(test_redis_admit_bad)
{
    struct pbx_store *store = new_store("admitbad", NULL);
    struct pbx_error *err = NULL;
    struct pbx_store_admission adm = {0};
    char long_once[PBX_STORE_ONCE_MAX + 2];
    const struct pbx_store_admit bad[] = {
        {.client = "", .ticket = "t", .concurrency = -1},
        {.client = "key:x", .ticket = "", .concurrency = -1},
        {.client = "key:x", .ticket = "a b", .concurrency = -1},
        {.client = "key:x", .ticket = "t", .once = "", .concurrency = -1},
        {.client = "key:x", .ticket = "t", .once = long_once, .concurrency = -1},
        {.client = "key:x", .ticket = "t", .once = "tab\tin", .concurrency = -1},
        {.client = "key:x", .ticket = "t", .concurrency = 1, .lease_ms = 0},
    };
    time_t secs = (time_t)(redis_now_ms(shared_port) / 1000);
    struct tm tm;
    char day[16];

    memset(long_once, 'k', sizeof(long_once) - 1);
    long_once[sizeof(long_once) - 1] = '\0';
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(pbx_store_admit(store, &bad[i], &adm, &err) == -PBX_E_INVAL, "case %zu", i);
        pbx_error_free(&err);
    }
    ck_assert_int_eq(zcard(shared_port, "pbx:window:{key:x}"), 0);
    /* A counter that is not a count is an error, never a guess, and charges nothing. */
    gmtime_r(&secs, &tm);
    strftime(day, sizeof(day), "%Y-%m-%d", &tm);
    raw_ok(shared_port, "SET pbx:quota:{key:x}:%s lots", day);
    ck_assert_int_lt(
        pbx_store_admit(
            store,
            &(struct pbx_store_admit){
                .client = "key:x", .ticket = "t", .rpm = 5, .rpd = 5, .concurrency = -1},
            &adm, &err),
        0);
    ck_assert_ptr_nonnull(err);
    pbx_error_free(&err);
    ck_assert_int_eq(zcard(shared_port, "pbx:window:{key:x}"), 0);
    pbx_store_close(store);
}
END_TEST

/* open_existing() opens what is there; keys and revocation go through it as pybox keys uses it. */
START_TEST(test_redis_open_existing)
{
    char *uri = NULL;
    struct pbx_store *store = new_store("existing", &uri);
    char *blank = xasprintf("redis://:@127.0.0.1:%d", shared_port);
    struct pbx_store *nopass = open_ok(blank); /* an empty password is none */
    struct pbx_store *again = NULL;
    struct pbx_error *err = NULL;
    char *token = create_ok(store, "k", NULL);

    pbx_store_close(store);
    ck_assert_int_eq(pbx_store_open_existing(uri, &again, &err), 0);
    ck_assert_int_eq(pbx_store_key_revoke(again, "k", &err), 0);
    ck_assert_int_eq(pbx_store_key_revoke(again, "k", &err), 0);
    ck_assert_ptr_null(err);
    pbx_store_close(again);
    pbx_store_close(nopass);
    free(blank);
    free(token);
    free(uri);
}
END_TEST

/*
 * A node id's claim is the hash pbx:node:{<id>}, expiring with the claim
 * (renewed: its expiry set again), gone once released; a value of another
 * type there is an error, never a claim.
 */
START_TEST(test_redis_node_layout)
{
    struct pbx_store *store = new_store("node-layout", NULL);
    struct pbx_error *err = NULL;
    redisReply *reply;

    claim_expect(store, "n1", "tokA", 30000, 1, NULL);
    reply = raw(shared_port, "HGET pbx:node:{n1} token");
    ck_assert_int_eq(reply->type, REDIS_REPLY_STRING);
    ck_assert_str_eq(reply->str, "tokA");
    freeReplyObject(reply);
    raw_ok(shared_port, "PEXPIRE pbx:node:{n1} 5000");
    claim_expect(store, "n1", "tokA", 30000, 1, NULL);
    reply = raw(shared_port, "PTTL pbx:node:{n1}");
    ck_assert_int_gt(reply->integer, 20000);
    ck_assert_int_le(reply->integer, 30000);
    freeReplyObject(reply);
    ck_assert_int_eq(pbx_store_node_release(store, "n1", "tokA", &err), 1);
    reply = raw(shared_port, "EXISTS pbx:node:{n1}");
    ck_assert_int_eq(reply->integer, 0);
    freeReplyObject(reply);
    raw_ok(shared_port, "SET pbx:node:{n2} x");
    ASSERT_FAILS(pbx_store_node_claim(store, "n2", "tokA", 30000, NULL, &err));
    ASSERT_FAILS(pbx_store_node_release(store, "n2", "tokA", &err));
    /* A claim some other writer made, fields missing: held, its holder unknown. */
    raw_ok(shared_port, "HSET pbx:node:{n3} token other");
    {
        struct pbx_store_node_holder h;

        memset(&h, 0x55, sizeof(h));
        claim_expect(store, "n3", "tokA", 30000, 0, &h);
        ck_assert_int_eq(h.pid, 0);
        ck_assert_str_eq(h.host, "");
        ck_assert_int_eq(h.left_ms, -1); /* no expiry */
    }
    /* A host name with control bytes (a line break, an escape) is shown without them. */
    raw_ok(shared_port, "HSET pbx:node:{n3} host %s pid 12x", "web\n\x1b[2Jx");
    ASSERT_FAILS(pbx_store_node_claim(store, "n3", "tokA", 30000, NULL, &err)); /* the pid */
    raw_ok(shared_port, "HSET pbx:node:{n3} pid 12");
    {
        struct pbx_store_node_holder h;

        claim_expect(store, "n3", "tokA", 30000, 0, &h);
        ck_assert_int_eq(h.pid, 12);
        ck_assert_str_eq(h.host, "web??[2Jx");
    }
    pbx_store_close(store);
}
END_TEST

static Suite *store_suite(void)
{
    Suite *s = suite_create("store_redis");
    TCase *tc = tcase_create("core");

    tcase_add_unchecked_fixture(tc, server_setup, server_teardown);
    tcase_set_timeout(tc, 60);
    store_cases_add(tc);
    tcase_add_test(tc, test_redis_uris);
    tcase_add_test(tc, test_redis_unreachable);
    tcase_add_test(tc, test_redis_silent_server);
    tcase_add_test(tc, test_redis_huge_array);
    tcase_add_test(tc, test_redis_kill_and_restart);
    tcase_add_test(tc, test_redis_closed_connections);
    tcase_add_test(tc, test_redis_auth_and_db);
    tcase_add_test(tc, test_redis_layout);
    tcase_add_test(tc, test_redis_wrong_types);
    tcase_add_test(tc, test_redis_two_nodes);
    tcase_add_test(tc, test_redis_window);
    tcase_add_test(tc, test_redis_window_ages_out);
    tcase_add_test(tc, test_redis_admit);
    tcase_add_test(tc, test_redis_admit_once);
    tcase_add_test(tc, test_redis_admit_lease_runs_out);
    tcase_add_test(tc, test_redis_admit_lease_longest);
    tcase_add_test(tc, test_redis_admit_bad);
    tcase_add_test(tc, test_redis_open_existing);
    tcase_add_test(tc, test_redis_node_layout);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return store_cases_run(store_suite());
}
