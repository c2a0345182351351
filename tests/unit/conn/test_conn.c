/*
 * test_conn.c - the connection state machine (dataplane/conn.c) driven by a fake engine.
 *
 * The fake engine records each request conn.c issues (connect, recv, send, cancel) with the
 * completion tag a real engine would use, and counts it in c->inflight as they do; the test
 * completes requests through dp_engine_complete() as the engines do, so engine.c's routing and
 * the tag codec are on the path.  Buffers come from a fake pool whose ids must all come back.
 * Sockets are real but never connected: conn.c only closes, shuts down and queries them.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dataplane/conn.h"
#include "dataplane/engine.h"
#include "dataplane/lset.h"
#include "dataplane/worker.h"
#include "tests/unit/fixture.h"

#define N_BACKENDS 3
#define BUF_COUNT 8
#define BUF_SIZE 4096
#define OPS_MAX 64

enum fake_kind { F_CONNECT, F_RECV, F_SEND, F_CANCEL };

struct fake_op {
	enum fake_kind kind;
	uint64_t tag;
	int h;                 /* recv, send: the half */
	int backend;           /* connect: which backend's address */
	unsigned bytes;        /* send: what the queue held */
	bool done;
};

struct fake {
	struct fake_op ops[OPS_MAX];
	unsigned n_ops;
	unsigned free_bids[BUF_COUNT];
	unsigned n_free;
};

static struct fake F;

/* The listener the connections are balanced by, as a snapshot and a worker would make it. */
struct fixture {
	struct dp_worker w;
	struct lb_listener_conf conf;
	struct dp_lstate lstate;
	struct dp_bstate bstate[N_BACKENDS];
	struct dp_backend backends[N_BACKENDS];
	struct dp_slistener sl;
	struct dp_lset *set;
};

static struct fixture *FX;

/* --- the fake engine ---------------------------------------------------------------- */

static struct fake_op *pending_of(const struct dp_conn *c, enum fake_kind kind, int h);

static struct fake_op *record(enum fake_kind kind, uint64_t tag)
{
	struct fake_op *op;

	assert_true(F.n_ops < OPS_MAX);
	op = &F.ops[F.n_ops++];
	*op = (struct fake_op){ .kind = kind, .tag = tag, .h = -1, .backend = -1 };
	return op;
}

static void fake_connect(struct dp_worker *w, struct dp_conn *c, const struct lb_addr *to,
			 unsigned timeout_ms)
{
	struct fake_op *op = record(F_CONNECT, dp_tag(DP_OP_CONNECT, c->gen, c->slot));

	(void)w;
	(void)timeout_ms;
	for (int i = 0; i < N_BACKENDS; i++)
		if (lb_addr_equal(to, &FX->backends[i].addr))
			op->backend = i;
	c->inflight++;
}

static void fake_recv(struct dp_worker *w, struct dp_conn *c, int h)
{
	(void)w;
	/* One receive per half at a time, as conn.c promises the engines. */
	assert_null(pending_of(c, F_RECV, h));
	record(F_RECV, dp_tag(DP_OP_RECV0 + h, c->gen, c->slot))->h = h;
	c->inflight++;
}

static void fake_send(struct dp_worker *w, struct dp_conn *c, int h)
{
	const struct dp_half *hf = &c->half[h];
	struct fake_op *op;

	(void)w;
	assert_null(pending_of(c, F_SEND, h)); /* one send per half at a time */
	op = record(F_SEND, dp_tag(DP_OP_SEND0 + h, c->gen, c->slot));
	op->h = h;
	for (unsigned i = 0; i < hf->count; i++)
		op->bytes += hf->len[(hf->head + i) % DP_HALF_QMAX];
	op->bytes -= hf->off;
	c->inflight++;
}

static void fake_cancel(struct dp_worker *w, struct dp_conn *c)
{
	(void)w;
	record(F_CANCEL, dp_tag(DP_OP_CANCEL, c->gen, c->slot));
	c->inflight++;
}

static void fake_buf_put(struct dp_worker *w, unsigned bid)
{
	(void)w;
	assert_true(bid < BUF_COUNT);
	for (unsigned i = 0; i < F.n_free; i++)
		assert_int_not_equal(F.free_bids[i], bid); /* returned twice */
	F.free_bids[F.n_free++] = bid;
}

static void fake_trim(struct dp_worker *w)
{
	(void)w;
}

static const struct dp_engine fake_engine = {
	.name = "fake",
	.connect = fake_connect,
	.recv = fake_recv,
	.send = fake_send,
	.cancel = fake_cancel,
	.buf_put = fake_buf_put,
	.trim = fake_trim,
};

/* A buffer the "kernel" picks for a receive. */
static unsigned take_buf(void)
{
	assert_true(F.n_free > 0);
	return F.free_bids[--F.n_free];
}

/* The latest request of this kind not yet completed (on half h, or any half if h < 0). */
static struct fake_op *pending(enum fake_kind kind, int h)
{
	for (unsigned i = F.n_ops; i-- > 0;)
		if (!F.ops[i].done && F.ops[i].kind == kind && (h < 0 || F.ops[i].h == h))
			return &F.ops[i];
	return NULL;
}

/* The same, of connection c only. */
static struct fake_op *pending_of(const struct dp_conn *c, enum fake_kind kind, int h)
{
	for (unsigned i = F.n_ops; i-- > 0;)
		if (!F.ops[i].done && F.ops[i].kind == kind && F.ops[i].h == h &&
		    dp_tag_slot(F.ops[i].tag) == c->slot)
			return &F.ops[i];
	return NULL;
}

static unsigned n_pending(enum fake_kind kind, int h)
{
	unsigned n = 0;

	for (unsigned i = 0; i < F.n_ops; i++)
		n += !F.ops[i].done && F.ops[i].kind == kind && (h < 0 || F.ops[i].h == h);
	return n;
}

/* Complete a request as an engine does. */
static void complete(struct fake_op *op, int res, int bid, unsigned flags)
{
	assert_non_null(op);
	assert_false(op->done);
	op->done = true;
	dp_engine_complete(&FX->w, op->tag, res, flags, bid);
}

/* Complete, with -ECANCELED, everything still pending (what a cancel brings back). */
static void complete_all_cancelled(void)
{
	for (unsigned i = 0; i < F.n_ops; i++)
		if (!F.ops[i].done)
			complete(&F.ops[i], F.ops[i].kind == F_CANCEL ? 0 : -ECANCELED, -1, 0);
}

/* --- fixture ------------------------------------------------------------------------ */

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	struct dp_worker *w;

	assert_non_null(fx);
	FX = fx;
	memset(&F, 0, sizeof(F));
	for (unsigned i = BUF_COUNT; i-- > 0;)
		F.free_bids[F.n_free++] = i;
	w = &fx->w;
	w->eng = &fake_engine;
	w->buffer_size = BUF_SIZE;
	w->buffer_count = BUF_COUNT;
	w->half_qmax = DP_HALF_QMAX;
	w->now_ms = 1000000;
	dp_list_init(&w->lsets);
	dp_list_init(&w->nobuf);
	dp_list_init(&w->held);
	dp_list_init(&w->held_new);
	dp_list_init(&w->checks);

	snprintf(fx->conf.name, sizeof(fx->conf.name), "web");
	fx->conf.algorithm = LB_ALGO_ROUND_ROBIN;
	fx->conf.connect_timeout_ms = 3000;
	fx->conf.idle_timeout_ms = 60000;
	fx->conf.max_connections = 100;
	fx->conf.connect_retries = 2;
	fx->conf.max_fails = 3;
	fx->conf.fail_timeout_ms = 10000;
	fixture_backends(fx->backends, fx->bstate, N_BACKENDS);
	fx->sl = (struct dp_slistener){ .conf = &fx->conf, .st = &fx->lstate,
					.backends = fx->backends, .n_backends = N_BACKENDS };
	fx->set = fixture_set(w, &fx->sl, 1); /* the worker's, while the set is current */
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	/* Every connection ended: the set is the worker's alone and every buffer came back. */
	assert_int_equal(fx->w.n_conns, 0);
	assert_int_equal(fx->set->refs, 1);
	assert_int_equal(F.n_free, BUF_COUNT);
	assert_int_equal(fx->w.bufs_held, 0);
	assert_int_equal(atomic_load(&fx->lstate.active), 0);
	dp_lset_put(fx->set);
	dp_conn_slab_free(&fx->w);
	free(fx);
	return 0;
}

/* A client accepted and admitted as worker.c does (counted in the listener's active). */
static struct dp_conn *accept_client(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	struct dp_conn *c;
	uint64_t tag;

	assert_true(fd >= 0);
	atomic_fetch_add(&FX->lstate.active, 1);
	dp_conn_accepted(&FX->w, FX->set, fd);
	assert_non_null(pending(F_CONNECT, -1));
	tag = pending(F_CONNECT, -1)->tag;
	c = dp_conn_get(&FX->w, dp_tag_slot(tag), dp_tag_gen(tag));
	assert_non_null(c);
	return c;
}

/* Accepted and connected to its first backend: both receives armed. */
static struct dp_conn *relaying_client(void)
{
	struct dp_conn *c = accept_client();

	complete(pending(F_CONNECT, -1), 0, -1, 0);
	assert_int_equal(c->state, DP_CS_RELAY);
	assert_non_null(pending(F_RECV, DP_C2B));
	assert_non_null(pending(F_RECV, DP_B2C));
	return c;
}

/* Data arrives on half h: n bytes in a buffer of the pool. */
static void data(int h, int n, bool more)
{
	complete(pending(F_RECV, h), n, (int)take_buf(), more ? DP_CF_NONEMPTY : 0);
}

/* Close the way a peer reset ends it, and bring every request back. */
static void finish(struct dp_conn *c)
{
	uint32_t slot = c->slot, gen = c->gen;

	dp_conn_abort(&FX->w, c);
	complete_all_cancelled();
	assert_null(dp_conn_get(&FX->w, slot, gen));
}

/* A client fd that has a peer: the accepted end of a loopback TCP connection. */
static int connected_client(int *peer)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int ls = socket(AF_INET, SOCK_STREAM, 0), fd;

	assert_true(ls >= 0);
	assert_int_equal(bind(ls, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(ls, 1), 0);
	assert_int_equal(getsockname(ls, (struct sockaddr *)&a, &len), 0);
	*peer = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(*peer, (struct sockaddr *)&a, sizeof(a)), 0);
	fd = accept(ls, NULL, NULL);
	assert_true(fd >= 0);
	close(ls);
	return fd;
}

/* --- tests -------------------------------------------------------------------------- */

static void test_tag_codec(void **state)
{
	static const struct { enum dp_op op; uint32_t gen, slot; } cases[] = {
		{ DP_OP_ACCEPT, 0, 0 },
		{ DP_OP_SEND1, 0xffffff, UINT32_MAX },
		{ DP_OP_RECV0, 12345, 7 },
		{ DP_OP_CANCEL, 1, 0x80000000u },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t t = dp_tag(cases[i].op, cases[i].gen, cases[i].slot);

		assert_int_equal(dp_tag_op(t), cases[i].op);
		assert_int_equal(dp_tag_gen(t), cases[i].gen);
		assert_int_equal(dp_tag_slot(t), cases[i].slot);
	}
	/* The generation is 24 bits: a connection's gen wraps into the tag, never into the op. */
	assert_int_equal(dp_tag_gen(dp_tag(DP_OP_RECV1, 0x1000002, 3)), 2);
	assert_int_equal(dp_tag_op(dp_tag(DP_OP_RECV1, 0x1000002, 3)), DP_OP_RECV1);
}

static void test_connect_retries_other_backends_then_gives_up(void **state)
{
	struct fixture *fx = *state;
	struct dp_conn *c = accept_client();
	uint32_t slot = c->slot, gen = c->gen;
	int first = pending(F_CONNECT, -1)->backend, second, third;

	/* Refused: the next backend, never the one that failed. */
	complete(pending(F_CONNECT, -1), -ECONNREFUSED, -1, 0);
	second = pending(F_CONNECT, -1)->backend;
	assert_int_not_equal(second, first);
	/* A time-out (the link timeout cancels the connect): the third. */
	complete(pending(F_CONNECT, -1), -ECANCELED, -1, 0);
	third = pending(F_CONNECT, -1)->backend;
	assert_int_not_equal(third, first);
	assert_int_not_equal(third, second);
	/* connect_retries 2: three tries in all, then the client is closed. */
	complete(pending(F_CONNECT, -1), -EHOSTUNREACH, -1, 0);
	assert_null(pending(F_CONNECT, -1));
	assert_null(dp_conn_get(&fx->w, slot, gen));
	assert_int_equal(atomic_load(&fx->lstate.refused), 1);
	assert_int_equal(DP_STAT_GET(fx->w.stats.no_backend), 1);
	assert_int_equal(atomic_load(&fx->bstate[second].connect_errors[DP_CERR_TIMEOUT]), 1);
	assert_int_equal(atomic_load(&fx->bstate[third].connect_errors[DP_CERR_UNREACHABLE]), 1);
	for (int i = 0; i < N_BACKENDS; i++)
		assert_int_equal(atomic_load(&fx->bstate[i].active), 0);
}

static void test_relay_passes_data_and_returns_buffers(void **state)
{
	struct fixture *fx = *state;
	struct dp_conn *c = relaying_client();
	struct fake_op *send;

	data(DP_C2B, 100, false);
	send = pending(F_SEND, DP_C2B);
	assert_non_null(send);
	assert_int_equal(send->bytes, 100);
	assert_int_equal(fx->w.bufs_held, 1);
	/* The next receive is armed beside the send: the queue has room. */
	assert_non_null(pending(F_RECV, DP_C2B));
	/* A partial send keeps the rest queued and sends it next. */
	complete(send, 60, -1, 0);
	send = pending(F_SEND, DP_C2B);
	assert_non_null(send);
	assert_int_equal(send->bytes, 40);
	assert_int_equal(fx->w.bufs_held, 1);
	complete(send, 40, -1, 0);
	assert_int_equal(fx->w.bufs_held, 0);
	assert_int_equal(c->half[DP_C2B].bytes, 100);
	finish(c);
	assert_int_equal(atomic_load(&fx->bstate[0].bytes_in) + atomic_load(&fx->bstate[1].bytes_in) +
			 atomic_load(&fx->bstate[2].bytes_in), 100);
}

static void test_fin_is_passed_on_after_the_data_and_both_end_the_connection(void **state)
{
	struct fixture *fx = *state;
	struct dp_conn *c = relaying_client();
	uint32_t slot = c->slot, gen = c->gen;

	data(DP_C2B, 10, false);
	/* The client's FIN while its data is still being sent: the half waits for the send. */
	complete(pending(F_RECV, DP_C2B), 0, -1, 0);
	assert_true(c->half[DP_C2B].flags & DP_H_EOF);
	assert_false(c->half[DP_C2B].flags & DP_H_SHUT);
	assert_null(pending(F_RECV, DP_C2B)); /* nothing more to read from the client */
	complete(pending(F_SEND, DP_C2B), 10, -1, 0);
	assert_true(c->half[DP_C2B].flags & DP_H_SHUT);
	assert_int_equal(c->state, DP_CS_RELAY); /* the backend may still answer */
	/* The backend answers, then ends too: the connection closes. */
	data(DP_B2C, 20, false);
	complete(pending(F_SEND, DP_B2C), 20, -1, 0);
	complete(pending(F_RECV, DP_B2C), 0, -1, 0);
	assert_null(dp_conn_get(&fx->w, slot, gen));
	assert_int_equal(fx->w.n_conns, 0);
}

static void test_a_short_read_with_more_waiting_holds_the_send_for_the_fin(void **state)
{
	struct fixture *fx = *state;
	struct dp_conn *c = relaying_client();
	struct fake_op *send;

	/* A short read that left the socket "not empty": read again first, send after. */
	data(DP_C2B, 50, true);
	assert_null(pending(F_SEND, DP_C2B));
	assert_true(c->half[DP_C2B].flags & DP_H_HOLD);
	assert_non_null(pending(F_RECV, DP_C2B));
	/* The FIN it was waiting for: the data goes now, with the FIN behind it. */
	complete(pending(F_RECV, DP_C2B), 0, -1, 0);
	send = pending(F_SEND, DP_C2B);
	assert_non_null(send);
	assert_int_equal(send->bytes, 50);
	assert_true(c->half[DP_C2B].flags & DP_H_EOF);
	assert_false(c->half[DP_C2B].flags & DP_H_HOLD);
	complete(send, 50, -1, 0);
	assert_true(c->half[DP_C2B].flags & DP_H_SHUT);
	assert_int_equal(fx->w.bufs_held, 0);
	finish(c);
}

static void test_a_held_send_goes_after_one_loop_turn_without_the_receive(void **state)
{
	struct fixture *fx = *state;
	struct dp_conn *c = relaying_client();

	data(DP_C2B, 50, true);
	assert_true(c->half[DP_C2B].flags & DP_H_HOLD);
	/* The turn it was held in: it stays held. */
	dp_conn_release_held(&fx->w);
	assert_null(pending(F_SEND, DP_C2B));
	/* The next turn, the receive still out: it is sent. */
	dp_conn_release_held(&fx->w);
	assert_non_null(pending(F_SEND, DP_C2B));
	assert_false(c->half[DP_C2B].flags & DP_H_HOLD);
	complete(pending(F_SEND, DP_C2B), 50, -1, 0);
	finish(c);
}

static void test_a_full_queue_stops_reading(void **state)
{
	struct fixture *fx = *state;
	struct dp_conn *c = relaying_client();

	/* The backend does not take what is sent: the queue fills, then no receive is armed. */
	while (pending(F_RECV, DP_C2B))
		data(DP_C2B, BUF_SIZE, false);
	/* Half the pool taken: a direction queues one buffer only, so it stopped at four. */
	assert_int_equal(c->half[DP_C2B].count, BUF_COUNT / 2);
	assert_int_equal(fx->w.bufs_held, BUF_COUNT / 2);
	assert_int_equal(n_pending(F_SEND, DP_C2B), 1);
	/* The sends complete: the buffers come back and reading resumes. */
	while (pending(F_SEND, DP_C2B))
		complete(pending(F_SEND, DP_C2B), (int)pending(F_SEND, DP_C2B)->bytes, -1, 0);
	assert_int_equal(c->half[DP_C2B].count, 0);
	assert_int_equal(fx->w.bufs_held, 0);
	assert_non_null(pending(F_RECV, DP_C2B));
	finish(c);
}

static void test_an_empty_pool_parks_the_receive_until_buffers_return(void **state)
{
	struct fixture *fx = *state;
	struct dp_conn *c = relaying_client();

	complete(pending(F_RECV, DP_B2C), -ENOBUFS, -1, 0);
	assert_true(c->half[DP_B2C].flags & DP_H_NOBUF);
	assert_int_equal(fx->w.n_nobuf, 1);
	assert_true(fx->w.starved_since_ms != 0);
	assert_null(pending(F_RECV, DP_B2C)); /* parked, not re-armed in a loop */
	/* Buffers are free: the receive is armed again, and the shortage is over. */
	dp_conn_retry_nobuf(&fx->w);
	assert_non_null(pending(F_RECV, DP_B2C));
	assert_int_equal(fx->w.n_nobuf, 0);
	dp_conn_relieved(&fx->w);
	assert_int_equal(fx->w.starved_since_ms, 0);
	finish(c);
}

static void test_stalled_peers_are_evicted_and_readers_are_not(void **state)
{
	struct fixture *fx = *state;
	struct dp_conn *stalled, *reading;
	int peer[2], fd;
	uint32_t slot, gen;
	char junk[1000] = { 0 };

	/*
	 * Clients with a real peer: the verdict reads how much the client's kernel has
	 * acknowledged (TCP_INFO), not the age of our send.  Neither send completes here; the
	 * reader's peer takes data all the same (the test writes it on the proxy's socket, as a
	 * send making progress would), the stalled one's takes nothing.
	 */
	for (int i = 0; i < 2; i++) {
		fd = connected_client(&peer[i]);
		atomic_fetch_add(&fx->lstate.active, 1);
		dp_conn_accepted(&fx->w, fx->set, fd);
		complete(pending(F_CONNECT, -1), 0, -1, 0);
	}
	/* In the order accepted: the first (peer[0]) reads, the second does not. */
	reading = stalled = NULL;
	for (unsigned i = 0; i < F.n_ops; i++)
		if (F.ops[i].kind == F_CONNECT) {
			struct dp_conn *c = dp_conn_get(&fx->w, dp_tag_slot(F.ops[i].tag),
							dp_tag_gen(F.ops[i].tag));

			if (!reading)
				reading = c;
			else
				stalled = c;
		}
	assert_non_null(reading);
	assert_non_null(stalled);
	slot = stalled->slot;
	gen = stalled->gen;
	/* Each has a send pending to its client (B2C). */
	complete(pending_of(stalled, F_RECV, DP_B2C), 1000, (int)take_buf(), 0);
	complete(pending_of(reading, F_RECV, DP_B2C), 1000, (int)take_buf(), 0);
	assert_non_null(pending_of(stalled, F_SEND, DP_B2C));
	assert_non_null(pending_of(reading, F_SEND, DP_B2C));
	/* Half the stall time: the first look only takes each count. */
	fx->w.now_ms += 1000;
	assert_int_equal(dp_conn_evict_stalled(&fx->w, 2000), 0);
	/* The reader's client acknowledges more; the other acknowledges nothing. */
	assert_int_equal(send(reading->fd[0], junk, sizeof(junk), 0), (ssize_t)sizeof(junk));
	assert_int_equal(recv(peer[0], junk, sizeof(junk), MSG_WAITALL), (ssize_t)sizeof(junk));
	fx->w.now_ms += 2000;
	assert_int_equal(dp_conn_evict_stalled(&fx->w, 2000), 1);
	assert_int_equal(stalled->state, DP_CS_CLOSING);
	assert_int_equal(reading->state, DP_CS_RELAY);
	assert_int_equal(DP_STAT_GET(fx->w.stats.evicted), 1);
	/* Its requests come back cancelled, its buffer is returned and its slot freed. */
	for (unsigned i = 0; i < F.n_ops; i++)
		if (!F.ops[i].done && dp_tag_slot(F.ops[i].tag) == slot)
			complete(&F.ops[i], F.ops[i].kind == F_CANCEL ? 0 : -ECANCELED, -1, 0);
	assert_null(dp_conn_get(&fx->w, slot, gen));
	finish(reading);
	close(peer[0]);
	close(peer[1]);
}

static void test_a_receive_that_took_a_buffer_and_failed_gives_it_back(void **state)
{
	struct fixture *fx = *state;
	struct dp_conn *c = relaying_client();

	/* io-wq's shape: the kernel took a buffer, then the non-blocking socket said EAGAIN. */
	complete(pending(F_RECV, DP_C2B), -EAGAIN, (int)take_buf(), 0);
	assert_int_equal(F.n_free, BUF_COUNT);
	assert_int_equal(fx->w.bufs_held, 0);
	assert_non_null(pending(F_RECV, DP_C2B));
	finish(c);
}

static void test_close_cancels_and_frees_only_after_the_last_completion(void **state)
{
	struct fixture *fx = *state;
	struct dp_conn *c = relaying_client();
	uint32_t slot = c->slot, gen = c->gen;

	data(DP_C2B, 10, false); /* a send and a receive in flight, a buffer queued */
	dp_conn_close(&fx->w, c);
	assert_int_equal(c->state, DP_CS_CLOSING);
	assert_non_null(pending(F_CANCEL, -1));
	/* A late receive brings a buffer: it goes back, and the slot stays while others are out. */
	complete(pending(F_RECV, DP_C2B), 5, (int)take_buf(), 0);
	assert_non_null(dp_conn_get(&fx->w, slot, gen));
	complete(pending(F_SEND, DP_C2B), -ECANCELED, -1, 0);
	assert_non_null(dp_conn_get(&fx->w, slot, gen));
	complete_all_cancelled();
	assert_null(dp_conn_get(&fx->w, slot, gen));
	/* A completion for the freed slot is stale: counted, its buffer not lost. */
	dp_engine_complete(&fx->w, dp_tag(DP_OP_RECV0, gen, slot), 7, 0, (int)take_buf());
	assert_int_equal(DP_STAT_GET(fx->w.stats.stale_cqes), 1);
	/* The slot is reused with a new generation. */
	c = accept_client();
	assert_int_equal(c->slot, slot);
	assert_int_not_equal(c->gen, gen);
	finish(c);
}

static void test_send_errors_abort_and_eagain_retries_when_writable(void **state)
{
	struct fixture *fx = *state;
	struct dp_conn *c = relaying_client();
	uint32_t slot = c->slot, gen = c->gen;

	data(DP_B2C, 30, false);
	complete(pending(F_SEND, DP_B2C), -EAGAIN, -1, 0);
	assert_true(c->half[DP_B2C].flags & DP_H_SENDPOLL);
	assert_non_null(pending(F_SEND, DP_B2C));
	assert_int_equal(pending(F_SEND, DP_B2C)->bytes, 30);
	complete(pending(F_SEND, DP_B2C), -EPIPE, -1, 0);
	assert_int_equal(c->state, DP_CS_CLOSING);
	complete_all_cancelled();
	assert_null(dp_conn_get(&fx->w, slot, gen));
}

static void test_idle_connections_expire(void **state)
{
	struct fixture *fx = *state;
	struct dp_conn *c = relaying_client();
	uint32_t slot = c->slot, gen = c->gen;
	uint64_t next = UINT64_MAX;

	dp_conn_expire_idle(&fx->w, fx->set, &next);
	assert_int_equal(c->state, DP_CS_RELAY);
	assert_int_equal(next, fx->w.now_ms + fx->conf.idle_timeout_ms);
	fx->w.now_ms += fx->conf.idle_timeout_ms;
	next = UINT64_MAX;
	dp_conn_expire_idle(&fx->w, fx->set, &next);
	assert_int_equal(c->state, DP_CS_CLOSING);
	complete_all_cancelled();
	assert_null(dp_conn_get(&fx->w, slot, gen));
}

static void test_the_proxy_header_goes_first_and_is_no_pool_buffer(void **state)
{
	struct fixture *fx = *state;
	struct dp_conn *c;
	uint64_t tag;
	int peer, fd;

	fx->conf.proxy_protocol = LB_PROXY_V1;
	fd = connected_client(&peer);
	atomic_fetch_add(&fx->lstate.active, 1);
	dp_conn_accepted(&fx->w, fx->set, fd);
	tag = pending(F_CONNECT, -1)->tag;
	c = dp_conn_get(&fx->w, dp_tag_slot(tag), dp_tag_gen(tag));
	assert_non_null(c);
	/* Queued before the backend is even connected, as a chunk of its own. */
	assert_int_equal(c->half[DP_C2B].count, 1);
	assert_int_equal(c->half[DP_C2B].bid[c->half[DP_C2B].head], DP_BID_HEADER);
	assert_memory_equal(dp_conn_header(&fx->w, c), "PROXY TCP4 127.0.0.1 127.0.0.1 ", 31);
	complete(pending(F_CONNECT, -1), 0, -1, 0);
	/* Sent at once on connect, before the client has said anything. */
	assert_non_null(pending(F_SEND, DP_C2B));
	assert_int_equal(pending(F_SEND, DP_C2B)->bytes, c->half[DP_C2B].len[c->half[DP_C2B].head]);
	complete(pending(F_SEND, DP_C2B), (int)pending(F_SEND, DP_C2B)->bytes, -1, 0);
	assert_int_equal(c->half[DP_C2B].count, 0);
	assert_int_equal(F.n_free, BUF_COUNT); /* the header went back to no pool */
	finish(c);
	close(peer);
}

static void test_receive_errors(void **state)
{
	struct fixture *fx = *state;
	struct dp_conn *c = relaying_client();
	uint32_t slot = c->slot, gen = c->gen;

	/* Nothing read after all (a spurious wake-up): wait for data again, polling first. */
	complete(pending(F_RECV, DP_C2B), -EAGAIN, -1, 0);
	assert_non_null(pending(F_RECV, DP_C2B));
	assert_true(c->half[DP_C2B].flags & DP_H_POLLFIRST);
	assert_int_equal(c->state, DP_CS_RELAY);
	/* A reset: the whole connection is cut. */
	complete(pending(F_RECV, DP_B2C), -ECONNRESET, -1, 0);
	assert_int_equal(c->state, DP_CS_CLOSING);
	complete_all_cancelled();
	assert_null(dp_conn_get(&fx->w, slot, gen));
}

static void test_a_failing_backend_is_taken_out_of_rotation(void **state)
{
	struct fixture *fx = *state;
	struct dp_conn *c;
	int bad;

	fx->conf.max_fails = 1;
	c = accept_client();
	bad = pending(F_CONNECT, -1)->backend;
	complete(pending(F_CONNECT, -1), -ECONNREFUSED, -1, 0);
	assert_false(dp_bstate_usable(&fx->bstate[bad], fx->w.now_ms));
	complete(pending(F_CONNECT, -1), 0, -1, 0);
	finish(c);
	/* Until its fail_timeout ends, no new connection tries it. */
	for (int i = 0; i < 2 * N_BACKENDS; i++) {
		c = accept_client();
		assert_int_not_equal(pending(F_CONNECT, -1)->backend, bad);
		complete(pending(F_CONNECT, -1), 0, -1, 0);
		finish(c);
	}
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tag_codec),
		T(test_connect_retries_other_backends_then_gives_up),
		T(test_relay_passes_data_and_returns_buffers),
		T(test_fin_is_passed_on_after_the_data_and_both_end_the_connection),
		T(test_a_short_read_with_more_waiting_holds_the_send_for_the_fin),
		T(test_a_held_send_goes_after_one_loop_turn_without_the_receive),
		T(test_a_full_queue_stops_reading),
		T(test_an_empty_pool_parks_the_receive_until_buffers_return),
		T(test_stalled_peers_are_evicted_and_readers_are_not),
		T(test_close_cancels_and_frees_only_after_the_last_completion),
		T(test_send_errors_abort_and_eagain_retries_when_writable),
		T(test_idle_connections_expire),
		T(test_the_proxy_header_goes_first_and_is_no_pool_buffer),
		T(test_receive_errors),
		T(test_a_failing_backend_is_taken_out_of_rotation),
		T(test_a_receive_that_took_a_buffer_and_failed_gives_it_back),
	};
#undef T

	return cmocka_run_group_tests(tests, NULL, NULL);
}
