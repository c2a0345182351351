/*
 * udp.h - the flow machine (udp.c): udp listeners' datagrams to backends and back, driven by
 * the engine's completions (engine.c) as conn.c is for TCP.
 *
 * A datagram from a client address the listener socket has no flow for picks a backend with
 * the listener's balancer and opens a flow: a socket connected to that backend, so the
 * backend's replies come back on it and the kernel tells an ICMP port unreachable as
 * ECONNREFUSED (passive health).  Replies leave from the listener's socket, from the address
 * the client wrote to.  Flows live in a table per worker: the kernel's SO_REUSEPORT hash sends
 * a client address to the same socket, so to the same worker, every time.  A flow ends when it
 * has been idle idle_timeout_ms, after `responses` replies, when its listener's max_flows
 * needs the room (least recently active first), when its backend fails, or at the drain.
 */
#ifndef DP_UDP_H
#define DP_UDP_H

#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>

#include "dataplane/dp.h"

/*
 * A received datagram in its buffer, as io_uring's multishot recvmsg lays it out (struct
 * io_uring_recvmsg_out, then the source address, then the control messages, each in the room
 * the receive asked for, then the payload); the epoll engine writes the same.  Listener
 * sockets ask for DP_DGRAM_NAME and DP_DGRAM_CTL bytes, flows for none.
 */
struct dp_dgram {
	uint32_t namelen;    /* of the source address, as returned */
	uint32_t controllen; /* of the control messages, as returned */
	uint32_t payloadlen; /* the datagram's whole length, even when it did not fit */
	uint32_t flags;      /* MSG_TRUNC: it did not fit, and is dropped */
};

#define DP_DGRAM_NAME ((uint32_t)sizeof(struct sockaddr_in6))
/* IP_PKTINFO or IPV6_PKTINFO: the address the client wrote to, replies leave from it. */
#define DP_DGRAM_CTL ((uint32_t)CMSG_SPACE(sizeof(struct in6_pktinfo)))

static inline uint32_t dp_dgram_room(bool named)
{
	return (uint32_t)sizeof(struct dp_dgram) + (named ? DP_DGRAM_NAME + DP_DGRAM_CTL : 0);
}

/* The datagram receives of a udp listener socket (wl->udp): start, stop, and what came. */
void dp_udp_listen(struct dp_worker *w, struct dp_wlistener *wl);
void dp_udp_listen_cancel(struct dp_worker *w, struct dp_wlistener *wl);
void dp_udp_client_dgram(struct dp_worker *w, struct dp_wlistener *wl, int res, int bid);
/* The engine's completions of a flow's receive and of a datagram's send. */
void dp_udp_flow_dgram(struct dp_worker *w, uint32_t slot, uint32_t gen, int res, int bid,
		       unsigned flags);
void dp_udp_sent(struct dp_worker *w, uint32_t bid, int res);
/*
 * The socket a tag of DP_OP_DRECVL or DP_OP_DRECVF receives on, and the engine's byte of its
 * receive (*eng); -1 when the tag is stale.
 */
int dp_udp_tag_fd(struct dp_worker *w, uint64_t tag, uint8_t **eng);

/* Timers: idle flows of wl, and flows to removed backends past their drain. */
void dp_udp_expire(struct dp_worker *w, struct dp_wlistener *wl, uint64_t *next_ms);
/*
 * A datagram receive that ended for want of buffers is made again on the next turn, when the
 * ring has been refilled; with no buffer free at all, after this long (a receive takes its
 * buffer first, so one made at once would fail at once: a spin, not a wait).
 */
#define DP_UDP_NOBUF_RETRY_MS 20

/* Flows whose receive must be made again (see DP_UDP_NOBUF_RETRY_MS). */
void dp_udp_rearm(struct dp_worker *w, uint64_t *next_ms);
/* Close every flow of wl at once (the drain deadline). */
void dp_udp_close_flows(struct dp_worker *w, struct dp_wlistener *wl);
void dp_udp_free(struct dp_worker *w);

#endif
