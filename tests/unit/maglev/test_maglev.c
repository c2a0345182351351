/* test_maglev.c - Maglev table: sizes, even spread, weights, minimal disruption, order, speed. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <cmocka.h>

#include "dataplane/balancer.h"
#include "dataplane/maglev.h"

#define KEYS 100000

static uint64_t backend_id(unsigned i)
{
	return dp_hash64(0xb0000 + i);
}

static void build_n(struct dp_maglev *mg, const uint64_t *ids, const unsigned *w, uint32_t n)
{
	assert_int_equal(dp_maglev_build(mg, ids, w, n, dp_maglev_size_for(n)), 0);
	assert_int_equal(mg->n, n);
}

static void test_size_for(void **state)
{
	assert_int_equal(dp_maglev_size_for(0), 251);
	assert_int_equal(dp_maglev_size_for(1), 1021);
	assert_int_equal(dp_maglev_size_for(2), 2039);
	assert_int_equal(dp_maglev_size_for(3), 4093);
	assert_int_equal(dp_maglev_size_for(10), 16381);
	assert_int_equal(dp_maglev_size_for(65), 65521);
	assert_int_equal(dp_maglev_size_for(66), 131071);
	assert_int_equal(dp_maglev_size_for(1000), 131071);
	assert_int_equal(dp_maglev_size_for(1000), 131071);
	assert_int_equal(dp_maglev_size_for(100000000), 131071);
}

static void test_build_invalid(void **state)
{
	const uint64_t ids[3] = { 1, 2, 3 };
	const unsigned w[3] = { 1, 0, 1 };
	struct dp_maglev mg = { 0 };

	assert_int_equal(dp_maglev_build(&mg, ids, NULL, 0, 251), -EINVAL);
	assert_int_equal(dp_maglev_build(&mg, ids, NULL, 3, 250), -EINVAL); /* not prime */
	assert_int_equal(dp_maglev_build(&mg, ids, NULL, 3, 2), -EINVAL);   /* m < n */
	assert_int_equal(dp_maglev_build(&mg, ids, w, 3, 251), -EINVAL);    /* zero weight */
	assert_null(mg.table);
	dp_maglev_free(&mg);
	dp_maglev_free(NULL);
}

/* Every entry filled with a valid index; returns per-backend entry counts in counts[]. */
static void table_counts(const struct dp_maglev *mg, unsigned *counts)
{
	uint32_t i;

	for (i = 0; i < mg->n; i++)
		counts[i] = 0;
	for (i = 0; i < mg->m; i++) {
		assert_true(mg->table[i] < mg->n);
		counts[mg->table[i]]++;
	}
}

static void check_even(uint32_t n)
{
	uint64_t ids[100];
	unsigned counts[100];
	struct dp_maglev mg;
	uint32_t i;

	for (i = 0; i < n; i++)
		ids[i] = backend_id(i);
	build_n(&mg, ids, NULL, n);
	table_counts(&mg, counts);
	/* Equal turns per round: every backend within one entry of m / n. */
	for (i = 0; i < n; i++)
		assert_in_range(counts[i], mg.m / n, mg.m / n + 1);
	dp_maglev_free(&mg);
}

static void test_even_spread(void **state)
{
	check_even(1);
	check_even(3);
	check_even(10);
	check_even(100);
}

static void test_weights(void **state)
{
	const unsigned w[6] = { 2, 1, 2, 1, 4, 4 }; /* gcd 1; 14 turns a round */
	const unsigned w_same[3] = { 7, 7, 7 };     /* gcd 7: the same as all 1 */
	unsigned counts[6];
	uint64_t ids[6];
	struct dp_maglev mg, mg1;
	uint32_t i;

	for (i = 0; i < 6; i++)
		ids[i] = backend_id(i);
	build_n(&mg, ids, w, 6);
	table_counts(&mg, counts);
	for (i = 0; i < 6; i++)
		assert_in_range(counts[i], mg.m * w[i] / 14 - 4, mg.m * w[i] / 14 + 4);
	dp_maglev_free(&mg);

	build_n(&mg, ids, w_same, 3);
	build_n(&mg1, ids, NULL, 3);
	assert_memory_equal(mg.table, mg1.table, mg.m * sizeof(*mg.table));
	dp_maglev_free(&mg);
	dp_maglev_free(&mg1);
}

/*
 * Remove backend `gone` of n (table size m) and count keys that changed backend although they
 * were not on `gone`: the disruption beyond the minimum, at most max_extra_pct of all keys.
 */
static void check_removal(uint32_t n, uint32_t m, uint32_t gone, unsigned max_extra_pct)
{
	uint64_t ids[100], ids2[100];
	unsigned moved = 0, extra = 0;
	struct dp_maglev a, b;
	uint64_t k, key, before, after;
	uint32_t i, j = 0;

	for (i = 0; i < n; i++) {
		ids[i] = backend_id(i);
		if (i != gone)
			ids2[j++] = ids[i];
	}
	assert_int_equal(dp_maglev_build(&a, ids, NULL, n, m), 0);
	assert_int_equal(dp_maglev_build(&b, ids2, NULL, n - 1, m), 0);
	for (k = 0; k < KEYS; k++) {
		key = dp_hash64(k);
		before = ids[dp_maglev_lookup(&a, key)];
		after = ids2[dp_maglev_lookup(&b, key)];
		if (before == after)
			continue;
		moved++;
		if (before != ids[gone])
			extra++;
	}
	print_message("n=%u m=%u: moved %u of %u keys, %u not on the removed backend\n", n, m,
		      moved, KEYS, extra);
	assert_true(extra <= KEYS / 100 * max_extra_pct);
	assert_true(moved <= KEYS / n + KEYS / 100 * max_extra_pct);
	dp_maglev_free(&a);
	dp_maglev_free(&b);
}

/*
 * The extra disruption shrinks as m / n grows (the paper's M >> N): at m of about 100 n it
 * measured 3-5% for n = 10 (m = 1021), hence the default of about 1000 n (under 1% for n = 10,
 * 1-1.5% for n = 100 where the 131071 cap binds).  Modulo hashing would move about 90% of keys.
 */
static void test_minimal_disruption(void **state)
{
	check_removal(10, dp_maglev_size_for(10), 3, 1);
	check_removal(10, dp_maglev_size_for(10), 0, 1);
	check_removal(10, 1021, 7, 6); /* a small table disrupts more */
	check_removal(100, dp_maglev_size_for(100), 42, 2);
	check_removal(100, dp_maglev_size_for(100), 99, 2);
}

static void test_order_independent(void **state)
{
	uint64_t ids[20], rev[20];
	unsigned w[20], wrev[20];
	struct dp_maglev a, b;
	uint32_t i;

	for (i = 0; i < 20; i++) {
		ids[i] = backend_id(i);
		w[i] = 1 + i % 3;
		rev[19 - i] = ids[i];
		wrev[19 - i] = w[i];
	}
	build_n(&a, ids, w, 20);
	build_n(&b, rev, wrev, 20);
	for (i = 0; i < a.m; i++)
		assert_true(ids[a.table[i]] == rev[b.table[i]]);
	dp_maglev_free(&a);
	dp_maglev_free(&b);
}

/* The largest table (1,000 backends, the size cap): every backend gets its exact share. */
static void test_large_table(void **state)
{
	const uint32_t n = 1000;
	struct timespec t0, t1;
	struct dp_maglev mg;
	unsigned *counts;
	uint64_t *ids;
	uint32_t i;
	double ms;

	ids = malloc(n * sizeof(*ids));
	counts = malloc(n * sizeof(*counts));
	assert_non_null(ids);
	assert_non_null(counts);
	for (i = 0; i < n; i++)
		ids[i] = backend_id(i);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	build_n(&mg, ids, NULL, n);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
	print_message("n=%u m=%u built in %.2f ms\n", n, mg.m, ms);
	assert_int_equal(mg.m, 131071);
	table_counts(&mg, counts);
	for (i = 0; i < n; i++)
		assert_in_range(counts[i], mg.m / n, mg.m / n + 1);
	/* The time is printed for the curious, never asserted: tests hold no timing. */
	dp_maglev_free(&mg);
	free(counts);
	free(ids);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_size_for),
		cmocka_unit_test(test_build_invalid),
		cmocka_unit_test(test_even_spread),
		cmocka_unit_test(test_weights),
		cmocka_unit_test(test_minimal_disruption),
		cmocka_unit_test(test_order_independent),
		cmocka_unit_test(test_large_table),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
