/*
 * What the two files of /mcp share: the transport (mcp_http.c) and the
 * backend it gives src/mcp/ (mcp_backend.c), which reaches the server's own
 * pipeline.  Not an interface for anything outside src/server.
 */
#ifndef PBX_SERVER_MCP_SERVER_H
#define PBX_SERVER_MCP_SERVER_H

#include "mcp/mcp.h"
#include "server/internal.h"

/*
 * Who asks for a tools/call, as the transport resolved it for the request
 * that carried it: each backend function's `ctx`.
 */
struct mcp_asker {
    struct pbx_server *s;         /* the server */
    const struct pbx_caller *who; /* the caller (the request's, borrowed) */
    const char *client;           /* its address */
    const char *request_id;       /* the HTTP request's id (X-Request-Id) */
};

/* The backend's own state for one MCP session: what it opened, to end with it. */
struct mcp_link;

/*
 * A backend for one MCP session of the caller `who` (described by its
 * policy: read by pbx_mcp_new(), not kept).
 */
struct mcp_link *pbx__mcp_link_new(struct pbx_server *s, const struct pbx_caller *who,
                                   const char *client);

/* The backend (its arg is `link`). */
struct pbx_mcp_backend pbx__mcp_link_backend(struct mcp_link *link);

/* End every session the MCP session opened and free it (no call may run). */
void pbx__mcp_link_free(struct mcp_link *link);

#endif
