/* dp.h - dataplane types shared by the worker loop, the connection machine and the engines. */
#ifndef DP_DP_H
#define DP_DP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <linux/time_types.h>

#include "common/config.h"
#include "common/episode.h"
#include "common/proxyproto.h"
#include "dataplane/balancer.h"
#include "dataplane/health.h"
#include "dataplane/list.h"

/*
 * Object graph (who owns what):
 *
 *   main thread --builds--> dp_snapshot (immutable, refcounted across threads)
 *       dp_snapshot.listeners[i].socks  -> dp_lsocks (SO_REUSEPORT fds, one per worker or more
 *                                          after a takeover; shared by successive snapshots
 *                                          while the address is unchanged; NULL for a managed
 *                                          listener that could not bind)
 *       dp_snapshot.listeners[i].backends[j].st -> dp_bstate (health and counters, shared by
 *                                          successive snapshots while the backend stays)
 *   worker --owns--> dp_wlistener (its accept on one dp_lsocks fd)
 *          --owns--> dp_lset (its balancer for one snapshot listener; refcounted by conns)
 *          --owns--> dp_conn slab
 *
 * A connection holds a reference on the dp_lset it was balanced by, and the lset holds one on
 * its snapshot, so a reload never frees backends that open connections still point at.
 */

struct dp_worker;
struct dp_conn;

/*
 * The listening sockets of one listener address, one SO_REUSEPORT group.  Worker w accepts on
 * fds[w], fds[w + n_workers], ...: n is the worker count when we bound them, but sockets taken
 * over from another process (handover.h) may be more, and each of them may hold queued
 * connections, so every one is accepted from.
 */
struct dp_lsocks {
	atomic_uint refs;
	unsigned n;
	enum lb_protocol proto;            /* tcp: listening sockets; udp: bound datagram sockets */
	struct lb_addr addr;
	int fds[];
};

/* Listening sockets taken over from another process, offered to the first snapshot built. */
struct dp_lsocks_pool {
	struct dp_lsocks **v;              /* each a reference */
	unsigned n;
};

/*
 * What a worker counts for one udp listener.  Per worker, each in a cache line of its own, so
 * counting a datagram is a plain store (one writer) and workers never share a line; the main
 * thread adds them up for status and metrics.
 */
enum dp_udp_drop {
	DP_UDROP_OVERSIZED = 0, /* larger than a receive buffer: never truncated, dropped */
	DP_UDROP_NO_BACKEND,    /* no usable backend for a new flow */
	DP_UDROP_FLOW_ERROR,    /* the flow's socket could not be made (descriptors, memory) */
	DP_UDROP_SEND_ERROR,    /* a send failed (socket buffer full, backend refused, ...) */
	DP_UDROP_N,
};

struct dp_ustats {
	_Alignas(64) atomic_uint_fast64_t dgrams_in;  /* client to backend */
	atomic_uint_fast64_t dgrams_out;              /* backend to client */
	atomic_uint_fast64_t bytes_in, bytes_out;
	atomic_uint_fast64_t flows_created, flows_closed, flows_evicted, flows_timed_out;
	atomic_uint_fast64_t drops[DP_UDROP_N];
};

/* Process-wide state of a named listener, kept across reloads. */
struct dp_lstate {
	atomic_uint refs;
	atomic_int active;                /* open connections, all workers (max_connections) */
	atomic_uint_fast64_t accepted;
	atomic_uint_fast64_t refused;     /* closed at once: no backend or over the limit */
	atomic_uint_fast64_t bytes_in;    /* client to backend, added as each connection ends */
	atomic_uint_fast64_t bytes_out;
	struct dp_ustats *udp;            /* udp: one per worker (n_workers), else NULL */
	unsigned n_udp;
};

struct dp_backend {
	struct lb_addr addr;
	char name[LB_ADDR_STRLEN];
	unsigned weight;
	struct dp_bstate *st;
};

struct dp_slistener {
	const struct lb_listener_conf *conf;
	/*
	 * NULL for a managed listener whose address could not be bound (bind_err says why, as
	 * -errno): it is in the configuration in force, with its state and health checks, but no
	 * worker accepts for it; the next snapshot built tries the address again.
	 */
	struct dp_lsocks *socks;
	int bind_err;
	struct dp_lstate *st;
	struct dp_backend *backends;
	unsigned n_backends;
};

struct dp_snapshot {
	atomic_uint refs;
	uint64_t generation;               /* counts snapshots made by this process */
	unsigned n_workers;
	struct lb_config *conf;
	struct dp_slistener *listeners;
	unsigned n_listeners;
};

/* A worker's balancer for one listener of one snapshot. */
struct dp_lset {
	unsigned refs;                     /* the worker (while current) + its connections */
	struct dp_snapshot *snap;          /* holds a snapshot reference */
	const struct dp_slistener *sl;
	struct dp_lb lb;
	struct dp_list idle;               /* connections, least recently active first */
	struct dp_list link;               /* in worker->lsets */
	bool retired;                      /* replaced: no new connections */
	uint64_t sweep_ms;                 /* retired: when to close those on removed backends */
};

/* A worker's accept on one listening socket. */
enum {
	DP_WL_ARMED = 1 << 0,              /* accept in flight (multishot, or one near the limit) */
	DP_WL_STOPPING = 1 << 1,           /* cancel sent; close the fd on the final CQE */
	DP_WL_PAUSED = 1 << 2,             /* not armed: fd limit or max_connections; retry */
	DP_WL_KEEP = 1 << 3,               /* in the snapshot being applied */
	DP_WL_RESHOT = 1 << 4,             /* multishot cancelled to go single-shot near the limit */
};



struct dp_wlistener {
	unsigned idx;                      /* slot in worker->wls: user_data of its accept */
	uint32_t gen;
	unsigned flags;
	int fd;
	unsigned sock;                     /* fd is socks->fds[sock] */
	struct dp_lsocks *socks;           /* reference */
	struct dp_lset *set;               /* current balancer (reference) or NULL when stopping */
	/*
	 * Stopping: the set it had (reference), for connections an io_uring accept took from the
	 * queue before its cancel landed.  They are clients the kernel already completed, so
	 * they are served, not closed: after a handover nobody else can serve them.
	 */
	struct dp_lset *late;
	uint64_t resume_ms;                /* when paused: when to try again */
	uint8_t eng;                       /* engine-private state of the accept */
	/*
	 * udp: the flows of clients whose datagrams came to this socket, least recently active
	 * first.  Their replies leave from this socket, so it is not freed before they are.
	 */
	bool udp;
	struct dp_list flows;              /* open flows */
	unsigned n_open;
	unsigned users;                    /* flows (open or closing) and replies in flight */
	uint64_t sweep_ms;                 /* next look for flows to removed backends */
};

/* One direction of a proxied connection. */
#define DP_HALF_QMAX 4                     /* most buffers queued per direction */
#define DP_HALF_QBYTES (1024u << 10)        /* ... and about this many bytes: the backpressure cap */
/*
 * A queued chunk that is no pool buffer: the PROXY protocol header, kept in the worker's
 * header slab at the connection's slot (pool buffer ids are below 32768).
 */
#define DP_BID_HEADER 0xffffu

enum {
	DP_H_RECV = 1 << 0,                /* a recv is in flight on the source */
	DP_H_SEND = 1 << 1,                /* a send is in flight on the destination */
	DP_H_EOF = 1 << 2,                 /* the source sent FIN: sends go MSG_MORE, the FIN joins */
	DP_H_SHUT = 1 << 3,                /* we shut the destination's write side */
	DP_H_NOBUF = 1 << 4,               /* waiting in worker->nobuf for free buffers */
	DP_H_POLLFIRST = 1 << 5,           /* next recv: poll before trying (socket likely empty) */
	DP_H_SENDPOLL = 1 << 6,            /* next send: wait until writable (last one got EAGAIN) */
	DP_H_SAMPLED = 1 << 7,             /* acked holds the destination's count since moved_ms */
	DP_H_HOLD = 1 << 8,                /* send held for the receive in flight (worker->held) */
};

struct dp_half {
	uint8_t which;                     /* DP_C2B or DP_B2C: finds the conn from the half */
	uint16_t flags;
	uint8_t head;                      /* first queued buffer */
	uint8_t count;                     /* queued buffers */
	uint8_t nsend;                     /* of them, in the in-flight send */
	uint16_t bid[DP_HALF_QMAX];
	uint32_t len[DP_HALF_QMAX];
	struct dp_list wait;               /* in worker->nobuf (DP_H_NOBUF) or ->held (DP_H_HOLD) */
	uint32_t off;                      /* bytes of bid[head] already sent */
	uint32_t moved_ms;                 /* send issued or seen to progress (low 32 bits, ms) */
	uint32_t acked;                    /* destination's tcpi_bytes_acked then (low 32 bits) */
	uint32_t eng_done;                 /* engine-private: bytes of the in-flight send done */
	uint64_t bytes;
	/* The gathered send in flight: must stay put until the engine has submitted it. */
	struct iovec iov[DP_HALF_QMAX];
	struct msghdr msg;
};

enum dp_conn_kind {
	DP_CONN_PROXY = 0,
	DP_CONN_CHECK,                     /* an active health-check probe */
};

enum dp_conn_state {
	DP_CS_FREE = 0,
	DP_CS_CONNECTING,
	DP_CS_RELAY,
	DP_CS_CLOSING,
};

enum { DP_C2B = 0, DP_B2C = 1 };          /* half index: client->backend, backend->client */

/* Connect attempts per connection: the first plus connect_retries (at most 16) more. */
#define DP_TRIES_MAX 17

struct dp_conn {
	uint32_t slot;
	uint32_t gen;                      /* bumped on free: late completions are recognised */
	uint8_t kind;
	uint8_t state;
	uint8_t tries;                     /* connect attempts made */
	uint8_t cancelled;                 /* cancel requests issued since CLOSING */
	uint16_t inflight;                 /* requests that will still post a completion */
	int fd[2];                         /* [0] client, [1] backend */
	uint8_t eng[2];                    /* engine-private state of fd[0], fd[1] */
	int bidx;                          /* backend index in set->sl, -1 none */
	uint16_t tried[DP_TRIES_MAX];      /* backend indexes tried, tries of them */
	uint64_t key;                      /* client hash (maglev) */
	uint64_t last_ms;
	struct dp_lset *set;               /* reference */
	struct dp_list idle;               /* in set->idle */
	struct dp_half half[2];
	struct __kernel_timespec cts;      /* connect timeout, kept while linked */
	struct dp_bstate *check;           /* DP_CONN_CHECK: the backend checked (reference) */
};

/*
 * The I/O engine: how requests are issued and completions reaped.  The connection machine
 * (conn.c) never sees an io_uring or epoll structure; engines report completions by calling the
 * dp_conn_* and dp_worker_* entry points below.  Every request issued for a connection
 * increments c->inflight and its completion is followed by dp_conn_put().
 */
struct dp_engine {
	const char *name;
	int (*init)(struct dp_worker *w, char *err, size_t errlen);
	void (*fini)(struct dp_worker *w);
	/* multishot: keep accepting; else one connection, then the request ends. */
	void (*accept)(struct dp_worker *w, struct dp_wlistener *wl, bool multishot);
	void (*accept_cancel)(struct dp_worker *w, struct dp_wlistener *wl);
	void (*connect)(struct dp_worker *w, struct dp_conn *c, const struct lb_addr *to,
			unsigned timeout_ms);
	void (*recv)(struct dp_worker *w, struct dp_conn *c, int h);
	void (*send)(struct dp_worker *w, struct dp_conn *c, int h);
	void (*cancel)(struct dp_worker *w, struct dp_conn *c);
	void (*buf_put)(struct dp_worker *w, unsigned bid);
	/* Give back the memory of receive buffers unused since the last call (bufstack.h). */
	void (*trim)(struct dp_worker *w);
	/* Whether the pool has a free buffer (in the ring or ready to go in at the next turn). */
	bool (*bufs_left)(const struct dp_worker *w);
	/*
	 * Datagrams (udp.c).  dgram_recv keeps receiving on fd, each datagram into a pool buffer
	 * laid out as udp.h's struct dp_dgram says (for a listener socket, DP_OP_DRECVL: with its
	 * source and destination address), one completion each, until an error or
	 * dgram_cancel(fd, tag) ends it; *eng is the engine's byte of state for that receive,
	 * kept by its owner.  dgram_send sends one datagram as msg says; msg and what it points
	 * at stay put until the completion of tag.
	 */
	void (*dgram_recv)(struct dp_worker *w, int fd, uint64_t tag, uint8_t *eng);
	void (*dgram_cancel)(struct dp_worker *w, int fd, uint64_t tag, uint8_t *eng);
	void (*dgram_send)(struct dp_worker *w, int fd, struct msghdr *msg, uint64_t tag);
	/* Submit what is queued, wait up to timeout_ms, dispatch completions. */
	int (*run)(struct dp_worker *w, unsigned timeout_ms);
};

extern const struct dp_engine dp_engine_uring;
extern const struct dp_engine dp_engine_epoll;

/*
 * Counters a worker keeps.  Only the worker writes them, so an increment is a relaxed load and
 * store (no locked instruction); the main thread reads them for metrics.
 */
struct dp_wstats {
	atomic_uint_fast64_t accepted;
	atomic_uint_fast64_t closed;
	atomic_uint_fast64_t connect_errors;
	atomic_uint_fast64_t no_backend;
	atomic_uint_fast64_t over_limit;
	atomic_uint_fast64_t nobufs;
	atomic_uint_fast64_t stale_cqes;
	atomic_uint_fast64_t accept_pauses;
	atomic_uint_fast64_t active;       /* open proxied connections */
	atomic_uint_fast64_t evicted;      /* closed to free buffers: their peers stopped reading */
};

#define DP_STAT_ADD(field, n)                                                                      \
	atomic_store_explicit(&(field), atomic_load_explicit(&(field), memory_order_relaxed) + (n),  \
			      memory_order_relaxed)
#define DP_STAT_INC(field) DP_STAT_ADD(field, 1)
#define DP_STAT_GET(field) atomic_load_explicit(&(field), memory_order_relaxed)

struct dp_worker {
	unsigned id;
	pthread_t thread;
	const struct dp_engine *eng;
	void *engine;                      /* the engine's private state */
	int efd;                           /* eventfd: the main thread wakes us */
	uint64_t efd_val;
	struct dp_snapshot *snap;          /* current (reference) */
	_Atomic(struct dp_snapshot *) next; /* handed over by main */
	atomic_int drain;                  /* 0 run, 1 drain, 2 drain now (second signal) */
	atomic_bool stopped;               /* set when the loop has exited */
	bool draining;
	bool drain_closed;                 /* the drain deadline closed everything left */
	uint64_t drain_deadline_ms;
	uint64_t now_ms;
	unsigned buffer_size;
	unsigned buffer_count;
	unsigned half_qmax;                /* buffers queued per direction, <= DP_HALF_QMAX */

	struct dp_wlistener **wls;         /* by idx; NULL = free */
	unsigned n_wls;
	uint32_t wl_gen;
	struct dp_list lsets;              /* every live dp_lset */
	struct dp_list nobuf;              /* halves waiting for buffers */
	struct dp_list held;               /* halves holding a send back since the last turn */
	struct dp_list held_new;           /* ... since this turn */
	unsigned n_nobuf;                  /* ... how many */
	uint64_t starved_since_ms;         /* the pool ran dry then and has not recovered (0: no) */
	uint64_t evict_next_ms;            /* earliest next scan for stalled connections */
	uint64_t trim_next_ms;             /* next engine trim of idle buffers' memory */
	uint64_t evict_logged_ms;          /* last time evictions were logged */
	unsigned evict_unlogged;           /* evictions since */
	struct dp_list checks;             /* health probes in flight (their idle links) */
	struct dp_udp *udp;                /* flows (udp.c), made with the first udp listener */
	unsigned n_flows;                  /* ... open or closing */
	char *bufs;                        /* the engine's receive buffers: bid * buffer_size */

	struct dp_conn **chunks;           /* connection slab: chunks of DP_SLAB_CHUNK */
	char **hdr_chunks;                 /* PROXY headers by slot, per chunk; NULL until needed */
	unsigned n_chunks;
	uint32_t *free_slots;
	unsigned n_free;
	unsigned n_conns;                  /* proxied connections open */
	unsigned n_checks;                 /* health probes in flight */

	struct dp_hcheck *hc;              /* active health checks (worker 0 only) */
	struct dp_wstats stats;
	uint64_t rng;
	unsigned bufs_held;                /* provided buffers taken by receives, not yet returned */
	atomic_int init_result;            /* 1 running, < 0 engine setup failed, 0 not yet */
	struct lb_episode fd_episode;      /* accepts failing for want of descriptors */
};

#define DP_SLAB_CHUNK 1024u

/* The PROXY protocol header of c (LB_PROXY_HDR_MAX bytes at its slot). */
static inline char *dp_conn_header(const struct dp_worker *w, const struct dp_conn *c)
{
	return w->hdr_chunks[c->slot / DP_SLAB_CHUNK] +
	       (size_t)(c->slot % DP_SLAB_CHUNK) * LB_PROXY_HDR_MAX;
}

/* Where a chunk queued on c starts: a buffer of the engine's pool (at bufs), or c's header. */
static inline char *dp_chunk(const struct dp_worker *w, const struct dp_conn *c, char *bufs,
			     unsigned bid)
{
	if (bid == DP_BID_HEADER)
		return dp_conn_header(w, c);
	return bufs + (size_t)bid * w->buffer_size;
}

#endif
