/* test_merge.c - the configuration in force (file + managed listeners) and what an apply changes */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"

#define DATA LB_TEST_DATA "/config/"

/* Two file listeners and a top level that differs from every default. */
#define FILE_TEXT                                                                                  \
	"acceptors: 3\n"                                                                           \
	"log_level: debug\n"                                                                       \
	"control_socket: /run/lb/ctl.sock\n"                                                       \
	"metrics: 127.0.0.1:9100\n"                                                                \
	"drain_timeout_ms: 1500\n"                                                                 \
	"buffer_size: 8192\n"                                                                      \
	"buffer_count: 128\n"                                                                      \
	"listeners:\n"                                                                             \
	"  - name: web\n"                                                                          \
	"    listen: 127.0.0.1:8080\n"                                                             \
	"    backends:\n"                                                                          \
	"      - address: 10.0.0.1:80\n"                                                           \
	"      - address: 10.0.0.2:80\n"                                                           \
	"  - name: db\n"                                                                           \
	"    listen: 127.0.0.1:5432\n"                                                             \
	"    backends:\n"                                                                          \
	"      - address: 10.0.1.1:5432\n"

static struct lb_config untouched;

static struct lb_config *file_conf(const char *text)
{
	struct lb_config *c = NULL;
	char err[512] = "";

	if (lb_config_parse(text, strlen(text), "t.yaml", &c, err, sizeof(err)))
		fail_msg("file: %s\n--- input:\n%s", err, text);
	return c;
}

/* Managed listeners, written as an apply's "listeners" (YAML flow, as JSON). */
static struct lb_config *managed_conf(const char *listeners)
{
	struct lb_config *c = NULL;
	char err[512] = "", text[4096];

	snprintf(text, sizeof(text), "{\"listeners\":[%s]}", listeners);
	if (lb_config_parse_listeners(text, strlen(text), "apply", &c, err, sizeof(err)))
		fail_msg("apply: %s\n--- input: %s", err, text);
	return c;
}

static struct lb_config *merge_ok(const struct lb_config *file, const struct lb_config *managed)
{
	struct lb_config *c = NULL;
	char err[512] = "";
	int r;

	r = lb_config_merge(file, managed, &c, err, sizeof(err));
	if (r)
		fail_msg("merge: %d %s", r, err);
	assert_non_null(c);
	return c;
}

static const struct lb_listener_conf *named(const struct lb_config *c, const char *name)
{
	for (size_t i = 0; i < c->n_listeners; i++)
		if (!strcmp(c->listeners[i].name, name))
			return &c->listeners[i];
	fail_msg("no listener \"%s\"", name);
	return NULL;
}

#define LSN(name, listen, backends)                                                                \
	"{\"name\":\"" name "\",\"listen\":\"" listen "\",\"backends\":[" backends "]}"
#define BKD(addr) "{\"address\":\"" addr "\"}"
#define BKDW(addr, w) "{\"address\":\"" addr "\",\"weight\":" #w "}"

static void test_merge_file_only(void **state)
{
	struct lb_config *file = file_conf(FILE_TEXT), *none = managed_conf(""), *m;

	/* No apply yet (NULL) and an apply of no listeners mean the same. */
	for (int i = 0; i < 2; i++) {
		m = merge_ok(file, i ? none : NULL);
		assert_int_equal(m->n_listeners, 2);
		assert_string_equal(m->listeners[0].name, "web");
		assert_string_equal(m->listeners[1].name, "db");
		assert_false(m->listeners[0].managed);
		assert_false(m->listeners[1].managed);
		assert_int_equal(m->listeners[0].n_backends, 2);
		assert_string_equal(m->listeners[0].backends[1].addr_str, "10.0.0.2:80");
		/* A copy, not the file's arrays. */
		assert_ptr_not_equal(m->listeners, file->listeners);
		assert_ptr_not_equal(m->listeners[0].backends, file->listeners[0].backends);
		lb_config_free(m);
	}
	lb_config_free(none);
	lb_config_free(file);
}

static void test_merge_adds_managed(void **state)
{
	struct lb_config *file = file_conf(FILE_TEXT), *mg, *m;
	const struct lb_listener_conf *l;

	mg = managed_conf(LSN("api", "127.0.0.1:9000", BKD("10.0.2.1:80") "," BKD("10.0.2.2:80"))
				  "," LSN("v6", "[::1]:9000", BKD("[2001:db8::1]:80")));
	m = merge_ok(file, mg);
	assert_int_equal(m->n_listeners, 4);
	assert_false(named(m, "web")->managed);
	assert_false(named(m, "db")->managed);
	l = named(m, "api");
	assert_true(l->managed);
	assert_string_equal(l->listen_str, "127.0.0.1:9000");
	assert_int_equal(l->n_backends, 2);
	assert_string_equal(l->backends[1].addr_str, "10.0.2.2:80");
	assert_ptr_not_equal(l->backends, mg->listeners[0].backends);
	assert_true(named(m, "v6")->managed);
	lb_config_free(m);
	lb_config_free(mg);
	lb_config_free(file);
}

static void test_merge_managed_overrides(void **state)
{
	struct lb_config *file = file_conf(FILE_TEXT), *mg, *m;
	const struct lb_listener_conf *l;

	/* Same name, new address and backends: the managed one replaces the file's. */
	mg = managed_conf(LSN("web", "127.0.0.1:8081", BKDW("10.0.9.9:80", 7)));
	m = merge_ok(file, mg);
	assert_int_equal(m->n_listeners, 2);
	l = named(m, "web");
	assert_true(l->managed);
	assert_string_equal(l->listen_str, "127.0.0.1:8081");
	assert_int_equal(l->n_backends, 1);
	assert_string_equal(l->backends[0].addr_str, "10.0.9.9:80");
	assert_int_equal(l->backends[0].weight, 7);
	assert_false(named(m, "db")->managed);
	lb_config_free(m);
	lb_config_free(mg);

	/* Taking over the file listener's own address is no clash: that listener is replaced. */
	mg = managed_conf(LSN("web", "127.0.0.1:8080", BKD("10.0.9.9:80")));
	m = merge_ok(file, mg);
	assert_int_equal(m->n_listeners, 2);
	assert_true(named(m, "web")->managed);
	assert_int_equal(named(m, "web")->n_backends, 1);
	lb_config_free(m);
	lb_config_free(mg);
	lb_config_free(file);
}

static void expect_clash(const struct lb_config *file, const struct lb_config *mg,
			 const char *n1, const char *n2, const char *n3)
{
	struct lb_config *m = &untouched;
	char err[512] = "";

	assert_int_equal(lb_config_merge(file, mg, &m, err, sizeof(err)), -EINVAL);
	assert_ptr_equal(m, &untouched);
	if (!strstr(err, n1) || !strstr(err, n2) || !strstr(err, n3))
		fail_msg("want '%s', '%s' and '%s' in '%s'", n1, n2, n3, err);
}

static void test_merge_address_clash(void **state)
{
	struct lb_config *file = file_conf(FILE_TEXT), *mg;

	mg = managed_conf(LSN("api", "127.0.0.1:5432", BKD("10.0.2.1:80")));
	expect_clash(file, mg, "listener \"api\" would listen on 127.0.0.1:5432",
		     "config file listener \"db\"", "already the address");
	lb_config_free(mg);

	/* A managed web moved onto db's address clashes with db, not with the web it replaces. */
	mg = managed_conf(LSN("web", "127.0.0.1:5432", BKD("10.0.2.1:80")));
	expect_clash(file, mg, "listener \"web\"", "127.0.0.1:5432", "listener \"db\"");
	lb_config_free(mg);
	lb_config_free(file);
}

static void test_merge_keeps_top_level(void **state)
{
	struct lb_config *file = file_conf(FILE_TEXT), *mg, *m;
	char err[512] = "";

	mg = managed_conf(LSN("api", "127.0.0.1:9000", BKD("10.0.2.1:80")));
	m = merge_ok(file, mg);
	assert_int_equal(m->acceptors, 3);
	assert_true(m->log_level_set);
	assert_int_equal(m->log_level, LB_LOG_DEBUG);
	assert_string_equal(m->control_socket, "/run/lb/ctl.sock");
	assert_string_equal(m->metrics, "127.0.0.1:9100");
	assert_int_equal(m->drain_timeout_ms, 1500);
	assert_int_equal(m->buffer_size, 8192);
	assert_int_equal(m->buffer_count, 128);
	lb_config_free(m);
	lb_config_free(file);

	/* The file a configuration came from stays its name after a merge. */
	assert_int_equal(lb_config_load(DATA "full.yaml", &file, err, sizeof(err)), 0);
	m = merge_ok(file, mg);
	assert_string_equal(m->path, DATA "full.yaml");
	assert_int_equal(m->io_engine, file->io_engine);
	assert_int_equal(m->n_listeners, file->n_listeners + 1);
	lb_config_free(m);
	lb_config_free(mg);
	lb_config_free(file);
}

/* The merged configuration owns all it points to (AddressSanitizer catches a shared array). */
static void test_merge_independent(void **state)
{
	struct lb_config *file = file_conf(FILE_TEXT), *mg, *m;
	const struct lb_listener_conf *l;

	mg = managed_conf(LSN("web", "127.0.0.1:8081", BKD("10.0.9.9:80") "," BKD("10.0.9.8:80"))
				  "," LSN("api", "127.0.0.1:9000", BKD("10.0.2.1:80")));
	m = merge_ok(file, mg);
	memset(file->listeners[0].backends, 0xff, sizeof(*file->listeners[0].backends));
	lb_config_free(file);
	memset(mg->listeners[0].backends, 0xff, sizeof(*mg->listeners[0].backends));
	lb_config_free(mg);

	assert_int_equal(m->n_listeners, 3);
	assert_int_equal(m->buffer_size, 8192);
	l = named(m, "db");
	assert_string_equal(l->backends[0].addr_str, "10.0.1.1:5432");
	l = named(m, "web");
	assert_int_equal(l->n_backends, 2);
	assert_string_equal(l->backends[0].addr_str, "10.0.9.9:80");
	assert_string_equal(l->backends[1].addr_str, "10.0.9.8:80");
	assert_int_equal(l->backends[0].weight, 1);
	assert_string_equal(named(m, "api")->backends[0].addr_str, "10.0.2.1:80");
	lb_config_free(m);
}

/* ---- diff ---- */

static struct lb_config_diff diff(const char *old, const char *new)
{
	struct lb_config *o = managed_conf(old), *n = managed_conf(new);
	struct lb_config_diff d;

	memset(&d, 0xa5, sizeof(d));
	lb_config_diff(o, n, &d);
	lb_config_free(o);
	lb_config_free(n);
	return d;
}

static void assert_diff(const struct lb_config_diff *d, unsigned added, unsigned removed,
			unsigned changed, unsigned unchanged, unsigned b_added, unsigned b_removed)
{
	if (d->listeners_added != added || d->listeners_removed != removed ||
	    d->listeners_changed != changed || d->listeners_unchanged != unchanged ||
	    d->backends_added != b_added || d->backends_removed != b_removed)
		fail_msg("listeners +%u -%u ~%u =%u, backends +%u -%u; want +%u -%u ~%u =%u, "
			 "backends +%u -%u",
			 d->listeners_added, d->listeners_removed, d->listeners_changed,
			 d->listeners_unchanged, d->backends_added, d->backends_removed, added,
			 removed, changed, unchanged, b_added, b_removed);
}

#define WEB_AB LSN("web", "127.0.0.1:8080", BKD("10.0.0.1:80") "," BKD("10.0.0.2:80"))
#define DB_X LSN("db", "127.0.0.1:5432", BKD("10.0.1.1:5432"))

static void test_diff_same(void **state)
{
	struct lb_config_diff d;

	d = diff(WEB_AB "," DB_X, WEB_AB "," DB_X);
	assert_diff(&d, 0, 0, 0, 2, 0, 0);
	/* Listeners are matched by name, not position. */
	d = diff(WEB_AB "," DB_X, DB_X "," WEB_AB);
	assert_diff(&d, 0, 0, 0, 2, 0, 0);
	d = diff("", "");
	assert_diff(&d, 0, 0, 0, 0, 0, 0);
}

static void test_diff_from_and_to_nothing(void **state)
{
	struct lb_config *c = managed_conf(WEB_AB "," DB_X);
	struct lb_config_diff d;

	lb_config_diff(NULL, c, &d);
	assert_diff(&d, 2, 0, 0, 0, 3, 0);
	lb_config_diff(c, NULL, &d);
	assert_diff(&d, 0, 2, 0, 0, 0, 3);
	lb_config_free(c);

	d = diff("", WEB_AB);
	assert_diff(&d, 1, 0, 0, 0, 2, 0);
	d = diff(WEB_AB "," DB_X, "");
	assert_diff(&d, 0, 2, 0, 0, 0, 3);
}

static void test_diff_backends(void **state)
{
	struct lb_config_diff d;

	/* A,B -> B,C: one in, one out. */
	d = diff(WEB_AB "," DB_X,
		 LSN("web", "127.0.0.1:8080", BKD("10.0.0.2:80") "," BKD("10.0.0.3:80")) "," DB_X);
	assert_diff(&d, 0, 0, 1, 1, 1, 1);
	/* A weight is a change of the listener, not of the backend set. */
	d = diff(WEB_AB,
		 LSN("web", "127.0.0.1:8080", BKDW("10.0.0.1:80", 2) "," BKD("10.0.0.2:80")));
	assert_diff(&d, 0, 0, 1, 0, 0, 0);
	/* An explicit default weight is no change. */
	d = diff(WEB_AB,
		 LSN("web", "127.0.0.1:8080", BKDW("10.0.0.1:80", 1) "," BKD("10.0.0.2:80")));
	assert_diff(&d, 0, 0, 0, 1, 0, 0);
	/* Same set in another order: the rotation order changes, no backend comes or goes. */
	d = diff(WEB_AB, LSN("web", "127.0.0.1:8080", BKD("10.0.0.2:80") "," BKD("10.0.0.1:80")));
	assert_diff(&d, 0, 0, 1, 0, 0, 0);
	/* Grow and shrink. */
	d = diff(WEB_AB, LSN("web", "127.0.0.1:8080",
			     BKD("10.0.0.1:80") "," BKD("10.0.0.2:80") "," BKD("10.0.0.3:80")));
	assert_diff(&d, 0, 0, 1, 0, 1, 0);
	d = diff(WEB_AB, LSN("web", "127.0.0.1:8080", BKD("10.0.0.2:80")));
	assert_diff(&d, 0, 0, 1, 0, 0, 1);
	/* Backends match by address and port, not by text alone. */
	d = diff(WEB_AB, LSN("web", "127.0.0.1:8080", BKD("10.0.0.1:81") "," BKD("10.0.0.2:80")));
	assert_diff(&d, 0, 0, 1, 0, 1, 1);
}

static void test_diff_listener_settings(void **state)
{
	struct lb_config_diff d;

	d = diff(WEB_AB, LSN("web", "127.0.0.1:8081", BKD("10.0.0.1:80") "," BKD("10.0.0.2:80")));
	assert_diff(&d, 0, 0, 1, 0, 0, 0);
	d = diff(WEB_AB, "{\"name\":\"web\",\"listen\":\"127.0.0.1:8080\",\"algorithm\":\"maglev\","
			 "\"backends\":[" BKD("10.0.0.1:80") "," BKD("10.0.0.2:80") "]}");
	assert_diff(&d, 0, 0, 1, 0, 0, 0);
	d = diff(WEB_AB, "{\"name\":\"web\",\"listen\":\"127.0.0.1:8080\",\"health_check\":{},"
			 "\"backends\":[" BKD("10.0.0.1:80") "," BKD("10.0.0.2:80") "]}");
	assert_diff(&d, 0, 0, 1, 0, 0, 0);
	d = diff(WEB_AB, "{\"name\":\"web\",\"listen\":\"127.0.0.1:8080\",\"idle_timeout_ms\":5,"
			 "\"backends\":[" BKD("10.0.0.1:80") "," BKD("10.0.0.2:80") "]}");
	assert_diff(&d, 0, 0, 1, 0, 0, 0);
	d = diff(WEB_AB, "{\"name\":\"web\",\"listen\":\"127.0.0.1:8080\","
			 "\"proxy_protocol\":\"v1\","
			 "\"backends\":[" BKD("10.0.0.1:80") "," BKD("10.0.0.2:80") "]}");
	assert_diff(&d, 0, 0, 1, 0, 0, 0);
	/* Defaults written out are the same listener. */
	d = diff(WEB_AB, "{\"name\":\"web\",\"listen\":\"127.0.0.1:8080\",\"protocol\":\"tcp\","
			 "\"connect_timeout_ms\":3000,\"algorithm\":\"round_robin\","
			 "\"proxy_protocol\":\"off\","
			 "\"backends\":[" BKD("10.0.0.1:80") "," BKD("10.0.0.2:80") "]}");
	assert_diff(&d, 0, 0, 0, 1, 0, 0);
}

static void test_diff_rename(void **state)
{
	struct lb_config_diff d;

	/* A new name is a new listener: its backends all count as new, the old ones as gone. */
	d = diff(WEB_AB "," DB_X,
		 LSN("www", "127.0.0.1:8080", BKD("10.0.0.1:80") "," BKD("10.0.0.2:80")) "," DB_X);
	assert_diff(&d, 1, 1, 0, 1, 2, 2);
	/* Add one, remove one, change one, keep one. */
	d = diff(WEB_AB "," DB_X "," LSN("old", "127.0.0.1:7000", BKD("10.0.5.1:80")),
		 LSN("web", "127.0.0.1:8080", BKD("10.0.0.1:80")) "," DB_X "," LSN(
			 "new", "127.0.0.1:7001", BKD("10.0.6.1:80") "," BKD("10.0.6.2:80")));
	assert_diff(&d, 1, 1, 1, 1, 2, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_merge_file_only),
		cmocka_unit_test(test_merge_adds_managed),
		cmocka_unit_test(test_merge_managed_overrides),
		cmocka_unit_test(test_merge_address_clash),
		cmocka_unit_test(test_merge_keeps_top_level),
		cmocka_unit_test(test_merge_independent),
		cmocka_unit_test(test_diff_same),
		cmocka_unit_test(test_diff_from_and_to_nothing),
		cmocka_unit_test(test_diff_backends),
		cmocka_unit_test(test_diff_listener_settings),
		cmocka_unit_test(test_diff_rename),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
