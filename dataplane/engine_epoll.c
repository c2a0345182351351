/* engine_epoll.c - the epoll engine, for hosts and container runtimes that forbid io_uring. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "dataplane/bufstack.h"
#include "dataplane/conn.h"
#include "dataplane/engine.h"
#include "dataplane/udp.h"
#include "dataplane/worker.h"

/*
 * The connection state machine speaks in completions ("this receive finished with n bytes"),
 * so this engine turns readiness into completions:
 *
 * - Every connection socket is registered once, edge-triggered, for EPOLLIN | EPOLLOUT |
 *   EPOLLRDHUP | EPOLLPRI (nginx's way: no epoll_ctl per operation).  Per socket we remember
 *   whether it is known readable or writable (set by an event; cleared by EAGAIN, or by a
 *   read that emptied the socket, never earlier: with edge triggering a readiness dropped
 *   too soon would never be reported again) and which request is pending on it.
 * - A request is tried at once when the socket is known ready (speculative I/O, as HAProxy
 *   does), else when its event comes.  Its result goes on a completion queue which run()
 *   drains through the same dispatcher as io_uring's CQEs, so nothing is ever completed
 *   inside the call that issued it.
 * - Receive buffers come from a pool of the same shape as io_uring's buffer ring, taken only
 *   when data is read, so idle connections hold none; a LIFO free list keeps the few hot
 *   buffers resident and the rest untouched.
 * - Sends carry all queued buffers in one sendmsg and, like MSG_WAITALL under io_uring,
 *   complete only when everything is written (or on an error).
 * - Listeners are level-triggered, at most DP_EP_ACCEPT_BATCH accepts per wake-up; a
 *   single-shot accept (near max_connections) takes one and leaves the epoll set.
 * - Connect timeouts: a min-heap of deadlines, the nearest bounding epoll_wait.
 */

#define DP_EP_EVENTS 256
#define DP_EP_ACCEPT_BATCH 16
#define DP_EP_DGRAM_BATCH 16  /* datagrams per recvmmsg */
#define DP_EP_SEND_BATCH 64   /* datagram sends queued before a flush */

enum {
	EP_REG = 1 << 0,    /* in the epoll set */
	EP_RD = 1 << 1,     /* known readable */
	EP_WR = 1 << 2,     /* known writable */
	EP_RECV = 1 << 3,   /* a receive is pending on this socket */
	EP_SEND = 1 << 4,   /* a send is pending */
	EP_CONN = 1 << 5,   /* a connect is pending */
	EP_EOF = 1 << 6,    /* FIN, hang-up, error or urgent data seen: a short read proves nothing */
	EP_FIN = 1 << 7,    /* the peer's FIN seen (EPOLLRDHUP): it waits behind any data */
};

/* wl->eng: the listener's accept. */
enum {
	EPL_REG = 1 << 0,    /* in the epoll set: a cancel must end it */
	EPL_SINGLE = 1 << 1, /* single-shot: one connection ends it */
};

struct ep_completion {
	uint64_t tag;
	int res;
	int bid;
	unsigned flags;
};

struct ep_timer {
	uint64_t due_ms;
	uint32_t slot, gen;
	uint8_t tries;
};

/* A datagram send queued for this turn's sendmmsg. */
struct ep_dsend {
	int fd;
	struct msghdr *msg;
	uint64_t tag;
};

struct dp_epoll {
	int epfd;
	struct ep_dsend out[DP_EP_SEND_BATCH];
	unsigned n_out;
	char *bufs;
	size_t bufs_len;
	struct dp_bufstack free;  /* free buffer ids, LIFO */
	struct ep_completion *q;  /* completion ring */
	unsigned q_head, q_len, q_cap;
	struct ep_timer *heap;    /* connect deadlines */
	unsigned n_heap, heap_cap;
};

static inline struct dp_epoll *E(struct dp_worker *w)
{
	return w->engine;
}

/* --- completion queue ---------------------------------------------------------------- */

static void push(struct dp_worker *w, uint64_t tag, int res, int bid, unsigned flags)
{
	struct dp_epoll *e = E(w);

	if (e->q_len == e->q_cap) {
		unsigned cap = e->q_cap ? e->q_cap * 2 : 1024;
		struct ep_completion *q = malloc(cap * sizeof(*q));

		if (!q)
			abort(); /* a lost completion would leak its connection forever */
		for (unsigned i = 0; i < e->q_len; i++)
			q[i] = e->q[(e->q_head + i) % e->q_cap];
		free(e->q);
		e->q = q;
		e->q_cap = cap;
		e->q_head = 0;
	}
	e->q[(e->q_head + e->q_len++) % e->q_cap] =
		(struct ep_completion){ .tag = tag, .res = res, .bid = bid, .flags = flags };
}

/* --- buffers ------------------------------------------------------------------------- */

static void *ep_buf(struct dp_worker *w, unsigned bid)
{
	return E(w)->bufs + (size_t)bid * w->buffer_size;
}

static void ep_buf_put(struct dp_worker *w, unsigned bid)
{
	dp_bufstack_push(&E(w)->free, bid);
}

static bool ep_bufs_left(const struct dp_worker *w)
{
	return ((const struct dp_epoll *)w->engine)->free.n != 0;
}

static void ep_trim(struct dp_worker *w)
{
	struct dp_epoll *e = E(w);

	/* recv() fills a buffer only inside try_recv: every free one is ours to give back. */
	dp_bufstack_trim(&e->free, e->bufs, w->buffer_size);
}

/* --- connect deadlines (binary min-heap) -------------------------------------------- */

static void heap_swap(struct ep_timer *h, unsigned a, unsigned b)
{
	struct ep_timer t = h[a];

	h[a] = h[b];
	h[b] = t;
}

static int heap_push(struct dp_epoll *e, struct ep_timer t)
{
	unsigned i;

	if (e->n_heap == e->heap_cap) {
		unsigned cap = e->heap_cap ? e->heap_cap * 2 : 256;
		struct ep_timer *h = realloc(e->heap, cap * sizeof(*h));

		if (!h)
			return -ENOMEM;
		e->heap = h;
		e->heap_cap = cap;
	}
	i = e->n_heap++;
	e->heap[i] = t;
	while (i && e->heap[(i - 1) / 2].due_ms > e->heap[i].due_ms) {
		heap_swap(e->heap, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
	return 0;
}

static void heap_pop(struct dp_epoll *e)
{
	unsigned i = 0;

	e->heap[0] = e->heap[--e->n_heap];
	for (;;) {
		unsigned l = 2 * i + 1, r = l + 1, m = i;

		if (l < e->n_heap && e->heap[l].due_ms < e->heap[m].due_ms)
			m = l;
		if (r < e->n_heap && e->heap[r].due_ms < e->heap[m].due_ms)
			m = r;
		if (m == i)
			return;
		heap_swap(e->heap, i, m);
		i = m;
	}
}

/* --- sockets ------------------------------------------------------------------------- */

static int reg(struct dp_worker *w, struct dp_conn *c, int side)
{
	struct epoll_event ev = {
		.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET,
		.data.u64 = dp_tag(DP_OP_FD0 + side, c->gen, c->slot),
	};

	if (c->eng[side] & EP_REG)
		return 0;
	if (epoll_ctl(E(w)->epfd, EPOLL_CTL_ADD, c->fd[side], &ev) == -1)
		return -errno;
	/* Unknown readiness: try at once, EAGAIN tells the truth. */
	c->eng[side] |= EP_REG | EP_RD | EP_WR;
	return 0;
}

static void try_recv(struct dp_worker *w, struct dp_conn *c, int side)
{
	struct dp_epoll *e = E(w);
	int bid;
	ssize_t n;

	if (!e->free.n) {
		c->eng[side] &= ~EP_RECV;
		push(w, dp_tag(DP_OP_RECV0 + side, c->gen, c->slot), -ENOBUFS, -1, 0);
		return;
	}
	bid = (int)dp_bufstack_pop(&e->free);
	n = recv(c->fd[side], ep_buf(w, bid), w->buffer_size, MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
		dp_bufstack_push(&e->free, (unsigned)bid);
		c->eng[side] &= ~EP_RD;
		return;
	}
	c->eng[side] &= ~EP_RECV;
	/*
	 * A read shorter than the buffer emptied the socket (nginx's rule): data arriving later
	 * raises a new edge, so the next receive waits for it instead of trying and getting
	 * EAGAIN, a system call saved per chunk.  Not after a FIN or error was reported: that
	 * edge has been consumed and would never come again; nor after urgent data (below).
	 */
	if (n > 0 && (size_t)n < w->buffer_size && !(c->eng[side] & EP_EOF))
		c->eng[side] &= ~EP_RD;
	if (n <= 0) {
		dp_bufstack_push(&e->free, (unsigned)bid);
		push(w, dp_tag(DP_OP_RECV0 + side, c->gen, c->slot), n ? -errno : 0, -1, 0);
		return;
	}
	/*
	 * "More to read": a full buffer, or the peer's FIN behind this data (as io_uring's
	 * SOCK_NONEMPTY says it).  Not after a hang-up or error alone: a reset has no FIN to read.
	 */
	push(w, dp_tag(DP_OP_RECV0 + side, c->gen, c->slot), (int)n, bid,
	     (size_t)n == w->buffer_size || (c->eng[side] & EP_FIN) ? DP_CF_NONEMPTY : 0);
}

/* The send of half h writes the other socket than the one it reads. */
static void try_send(struct dp_worker *w, struct dp_conn *c, int side)
{
	int h = !side;
	struct dp_half *hf = &c->half[h];
	struct msghdr msg = { .msg_iov = hf->iov };
	size_t total = 0, skip = hf->eng_done;
	ssize_t n;

	for (unsigned i = 0; i < hf->nsend; i++) {
		unsigned k = (hf->head + i) % DP_HALF_QMAX;
		size_t off = i ? 0 : hf->off, len = hf->len[k] - off;

		total += len;
		if (skip >= len) {
			skip -= len;
			continue;
		}
		hf->iov[msg.msg_iovlen].iov_base =
			dp_chunk(w, c, E(w)->bufs, hf->bid[k]) + off + skip;
		hf->iov[msg.msg_iovlen++].iov_len = len - skip;
		skip = 0;
	}
	/* The last send before a FIN is corked so that the FIN joins it (see engine_uring.c). */
	n = sendmsg(c->fd[side], &msg,
		    MSG_DONTWAIT | MSG_NOSIGNAL | (hf->flags & DP_H_EOF ? MSG_MORE : 0));
	if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
		c->eng[side] &= ~EP_WR;
		return;
	}
	if (n >= 0 && hf->eng_done + (size_t)n < total) {
		hf->eng_done += n; /* the socket buffer is full: wait for EPOLLOUT */
		c->eng[side] &= ~EP_WR;
		return;
	}
	c->eng[side] &= ~EP_SEND;
	push(w, dp_tag(DP_OP_SEND0 + h, c->gen, c->slot), n < 0 ? -errno : (int)total, -1, 0);
}

static void finish_connect(struct dp_worker *w, struct dp_conn *c)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(c->fd[1], SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		err = errno;
	if (err == EINPROGRESS || err == EALREADY)
		return;
	if (!err) {
		struct sockaddr_storage ss;

		/* SO_ERROR is 0 while a connect is still in flight: be sure it is done. */
		len = sizeof(ss);
		if (getpeername(c->fd[1], (struct sockaddr *)&ss, &len) == -1 && errno == ENOTCONN) {
			c->eng[1] &= ~EP_WR;
			return;
		}
	}
	c->eng[1] &= ~EP_CONN;
	push(w, dp_tag(DP_OP_CONNECT, c->gen, c->slot), -err, -1, 0);
}

static void conn_event(struct dp_worker *w, uint64_t tag, uint32_t events)
{
	struct dp_conn *c = dp_conn_get(w, dp_tag_slot(tag), dp_tag_gen(tag));
	int side = dp_tag_op(tag) - DP_OP_FD0;

	if (!c)
		return; /* closed and freed since: the event is stale */
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR | EPOLLPRI))
		c->eng[side] |= EP_RD;
	/*
	 * A read stops short at TCP's urgent mark with data still queued behind it, whose edge
	 * is spent: after urgent data (EPOLLPRI) the short-read rule is off for good, as after
	 * FIN or an error.
	 */
	if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR | EPOLLPRI))
		c->eng[side] |= EP_EOF;
	if (events & EPOLLRDHUP)
		c->eng[side] |= EP_FIN;
	if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
		c->eng[side] |= EP_WR;
	if ((c->eng[side] & (EP_CONN | EP_WR)) == (EP_CONN | EP_WR))
		finish_connect(w, c);
	if ((c->eng[side] & (EP_RECV | EP_RD)) == (EP_RECV | EP_RD))
		try_recv(w, c, side);
	if ((c->eng[side] & (EP_SEND | EP_WR)) == (EP_SEND | EP_WR))
		try_send(w, c, side);
}

/* --- requests ----------------------------------------------------------------------- */

static void ep_recv(struct dp_worker *w, struct dp_conn *c, int h)
{
	int side = h; /* C2B reads fd[0], B2C reads fd[1] */

	c->inflight++;
	if (reg(w, c, side)) {
		push(w, dp_tag(DP_OP_RECV0 + h, c->gen, c->slot), -EBADF, -1, 0);
		return;
	}
	c->eng[side] |= EP_RECV;
	if (c->eng[side] & EP_RD)
		try_recv(w, c, side);
}

static void ep_send(struct dp_worker *w, struct dp_conn *c, int h)
{
	int side = !h;

	c->inflight++;
	c->half[h].nsend = c->half[h].count;
	c->half[h].eng_done = 0;
	if (reg(w, c, side)) {
		push(w, dp_tag(DP_OP_SEND0 + h, c->gen, c->slot), -EBADF, -1, 0);
		return;
	}
	c->eng[side] |= EP_SEND;
	if (c->eng[side] & EP_WR)
		try_send(w, c, side);
}

static void ep_connect(struct dp_worker *w, struct dp_conn *c, const struct lb_addr *to,
		       unsigned timeout_ms)
{
	struct ep_timer t = { w->now_ms + timeout_ms, c->slot, c->gen, c->tries };
	uint64_t tag = dp_tag(DP_OP_CONNECT, c->gen, c->slot);

	c->inflight++;
	c->eng[1] = 0; /* a new socket for each attempt */
	if (connect(c->fd[1], (const struct sockaddr *)&to->ss, to->len) == 0) {
		push(w, tag, 0, -1, 0);
		return;
	}
	if (errno != EINPROGRESS) {
		push(w, tag, -errno, -1, 0);
		return;
	}
	if (reg(w, c, 1) || heap_push(E(w), t)) {
		push(w, tag, -ENOMEM, -1, 0);
		return;
	}
	c->eng[1] &= ~(EP_RD | EP_WR); /* writable means connected: wait for the event */
	c->eng[1] |= EP_CONN;
}

/* Everything pending completes now with -ECANCELED; the sockets are closed after that. */
static void ep_cancel(struct dp_worker *w, struct dp_conn *c)
{
	for (int side = 0; side < 2; side++) {
		uint8_t st = c->eng[side];

		if (st & EP_RECV)
			push(w, dp_tag(DP_OP_RECV0 + side, c->gen, c->slot), -ECANCELED, -1, 0);
		if (st & EP_SEND)
			push(w, dp_tag(DP_OP_SEND0 + !side, c->gen, c->slot), -ECANCELED, -1, 0);
		if (st & EP_CONN)
			push(w, dp_tag(DP_OP_CONNECT, c->gen, c->slot), -ECANCELED, -1, 0);
		c->eng[side] &= ~(EP_RECV | EP_SEND | EP_CONN);
	}
}

static void ep_accept(struct dp_worker *w, struct dp_wlistener *wl, bool multishot)
{
	struct epoll_event ev = { .events = EPOLLIN,
				  .data.u64 = dp_tag(DP_OP_ACCEPT, wl->gen, wl->idx) };

	if (epoll_ctl(E(w)->epfd, EPOLL_CTL_ADD, wl->fd, &ev) == -1) {
		push(w, ev.data.u64, -errno, -1, 0);
		return;
	}
	wl->eng = EPL_REG | (multishot ? 0 : EPL_SINGLE);
}

/* Out of the epoll set, with the request's last completion. */
static void accept_end(struct dp_worker *w, struct dp_wlistener *wl, uint64_t tag, int res)
{
	epoll_ctl(E(w)->epfd, EPOLL_CTL_DEL, wl->fd, NULL);
	wl->eng = 0;
	push(w, tag, res, -1, 0);
}

static void ep_accept_cancel(struct dp_worker *w, struct dp_wlistener *wl)
{
	/* As io_uring's: cancelling an accept that already ended does nothing. */
	if (wl->eng & EPL_REG)
		accept_end(w, wl, dp_tag(DP_OP_ACCEPT, wl->gen, wl->idx), -ECANCELED);
}

static void accept_event(struct dp_worker *w, uint64_t tag)
{
	uint32_t slot = dp_tag_slot(tag);
	struct dp_wlistener *wl = slot < w->n_wls ? w->wls[slot] : NULL;

	if (!wl || wl->gen != dp_tag_gen(tag) || !(wl->flags & DP_WL_ARMED) ||
	    (wl->flags & (DP_WL_STOPPING | DP_WL_PAUSED)))
		return; /* cancelled while this event was already fetched */
	for (int i = 0; i < DP_EP_ACCEPT_BATCH; i++) {
		int fd = accept4(wl->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd >= 0 && (wl->eng & EPL_SINGLE)) {
			accept_end(w, wl, tag, fd); /* one connection ends it, as under io_uring */
			return;
		}
		if (fd >= 0) {
			push(w, tag, fd, -1, DP_CF_MORE);
			continue;
		}
		if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
			return;
		/* Like a multishot accept that stops: out of the set, the worker decides. */
		accept_end(w, wl, tag, -errno);
		return;
	}
}

/* --- datagrams ---------------------------------------------------------------------- */

/*
 * A datagram socket stays in the epoll set, level-triggered, while its receive is armed; each
 * readiness reads up to DP_EP_DGRAM_BATCH datagrams with one recvmmsg into pool buffers laid
 * out as io_uring's multishot recvmsg lays them (udp.h), one completion each.  Sends wait in
 * e->out until the end of the turn and go out with one sendmmsg per run of the same socket.
 */
/* The byte of state of a datagram receive (its owner's eng). */
enum {
	EPD_ARMED = 1 << 0, /* its end has not been pushed yet */
	EPD_INSET = 1 << 1, /* the socket is in the epoll set */
};

static void ep_dgram_recv(struct dp_worker *w, int fd, uint64_t tag, uint8_t *eng)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = tag };

	if (!(*eng & EPD_INSET) && epoll_ctl(E(w)->epfd, EPOLL_CTL_ADD, fd, &ev) == -1) {
		*eng = 0;
		push(w, tag, -errno, -1, 0);
		return;
	}
	*eng = EPD_ARMED | EPD_INSET;
}

/* Its end, once: by a cancel, or by an error of its own (whichever comes first). */
static void dgram_end(struct dp_worker *w, int fd, uint64_t tag, uint8_t *eng, int res)
{
	if (!(*eng & EPD_ARMED))
		return;
	if (*eng & EPD_INSET)
		epoll_ctl(E(w)->epfd, EPOLL_CTL_DEL, fd, NULL);
	*eng = 0;
	push(w, tag, res, -1, 0);
}

/*
 * A flow's socket is ours alone and is closed right after its receive ends, which takes it out
 * of the epoll set: no EPOLL_CTL_DEL for it (a system call per flow).  Until then its events
 * are ignored (not ARMED).  A listener's socket is always taken out: after a handover a
 * successor's clients keep it readable, and it stays open while our flows drain.
 */
static void ep_dgram_cancel(struct dp_worker *w, int fd, uint64_t tag, uint8_t *eng)
{
	if (dp_tag_op(tag) == DP_OP_DRECVF && (*eng & EPD_ARMED)) {
		*eng = EPD_INSET;
		push(w, tag, -ECANCELED, -1, 0);
		return;
	}
	dgram_end(w, fd, tag, eng, -ECANCELED);
}

static void dgram_event(struct dp_worker *w, uint64_t tag)
{
	struct dp_epoll *e = E(w);
	bool named = dp_tag_op(tag) == DP_OP_DRECVL;
	uint32_t room = dp_dgram_room(named);
	struct mmsghdr mm[DP_EP_DGRAM_BATCH];
	struct iovec iov[DP_EP_DGRAM_BATCH];
	unsigned bids[DP_EP_DGRAM_BATCH], k;
	uint8_t *eng;
	int fd = dp_udp_tag_fd(w, tag, &eng), n;

	if (fd < 0 || !(*eng & EPD_ARMED))
		return; /* ended since this event was fetched */
	for (k = 0; k < DP_EP_DGRAM_BATCH && e->free.n; k++) {
		char *b = ep_buf(w, bids[k] = dp_bufstack_pop(&e->free));

		iov[k] = (struct iovec){ b + room, w->buffer_size - room };
		mm[k].msg_hdr = (struct msghdr){
			.msg_name = named ? b + sizeof(struct dp_dgram) : NULL,
			.msg_namelen = named ? DP_DGRAM_NAME : 0,
			.msg_iov = &iov[k],
			.msg_iovlen = 1,
			.msg_control = named ? b + sizeof(struct dp_dgram) + DP_DGRAM_NAME : NULL,
			.msg_controllen = named ? DP_DGRAM_CTL : 0,
		};
	}
	if (!k) {
		dgram_end(w, fd, tag, eng, -ENOBUFS); /* made again once buffers come back */
		return;
	}
	n = recvmmsg(fd, mm, k, MSG_DONTWAIT | MSG_TRUNC, NULL);
	if (n < 0 && errno != EAGAIN && errno != EINTR)
		dgram_end(w, fd, tag, eng, -errno);
	for (int i = 0; i < n && i < (int)k; i++) { /* n <= k: said for the analyzer */
		struct dp_dgram *d = (struct dp_dgram *)ep_buf(w, bids[i]);

		*d = (struct dp_dgram){
			.namelen = mm[i].msg_hdr.msg_namelen,
			.controllen = (uint32_t)mm[i].msg_hdr.msg_controllen,
			.payloadlen = mm[i].msg_len,
			.flags = (uint32_t)mm[i].msg_hdr.msg_flags,
		};
		push(w, tag, (int)room + (int)mm[i].msg_len, (int)bids[i], DP_CF_MORE);
	}
	for (unsigned i = n < 0 ? 0 : (unsigned)n; i < k; i++)
		dp_bufstack_push(&e->free, bids[i]);
}

/* Everything queued, in runs of one socket; a failed datagram completes with its error. */
static void dgram_flush(struct dp_worker *w)
{
	struct dp_epoll *e = E(w);
	struct mmsghdr mm[DP_EP_SEND_BATCH];
	unsigned i = 0;

	while (i < e->n_out) {
		unsigned j = i, k;
		int n;

		while (j < e->n_out && e->out[j].fd == e->out[i].fd) {
			mm[j - i].msg_hdr = *e->out[j].msg;
			mm[j - i].msg_len = 0;
			j++;
		}
		n = sendmmsg(e->out[i].fd, mm, j - i, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n <= 0) {
			/* The first datagram's error, and only when nothing was sent (0: never). */
			int err = n < 0 ? errno : EAGAIN;

			if (err != EINTR)
				push(w, e->out[i++].tag, -err, -1, 0);
			continue;
		}
		/*
		 * Short of the run: the next one failed, and sendmmsg does not say why.  The rest
		 * goes again on the next pass, where a failure is the first datagram's, with its
		 * own errno.
		 */
		for (k = 0; k < (unsigned)n; k++)
			push(w, e->out[i + k].tag, (int)mm[k].msg_len, -1, 0);
		i += k;
	}
	e->n_out = 0;
}

static void ep_dgram_send(struct dp_worker *w, int fd, struct msghdr *msg, uint64_t tag)
{
	struct dp_epoll *e = E(w);

	if (e->n_out == DP_EP_SEND_BATCH)
		dgram_flush(w);
	e->out[e->n_out++] = (struct ep_dsend){ fd, msg, tag };
}

/* --- the loop ------------------------------------------------------------------------ */

static void expire_connects(struct dp_worker *w)
{
	struct dp_epoll *e = E(w);

	while (e->n_heap && e->heap[0].due_ms <= w->now_ms) {
		struct ep_timer t = e->heap[0];
		struct dp_conn *c = dp_conn_get(w, t.slot, t.gen & 0xffffff);

		heap_pop(e);
		/* Only the attempt this deadline was set for: a retry has its own. */
		if (c && c->tries == t.tries && (c->eng[1] & EP_CONN)) {
			c->eng[1] &= ~EP_CONN;
			push(w, dp_tag(DP_OP_CONNECT, c->gen, c->slot), -ECANCELED, -1, 0);
		}
	}
}

static void handle_events(struct dp_worker *w, struct epoll_event *evs, int n)
{
	for (int i = 0; i < n; i++) {
		uint64_t tag = evs[i].data.u64;

		switch (dp_tag_op(tag)) {
		case DP_OP_WAKE:
			if (read(w->efd, &w->efd_val, sizeof(w->efd_val)) > 0)
				dp_worker_woken(w);
			break;
		case DP_OP_ACCEPT:
			accept_event(w, tag);
			break;
		case DP_OP_DRECVL:
		case DP_OP_DRECVF:
			dgram_event(w, tag);
			break;
		default:
			conn_event(w, tag, evs[i].events);
		}
	}
}

static int ep_run(struct dp_worker *w, unsigned timeout_ms)
{
	struct dp_epoll *e = E(w);
	struct epoll_event evs[DP_EP_EVENTS];
	unsigned n_done;
	int n;

	dgram_flush(w); /* last turn's datagrams: their completions come in this one */
	if (e->q_len)
		timeout_ms = 0;
	if (e->n_heap && e->heap[0].due_ms < w->now_ms + timeout_ms)
		timeout_ms = e->heap[0].due_ms > w->now_ms ? e->heap[0].due_ms - w->now_ms : 0;
	n = epoll_wait(e->epfd, evs, DP_EP_EVENTS, (int)timeout_ms);
	if (n < 0 && errno != EINTR)
		return -errno;
	w->now_ms = dp_now_ms();
	handle_events(w, evs, n < 0 ? 0 : n);
	expire_connects(w);
	/* Only what is queued now: completions they cause wait for the next turn. */
	n_done = e->q_len;
	while (n_done--) {
		struct ep_completion cq = e->q[e->q_head];

		e->q_head = (e->q_head + 1) % e->q_cap;
		e->q_len--;
		dp_engine_complete(w, cq.tag, cq.res, cq.flags, cq.bid);
	}
	return 0;
}

static void ep_fini(struct dp_worker *w)
{
	struct dp_epoll *e = E(w);

	if (!e)
		return;
	if (e->epfd >= 0)
		close(e->epfd);
	if (e->bufs && e->bufs != MAP_FAILED)
		munmap(e->bufs, e->bufs_len);
	free(e->free.v);
	free(e->q);
	free(e->heap);
	free(e);
	w->engine = NULL;
}

static int ep_init(struct dp_worker *w, char *err, size_t errlen)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = dp_tag(DP_OP_WAKE, 0, 0) };
	struct dp_epoll *e = calloc(1, sizeof(*e));

	if (!e)
		return -ENOMEM;
	w->engine = e;
	e->bufs_len = (size_t)w->buffer_count * w->buffer_size;
	e->bufs = mmap(NULL, e->bufs_len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	e->free.v = calloc(w->buffer_count, sizeof(*e->free.v));
	e->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (e->bufs == MAP_FAILED || !e->free.v || e->epfd == -1 ||
	    epoll_ctl(e->epfd, EPOLL_CTL_ADD, w->efd, &ev) == -1) {
		int r = errno ? -errno : -ENOMEM; /* before ep_fini's calls change it */

		snprintf(err, errlen, "epoll engine setup failed: %s", strerror(-r));
		ep_fini(w);
		return r;
	}
	w->bufs = e->bufs;
	/* Lowest ids on top: the same few buffers serve a light load. */
	for (unsigned i = w->buffer_count; i-- > 0;)
		dp_bufstack_push(&e->free, i);
	e->free.low = e->free.released = e->free.n; /* fresh pages: nothing resident yet */
	return 0;
}

const struct dp_engine dp_engine_epoll = {
	.name = "epoll",
	.init = ep_init,
	.fini = ep_fini,
	.accept = ep_accept,
	.accept_cancel = ep_accept_cancel,
	.connect = ep_connect,
	.recv = ep_recv,
	.send = ep_send,
	.cancel = ep_cancel,
	.buf_put = ep_buf_put,
	.trim = ep_trim,
	.bufs_left = ep_bufs_left,
	.dgram_recv = ep_dgram_recv,
	.dgram_cancel = ep_dgram_cancel,
	.dgram_send = ep_dgram_send,
	.run = ep_run,
};
