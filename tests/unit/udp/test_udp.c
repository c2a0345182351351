/*
 * test_udp.c - udp flows (dataplane/udp.c) driven by a fake engine.
 *
 * The fake engine records each datagram request udp.c issues (receive, cancel, send) with its
 * tag; the test completes them through dp_engine_complete() as the engines do, with datagrams
 * laid out in the fake pool's buffers as struct dp_dgram says.  Flow sockets are real (udp.c
 * makes and connects them to the backends' addresses; nothing is sent on them), so a test can
 * ask a flow's descriptor which backend it is connected to and whether it is still open.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dataplane/engine.h"
#include "dataplane/lset.h"
#include "dataplane/snapshot.h"
#include "dataplane/udp.h"
#include "dataplane/worker.h"
#include "tests/unit/fixture.h"

#define N_BACKENDS 3
#define BUF_COUNT 16
#define BUF_SIZE 4096
#define OPS_MAX 256

enum fake_kind { F_RECV, F_CANCEL, F_SEND };

struct fake_op {
	enum fake_kind kind;
	uint64_t tag;
	int fd;
	bool named;
	struct msghdr *msg;    /* send */
	bool cancelled;        /* receive: a cancel was issued for it */
	bool done;
};

static struct {
	struct fake_op ops[OPS_MAX];
	unsigned n_ops;
	unsigned free_bids[BUF_COUNT];
	unsigned n_free;
} F;

struct fixture {
	struct dp_worker w;
	struct lb_listener_conf conf;
	struct dp_lstate lstate;
	struct dp_bstate bstate[N_BACKENDS];
	struct dp_backend backends[N_BACKENDS];
	struct dp_slistener sl;
	struct dp_lset *set;
	struct dp_wlistener wl;
	struct dp_wlistener *wls[1];
	char *bufs;
};

static struct fixture *FX;

/* --- the fake engine ---------------------------------------------------------------- */

static struct fake_op *record(enum fake_kind kind, int fd, uint64_t tag)
{
	assert_true(F.n_ops < OPS_MAX);
	F.ops[F.n_ops] = (struct fake_op){ .kind = kind, .tag = tag, .fd = fd };
	return &F.ops[F.n_ops++];
}

static void fake_dgram_recv(struct dp_worker *w, int fd, uint64_t tag, uint8_t *eng)
{
	bool named = dp_tag_op(tag) == DP_OP_DRECVL;

	(void)w;
	(void)eng;
	/* One receive per socket at a time. */
	for (unsigned i = 0; i < F.n_ops; i++)
		assert_false(!F.ops[i].done && F.ops[i].kind == F_RECV && F.ops[i].tag == tag);
	record(F_RECV, fd, tag)->named = named;
}

static void fake_dgram_cancel(struct dp_worker *w, int fd, uint64_t tag, uint8_t *eng)
{
	(void)w;
	(void)eng;
	for (unsigned i = 0; i < F.n_ops; i++)
		if (!F.ops[i].done && F.ops[i].kind == F_RECV && F.ops[i].tag == tag)
			F.ops[i].cancelled = true;
	record(F_CANCEL, fd, tag)->done = true;
}

static void fake_dgram_send(struct dp_worker *w, int fd, struct msghdr *msg, uint64_t tag)
{
	(void)w;
	assert_int_equal(fcntl(fd, F_GETFD), FD_CLOEXEC); /* an open descriptor of ours */
	record(F_SEND, fd, tag)->msg = msg;
}

static void fake_buf_put(struct dp_worker *w, unsigned bid)
{
	(void)w;
	assert_true(bid < BUF_COUNT);
	for (unsigned i = 0; i < F.n_free; i++)
		assert_int_not_equal(F.free_bids[i], bid); /* returned twice */
	F.free_bids[F.n_free++] = bid;
}

static bool fake_bufs_left(const struct dp_worker *w)
{
	(void)w;
	return F.n_free != 0;
}

static const struct dp_engine fake_engine = {
	.name = "fake",
	.buf_put = fake_buf_put,
	.bufs_left = fake_bufs_left,
	.dgram_recv = fake_dgram_recv,
	.dgram_cancel = fake_dgram_cancel,
	.dgram_send = fake_dgram_send,
};

/* The latest pending request of kind on fd (any fd if fd < 0). */
static struct fake_op *pending(enum fake_kind kind, int fd)
{
	for (unsigned i = F.n_ops; i-- > 0;)
		if (!F.ops[i].done && F.ops[i].kind == kind && (fd < 0 || F.ops[i].fd == fd))
			return &F.ops[i];
	return NULL;
}

static unsigned n_pending(enum fake_kind kind)
{
	unsigned n = 0;

	for (unsigned i = 0; i < F.n_ops; i++)
		n += !F.ops[i].done && F.ops[i].kind == kind;
	return n;
}

static void complete(struct fake_op *op, int res, int bid, unsigned flags)
{
	assert_non_null(op);
	assert_false(op->done);
	/* A multishot receive stays pending while it says "more". */
	op->done = !(flags & DP_CF_MORE);
	dp_engine_complete(&FX->w, op->tag, res, flags, bid);
}

/* Every send completes as sent; every cancelled receive ends, as the kernel would do it. */
static void settle(void)
{
	for (unsigned i = 0; i < F.n_ops; i++)
		if (!F.ops[i].done && F.ops[i].kind == F_SEND)
			complete(&F.ops[i], (int)F.ops[i].msg->msg_iov[0].iov_len, -1, 0);
	for (unsigned i = 0; i < F.n_ops; i++)
		if (!F.ops[i].done && F.ops[i].kind == F_RECV && F.ops[i].cancelled)
			complete(&F.ops[i], -ECANCELED, -1, 0);
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
	w->now_ms = 1000000;
	fx->bufs = calloc(BUF_COUNT, BUF_SIZE);
	assert_non_null(fx->bufs);
	w->bufs = fx->bufs;
	dp_list_init(&w->lsets);

	snprintf(fx->conf.name, sizeof(fx->conf.name), "dns");
	assert_int_equal(lb_addr_parse("127.0.0.1:5353", false, &fx->conf.listen, NULL, 0), 0);
	fx->conf.protocol = LB_PROTO_UDP;
	fx->conf.algorithm = LB_ALGO_ROUND_ROBIN;
	fx->conf.idle_timeout_ms = 30000;
	fx->conf.max_flows = 100;
	fx->conf.max_fails = 2;
	fx->conf.fail_timeout_ms = 10000;
	fixture_backends(fx->backends, fx->bstate, N_BACKENDS);
	fx->lstate.udp = calloc(1, sizeof(*fx->lstate.udp));
	assert_non_null(fx->lstate.udp);
	fx->lstate.n_udp = 1;
	fx->sl = (struct dp_slistener){ .conf = &fx->conf, .st = &fx->lstate,
					.backends = fx->backends, .n_backends = N_BACKENDS };
	fx->set = fixture_set(w, &fx->sl, 2); /* the worker's and the listener socket's */

	fx->wl = (struct dp_wlistener){ .idx = 0, .gen = 1, .set = fx->set, .udp = true };
	fx->wl.fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(fx->wl.fd >= 0);
	dp_list_init(&fx->wl.flows);
	fx->wls[0] = &fx->wl;
	w->wls = fx->wls;
	w->n_wls = 1;
	dp_udp_listen(w, &fx->wl);
	assert_non_null(pending(F_RECV, fx->wl.fd));
	assert_true(pending(F_RECV, fx->wl.fd)->named);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	/* Every flow ended and every buffer and reference came back. */
	settle();
	assert_int_equal(fx->w.n_flows, 0);
	assert_int_equal(fx->wl.users, 0);
	assert_int_equal(fx->wl.n_open, 0);
	assert_int_equal(fx->set->refs, 2);
	assert_int_equal(F.n_free, BUF_COUNT);
	for (int i = 0; i < N_BACKENDS; i++)
		assert_int_equal(atomic_load(&fx->bstate[i].active), 0);
	close(fx->wl.fd);
	fx->set->refs = 1;
	dp_lset_put(fx->set);
	dp_udp_free(&fx->w);
	free(fx->lstate.udp);
	free(fx->bufs);
	free(fx);
	return 0;
}

/* --- datagrams ---------------------------------------------------------------------- */

static struct dp_ustats *stats(void)
{
	return &FX->lstate.udp[0];
}

static struct sockaddr_in client(int n)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)(40000 + n)) };

	a.sin_addr.s_addr = htonl(0x7f000002); /* 127.0.0.2 */
	return a;
}

/* A buffer the "kernel" fills with a datagram: header, [name, control,] payload. */
static unsigned fill(const struct sockaddr_in *from, const char *payload, uint32_t len,
		     bool trunc)
{
	unsigned bid;
	char *b;
	struct dp_dgram *d;

	assert_true(F.n_free > 0);
	bid = F.free_bids[--F.n_free];
	b = FX->bufs + (size_t)bid * BUF_SIZE;
	d = (struct dp_dgram *)b;
	*d = (struct dp_dgram){ .payloadlen = len, .flags = trunc ? MSG_TRUNC : 0 };
	if (from) {
		d->namelen = sizeof(*from);
		memcpy(b + sizeof(*d), from, sizeof(*from));
	}
	if (!trunc)
		memcpy(b + dp_dgram_room(from != NULL), payload, len);
	return bid;
}

/* A datagram from client n to the listener. */
static void from_client(int n, const char *payload)
{
	struct sockaddr_in a = client(n);
	unsigned bid = fill(&a, payload, (uint32_t)strlen(payload), false);

	complete(pending(F_RECV, FX->wl.fd), 0, (int)bid, DP_CF_MORE);
}

/* A reply on the flow whose socket is fd. */
static void from_backend(int fd, const char *payload)
{
	unsigned bid = fill(NULL, payload, (uint32_t)strlen(payload), false);

	complete(pending(F_RECV, fd), 0, (int)bid, DP_CF_MORE);
}

/* The backend a flow's socket is connected to. */
static int backend_of(int fd)
{
	struct lb_addr a = { .len = sizeof(a.ss) };

	assert_int_equal(getpeername(fd, (struct sockaddr *)&a.ss, &a.len), 0);
	for (int i = 0; i < N_BACKENDS; i++)
		if (lb_addr_equal(&a, &FX->backends[i].addr))
			return i;
	fail_msg("connected to no backend");
	return -1;
}

static bool fd_open(int fd)
{
	return fcntl(fd, F_GETFD) != -1;
}

/* The send just issued: its socket, and its payload as text. */
static int last_send(char *payload, size_t len)
{
	struct fake_op *op = pending(F_SEND, -1);

	assert_non_null(op);
	assert_true(op->msg->msg_iov[0].iov_len < len);
	memcpy(payload, op->msg->msg_iov[0].iov_base, op->msg->msg_iov[0].iov_len);
	payload[op->msg->msg_iov[0].iov_len] = 0;
	return op->fd;
}

/* --- tests -------------------------------------------------------------------------- */

static void test_a_client_is_one_flow_and_replies_go_back_to_it(void **state)
{
	struct fixture *fx = *state;
	struct sockaddr_in want = client(1);
	char got[64];
	int fd, fd2;

	from_client(1, "query-1");
	fd = last_send(got, sizeof(got));
	assert_string_equal(got, "query-1");
	assert_int_not_equal(fd, fx->wl.fd);
	assert_non_null(pending(F_RECV, fd)); /* the flow's own receive */
	assert_false(pending(F_RECV, fd)->named);
	settle();
	/* The same client again: the same flow, the same backend, no new socket. */
	from_client(1, "query-2");
	assert_int_equal(last_send(got, sizeof(got)), fd);
	assert_int_equal(DP_STAT_GET(stats()->flows_created), 1);
	/* Another client: a flow of its own, to the next backend in turn. */
	from_client(2, "other");
	fd2 = last_send(got, sizeof(got));
	assert_int_not_equal(fd2, fd);
	assert_int_not_equal(backend_of(fd2), backend_of(fd));
	settle();

	from_backend(fd, "answer");
	assert_int_equal(last_send(got, sizeof(got)), fx->wl.fd);
	assert_string_equal(got, "answer");
	assert_int_equal(pending(F_SEND, -1)->msg->msg_namelen, sizeof(want));
	assert_memory_equal(pending(F_SEND, -1)->msg->msg_name, &want, sizeof(want));
	assert_null(pending(F_SEND, -1)->msg->msg_control); /* not a wildcard listener */
	settle();
	assert_int_equal(DP_STAT_GET(stats()->dgrams_in), 3);
	assert_int_equal(DP_STAT_GET(stats()->dgrams_out), 1);
	assert_int_equal(DP_STAT_GET(stats()->bytes_out), 6);
	assert_int_equal(atomic_load(&fx->bstate[backend_of(fd)].active), 1);
	dp_udp_close_flows(&fx->w, &fx->wl);
}

static void test_responses_close_the_flow_after_its_answer(void **state)
{
	struct fixture *fx = *state;
	char got[64];
	int fd;

	fx->conf.responses = 1;
	from_client(1, "q");
	fd = last_send(got, sizeof(got));
	settle();
	from_backend(fd, "a");
	/* Answered: its receive is cancelled at once; the reply is still on its way. */
	assert_true(pending(F_RECV, fd)->cancelled);
	assert_int_equal(fx->wl.n_open, 0);
	assert_int_equal(fx->w.n_flows, 1);
	settle();
	assert_int_equal(fx->w.n_flows, 0);
	assert_false(fd_open(fd));
	assert_int_equal(DP_STAT_GET(stats()->flows_closed), 1);
	/* The client's next query is a new flow. */
	from_client(1, "q2");
	assert_int_equal(DP_STAT_GET(stats()->flows_created), 2);
	fd = last_send(got, sizeof(got));
	settle();
	/* Two queries in flight (a resolver's A and AAAA): the flow waits for both answers. */
	from_client(1, "q3");
	settle();
	from_backend(fd, "a2");
	assert_false(pending(F_RECV, fd)->cancelled);
	assert_int_equal(fx->wl.n_open, 1);
	from_backend(fd, "a3");
	assert_true(pending(F_RECV, fd)->cancelled);
	assert_int_equal(fx->wl.n_open, 0);
}

static void test_max_flows_evicts_the_least_recently_active(void **state)
{
	struct fixture *fx = *state;
	char got[64];
	int fd1, fd2;

	fx->conf.max_flows = 2;
	from_client(1, "a");
	fd1 = last_send(got, sizeof(got));
	from_client(2, "b");
	fd2 = last_send(got, sizeof(got));
	settle();
	fx->w.now_ms += 10;
	from_client(1, "a again"); /* client 1 is now the more recent */
	settle();
	from_client(3, "c");
	assert_int_equal(DP_STAT_GET(stats()->flows_evicted), 1);
	assert_true(pending(F_RECV, fd2)->cancelled);
	assert_false(pending(F_RECV, fd1)->cancelled);
	assert_int_equal(fx->wl.n_open, 2);
	settle();
	assert_false(fd_open(fd2));
	dp_udp_close_flows(&fx->w, &fx->wl);
}

static void test_idle_flows_time_out_and_a_stopped_listener_waits_less(void **state)
{
	struct fixture *fx = *state;
	uint64_t next = UINT64_MAX;

	from_client(1, "a");
	settle();
	fx->w.now_ms += 29999;
	dp_udp_expire(&fx->w, &fx->wl, &next);
	assert_int_equal(fx->wl.n_open, 1);
	assert_int_equal(next, fx->w.now_ms + 1); /* the timer asks to be back when it is due */
	fx->w.now_ms += 1;
	dp_udp_expire(&fx->w, &fx->wl, &next);
	assert_int_equal(fx->wl.n_open, 0);
	assert_int_equal(DP_STAT_GET(stats()->flows_timed_out), 1);
	settle();

	/* Stopped (drain, handover, removal): replies only, so 2 s of quiet is enough. */
	from_client(2, "b");
	settle();
	fx->wl.late = fx->wl.set;
	fx->wl.set = NULL;
	fx->w.now_ms += 2000;
	dp_udp_expire(&fx->w, &fx->wl, &next);
	assert_int_equal(fx->wl.n_open, 0);
	fx->wl.set = fx->wl.late;
	fx->wl.late = NULL;
}

/* A new client's flow (client n), its datagram sent: the flow's socket. */
static int new_flow(int n)
{
	char got[64];
	int fd;

	from_client(n, "q");
	fd = last_send(got, sizeof(got));
	settle();
	return fd;
}

static void test_refused_counts_toward_max_fails_and_the_next_pick_avoids_it(void **state)
{
	struct fixture *fx = *state;
	int fd = new_flow(1), b = backend_of(fd), n = 2, c;

	/* ICMP port unreachable: the flow's receive ends with ECONNREFUSED. */
	complete(pending(F_RECV, fd), -ECONNREFUSED, -1, 0);
	assert_int_equal(atomic_load(&fx->bstate[b].connect_failures), 1);
	assert_int_equal(atomic_load(&fx->bstate[b].fails), 1);
	assert_int_equal(fx->wl.n_open, 0);
	assert_false(fd_open(fd));
	assert_true(dp_bstate_usable(&fx->bstate[b], fx->w.now_ms));
	/* Round robin comes back to it within N_BACKENDS flows; its second failure takes it out. */
	while (backend_of(fd = new_flow(n++)) != b)
		assert_true(n < 2 + N_BACKENDS);
	complete(pending(F_RECV, fd), -ECONNREFUSED, -1, 0);
	assert_false(dp_bstate_usable(&fx->bstate[b], fx->w.now_ms));
	for (int i = 0; i < 2 * N_BACKENDS; i++)
		assert_int_not_equal(backend_of(new_flow(n++)), b);
	/* A reply clears a backend's record of failures. */
	c = backend_of(fd = new_flow(n++));
	atomic_store(&fx->bstate[c].fails, 1);
	from_backend(fd, "r");
	assert_int_equal(atomic_load(&fx->bstate[c].fails), 0);
	dp_udp_close_flows(&fx->w, &fx->wl);
}

static void test_oversized_is_dropped_never_truncated(void **state)
{
	struct fixture *fx = *state;
	struct sockaddr_in a = client(1);
	unsigned bid = fill(&a, NULL, BUF_SIZE * 2, true);

	complete(pending(F_RECV, fx->wl.fd), 0, (int)bid, DP_CF_MORE);
	assert_int_equal(DP_STAT_GET(stats()->drops[DP_UDROP_OVERSIZED]), 1);
	assert_int_equal(n_pending(F_SEND), 0);
	assert_int_equal(fx->w.n_flows, 0); /* no flow for a datagram that was dropped */
	assert_int_equal(F.n_free, BUF_COUNT);
}

static void test_a_closed_flow_keeps_its_socket_while_a_send_is_in_flight(void **state)
{
	struct fixture *fx = *state;
	char got[64];
	int fd;

	from_client(1, "a");
	fd = last_send(got, sizeof(got));
	/* Closed with its datagram still to be sent, and its receive ended too. */
	dp_udp_close_flows(&fx->w, &fx->wl);
	complete(pending(F_RECV, fd), -ECANCELED, -1, 0);
	assert_true(fd_open(fd)); /* the send still names it */
	assert_int_equal(fx->w.n_flows, 1);
	complete(pending(F_SEND, fd), 1, -1, 0);
	assert_false(fd_open(fd));
	assert_int_equal(fx->w.n_flows, 0);
}

static void test_a_receive_out_of_buffers_is_made_again_later(void **state)
{
	struct fixture *fx = *state;
	uint64_t next = UINT64_MAX;
	unsigned held[BUF_COUNT], n_held = 0;
	char got[64];
	int fd;

	from_client(1, "a");
	fd = last_send(got, sizeof(got));
	settle();
	/* The ring ran dry but buffers are free: again on the next turn, once it is refilled. */
	complete(pending(F_RECV, fd), -ENOBUFS, -1, 0);
	assert_null(pending(F_RECV, fd));
	assert_int_equal(fx->wl.n_open, 1); /* the flow stays */
	dp_udp_rearm(&fx->w, &next);
	assert_non_null(pending(F_RECV, fd));
	/* The whole pool in use: a receive made now would fail at once again (a spin). */
	while (F.n_free)
		held[n_held++] = F.free_bids[--F.n_free];
	complete(pending(F_RECV, fd), -ENOBUFS, -1, 0);
	dp_udp_rearm(&fx->w, &next);
	assert_null(pending(F_RECV, fd));
	assert_int_equal(next, fx->w.now_ms + DP_UDP_NOBUF_RETRY_MS);
	fx->w.now_ms = next;
	dp_udp_rearm(&fx->w, &next); /* still none: another wait */
	assert_null(pending(F_RECV, fd));
	while (n_held)
		F.free_bids[F.n_free++] = held[--n_held];
	fx->w.now_ms += DP_UDP_NOBUF_RETRY_MS;
	dp_udp_rearm(&fx->w, &next);
	assert_non_null(pending(F_RECV, fd));
	dp_udp_close_flows(&fx->w, &fx->wl);
}

static void test_no_backend_drops_and_counts(void **state)
{
	struct fixture *fx = *state;

	for (int i = 0; i < N_BACKENDS; i++)
		atomic_store(&fx->bstate[i].check_up, false);
	from_client(1, "a");
	assert_int_equal(DP_STAT_GET(stats()->drops[DP_UDROP_NO_BACKEND]), 1);
	assert_int_equal(fx->w.n_flows, 0);
	for (int i = 0; i < N_BACKENDS; i++)
		atomic_store(&fx->bstate[i].check_up, true);
}

/* A backend removed by an apply: its flows of the replaced set live until the drain time. */
static void test_flows_to_a_removed_backend_drain_then_close(void **state)
{
	struct fixture *fx = *state;
	uint64_t next = UINT64_MAX;
	int fd1 = new_flow(1), fd2 = new_flow(2), gone = backend_of(fd1);

	for (int i = 0; i < N_BACKENDS; i++)
		atomic_store(&fx->bstate[i].generation, 7);
	atomic_store(&fx->bstate[gone].generation, 6); /* not in snapshot 7 */
	atomic_store(&dp_generation_published, 7);
	fx->set->retired = true;
	fx->set->sweep_ms = fx->w.now_ms + 5000; /* drain_timeout_ms */
	fx->w.now_ms += 4000;
	dp_udp_expire(&fx->w, &fx->wl, &next);
	assert_int_equal(fx->wl.n_open, 2);
	fx->w.now_ms += 1000;
	fx->wl.sweep_ms = 0; /* the once-a-second look is due */
	dp_udp_expire(&fx->w, &fx->wl, &next);
	assert_int_equal(fx->wl.n_open, 1); /* the other backend's flow carries on */
	assert_true(pending(F_RECV, fd1)->cancelled);
	assert_false(pending(F_RECV, fd2)->cancelled);
	fx->set->retired = false;
	atomic_store(&dp_generation_published, 0);
	dp_udp_close_flows(&fx->w, &fx->wl);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_a_client_is_one_flow_and_replies_go_back_to_it),
		T(test_responses_close_the_flow_after_its_answer),
		T(test_max_flows_evicts_the_least_recently_active),
		T(test_idle_flows_time_out_and_a_stopped_listener_waits_less),
		T(test_refused_counts_toward_max_fails_and_the_next_pick_avoids_it),
		T(test_oversized_is_dropped_never_truncated),
		T(test_a_closed_flow_keeps_its_socket_while_a_send_is_in_flight),
		T(test_a_receive_out_of_buffers_is_made_again_later),
		T(test_no_backend_drops_and_counts),
		T(test_flows_to_a_removed_backend_drain_then_close),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
