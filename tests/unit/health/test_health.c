/* test_health.c - rise/fall transitions and passive failure trips with doubling backoff. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "dataplane/health.h"

static const struct lb_health_conf conf = {
	.enabled = true,
	.interval_ms = 2000,
	.timeout_ms = 1000,
	.rise = 2,
	.fall = 3,
};

static void test_fall_at_threshold(void **state)
{
	struct dp_health h;

	dp_health_init(&h, true);
	assert_false(dp_health_report(&h, &conf, false));
	assert_false(dp_health_report(&h, &conf, false));
	assert_true(h.up);
	assert_true(dp_health_report(&h, &conf, false));
	assert_false(h.up);
	/* Further failures change nothing. */
	assert_false(dp_health_report(&h, &conf, false));
	assert_false(h.up);
}

static void test_rise_at_threshold(void **state)
{
	struct dp_health h;

	dp_health_init(&h, false);
	assert_false(dp_health_report(&h, &conf, true));
	assert_false(h.up);
	assert_true(dp_health_report(&h, &conf, true));
	assert_true(h.up);
	assert_false(dp_health_report(&h, &conf, true));
	assert_true(h.up);
}

static void test_streaks_reset(void **state)
{
	struct dp_health h;

	dp_health_init(&h, true);
	/* fail fail ok: the success breaks the fail streak. */
	assert_false(dp_health_report(&h, &conf, false));
	assert_false(dp_health_report(&h, &conf, false));
	assert_false(dp_health_report(&h, &conf, true));
	assert_false(dp_health_report(&h, &conf, false));
	assert_false(dp_health_report(&h, &conf, false));
	assert_true(h.up);
	assert_true(dp_health_report(&h, &conf, false));
	assert_false(h.up);
	/* ok fail ok: the failure breaks the ok streak. */
	assert_false(dp_health_report(&h, &conf, true));
	assert_false(dp_health_report(&h, &conf, false));
	assert_false(dp_health_report(&h, &conf, true));
	assert_false(h.up);
	assert_true(dp_health_report(&h, &conf, true));
	assert_true(h.up);
	/* A full cycle again: the streak that caused a transition does not linger. */
	assert_false(dp_health_report(&h, &conf, false));
	assert_false(dp_health_report(&h, &conf, false));
	assert_true(dp_health_report(&h, &conf, false));
}

static void test_rise_fall_one(void **state)
{
	const struct lb_health_conf one = { .enabled = true, .rise = 1, .fall = 1 };
	struct dp_health h;

	dp_health_init(&h, true);
	assert_true(dp_health_report(&h, &one, false));
	assert_false(h.up);
	assert_true(dp_health_report(&h, &one, true));
	assert_true(h.up);
}

static void test_bstate_init(void **state)
{
	struct dp_bstate b;

	dp_bstate_init(&b);
	assert_true(dp_bstate_usable(&b, 0));
	assert_int_equal(atomic_load(&b.refs), 1);
	assert_int_equal(atomic_load(&b.fails), 0);
	assert_true(atomic_load(&b.check_up));
	atomic_store(&b.check_up, false);
	assert_false(dp_bstate_usable(&b, 0));
}

/* Take b out from usable: max_fails - 1 harmless failures, then the tripping one. */
static void trip(struct dp_bstate *b, unsigned fails_before, uint64_t now)
{
	unsigned i;

	for (i = 0; i < fails_before; i++) {
		assert_false(dp_bstate_report(b, false, 3, 1000, now));
		assert_true(dp_bstate_usable(b, now));
	}
	assert_true(dp_bstate_report(b, false, 3, 1000, now));
	assert_false(dp_bstate_usable(b, now));
}

static void test_bstate_trip_and_backoff(void **state)
{
	const uint64_t backoff[] = { 1000, 2000, 4000, 8000, 16000, 16000, 16000 };
	struct dp_bstate b;
	uint64_t now = 5000;
	unsigned i;

	dp_bstate_init(&b);
	trip(&b, 2, now);
	for (i = 0; i < sizeof(backoff) / sizeof(backoff[0]); i++) {
		if (i > 0)
			trip(&b, 0, now); /* straight back out: one failure */
		assert_false(dp_bstate_usable(&b, now + backoff[i] - 1));
		assert_true(dp_bstate_usable(&b, now + backoff[i]));
		now += backoff[i];
	}
}

static void test_bstate_success_resets(void **state)
{
	struct dp_bstate b;
	uint64_t now = 100;

	dp_bstate_init(&b);
	trip(&b, 2, now);
	now += 1000;
	trip(&b, 0, now); /* second trip: 2000 */
	now += 2000;
	assert_true(dp_bstate_usable(&b, now));
	assert_false(dp_bstate_report(&b, true, 3, 1000, now));
	/* A clean record: three failures again, and the base backoff. */
	trip(&b, 2, now);
	assert_true(dp_bstate_usable(&b, now + 1000));
	/* Failures before max_fails are forgiven by a success in between. */
	now += 1000;
	assert_false(dp_bstate_report(&b, true, 3, 1000, now));
	assert_false(dp_bstate_report(&b, false, 3, 1000, now));
	assert_false(dp_bstate_report(&b, false, 3, 1000, now));
	assert_false(dp_bstate_report(&b, true, 3, 1000, now));
	assert_false(dp_bstate_report(&b, false, 3, 1000, now));
	assert_true(dp_bstate_usable(&b, now));
}

static void test_bstate_inflight_failures(void **state)
{
	struct dp_bstate b;

	dp_bstate_init(&b);
	trip(&b, 2, 0);
	/* Connects that were in flight when it tripped fail too: no further trip, no growth. */
	assert_false(dp_bstate_report(&b, false, 3, 1000, 10));
	assert_false(dp_bstate_report(&b, false, 3, 1000, 999));
	assert_int_equal(atomic_load(&b.trips), 1);
	assert_true(dp_bstate_usable(&b, 1000));
	/* The next failure after the backoff doubles it (2000), not 8x. */
	trip(&b, 0, 1000);
	assert_true(dp_bstate_usable(&b, 3000));
}

static void test_bstate_disabled(void **state)
{
	struct dp_bstate b;
	unsigned i;

	dp_bstate_init(&b);
	for (i = 0; i < 100; i++)
		assert_false(dp_bstate_report(&b, false, 0, 1000, 0));
	assert_true(dp_bstate_usable(&b, 0));
}

struct hammer {
	struct dp_bstate *b;
	unsigned tripped;
};

static void *hammer_run(void *arg)
{
	struct hammer *h = arg;
	unsigned i;

	for (i = 0; i < 10000; i++)
		if (dp_bstate_report(h->b, false, 3, 1000, 50))
			h->tripped++;
	return NULL;
}

static void test_bstate_concurrent_one_trip(void **state)
{
	struct hammer h[4];
	pthread_t t[4];
	struct dp_bstate b;
	unsigned i, total = 0;

	dp_bstate_init(&b);
	for (i = 0; i < 4; i++) {
		h[i].b = &b;
		h[i].tripped = 0;
		assert_int_equal(pthread_create(&t[i], NULL, hammer_run, &h[i]), 0);
	}
	for (i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		total += h[i].tripped;
	}
	/* 40000 failures at one instant from four workers: exactly one trip. */
	assert_int_equal(total, 1);
	assert_int_equal(atomic_load(&b.fails), 40000);
	assert_int_equal(atomic_load(&b.trips), 1);
	assert_false(dp_bstate_usable(&b, 1049));
	assert_true(dp_bstate_usable(&b, 1050));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fall_at_threshold),
		cmocka_unit_test(test_rise_at_threshold),
		cmocka_unit_test(test_streaks_reset),
		cmocka_unit_test(test_rise_fall_one),
		cmocka_unit_test(test_bstate_init),
		cmocka_unit_test(test_bstate_trip_and_backoff),
		cmocka_unit_test(test_bstate_success_resets),
		cmocka_unit_test(test_bstate_inflight_failures),
		cmocka_unit_test(test_bstate_disabled),
		cmocka_unit_test(test_bstate_concurrent_one_trip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
