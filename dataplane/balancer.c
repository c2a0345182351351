/* balancer.c - backend selection: smooth weighted round robin, least_conn, random_two, maglev. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dataplane/balancer.h"

uint64_t dp_hash64(uint64_t x)
{
	/* splitmix64's output for state x: adding the gamma first keeps 0 from hashing to 0. */
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* xorshift64*: a few cycles, and its quality is ample for picking among backends. */
static uint64_t lb_rand(struct dp_lb *lb)
{
	uint64_t x = lb->rng;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	lb->rng = x;
	return x * 0x2545f4914f6cdd1dULL;
}

static bool lb_usable(dp_lb_usable_fn usable, void *ctx, unsigned idx)
{
	return !usable || usable(ctx, idx);
}

static unsigned lb_active(const struct dp_lb_backend *b)
{
	int v;

	if (!b->load)
		return b->active;
	v = atomic_load_explicit(b->load, memory_order_relaxed);
	return v > 0 ? (unsigned)v : 0;
}

/* True when a is less loaded than b: a.active / a.weight < b.active / b.weight, no division. */
static bool lb_less_loaded(const struct dp_lb_backend *a, const struct dp_lb_backend *b)
{
	return (uint64_t)lb_active(a) * b->weight < (uint64_t)lb_active(b) * a->weight;
}

static int lb_build_maglev(struct dp_lb *lb, const struct dp_lb_spec *specs, unsigned n)
{
	unsigned *weights;
	uint64_t *ids;
	unsigned i;
	int ret = -ENOMEM;

	ids = malloc(n * sizeof(*ids));
	weights = malloc(n * sizeof(*weights));
	if (!ids || !weights)
		goto out_free;
	for (i = 0; i < n; i++) {
		ids[i] = specs[i].id;
		weights[i] = specs[i].weight;
	}
	ret = dp_maglev_build(&lb->maglev, ids, weights, n, dp_maglev_size_for(n));
out_free:
	free(weights);
	free(ids);
	return ret;
}

int dp_lb_init(struct dp_lb *lb, enum lb_algo algo, const struct dp_lb_spec *specs, unsigned n,
	       uint64_t seed)
{
	struct dp_lb tmp;
	unsigned i;
	int ret;

	if ((n && !specs) || (unsigned)algo > LB_ALGO_MAGLEV)
		return -EINVAL;
	for (i = 0; i < n; i++)
		if (specs[i].weight == 0)
			return -EINVAL;
	memset(&tmp, 0, sizeof(tmp));
	tmp.algo = algo;
	tmp.n = n;
	tmp.rng = dp_hash64(seed);
	if (!tmp.rng)
		tmp.rng = 1; /* xorshift never leaves 0 */
	/* A listener with no backends: every pick says so, with no table or turn to keep. */
	if (n == 0) {
		*lb = tmp;
		return 0;
	}
	tmp.b = calloc(n, sizeof(*tmp.b));
	if (!tmp.b)
		return -ENOMEM;
	tmp.uniform = true;
	for (i = 0; i < n; i++) {
		tmp.b[i].weight = specs[i].weight;
		tmp.b[i].load = specs[i].load;
		tmp.uniform &= specs[i].weight == specs[0].weight;
	}
	/*
	 * Each balancer (one per worker, a new one per reload) starts its turn at a random
	 * backend: otherwise every worker's first connections after a start or an apply would
	 * all go to the first backend.
	 */
	tmp.rr_next = (unsigned)(lb_rand(&tmp) % n);
	if (algo == LB_ALGO_MAGLEV) {
		ret = lb_build_maglev(&tmp, specs, n);
		if (ret < 0)
			goto out_free_b;
	}
	*lb = tmp;
	return 0;

out_free_b:
	free(tmp.b);
	return ret;
}

void dp_lb_fini(struct dp_lb *lb)
{
	if (!lb)
		return;
	free(lb->b);
	dp_maglev_free(&lb->maglev);
	memset(lb, 0, sizeof(*lb));
}

/*
 * nginx's smooth weighted round robin: every usable backend gains its weight, the richest is
 * picked and pays the total back.  Over a cycle each gets exactly its weight in picks, and the
 * heavy ones are spread out rather than bunched (5:1:1 gives a a b a c a a).
 */
static int lb_pick_rr(struct dp_lb *lb, dp_lb_usable_fn usable, void *ctx)
{
	struct dp_lb_backend *best = NULL;
	int total = 0;
	unsigned i;

	/* Equal weights: the smooth order is a plain rotation, found in O(1) while all is well. */
	if (lb->uniform) {
		for (i = 0; i < lb->n; i++) {
			unsigned idx = lb->rr_next + i < lb->n ? lb->rr_next + i : lb->rr_next + i - lb->n;

			if (lb_usable(usable, ctx, idx)) {
				lb->rr_next = idx + 1 == lb->n ? 0 : idx + 1;
				return (int)idx;
			}
		}
		return -EHOSTUNREACH;
	}
	for (i = 0; i < lb->n; i++) {
		struct dp_lb_backend *b = &lb->b[i];

		if (!lb_usable(usable, ctx, i))
			continue;
		b->cur += (int)b->weight;
		total += (int)b->weight;
		if (!best || b->cur > best->cur)
			best = b;
	}
	if (!best)
		return -EHOSTUNREACH;
	best->cur -= total;
	return (int)(best - lb->b);
}

/*
 * Fewest active connections per unit of weight.  The scan starts where the last pick left
 * off so that equally loaded backends (a fresh start, or short connections) take turns
 * instead of all landing on the first one.
 */
static int lb_pick_least(struct dp_lb *lb, dp_lb_usable_fn usable, void *ctx)
{
	int best = -1;
	unsigned i, idx;

	for (i = 0; i < lb->n; i++) {
		idx = lb->lc_next + i;
		if (idx >= lb->n)
			idx -= lb->n;
		if (!lb_usable(usable, ctx, idx))
			continue;
		if (best < 0 || lb_less_loaded(&lb->b[idx], &lb->b[best]))
			best = (int)idx;
	}
	if (best < 0)
		return -EHOSTUNREACH;
	lb->lc_next = (unsigned)best + 1 == lb->n ? 0 : (unsigned)best + 1;
	return best;
}

/*
 * One weighted draw among the usable backends other than skip, in a single pass (weighted
 * reservoir sampling: keep backend i with probability w_i / (sum of weights so far)).  One
 * pass and no totals computed beforehand, so a usable() whose answer changes under us (health
 * flipped by another worker) can never leave the draw pointing past the end.
 */
#define DP_LB_DRAW_TRIES 4

static int lb_draw(struct dp_lb *lb, dp_lb_usable_fn usable, void *ctx, int skip)
{
	uint64_t total = 0;
	int chosen = -1;
	unsigned i;

	/* Equal weights: a few direct draws, the full pass only when they keep finding no one. */
	for (i = 0; lb->uniform && i < DP_LB_DRAW_TRIES; i++) {
		unsigned idx = (unsigned)(lb_rand(lb) % lb->n);

		if ((int)idx != skip && lb_usable(usable, ctx, idx))
			return (int)idx;
	}
	for (i = 0; i < lb->n; i++) {
		if ((int)i == skip || !lb_usable(usable, ctx, i))
			continue;
		total += lb->b[i].weight;
		if (lb_rand(lb) % total < lb->b[i].weight)
			chosen = (int)i;
	}
	return chosen;
}

/* Power of two choices (Mitzenmacher): two distinct weighted draws, keep the less loaded. */
static int lb_pick_two(struct dp_lb *lb, dp_lb_usable_fn usable, void *ctx)
{
	int a, b;

	a = lb_draw(lb, usable, ctx, -1);
	if (a < 0)
		return -EHOSTUNREACH;
	b = lb_draw(lb, usable, ctx, a);
	if (b < 0)
		return a;
	return lb_less_loaded(&lb->b[b], &lb->b[a]) ? b : a;
}

/*
 * The key's table entry, or when that backend is unusable the next entries in table order.
 * Every key that hashed to the same entry walks the same way, so failover is consistent too.
 * The walk runs only after one O(n) scan has found a usable backend; it is bounded by m anyway
 * in case usable() changes its mind meanwhile.
 */
static int lb_pick_maglev(struct dp_lb *lb, uint64_t key, dp_lb_usable_fn usable, void *ctx)
{
	const struct dp_maglev *mg = &lb->maglev;
	uint32_t pos = (uint32_t)(key % mg->m);
	uint32_t j;
	unsigned i;

	if (lb_usable(usable, ctx, mg->table[pos]))
		return (int)mg->table[pos];
	for (i = 0; i < lb->n; i++)
		if (lb_usable(usable, ctx, i))
			break;
	if (i == lb->n)
		return -EHOSTUNREACH;
	for (j = 1; j < mg->m; j++) {
		if (++pos == mg->m)
			pos = 0;
		if (lb_usable(usable, ctx, mg->table[pos]))
			return (int)mg->table[pos];
	}
	return -EHOSTUNREACH;
}

int dp_lb_pick(struct dp_lb *lb, uint64_t key, dp_lb_usable_fn usable, void *ctx)
{
	if (lb->n == 0) /* no backends, or zeroed or finished */
		return -EHOSTUNREACH;
	switch (lb->algo) {
	case LB_ALGO_ROUND_ROBIN:
		return lb_pick_rr(lb, usable, ctx);
	case LB_ALGO_LEAST_CONN:
		return lb_pick_least(lb, usable, ctx);
	case LB_ALGO_RANDOM_TWO:
		return lb_pick_two(lb, usable, ctx);
	case LB_ALGO_MAGLEV:
		return lb_pick_maglev(lb, key, usable, ctx);
	}
	return -EINVAL;
}

void dp_lb_conn_start(struct dp_lb *lb, unsigned idx)
{
	if (idx < lb->n)
		lb->b[idx].active++;
}

void dp_lb_conn_end(struct dp_lb *lb, unsigned idx)
{
	/* A stray end must not wrap active to 4 billion and starve the backend forever. */
	if (idx < lb->n && lb->b[idx].active > 0)
		lb->b[idx].active--;
}
