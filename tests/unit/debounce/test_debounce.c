/* test_debounce.c - when the controller reconciles: lone changes at once, bursts every 2 s. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <string.h>

#include "controller/core/debounce.h"

#define QUIET 100
#define MAX 2000
#define FIRES_MAX 64

struct run {
	uint64_t fire[FIRES_MAX];
	unsigned n;
};

static bool changes_at(const uint64_t *t, size_t n, uint64_t now)
{
	for (size_t i = 0; i < n; i++)
		if (t[i] == now)
			return true;
	return false;
}

/*
 * The controller's loop, one millisecond at a time: the changes of `changes` arrive, and a
 * reconcile runs whenever one is due, until `end`.
 */
static void simulate(struct ctrl_debounce *d, const uint64_t *changes, size_t n, uint64_t end,
		     struct run *r)
{
	memset(r, 0, sizeof(*r));
	for (uint64_t now = 1000; now <= end; now++) {
		if (changes_at(changes, n, now))
			ctrl_debounce_change(d, now);
		if (ctrl_debounce_fire(d, now)) {
			assert_true(r->n < FIRES_MAX);
			r->fire[r->n++] = now;
		}
	}
	assert_false(d->dirty); /* every change reconciled by the end */
}

/* Changes every `every` ms over [from, to), skipping the pauses [p, p + len) of `pauses`. */
static size_t stream(uint64_t *t, size_t cap, uint64_t from, uint64_t to, unsigned every,
		     const uint64_t *pauses, size_t n_pauses, unsigned len)
{
	size_t n = 0;

	for (uint64_t x = from; x < to && n < cap; x += every) {
		bool paused = false;

		for (size_t i = 0; i < n_pauses; i++)
			paused |= x >= pauses[i] && x < pauses[i] + len;
		if (!paused)
			t[n++] = x;
	}
	return n;
}

static void test_lone_change_waits_only_the_quiet_window(void **state)
{
	static const uint64_t changes[] = { 5000 };
	struct ctrl_debounce d;
	struct run r;

	ctrl_debounce_init(&d, QUIET, MAX);
	simulate(&d, changes, 1, 9000, &r);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.fire[0], 5000 + QUIET);
}

/* One pod turning Ready every second: each reaches the dataplane after the quiet window. */
static void test_changes_a_second_apart_are_not_a_burst(void **state)
{
	uint64_t changes[10];
	struct ctrl_debounce d;
	struct run r;

	for (unsigned i = 0; i < 10; i++)
		changes[i] = 2000 + 900 * i;
	ctrl_debounce_init(&d, QUIET, MAX);
	simulate(&d, changes, 10, 15000, &r);
	assert_int_equal(r.n, 10);
	for (unsigned i = 0; i < 10; i++)
		assert_int_equal(r.fire[i], changes[i] + QUIET);
}

/*
 * A rolling update: 12 s of changes every 5 ms with a 300 ms pause between its steps (each
 * longer than the quiet window).  Once changes have come for MAX / 2, reconciles come no
 * closer than MAX: without the burst rule each pause cost one more.
 */
static void test_rollout_with_pauses_applies_every_max(void **state)
{
	static const uint64_t pauses[] = { 3500, 4200, 6600, 9100, 9700, 11800 };
	static uint64_t changes[4096];
	struct ctrl_debounce d;
	struct run r;
	size_t n = stream(changes, 4096, 2000, 14000, 5, pauses, 6, 300);

	ctrl_debounce_init(&d, QUIET, MAX);
	simulate(&d, changes, n, 20000, &r);
	/* The first pause, 1.5 s into the burst: changes that came for a while. */
	assert_int_equal(r.fire[0], 3495 + QUIET);
	for (unsigned i = 1; i < r.n; i++)
		assert_true(r.fire[i] - r.fire[i - 1] >= MAX);
	assert_true(r.n <= 12000 / MAX + 1);
	/* The last change goes out within MAX of the previous reconcile, and after quiet. */
	assert_true(r.fire[r.n - 1] >= changes[n - 1] + QUIET);
	assert_true(r.fire[r.n - 1] <= changes[n - 1] + MAX);
}

/* Changes that never pause go out every MAX, the first MAX after the first change. */
static void test_ceiling(void **state)
{
	static uint64_t changes[2048];
	struct ctrl_debounce d;
	struct run r;
	size_t n = stream(changes, 2048, 2000, 9000, 5, NULL, 0, 0);

	ctrl_debounce_init(&d, QUIET, MAX);
	simulate(&d, changes, n, 12000, &r);
	assert_int_equal(r.n, 4);
	assert_int_equal(r.fire[0], 2000 + MAX);
	/* The ceiling: MAX after the first change since the last reconcile (5 ms after it);
	 * the last one, once the changes stopped at 8995, held by the burst rule to MAX
	 * after the previous reconcile. */
	for (unsigned i = 1; i < r.n; i++)
		assert_int_equal(r.fire[i] - r.fire[i - 1], MAX + (i < 3 ? 5 : 0));
}

/* The burst over, a lone change is served after the quiet window again. */
static void test_burst_ends(void **state)
{
	static uint64_t changes[2048];
	struct ctrl_debounce d;
	struct run r;
	size_t n = stream(changes, 2047, 2000, 7000, 5, NULL, 0, 0);

	changes[n++] = 12000;
	ctrl_debounce_init(&d, QUIET, MAX);
	simulate(&d, changes, n, 15000, &r);
	assert_int_equal(r.fire[r.n - 1], 12000 + QUIET);
	/* ... and so is the next one a second later. */
	ctrl_debounce_change(&d, 13000);
	assert_int_equal(ctrl_debounce_due(&d), 13000 + QUIET);
}

/*
 * Another look at status (our own status writes coming back): after the quiet window even in
 * a burst, without moving the burst's clock; while changes wait, it waits with them.
 */
static void test_followup(void **state)
{
	static uint64_t changes[2048];
	struct ctrl_debounce d;
	struct run r;
	size_t n = stream(changes, 2048, 2000, 9000, 5, NULL, 0, 0);
	uint64_t last;

	ctrl_debounce_init(&d, QUIET, MAX);
	simulate(&d, changes, n, 10050, &r);
	assert_true(d.burst);
	last = d.last_fire;
	assert_int_equal(last, 10010);
	ctrl_debounce_followup(&d, 10020);
	assert_int_equal(ctrl_debounce_due(&d), 10020 + QUIET);
	assert_false(ctrl_debounce_fire(&d, 10119));
	assert_true(ctrl_debounce_fire(&d, 10120));
	assert_true(d.burst);
	assert_int_equal(d.last_fire, last);
	/* A change now is still held to MAX after the last reconcile that could apply. */
	ctrl_debounce_change(&d, 10200);
	assert_int_equal(ctrl_debounce_due(&d), last + MAX);
	/* A follow-up while it waits changes nothing. */
	ctrl_debounce_followup(&d, 10300);
	assert_int_equal(ctrl_debounce_due(&d), last + MAX);
	assert_true(ctrl_debounce_fire(&d, last + MAX));
	/* Follow-ups alone, however many, start no burst. */
	ctrl_debounce_init(&d, QUIET, MAX);
	for (uint64_t t = 1000; t < 5000; t += 150) {
		ctrl_debounce_followup(&d, t);
		assert_true(ctrl_debounce_fire(&d, t + QUIET));
	}
	assert_false(d.burst);
	ctrl_debounce_change(&d, 5000);
	assert_int_equal(ctrl_debounce_due(&d), 5000 + QUIET);
}

static void test_urgent_is_due_at_once(void **state)
{
	struct ctrl_debounce d;

	ctrl_debounce_init(&d, QUIET, MAX);
	ctrl_debounce_change(&d, 5000);
	assert_false(ctrl_debounce_fire(&d, 5050));
	ctrl_debounce_urgent(&d);
	assert_true(ctrl_debounce_fire(&d, 5051));
	assert_false(ctrl_debounce_fire(&d, 5052)); /* nothing left */
}

static void test_max_below_quiet_is_raised(void **state)
{
	struct ctrl_debounce d;

	ctrl_debounce_init(&d, 500, 100);
	assert_int_equal(d.max_ms, 500);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lone_change_waits_only_the_quiet_window),
		cmocka_unit_test(test_changes_a_second_apart_are_not_a_burst),
		cmocka_unit_test(test_rollout_with_pauses_applies_every_max),
		cmocka_unit_test(test_ceiling),
		cmocka_unit_test(test_burst_ends),
		cmocka_unit_test(test_followup),
		cmocka_unit_test(test_urgent_is_due_at_once),
		cmocka_unit_test(test_max_below_quiet_is_raised),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
