/* test_store.c - the informer's cache: put, replace, get, delete, growth, swap, clear. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "world.h"

static struct k8s_obj *svc(const char *ns, const char *name, const char *rv)
{
	return obj_json(K8S_KIND_SERVICE,
			"{'metadata':{'name':'%s','namespace':'%s','resourceVersion':'%s'},"
			"'spec':{}}",
			name, ns, rv);
}

static void test_put_get_replace_del(void **state)
{
	struct k8s_store s;

	assert_int_equal(k8s_store_init(&s), 0);
	assert_int_equal(k8s_store_put(&s, svc("shop", "web", "1")), 0);
	assert_int_equal(k8s_store_put(&s, svc("other", "web", "2")), 0);
	assert_int_equal(s.count, 2);
	assert_string_equal(k8s_store_get(&s, "shop/web")->meta.rv, "1");
	assert_string_equal(k8s_store_get(&s, "other/web")->meta.rv, "2");
	assert_null(k8s_store_get(&s, "web"));
	assert_null(k8s_store_get(&s, "shop/we"));

	/* A MODIFIED event replaces (and frees: ASan would see a leak) the old object. */
	assert_int_equal(k8s_store_put(&s, svc("shop", "web", "3")), 0);
	assert_int_equal(s.count, 2);
	assert_string_equal(k8s_store_get(&s, "shop/web")->meta.rv, "3");

	assert_int_equal(k8s_store_del(&s, "shop/web"), 0);
	assert_int_equal(k8s_store_del(&s, "shop/web"), -ENOENT);
	assert_null(k8s_store_get(&s, "shop/web"));
	assert_non_null(k8s_store_get(&s, "other/web"));
	assert_int_equal(s.count, 1);
	k8s_store_free(&s);
}

/* Far past the first table size: every object stays reachable and is visited once. */
static void test_growth_and_for_each(void **state)
{
	enum { N = 1500 };
	unsigned char *seen = calloc(N, 1);
	struct k8s_store_entry *e;
	struct k8s_store s;
	char name[32], rv[16];
	size_t i, visits = 0;

	assert_non_null(seen);
	assert_int_equal(k8s_store_init(&s), 0);
	for (i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "svc-%zu", i);
		snprintf(rv, sizeof(rv), "%zu", i);
		assert_int_equal(k8s_store_put(&s, svc("ns", name, rv)), 0);
	}
	assert_int_equal(s.count, N);
	assert_true(s.n_buckets >= N);
	for (i = 0; i < N; i++) {
		char key[40];
		const struct k8s_obj *o;

		snprintf(key, sizeof(key), "ns/svc-%zu", i);
		o = k8s_store_get(&s, key);
		assert_non_null(o);
		assert_int_equal(strtoul(o->meta.rv, NULL, 10), i);
	}
	k8s_store_for_each(&s, e, i) {
		unsigned long n = strtoul(e->obj->meta.rv, NULL, 10);

		assert_true(n < N);
		assert_int_equal(seen[n], 0);
		seen[n] = 1;
		visits++;
	}
	assert_int_equal(visits, N);
	/* Delete every other one, then check the rest. */
	for (i = 0; i < N; i += 2) {
		snprintf(name, sizeof(name), "ns/svc-%zu", i);
		assert_int_equal(k8s_store_del(&s, name), 0);
	}
	assert_int_equal(s.count, N / 2);
	for (i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "ns/svc-%zu", i);
		assert_true((k8s_store_get(&s, name) != NULL) == (i % 2 == 1));
	}
	k8s_store_free(&s);
	free(seen);
}

static void test_swap_clear(void **state)
{
	struct k8s_store a, b;

	assert_int_equal(k8s_store_init(&a), 0);
	assert_int_equal(k8s_store_init(&b), 0);
	assert_int_equal(k8s_store_put(&a, svc("shop", "old", "1")), 0);
	assert_int_equal(k8s_store_put(&b, svc("shop", "new", "2")), 0);
	assert_int_equal(k8s_store_put(&b, svc("shop", "new2", "3")), 0);
	/* A relist fills a fresh store, swaps it in, and clears the old one. */
	k8s_store_swap(&a, &b);
	assert_int_equal(a.count, 2);
	assert_non_null(k8s_store_get(&a, "shop/new"));
	assert_null(k8s_store_get(&a, "shop/old"));
	assert_non_null(k8s_store_get(&b, "shop/old"));
	k8s_store_clear(&b);
	assert_int_equal(b.count, 0);
	assert_null(k8s_store_get(&b, "shop/old"));
	assert_int_equal(k8s_store_put(&b, svc("shop", "again", "4")), 0);
	assert_non_null(k8s_store_get(&b, "shop/again"));
	k8s_store_free(&a);
	k8s_store_free(&b);
	k8s_store_free(&b); /* twice: a no-op */
}

int run_store_tests(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_put_get_replace_del),
		cmocka_unit_test(test_growth_and_for_each),
		cmocka_unit_test(test_swap_clear),
	};

	return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
