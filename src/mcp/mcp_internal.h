/* The MCP module's internals, shared by mcp.c (messages) and tools.c (tools). */
#ifndef PBX_MCP_MCP_INTERNAL_H
#define PBX_MCP_MCP_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/error.h"
#include "mcp/mcp.h"

struct pbx_mcp_cancel {
    pthread_mutex_t lock;  /* guards the rest; held while fn runs */
    bool cancelled;        /* notifications/cancelled came (or the transport closes) */
    void (*fn)(void *arg); /* the backend's hook, or NULL */
    void *arg;             /* its argument */
};

/* A tools/call in flight, in the connection's list from accept to free. */
struct pbx_mcp_call {
    struct pbx_mcp_call *next;    /* the next in m->calls */
    char *key;                    /* the id as compact JSON (the list's key) */
    json_t *id;                   /* the request's id */
    json_t *args;                 /* its arguments (an object) */
    json_t *progress;             /* _meta.progressToken, or NULL */
    int tool;                     /* index in the tool table */
    struct pbx_mcp_cancel cancel; /* its cancel */
    void *ctx; /* the transport's, for the backend (pbx_mcp_call_set_context()) */
};

/* A result's file or output kept for resources/read. */
struct pbx__mcp_resource {
    struct pbx__mcp_resource *next; /* the next newer one */
    char *uri;                      /* pybox://results/N/NAME */
    char *mime;                     /* its MIME type */
    void *data;                     /* its bytes (owned) */
    size_t size;                    /* their number */
};

struct pbx_mcp {
    struct pbx_mcp_backend backend;  /* how to reach pybox */
    struct pbx_mcp_options opts;     /* with the defaults filled in */
    struct pbx_mcp_limits limits;    /* what the backend described */
    json_t *tools;                   /* the tools/list array (immutable after new) */
    pthread_mutex_t lock;            /* guards what follows */
    const char *version;             /* the negotiated protocol version, or NULL */
    bool initialized;                /* notifications/initialized came */
    struct pbx_mcp_call *calls;      /* the calls in flight */
    struct pbx__mcp_resource *store; /* the resources, oldest first */
    size_t store_bytes;              /* their total size */
    uint64_t store_seq;              /* the last number given to a result's URIs */
};

/* The tools/list array for these limits (new reference). */
json_t *pbx__mcp_tools_new(const struct pbx_mcp_limits *limits);

/* The tool's index by name, or -1. */
int pbx__mcp_tool_find(const char *name);

/* The initialize result's instructions (malloc'ed). */
char *pbx__mcp_instructions(const struct pbx_mcp_limits *limits);

/* A JSON-RPC response to `id` (borrowed) holding `result` (stolen); malloc'ed text. */
char *pbx__mcp_result(json_t *id, json_t *result);

/*
 * Keep `size` bytes of `data` (stolen) as a resource named `name`; its URI
 * (malloc'ed), or NULL when it is larger than the whole store.
 */
char *pbx__mcp_store_put(struct pbx_mcp *m, const char *name, const char *mime, void *data,
                         size_t size);

/* Whether the bytes are shown as text: a text MIME type and valid UTF-8 without NUL. */
bool pbx__mcp_is_text(const char *mime, const void *data, size_t size);

#endif
