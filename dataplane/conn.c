/* conn.c - the proxied connection's state machine, independent of the I/O engine. */
#include <errno.h>
#include <netinet/in.h>
#include <linux/tcp.h> /* struct tcp_info with tcpi_bytes_acked; glibc's lacks it */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "dataplane/conn.h"
#include "dataplane/dp.h"
#include "dataplane/lset.h"
#include "dataplane/snapshot.h"

/*
 * A connection is two halves: C2B reads the client and writes the backend, B2C the reverse.
 * Each half keeps at most one receive and one send in flight and at most w->half_qmax buffers
 * queued; a full queue stops the receive (backpressure).  A FIN from the source is passed on
 * with shutdown(SHUT_WR) once the queue is empty; the connection ends when both halves are
 * shut, or at once on an error.
 *
 * Lifetime: every request issued holds c->inflight.  dp_conn_close() only marks the
 * connection and cancels what is in flight; the slot is freed by dp_conn_put() once the last
 * completion has come back, so no completion ever finds freed memory.
 */

static inline int dst_fd(const struct dp_conn *c, int h)
{
	return c->fd[h == DP_C2B ? 1 : 0];
}

/* --- slab ---------------------------------------------------------------------------- */

static int slab_grow(struct dp_worker *w)
{
	struct dp_conn **chunks, *chunk;
	char **hdr_chunks;
	uint32_t *free_slots, base = w->n_chunks * DP_SLAB_CHUNK;

	if (base > UINT32_MAX - DP_SLAB_CHUNK)
		return -ENOMEM;
	chunks = realloc(w->chunks, (w->n_chunks + 1) * sizeof(*chunks));
	if (!chunks)
		return -ENOMEM;
	w->chunks = chunks;
	hdr_chunks = realloc(w->hdr_chunks, (w->n_chunks + 1) * sizeof(*hdr_chunks));
	if (!hdr_chunks)
		return -ENOMEM;
	hdr_chunks[w->n_chunks] = NULL; /* headers of this chunk: allocated on first use */
	w->hdr_chunks = hdr_chunks;
	free_slots = realloc(w->free_slots, (base + DP_SLAB_CHUNK) * sizeof(*free_slots));
	if (!free_slots)
		return -ENOMEM;
	w->free_slots = free_slots;
	chunk = calloc(DP_SLAB_CHUNK, sizeof(*chunk));
	if (!chunk)
		return -ENOMEM;
	w->chunks[w->n_chunks++] = chunk;
	/* Push in reverse so the lowest slots are used first. */
	for (uint32_t i = DP_SLAB_CHUNK; i-- > 0;) {
		chunk[i].slot = base + i;
		w->free_slots[w->n_free++] = base + i;
	}
	return 0;
}

struct dp_conn *dp_conn_alloc(struct dp_worker *w)
{
	struct dp_conn *c;
	uint32_t slot, gen;

	if (!w->n_free && slab_grow(w))
		return NULL;
	slot = w->free_slots[--w->n_free];
	c = &w->chunks[slot / DP_SLAB_CHUNK][slot % DP_SLAB_CHUNK];
	gen = c->gen;
	memset(c, 0, sizeof(*c));
	c->slot = slot;
	c->gen = gen;
	c->fd[0] = c->fd[1] = -1;
	c->bidx = -1;
	dp_list_init(&c->idle);
	dp_list_init(&c->half[0].wait);
	dp_list_init(&c->half[1].wait);
	c->half[1].which = 1;
	return c;
}

struct dp_conn *dp_conn_get(struct dp_worker *w, uint32_t slot, uint32_t gen)
{
	struct dp_conn *c;

	if (slot / DP_SLAB_CHUNK >= w->n_chunks)
		return NULL;
	c = &w->chunks[slot / DP_SLAB_CHUNK][slot % DP_SLAB_CHUNK];
	if (c->state == DP_CS_FREE || (c->gen & 0xffffff) != gen)
		return NULL;
	return c;
}

void dp_conn_slab_free(struct dp_worker *w)
{
	for (unsigned i = 0; i < w->n_chunks; i++) {
		free(w->chunks[i]);
		free(w->hdr_chunks[i]);
	}
	free(w->chunks);
	free(w->hdr_chunks);
	free(w->free_slots);
	w->chunks = NULL;
	w->hdr_chunks = NULL;
	w->free_slots = NULL;
	w->n_chunks = w->n_free = 0;
}

/* --- teardown ----------------------------------------------------------------------- */

static void buf_put(struct dp_worker *w, unsigned bid)
{
	if (bid == DP_BID_HEADER)
		return; /* the PROXY header lives at the connection's slot, not in the pool */
	w->eng->buf_put(w, bid);
	w->bufs_held--;
}

/* Off the worker's list of receives waiting for buffers, or of held sends, if on one. */
static void wait_leave(struct dp_worker *w, struct dp_half *hf)
{
	if (!(hf->flags & (DP_H_NOBUF | DP_H_HOLD)))
		return;
	if (hf->flags & DP_H_NOBUF)
		w->n_nobuf--;
	hf->flags &= ~(DP_H_NOBUF | DP_H_HOLD);
	dp_list_del(&hf->wait);
}

static void half_release(struct dp_worker *w, struct dp_half *hf)
{
	while (hf->count) {
		buf_put(w, hf->bid[hf->head]);
		hf->head = (hf->head + 1) % DP_HALF_QMAX;
		hf->count--;
	}
	wait_leave(w, hf);
}

static void backend_release(struct dp_worker *w, struct dp_conn *c)
{
	struct dp_bstate *st;

	if (c->bidx < 0)
		return;
	st = c->set->sl->backends[c->bidx].st;
	dp_lb_conn_end(&c->set->lb, c->bidx);
	atomic_fetch_sub(&st->active, 1);
	/* Once per connection, not per chunk: the relay path touches no shared cache line. */
	if (c->half[DP_C2B].bytes | c->half[DP_B2C].bytes) {
		struct dp_lstate *ls = c->set->sl->st;

		atomic_fetch_add_explicit(&st->bytes_in, c->half[DP_C2B].bytes,
					  memory_order_relaxed);
		atomic_fetch_add_explicit(&st->bytes_out, c->half[DP_B2C].bytes,
					  memory_order_relaxed);
		atomic_fetch_add_explicit(&ls->bytes_in, c->half[DP_C2B].bytes,
					  memory_order_relaxed);
		atomic_fetch_add_explicit(&ls->bytes_out, c->half[DP_B2C].bytes,
					  memory_order_relaxed);
	}
	c->bidx = -1;
}

static void conn_free(struct dp_worker *w, struct dp_conn *c)
{
	half_release(w, &c->half[0]);
	half_release(w, &c->half[1]);
	for (int i = 0; i < 2; i++)
		if (c->fd[i] >= 0)
			close(c->fd[i]);
	dp_list_del(&c->idle);
	if (c->kind == DP_CONN_CHECK) {
		dp_bstate_put(c->check);
		w->n_checks--;
	} else {
		backend_release(w, c);
		atomic_fetch_sub(&c->set->sl->st->active, 1);
		dp_lset_put(c->set);
		w->n_conns--;
		DP_STAT_INC(w->stats.closed);
		DP_STAT_ADD(w->stats.active, -1);
	}
	c->state = DP_CS_FREE;
	c->gen++;
	w->free_slots[w->n_free++] = c->slot;
}

void dp_conn_put(struct dp_worker *w, struct dp_conn *c)
{
	if (c->state == DP_CS_CLOSING && !c->inflight)
		conn_free(w, c);
}

/*
 * Abortive on errors and time-outs (SO_LINGER 0 sends RST, so the peer learns the stream was
 * cut rather than reading a clean end), orderly otherwise.  Never frees: see dp_conn_put().
 */
void dp_conn_abort(struct dp_worker *w, struct dp_conn *c)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	for (int i = 0; i < 2; i++)
		if (c->fd[i] >= 0)
			setsockopt(c->fd[i], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	dp_conn_close(w, c);
}

void dp_conn_close(struct dp_worker *w, struct dp_conn *c)
{
	if (c->state == DP_CS_CLOSING)
		return;
	c->state = DP_CS_CLOSING;
	dp_list_del(&c->idle);
	wait_leave(w, &c->half[0]);
	wait_leave(w, &c->half[1]);
	if (c->inflight)
		w->eng->cancel(w, c);
}

/* --- connect ------------------------------------------------------------------------ */

struct pick_ctx {
	struct dp_worker *w;
	struct dp_conn *c;
};

static bool backend_usable(void *arg, unsigned idx)
{
	struct pick_ctx *p = arg;

	for (unsigned i = 0; i < p->c->tries; i++)
		if (p->c->tried[i] == idx)
			return false;
	return dp_bstate_usable(p->c->set->sl->backends[idx].st, p->w->now_ms);
}

static int backend_socket(const struct lb_addr *a)
{
	int fd, one = 1;

	fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* Try the next backend; closes the client when none is left or usable. */
static void connect_next(struct dp_worker *w, struct dp_conn *c)
{
	const struct dp_slistener *sl = c->set->sl;
	struct pick_ctx ctx = { w, c };

	while (c->tries <= sl->conf->connect_retries && c->tries < DP_TRIES_MAX) {
		struct dp_backend *b;
		int idx, fd;

		idx = dp_lb_pick(&c->set->lb, c->key, backend_usable, &ctx);
		if (idx < 0)
			break;
		c->tried[c->tries++] = (uint16_t)idx;
		b = &sl->backends[idx];
		fd = backend_socket(&b->addr);
		if (fd < 0) /* out of fds or memory: no other backend would fare better */
			break;
		c->fd[1] = fd;
		c->bidx = idx;
		dp_lb_conn_start(&c->set->lb, idx);
		atomic_fetch_add(&b->st->active, 1);
		c->state = DP_CS_CONNECTING;
		w->eng->connect(w, c, &b->addr, sl->conf->connect_timeout_ms);
		return;
	}
	DP_STAT_INC(w->stats.no_backend);
	atomic_fetch_add(&sl->st->refused, 1);
	dp_conn_close(w, c);
}

static void half_send(struct dp_worker *w, struct dp_conn *c, int h);

static void start_relay(struct dp_worker *w, struct dp_conn *c)
{
	c->state = DP_CS_RELAY;
	/* A PROXY protocol header goes first, whether or not the client has said anything. */
	half_send(w, c, DP_C2B);
	/* The client has usually sent already; the backend has not answered yet. */
	c->half[DP_B2C].flags |= DP_H_POLLFIRST;
	w->eng->recv(w, c, DP_C2B);
	c->half[DP_C2B].flags |= DP_H_RECV;
	w->eng->recv(w, c, DP_B2C);
	c->half[DP_B2C].flags |= DP_H_RECV;
}

static enum dp_connect_error connect_error_kind(int res)
{
	switch (res) {
	case -ECONNREFUSED:
		return DP_CERR_REFUSED;
	case -ETIMEDOUT:
		return DP_CERR_TIMEOUT;
	case -EHOSTUNREACH:
	case -ENETUNREACH:
	case -EHOSTDOWN:
	case -ENETDOWN:
		return DP_CERR_UNREACHABLE;
	default:
		return DP_CERR_OTHER;
	}
}

void dp_conn_connected(struct dp_worker *w, struct dp_conn *c, int res)
{
	struct dp_backend *b;

	if (c->state != DP_CS_CONNECTING)
		return;
	b = &c->set->sl->backends[c->bidx];
	if (!res) {
		atomic_fetch_add_explicit(&b->st->conns_total, 1, memory_order_relaxed);
		dp_bstate_report(b->st, true, 0, 0, w->now_ms);
		start_relay(w, c);
		return;
	}
	/* The link timeout cancels a connect that runs out of time. */
	if (res == -ECANCELED || res == -EINTR)
		res = -ETIMEDOUT;
	DP_STAT_INC(w->stats.connect_errors);
	atomic_fetch_add(&b->st->connect_failures, 1);
	atomic_fetch_add(&b->st->connect_errors[connect_error_kind(res)], 1);
	if (dp_bstate_report(b->st, false, c->set->sl->conf->max_fails,
			     c->set->sl->conf->fail_timeout_ms, w->now_ms))
		log_warn("listener %s: backend %s taken out after %u failed connects (last: %s)",
			 c->set->sl->conf->name, b->name, c->set->sl->conf->max_fails,
			 strerror(-res));
	else
		log_debug("conn %u: connect to %s failed: %s", c->slot, b->name, strerror(-res));
	backend_release(w, c);
	close(c->fd[1]);
	c->fd[1] = -1;
	connect_next(w, c);
}

/*
 * What the client's address decides: the maglev key, and the PROXY protocol header, queued as
 * the first chunk to the backend and sent as soon as the backend is connected, before
 * anything the client sends (a server that speaks first must still learn who is calling).
 */
static int conn_origin(struct dp_worker *w, struct dp_conn *c, const struct lb_listener_conf *lc)
{
	struct sockaddr_storage peer, local;
	socklen_t plen = sizeof(peer), llen = sizeof(local);
	struct dp_half *hf = &c->half[DP_C2B];
	char **hdrs = &w->hdr_chunks[c->slot / DP_SLAB_CHUNK];
	int n;

	if (lc->algorithm != LB_ALGO_MAGLEV && lc->proxy_protocol == LB_PROXY_OFF)
		return 0;
	if (getpeername(c->fd[0], (struct sockaddr *)&peer, &plen) == -1)
		/* Maglev alone hashes key 0 then; a header cannot be written without it. */
		return lc->proxy_protocol == LB_PROXY_OFF ? 0 : -errno;
	c->key = lb_addr_hash_ip((struct sockaddr *)&peer);
	if (lc->proxy_protocol == LB_PROXY_OFF)
		return 0;
	if (getsockname(c->fd[0], (struct sockaddr *)&local, &llen) == -1)
		return -errno;
	if (!*hdrs && !(*hdrs = malloc((size_t)DP_SLAB_CHUNK * LB_PROXY_HDR_MAX)))
		return -ENOMEM;
	n = lb_proxy_header(lc->proxy_protocol, (struct sockaddr *)&peer,
			    (struct sockaddr *)&local, dp_conn_header(w, c), LB_PROXY_HDR_MAX);
	if (n < 0)
		return n;
	hf->bid[hf->head] = DP_BID_HEADER;
	hf->len[hf->head] = (uint32_t)n;
	hf->count = 1;
	return 0;
}

void dp_conn_accepted(struct dp_worker *w, struct dp_lset *set, int fd)
{
	const struct dp_slistener *sl = set->sl;
	struct dp_conn *c;
	int r;

	c = dp_conn_alloc(w);
	if (!c) {
		atomic_fetch_sub(&sl->st->active, 1);
		close(fd);
		return;
	}
	c->kind = DP_CONN_PROXY;
	c->state = DP_CS_CONNECTING;
	c->fd[0] = fd;
	c->set = set;
	set->refs++;
	w->n_conns++;
	DP_STAT_INC(w->stats.accepted);
	DP_STAT_INC(w->stats.active);
	atomic_fetch_add(&sl->st->accepted, 1);
	c->last_ms = w->now_ms;
	dp_list_add_tail(&set->idle, &c->idle);
	r = conn_origin(w, c, sl->conf);
	if (r < 0) {
		/* ENOTCONN: the client is gone already; ENOMEM: no header to send. */
		log_debug("conn %u: no PROXY header: %s", c->slot, strerror(-r));
		dp_conn_close(w, c);
	} else {
		connect_next(w, c);
	}
	dp_conn_put(w, c);
}

/* --- relay -------------------------------------------------------------------------- */

/* Buffers a direction may queue: one only once half the pool is taken, so more peers fit. */
static inline unsigned half_limit(const struct dp_worker *w)
{
	return w->bufs_held * 2 >= w->buffer_count ? 1 : w->half_qmax;
}

/* Arm the receive of half h if it may read now; true when it did. */
static bool half_recv(struct dp_worker *w, struct dp_conn *c, int h)
{
	struct dp_half *hf = &c->half[h];

	if (c->state != DP_CS_RELAY || (hf->flags & (DP_H_RECV | DP_H_EOF | DP_H_NOBUF)) ||
	    hf->count >= half_limit(w))
		return false;
	w->eng->recv(w, c, h);
	hf->flags |= DP_H_RECV;
	return true;
}

static void half_send(struct dp_worker *w, struct dp_conn *c, int h)
{
	struct dp_half *hf = &c->half[h];

	if (hf->flags & DP_H_SEND || !hf->count)
		return;
	hf->moved_ms = (uint32_t)w->now_ms;
	hf->flags &= ~DP_H_SAMPLED;
	w->eng->send(w, c, h);
	hf->flags |= DP_H_SEND;
}

/* A half is finished once its FIN has been passed on; both finished ends the connection. */
static void half_maybe_shut(struct dp_worker *w, struct dp_conn *c, int h)
{
	struct dp_half *hf = &c->half[h];

	if (!(hf->flags & DP_H_EOF) || hf->count || (hf->flags & (DP_H_SEND | DP_H_SHUT)))
		return;
	hf->flags |= DP_H_SHUT;
	/*
	 * The last FIN to pass on: close(2) sends it, no shutdown(2) needed (that peer has sent
	 * its FIN and everything before it was read, so close sends FIN, not RST).
	 */
	if (c->half[!h].flags & DP_H_SHUT) {
		dp_conn_close(w, c);
		return;
	}
	shutdown(dst_fd(c, h), SHUT_WR);
}

static void touch(struct dp_worker *w, struct dp_conn *c)
{
	c->last_ms = w->now_ms;
	dp_list_move_tail(&c->set->idle, &c->idle);
}

void dp_conn_received(struct dp_worker *w, struct dp_conn *c, int h, int res, int bid, bool more)
{
	struct dp_half *hf = &c->half[h];

	hf->flags &= ~DP_H_RECV;
	wait_leave(w, hf); /* a send held back for this receive is decided below */
	if (bid >= 0)
		w->bufs_held++;
	if (c->state != DP_CS_RELAY) {
		if (bid >= 0)
			buf_put(w, bid);
		return;
	}
	if (res > 0 && bid >= 0) {
		unsigned k = (hf->head + hf->count) % DP_HALF_QMAX;

		hf->bid[k] = bid;
		hf->len[k] = res;
		hf->count++;
		hf->bytes += res;
		if (more)
			hf->flags &= ~DP_H_POLLFIRST;
		else
			hf->flags |= DP_H_POLLFIRST;
		touch(w, c);
		/*
		 * A short read that left the socket "not empty" has most likely left only the
		 * peer's FIN (the kernel reports a pending FIN as unread data, so that it is read).
		 * Then read first and send after: once the FIN is known the last data goes out
		 * with it in one segment (see the engines' sends), rather than the FIN costing a
		 * segment of its own (on 70% of the connections of a request-response-close
		 * exchange here).  Such a receive completes at once; if it does not (urgent data
		 * can look the same), dp_conn_release_held() sends after one loop turn.
		 */
		if (more && (unsigned)res < w->buffer_size && !(hf->flags & DP_H_SEND) &&
		    half_recv(w, c, h)) {
			hf->flags |= DP_H_HOLD;
			dp_list_add_tail(&w->held_new, &hf->wait);
			return;
		}
		half_send(w, c, h);
		half_recv(w, c, h);
		return;
	}
	if (bid >= 0)
		buf_put(w, bid);
	if (res == 0)
		hf->flags |= DP_H_EOF; /* first: the send below then carries the FIN along */
	/* Data held back for this receive goes now, whatever came: ahead of a reset too. */
	half_send(w, c, h);
	if (res == 0) {
		touch(w, c);
		half_maybe_shut(w, c, h);
	} else if (res == -ENOBUFS) {
		/* The worker's pool is empty: wait for buffers rather than spin on re-arming. */
		if (!w->starved_since_ms)
			w->starved_since_ms = w->now_ms;
		w->n_nobuf++;
		hf->flags |= DP_H_NOBUF;
		dp_list_add_tail(&w->nobuf, &hf->wait);
		touch(w, c); /* waiting on our pool, not on the peer: not idle */
		DP_STAT_INC(w->stats.nobufs);
	} else if (res == -EAGAIN || res == -EINTR) {
		/*
		 * Nothing read after all: a poll that fired spuriously too often sends the receive
		 * to io-wq, where a non-blocking socket says EAGAIN.  Wait for data again.
		 */
		hf->flags |= DP_H_POLLFIRST;
		half_recv(w, c, h);
	} else {
		log_debug("conn %u: recv from %s: %s", c->slot, h == DP_C2B ? "client" : "backend",
			  strerror(-res));
		dp_conn_abort(w, c);
	}
}

/* Drop `n` sent bytes from the front of the queue, giving emptied buffers back. */
static void half_consume(struct dp_worker *w, struct dp_half *hf, unsigned n)
{
	while (n && hf->count) {
		unsigned left = hf->len[hf->head] - hf->off;

		if (n < left) {
			hf->off += n;
			return;
		}
		n -= left;
		buf_put(w, hf->bid[hf->head]);
		hf->off = 0;
		hf->head = (hf->head + 1) % DP_HALF_QMAX;
		hf->count--;
	}
}

void dp_conn_sent(struct dp_worker *w, struct dp_conn *c, int h, int res)
{
	struct dp_half *hf = &c->half[h];

	hf->flags &= ~(DP_H_SEND | DP_H_SENDPOLL);
	hf->nsend = 0;
	if (res == -EAGAIN && c->state == DP_CS_RELAY) {
		/*
		 * A send that io_uring finished in a worker thread on our non-blocking socket can
		 * come back with EAGAIN and nothing sent; MSG_WAITALL does not retry that.  Try
		 * again once the socket says it is writable.
		 */
		hf->flags |= DP_H_SENDPOLL;
		half_send(w, c, h);
		return;
	}
	if (res < 0) {
		if (c->state == DP_CS_RELAY)
			log_debug("conn %u: send to %s: %s", c->slot,
				  h == DP_C2B ? "backend" : "client", strerror(-res));
		dp_conn_abort(w, c);
		return;
	}
	half_consume(w, hf, res);
	if (c->state != DP_CS_RELAY)
		return;
	half_send(w, c, h);
	half_recv(w, c, h);
	half_maybe_shut(w, c, h);
}

/* --- timers and buffer waits ---------------------------------------------------------- */

void dp_conn_expire_idle(struct dp_worker *w, struct dp_lset *set, uint64_t *next_ms)
{
	uint64_t timeout = set->sl->conf->idle_timeout_ms;

	while (!dp_list_empty(&set->idle)) {
		struct dp_conn *c = dp_list_first(&set->idle, struct dp_conn, idle);

		if (c->last_ms + timeout > w->now_ms) {
			if (c->last_ms + timeout < *next_ms)
				*next_ms = c->last_ms + timeout;
			return;
		}
		log_debug("conn %u: idle for %llu ms, closing", c->slot,
			  (unsigned long long)(w->now_ms - c->last_ms));
		dp_conn_abort(w, c);
		dp_conn_put(w, c);
	}
}

/*
 * Re-arm the receives that found the pool empty once there is a buffer for each of them, or a
 * quarter of the pool: not at every returned buffer, which would re-arm the whole list into
 * the same shortage.
 */
void dp_conn_retry_nobuf(struct dp_worker *w)
{
	unsigned free_bufs = w->buffer_count - w->bufs_held;
	struct dp_list *pos, *tmp;

	if (free_bufs < w->n_nobuf && free_bufs < w->buffer_count / 4)
		return;
	dp_list_for_each(pos, tmp, &w->nobuf) {
		struct dp_half *hf = dp_container_of(pos, struct dp_half, wait);
		struct dp_conn *c = dp_container_of(hf - hf->which, struct dp_conn, half);

		wait_leave(w, hf);
		half_recv(w, c, hf->which);
	}
}

/*
 * Sends held back for a receive that has not come back within the loop turn after it was
 * armed go now; holds made in this turn wait for the next.
 */
void dp_conn_release_held(struct dp_worker *w)
{
	struct dp_list *pos, *tmp;

	dp_list_for_each(pos, tmp, &w->held) {
		struct dp_half *hf = dp_container_of(pos, struct dp_half, wait);
		struct dp_conn *c = dp_container_of(hf - hf->which, struct dp_conn, half);

		wait_leave(w, hf);
		half_send(w, c, hf->which);
	}
	dp_list_splice_tail(&w->held, &w->held_new);
}

/* The destination's count of bytes its peer has acknowledged: it moves while the peer reads. */
static int bytes_acked(int fd, uint32_t *ret)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == -1)
		return -errno;
	if (len < offsetof(struct tcp_info, tcpi_bytes_acked) + sizeof(ti.tcpi_bytes_acked))
		return -EOPNOTSUPP;
	*ret = (uint32_t)ti.tcpi_bytes_acked;
	return 0;
}

/*
 * A direction whose peer has stopped reading: its send is pending and the peer acknowledged
 * nothing for stalled_ms.  The time of a send alone would not tell: with MSG_WAITALL one send
 * carries up to a megabyte, which a slow but steady reader may take seconds to take.  The
 * first look, half-way, only takes the count; the verdict needs a second look that finds it
 * unchanged.
 */
static bool half_stalled(struct dp_worker *w, struct dp_conn *c, struct dp_half *hf,
			 unsigned stalled_ms)
{
	uint32_t now = (uint32_t)w->now_ms, acked = 0; /* the analyzer can't see -errno is < 0 */
	unsigned wait = hf->flags & DP_H_SAMPLED ? stalled_ms : stalled_ms / 2;

	if (!(hf->flags & DP_H_SEND) || !hf->count || now - hf->moved_ms < wait)
		return false;
	if (bytes_acked(dst_fd(c, hf->which), &acked) < 0)
		return hf->flags & DP_H_SAMPLED; /* no count: the send's age must do */
	if ((hf->flags & DP_H_SAMPLED) && acked == hf->acked)
		return true;
	hf->acked = acked;
	hf->moved_ms = now;
	hf->flags |= DP_H_SAMPLED;
	return false;
}

/*
 * The pool ran dry and has not recovered: close (with a reset) every connection that holds
 * buffers in a send whose peer has read nothing for stalled_ms, so that one peer that stops
 * reading costs only its own connection.  Returns how many were closed.
 */
unsigned dp_conn_evict_stalled(struct dp_worker *w, unsigned stalled_ms)
{
	struct dp_list *spos, *stmp, *pos, *tmp;
	unsigned n = 0;

	dp_list_for_each(spos, stmp, &w->lsets) {
		struct dp_lset *set = dp_container_of(spos, struct dp_lset, link);

		set->refs++; /* closing its last connection must not free it under us */
		dp_list_for_each(pos, tmp, &set->idle) {
			struct dp_conn *c = dp_container_of(pos, struct dp_conn, idle);
			bool stalled;

			if (c->state != DP_CS_RELAY)
				continue;
			/* Both halves are looked at: each look may take a sample. */
			stalled = half_stalled(w, c, &c->half[0], stalled_ms);
			stalled = half_stalled(w, c, &c->half[1], stalled_ms) || stalled;
			if (!stalled)
				continue;
			log_debug("conn %u: peer not reading for %u ms and buffers short, closing",
				  c->slot, stalled_ms);
			dp_conn_abort(w, c);
			dp_conn_put(w, c);
			n++;
		}
		stmp = set->link.next;
		dp_lset_put(set);
	}
	DP_STAT_ADD(w->stats.evicted, n);
	return n;
}

/* The shortage is over once no receive waits and a quarter of the pool is free. */
void dp_conn_relieved(struct dp_worker *w)
{
	if (!w->n_nobuf && w->buffer_count - w->bufs_held >= w->buffer_count / 4)
		w->starved_since_ms = 0;
}
