/* hcheck.h - active health checks (hcheck.c), run by worker 0 from its own ring. */
#ifndef DP_HCHECK_H
#define DP_HCHECK_H

#include "dataplane/dp.h"

int dp_hcheck_sync(struct dp_worker *w);
void dp_hcheck_run(struct dp_worker *w, uint64_t *next_ms);
/* A probe's connect completed (engine.c routes probes here, not through conn.c). */
void dp_hcheck_done(struct dp_worker *w, struct dp_conn *c, int res);
void dp_hcheck_free(struct dp_worker *w);

#endif
