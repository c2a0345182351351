/*
 * listen.h - listening sockets (listen.c), made in the dataplane's main thread for a snapshot
 * or by the binder for a port below 1024.
 */
#ifndef DP_LISTEN_H
#define DP_LISTEN_H

#include "common/addr.h"
#include "common/config.h"

/* The listen(2) backlog of every listener socket. */
#define DP_LISTEN_BACKLOG 4096

/*
 * A socket on a as the workers use it (SO_REUSEPORT, non-blocking): a listening TCP socket,
 * or a bound UDP one that reports the address each datagram came to (IP_PKTINFO).  0 or -errno.
 */
int dp_listen_socket(const struct lb_addr *a, enum lb_protocol proto, int *ret_fd);
/* 0 when no socket of proto is bound to a (a plain bind succeeds), else -errno. */
int dp_address_free(const struct lb_addr *a, enum lb_protocol proto);

#endif
