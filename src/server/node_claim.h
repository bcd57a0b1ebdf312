/*
 * A node's claim on its id in the store (pybox serve --node-id): taken at
 * start, before the server listens, renewed by a thread of its own every
 * third of its TTL, given back at a clean exit.  Not an interface for
 * anything outside src/server.
 */
#ifndef PBX_SERVER_NODE_CLAIM_H
#define PBX_SERVER_NODE_CLAIM_H

#include <stdint.h>

#include "common/error.h"
#include "store/store.h"

struct node_claim;

/*
 * Claim `node` in `store` (neither is taken over; both outlive the claim)
 * for `ttl_s` seconds past each renewal, and start renewing it.  Another
 * server holding the id: wait, polling, for its claim to lapse, up to its
 * TTL and a second, and fail (PBX_E_BUSY, a one-line message naming the holder)
 * as soon as the holder is seen renewing it, or at the end of the wait.  A
 * store that cannot tell (it does not answer): 0 all the same, the failure
 * logged, the claim tried again at each renewal.  *out: free with
 * pbx__node_claim_free().
 */
int pbx__node_claim_start(struct pbx_store *store, const char *node, unsigned ttl_s,
                          struct node_claim **out, struct pbx_error **err);

/* Renewals that found the id held by another server, since the start. */
uint64_t pbx__node_claim_conflicts(const struct node_claim *nc);

/* Stop renewing, give the claim back (if it is still this server's), free.  NULL is fine. */
void pbx__node_claim_free(struct node_claim *nc);

#endif
