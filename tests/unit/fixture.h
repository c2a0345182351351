/*
 * fixture.h - a listener's backends (127.0.0.1:9001, :9002, ...) and a worker's balancer set
 * over them, as a snapshot and a worker would make them, for the unit tests that drive conn.c
 * and udp.c with a fake engine.  Include after cmocka.h.
 */
#ifndef LB_TEST_FIXTURE_H
#define LB_TEST_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>

#include "dataplane/dp.h"

#define FIXTURE_BACKENDS_MAX 16

/* n backends of weight 1 at 127.0.0.1:9001.., each with its fresh state. */
static inline void fixture_backends(struct dp_backend *b, struct dp_bstate *st, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		char text[32];

		snprintf(text, sizeof(text), "127.0.0.1:%u", 9001 + i);
		assert_int_equal(lb_addr_parse(text, false, &b[i].addr, NULL, 0), 0);
		snprintf(b[i].name, sizeof(b[i].name), "%s", text);
		b[i].weight = 1;
		dp_bstate_init(&st[i]);
		b[i].st = &st[i];
	}
}

/* A round-robin set over sl's backends, with refs references, in the worker's list. */
static inline struct dp_lset *fixture_set(struct dp_worker *w, const struct dp_slistener *sl,
					  unsigned refs)
{
	struct dp_lb_spec specs[FIXTURE_BACKENDS_MAX];
	struct dp_lset *set = calloc(1, sizeof(*set));

	assert_non_null(set);
	assert_true(sl->n_backends <= FIXTURE_BACKENDS_MAX);
	for (unsigned i = 0; i < sl->n_backends; i++)
		specs[i] = (struct dp_lb_spec){ .weight = 1 };
	set->refs = refs;
	set->sl = sl;
	dp_list_init(&set->idle);
	assert_int_equal(dp_lb_init(&set->lb, LB_ALGO_ROUND_ROBIN, specs, sl->n_backends, 1), 0);
	dp_list_add_tail(&w->lsets, &set->link);
	return set;
}

#endif
