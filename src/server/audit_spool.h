/*
 * The audit log as a node writes it: each record to the store, and while the
 * store fails, to a spool in the node's memory (at most AUDIT_SPOOL_MAX
 * records, the oldest dropped first and counted), written out in order as
 * soon as a write succeeds again, and once more at shutdown.  Not an
 * interface for anything outside src/server.
 */
#ifndef PBX_SERVER_AUDIT_SPOOL_H
#define PBX_SERVER_AUDIT_SPOOL_H

#include <stdint.h>

#include "store/store.h"

#define AUDIT_SPOOL_MAX 10000u /* records kept while the store fails */

struct audit_spool;

struct audit_spool *pbx__audit_spool_new(void);

/* Write out what is spooled (one try; what fails stays), then free the spool. */
void pbx__audit_spool_free(struct audit_spool *sp, struct pbx_store *store);

/* Write `rec` (copied when spooled): the spooled records first, in order, then it. */
void pbx__audit_spool_write(struct audit_spool *sp, struct pbx_store *store,
                            const struct pbx_audit *rec);

/* Records spooled now, and dropped so far (the spool was full). */
void pbx__audit_spool_counts(struct audit_spool *sp, uint64_t *spooled, uint64_t *dropped);

#endif
