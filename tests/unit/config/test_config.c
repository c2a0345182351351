/* test_config.c - lb.yaml parsing: every key, defaults, and a message for each kind of mistake. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/config.h"

#define DATA LB_TEST_DATA "/config/"

/*
 * A valid one-listener file.  Line numbers: 1 listeners, 2 name, 3 listen, 4 backends,
 * 5 address; text appended to it starts at line 6.
 */
#define BASE                                                                                       \
	"listeners:\n"                                                                             \
	"  - name: web\n"                                                                          \
	"    listen: 127.0.0.1:8080\n"                                                             \
	"    backends:\n"                                                                          \
	"      - address: 127.0.0.1:9001\n"
#define LKEY "    "     /* indent of a listener key */
#define BKEY "        " /* indent of a key in backends[0] */

static struct lb_config untouched;

static struct lb_config *parse_ok(const char *text)
{
	struct lb_config *c = NULL;
	char err[512] = "";
	int r;

	r = lb_config_parse(text, strlen(text), "t.yaml", &c, err, sizeof(err));
	if (r != 0)
		fail_msg("unexpected error %d: %s\n--- input:\n%s", r, err, text);
	assert_non_null(c);
	return c;
}

/* Parsing must fail with "t.yaml:<line>: " and mention every needle; *ret stays as it was. */
static void expect_error(const char *text, int line, const char *n1, const char *n2)
{
	struct lb_config *c = &untouched;
	char err[1024] = "", prefix[32];
	int r;

	r = lb_config_parse(text, strlen(text), "t.yaml", &c, err, sizeof(err));
	if (r != -EINVAL)
		fail_msg("want -EINVAL, got %d (%s)\n--- input:\n%s", r, err, text);
	assert_ptr_equal(c, &untouched);
	snprintf(prefix, sizeof(prefix), "t.yaml:%d: ", line);
	if (strncmp(err, prefix, strlen(prefix)) != 0)
		fail_msg("want prefix '%s', got '%s'\n--- input:\n%s", prefix, err, text);
	if (n1 && !strstr(err, n1))
		fail_msg("want '%s' in '%s'", n1, err);
	if (n2 && !strstr(err, n2))
		fail_msg("want '%s' in '%s'", n2, err);
}

static void assert_addr(const struct lb_addr *a, int family, const char *ip, unsigned port)
{
	char buf[INET6_ADDRSTRLEN];

	assert_int_equal(a->ss.ss_family, family);
	if (family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)&a->ss;

		inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf));
		assert_int_equal(ntohs(sin->sin_port), port);
		assert_int_equal(a->len, sizeof(*sin));
	} else {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a->ss;

		inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof(buf));
		assert_int_equal(ntohs(sin6->sin6_port), port);
		assert_int_equal(a->len, sizeof(*sin6));
	}
	assert_string_equal(buf, ip);
}

static void test_full_file(void **state)
{
	struct lb_config *c = NULL;
	const struct lb_listener_conf *l;
	char err[512] = "";

	assert_int_equal(lb_config_load(DATA "full.yaml", &c, err, sizeof(err)), 0);
	assert_string_equal(c->path, DATA "full.yaml");
	assert_int_equal(c->acceptors, 4);
	assert_true(c->log_level_set);
	assert_int_equal(c->log_level, LB_LOG_DEBUG);
	assert_string_equal(c->control_socket, "/run/layer4-lb/control.sock");
	assert_string_equal(c->metrics, "127.0.0.1:9100");
	assert_int_equal(c->io_engine, LB_ENGINE_EPOLL);
	assert_int_equal(c->drain_timeout_ms, 5000);
	assert_int_equal(c->buffer_size, 16384);
	assert_int_equal(c->buffer_count, 256);
	assert_int_equal(c->n_listeners, 2);

	l = &c->listeners[0];
	assert_string_equal(l->name, "web");
	assert_int_equal(l->line, 11);
	assert_addr(&l->listen, AF_INET, "0.0.0.0", 8080);
	assert_string_equal(l->listen_str, "0.0.0.0:8080");
	assert_int_equal(l->algorithm, LB_ALGO_LEAST_CONN);
	assert_int_equal(l->n_backends, 2);
	assert_addr(&l->backends[0].addr, AF_INET, "10.0.0.1", 80);
	assert_string_equal(l->backends[0].addr_str, "10.0.0.1:80");
	assert_int_equal(l->backends[0].weight, 5);
	assert_string_equal(l->backends[1].addr_str, "10.0.0.2:8080");
	assert_int_equal(l->backends[1].weight, 1);
	assert_true(l->health.enabled);
	assert_int_equal(l->health.interval_ms, 500);
	assert_int_equal(l->health.timeout_ms, 250);
	assert_int_equal(l->health.rise, 4);
	assert_int_equal(l->health.fall, 6);
	assert_int_equal(l->connect_timeout_ms, 1500);
	assert_int_equal(l->idle_timeout_ms, 60000);
	assert_int_equal(l->max_connections, 5000);
	assert_int_equal(l->connect_retries, 0);
	assert_int_equal(l->max_fails, 7);
	assert_int_equal(l->fail_timeout_ms, 20000);
	assert_int_equal(l->proxy_protocol, LB_PROXY_OFF);

	l = &c->listeners[1];
	assert_string_equal(l->name, "db.primary-1");
	assert_int_equal(l->line, 30);
	assert_addr(&l->listen, AF_INET6, "::", 5432);
	assert_string_equal(l->listen_str, "[::]:5432");
	assert_int_equal(l->algorithm, LB_ALGO_MAGLEV);
	assert_int_equal(l->proxy_protocol, LB_PROXY_V2);
	assert_int_equal(l->n_backends, 1);
	assert_addr(&l->backends[0].addr, AF_INET6, "fd00::10", 5432);
	assert_string_equal(l->backends[0].addr_str, "[fd00::10]:5432");
	assert_int_equal(l->backends[0].weight, 256);
	assert_false(l->health.enabled);
	lb_config_free(c);
}

static void test_defaults(void **state)
{
	struct lb_config *c = NULL;
	const struct lb_listener_conf *l;
	char err[512] = "";

	assert_int_equal(lb_config_load(DATA "minimal.yaml", &c, err, sizeof(err)), 0);
	assert_int_equal(c->acceptors, 0);
	assert_false(c->log_level_set);
	assert_int_equal(c->log_level, LB_LOG_INFO);
	assert_string_equal(c->control_socket, "");
	assert_string_equal(c->metrics, "");
	assert_int_equal(c->io_engine, LB_ENGINE_AUTO);
	assert_int_equal(c->drain_timeout_ms, 30000);
	assert_int_equal(c->buffer_size, 524288);
	assert_int_equal(c->buffer_count, 512);
	assert_int_equal(c->n_listeners, 1);
	l = &c->listeners[0];
	assert_int_equal(l->line, 2);
	assert_int_equal(l->algorithm, LB_ALGO_ROUND_ROBIN);
	assert_int_equal(l->backends[0].weight, 1);
	assert_false(l->health.enabled);
	/* Defaults are in place even without a health_check block, for status output. */
	assert_int_equal(l->health.interval_ms, 2000);
	assert_int_equal(l->health.timeout_ms, 1000);
	assert_int_equal(l->health.rise, 2);
	assert_int_equal(l->health.fall, 3);
	assert_int_equal(l->connect_timeout_ms, 3000);
	assert_int_equal(l->idle_timeout_ms, 300000);
	assert_int_equal(l->max_connections, 100000);
	assert_int_equal(l->connect_retries, 2);
	assert_int_equal(l->max_fails, 3);
	assert_int_equal(l->fail_timeout_ms, 10000);
	assert_int_equal(l->proxy_protocol, LB_PROXY_OFF);
	lb_config_free(c);
}

static void test_health_block_defaults(void **state)
{
	struct lb_config *c;

	/* "health_check:" with nothing under it turns checks on with the defaults. */
	c = parse_ok(BASE LKEY "health_check:\n");
	assert_true(c->listeners[0].health.enabled);
	assert_int_equal(c->listeners[0].health.interval_ms, 2000);
	assert_int_equal(c->listeners[0].health.timeout_ms, 1000);
	lb_config_free(c);

	c = parse_ok(BASE LKEY "health_check: {rise: 1}\n");
	assert_true(c->listeners[0].health.enabled);
	assert_int_equal(c->listeners[0].health.rise, 1);
	assert_int_equal(c->listeners[0].health.fall, 3);
	lb_config_free(c);
}

static void test_acceptors_auto_and_edges(void **state)
{
	struct lb_config *c;

	c = parse_ok("acceptors: auto\n" BASE);
	assert_int_equal(c->acceptors, 0);
	lb_config_free(c);
	c = parse_ok("acceptors: 1024\nbuffer_size: 1048576\nbuffer_count: 32768\n"
		     "drain_timeout_ms: 0\n" BASE);
	assert_int_equal(c->acceptors, 1024);
	assert_int_equal(c->buffer_size, 1048576);
	assert_int_equal(c->buffer_count, 32768);
	assert_int_equal(c->drain_timeout_ms, 0);
	lb_config_free(c);
	/* Quoted numbers are still numbers. */
	c = parse_ok(BASE BKEY "weight: \"7\"\n");
	assert_int_equal(c->listeners[0].backends[0].weight, 7);
	lb_config_free(c);
}

static void test_ipv6(void **state)
{
	struct lb_config *c;

	c = parse_ok("metrics: \"[::1]:9100\"\n"
		     "listeners:\n"
		     "  - name: v6\n"
		     "    listen: \"[2001:db8::1]:443\"\n"
		     "    backends:\n"
		     "      - address: \"[::1]:8443\"\n"
		     "      - address: '[2001:DB8::A]:8443'\n");
	assert_string_equal(c->metrics, "[::1]:9100");
	assert_addr(&c->listeners[0].listen, AF_INET6, "2001:db8::1", 443);
	assert_string_equal(c->listeners[0].listen_str, "[2001:db8::1]:443");
	assert_addr(&c->listeners[0].backends[0].addr, AF_INET6, "::1", 8443);
	assert_string_equal(c->listeners[0].backends[1].addr_str, "[2001:db8::a]:8443");
	lb_config_free(c);
}

/* A Kubernetes "namespace/name" is a valid listener name. */
static void test_namespaced_listener_name(void **state)
{
	struct lb_config *c = parse_ok("listeners:\n  - name: default/web\n    listen: 127.0.0.1:80\n"
				       "    backends:\n      - address: 10.0.0.1:80\n");

	assert_string_equal(c->listeners[0].name, "default/web");
	lb_config_free(c);
}

static void test_names(void **state)
{
	assert_string_equal(lb_algo_name(LB_ALGO_ROUND_ROBIN), "round_robin");
	assert_string_equal(lb_algo_name(LB_ALGO_LEAST_CONN), "least_conn");
	assert_string_equal(lb_algo_name(LB_ALGO_RANDOM_TWO), "random_two");
	assert_string_equal(lb_algo_name(LB_ALGO_MAGLEV), "maglev");
	assert_string_equal(lb_algo_name((enum lb_algo)42), "?");
	assert_string_equal(lb_engine_name(LB_ENGINE_AUTO), "auto");
	assert_string_equal(lb_engine_name(LB_ENGINE_IO_URING), "io_uring");
	assert_string_equal(lb_engine_name(LB_ENGINE_EPOLL), "epoll");
	assert_string_equal(lb_engine_name((enum lb_io_engine)42), "?");
	lb_config_free(NULL);
}

static void test_exact_message(void **state)
{
	const char *text = BASE BKEY "weight: abc\n";
	struct lb_config *c = &untouched;
	char err[512];

	assert_int_equal(lb_config_parse(text, strlen(text), "lb.yaml", &c, err, sizeof(err)),
			 -EINVAL);
	assert_string_equal(err, "lb.yaml:6: listeners[0].backends[0].weight: must be an integer "
				 "between 1 and 256, got \"abc\"");
	/* A caller may not want the message. */
	assert_int_equal(lb_config_parse("x: [", 4, "t", &c, NULL, 0), -EINVAL);
	assert_ptr_equal(c, &untouched);
}

static void test_unknown_and_duplicate_keys(void **state)
{
	expect_error(BASE BKEY "wieght: 2\n", 6, "listeners[0].backends[0]", "\"wieght\"");
	expect_error("acceptor: 4\n" BASE, 1, "unknown key", "\"acceptor\"");
	expect_error(BASE LKEY "helth_check:\n", 6, "listeners[0]", "\"helth_check\"");
	expect_error(BASE LKEY "health_check:\n" LKEY "  intervall_ms: 5\n", 7,
		     "listeners[0].health_check", "\"intervall_ms\"");
	expect_error(BASE LKEY "listen: 127.0.0.1:8081\n", 6, "listeners[0].listen",
		     "duplicate key (first at line 3)");
	expect_error("log_level: info\n" BASE "log_level: warn\n", 7, "log_level",
		     "duplicate key");
	expect_error(BASE BKEY "weight: 1\n" BKEY "weight: 2\n", 7,
		     "listeners[0].backends[0].weight", "duplicate");
	expect_error(BASE "listeners: []\n", 6, "listeners", "duplicate");
	expect_error(BASE LKEY "? [a]\n" LKEY ": 1\n", 6, "listeners[0]", "keys");
}

/* Every integer key refuses what is not a plain decimal number. */
static void test_bad_integers(void **state)
{
	static const char *const bad[] = { "abc", "-1", "1.5", "0x10", "1e3", "12abc", "010",
					   "99999999999999999999", "\"\"", "4294967297", "[1]",
					   "{a: 1}", "", "+5", "true" };
	char text[512];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text), BASE LKEY "connect_timeout_ms: %s\n", bad[i]);
		expect_error(text, 6, "listeners[0].connect_timeout_ms",
			     "must be an integer between 1 and 600000");
	}
}

static void test_out_of_range(void **state)
{
	static const struct {
		const char *text;
		int line;
		const char *key, *what;
	} cases[] = {
		{ BASE BKEY "weight: 257\n", 6, "listeners[0].backends[0].weight", "got \"257\"" },
		{ BASE BKEY "weight: 0\n", 6, "listeners[0].backends[0].weight", "1 and 256" },
		{ "acceptors: 0\n" BASE, 1, "acceptors", "\"auto\" or an integer between 1 and" },
		{ "acceptors: 1025\n" BASE, 1, "acceptors", "got \"1025\"" },
		{ "acceptors: many\n" BASE, 1, "acceptors", "got \"many\"" },
		{ "buffer_size: 5000\n" BASE, 1, "buffer_size", "power of two between 4096" },
		{ "buffer_size: 2048\n" BASE, 1, "buffer_size", "got \"2048\"" },
		{ "buffer_size: 2097152\n" BASE, 1, "buffer_size", "1048576" },
		{ "buffer_count: 32\n" BASE, 1, "buffer_count", "between 64 and 32768" },
		{ "buffer_count: 100\n" BASE, 1, "buffer_count", "power of two" },
		{ "drain_timeout_ms: 3600001\n" BASE, 1, "drain_timeout_ms", "0 and 3600000" },
		{ BASE LKEY "connect_timeout_ms: 0\n", 6, "connect_timeout_ms", "1 and 600000" },
		{ BASE LKEY "idle_timeout_ms: 86400001\n", 6, "idle_timeout_ms", "86400000" },
		{ BASE LKEY "max_connections: 10000001\n", 6, "max_connections", "10000000" },
		{ BASE LKEY "connect_retries: 17\n", 6, "connect_retries", "0 and 16" },
		{ BASE LKEY "max_fails: 1001\n", 6, "max_fails", "0 and 1000" },
		{ BASE LKEY "fail_timeout_ms: 99\n", 6, "fail_timeout_ms", "100 and 3600000" },
		{ BASE LKEY "health_check:\n" LKEY "  interval_ms: 99\n", 7,
		  "listeners[0].health_check.interval_ms", "100 and 3600000" },
		{ BASE LKEY "health_check:\n" LKEY "  timeout_ms: 9\n", 7,
		  "listeners[0].health_check.timeout_ms", "10 and 3600000" },
		{ BASE LKEY "health_check:\n" LKEY "  rise: 101\n", 7, "health_check.rise",
		  "1 and 100" },
		{ BASE LKEY "health_check:\n" LKEY "  fall: 0\n", 7, "health_check.fall",
		  "1 and 100" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		expect_error(cases[i].text, cases[i].line, cases[i].key, cases[i].what);
}

static void test_bad_strings(void **state)
{
	expect_error(BASE LKEY "algorithm: fastest\n", 6, "listeners[0].algorithm",
		     "one of round_robin, least_conn, random_two, maglev, got \"fastest\"");
	expect_error("log_level: verbose\n" BASE, 1, "log_level",
		     "one of error, warn, info, debug");
	expect_error("io_engine: dpdk\n" BASE, 1, "io_engine", "one of auto, io_uring, epoll");
	expect_error(BASE LKEY "proxy_protocol: v3\n", 6, "listeners[0].proxy_protocol",
		     "one of off, v1, v2, got \"v3\"");
	expect_error("control_socket: run/lb.sock\n" BASE, 1, "control_socket", "absolute path");
	expect_error("control_socket: /"
		     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n" BASE,
		     1, "control_socket", "shorter than 108 bytes");
	expect_error("control_socket: [/a]\n" BASE, 1, "control_socket", "got a list");
	expect_error("listeners:\n  - name: web server\n", 2, "listeners[0].name",
		     "got \"web server\"");
	expect_error("listeners:\n  - name: \"\"\n", 2, "listeners[0].name", "1 to 255");
	/* 256 characters: one too many (255 fit, room for namespace/name/listener). */
	expect_error("listeners:\n  - name: "
		     "a123456789012345678901234567890123456789012345678901234567890123"
		     "a123456789012345678901234567890123456789012345678901234567890123"
		     "a123456789012345678901234567890123456789012345678901234567890123"
		     "a123456789012345678901234567890123456789012345678901234567890123\n",
		     2, "listeners[0].name", "1 to 255");
	expect_error("listeners:\n  - name: \"a\\0b\"\n", 2, "listeners[0].name", "NUL");
	expect_error("listeners:\n  - name: \"a\\tb\"\n", 2, "listeners[0].name", "got \"a?b\"");
	expect_error(BASE LKEY "protocol: sctp\n", 6, "listeners[0].protocol",
		     "one of tcp, udp, got \"sctp\"");
}

static void test_bad_addresses(void **state)
{
	static const struct {
		const char *value, *why;
	} cases[] = {
		{ "localhost:80", "host names are not supported" },
		{ "10.0.0.1", "missing port" },
		{ "10.0.0.1:", "missing port" },
		{ "10.0.0.1:0", "port" },
		{ "10.0.0.1:65536", "port" },
		{ "10.0.0.1:80x", "port" },
		{ "10.0.0.256:80", "not a valid IPv4 address" },
		{ "::1:80", "[addr]:port" },
		{ "[::1]", "missing port" },
		{ "[::1:80", "missing ']'" },
		{ "[zz::1]:80", "not a valid IPv6 address" },
		{ "", "empty" },
		{ "10.0.0.1:0080", "leading zeros" },
		/* Would be a second backend next to 10.0.0.1:80, doubling its share. */
		{ "[::ffff:10.0.0.1]:80", "IPv4-mapped IPv6 addresses are not supported" },
		{ "0.0.0.0:80", "the unspecified address cannot be a backend" },
		{ "[::]:80", "the unspecified address cannot be a backend" },
		{ "255.255.255.255:80", "broadcast" },
		{ "224.0.0.1:80", "multicast address cannot be a TCP backend" },
		{ "[ff02::1]:80", "multicast" },
	};
	char text[512];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(text, sizeof(text),
			 "listeners:\n  - name: web\n    listen: 127.0.0.1:80\n    backends:\n"
			 "      - address: '%s'\n",
			 cases[i].value);
		expect_error(text, 5, "listeners[0].backends[0].address: invalid address",
			     cases[i].why);
	}
	expect_error("listeners:\n  - name: web\n    listen: example.com:80\n", 3,
		     "listeners[0].listen", "host names");
	expect_error("metrics: 9100\n" BASE, 1, "metrics", "missing port");
	expect_error("listeners:\n  - name: web\n    listen: 224.0.0.1:80\n", 3,
		     "listeners[0].listen: invalid address \"224.0.0.1:80\"",
		     "a multicast address cannot accept TCP connections");
	expect_error("listeners:\n  - name: web\n    listen: '[ff02::1]:80'\n", 3,
		     "listeners[0].listen", "multicast");
	expect_error("listeners:\n  - name: web\n    listen: 127.0.0.1:080\n", 3,
		     "listeners[0].listen", "leading zeros");
	expect_error("listeners:\n  - name: web\n    listen: '[::ffff:127.0.0.1]:80'\n", 3,
		     "listeners[0].listen", "IPv4-mapped");
	expect_error("metrics: 239.1.1.1:9100\n" BASE, 1, "metrics", "multicast");
	expect_error(BASE BKEY "address: 127.0.0.1:9002\n", 6, "address", "duplicate key");
}

static void test_missing_required(void **state)
{
	expect_error("acceptors: 2\n", 1, "missing required key", "\"listeners\"");
	expect_error("", 1, "empty", "listeners");
	expect_error("# nothing but a comment\n", 1, "empty", "listeners");
	expect_error("acceptors: 2\nlisteners: []\n", 2, "listeners", "got an empty list");
	expect_error("listeners:\n", 1, "listeners", "got nothing");
	expect_error("listeners:\n  web: {}\n", 2, "listeners", "got a mapping");
	expect_error("listeners:\n  - listen: 127.0.0.1:80\n    backends: [{address: 1.2.3.4:5}]\n",
		     2, "listeners[0]", "missing required key \"name\"");
	expect_error("listeners:\n  - name: web\n    backends: [{address: 1.2.3.4:5}]\n", 2,
		     "listeners[0]", "missing required key \"listen\"");
	expect_error("listeners:\n  - name: web\n    listen: 127.0.0.1:80\n", 2, "listeners[0]",
		     "missing required key \"backends\"");
	expect_error("listeners:\n  - name: web\n    listen: 127.0.0.1:80\n    backends: []\n", 4,
		     "listeners[0].backends", "got an empty list (only listeners applied over the "
		     "control socket may have none)");
	expect_error("listeners:\n  - name: web\n    listen: 127.0.0.1:80\n    backends:\n", 4,
		     "listeners[0].backends", "list of 1 to 4096 backends");
	expect_error(BASE "      - weight: 2\n", 6, "listeners[0].backends[1]",
		     "missing required key \"address\"");
	expect_error(BASE "      - 127.0.0.1:9002\n", 6, "listeners[0].backends[1]",
		     "must be a mapping");
	expect_error("listeners:\n  - web\n", 2, "listeners[0]", "must be a mapping");
	expect_error("just a string\n", 1, "must be a mapping", NULL);
}

/* The Kubernetes pod's dataplane: a control socket, and listeners only from applies. */
static void test_control_socket_without_listeners(void **state)
{
	struct lb_config *c;

	c = parse_ok("control_socket: /run/lb.sock\n");
	assert_int_equal(c->n_listeners, 0);
	assert_string_equal(c->control_socket, "/run/lb.sock");
	lb_config_free(c);
	/* Wherever the key stands: listeners before control_socket. */
	c = parse_ok("listeners: []\ncontrol_socket: /run/lb.sock\n");
	assert_int_equal(c->n_listeners, 0);
	lb_config_free(c);
	expect_error("log_level: info\n", 1, "missing required key \"listeners\"",
		     "only when control_socket is set");
}

static void test_duplicates(void **state)
{
	/* Lines: 6 "- name", 7 listen, 8 backends, 9 address. */
	expect_error(BASE "  - name: web\n" LKEY "listen: 127.0.0.1:8081\n" LKEY "backends:\n"
			  "      - address: 127.0.0.1:9001\n",
		     6, "listeners[1].name: duplicate listener name \"web\"", "line 2");
	expect_error(BASE "  - name: api\n" LKEY "listen: 127.0.0.1:8080\n" LKEY "backends:\n"
			  "      - address: 127.0.0.1:9001\n",
		     7, "listeners[1].listen", "127.0.0.1:8080 is already the address of listener");
	expect_error(BASE "      - address: 127.0.0.1:9002\n"
			  "      - address: 127.0.0.1:9001\n",
		     7, "listeners[0].backends[2].address: duplicate backend 127.0.0.1:9001",
		     "backends[0]");
	/* The same IPv6 address written two ways is the same backend. */
	expect_error("listeners:\n  - name: web\n    listen: 127.0.0.1:80\n    backends:\n"
		     "      - address: '[2001:db8::1]:80'\n"
		     "      - address: '[2001:DB8:0::1]:80'\n",
		     6, "duplicate backend [2001:db8::1]:80", NULL);
}

static void test_health_timeout_vs_interval(void **state)
{
	expect_error(BASE LKEY "health_check:\n" LKEY "  timeout_ms: 2000\n", 7,
		     "listeners[0].health_check.timeout_ms", "less than interval_ms (2000)");
	expect_error(BASE LKEY "health_check:\n" LKEY "  interval_ms: 500\n", 7,
		     "health_check.timeout_ms", "got 1000");
	expect_error(BASE LKEY "health_check:\n" LKEY "  timeout_ms: 600\n" LKEY
			       "  interval_ms: 500\n",
		     7, "health_check.timeout_ms", NULL);
	expect_error(BASE LKEY "health_check: [1]\n", 6, "listeners[0].health_check",
		     "must be a mapping");
}

static void test_yaml_syntax(void **state)
{
	/* Lines: 1 listeners, 2 name, 3 listen, 4 a key indented wrongly. */
	expect_error("listeners:\n  - name: web\n    listen: 127.0.0.1:80\n   backends: []\n", 4,
		     "YAML syntax error", NULL);
	expect_error("acceptors: 2\nlog_level: \"info\n", 3, "YAML syntax error", "quoted scalar");
	expect_error("acceptors: 2\n\tlog_level: info\n", 2, "YAML syntax error", NULL);
	expect_error("acceptors: 2\nfoo: \xff\xfe\n", 2, "YAML syntax error", "UTF-8");
	expect_error(BASE "---\n" BASE, 6, "only one YAML document", NULL);
}

static void test_unreadable(void **state)
{
	struct lb_config *c = &untouched;
	char err[512];

	assert_int_equal(lb_config_load(DATA "does-not-exist.yaml", &c, err, sizeof(err)),
			 -ENOENT);
	assert_ptr_equal(c, &untouched);
	assert_string_equal(err,
			    "cannot read " DATA "does-not-exist.yaml: No such file or directory");
	assert_int_equal(lb_config_load(DATA, &c, err, sizeof(err)), -EISDIR);
	assert_non_null(strstr(err, "cannot read"));
	assert_ptr_equal(c, &untouched);
}

/* The file name in messages is the path given to lb_config_load. */
static void test_load_error_names_file(void **state)
{
	char path[] = "/tmp/lb-config-test-XXXXXX", err[512], want[128];
	struct lb_config *c = &untouched;
	FILE *f;
	int fd;

	fd = mkstemp(path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	fputs("listeners:\n  - name: web\n    listen: 127.0.0.1:80\n    algorithm: rr\n", f);
	fclose(f);
	assert_int_equal(lb_config_load(path, &c, err, sizeof(err)), -EINVAL);
	unlink(path);
	snprintf(want, sizeof(want), "%s:4: listeners[0].algorithm:", path);
	assert_memory_equal(err, want, strlen(want));
	assert_ptr_equal(c, &untouched);
}

/* Appends n backends 10.x.y.z:80 to a listener. */
static char *many_backends(size_t n)
{
	size_t cap = 128 + n * 40, len;
	char *t = malloc(cap);

	assert_non_null(t);
	len = (size_t)snprintf(t, cap, "listeners:\n  - name: big\n    listen: 127.0.0.1:80\n"
				       "    backends:\n");
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(t + len, cap - len, "      - address: 10.%zu.%zu.1:80\n",
					i / 256, i % 256);
	return t;
}

static void test_backend_limit(void **state)
{
	struct lb_config *c;
	char *t;

	t = many_backends(LB_BACKENDS_MAX);
	c = parse_ok(t);
	assert_int_equal(c->listeners[0].n_backends, LB_BACKENDS_MAX);
	lb_config_free(c);
	free(t);
	t = many_backends(LB_BACKENDS_MAX + 1);
	expect_error(t, 5, "listeners[0].backends", "got 4097");
	free(t);
}

/* A temporary file with text; the caller unlinks it. */
static void write_tmp(char *path, const char *text, size_t len)
{
	int fd;

	strcpy(path, "/tmp/lb-config-test-XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	close(fd);
}

/*
 * A FIFO at the config path blocked the main thread in open() on SIGHUP, for ever.  The hang
 * guard turns a block into a failure.
 */
static void test_fifo_refused(void **state)
{
	char path[] = "/tmp/lb-config-fifo-XXXXXX", err[512];
	struct lb_config *c = &untouched;
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	close(fd);
	unlink(path);
	assert_int_equal(mkfifo(path, 0600), 0);
	alarm(10);
	assert_int_equal(lb_config_load(path, &c, err, sizeof(err)), -EINVAL);
	alarm(0);
	unlink(path);
	assert_ptr_equal(c, &untouched);
	assert_non_null(strstr(err, "not a regular file"));
	assert_int_equal(strncmp(err, "cannot read /tmp/lb-config-fifo-", 32), 0);
}

/* Text after a NUL was silently ignored by readers that stop at it. */
static void test_nul_byte(void **state)
{
	static const char text[] = BASE "\0listeners: []\n";
	struct lb_config *c = &untouched;
	char err[512], path[64];

	assert_int_equal(lb_config_parse(text, sizeof(text) - 1, "t.yaml", &c, err, sizeof(err)),
			 -EINVAL);
	assert_string_equal(err, "t.yaml:6: a NUL byte: the file must be YAML (or JSON) text");
	assert_int_equal(lb_config_parse_listeners(text, sizeof(text) - 1, "a.yaml", &c, err,
						   sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "a.yaml:6: a NUL byte"));
	write_tmp(path, text, sizeof(text) - 1);
	assert_int_equal(lb_config_load(path, &c, err, sizeof(err)), -EINVAL);
	unlink(path);
	assert_non_null(strstr(err, ":6: a NUL byte"));
	assert_ptr_equal(c, &untouched);
}

/* Listener i (from 1) uses the first listener's backends through an alias. */
static char *aliased(size_t listeners, size_t backends, size_t *ret_len)
{
	size_t cap = 256 + backends * 40 + listeners * 96, len;
	char *t = malloc(cap);

	assert_non_null(t);
	len = (size_t)snprintf(t, cap, "listeners:\n  - name: l0\n    listen: 127.0.255.255:1000\n"
				       "    backends: &b\n");
	for (size_t i = 0; i < backends; i++)
		len += (size_t)snprintf(t + len, cap - len, "      - address: 10.%zu.%zu.1:80\n",
					i / 256, i % 256);
	for (size_t i = 1; i < listeners; i++)
		len += (size_t)snprintf(t + len, cap - len,
					"  - name: l%zu\n    listen: 127.0.%zu.%zu:1000\n"
					"    backends: *b\n",
					i, i / 256, i % 256);
	*ret_len = len;
	return t;
}

/*
 * Aliases made 160 KB of YAML into 4 million backends (7 s and 1 GB for --check).  The budget
 * is 262144 in all listeners; the error names the listener that goes over.
 */
static void test_backend_budget(void **state)
{
	struct lb_config *c;
	size_t len;
	char *t;

	t = aliased(1024, 256, &len);
	c = parse_ok(t);
	assert_int_equal(c->n_listeners, 1024);
	assert_int_equal(c->listeners[1023].n_backends, 256);
	lb_config_free(c);
	free(t);
	/* Listener 873 takes the total to 874 * 300 = 262200; its name is at line 305 + 872 * 3. */
	t = aliased(1024, 300, &len);
	expect_error(t, 2921, "listeners[873].backends: more than 262144 backends in all listeners",
		     "alias");
	free(t);
}

/* Merged, the file's and the managed listeners are one configuration too. */
static void test_backend_budget_merged(void **state)
{
	struct lb_config *file, *managed, *m = &untouched;
	char err[256];
	size_t len;
	char *t;

	t = aliased(600, 256, &len);
	file = parse_ok(t);
	free(t);
	t = aliased(500, 256, &len);
	for (char *q = t; (q = strstr(q, "127.0.")); q += 6)
		q[4] = '1'; /* 127.1.x.y: other addresses than the file's */
	assert_int_equal(lb_config_parse_listeners(t, len, "a", &managed, err, sizeof(err)), 0);
	for (size_t i = 0; i < managed->n_listeners; i++)
		managed->listeners[i].name[0] = 'm'; /* other names too */
	free(t);
	assert_int_equal(lb_config_merge(file, managed, &m, err, sizeof(err)), -EINVAL);
	assert_ptr_equal(m, &untouched);
	assert_string_equal(err, "the file's and the managed listeners together would have 281600 "
				 "backends, more than 262144");
	lb_config_free(file);
	lb_config_free(managed);
}

/* A udp listener: its own defaults, and keys of the other protocol refused by name. */
static void test_udp(void **state)
{
	struct lb_config *c = parse_ok(BASE LKEY "protocol: udp\n");
	const struct lb_listener_conf *l = &c->listeners[0];

	assert_int_equal(l->protocol, LB_PROTO_UDP);
	assert_int_equal(l->idle_timeout_ms, 30000); /* tcp's default is 300000 */
	assert_int_equal(l->responses, 0);
	assert_int_equal(l->max_flows, 16384);
	lb_config_free(c);
	c = parse_ok(BASE LKEY "protocol: udp\n" LKEY "idle_timeout_ms: 5000\n" LKEY
		     "responses: 1\n" LKEY "max_flows: 2\n" LKEY
		     "health_check: {port: 53}\n");
	l = &c->listeners[0];
	assert_int_equal(l->idle_timeout_ms, 5000);
	assert_int_equal(l->responses, 1);
	assert_int_equal(l->max_flows, 2);
	assert_int_equal(l->health.port, 53);
	lb_config_free(c);
	c = parse_ok(BASE);
	assert_int_equal(c->listeners[0].protocol, LB_PROTO_TCP);
	assert_int_equal(c->listeners[0].idle_timeout_ms, 300000);
	lb_config_free(c);

	expect_error(BASE LKEY "protocol: udp\n" LKEY "proxy_protocol: v2\n", 7,
		     "listeners[0].proxy_protocol: only for a tcp listener", "this one is udp");
	expect_error(BASE LKEY "protocol: udp\n" LKEY "max_connections: 5\n", 7,
		     "listeners[0].max_connections", "max_flows");
	expect_error(BASE LKEY "connect_retries: 1\n" LKEY "protocol: udp\n", 6,
		     "listeners[0].connect_retries", "only for a tcp listener");
	expect_error(BASE LKEY "responses: 1\n", 6, "listeners[0].responses",
		     "only for a udp listener, and this one is tcp");
	expect_error(BASE LKEY "max_flows: 10\n", 6, "listeners[0].max_flows", "max_connections");
	expect_error(BASE LKEY "protocol: udp\n" LKEY "health_check: {rise: 1}\n", 7,
		     "listeners[0].health_check.port", "required for a udp listener");
	expect_error(BASE LKEY "protocol: udp\n" LKEY "max_flows: 0\n", 7, "max_flows", NULL);
}

/* DNS: a tcp and a udp listener on one address are no conflict; two of one protocol are. */
static void test_udp_tcp_same_address(void **state)
{
	static const char two[] = BASE "  - name: dns\n"
				       "    listen: 127.0.0.1:8080\n"
				       "    protocol: udp\n"
				       "    backends:\n"
				       "      - address: 127.0.0.1:9001\n";
	struct lb_config *file, *managed, *m = NULL;
	char err[256];

	file = parse_ok(two);
	assert_int_equal(file->n_listeners, 2);
	expect_error(BASE "  - name: dns\n"
			  "    listen: 0.0.0.0:8080\n"
			  "    backends:\n"
			  "      - address: 127.0.0.1:9001\n",
		     7, "listeners[1].listen", "overlaps 127.0.0.1:8080");
	/* A managed udp listener on the file's udp address conflicts; on its tcp one, not. */
	static const char udp[] = "listeners:\n"
				  "  - name: m\n"
				  "    listen: 0.0.0.0:8080\n"
				  "    protocol: udp\n"
				  "    backends: []\n";
	assert_int_equal(lb_config_parse_listeners(udp, strlen(udp), "a", &managed, err,
						   sizeof(err)),
			 0);
	assert_int_equal(lb_config_merge(file, managed, &m, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "listener \"m\" would listen on 0.0.0.0:8080, which overlaps "
				    "127.0.0.1:8080"));
	lb_config_free(file);
	file = parse_ok(BASE); /* tcp only on 127.0.0.1:8080 */
	assert_int_equal(lb_config_merge(file, managed, &m, err, sizeof(err)), 0);
	assert_int_equal(m->n_listeners, 2);
	lb_config_free(m);
	lb_config_free(managed);
	lb_config_free(file);
}

static void peek(const char *text, int want_r, const char *want)
{
	char path[64], sock[LB_PATH_MAX], err[512] = "";
	int r;

	write_tmp(path, text, strlen(text));
	memset(sock, 'x', sizeof(sock));
	r = lb_config_read_control_socket(path, sock, sizeof(sock), err, sizeof(err));
	unlink(path);
	if (r != want_r)
		fail_msg("want %d, got %d (%s)\n--- input:\n%s", want_r, r, err, text);
	if (!r && strcmp(sock, want))
		fail_msg("want socket '%s', got '%s'\n--- input:\n%s", want, sock, text);
	if (r && !strstr(err, want))
		fail_msg("want '%s' in '%s'\n--- input:\n%s", want, err, text);
}

/* `ctl -c` reads only control_socket, so a file with a mistake elsewhere still works. */
static void test_read_control_socket(void **state)
{
	peek("control_socket: /run/lb/ctl.sock\nlisteners:\n  - name: web\n    colour: blue\n", 0,
	     "/run/lb/ctl.sock");
	peek("log_level: info\ncontrol_socket: /a/b\nlisteners: [\n", 0, "/a/b");
	peek("listeners:\n  - name: a\n    backends:\n      - {address: x, weight: [1, {a: b}]}\n"
	     "    health_check: {}\ncontrol_socket: \"/after\"\n",
	     0, "/after");
	peek("? [complex, key]\n: value\ncontrol_socket: /c\n", 0, "/c");
	peek("listeners: []\nlog_level: info\n", 0, "");
	peek("listeners:\n  - control_socket: /nested\n", 0, "");
	peek("- control_socket: /in-a-list\n", 0, "");
	peek("", 0, "");
	peek("log_level: [\ncontrol_socket: /a\n", -EINVAL, "YAML syntax error");
	peek("control_socket: run/relative.sock\n", -EINVAL,
	     ":1: control_socket: must be an absolute path shorter than 108 bytes, got "
	     "\"run/relative.sock\"");
	peek("control_socket: [/a]\n", -EINVAL, "got a list or mapping");
	peek("x: &s /a\ncontrol_socket: *s\n", -EINVAL, "got an alias");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full_file),
		cmocka_unit_test(test_udp),
		cmocka_unit_test(test_udp_tcp_same_address),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_health_block_defaults),
		cmocka_unit_test(test_acceptors_auto_and_edges),
		cmocka_unit_test(test_ipv6),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_namespaced_listener_name),
		cmocka_unit_test(test_exact_message),
		cmocka_unit_test(test_unknown_and_duplicate_keys),
		cmocka_unit_test(test_bad_integers),
		cmocka_unit_test(test_out_of_range),
		cmocka_unit_test(test_bad_strings),
		cmocka_unit_test(test_bad_addresses),
		cmocka_unit_test(test_missing_required),
		cmocka_unit_test(test_control_socket_without_listeners),
		cmocka_unit_test(test_duplicates),
		cmocka_unit_test(test_health_timeout_vs_interval),
		cmocka_unit_test(test_yaml_syntax),
		cmocka_unit_test(test_unreadable),
		cmocka_unit_test(test_load_error_names_file),
		cmocka_unit_test(test_backend_limit),
		cmocka_unit_test(test_fifo_refused),
		cmocka_unit_test(test_nul_byte),
		cmocka_unit_test(test_backend_budget),
		cmocka_unit_test(test_backend_budget_merged),
		cmocka_unit_test(test_read_control_socket),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
