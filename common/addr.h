/* addr.h - socket addresses: "1.2.3.4:80" and "[::1]:80" parsing and printing. */
#ifndef LB_ADDR_H
#define LB_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/index.h"

#define LB_ADDR_STRLEN 64 /* "[" INET6_ADDRSTRLEN "]:65535" fits */

struct lb_addr {
	struct sockaddr_storage ss;
	socklen_t len;
};

/*
 * Parse an IPv4 "a.b.c.d:port" or IPv6 "[addr]:port" literal (no host names: a load
 * balancer must not depend on DNS at start).  Port 1-65535 (0 allowed when allow_port0), no
 * leading zeros; IPv4-mapped IPv6 addresses are refused (write the IPv4 form).
 * Returns 0 or -EINVAL; on failure writes the reason to err.
 */
int lb_addr_parse(const char *s, bool allow_port0, struct lb_addr *ret, char *err, size_t errlen);

enum lb_addr_use {
	LB_ADDR_LISTEN,  /* a listener or the metrics server binds it */
	LB_ADDR_BACKEND, /* connections are made to it */
};

/*
 * Addresses that parse but cannot serve for `use`: multicast ones (TCP has none), and for a
 * backend the unspecified (0.0.0.0, ::) and broadcast addresses.  0 or -EINVAL with err set.
 */
int lb_addr_check_use(const struct lb_addr *a, enum lb_addr_use use, char *err, size_t errlen);

/* Format as the parser accepts it.  Returns buf. */
char *lb_addr_format(const struct lb_addr *a, char *buf, size_t len);

bool lb_addr_equal(const struct lb_addr *a, const struct lb_addr *b);

/* The port, in host order. */
unsigned lb_addr_port(const struct lb_addr *a);

/*
 * Listen addresses that would take each other's connections: equal, or the same family and
 * port with one of them the wildcard (0.0.0.0:80 and 127.0.0.1:80 both bind with SO_REUSEPORT,
 * and the more specific one silently takes its traffic).
 */
bool lb_addr_overlaps(const struct lb_addr *a, const struct lb_addr *b);

/* 64-bit hash of the IP only (not the port): the maglev key for a client. */
uint64_t lb_addr_hash_ip(const struct sockaddr *sa);

/* Hash of the whole address, IP and port. */
uint64_t lb_addr_hash(const struct lb_addr *a);

/*
 * An lb_index (common/index.h) over elements that each hold a struct lb_addr at base + i *
 * stride, matched by equal address (lb_addr_equal).
 */
int lb_addr_index_init(struct lb_index *x, const void *base, size_t stride, size_t n);

/*
 * Overlapping listen addresses among n elements that each hold a struct lb_addr, added one by
 * one in constant time each: a set of 1,000 listeners would otherwise cost half a million
 * lb_addr_overlaps calls per apply.
 */
struct lb_addr_overlaps_index {
	struct lb_index exact; /* by address */
	struct lb_index port;  /* by family and port: the first element of each */
};

int lb_addr_overlaps_init(struct lb_addr_overlaps_index *o, const void *base, size_t stride,
			  size_t n);
/* Add element i: the number of an element added before it that it overlaps, or -1. */
long lb_addr_overlaps_add(struct lb_addr_overlaps_index *o, uint32_t i);
void lb_addr_overlaps_free(struct lb_addr_overlaps_index *o);

#endif
