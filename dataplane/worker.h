/* worker.h - one worker thread (worker.c): its listeners, balancer sets, timers and drain. */
#ifndef DP_WORKER_H
#define DP_WORKER_H

#include <time.h>

#include "dataplane/dp.h"

/* The dataplane's clock, in ms: every thread's timers and deadlines. */
static inline uint64_t dp_now_ms(void)
{
	struct timespec ts;

	/* Coarse: a few ms of precision is plenty for timeouts and costs no vDSO read of the TSC. */
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int dp_worker_start(struct dp_worker *w);
/* A client accepted on wl: admitted (max_connections) and handed to conn.c, or closed. */
void dp_worker_accept(struct dp_worker *w, struct dp_wlistener *wl, int fd);
void dp_worker_accept_ended(struct dp_worker *w, struct dp_wlistener *wl, int err);
/* A udp listener's datagram receive ended (err: its last result): again, later, or done. */
void dp_worker_dgram_ended(struct dp_worker *w, struct dp_wlistener *wl, int err);
void dp_worker_wake(struct dp_worker *w);
void dp_worker_woken(struct dp_worker *w);

#endif
