/* balancer.h - picking a backend: round_robin, least_conn, random_two, maglev. No I/O. */
#ifndef DP_BALANCER_H
#define DP_BALANCER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/config.h"
#include "dataplane/maglev.h"

/* What the balancer needs to know of one backend. */
struct dp_lb_spec {
	unsigned weight; /* >= 1 */
	uint64_t id;     /* stable identity (hash of the address): maglev permutations */
	/*
	 * Optional: the backend's open connections across all workers, read (relaxed) by
	 * least_conn and random_two instead of this balancer's own count.  It outlives any one
	 * balancer, so the load seen does not reset when a reload or apply replaces the set.
	 */
	const atomic_int *load;
};

/* Per-worker balancing state of one backend. */
struct dp_lb_backend {
	unsigned weight;
	int cur;         /* smooth weighted round robin: current weight */
	unsigned active; /* this worker's open connections to it */
	const atomic_int *load; /* see dp_lb_spec.load; NULL = use active */
};

/* Says whether backend idx may take a new connection (health, already tried, ...). */
typedef bool (*dp_lb_usable_fn)(void *ctx, unsigned idx);

/*
 * One balancer per listener per worker: workers never share it, so nothing here is atomic.
 */
struct dp_lb {
	enum lb_algo algo;
	unsigned n;
	struct dp_lb_backend *b;
	uint64_t rng;           /* xorshift64* state, never 0 */
	bool uniform;           /* every weight equal: O(1) round robin and random draws */
	unsigned rr_next;       /* uniform round robin: the next backend in turn */
	unsigned lc_next;       /* least_conn: where the next scan starts, so ties take turns */
	struct dp_maglev maglev; /* LB_ALGO_MAGLEV only */
};

/*
 * 0 or -ENOMEM / -EINVAL (a zero weight).  n may be 0 (a managed listener with no backends):
 * every pick then returns -EHOSTUNREACH.
 */
int dp_lb_init(struct dp_lb *lb, enum lb_algo algo, const struct dp_lb_spec *specs, unsigned n,
	       uint64_t seed);
void dp_lb_fini(struct dp_lb *lb); /* safe on a zeroed or finished dp_lb */

/*
 * Choose a backend for a new connection; key is the client hash (maglev only).
 * usable may be NULL (all usable).  Returns the index, or -EHOSTUNREACH when no backend is
 * usable.  Never loops more than O(n) times.
 */
int dp_lb_pick(struct dp_lb *lb, uint64_t key, dp_lb_usable_fn usable, void *ctx);

/* Connection accounting for least_conn and random_two. */
void dp_lb_conn_start(struct dp_lb *lb, unsigned idx);
void dp_lb_conn_end(struct dp_lb *lb, unsigned idx);

/* 64-bit mix (splitmix64 finaliser), used for ids and keys. */
uint64_t dp_hash64(uint64_t x);

#endif
