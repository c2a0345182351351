/* udp.c - udp flows: a client address's datagrams to one backend and its replies back. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "dataplane/engine.h"
#include "dataplane/lset.h"
#include "dataplane/snapshot.h"
#include "dataplane/udp.h"
#include "dataplane/wl.h"

/*
 * Ownership.  A flow holds a reference on the balancer set that picked its backend (as a
 * connection does) and is counted in its listener socket's wl->users, as is every reply in
 * flight on that socket: the socket outlives them all (wl.h).  A flow's own socket is closed
 * only once its receive has ended and no send of it is in flight (f->sends), so no request
 * ever names a descriptor number that was closed and reused.  Each datagram stays in the
 * receive buffer it arrived in until its send completes; udp->sends[bid] is that send.
 */

#define FLOW_CHUNK 1024u
#define NIL UINT32_MAX
#define BUCKETS_MIN 256u
#define SWEEP_EVERY_MS 1000
/*
 * A stopped listener socket (drain, handover, removal) receives nothing more, so its flows can
 * only still carry replies to datagrams already sent: they go once idle this long, not after
 * the listener's whole idle timeout, so a drain waits seconds for udp, not 30 s.
 */
#define STOPPED_IDLE_MS 2000

enum { FLOW_FREE = 0, FLOW_OPEN, FLOW_CLOSING };

union dp_sockaddr {
	struct sockaddr sa;
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
};

struct dp_flow {
	uint32_t slot, gen;
	uint8_t state;
	bool armed;             /* its receive is in flight */
	bool rearm;             /* on udp->rearm: the receive ended for want of buffers */
	bool has_local;         /* replies name their source (a wildcard listener) */
	uint8_t eng;            /* the engine's state of its receive */
	int fd;                 /* connected to the backend */
	int bidx;
	unsigned sends;         /* datagrams to the backend in flight on fd */
	uint32_t requests;       /* datagrams from the client */
	uint32_t replies;        /* ... and from the backend */
	uint32_t hnext;         /* next in its hash bucket */
	uint64_t hash;
	uint64_t last_ms;
	uint64_t bytes_in, bytes_out;
	struct dp_wlistener *wl; /* where its client writes to, and its replies leave from */
	struct dp_lset *set;    /* reference */
	struct dp_list lru;     /* in wl->flows while open */
	struct dp_list wait;    /* in udp->rearm */
	union dp_sockaddr client;
	socklen_t clen;
	union {
		struct in_addr v4;
		struct in6_addr v6;
	} local;                /* the address the client wrote to */
};

/* One datagram's send, by the buffer id it sits in. */
struct dp_dsend {
	struct msghdr msg;
	struct iovec iov;
	union dp_sockaddr to;
	struct {
		_Alignas(struct cmsghdr) char buf[DP_DGRAM_CTL];
	} ctl;
	bool to_client;
	struct dp_wlistener *wl; /* to_client: the socket it leaves from (counted in users) */
	uint32_t slot, gen;      /* to the backend: the flow */
};

struct dp_udp {
	struct dp_flow **chunks;
	unsigned n_chunks;
	uint32_t *free_slots;
	unsigned n_free;
	uint32_t *buckets;      /* flow slots, chained through hnext */
	unsigned n_buckets;     /* a power of two */
	unsigned n_hashed;
	struct dp_list rearm;   /* flows whose receive waits for buffers ... */
	uint64_t rearm_ms;      /* ... until then */
	struct dp_dsend *sends; /* buffer_count of them */
};

static int udp_init(struct dp_worker *w)
{
	struct dp_udp *u;

	if (w->udp)
		return 0;
	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->sends = calloc(w->buffer_count, sizeof(*u->sends));
	u->buckets = malloc(BUCKETS_MIN * sizeof(*u->buckets));
	if (!u->sends || !u->buckets) {
		free(u->sends);
		free(u->buckets);
		free(u);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < BUCKETS_MIN; i++)
		u->buckets[i] = NIL;
	u->n_buckets = BUCKETS_MIN;
	dp_list_init(&u->rearm);
	w->udp = u;
	return 0;
}

void dp_udp_free(struct dp_worker *w)
{
	struct dp_udp *u = w->udp;

	if (!u)
		return;
	for (unsigned i = 0; i < u->n_chunks; i++)
		free(u->chunks[i]);
	free(u->chunks);
	free(u->free_slots);
	free(u->buckets);
	free(u->sends);
	free(u);
	w->udp = NULL;
}

/* --- the flow slab and table -------------------------------------------------------- */

static struct dp_flow *flow_at(const struct dp_udp *u, uint32_t slot)
{
	return &u->chunks[slot / FLOW_CHUNK][slot % FLOW_CHUNK];
}

static int slab_grow(struct dp_udp *u)
{
	unsigned n = u->n_chunks + 1;
	struct dp_flow **chunks = realloc(u->chunks, n * sizeof(*chunks));
	uint32_t *free_slots;

	if (!chunks)
		return -ENOMEM;
	u->chunks = chunks;
	free_slots = realloc(u->free_slots, (size_t)n * FLOW_CHUNK * sizeof(*free_slots));
	if (!free_slots)
		return -ENOMEM;
	u->free_slots = free_slots;
	chunks[u->n_chunks] = calloc(FLOW_CHUNK, sizeof(**chunks));
	if (!chunks[u->n_chunks])
		return -ENOMEM;
	/* Lowest slots on top: the same few flows' memory serves a light load. */
	for (unsigned i = FLOW_CHUNK; i-- > 0;)
		u->free_slots[u->n_free++] = u->n_chunks * FLOW_CHUNK + i;
	u->n_chunks = n;
	return 0;
}

static struct dp_flow *flow_get(const struct dp_udp *u, uint32_t slot, uint32_t gen)
{
	struct dp_flow *f;

	if (!u || slot / FLOW_CHUNK >= u->n_chunks)
		return NULL;
	f = flow_at(u, slot);
	return f->state == FLOW_FREE || (f->gen & 0xffffff) != gen ? NULL : f;
}

static bool same_client(const struct dp_flow *f, const struct dp_wlistener *wl,
			const union dp_sockaddr *a)
{
	if (f->wl != wl || f->client.sa.sa_family != a->sa.sa_family)
		return false;
	if (a->sa.sa_family == AF_INET)
		return f->client.sin.sin_port == a->sin.sin_port &&
		       f->client.sin.sin_addr.s_addr == a->sin.sin_addr.s_addr;
	return f->client.sin6.sin6_port == a->sin6.sin6_port &&
	       !memcmp(&f->client.sin6.sin6_addr, &a->sin6.sin6_addr, sizeof(struct in6_addr));
}

static uint64_t client_hash(const struct dp_wlistener *wl, const union dp_sockaddr *a)
{
	in_port_t port = a->sa.sa_family == AF_INET6 ? a->sin6.sin6_port : a->sin.sin_port;

	return dp_hash64(lb_addr_hash_ip(&a->sa) ^ (uint64_t)port << 32 ^ (uintptr_t)wl);
}

static struct dp_flow *table_find(const struct dp_udp *u, const struct dp_wlistener *wl,
				  const union dp_sockaddr *a, uint64_t hash)
{
	for (uint32_t s = u->buckets[hash & (u->n_buckets - 1)]; s != NIL;) {
		struct dp_flow *f = flow_at(u, s);

		if (f->hash == hash && same_client(f, wl, a))
			return f;
		s = f->hnext;
	}
	return NULL;
}

/* Twice as many buckets once there are more flows than buckets; failing that, longer chains. */
static void table_grow(struct dp_udp *u)
{
	unsigned n = u->n_buckets * 2;
	uint32_t *b = malloc(n * sizeof(*b));

	if (!b)
		return;
	for (unsigned i = 0; i < n; i++)
		b[i] = NIL;
	for (unsigned i = 0; i < u->n_buckets; i++) {
		for (uint32_t s = u->buckets[i], next; s != NIL; s = next) {
			struct dp_flow *f = flow_at(u, s);

			next = f->hnext;
			f->hnext = b[f->hash & (n - 1)];
			b[f->hash & (n - 1)] = s;
		}
	}
	free(u->buckets);
	u->buckets = b;
	u->n_buckets = n;
}

static void table_add(struct dp_udp *u, struct dp_flow *f)
{
	uint32_t *head;

	if (u->n_hashed >= u->n_buckets)
		table_grow(u);
	head = &u->buckets[f->hash & (u->n_buckets - 1)];
	f->hnext = *head;
	*head = f->slot;
	u->n_hashed++;
}

static void table_del(struct dp_udp *u, struct dp_flow *f)
{
	uint32_t *p = &u->buckets[f->hash & (u->n_buckets - 1)];

	while (*p != f->slot)
		p = &flow_at(u, *p)->hnext;
	*p = f->hnext;
	u->n_hashed--;
}

/* --- flows -------------------------------------------------------------------------- */

static struct dp_ustats *ustats(const struct dp_worker *w, const struct dp_lset *set)
{
	return &set->sl->st->udp[w->id];
}

static uint64_t flow_tag(const struct dp_flow *f)
{
	return dp_tag(DP_OP_DRECVF, f->gen, f->slot);
}

static void flow_arm(struct dp_worker *w, struct dp_flow *f)
{
	f->armed = true;
	w->eng->dgram_recv(w, f->fd, flow_tag(f), &f->eng);
}

static void flow_free(struct dp_worker *w, struct dp_flow *f)
{
	struct dp_udp *u = w->udp;
	struct dp_bstate *st = f->set->sl->backends[f->bidx].st;

	close(f->fd);
	DP_STAT_INC(ustats(w, f->set)->flows_closed);
	dp_lb_conn_end(&f->set->lb, (unsigned)f->bidx);
	atomic_fetch_sub(&st->active, 1);
	atomic_fetch_add_explicit(&st->bytes_in, f->bytes_in, memory_order_relaxed);
	atomic_fetch_add_explicit(&st->bytes_out, f->bytes_out, memory_order_relaxed);
	dp_lset_put(f->set);
	dp_wl_unuse(w, f->wl);
	w->n_flows--;
	f->state = FLOW_FREE;
	f->gen = (f->gen + 1) & 0xffffff;
	u->free_slots[u->n_free++] = f->slot;
}

static void flow_close(struct dp_worker *w, struct dp_flow *f)
{
	if (f->state != FLOW_OPEN)
		return;
	f->state = FLOW_CLOSING;
	table_del(w->udp, f);
	dp_list_del(&f->lru);
	f->wl->n_open--;
	if (f->rearm) {
		dp_list_del(&f->wait);
		f->rearm = false;
	}
	/* A cancel by tag, not by descriptor: the number stays ours until the final completion. */
	if (f->armed)
		w->eng->dgram_cancel(w, f->fd, flow_tag(f), &f->eng);
	else if (!f->sends)
		flow_free(w, f);
}

/* ICMP port unreachable came back as ECONNREFUSED: a failure toward max_fails. */
static void flow_failed(struct dp_worker *w, struct dp_flow *f, int err)
{
	const struct dp_slistener *sl = f->set->sl;
	const struct dp_backend *b = &sl->backends[f->bidx];

	atomic_fetch_add(&b->st->connect_failures, 1);
	atomic_fetch_add(&b->st->connect_errors[err == -ECONNREFUSED ? DP_CERR_REFUSED
								      : DP_CERR_UNREACHABLE],
			 1);
	if (dp_bstate_report(b->st, false, sl->conf->max_fails, sl->conf->fail_timeout_ms,
			     w->now_ms))
		log_warn("listener %s: backend %s taken out after %u failures (last: %s)",
			 sl->conf->name, b->name, sl->conf->max_fails, strerror(-err));
	else
		log_debug("flow %u: backend %s: %s", f->slot, b->name, strerror(-err));
	flow_close(w, f);
}

struct pick_ctx {
	const struct dp_lset *set;
	uint64_t now_ms;
};

static bool usable(void *arg, unsigned idx)
{
	const struct pick_ctx *p = arg;

	return dp_bstate_usable(p->set->sl->backends[idx].st, p->now_ms);
}

static bool is_wildcard(const struct lb_addr *a)
{
	const union dp_sockaddr *s = (const union dp_sockaddr *)&a->ss;

	if (s->sa.sa_family == AF_INET)
		return s->sin.sin_addr.s_addr == htonl(INADDR_ANY);
	return IN6_IS_ADDR_UNSPECIFIED(&s->sin6.sin6_addr);
}

/*
 * The address the client wrote to, from the receive's IP_PKTINFO or IPV6_PKTINFO.  The control
 * messages sit where the receive's layout puts them (after a 28-byte name: not aligned for a
 * struct cmsghdr), so they are read from an aligned copy.
 */
static void flow_local(struct dp_flow *f, const struct dp_dgram *d)
{
	struct {
		_Alignas(struct cmsghdr) char buf[DP_DGRAM_CTL];
	} ctl;
	struct msghdr m = { .msg_control = ctl.buf };

	m.msg_controllen = d->controllen < sizeof(ctl.buf) ? d->controllen : sizeof(ctl.buf);
	memcpy(ctl.buf, (const char *)(d + 1) + DP_DGRAM_NAME, m.msg_controllen);
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
		if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
			struct in_pktinfo pi;

			memcpy(&pi, CMSG_DATA(c), sizeof(pi));
			f->local.v4 = pi.ipi_addr;
			f->has_local = true;
		} else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
			struct in6_pktinfo pi;

			memcpy(&pi, CMSG_DATA(c), sizeof(pi));
			f->local.v6 = pi.ipi6_addr;
			f->has_local = true;
		}
	}
}

static struct dp_flow *flow_alloc(struct dp_worker *w)
{
	struct dp_udp *u = w->udp;
	struct dp_flow *f;
	uint32_t slot, gen;

	if (!u->n_free && slab_grow(u))
		return NULL;
	slot = u->free_slots[--u->n_free];
	f = flow_at(u, slot);
	gen = f->gen;
	memset(f, 0, sizeof(*f));
	f->slot = slot;
	f->gen = gen;
	f->fd = -1;
	dp_list_init(&f->lru);
	dp_list_init(&f->wait);
	return f;
}

/* A socket connected to backend idx: its replies, and its ICMP errors, come back on it. */
static int backend_socket(const struct dp_backend *b, int *ret)
{
	int fd = socket(b->addr.ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd == -1)
		return -errno;
	if (connect(fd, (const struct sockaddr *)&b->addr.ss, b->addr.len) == -1) {
		int r = -errno;

		close(fd);
		return r;
	}
	*ret = fd;
	return 0;
}

/*
 * A new client: make room under max_flows (the least recently active flow goes), pick a
 * backend, connect a socket to it.  NULL when none could be made: the datagram is dropped and
 * counted, and the client's next one tries again.
 */
static struct dp_flow *flow_open(struct dp_worker *w, struct dp_wlistener *wl, struct dp_lset *set,
				 const union dp_sockaddr *client, socklen_t clen,
				 const struct dp_dgram *d, uint64_t hash)
{
	const struct lb_listener_conf *lc = set->sl->conf;
	struct dp_ustats *us = ustats(w, set);
	struct pick_ctx ctx = { set, w->now_ms };
	const struct dp_backend *b;
	struct dp_flow *f;
	int idx, fd = -1, r; /* -1: the analyzer cannot see that a failure is never 0 */

	while (wl->n_open >= lc->max_flows && !dp_list_empty(&wl->flows)) {
		f = dp_list_first(&wl->flows, struct dp_flow, lru);
		DP_STAT_INC(ustats(w, f->set)->flows_evicted);
		flow_close(w, f);
	}
	idx = dp_lb_pick(&set->lb, lb_addr_hash_ip(&client->sa), usable, &ctx);
	if (idx < 0) {
		DP_STAT_INC(us->drops[DP_UDROP_NO_BACKEND]);
		return NULL;
	}
	b = &set->sl->backends[idx];
	r = backend_socket(b, &fd);
	if (r) {
		/* Descriptors or memory: the next datagram tries again; say it once in a while. */
		DP_STAT_INC(us->drops[DP_UDROP_FLOW_ERROR]);
		log_debug("listener %s: no flow to %s: %s", lc->name, b->name, strerror(-r));
		return NULL;
	}
	f = flow_alloc(w);
	if (!f) {
		close(fd);
		DP_STAT_INC(us->drops[DP_UDROP_FLOW_ERROR]);
		return NULL;
	}
	f->state = FLOW_OPEN;
	f->fd = fd;
	f->bidx = idx;
	f->hash = hash;
	f->wl = wl;
	wl->users++;
	wl->n_open++;
	f->set = set;
	set->refs++;
	memcpy(&f->client, client, clen);
	f->clen = clen;
	if (is_wildcard(&lc->listen))
		flow_local(f, d);
	table_add(w->udp, f);
	dp_list_add_tail(&wl->flows, &f->lru);
	w->n_flows++;
	dp_lb_conn_start(&set->lb, (unsigned)idx);
	atomic_fetch_add(&b->st->active, 1);
	atomic_fetch_add_explicit(&b->st->conns_total, 1, memory_order_relaxed);
	DP_STAT_INC(us->flows_created);
	flow_arm(w, f);
	return f;
}

/* --- datagrams ---------------------------------------------------------------------- */

static struct dp_dgram *dgram_at(const struct dp_worker *w, int bid)
{
	return (struct dp_dgram *)(w->bufs + (size_t)bid * w->buffer_size);
}

static void touch(struct dp_worker *w, struct dp_flow *f)
{
	f->last_ms = w->now_ms;
	dp_list_move_tail(&f->wl->flows, &f->lru);
}

void dp_udp_client_dgram(struct dp_worker *w, struct dp_wlistener *wl, int res, int bid)
{
	/* A stopping listener's receive may still hand us datagrams it took: serve them. */
	struct dp_lset *set = wl->set ? wl->set : wl->late;
	struct dp_dgram *d = dgram_at(w, bid);
	union dp_sockaddr client;
	struct dp_dsend *s;
	struct dp_flow *f;
	uint64_t hash;

	if (!set || res < 0)
		goto drop;
	if ((d->flags & MSG_TRUNC) || d->namelen > sizeof(client) ||
	    d->namelen < sizeof(struct sockaddr_in)) {
		DP_STAT_INC(ustats(w, set)->drops[DP_UDROP_OVERSIZED]);
		goto drop;
	}
	memset(&client, 0, sizeof(client));
	memcpy(&client, d + 1, d->namelen);
	hash = client_hash(wl, &client);
	f = table_find(w->udp, wl, &client, hash);
	if (!f) {
		f = flow_open(w, wl, set, &client, d->namelen, d, hash);
		if (!f)
			goto drop;
	}
	touch(w, f);
	s = &w->udp->sends[bid];
	s->iov.iov_base = (char *)d + dp_dgram_room(true);
	s->iov.iov_len = d->payloadlen;
	s->msg = (struct msghdr){ .msg_iov = &s->iov, .msg_iovlen = 1 };
	s->to_client = false;
	s->slot = f->slot;
	s->gen = f->gen;
	f->sends++;
	f->requests++;
	f->bytes_in += d->payloadlen;
	DP_STAT_INC(ustats(w, f->set)->dgrams_in);
	DP_STAT_ADD(ustats(w, f->set)->bytes_in, d->payloadlen);
	w->eng->dgram_send(w, f->fd, &s->msg, dp_tag(DP_OP_DSEND, 0, (uint32_t)bid));
	return;
drop:
	w->eng->buf_put(w, (unsigned)bid);
}

/* The one control message of a reply: the source address, the one the client wrote to. */
static void reply_source(struct dp_dsend *s, const struct dp_flow *f)
{
	struct in_pktinfo pi4 = { .ipi_spec_dst = f->local.v4 };
	struct in6_pktinfo pi6 = { .ipi6_addr = f->local.v6 };
	bool v4 = f->client.sa.sa_family == AF_INET;
	size_t len = v4 ? sizeof(pi4) : sizeof(pi6);
	struct cmsghdr *c;

	memset(&s->ctl, 0, sizeof(s->ctl));
	s->msg.msg_control = s->ctl.buf;
	s->msg.msg_controllen = CMSG_SPACE(len);
	c = CMSG_FIRSTHDR(&s->msg);
	c->cmsg_level = v4 ? IPPROTO_IP : IPPROTO_IPV6;
	c->cmsg_type = v4 ? IP_PKTINFO : IPV6_PKTINFO;
	c->cmsg_len = CMSG_LEN(len);
	memcpy(CMSG_DATA(c), v4 ? (const void *)&pi4 : (const void *)&pi6, len);
}

/* A reply from the backend: back to the client, from the address it wrote to. */
static void reply(struct dp_worker *w, struct dp_flow *f, int bid)
{
	struct dp_dgram *d = dgram_at(w, bid);
	struct dp_dsend *s = &w->udp->sends[bid];
	struct dp_bstate *st = f->set->sl->backends[f->bidx].st;
	struct dp_ustats *us = ustats(w, f->set);
	unsigned responses = f->set->sl->conf->responses;

	if (d->flags & MSG_TRUNC) {
		DP_STAT_INC(us->drops[DP_UDROP_OVERSIZED]);
		w->eng->buf_put(w, (unsigned)bid);
		return;
	}
	touch(w, f);
	/* A plain load first: a healthy backend's line is not written on every reply. */
	if (atomic_load_explicit(&st->fails, memory_order_relaxed))
		dp_bstate_report(st, true, 0, 0, w->now_ms);
	s->iov.iov_base = (char *)(d + 1);
	s->iov.iov_len = d->payloadlen;
	s->msg = (struct msghdr){ .msg_iov = &s->iov, .msg_iovlen = 1 };
	memcpy(&s->to, &f->client, f->clen);
	s->msg.msg_name = &s->to;
	s->msg.msg_namelen = f->clen;
	if (f->has_local)
		reply_source(s, f);
	s->to_client = true;
	s->wl = f->wl;
	f->wl->users++;
	f->bytes_out += d->payloadlen;
	DP_STAT_INC(us->dgrams_out);
	DP_STAT_ADD(us->bytes_out, d->payloadlen);
	w->eng->dgram_send(w, f->wl->fd, &s->msg, dp_tag(DP_OP_DSEND, 0, (uint32_t)bid));
	/*
	 * nginx's proxy_responses: `responses` replies to each of the client's datagrams, and the
	 * flow is done.  Per datagram, not per flow: a resolver sends its A and AAAA queries
	 * together from one socket, and the second answer must not find the flow gone.
	 */
	if (responses && ++f->replies >= (uint64_t)responses * f->requests)
		flow_close(w, f);
}

void dp_udp_flow_dgram(struct dp_worker *w, uint32_t slot, uint32_t gen, int res, int bid,
		       unsigned flags)
{
	struct dp_flow *f = flow_get(w->udp, slot, gen);

	if (!f) {
		/* Cannot happen: a flow is freed only after its receive's final completion. */
		if (bid >= 0)
			w->eng->buf_put(w, (unsigned)bid);
		DP_STAT_INC(w->stats.stale_cqes);
		return;
	}
	if (!(flags & DP_CF_MORE))
		f->armed = false;
	if (bid >= 0) {
		if (f->state == FLOW_OPEN && res >= 0)
			reply(w, f, bid);
		else
			w->eng->buf_put(w, (unsigned)bid);
	}
	/* Still receiving, or freed just now: its answer reached `responses` (reply()). */
	if (f->armed || f->state == FLOW_FREE)
		return;
	if (f->state == FLOW_CLOSING) {
		if (!f->sends)
			flow_free(w, f);
		return;
	}
	switch (res) {
	case -ECONNREFUSED:
	case -EHOSTUNREACH:
	case -ENETUNREACH:
		flow_failed(w, f, res);
		return;
	case -ENOBUFS:
		/* Again on the next turn, once the ring has been refilled (see dp_udp_rearm). */
		if (dp_list_empty(&w->udp->rearm))
			w->udp->rearm_ms = w->now_ms;
		f->rearm = true;
		dp_list_add_tail(&w->udp->rearm, &f->wait);
		return;
	default:
		/* A data completion that ends the multishot (the CQ was full): just go on. */
		if (res >= 0 || res == -EINTR || res == -EAGAIN) {
			flow_arm(w, f);
			return;
		}
		log_debug("flow %u: receive failed: %s", f->slot, strerror(-res));
		flow_close(w, f);
	}
}

void dp_udp_rearm(struct dp_worker *w, uint64_t *next_ms)
{
	if (!w->udp || dp_list_empty(&w->udp->rearm))
		return;
	/*
	 * The ring ran dry: refilled from the free buffers before the engine waits.  With none
	 * free at all a receive made now would fail at once (it takes its buffer before it looks
	 * for data), so it waits DP_UDP_NOBUF_RETRY_MS; the kernel keeps the datagrams meanwhile.
	 */
	if (w->now_ms >= w->udp->rearm_ms && !w->eng->bufs_left(w))
		w->udp->rearm_ms = w->now_ms + DP_UDP_NOBUF_RETRY_MS;
	if (w->now_ms < w->udp->rearm_ms) {
		if (w->udp->rearm_ms < *next_ms)
			*next_ms = w->udp->rearm_ms;
		return;
	}
	while (!dp_list_empty(&w->udp->rearm)) {
		struct dp_flow *f = dp_list_first(&w->udp->rearm, struct dp_flow, wait);

		dp_list_del(&f->wait);
		f->rearm = false;
		flow_arm(w, f);
	}
}

void dp_udp_sent(struct dp_worker *w, uint32_t bid, int res)
{
	struct dp_dsend *s;
	struct dp_flow *f;

	if (!w->udp || bid >= w->buffer_count) {
		DP_STAT_INC(w->stats.stale_cqes);
		return;
	}
	s = &w->udp->sends[bid];
	w->eng->buf_put(w, bid);
	if (s->to_client) {
		struct dp_wlistener *wl = s->wl;
		struct dp_lset *set = wl->set ? wl->set : wl->late;

		if (res < 0 && set)
			DP_STAT_INC(ustats(w, set)->drops[DP_UDROP_SEND_ERROR]);
		s->wl = NULL;
		dp_wl_unuse(w, wl);
		return;
	}
	f = flow_get(w->udp, s->slot, s->gen);
	if (!f) {
		DP_STAT_INC(w->stats.stale_cqes);
		return;
	}
	f->sends--;
	if (res < 0) {
		DP_STAT_INC(ustats(w, f->set)->drops[DP_UDROP_SEND_ERROR]);
		if (f->state == FLOW_OPEN &&
		    (res == -ECONNREFUSED || res == -EHOSTUNREACH || res == -ENETUNREACH)) {
			flow_failed(w, f, res);
			return;
		}
	}
	if (f->state == FLOW_CLOSING && !f->armed && !f->sends)
		flow_free(w, f);
}

/* --- listener sockets --------------------------------------------------------------- */

void dp_udp_listen(struct dp_worker *w, struct dp_wlistener *wl)
{
	if (udp_init(w)) {
		/* Not armed: the listener is paused and tried again (worker.c: resume_paused). */
		log_err("worker %u: out of memory for udp flows", w->id);
		wl->flags |= DP_WL_PAUSED;
		wl->resume_ms = w->now_ms + 1000;
		return;
	}
	wl->flags |= DP_WL_ARMED;
	w->eng->dgram_recv(w, wl->fd, dp_tag(DP_OP_DRECVL, wl->gen, wl->idx), &wl->eng);
}

void dp_udp_listen_cancel(struct dp_worker *w, struct dp_wlistener *wl)
{
	w->eng->dgram_cancel(w, wl->fd, dp_tag(DP_OP_DRECVL, wl->gen, wl->idx), &wl->eng);
}

int dp_udp_tag_fd(struct dp_worker *w, uint64_t tag, uint8_t **eng)
{
	uint32_t slot = dp_tag_slot(tag);
	struct dp_flow *f;

	if (dp_tag_op(tag) == DP_OP_DRECVL) {
		struct dp_wlistener *wl = slot < w->n_wls ? w->wls[slot] : NULL;

		if (!wl || wl->gen != dp_tag_gen(tag))
			return -1;
		*eng = &wl->eng;
		return wl->fd;
	}
	f = flow_get(w->udp, slot, dp_tag_gen(tag));
	if (!f)
		return -1;
	*eng = &f->eng;
	return f->fd;
}

/* --- timers ------------------------------------------------------------------------- */

/*
 * Idle flows first (wl->flows is in order of last activity), then, once a second, flows whose
 * set was replaced and whose backend is gone from the configuration: they had the drain
 * timeout to finish, as a connection to a removed backend has.
 */
static void expire_flows(struct dp_worker *w, struct dp_wlistener *wl, uint64_t *next_ms)
{
	const struct dp_lset *cur = wl->set ? wl->set : wl->late;
	uint64_t idle, current;
	struct dp_list *pos, *tmp;

	if (!cur || dp_list_empty(&wl->flows))
		return;
	idle = cur->sl->conf->idle_timeout_ms;
	if (!wl->set && idle > STOPPED_IDLE_MS)
		idle = STOPPED_IDLE_MS;
	while (!dp_list_empty(&wl->flows)) {
		struct dp_flow *f = dp_list_first(&wl->flows, struct dp_flow, lru);

		if (f->last_ms + idle > w->now_ms) {
			if (f->last_ms + idle < *next_ms)
				*next_ms = f->last_ms + idle;
			break;
		}
		DP_STAT_INC(ustats(w, f->set)->flows_timed_out);
		flow_close(w, f);
	}
	if (w->now_ms < wl->sweep_ms)
		return;
	wl->sweep_ms = w->now_ms + SWEEP_EVERY_MS;
	current = atomic_load(&dp_generation_published);
	dp_list_for_each(pos, tmp, &wl->flows) {
		struct dp_flow *f = dp_container_of(pos, struct dp_flow, lru);

		if (!f->set->retired || w->now_ms < f->set->sweep_ms ||
		    atomic_load(&f->set->sl->backends[f->bidx].st->generation) >= current)
			continue;
		log_debug("flow %u: backend removed and drain time over, closing", f->slot);
		flow_close(w, f);
	}
}

void dp_udp_expire(struct dp_worker *w, struct dp_wlistener *wl, uint64_t *next_ms)
{
	if (dp_list_empty(&wl->flows))
		return;
	/* A stopped wl goes with its last user: not while we walk its flows (wl.h). */
	wl->users++;
	expire_flows(w, wl, next_ms);
	dp_wl_unuse(w, wl);
}

void dp_udp_close_flows(struct dp_worker *w, struct dp_wlistener *wl)
{
	wl->users++; /* as in dp_udp_expire */
	while (!dp_list_empty(&wl->flows))
		flow_close(w, dp_list_first(&wl->flows, struct dp_flow, lru));
	dp_wl_unuse(w, wl);
}
