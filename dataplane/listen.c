/* listen.c - listening sockets as the workers use them, for the snapshot and the binder. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include "dataplane/listen.h"

static int sock_type(enum lb_protocol proto)
{
	return proto == LB_PROTO_UDP ? SOCK_DGRAM : SOCK_STREAM;
}

/*
 * A udp socket learns, with each datagram, the address it was sent to: a listener on a
 * wildcard address replies from that address, as the client expects (udp.c).
 */
static int udp_options(int fd, const struct lb_addr *a)
{
	int one = 1;

	if (a->ss.ss_family == AF_INET6)
		return setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof(one));
	return setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one));
}

int dp_listen_socket(const struct lb_addr *a, enum lb_protocol proto, int *ret_fd)
{
	int fd, one = 1;

	fd = socket(a->ss.ss_family, sock_type(proto) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1)
		goto out_close;
	/*
	 * SO_REUSEADDR is TCP's (binding past TIME_WAIT); on UDP it would let any socket with it
	 * share the port, so dp_address_free() could no longer tell that one is bound there.
	 * Accepted sockets inherit TCP_NODELAY: no setsockopt per connection.
	 */
	if (proto == LB_PROTO_TCP
		    ? setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
			      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == -1
		    : udp_options(fd, a) == -1)
		goto out_close;
	if (a->ss.ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) == -1)
		goto out_close;
	if (bind(fd, (const struct sockaddr *)&a->ss, a->len) == -1 ||
	    (proto == LB_PROTO_TCP && listen(fd, DP_LISTEN_BACKLOG) == -1))
		goto out_close;
	*ret_fd = fd;
	return 0;
out_close: {
	int r = -errno;
	close(fd);
	return r;
}
}

/*
 * SO_REUSEPORT would let us join a group some other process of our uid already listens in,
 * and the two would silently split the traffic.  A plain bind (no SO_REUSEPORT) first finds
 * out: it fails while any socket listens on the address.
 */
int dp_address_free(const struct lb_addr *a, enum lb_protocol proto)
{
	int fd, one = 1, r = 0;

	fd = socket(a->ss.ss_family, sock_type(proto) | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	if (proto == LB_PROTO_TCP)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (a->ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&a->ss, a->len) == -1)
		r = -errno;
	close(fd);
	return r;
}
