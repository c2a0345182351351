/*
 * conn.h - the connection state machine (conn.c): a proxied connection from its accept to its
 * close, driven by the engine's completions (engine.c); health probes borrow its slots.
 */
#ifndef DP_CONN_H
#define DP_CONN_H

#include "dataplane/dp.h"

/* A client fd a worker admitted on set (counted in its listener's active connections). */
void dp_conn_accepted(struct dp_worker *w, struct dp_lset *set, int fd);
void dp_conn_connected(struct dp_worker *w, struct dp_conn *c, int res);
void dp_conn_received(struct dp_worker *w, struct dp_conn *c, int h, int res, int bid, bool more);
void dp_conn_sent(struct dp_worker *w, struct dp_conn *c, int h, int res);
void dp_conn_put(struct dp_worker *w, struct dp_conn *c);
void dp_conn_close(struct dp_worker *w, struct dp_conn *c);
void dp_conn_abort(struct dp_worker *w, struct dp_conn *c);
struct dp_conn *dp_conn_get(struct dp_worker *w, uint32_t slot, uint32_t gen);
struct dp_conn *dp_conn_alloc(struct dp_worker *w);
void dp_conn_expire_idle(struct dp_worker *w, struct dp_lset *set, uint64_t *next_ms);
void dp_conn_retry_nobuf(struct dp_worker *w);
void dp_conn_release_held(struct dp_worker *w);
unsigned dp_conn_evict_stalled(struct dp_worker *w, unsigned stalled_ms);
void dp_conn_relieved(struct dp_worker *w);
void dp_conn_slab_free(struct dp_worker *w);

#endif
