/*
 * What can be done with a caller's sessions, whoever asks: open one, take
 * one, end one, its files, a call's hooks into execute.c's pipeline.  Each
 * operation says a refusal as a struct pbx_refusal (404, 409, 410, 429, ...)
 * instead of answering it, so /v1/sessions (sessions.c) answers it over
 * HTTP and MCP's tools (mcp_backend.c) as a tool's error.  Not an interface
 * for anything outside src/server.
 */
#ifndef PBX_SERVER_SESSION_OPS_H
#define PBX_SERVER_SESSION_OPS_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "server/internal.h"
#include "server/session_table.h"

/* Whose sessions a caller's are: its key's, the admin's, or its address's (`client`). */
void pbx__sessions_owner(const struct pbx_caller *who, const char *client, char *out, size_t len);

/* The message of a NotFound for the session `id`, which the caller has none of. */
const char *pbx__sessions_unknown(const char *id);

/*
 * Whether `id` names another node's session: true with *no filled
 * (MisdirectedRequest, naming the node that has it).
 */
bool pbx__sessions_misdirected(const struct pbx_server *s, const char *id, struct pbx_refusal *no);

/* A session as every answer shows it (a new reference). */
json_t *pbx__sessions_json(const struct session_view *v);

/* The session `e` as it is now (held as a reader: given back here), as a new reference. */
json_t *pbx__sessions_show(struct pbx_server *s, struct session *e);

/*
 * The session `id` of `owner`, taken `how`: 0 with *out, or -1 with *no
 * (NotFound, SessionBusy, or SessionDead with its reason, the entry given
 * back).
 */
int pbx__sessions_take(struct pbx_server *s, const char *id, const char *owner,
                       enum session_take how, struct session **out, struct pbx_refusal *no);

/* The refusal of the ended session `e` (held as `how`: given back here). */
void pbx__sessions_gone(struct pbx_server *s, struct session *e, enum session_take how,
                        struct pbx_refusal *no);

/*
 * The refusal of the engine's error `err` on the session `e` (held as `how`:
 * given back here), by the error table; the session is ended first when the
 * engine says it has.
 */
void pbx__sessions_engine_refusal(struct pbx_server *s, struct session *e, enum session_take how,
                                  const struct pbx_error *err, struct pbx_refusal *no);

/*
 * A span asked (or `dflt`), checked against the caller's most: 0, or -1
 * with the ValidationError's message in `msg`.
 */
int pbx__sessions_span(bool has, uint32_t asked, unsigned dflt, unsigned most, const char *field,
                       uint32_t *out, char *msg, size_t len);

/*
 * Open a session for `who` (its window counted against as `client`'s: the
 * address) as `req` asks (timeout, memory_mb, idle_ttl_s, max_lifetime_s,
 * files): 0 with *out (the session as pbx__sessions_json() shows it), or -1
 * with *no.
 */
int pbx__sessions_open(struct pbx_server *s, const struct pbx_caller *who, const char *client,
                       const struct pbx_http_request *req, json_t **out, struct pbx_refusal *no);

/* End `owner`'s session `id` (one that ended already too): 0, or -1 with *no (NotFound). */
int pbx__sessions_end(struct pbx_server *s, const char *owner, const char *id,
                      struct pbx_refusal *no);

/* Refuse a file path the engine need not see: false with the message in `msg`. */
bool pbx__sessions_path_ok(const char *path, char *msg, size_t len);

/* Whether /work of the engine's session `ps` holds a file at `path`. */
bool pbx__sessions_file_exists(struct pbx_session *ps, const char *path);

/*
 * The hooks of a call of `id` into execute.c's pipeline, for a caller at
 * `client` (its address): claim, run, refusal, answer and release, their
 * arg allocated here and freed by release.
 */
void pbx__sessions_call_hooks(struct pbx_server *s, const char *client, const char *id,
                              struct pbx_execute_hooks *out);

#endif
