/* addr.c - parse, print, compare and hash IPv4/IPv6 socket addresses. */
#include "common/addr.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int addr_fail(char *err, size_t errlen, const char *why)
{
	if (err && errlen)
		snprintf(err, errlen, "%s", why);
	return -EINVAL;
}

/*
 * Decimal digits only: strtoul would take "+80", " 80" and "0x50"; and no leading zero, as for
 * every other integer of the configuration ("0080" reads as octal to some YAML tools).
 */
static int parse_port(const char *s, bool allow_port0, in_port_t *ret, char *err, size_t errlen)
{
	unsigned long v = 0;
	size_t i;

	if (!*s)
		return addr_fail(err, errlen, "missing port after ':'");
	if (s[0] == '0' && s[1])
		return addr_fail(err, errlen, "port must be written without leading zeros");
	for (i = 0; s[i]; i++) {
		if (!isdigit((unsigned char)s[i]) || i >= 5)
			return addr_fail(err, errlen, "port must be a number between 1 and 65535");
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v > 65535 || (v == 0 && !allow_port0))
		return addr_fail(err, errlen, "port must be a number between 1 and 65535");
	*ret = htons((in_port_t)v);
	return 0;
}

static int parse_v6(const char *s, bool allow_port0, struct lb_addr *a, char *err, size_t errlen)
{
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->ss;
	char host[INET6_ADDRSTRLEN];
	const char *end = strchr(s, ']');
	size_t n;

	if (!end)
		return addr_fail(err, errlen, "missing ']' after the IPv6 address");
	n = (size_t)(end - s - 1);
	if (n == 0 || n >= sizeof(host))
		return addr_fail(err, errlen, "not a valid IPv6 address");
	memcpy(host, s + 1, n);
	host[n] = '\0';
	if (end[1] != ':')
		return addr_fail(err, errlen, "missing port: expected [addr]:port");
	if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
		return addr_fail(err, errlen, "not a valid IPv6 address");
	/*
	 * ::ffff:a.b.c.d is a.b.c.d: as a backend it would count as a second one next to the
	 * IPv4 form (doubling its share), and IPv6 listeners are V6ONLY, so none would listen.
	 */
	if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr))
		return addr_fail(err, errlen, "IPv4-mapped IPv6 addresses are not supported; write "
					      "the IPv4 address as a.b.c.d:port");
	sin6->sin6_family = AF_INET6;
	a->len = sizeof(*sin6);
	return parse_port(end + 2, allow_port0, &sin6->sin6_port, err, errlen);
}

static bool looks_like_hostname(const char *host, const char *end)
{
	for (; host < end; host++) {
		if (isalpha((unsigned char)*host))
			return true;
	}
	return false;
}

static int parse_v4(const char *s, bool allow_port0, struct lb_addr *a, char *err, size_t errlen)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;
	const char *colon = strrchr(s, ':');
	char host[INET_ADDRSTRLEN];
	size_t n;

	if (!colon)
		return addr_fail(err, errlen, "missing port: expected ip:port");
	if (memchr(s, ':', (size_t)(colon - s)))
		return addr_fail(err, errlen, "IPv6 addresses must be written as [addr]:port");
	n = (size_t)(colon - s);
	if (n >= sizeof(host) || n == 0)
		goto bad_host;
	memcpy(host, s, n);
	host[n] = '\0';
	if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
		goto bad_host;
	sin->sin_family = AF_INET;
	a->len = sizeof(*sin);
	return parse_port(colon + 1, allow_port0, &sin->sin_port, err, errlen);

bad_host:
	/* Resolving names at start would make the balancer depend on DNS being up. */
	if (looks_like_hostname(s, colon))
		return addr_fail(err, errlen, "host names are not supported; use an IP address");
	return addr_fail(err, errlen, "not a valid IPv4 address");
}

int lb_addr_parse(const char *s, bool allow_port0, struct lb_addr *ret, char *err, size_t errlen)
{
	struct lb_addr a;
	int r;

	if (!s || !*s)
		return addr_fail(err, errlen, "empty address");
	memset(&a, 0, sizeof(a));
	if (s[0] == '[')
		r = parse_v6(s, allow_port0, &a, err, errlen);
	else
		r = parse_v4(s, allow_port0, &a, err, errlen);
	if (r < 0)
		return r;
	*ret = a;
	return 0;
}

int lb_addr_check_use(const struct lb_addr *a, enum lb_addr_use use, char *err, size_t errlen)
{
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&a->ss;
	const struct sockaddr_in *s4 = (const struct sockaddr_in *)&a->ss;
	bool v4 = a->ss.ss_family == AF_INET;
	bool multicast = v4 ? IN_MULTICAST(ntohl(s4->sin_addr.s_addr))
			    : IN6_IS_ADDR_MULTICAST(&s6->sin6_addr);

	if (multicast)
		return addr_fail(err, errlen, use == LB_ADDR_LISTEN
					      ? "a multicast address cannot accept TCP connections"
					      : "a multicast address cannot be a TCP backend");
	if (use == LB_ADDR_LISTEN)
		return 0;
	if (v4 ? s4->sin_addr.s_addr == htonl(INADDR_ANY) : IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr))
		return addr_fail(err, errlen, "the unspecified address cannot be a backend (a "
					      "connect to it reaches this host); give the "
					      "backend's own address");
	if (v4 && s4->sin_addr.s_addr == htonl(INADDR_BROADCAST))
		return addr_fail(err, errlen, "the broadcast address cannot be a TCP backend");
	return 0;
}

char *lb_addr_format(const struct lb_addr *a, char *buf, size_t len)
{
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a->ss;
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&a->ss;
	char host[INET6_ADDRSTRLEN];

	if (!buf || !len)
		return buf;
	switch (a->ss.ss_family) {
	case AF_INET:
		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, ntohs(sin->sin_port));
		break;
	case AF_INET6:
		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		snprintf(buf, len, "[%s]:%u", host, ntohs(sin6->sin6_port));
		break;
	default:
		snprintf(buf, len, "?");
		break;
	}
	return buf;
}

bool lb_addr_equal(const struct lb_addr *a, const struct lb_addr *b)
{
	const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&a->ss;
	const struct sockaddr_in6 *b6 = (const struct sockaddr_in6 *)&b->ss;
	const struct sockaddr_in *a4 = (const struct sockaddr_in *)&a->ss;
	const struct sockaddr_in *b4 = (const struct sockaddr_in *)&b->ss;

	if (a->ss.ss_family != b->ss.ss_family)
		return false;
	switch (a->ss.ss_family) {
	case AF_INET:
		return a4->sin_port == b4->sin_port && a4->sin_addr.s_addr == b4->sin_addr.s_addr;
	case AF_INET6:
		return a6->sin6_port == b6->sin6_port && a6->sin6_scope_id == b6->sin6_scope_id &&
		       !memcmp(&a6->sin6_addr, &b6->sin6_addr, sizeof(a6->sin6_addr));
	default:
		return a->len == b->len && !memcmp(&a->ss, &b->ss, a->len);
	}
}

uint64_t lb_addr_hash_ip(const struct sockaddr *sa)
{
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
	const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
	const unsigned char *ip;

	if (!sa)
		return 0;
	switch (sa->sa_family) {
	case AF_INET:
		return lb_hash_bytes(&sin->sin_addr, 4);
	case AF_INET6:
		ip = sin6->sin6_addr.s6_addr;
		/*
		 * Listeners are V6ONLY, so IPv4 clients arrive over IPv4; should one come as
		 * ::ffff:a.b.c.d all the same, it hashes as its IPv4 address.
		 */
		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr))
			return lb_hash_bytes(ip + 12, 4);
		return lb_hash_bytes(ip, 16);
	default:
		return 0;
	}
}

uint64_t lb_addr_hash(const struct lb_addr *a)
{
	const struct sockaddr *sa = (const struct sockaddr *)&a->ss;
	in_port_t port = sa->sa_family == AF_INET6 ? ((const struct sockaddr_in6 *)sa)->sin6_port
						   : ((const struct sockaddr_in *)sa)->sin_port;

	return lb_hash_mix(lb_addr_hash_ip(sa) ^ port);
}

static uint64_t addr_key_hash(const void *key)
{
	return lb_addr_hash(key);
}

static bool addr_key_equal(const void *a, const void *b)
{
	return lb_addr_equal(a, b);
}

int lb_addr_index_init(struct lb_index *x, const void *base, size_t stride, size_t n)
{
	return lb_index_init(x, base, stride, n, addr_key_hash, addr_key_equal);
}

static bool addr_is_any(const struct lb_addr *a)
{
	const struct sockaddr_in *s4 = (const struct sockaddr_in *)&a->ss;
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&a->ss;

	if (a->ss.ss_family == AF_INET)
		return s4->sin_addr.s_addr == htonl(INADDR_ANY);
	return a->ss.ss_family == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr);
}

bool lb_addr_overlaps(const struct lb_addr *a, const struct lb_addr *b)
{
	const struct sockaddr_in *a4 = (const struct sockaddr_in *)&a->ss;
	const struct sockaddr_in *b4 = (const struct sockaddr_in *)&b->ss;
	const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&a->ss;
	const struct sockaddr_in6 *b6 = (const struct sockaddr_in6 *)&b->ss;

	if (a->ss.ss_family != b->ss.ss_family)
		return false; /* IPv6 listeners are V6ONLY: [::] does not take IPv4 */
	if (a->ss.ss_family == AF_INET ? a4->sin_port != b4->sin_port
				       : a6->sin6_port != b6->sin6_port)
		return false;
	return lb_addr_equal(a, b) || addr_is_any(a) || addr_is_any(b);
}

static in_port_t addr_port(const struct lb_addr *a)
{
	return a->ss.ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)&a->ss)->sin6_port
					   : ((const struct sockaddr_in *)&a->ss)->sin_port;
}

unsigned lb_addr_port(const struct lb_addr *a)
{
	return ntohs(addr_port(a));
}

static uint64_t port_key_hash(const void *key)
{
	const struct lb_addr *a = key;

	return lb_hash_mix(((uint64_t)a->ss.ss_family << 16) | addr_port(a));
}

static bool port_key_equal(const void *a, const void *b)
{
	const struct lb_addr *x = a, *y = b;

	return x->ss.ss_family == y->ss.ss_family && addr_port(x) == addr_port(y);
}

/* The wildcard address of a's family and port. */
static struct lb_addr addr_any(const struct lb_addr *a)
{
	struct lb_addr w = *a;

	if (a->ss.ss_family == AF_INET) {
		((struct sockaddr_in *)&w.ss)->sin_addr.s_addr = htonl(INADDR_ANY);
	} else if (a->ss.ss_family == AF_INET6) {
		((struct sockaddr_in6 *)&w.ss)->sin6_addr = in6addr_any;
		((struct sockaddr_in6 *)&w.ss)->sin6_scope_id = 0; /* [::] has none */
	}
	return w;
}

int lb_addr_overlaps_init(struct lb_addr_overlaps_index *o, const void *base, size_t stride,
			  size_t n)
{
	memset(o, 0, sizeof(*o));
	if (lb_addr_index_init(&o->exact, base, stride, n) ||
	    lb_index_init(&o->port, base, stride, n, port_key_hash, port_key_equal)) {
		lb_addr_overlaps_free(o);
		return -ENOMEM;
	}
	return 0;
}

/*
 * As lb_addr_overlaps: the same address; or, for a specific address, the wildcard of its
 * family and port; or, for the wildcard, any address of its family and port.
 */
long lb_addr_overlaps_add(struct lb_addr_overlaps_index *o, uint32_t i)
{
	const struct lb_addr *a = (const struct lb_addr *)(o->exact.base + (size_t)i * o->exact.stride);
	struct lb_addr any = addr_any(a);
	long j = lb_index_find(&o->exact, a);

	if (j < 0)
		j = addr_is_any(a) ? lb_index_find(&o->port, a) : lb_index_find(&o->exact, &any);
	lb_index_add(&o->exact, i);
	lb_index_add(&o->port, i);
	return j;
}

void lb_addr_overlaps_free(struct lb_addr_overlaps_index *o)
{
	lb_index_free(&o->exact);
	lb_index_free(&o->port);
}
