/* test_proxyproto.c - the PROXY protocol header, byte for byte, against the spec's layout. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>

#include "common/proxyproto.h"

static struct sockaddr_in v4(const char *ip, unsigned port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };

	assert_int_equal(inet_pton(AF_INET, ip, &a.sin_addr), 1);
	return a;
}

static struct sockaddr_in6 v6(const char *ip, unsigned port)
{
	struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons(port) };

	assert_int_equal(inet_pton(AF_INET6, ip, &a.sin6_addr), 1);
	return a;
}

#define SA(x) ((const struct sockaddr *)&(x))

static const unsigned char sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
				       0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };

static void expect_v1(const struct sockaddr *src, const struct sockaddr *dst, const char *want)
{
	char buf[LB_PROXY_HDR_MAX];
	int n = lb_proxy_header(LB_PROXY_V1, src, dst, buf, sizeof(buf));

	assert_int_equal(n, strlen(want));
	assert_memory_equal(buf, want, n);
}

static void test_v1_tcp4(void **state)
{
	struct sockaddr_in src = v4("192.0.2.10", 51234), dst = v4("198.51.100.1", 443);

	expect_v1(SA(src), SA(dst), "PROXY TCP4 192.0.2.10 198.51.100.1 51234 443\r\n");
}

static void test_v1_tcp6(void **state)
{
	struct sockaddr_in6 src = v6("2001:db8::1", 1), dst = v6("::1", 65535);

	expect_v1(SA(src), SA(dst), "PROXY TCP6 2001:db8::1 ::1 1 65535\r\n");
}

/* The longest line there is fits the bound the header promises (the spec's 107 bytes). */
static void test_v1_longest(void **state)
{
	struct sockaddr_in6 src = v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535);
	struct sockaddr_in6 dst = v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65534);
	char buf[LB_PROXY_HDR_MAX];
	int n = lb_proxy_header(LB_PROXY_V1, SA(src), SA(dst), buf, sizeof(buf));

	assert_int_equal(n, 104);
	assert_true(n <= 107);
	assert_memory_equal(buf + n - 2, "\r\n", 2);
}

static void test_v1_unknown(void **state)
{
	struct sockaddr_in src = v4("192.0.2.10", 1);
	struct sockaddr_in6 dst = v6("::1", 2);
	struct sockaddr_un un = { .sun_family = AF_UNIX };

	/* Mixed families, or a family the protocol has no TCP form for. */
	expect_v1(SA(src), SA(dst), "PROXY UNKNOWN\r\n");
	expect_v1(SA(un), SA(un), "PROXY UNKNOWN\r\n");
	expect_v1(NULL, SA(dst), "PROXY UNKNOWN\r\n");
}

static void test_v2_tcp4(void **state)
{
	struct sockaddr_in src = v4("192.0.2.10", 0x1234), dst = v4("198.51.100.1", 0x01bb);
	unsigned char buf[LB_PROXY_HDR_MAX];
	static const unsigned char rest[] = {
		0x21, 0x11, 0x00, 0x0c,  /* v2 PROXY, TCP over IPv4, 12 bytes follow */
		192, 0, 2, 10, 198, 51, 100, 1, 0x12, 0x34, 0x01, 0xbb,
	};
	int n = lb_proxy_header(LB_PROXY_V2, SA(src), SA(dst), (char *)buf, sizeof(buf));

	assert_int_equal(n, 28);
	assert_memory_equal(buf, sig, sizeof(sig));
	assert_memory_equal(buf + 12, rest, sizeof(rest));
}

static void test_v2_tcp6(void **state)
{
	struct sockaddr_in6 src = v6("2001:db8::7", 40000), dst = v6("::1", 80);
	unsigned char buf[LB_PROXY_HDR_MAX];
	int n = lb_proxy_header(LB_PROXY_V2, SA(src), SA(dst), (char *)buf, sizeof(buf));

	assert_int_equal(n, 52);
	assert_memory_equal(buf, sig, sizeof(sig));
	assert_int_equal(buf[12], 0x21);
	assert_int_equal(buf[13], 0x21); /* AF_INET6, STREAM */
	assert_int_equal(buf[14] << 8 | buf[15], 36);
	assert_memory_equal(buf + 16, &src.sin6_addr, 16);
	assert_memory_equal(buf + 32, &dst.sin6_addr, 16);
	assert_int_equal(buf[48] << 8 | buf[49], 40000);
	assert_int_equal(buf[50] << 8 | buf[51], 80);
}

static void test_v2_unspec(void **state)
{
	struct sockaddr_in src = v4("192.0.2.10", 1);
	struct sockaddr_in6 dst = v6("::1", 2);
	unsigned char buf[LB_PROXY_HDR_MAX];
	int n = lb_proxy_header(LB_PROXY_V2, SA(src), SA(dst), (char *)buf, sizeof(buf));

	assert_int_equal(n, 16);
	assert_memory_equal(buf, sig, sizeof(sig));
	assert_int_equal(buf[12], 0x20); /* LOCAL: receivers must accept it with UNSPEC */
	assert_int_equal(buf[13], 0x00);
	assert_int_equal(buf[14] | buf[15], 0);
}

static void test_small_buffer(void **state)
{
	struct sockaddr_in src = v4("192.0.2.10", 1), dst = v4("198.51.100.1", 2);
	char buf[LB_PROXY_HDR_MAX];

	assert_int_equal(lb_proxy_header(LB_PROXY_V2, SA(src), SA(dst), buf, 27), -ENOSPC);
	assert_int_equal(lb_proxy_header(LB_PROXY_V2, SA(src), SA(dst), buf, 28), 28);
	/* v1 needs room for its NUL as well: a 40-byte line in 40 bytes is refused. */
	assert_int_equal(lb_proxy_header(LB_PROXY_V1, SA(src), SA(dst), buf, 40), -ENOSPC);
	assert_int_equal(lb_proxy_header(LB_PROXY_V1, SA(src), SA(dst), buf, 41), 40);
	assert_int_equal(lb_proxy_header(LB_PROXY_OFF, SA(src), SA(dst), buf, sizeof(buf)),
			 -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v1_tcp4),	    cmocka_unit_test(test_v1_tcp6),
		cmocka_unit_test(test_v1_longest),  cmocka_unit_test(test_v1_unknown),
		cmocka_unit_test(test_v2_tcp4),	    cmocka_unit_test(test_v2_tcp6),
		cmocka_unit_test(test_v2_unspec),   cmocka_unit_test(test_small_buffer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
