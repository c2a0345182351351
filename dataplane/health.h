/* health.h - backend health: the active-check rise/fall machine and passive failure counting. */
#ifndef DP_HEALTH_H
#define DP_HEALTH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/config.h"

/*
 * Active checks (HAProxy's rise/fall): a backend goes down after `fall` consecutive failed
 * checks and comes back after `rise` consecutive good ones.  Owned by the one worker that runs
 * the checks; the result is published through dp_bstate.check_up.
 */
struct dp_health {
	bool up;
	unsigned ok_streak;
	unsigned fail_streak;
};

void dp_health_init(struct dp_health *h, bool up);
/* Record one check result.  Returns true when h->up changed. */
bool dp_health_report(struct dp_health *h, const struct lb_health_conf *conf, bool ok);

enum dp_connect_error {
	DP_CERR_REFUSED = 0,
	DP_CERR_TIMEOUT,
	DP_CERR_UNREACHABLE,
	DP_CERR_OTHER,
	DP_CERR_N,
};

/*
 * Shared state of one backend, read and written by every worker without locks.  Passive
 * health: max_fails consecutive connect failures (from any worker) take the backend out for
 * fail_timeout_ms, doubled on each trip without a success in between (at most 16x); after the
 * backoff it is usable again, and one more failure takes it straight back out.
 */
struct dp_bstate {
	atomic_uint fails;          /* consecutive connect failures */
	atomic_uint trips;          /* times taken out since the last success */
	atomic_uint_fast64_t down_until_ms;
	atomic_bool check_up;       /* last active-check verdict (true without checks) */
	atomic_uint refs;           /* snapshots that use this state */
	/* Counters for status and metrics. */
	atomic_uint_fast64_t conns_total;
	atomic_uint_fast64_t connect_failures;
	atomic_uint_fast64_t connect_errors[DP_CERR_N]; /* by kind, enum dp_connect_error */
	atomic_uint_fast64_t bytes_in;  /* client to backend, added as each connection ends */
	atomic_uint_fast64_t bytes_out; /* backend to client */
	atomic_int active;          /* open connections, all workers */
	/* The newest snapshot generation listing this backend: older means it was removed. */
	atomic_uint_fast64_t generation;
	/* Active-check machine: touched only by the worker that runs the checks. */
	struct dp_health check;
	unsigned hc_idx;            /* ... and its index in that worker's target list */
};

void dp_bstate_init(struct dp_bstate *b);
bool dp_bstate_usable(struct dp_bstate *b, uint64_t now_ms);
/* Record a connect outcome.  Returns true when this failure just took the backend out. */
bool dp_bstate_report(struct dp_bstate *b, bool ok, unsigned max_fails, unsigned fail_timeout_ms,
		      uint64_t now_ms);

#endif
