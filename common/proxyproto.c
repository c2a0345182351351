/* proxyproto.c - the PROXY protocol header, versions 1 and 2, written for one connection. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/proxyproto.h"

/* The v2 signature: chosen by the spec so that no v1 header and no HTTP request starts so. */
static const unsigned char v2_sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
					  0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };

enum {
	V2_VER_PROXY = 0x21,  /* version 2, command PROXY (relayed on behalf of a client) */
	V2_VER_LOCAL = 0x20,  /* version 2, command LOCAL: use the connection's own ends */
	V2_FAM_UNSPEC = 0x00, /* origin unknown: the receiver uses the connection's own ends */
	V2_TCP4 = 0x11,       /* AF_INET, STREAM */
	V2_TCP6 = 0x21,       /* AF_INET6, STREAM */
};

/* Both ends TCP over one family we can describe: AF_INET or AF_INET6, or 0. */
static int common_family(const struct sockaddr *src, const struct sockaddr *dst)
{
	if (!src || !dst || src->sa_family != dst->sa_family)
		return 0;
	return src->sa_family == AF_INET || src->sa_family == AF_INET6 ? src->sa_family : 0;
}

/* The IP of an AF_INET or AF_INET6 address and its port, both in network byte order. */
static const void *ip_of(const struct sockaddr *sa, const void **port)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *a = (const void *)sa;

		*port = &a->sin_port;
		return &a->sin_addr;
	}
	const struct sockaddr_in6 *a = (const void *)sa;

	*port = &a->sin6_port;
	return &a->sin6_addr;
}

static unsigned port_of(const void *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
	return ntohs(v);
}

static int v1_header(const struct sockaddr *src, const struct sockaddr *dst, char *buf,
		     size_t len)
{
	char s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
	int fam = common_family(src, dst), n;
	const void *sport, *dport;

	if (!fam) {
		n = snprintf(buf, len, "PROXY UNKNOWN\r\n");
	} else {
		inet_ntop(fam, ip_of(src, &sport), s, sizeof(s));
		inet_ntop(fam, ip_of(dst, &dport), d, sizeof(d));
		n = snprintf(buf, len, "PROXY %s %s %s %u %u\r\n", fam == AF_INET ? "TCP4" : "TCP6",
			     s, d, port_of(sport), port_of(dport));
	}
	return n >= 0 && (size_t)n < len ? n : -ENOSPC;
}

static int v2_header(const struct sockaddr *src, const struct sockaddr *dst, unsigned char *buf,
		     size_t len)
{
	int fam = common_family(src, dst);
	size_t ilen = fam == AF_INET ? 4 : fam == AF_INET6 ? 16 : 0, alen = fam ? 2 * ilen + 4 : 0;
	const void *sport, *dport;
	unsigned char *p = buf + 16;

	if (len < 16 + alen)
		return -ENOSPC;
	memcpy(buf, v2_sig, sizeof(v2_sig));
	/* Receivers may refuse PROXY with UNSPEC; LOCAL+UNSPEC they must accept (HAProxy's). */
	buf[12] = fam ? V2_VER_PROXY : V2_VER_LOCAL;
	buf[13] = fam == AF_INET ? V2_TCP4 : fam == AF_INET6 ? V2_TCP6 : V2_FAM_UNSPEC;
	buf[14] = (unsigned char)(alen >> 8);
	buf[15] = (unsigned char)alen;
	if (fam) {
		/* Source IP, destination IP, source port, destination port: network order. */
		memcpy(p, ip_of(src, &sport), ilen);
		memcpy(p + ilen, ip_of(dst, &dport), ilen);
		memcpy(p + 2 * ilen, sport, 2);
		memcpy(p + 2 * ilen + 2, dport, 2);
	}
	return (int)(16 + alen);
}

int lb_proxy_header(enum lb_proxy_protocol version, const struct sockaddr *src,
		    const struct sockaddr *dst, char *buf, size_t len)
{
	switch (version) {
	case LB_PROXY_V1:
		return v1_header(src, dst, buf, len);
	case LB_PROXY_V2:
		return v2_header(src, dst, (unsigned char *)buf, len);
	default:
		return -EINVAL;
	}
}
