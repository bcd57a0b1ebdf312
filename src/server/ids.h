/*
 * The ids the server makes for what lives in one node's memory, sessions
 * (`ses_`) and MCP sessions (`mcp_`): the one place of their format.  An id
 * is its kind, then the node's id and `_` when the node has one (pybox serve
 * --node-id), then 128 random bits in lowercase hex, so that a proxy routes
 * it to its node without shared state: `ses_n2_9f0c...` or `ses_9f0c...`.
 */
#ifndef PBX_SERVER_IDS_H
#define PBX_SERVER_IDS_H

#include <stdbool.h>
#include <stddef.h>

#include "server/server.h"

#define PBX_NODE_ID_MAX PBX_SERVER_NODE_ID_MAX
#define PBX_ID_HEX      32                                     /* the random part's hex digits */
#define PBX_ID_MAX      (4 + PBX_NODE_ID_MAX + 1 + PBX_ID_HEX) /* "ses_" node "_" hex */

/*
 * A new id of `kind` ("ses" or "mcp") on the node `node` (NULL or "": none)
 * in `out` (at least PBX_ID_MAX + 1 bytes), from libsodium's randombytes.
 */
void pbx__id_make(const char *kind, const char *node, char *out, size_t len);

/*
 * Whether `id` is well-formed as an id of `kind`; if so the node it names
 * is in `node` ("" for none).  Any bytes may come in: from a client.
 */
bool pbx__id_parse(const char *kind, const char *id, char node[PBX_NODE_ID_MAX + 1]);

/*
 * Whether `id` is a well-formed id of `kind` that names a node other than
 * `self` (NULL: this node has no id): *its* node in `node`.
 */
bool pbx__id_elsewhere(const char *kind, const char *id, const char *self,
                       char node[PBX_NODE_ID_MAX + 1]);

#endif
