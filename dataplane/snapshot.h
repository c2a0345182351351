/*
 * snapshot.h - immutable snapshots of the configuration (snapshot.c) as the workers run them,
 * with their listening sockets and backend states.
 */
#ifndef DP_SNAPSHOT_H
#define DP_SNAPSHOT_H

#include "dataplane/dp.h"
#include "dataplane/listen.h"

int dp_snapshot_build(struct lb_config *conf, const struct dp_snapshot *old,
		      struct dp_lsocks_pool *pool, unsigned n_workers, uint64_t generation,
		      struct dp_snapshot **ret, char *err, size_t errlen);
/* An lsocks over n listening sockets taken over (owned by it from now on, also on failure). */
int dp_lsocks_adopt(const struct lb_addr *a, enum lb_protocol proto, const int *fds, unsigned n,
		    struct dp_lsocks **ret);
void dp_lsocks_pool_clear(struct dp_lsocks_pool *pool);
void dp_snapshot_get(struct dp_snapshot *s);
void dp_snapshot_publish(struct dp_snapshot *s);
extern atomic_uint_fast64_t dp_generation_published;
void dp_snapshot_put(struct dp_snapshot *s);
void dp_lsocks_put(struct dp_lsocks *ls);
void dp_bstate_put(struct dp_bstate *b);

#endif
