/*
 * Engine benchmark: executions through pbx_engine_execute() directly, with no
 * HTTP in between, as the server makes them (numpy and PIL preloaded, the
 * warm pool on, the default limits).
 *
 *     pybox-bench-engine [--requests N] [--clients C] [--spares MIN:MAX] [--gap MS] [--numpy]
 *
 * Prints one JSON object: p50/p99 latency (ms) of pbx_engine_execute(),
 * executions per second, page faults per execution (all, and those a warm
 * spare took before its code arrived), and how many executions found a spare.
 * bench/http_bench.py runs it next to the HTTP benchmark and its peers.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"
#include "engine/zygote.h"
#include "common/banned.h"

static const char print_code[] = "print(1)\n";
static const char numpy_code[] = "import numpy as np\n"
                                 "print(np.ones((64, 64)).dot(np.ones(64)).sum())\n";

struct bench {
    struct pbx_engine *engine;
    const char *code;
    unsigned per_client;
    unsigned gap_ms;      /* pause between executions of one client */
    double code_ms;       /* the user's code's own wall time, summed */
    double *lat;          /* every latency, ms */
    unsigned nlat;        /* filled so far */
    unsigned long faults; /* job page faults, summed */
    unsigned long prep;   /* of those, taken before the code arrived */
    unsigned long failed; /* executions that did not end "ok" */
    pthread_mutex_t lock;
};

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void *client(void *arg)
{
    struct bench *b = arg;

    for (unsigned i = 0; i < b->per_client; i++) {
        struct pbx_exec_request req;
        struct pbx_exec_result res;
        struct pbx_error *err = NULL;
        double t0;
        double dt;
        int r;

        pbx_exec_request_init(&req);
        req.code = b->code;
        req.code_len = strlen(b->code);
        t0 = now_ms();
        r = pbx_engine_execute(b->engine, &req, &res, &err);
        dt = now_ms() - t0;
        pthread_mutex_lock(&b->lock);
        if (r < 0) {
            fprintf(stderr, "pybox-bench-engine: %s\n", err ? err->msg : "failed");
            b->failed++;
        } else {
            if (res.status != PBX_STATUS_OK)
                b->failed++;
            b->faults += res.minor_faults;
            b->code_ms += res.duration_ms;
            b->prep += res.prep_faults;
        }
        b->lat[b->nlat++] = dt;
        pthread_mutex_unlock(&b->lock);
        if (r == 0)
            pbx_exec_result_release(&res);
        pbx_error_free(&err);
        if (b->gap_ms > 0)
            nanosleep(&(struct timespec){.tv_sec = b->gap_ms / 1000,
                                         .tv_nsec = (long)(b->gap_ms % 1000) * 1000000L},
                      NULL);
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;

    return (x > y) - (x < y);
}

static double percentile(const double *v, unsigned n, double p)
{
    double k = (double)(n - 1) * p / 100.0;
    unsigned lo = (unsigned)k;
    unsigned hi = lo + 1 < n ? lo + 1 : n - 1;

    return v[lo] + (v[hi] - v[lo]) * (k - (double)lo);
}

static _Noreturn void usage(void)
{
    fprintf(stderr, "usage: pybox-bench-engine [--requests N] [--clients C] "
                    "[--spares MIN:MAX] [--gap MS] [--numpy]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    struct pbx_engine_config cfg;
    struct pbx_pool_stats before;
    struct pbx_pool_stats after;
    struct pbx_error *err = NULL;
    struct bench b;
    pthread_t threads[64];
    unsigned requests = 200;
    unsigned clients = 1;
    unsigned smin = 2;
    unsigned smax = 6;
    double t0;
    double wall;

    if (argc >= 2 && strcmp(argv[1], PBX_ZYGOTE_ARG) == 0)
        pbx_zygote_main(argc, argv);

    memset(&b, 0, sizeof(b));
    b.code = print_code;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--numpy") == 0)
            b.code = numpy_code;
        else if (strcmp(argv[i], "--requests") == 0 && i + 1 < argc)
            requests = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--gap") == 0 && i + 1 < argc)
            b.gap_ms = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--clients") == 0 && i + 1 < argc)
            clients = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--spares") == 0 && i + 1 < argc) {
            if (sscanf(argv[++i], "%u:%u", &smin, &smax) != 2)
                usage();
        } else
            usage();
    }
    if (clients == 0 || clients > 64 || requests < clients)
        usage();

    pbx_engine_config_default(&cfg);
    cfg.preload = true;
    cfg.spares_min = smin;
    cfg.spares_max = smax;
    if (pbx_engine_start(&cfg, &b.engine, &err) < 0) {
        fprintf(stderr, "pybox-bench-engine: %s\n", err->msg);
        pbx_error_free(&err);
        return 1;
    }
    b.per_client = requests / clients;
    b.lat = calloc((size_t)b.per_client * clients, sizeof(double));
    if (b.lat == NULL)
        return 1;
    pthread_mutex_init(&b.lock, NULL);

    /* Warm up: a few executions so that the pool has adapted and caches are hot. */
    {
        struct bench w = b;

        w.per_client = 10;
        w.lat = calloc(10, sizeof(double));
        if (w.lat == NULL)
            return 1;
        client(&w);
        free(w.lat);
    }
    pbx_engine_pool_stats(b.engine, &before);

    t0 = now_ms();
    for (unsigned i = 0; i < clients; i++)
        pthread_create(&threads[i], NULL, client, &b);
    for (unsigned i = 0; i < clients; i++)
        pthread_join(threads[i], NULL);
    wall = now_ms() - t0;
    pbx_engine_pool_stats(b.engine, &after);

    qsort(b.lat, b.nlat, sizeof(double), cmp_double);
    printf("{\"code\": \"%s\", \"clients\": %u, \"executions\": %u, \"failed\": %lu, "
           "\"p50_ms\": %.2f, \"p99_ms\": %.2f, \"per_s\": %.1f, \"code_ms\": %.2f, "
           "\"faults_per_exec\": %.0f, \"prep_faults_per_exec\": %.0f, "
           "\"warm_hits\": %lu, \"forked\": %lu}\n",
           b.code == numpy_code ? "numpy" : "print", clients, b.nlat, b.failed,
           percentile(b.lat, b.nlat, 50), percentile(b.lat, b.nlat, 99),
           (double)b.nlat * 1e3 / wall, b.code_ms / b.nlat, (double)b.faults / b.nlat,
           (double)b.prep / b.nlat, after.hits - before.hits, after.misses - before.misses);
    pbx_engine_free(b.engine);
    free(b.lat);
    return b.failed ? 1 : 0;
}
