/* listen.c - listening sockets as the workers use them, for the snapshot and the binder. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include "dataplane/listen.h"

int dp_listen_socket(const struct lb_addr *a, int *ret_fd)
{
	int fd, one = 1;

	fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1 ||
	    /* Accepted sockets inherit it: no setsockopt per connection. */
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == -1)
		goto out_close;
	if (a->ss.ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) == -1)
		goto out_close;
	if (bind(fd, (const struct sockaddr *)&a->ss, a->len) == -1 ||
	    listen(fd, DP_LISTEN_BACKLOG) == -1)
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
int dp_address_free(const struct lb_addr *a)
{
	int fd, one = 1, r = 0;

	fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (a->ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&a->ss, a->len) == -1)
		r = -errno;
	close(fd);
	return r;
}
