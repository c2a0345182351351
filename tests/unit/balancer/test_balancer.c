/* test_balancer.c - dp_lb_pick for each algorithm: proportions, skipping, load, failover. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "dataplane/balancer.h"

#define MAX_B 16

/* Test ctx for usable(): down[i] takes backend i out. */
struct avail {
	bool down[MAX_B];
	unsigned calls;
};

static bool avail_usable(void *ctx, unsigned idx)
{
	struct avail *a = ctx;

	a->calls++;
	return !a->down[idx];
}

static void lb_setup(struct dp_lb *lb, enum lb_algo algo, const unsigned *weights, unsigned n)
{
	struct dp_lb_spec specs[MAX_B] = { 0 };
	unsigned i;

	for (i = 0; i < n; i++) {
		specs[i].weight = weights[i];
		specs[i].id = dp_hash64(1000 + i);
	}
	assert_int_equal(dp_lb_init(lb, algo, specs, n, 42), 0);
}

/* Pick `picks` times, counting per backend; conn_start on each pick when `track`. */
static void pick_count(struct dp_lb *lb, unsigned picks, struct avail *a, bool track,
		       unsigned *counts)
{
	unsigned i;
	int r;

	memset(counts, 0, sizeof(*counts) * lb->n);
	for (i = 0; i < picks; i++) {
		r = dp_lb_pick(lb, dp_hash64(i), a ? avail_usable : NULL, a);
		assert_true(r >= 0 && (unsigned)r < lb->n);
		counts[r]++;
		if (track)
			dp_lb_conn_start(lb, (unsigned)r);
	}
}

static void test_init_invalid(void **state)
{
	struct dp_lb_spec specs[2] = { { .weight = 1, .id = 1 }, { .weight = 0, .id = 2 } };
	struct dp_lb lb;

	memset(&lb, 0, sizeof(lb));
	assert_int_equal(dp_lb_init(&lb, LB_ALGO_ROUND_ROBIN, NULL, 1, 1), -EINVAL);
	assert_int_equal(dp_lb_init(&lb, LB_ALGO_ROUND_ROBIN, specs, 2, 1), -EINVAL);
	assert_int_equal(dp_lb_init(&lb, (enum lb_algo)99, specs, 1, 1), -EINVAL);
	assert_null(lb.b);
	/* fini on a zeroed balancer, twice, and a pick on it, are all harmless. */
	dp_lb_fini(&lb);
	dp_lb_fini(&lb);
	assert_int_equal(dp_lb_pick(&lb, 0, NULL, NULL), -EHOSTUNREACH);
}

/*
 * A managed listener may have no backends (a Service with no ready endpoints): every
 * algorithm builds an empty balancer (maglev without a table) whose picks all fail, whatever
 * the key or seed, and whose accounting calls are harmless.
 */
static void test_no_backends(void **state)
{
	static const enum lb_algo algos[] = { LB_ALGO_ROUND_ROBIN, LB_ALGO_LEAST_CONN,
					      LB_ALGO_RANDOM_TWO, LB_ALGO_MAGLEV };
	struct avail a = { 0 };

	for (size_t i = 0; i < sizeof(algos) / sizeof(algos[0]); i++) {
		for (uint64_t seed = 0; seed < 8; seed++) {
			struct dp_lb lb;

			memset(&lb, 0xa5, sizeof(lb)); /* whatever was there is overwritten */
			assert_int_equal(dp_lb_init(&lb, algos[i], NULL, 0, seed), 0);
			assert_int_equal(lb.n, 0);
			assert_null(lb.b);
			assert_null(lb.maglev.table);
			for (uint64_t key = 0; key < 16; key++) {
				assert_int_equal(dp_lb_pick(&lb, dp_hash64(key), NULL, NULL),
						 -EHOSTUNREACH);
				assert_int_equal(dp_lb_pick(&lb, key, avail_usable, &a),
						 -EHOSTUNREACH);
			}
			dp_lb_conn_start(&lb, 0);
			dp_lb_conn_end(&lb, 0);
			dp_lb_fini(&lb);
			assert_int_equal(lb.n, 0);
		}
	}
	assert_int_equal(a.calls, 0); /* nothing to ask about */
}

static void test_rr_equal(void **state)
{
	const unsigned w[] = { 1, 1, 1 };
	unsigned counts[3];
	struct dp_lb lb;

	lb_setup(&lb, LB_ALGO_ROUND_ROBIN, w, 3);
	pick_count(&lb, 300, NULL, false, counts);
	assert_int_equal(counts[0], 100);
	assert_int_equal(counts[1], 100);
	assert_int_equal(counts[2], 100);
	dp_lb_fini(&lb);
}

/*
 * Equal weights: a strict rotation (each backend once per n picks, in order, skipping the
 * unusable), starting at a point that depends on the seed, so that balancers of different
 * workers do not all begin with the first backend.
 */
static void test_rr_uniform_rotation(void **state)
{
	struct dp_lb_spec specs[8] = { 0 };
	struct avail a = { 0 };
	bool starts[8] = { false };
	unsigned i, n_starts = 0;
	struct dp_lb lb;
	int first, r;

	for (i = 0; i < 8; i++)
		specs[i].weight = 3;
	for (uint64_t seed = 0; seed < 64; seed++) {
		assert_int_equal(dp_lb_init(&lb, LB_ALGO_ROUND_ROBIN, specs, 8, seed), 0);
		first = dp_lb_pick(&lb, 0, NULL, NULL);
		for (i = 1; i < 24; i++)
			assert_int_equal(dp_lb_pick(&lb, 0, NULL, NULL), (first + (int)i) % 8);
		n_starts += !starts[first];
		starts[first] = true;
		dp_lb_fini(&lb);
	}
	assert_true(n_starts >= 4);
	assert_int_equal(dp_lb_init(&lb, LB_ALGO_ROUND_ROBIN, specs, 8, 7), 0);
	a.down[2] = a.down[3] = true;
	for (i = 0; i < 60; i++) {
		r = dp_lb_pick(&lb, 0, avail_usable, &a);
		assert_true(r != 2 && r != 3);
		if (i) /* the next usable one after the last */
			assert_int_equal(r, first == 1 ? 4 : (first + 1) % 8);
		first = r;
	}
	memset(a.down, 1, sizeof(a.down));
	assert_int_equal(dp_lb_pick(&lb, 0, avail_usable, &a), -EHOSTUNREACH);
	dp_lb_fini(&lb);
}

static void test_rr_smooth_weighted(void **state)
{
	const unsigned w[] = { 5, 1, 1 };
	const int expect[7] = { 0, 0, 1, 0, 2, 0, 0 };
	unsigned cycle, i, counts[3];
	int prev = -1, r;
	struct dp_lb lb;

	lb_setup(&lb, LB_ALGO_ROUND_ROBIN, w, 3);
	for (cycle = 0; cycle < 20; cycle++) {
		memset(counts, 0, sizeof(counts));
		for (i = 0; i < 7; i++) {
			r = dp_lb_pick(&lb, 0, NULL, NULL);
			assert_int_equal(r, expect[i]);
			/* Smooth: a weight-1 backend never gets two in a row. */
			assert_false(r != 0 && r == prev);
			counts[r]++;
			prev = r;
		}
		assert_int_equal(counts[0], 5);
		assert_int_equal(counts[1], 1);
		assert_int_equal(counts[2], 1);
	}
	dp_lb_fini(&lb);
}

static void test_rr_skips_unusable(void **state)
{
	const unsigned w[] = { 2, 1, 1 };
	struct avail a = { 0 };
	unsigned counts[3];
	struct dp_lb lb;

	lb_setup(&lb, LB_ALGO_ROUND_ROBIN, w, 3);
	a.down[0] = true;
	pick_count(&lb, 200, &a, false, counts);
	assert_int_equal(counts[0], 0);
	assert_int_equal(counts[1], 100);
	assert_int_equal(counts[2], 100);
	/* Back in: the 2:1:1 split resumes. */
	a.down[0] = false;
	pick_count(&lb, 400, &a, false, counts);
	assert_int_equal(counts[0], 200);
	assert_int_equal(counts[1], 100);
	assert_int_equal(counts[2], 100);
	dp_lb_fini(&lb);
}

static void test_none_usable(void **state)
{
	const enum lb_algo algos[] = { LB_ALGO_ROUND_ROBIN, LB_ALGO_LEAST_CONN, LB_ALGO_RANDOM_TWO,
				       LB_ALGO_MAGLEV };
	const unsigned w[] = { 1, 3, 2, 1 };
	struct avail a;
	struct dp_lb lb;
	unsigned i;

	for (i = 0; i < sizeof(algos) / sizeof(algos[0]); i++) {
		memset(&a, 0, sizeof(a));
		memset(a.down, 1, sizeof(a.down));
		lb_setup(&lb, algos[i], w, 4);
		assert_int_equal(dp_lb_pick(&lb, 12345, avail_usable, &a), -EHOSTUNREACH);
		/* Bounded work: O(n) calls, not a walk of the whole maglev table. */
		assert_true(a.calls <= 3 * 4 + 1);
		dp_lb_fini(&lb);
	}
}

static void test_least_conn_picks_least(void **state)
{
	const unsigned w[] = { 1, 1, 1 };
	struct dp_lb lb;
	unsigned i;

	lb_setup(&lb, LB_ALGO_LEAST_CONN, w, 3);
	for (i = 0; i < 3; i++)
		dp_lb_conn_start(&lb, 0);
	dp_lb_conn_start(&lb, 1);
	dp_lb_conn_start(&lb, 2);
	dp_lb_conn_start(&lb, 2);
	assert_int_equal(dp_lb_pick(&lb, 0, NULL, NULL), 1); /* 3 1 2 */
	dp_lb_conn_start(&lb, 1);
	dp_lb_conn_start(&lb, 1);
	assert_int_equal(dp_lb_pick(&lb, 0, NULL, NULL), 2); /* 3 3 2 */
	dp_lb_conn_end(&lb, 0);
	dp_lb_conn_end(&lb, 0);
	assert_int_equal(dp_lb_pick(&lb, 0, NULL, NULL), 0); /* 1 3 2 */
	/* A stray end must not wrap. */
	for (i = 0; i < 5; i++)
		dp_lb_conn_end(&lb, 0);
	assert_int_equal(lb.b[0].active, 0);
	dp_lb_conn_end(&lb, 99); /* out of range: ignored */
	dp_lb_fini(&lb);
}

/*
 * With a shared load source the balancer follows it, not its own counts: the load other
 * workers (or connections of a replaced set) put on a backend is seen.
 */
static void test_least_conn_shared_load(void **state)
{
	atomic_int load[3];
	struct dp_lb_spec specs[3];
	struct dp_lb lb;

	for (int i = 0; i < 3; i++) {
		atomic_init(&load[i], 0);
		specs[i] = (struct dp_lb_spec){ .weight = 1, .id = (uint64_t)i + 1, .load = &load[i] };
	}
	assert_int_equal(dp_lb_init(&lb, LB_ALGO_LEAST_CONN, specs, 3, 7), 0);
	atomic_store(&load[0], 5);
	atomic_store(&load[1], 2);
	atomic_store(&load[2], 4);
	/* Its own counts say 0 0 0 (a tie); the shared ones say backend 1. */
	assert_int_equal(dp_lb_pick(&lb, 0, NULL, NULL), 1);
	dp_lb_conn_start(&lb, 1);
	assert_int_equal(dp_lb_pick(&lb, 0, NULL, NULL), 1);
	atomic_store(&load[1], 9);
	assert_int_equal(dp_lb_pick(&lb, 0, NULL, NULL), 2);
	dp_lb_fini(&lb);

	assert_int_equal(dp_lb_init(&lb, LB_ALGO_RANDOM_TWO, specs, 3, 7), 0);
	atomic_store(&load[0], 0);
	for (int i = 0; i < 200; i++) /* 0 vs 9 vs 4: the most loaded never wins a pair */
		assert_int_not_equal(dp_lb_pick(&lb, (uint64_t)i, NULL, NULL), 1);
	dp_lb_fini(&lb);
}

static void test_least_conn_weighted(void **state)
{
	const unsigned w[] = { 3, 1 };
	unsigned counts[2];
	struct dp_lb lb;

	lb_setup(&lb, LB_ALGO_LEAST_CONN, w, 2);
	/* 2/3 < 1/1: the heavier one is less loaded relative to its weight. */
	dp_lb_conn_start(&lb, 0);
	dp_lb_conn_start(&lb, 0);
	dp_lb_conn_start(&lb, 1);
	assert_int_equal(dp_lb_pick(&lb, 0, NULL, NULL), 0);
	dp_lb_fini(&lb);

	/* Long-lived connections fill the backends 3:1. */
	lb_setup(&lb, LB_ALGO_LEAST_CONN, w, 2);
	pick_count(&lb, 400, NULL, true, counts);
	assert_int_equal(counts[0], 300);
	assert_int_equal(counts[1], 100);
	dp_lb_fini(&lb);
}

static void test_least_conn_ties_rotate(void **state)
{
	const unsigned w[] = { 1, 1, 1, 1 };
	struct avail a = { 0 };
	unsigned i, counts[4];
	struct dp_lb lb;

	lb_setup(&lb, LB_ALGO_LEAST_CONN, w, 4);
	/* Short connections: active stays 0, so every pick is a four-way tie. */
	for (i = 0; i < 12; i++)
		assert_int_equal(dp_lb_pick(&lb, 0, NULL, NULL), (int)(i % 4));
	a.down[2] = true;
	pick_count(&lb, 300, &a, false, counts);
	assert_int_equal(counts[0], 100);
	assert_int_equal(counts[1], 100);
	assert_int_equal(counts[2], 0);
	assert_int_equal(counts[3], 100);
	dp_lb_fini(&lb);
}

static void test_random_two_weighted(void **state)
{
	const unsigned w[] = { 1, 2, 1 };
	const unsigned picks = 100000;
	unsigned counts[3];
	struct dp_lb lb;

	/* No load recorded: every pair ties and the first (weighted) draw decides. */
	lb_setup(&lb, LB_ALGO_RANDOM_TWO, w, 3);
	pick_count(&lb, picks, NULL, false, counts);
	assert_in_range(counts[0], 24000, 26000);
	assert_in_range(counts[1], 49000, 51000);
	assert_in_range(counts[2], 24000, 26000);
	dp_lb_fini(&lb);
}

/* Equal weights take the direct draws: still even, and never an unusable backend. */
static void test_random_two_uniform(void **state)
{
	const unsigned w[] = { 2, 2, 2, 2, 2 };
	const unsigned picks = 50000;
	struct avail a = { 0 };
	unsigned counts[5];
	struct dp_lb lb;

	lb_setup(&lb, LB_ALGO_RANDOM_TWO, w, 5);
	a.down[1] = true;
	pick_count(&lb, picks, &a, false, counts);
	assert_int_equal(counts[1], 0);
	for (unsigned i = 0; i < 5; i++)
		if (i != 1)
			assert_in_range(counts[i], picks / 4 - 1000, picks / 4 + 1000);
	/* Only one usable: the second draw finds no other and the first stands. */
	memset(a.down, 1, sizeof(a.down));
	a.down[3] = false;
	assert_int_equal(dp_lb_pick(&lb, 0, avail_usable, &a), 3);
	dp_lb_fini(&lb);
}

static void test_random_two_prefers_less_loaded(void **state)
{
	const unsigned w[] = { 1, 1, 1, 1 };
	const unsigned load[] = { 0, 10, 20, 30 };
	const unsigned picks = 60000;
	unsigned i, j, counts[4];
	struct dp_lb lb;

	lb_setup(&lb, LB_ALGO_RANDOM_TWO, w, 4);
	for (i = 0; i < 4; i++)
		for (j = 0; j < load[i]; j++)
			dp_lb_conn_start(&lb, i);
	pick_count(&lb, picks, NULL, false, counts);
	/*
	 * Two distinct uniform draws out of 4, less loaded wins: backend 0 wins every pair it is
	 * in (1/2), 1 wins {1,2} and {1,3} (1/3), 2 wins {2,3} (1/6), 3 never.
	 */
	assert_in_range(counts[0], 29000, 31000);
	assert_in_range(counts[1], 19000, 21000);
	assert_in_range(counts[2], 9000, 11000);
	assert_int_equal(counts[3], 0);
	dp_lb_fini(&lb);
}

static void test_random_two_skips_unusable(void **state)
{
	const unsigned w[] = { 1, 4, 1, 1 };
	struct avail a = { 0 };
	unsigned counts[4];
	struct dp_lb lb;

	lb_setup(&lb, LB_ALGO_RANDOM_TWO, w, 4);
	a.down[1] = true;
	pick_count(&lb, 30000, &a, true, counts);
	assert_int_equal(counts[1], 0);
	/* With load tracked, two choices keep the three usable ones close to even. */
	assert_in_range(counts[0], 9950, 10050);
	assert_in_range(counts[2], 9950, 10050);
	assert_in_range(counts[3], 9950, 10050);
	/* A single usable backend is always the answer. */
	a.down[0] = a.down[2] = true;
	pick_count(&lb, 100, &a, false, counts);
	assert_int_equal(counts[3], 100);
	dp_lb_fini(&lb);
}

static void test_maglev_pick_matches_table(void **state)
{
	const unsigned w[] = { 1, 1, 1, 1, 1 };
	struct dp_lb lb;
	uint64_t k;

	lb_setup(&lb, LB_ALGO_MAGLEV, w, 5);
	assert_int_equal(lb.maglev.m, dp_maglev_size_for(5));
	for (k = 0; k < 10000; k++)
		assert_int_equal(dp_lb_pick(&lb, dp_hash64(k), NULL, NULL),
				 dp_maglev_lookup(&lb.maglev, dp_hash64(k)));
	dp_lb_fini(&lb);
}

/* The first usable backend at or after the key's entry, walking the table by hand. */
static int walk_expect(const struct dp_maglev *mg, uint64_t key, const struct avail *a)
{
	uint32_t pos = (uint32_t)(key % mg->m);

	while (a->down[mg->table[pos]])
		pos = (pos + 1) % mg->m;
	return (int)mg->table[pos];
}

static void test_maglev_failover(void **state)
{
	const unsigned w[] = { 1, 1, 1, 1, 1, 1 };
	struct avail a = { 0 };
	struct dp_lb lb, lb2;
	unsigned moved = 0;
	uint64_t k, key;
	int r;

	lb_setup(&lb, LB_ALGO_MAGLEV, w, 6);
	lb_setup(&lb2, LB_ALGO_MAGLEV, w, 6);
	a.down[2] = a.down[3] = true;
	for (k = 0; k < 20000; k++) {
		key = dp_hash64(k);
		r = dp_lb_pick(&lb, key, avail_usable, &a);
		assert_true(r >= 0 && r != 2 && r != 3);
		assert_int_equal(r, walk_expect(&lb.maglev, key, &a));
		/* Another worker with its own table sends the key to the same place. */
		assert_int_equal(r, dp_lb_pick(&lb2, key, avail_usable, &a));
		/* A key moves only when its own backend is the dead one. */
		if (r != (int)dp_maglev_lookup(&lb.maglev, key)) {
			assert_true(a.down[dp_maglev_lookup(&lb.maglev, key)]);
			moved++;
		} else {
			assert_false(a.down[r]);
		}
	}
	/* Only the keys of the two down backends moved: about 2/6 of them. */
	assert_in_range(moved, 20000 * 2 / 6 - 600, 20000 * 2 / 6 + 600);
	dp_lb_fini(&lb);
	dp_lb_fini(&lb2);
}

static void test_hash64(void **state)
{
	assert_true(dp_hash64(0) != 0);
	assert_true(dp_hash64(1) != dp_hash64(2));
	assert_true(dp_hash64(7) == dp_hash64(7));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init_invalid),
		cmocka_unit_test(test_no_backends),
		cmocka_unit_test(test_rr_equal),
		cmocka_unit_test(test_rr_uniform_rotation),
		cmocka_unit_test(test_rr_smooth_weighted),
		cmocka_unit_test(test_rr_skips_unusable),
		cmocka_unit_test(test_none_usable),
		cmocka_unit_test(test_least_conn_picks_least),
		cmocka_unit_test(test_least_conn_weighted),
		cmocka_unit_test(test_least_conn_shared_load),
		cmocka_unit_test(test_least_conn_ties_rotate),
		cmocka_unit_test(test_random_two_weighted),
		cmocka_unit_test(test_random_two_uniform),
		cmocka_unit_test(test_random_two_prefers_less_loaded),
		cmocka_unit_test(test_random_two_skips_unusable),
		cmocka_unit_test(test_maglev_pick_matches_table),
		cmocka_unit_test(test_maglev_failover),
		cmocka_unit_test(test_hash64),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
