/* proxyproto.h - the PROXY protocol header (HAProxy's spec, versions 1 and 2) sent to backends. */
#ifndef LB_PROXYPROTO_H
#define LB_PROXYPROTO_H

#include <stddef.h>
#include <sys/socket.h>

enum lb_proxy_protocol {
	LB_PROXY_OFF = 0,
	LB_PROXY_V1, /* "PROXY TCP4 src dst sport dport\r\n" */
	LB_PROXY_V2, /* the binary form: 16-byte preamble, then the addresses */
};

/*
 * The longest header written: a v1 line is at most 107 bytes with its CRLF (the spec's own
 * bound); a v2 header for TCP over IPv6 is 16 + 36 = 52 bytes.
 */
#define LB_PROXY_HDR_MAX 108

/*
 * Write the header that tells a backend who connected: src is the client's address, dst the
 * address the client connected to (the listener's, as getsockname tells on the accepted
 * socket).  Both must be TCP over the same family, AF_INET or AF_INET6; for anything else
 * the header says the origin is unknown (v1 "PROXY UNKNOWN", v2 command LOCAL with family
 * UNSPEC), as the spec asks.  Returns the header's length, or -ENOSPC when len is too small, -EINVAL for a bad
 * version.
 */
int lb_proxy_header(enum lb_proxy_protocol version, const struct sockaddr *src,
		    const struct sockaddr *dst, char *buf, size_t len);

#endif
