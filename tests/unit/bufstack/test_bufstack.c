/* test_bufstack.c - free receive buffers give their memory back once unused for a period. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dataplane/bufstack.h"

#define COUNT 16
#define SIZE (64u << 10)

struct pool {
	char *base;
	unsigned ids[COUNT];
	struct dp_bufstack s;
};

/* A pool as the engines set one up: lowest ids on top, fresh pages, nothing resident. */
static int setup(void **state)
{
	struct pool *p = calloc(1, sizeof(*p));

	assert_non_null(p);
	p->base = mmap(NULL, (size_t)COUNT * SIZE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	assert_true(p->base != MAP_FAILED);
	p->s.v = p->ids;
	for (unsigned i = COUNT; i-- > 0;)
		dp_bufstack_push(&p->s, i);
	p->s.low = p->s.released = p->s.n;
	*state = p;
	return 0;
}

static int teardown(void **state)
{
	struct pool *p = *state;

	munmap(p->base, (size_t)COUNT * SIZE);
	free(p);
	return 0;
}

/* Pages of buffer bid in memory (mincore). */
static unsigned resident(const struct pool *p, unsigned bid)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), n = SIZE / page;
	unsigned char vec[SIZE / 4096];
	unsigned r = 0;

	assert_int_equal(mincore(p->base + (size_t)bid * SIZE, SIZE, vec), 0);
	for (size_t i = 0; i < n; i++)
		r += vec[i] & 1;
	return r;
}

/* A receive: take a buffer, fill it (as a bulk transfer does), and give it back. */
static unsigned use(struct pool *p)
{
	unsigned bid = dp_bufstack_pop(&p->s);

	memset(p->base + (size_t)bid * SIZE, 'x', SIZE);
	return bid;
}

/* A burst takes every buffer at once; they all become resident and stay until trimmed. */
static void burst(struct pool *p)
{
	unsigned held[COUNT];

	for (unsigned i = 0; i < COUNT; i++)
		held[i] = use(p);
	for (unsigned i = COUNT; i-- > 0;)
		dp_bufstack_push(&p->s, held[i]);
}

static void test_idle_buffers_are_given_back_after_one_quiet_period(void **state)
{
	struct pool *p = *state;

	burst(p);
	for (unsigned b = 0; b < COUNT; b++)
		assert_true(resident(p, b) > 0);
	/* The trim that closes the burst's period gives nothing back: all were used in it. */
	assert_int_equal(dp_bufstack_trim(&p->s, p->base, SIZE), 0);
	for (unsigned b = 0; b < COUNT; b++)
		assert_true(resident(p, b) > 0);
	/* A quiet period later, every one goes. */
	assert_int_equal(dp_bufstack_trim(&p->s, p->base, SIZE), COUNT);
	for (unsigned b = 0; b < COUNT; b++)
		assert_int_equal(resident(p, b), 0);
	/* And not twice. */
	assert_int_equal(dp_bufstack_trim(&p->s, p->base, SIZE), 0);
}

static void test_a_light_load_keeps_its_few_hot_buffers(void **state)
{
	struct pool *p = *state;
	unsigned hot[2];

	burst(p);
	dp_bufstack_trim(&p->s, p->base, SIZE);
	/* A light load: two buffers at a time, over and over, through the next period. */
	for (int round = 0; round < 50; round++) {
		hot[0] = use(p);
		hot[1] = use(p);
		dp_bufstack_push(&p->s, hot[1]);
		dp_bufstack_push(&p->s, hot[0]);
	}
	assert_int_equal(dp_bufstack_trim(&p->s, p->base, SIZE), COUNT - 2);
	assert_true(resident(p, hot[0]) > 0);
	assert_true(resident(p, hot[1]) > 0);
	for (unsigned b = 0; b < COUNT; b++)
		if (b != hot[0] && b != hot[1])
			assert_int_equal(resident(p, b), 0);
}

static void test_a_buffer_taken_again_is_given_back_again(void **state)
{
	struct pool *p = *state;
	unsigned bid;

	burst(p);
	dp_bufstack_trim(&p->s, p->base, SIZE);
	dp_bufstack_trim(&p->s, p->base, SIZE);
	/* Everything was given back; a burst deeper than before takes released buffers. */
	burst(p);
	for (unsigned b = 0; b < COUNT; b++)
		assert_true(resident(p, b) > 0);
	assert_int_equal(dp_bufstack_trim(&p->s, p->base, SIZE), 0);
	assert_int_equal(dp_bufstack_trim(&p->s, p->base, SIZE), COUNT);
	/* One used again after that, then a quiet period: it alone goes again. */
	bid = use(p);
	dp_bufstack_push(&p->s, bid);
	assert_true(resident(p, bid) > 0);
	assert_int_equal(dp_bufstack_trim(&p->s, p->base, SIZE), 0);
	assert_int_equal(dp_bufstack_trim(&p->s, p->base, SIZE), 1);
	assert_int_equal(resident(p, bid), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_idle_buffers_are_given_back_after_one_quiet_period,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_a_light_load_keeps_its_few_hot_buffers, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_a_buffer_taken_again_is_given_back_again, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
