/* test_addr.c - address parsing, printing, equality and the client-IP hash. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "common/addr.h"

static struct lb_addr parse_ok(const char *s, bool allow_port0)
{
	struct lb_addr a;
	char err[128] = "";

	if (lb_addr_parse(s, allow_port0, &a, err, sizeof(err)) != 0)
		fail_msg("\"%s\": unexpected error: %s", s, err);
	return a;
}

/* Parse then print: the canonical form. */
static void assert_roundtrip(const char *in, const char *want)
{
	struct lb_addr a = parse_ok(in, false);
	char buf[LB_ADDR_STRLEN];

	assert_string_equal(lb_addr_format(&a, buf, sizeof(buf)), want);
}

static void test_parse_v4(void **state)
{
	struct lb_addr a = parse_ok("10.1.2.3:8080", false);
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&a.ss;

	assert_int_equal(sin->sin_family, AF_INET);
	assert_int_equal(a.len, sizeof(*sin));
	assert_int_equal(ntohs(sin->sin_port), 8080);
	assert_int_equal(ntohl(sin->sin_addr.s_addr), 0x0a010203);
	assert_roundtrip("0.0.0.0:1", "0.0.0.0:1");
	assert_roundtrip("255.255.255.255:65535", "255.255.255.255:65535");
}

static void test_parse_v6(void **state)
{
	struct lb_addr a = parse_ok("[::1]:443", false);
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a.ss;

	assert_int_equal(sin6->sin6_family, AF_INET6);
	assert_int_equal(a.len, sizeof(*sin6));
	assert_int_equal(ntohs(sin6->sin6_port), 443);
	assert_true(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));
	assert_roundtrip("[::]:80", "[::]:80");
	assert_roundtrip("[2001:DB8:0:0::1]:80", "[2001:db8::1]:80");
}

static void test_port0(void **state)
{
	struct lb_addr a;
	char err[128];

	assert_int_equal(lb_addr_parse("127.0.0.1:0", false, &a, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "port"));
	a = parse_ok("127.0.0.1:0", true);
	assert_int_equal(((struct sockaddr_in *)&a.ss)->sin_port, 0);
	a = parse_ok("[::1]:0", true);
	assert_int_equal(((struct sockaddr_in6 *)&a.ss)->sin6_port, 0);
}

static void test_parse_bad(void **state)
{
	static const struct {
		const char *in, *why;
	} cases[] = {
		{ "", "empty" },
		{ "localhost:80", "host names" },
		{ "lb.example.com:443", "host names" },
		{ "10.0.0.1", "missing port" },
		{ "10.0.0.1:", "missing port" },
		{ "10.0.0.1:0", "port" },
		{ "10.0.0.1:65536", "port" },
		{ "10.0.0.1:123456", "port" },
		{ "10.0.0.1:-1", "port" },
		{ "10.0.0.1:+80", "port" },
		{ "10.0.0.1:80 ", "port" },
		{ "10.0.0.1:8o", "port" },
		{ " 10.0.0.1:80", "IPv4" },
		{ "10.0.0:80", "IPv4" },
		{ "10.0.0.256:80", "IPv4" },
		{ "1.2.3.4.5:80", "IPv4" },
		{ ":80", "IPv4" },
		{ "::1:80", "[addr]:port" },
		{ "::1", "[addr]:port" },
		{ "[::1]", "missing port" },
		{ "[::1]80", "missing port" },
		{ "[::1]:", "missing port" },
		{ "[::1", "']'" },
		{ "[]:80", "IPv6" },
		{ "[1.2.3.4]:80", "IPv6" },
		{ "[fe80::1%eth0]:80", "IPv6" },
		{ "[::1]:65536", "port" },
		/* Leading zeros, refused as for every integer of the configuration. */
		{ "10.0.0.1:0080", "leading zeros" },
		{ "[::1]:080", "leading zeros" },
		{ "10.0.0.1:00", "leading zeros" },
		/* The IPv4 address in IPv6 clothing would be a second name for one backend. */
		{ "[::ffff:10.0.0.1]:80", "IPv4-mapped" },
		{ "[::FFFF:0a00:0001]:80", "IPv4-mapped" },
		{ "[::ffff:0.0.0.0]:80", "IPv4-mapped" },
	};
	struct lb_addr a, before;
	char err[128];

	memset(&before, 0xa5, sizeof(before));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		a = before;
		err[0] = '\0';
		if (lb_addr_parse(cases[i].in, false, &a, err, sizeof(err)) != -EINVAL)
			fail_msg("\"%s\" was accepted", cases[i].in);
		if (!strstr(err, cases[i].why))
			fail_msg("\"%s\": want '%s' in '%s'", cases[i].in, cases[i].why, err);
		/* Failure leaves the output alone. */
		assert_memory_equal(&a, &before, sizeof(a));
	}
	assert_int_equal(lb_addr_parse(NULL, false, &a, err, sizeof(err)), -EINVAL);
	/* No message buffer is fine. */
	assert_int_equal(lb_addr_parse("x", false, &a, NULL, 0), -EINVAL);
}

/* What each use refuses, on top of parsing. */
static void test_check_use(void **state)
{
	static const struct {
		const char *in;
		enum lb_addr_use use;
		const char *why; /* NULL: allowed */
	} cases[] = {
		{ "224.0.0.1:80", LB_ADDR_LISTEN, "multicast" },
		{ "239.255.255.250:1900", LB_ADDR_LISTEN, "multicast" },
		{ "[ff02::1]:80", LB_ADDR_LISTEN, "multicast" },
		{ "0.0.0.0:80", LB_ADDR_LISTEN, NULL },
		{ "[::]:80", LB_ADDR_LISTEN, NULL },
		{ "127.0.0.1:80", LB_ADDR_LISTEN, NULL },
		{ "223.255.255.255:80", LB_ADDR_LISTEN, NULL },
		{ "240.0.0.1:80", LB_ADDR_LISTEN, NULL },
		{ "224.0.0.1:80", LB_ADDR_BACKEND, "multicast" },
		{ "[ff05::2]:80", LB_ADDR_BACKEND, "multicast" },
		{ "0.0.0.0:80", LB_ADDR_BACKEND, "unspecified" },
		{ "[::]:80", LB_ADDR_BACKEND, "unspecified" },
		{ "255.255.255.255:80", LB_ADDR_BACKEND, "broadcast" },
		{ "10.0.0.1:80", LB_ADDR_BACKEND, NULL },
		{ "[2001:db8::1]:80", LB_ADDR_BACKEND, NULL },
		{ "[::1]:80", LB_ADDR_BACKEND, NULL },
	};
	char err[160];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct lb_addr a = parse_ok(cases[i].in, false);
		int r;

		err[0] = '\0';
		r = lb_addr_check_use(&a, cases[i].use, err, sizeof(err));
		if (!cases[i].why && r)
			fail_msg("\"%s\" refused: %s", cases[i].in, err);
		if (cases[i].why && (r != -EINVAL || !strstr(err, cases[i].why)))
			fail_msg("\"%s\": want '%s', got %d '%s'", cases[i].in, cases[i].why, r, err);
	}
}

static void test_format_small_buffer(void **state)
{
	struct lb_addr a = parse_ok("[2001:db8::1]:8080", false), z;
	char buf[8];

	assert_ptr_equal(lb_addr_format(&a, buf, sizeof(buf)), buf);
	assert_string_equal(buf, "[2001:d");
	memset(&z, 0, sizeof(z));
	assert_string_equal(lb_addr_format(&z, buf, sizeof(buf)), "?");
}

static void test_equal(void **state)
{
	struct lb_addr a = parse_ok("10.0.0.1:80", false);
	struct lb_addr b = parse_ok("10.0.0.1:80", false);
	struct lb_addr c = parse_ok("10.0.0.1:81", false);
	struct lb_addr d = parse_ok("10.0.0.2:80", false);
	struct lb_addr f = parse_ok("[2001:db8::1]:80", false);
	struct lb_addr g = parse_ok("[2001:db8:0::1]:80", false);
	struct lb_addr h = parse_ok("[2001:db8::1]:81", false);

	assert_true(lb_addr_equal(&a, &b));
	assert_false(lb_addr_equal(&a, &c));
	assert_false(lb_addr_equal(&a, &d));
	assert_true(lb_addr_equal(&f, &g));
	assert_false(lb_addr_equal(&f, &h));
	assert_false(lb_addr_equal(&f, &a));
}

static void test_hash_ip(void **state)
{
	struct lb_addr a = parse_ok("10.0.0.1:80", false);
	struct lb_addr b = parse_ok("10.0.0.1:9999", false);
	struct lb_addr c = parse_ok("10.0.0.2:80", false);
	struct sockaddr_in6 m = { .sin6_family = AF_INET6, .sin6_port = htons(5) };
	struct lb_addr v6a = parse_ok("[2001:db8::1]:80", false);
	struct lb_addr v6b = parse_ok("[2001:db8::1]:443", false);
	struct lb_addr v6c = parse_ok("[2001:db8::2]:80", false);
	uint64_t ha = lb_addr_hash_ip((struct sockaddr *)&a.ss);

	/* A client address as accept() gives it: the parser refuses this form in a config. */
	assert_int_equal(inet_pton(AF_INET6, "::ffff:10.0.0.1", &m.sin6_addr), 1);

	/* The port is not part of the key: one client, one backend. */
	assert_true(ha == lb_addr_hash_ip((struct sockaddr *)&b.ss));
	assert_true(ha != lb_addr_hash_ip((struct sockaddr *)&c.ss));
	/* An IPv4 client seen through a dual-stack socket hashes the same. */
	assert_true(ha == lb_addr_hash_ip((struct sockaddr *)&m));
	assert_true(lb_addr_hash_ip((struct sockaddr *)&v6a.ss) ==
		    lb_addr_hash_ip((struct sockaddr *)&v6b.ss));
	assert_true(lb_addr_hash_ip((struct sockaddr *)&v6a.ss) !=
		    lb_addr_hash_ip((struct sockaddr *)&v6c.ss));
	assert_true(lb_addr_hash_ip(NULL) == 0);
}

/* Neighbouring addresses must spread over the whole range, not only the low bits. */
static void test_hash_spread(void **state)
{
	unsigned top[16] = { 0 };
	struct lb_addr a;
	char s[32];

	for (unsigned i = 0; i < 4096; i++) {
		snprintf(s, sizeof(s), "10.0.%u.%u:1", i / 256, i % 256);
		a = parse_ok(s, false);
		top[lb_addr_hash_ip((struct sockaddr *)&a.ss) >> 60]++;
	}
	/* 256 expected per bucket; a broken mix puts them all in a few. */
	for (unsigned i = 0; i < 16; i++)
		assert_in_range(top[i], 160, 352);
}

/*
 * The overlap index finds an earlier overlapping address exactly when comparing every pair
 * with lb_addr_overlaps does: random sequences over a pool of equal, wildcard and specific
 * addresses of two ports and both families.
 */
static void test_overlaps_index(void **state)
{
	static const char *const pool[] = { "127.0.0.1:80", "127.0.0.2:80", "0.0.0.0:80",
					    "127.0.0.1:81", "0.0.0.0:81",   "[::]:80",
					    "[::1]:80",     "[::1]:81",     "[2001:db8::1]:80" };
	const size_t n_pool = sizeof(pool) / sizeof(pool[0]);
	struct lb_addr set[6];
	uint32_t seed = 12345;
	unsigned found = 0;

	for (unsigned round = 0; round < 2000; round++) {
		struct lb_addr_overlaps_index x;

		for (size_t i = 0; i < 6; i++) {
			seed = seed * 1103515245u + 12345u;
			set[i] = parse_ok(pool[(seed >> 16) % n_pool], false);
		}
		assert_int_equal(lb_addr_overlaps_init(&x, set, sizeof(set[0]), 6), 0);
		for (uint32_t i = 0; i < 6; i++) {
			long j = lb_addr_overlaps_add(&x, i);
			bool any = false;

			for (uint32_t k = 0; k < i; k++)
				any |= lb_addr_overlaps(&set[k], &set[i]);
			assert_int_equal(j >= 0, any);
			if (j >= 0) {
				assert_true(j < (long)i);
				assert_true(lb_addr_overlaps(&set[j], &set[i]));
				found++;
			}
		}
		lb_addr_overlaps_free(&x);
	}
	assert_true(found > 1000); /* the pool makes overlaps common */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_v4),
		cmocka_unit_test(test_parse_v6),
		cmocka_unit_test(test_port0),
		cmocka_unit_test(test_parse_bad),
		cmocka_unit_test(test_check_use),
		cmocka_unit_test(test_format_small_buffer),
		cmocka_unit_test(test_equal),
		cmocka_unit_test(test_hash_ip),
		cmocka_unit_test(test_hash_spread),
		cmocka_unit_test(test_overlaps_index),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
