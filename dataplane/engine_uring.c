/* engine_uring.c - the io_uring engine: one ring and one provided-buffer ring per worker. */
#include <errno.h>
#include <stddef.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/log.h"
#include "dataplane/bufstack.h"
#include "dataplane/dp.h"
#include "dataplane/engine.h"
#include "dataplane/udp.h"
#include "dataplane/worker.h"

/*
 * Design (see docs/architecture.md):
 * - The ring is created inside its worker thread with SINGLE_ISSUER | DEFER_TASKRUN: completion
 *   work runs only when this thread enters the kernel to wait, so there are no interrupts from
 *   task_work and completions come in natural batches.  That flag pair made the difference
 *   between losing to and beating HAProxy in the measurements (research/dataplane-anchors.md).
 * - Receives pick a buffer from one provided-buffer ring per worker at the moment data arrives,
 *   so an idle connection holds no buffer at all.
 * - user_data is the completion tag of engine.h (op, generation, slot); dp_engine_complete
 *   checks it against the slot's generation before anything is believed.
 */

#define DP_BGID 1
#define DP_SQ_ENTRIES 1024
#define DP_CQ_ENTRIES 32768

struct dp_uring {
	struct io_uring ring;
	struct io_uring_buf_ring *br;
	size_t br_len;
	char *bufs;
	size_t bufs_len;
	unsigned mask;
	unsigned added;   /* buffers put in the ring since the last publish */
	unsigned in_ring; /* buffers the kernel may pick now */
	unsigned target;  /* how many to keep there: grows when receives find it empty */
	bool starved;     /* a receive found the ring empty since the last refill */
	bool starved_trim; /* ... since the last trim */
	unsigned ring_low; /* the fewest in the ring since the last trim */
	unsigned recvs;    /* receives submitted whose completion has not been dispatched */
	struct dp_bufstack spare; /* returned buffers not in the ring, most recently used on top */
	/* What the ring holds, in order: the kernel takes from the head, we add at the tail. */
	unsigned *ring_bids;
	unsigned ring_head, ring_tail; /* free-running counts of buffers taken and added */
	unsigned ring_mark;            /* ring_tail at the last trim */
	unsigned ring_released;        /* positions before it have had their pages given back */
	/* What a datagram receive asks room for (udp.h): read by the kernel at submit. */
	struct msghdr dgram_named, dgram_plain;
};

static inline struct dp_uring *U(struct dp_worker *w)
{
	return w->engine;
}

/*
 * The kernel takes buffers from the ring's head in order, so a ring holding the whole pool
 * would cycle through every buffer and make all of it resident, however light the load.
 * Only `target` buffers are kept in the ring, topped up from a LIFO stack of returned ones:
 * the same hot buffers are reused, and the pool's memory is touched only as far as the
 * load has ever needed.  Receives that find the ring empty (ENOBUFS) double the target, once
 * per refill.
 */
#define DP_RING_TARGET_MIN 32u

static void ring_refill(struct dp_worker *w)
{
	struct dp_uring *u = U(w);

	/* Once per refill, however many receives failed in the batch: grow by need, not panic. */
	if (u->starved && u->target < w->buffer_count)
		u->target *= 2;
	u->starved = false;
	while (u->in_ring < u->target && u->spare.n) {
		unsigned bid = dp_bufstack_pop(&u->spare);

		io_uring_buf_ring_add(u->br, u->bufs + (size_t)bid * w->buffer_size,
				      w->buffer_size, bid, u->mask, u->added++);
		u->ring_bids[u->ring_tail++ & u->mask] = bid;
		u->in_ring++;
	}
	if (u->added) {
		io_uring_buf_ring_advance(u->br, u->added);
		u->added = 0;
	}
}

/*
 * Room for n SQEs, submitting what is queued if need be.  Every SQE taken is filled before the
 * next call, so a submit here never sends a half-prepared one.  The kernel takes every queued
 * SQE on submit; it can refuse only while completions wait for room in the CQ, and uring_run
 * frees each batch's CQ entries before dispatching it, so this loop ends at once in practice.
 */
static void sq_reserve(struct dp_worker *w, unsigned n)
{
	for (int tries = 0; io_uring_sq_space_left(&U(w)->ring) < n; tries++) {
		if (tries == 100) {
			log_err("worker %u: the kernel takes no submissions; aborting", w->id);
			abort();
		}
		io_uring_submit_and_get_events(&U(w)->ring);
	}
}

static struct io_uring_sqe *get_sqe(struct dp_worker *w)
{
	sq_reserve(w, 1);
	return io_uring_get_sqe(&U(w)->ring);
}

/*
 * Create a ring, disabled (IORING_SETUP_R_DISABLED): nothing can be submitted to it until
 * dp_uring_seal has restricted it to this engine's opcodes and enabled it.
 */
int dp_uring_open(struct io_uring *ring, char *err, size_t errlen)
{
	/*
	 * Ladder: SINGLE_ISSUER|DEFER_TASKRUN (6.1), then COOP_TASKRUN (5.19), then plain.
	 * SUBMIT_ALL keeps one bad SQE from stranding the rest of a batch; CQSIZE because a
	 * multishot request ends instead of overflowing a full CQ.
	 */
	static const unsigned ladder[] = {
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
		IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
		0,
	};
	int r = -EINVAL;

	for (size_t i = 0; i < sizeof(ladder) / sizeof(ladder[0]); i++) {
		struct io_uring_params p = { 0 };

		p.flags = ladder[i] | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE |
			  IORING_SETUP_CLAMP | IORING_SETUP_R_DISABLED;
		p.cq_entries = DP_CQ_ENTRIES;
		r = io_uring_queue_init_params(DP_SQ_ENTRIES, ring, &p);
		if (r != -EINVAL)
			break;
	}
	if (r == -EPERM || r == -ENOSYS || r == -EACCES)
		snprintf(err, errlen,
			 "io_uring_setup failed: %s: io_uring is forbidden here (sysctl "
			 "kernel.io_uring_disabled, or the container runtime's default seccomp "
			 "profile: Docker 25+, containerd 2.0+, CRI-O)",
			 strerror(-r));
	else if (r)
		snprintf(err, errlen, "io_uring_setup failed: %s", strerror(-r));
	return r;
}

/*
 * The opcodes this engine issues, and no other.  An io_uring ring reaches most of the kernel
 * (openat, unlinkat, splice, ...) without a system call a seccomp filter could see: a
 * restricted ring keeps a bug in the relay, or an attacker who steered one, to the operations
 * a proxy needs.  Keep in step with the prep calls in this file.
 */
static const uint8_t dp_uring_sqe_ops[] = {
	IORING_OP_ACCEPT, IORING_OP_CONNECT, IORING_OP_LINK_TIMEOUT, IORING_OP_RECV,
	IORING_OP_SEND,	  IORING_OP_SENDMSG, IORING_OP_READ,	     IORING_OP_ASYNC_CANCEL,
	IORING_OP_RECVMSG,
};

/*
 * Debian 12's liburing 2.3 declares io_uring_register_restrictions and io_uring_enable_rings
 * but its shared library does not export them: make the two registrations by hand.
 */
static int uring_register(struct io_uring *ring, unsigned op, const void *arg, unsigned nr)
{
	return syscall(__NR_io_uring_register, ring->ring_fd, op, arg, nr) < 0 ? -errno : 0;
}

/*
 * Restrict a ring from dp_uring_open to the engine's opcodes and SQE flags, refuse every
 * registration but the one liburing makes at exit, and enable it.  Registrations the engine
 * needs (buffer ring, ring fd) must be made before: after this, the ring is what it is.
 */
int dp_uring_seal(struct io_uring *ring, char *err, size_t errlen)
{
	struct io_uring_restriction res[sizeof(dp_uring_sqe_ops) + 3] = { 0 };
	unsigned n = 0;
	int r;

	for (size_t i = 0; i < sizeof(dp_uring_sqe_ops); i++) {
		res[n].opcode = IORING_RESTRICTION_SQE_OP;
		res[n++].sqe_op = dp_uring_sqe_ops[i];
	}
	/* Before 5.11 (no EXT_ARG), liburing waits with a timeout by queueing a TIMEOUT SQE. */
	if (!(ring->features & IORING_FEAT_EXT_ARG)) {
		res[n].opcode = IORING_RESTRICTION_SQE_OP;
		res[n++].sqe_op = IORING_OP_TIMEOUT;
	}
	res[n].opcode = IORING_RESTRICTION_SQE_FLAGS_ALLOWED;
	res[n++].sqe_flags = IOSQE_IO_LINK | IOSQE_BUFFER_SELECT;
	/* io_uring_queue_exit unregisters the ring fd; without this it fails, harmlessly. */
	res[n].opcode = IORING_RESTRICTION_REGISTER_OP;
	res[n++].register_op = IORING_UNREGISTER_RING_FDS;
	r = uring_register(ring, IORING_REGISTER_RESTRICTIONS, res, n);
	if (r) {
		snprintf(err, errlen, "restricting the io_uring ring to its opcodes failed: %s",
			 strerror(-r));
		return r;
	}
	r = uring_register(ring, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
	if (r)
		snprintf(err, errlen, "enabling the io_uring ring failed: %s", strerror(-r));
	return r;
}

/* liburing 2.3 has no io_uring_setup_buf_ring: register the ring by hand. */
static int bufring_setup(struct dp_worker *w, char *err, size_t errlen)
{
	struct dp_uring *u = U(w);
	struct io_uring_buf_reg reg = { 0 };
	unsigned n = w->buffer_count;
	int r;

	u->br_len = (size_t)n * sizeof(struct io_uring_buf);
	u->br = mmap(NULL, u->br_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (u->br == MAP_FAILED)
		goto out_errno;
	/* Buffers are touched only when data lands in them: RSS follows traffic. */
	u->bufs_len = (size_t)n * w->buffer_size;
	u->bufs = mmap(NULL, u->bufs_len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (u->bufs == MAP_FAILED)
		goto out_errno;
	reg.ring_addr = (unsigned long)u->br;
	reg.ring_entries = n;
	reg.bgid = DP_BGID;
	r = io_uring_register_buf_ring(&u->ring, &reg, 0);
	if (r) {
		snprintf(err, errlen, "registering the provided-buffer ring failed: %s",
			 strerror(-r));
		return r;
	}
	io_uring_buf_ring_init(u->br);
	u->mask = io_uring_buf_ring_mask(n);
	u->spare.v = calloc(n, sizeof(*u->spare.v));
	u->ring_bids = calloc(n, sizeof(*u->ring_bids));
	if (!u->spare.v || !u->ring_bids)
		return -ENOMEM;
	for (unsigned i = n; i-- > 0;)
		dp_bufstack_push(&u->spare, i);
	u->spare.low = u->spare.released = u->spare.n; /* fresh pages: nothing resident yet */
	u->target = n < DP_RING_TARGET_MIN ? n : DP_RING_TARGET_MIN;
	ring_refill(w);
	u->ring_mark = u->ring_released = u->ring_tail;
	u->ring_low = u->in_ring;
	return 0;
out_errno:
	r = -errno;
	snprintf(err, errlen, "cannot map %u buffers of %u bytes: %s", n, w->buffer_size,
		 strerror(errno));
	return r;
}

static void arm_wake(struct dp_worker *w)
{
	struct io_uring_sqe *sqe = get_sqe(w);

	io_uring_prep_read(sqe, w->efd, &w->efd_val, sizeof(w->efd_val), 0);
	io_uring_sqe_set_data64(sqe, dp_tag(DP_OP_WAKE, 0, 0));
}

static void uring_fini(struct dp_worker *w)
{
	struct dp_uring *u = U(w);

	if (!u)
		return;
	if (u->ring.ring_fd >= 0)
		io_uring_queue_exit(&u->ring);
	if (u->bufs && u->bufs != MAP_FAILED)
		munmap(u->bufs, u->bufs_len);
	if (u->br && u->br != MAP_FAILED)
		munmap(u->br, u->br_len);
	free(u->spare.v);
	free(u->ring_bids);
	free(u);
	w->engine = NULL;
}

static int uring_init(struct dp_worker *w, char *err, size_t errlen)
{
	struct dp_uring *u;
	int r;

	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->ring.ring_fd = -1;
	w->engine = u;
	u->dgram_named.msg_namelen = DP_DGRAM_NAME;
	u->dgram_named.msg_controllen = DP_DGRAM_CTL;
	r = dp_uring_open(&u->ring, err, errlen);
	if (r) {
		u->ring.ring_fd = -1;
		goto out_fini;
	}
	r = bufring_setup(w, err, errlen);
	if (r)
		goto out_fini;
	w->bufs = u->bufs;
	/* Saves an fget/fput per io_uring_enter; fails harmlessly on old kernels. */
	io_uring_register_ring_fd(&u->ring);
	r = dp_uring_seal(&u->ring, err, errlen);
	if (r)
		goto out_fini;
	arm_wake(w);
	return 0;
out_fini:
	uring_fini(w);
	return r;
}

static void uring_accept(struct dp_worker *w, struct dp_wlistener *wl, bool multishot)
{
	struct io_uring_sqe *sqe = get_sqe(w);

	/* Peer addresses are fetched with getpeername only when the algorithm needs them. */
	if (multishot)
		io_uring_prep_multishot_accept(sqe, wl->fd, NULL, NULL,
					       SOCK_NONBLOCK | SOCK_CLOEXEC);
	else
		io_uring_prep_accept(sqe, wl->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, dp_tag(DP_OP_ACCEPT, wl->gen, wl->idx));
}

static void uring_accept_cancel(struct dp_worker *w, struct dp_wlistener *wl)
{
	struct io_uring_sqe *sqe = get_sqe(w);

	io_uring_prep_cancel64(sqe, dp_tag(DP_OP_ACCEPT, wl->gen, wl->idx), 0);
	/* Its own completion tells nothing the accept's final CQE does not. */
	io_uring_sqe_set_data64(sqe, dp_tag(DP_OP_CANCEL, 0, UINT32_MAX));
}

static void uring_connect(struct dp_worker *w, struct dp_conn *c, const struct lb_addr *to,
			  unsigned timeout_ms)
{
	struct io_uring_sqe *sqe, *tsqe;

	/* Both SQEs of a link must go in one submission. */
	sq_reserve(w, 2);
	sqe = io_uring_get_sqe(&U(w)->ring);
	tsqe = io_uring_get_sqe(&U(w)->ring);
	c->cts.tv_sec = timeout_ms / 1000;
	c->cts.tv_nsec = (long long)(timeout_ms % 1000) * 1000000;
	io_uring_prep_connect(sqe, c->fd[1], (const struct sockaddr *)&to->ss, to->len);
	io_uring_sqe_set_data64(sqe, dp_tag(DP_OP_CONNECT, c->gen, c->slot));
	sqe->flags |= IOSQE_IO_LINK;
	io_uring_prep_link_timeout(tsqe, &c->cts, 0);
	io_uring_sqe_set_data64(tsqe, dp_tag(DP_OP_LTIMEOUT, c->gen, c->slot));
	c->inflight += 2;
}

static void uring_recv(struct dp_worker *w, struct dp_conn *c, int h)
{
	struct io_uring_sqe *sqe = get_sqe(w);
	struct dp_half *hf = &c->half[h];

	io_uring_prep_recv(sqe, c->fd[h == DP_C2B ? 0 : 1], NULL, w->buffer_size, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = DP_BGID;
	/* Right after a reply the socket is most likely empty: arm a poll, skip a futile try. */
	if (hf->flags & DP_H_POLLFIRST)
		sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
	io_uring_sqe_set_data64(sqe, dp_tag(DP_OP_RECV0 + h, c->gen, c->slot));
	c->inflight++;
	U(w)->recvs++;
}

/*
 * One send in flight per direction carries every queued buffer.  MSG_WAITALL makes io_uring
 * retry short sends itself, so a completion short of the total means an error.  The last send
 * before a FIN is corked (MSG_MORE): the shutdown or close that follows its completion tacks
 * the FIN onto the held segment instead of sending one of its own.
 */
static void uring_send(struct dp_worker *w, struct dp_conn *c, int h)
{
	struct io_uring_sqe *sqe = get_sqe(w);
	struct dp_half *hf = &c->half[h];
	int fd = c->fd[h == DP_C2B ? 1 : 0];
	int flags = MSG_WAITALL | MSG_NOSIGNAL | (hf->flags & DP_H_EOF ? MSG_MORE : 0);
	unsigned n = hf->count;

	for (unsigned i = 0; i < n; i++) {
		unsigned k = (hf->head + i) % DP_HALF_QMAX;
		unsigned off = i ? 0 : hf->off;

		hf->iov[i].iov_base = dp_chunk(w, c, U(w)->bufs, hf->bid[k]) + off;
		hf->iov[i].iov_len = hf->len[k] - off;
	}
	if (n == 1) {
		io_uring_prep_send(sqe, fd, hf->iov[0].iov_base, hf->iov[0].iov_len, flags);
	} else {
		memset(&hf->msg, 0, sizeof(hf->msg));
		hf->msg.msg_iov = hf->iov;
		hf->msg.msg_iovlen = n;
		io_uring_prep_sendmsg(sqe, fd, &hf->msg, flags);
	}
	if (hf->flags & DP_H_SENDPOLL)
		sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
	io_uring_sqe_set_data64(sqe, dp_tag(DP_OP_SEND0 + h, c->gen, c->slot));
	hf->nsend = n;
	c->inflight++;
}

static void uring_cancel(struct dp_worker *w, struct dp_conn *c)
{
	for (int i = 0; i < 2; i++) {
		struct io_uring_sqe *sqe;

		if (c->fd[i] < 0)
			continue;
		sqe = get_sqe(w);
		io_uring_prep_cancel_fd(sqe, c->fd[i], IORING_ASYNC_CANCEL_ALL);
		io_uring_sqe_set_data64(sqe, dp_tag(DP_OP_CANCEL, c->gen, c->slot));
		c->inflight++;
	}
}

/* The datagram layout udp.c reads is io_uring's own, which the epoll engine writes too. */
_Static_assert(sizeof(struct dp_dgram) == sizeof(struct io_uring_recvmsg_out) &&
		       offsetof(struct dp_dgram, namelen) ==
			       offsetof(struct io_uring_recvmsg_out, namelen) &&
		       offsetof(struct dp_dgram, controllen) ==
			       offsetof(struct io_uring_recvmsg_out, controllen) &&
		       offsetof(struct dp_dgram, payloadlen) ==
			       offsetof(struct io_uring_recvmsg_out, payloadlen) &&
		       offsetof(struct dp_dgram, flags) ==
			       offsetof(struct io_uring_recvmsg_out, flags),
	       "struct dp_dgram must be struct io_uring_recvmsg_out");

/*
 * A multishot recvmsg: each datagram lands in a buffer of the ring with its header (and, named,
 * its source address and IP_PKTINFO) in front, as udp.h's struct dp_dgram.  MSG_TRUNC makes
 * payloadlen the datagram's whole length, so one too long for a buffer is known as such.
 */
static void uring_dgram_recv(struct dp_worker *w, int fd, uint64_t tag, uint8_t *eng)
{
	struct io_uring_sqe *sqe = get_sqe(w);
	bool named = dp_tag_op(tag) == DP_OP_DRECVL;

	(void)eng;
	io_uring_prep_recvmsg_multishot(sqe, fd, named ? &U(w)->dgram_named : &U(w)->dgram_plain,
					MSG_TRUNC);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = DP_BGID;
	io_uring_sqe_set_data64(sqe, tag);
	U(w)->recvs++;
}

static void uring_dgram_cancel(struct dp_worker *w, int fd, uint64_t tag, uint8_t *eng)
{
	struct io_uring_sqe *sqe = get_sqe(w);

	(void)fd;
	(void)eng;
	io_uring_prep_cancel64(sqe, tag, 0);
	io_uring_sqe_set_data64(sqe, dp_tag(DP_OP_CANCEL, 0, UINT32_MAX));
}

/* To a backend: a plain send on the connected socket; to a client: a sendmsg with its address. */
static void uring_dgram_send(struct dp_worker *w, int fd, struct msghdr *msg, uint64_t tag)
{
	struct io_uring_sqe *sqe = get_sqe(w);

	if (!msg->msg_name && !msg->msg_controllen && msg->msg_iovlen == 1)
		io_uring_prep_send(sqe, fd, msg->msg_iov[0].iov_base, msg->msg_iov[0].iov_len,
				   MSG_NOSIGNAL);
	else
		io_uring_prep_sendmsg(sqe, fd, msg, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, tag);
}

static bool uring_bufs_left(const struct dp_worker *w)
{
	const struct dp_uring *u = w->engine;

	return u->in_ring || u->spare.n;
}

static void uring_buf_put(struct dp_worker *w, unsigned bid)
{
	dp_bufstack_push(&U(w)->spare, bid);
}

/*
 * Give back the pages of the buffers unused since the last trim: those that stayed at the
 * bottom of the spare stack, and those still in the ring that were there at the last trim
 * (the kernel takes ring buffers in order, so they were never picked).  Then let the ring
 * shrink back towards its minimum, one halving per quiet period.
 *
 * A buffer in the ring is the kernel's to fill whenever a receive runs, and a receive may run
 * in an io-wq thread of the kernel, beside us (a poll that fired spuriously too often sends it
 * there), taking a buffer before its completion says so.  So the ring is trimmed only while no
 * receive is outstanding: then nothing can take a ring buffer, and every one taken has been
 * dispatched and counted in ring_head, so [ring_head, ring_tail) is exactly what the ring still
 * holds, empty.  An idle worker gives all of it back; a busy one trims the stack only, and its
 * ring shrinks as it is used.
 */
static void uring_trim(struct dp_worker *w)
{
	struct dp_uring *u = U(w);

	dp_bufstack_trim(&u->spare, u->bufs, w->buffer_size);
	if (!u->recvs) {
		unsigned from = u->ring_head;

		if ((int)(u->ring_released - from) > 0)
			from = u->ring_released;
		for (unsigned pos = from; (int)(u->ring_mark - pos) > 0; pos++)
			dp_buf_release(u->bufs, w->buffer_size, u->ring_bids[pos & u->mask]);
		if ((int)(u->ring_mark - u->ring_released) > 0)
			u->ring_released = u->ring_mark;
	}
	u->ring_mark = u->ring_tail;
	/* Half the ring sat unused all period long: it may shrink, down to its minimum. */
	if (!u->starved_trim && u->ring_low >= u->target / 2 && u->target / 2 >= DP_RING_TARGET_MIN)
		u->target /= 2;
	u->starved_trim = false;
	u->ring_low = u->in_ring;
}

/* A completion copied out of the CQ. */
struct dp_cqe {
	uint64_t user_data;
	int32_t res;
	uint32_t flags;
};

#define DP_CQE_BATCH 256

static void dispatch(struct dp_worker *w, const struct dp_cqe *cqe)
{
	unsigned flags = 0;
	int bid = -1;

	if (dp_tag_op(cqe->user_data) == DP_OP_WAKE) {
		dp_worker_woken(w);
		arm_wake(w);
		return;
	}
	if (cqe->flags & IORING_CQE_F_MORE)
		flags |= DP_CF_MORE;
	if (cqe->flags & IORING_CQE_F_SOCK_NONEMPTY)
		flags |= DP_CF_NONEMPTY;
	switch (dp_tag_op(cqe->user_data)) {
	case DP_OP_RECV0:
	case DP_OP_RECV1:
		U(w)->recvs--;
		break;
	case DP_OP_DRECVL:
	case DP_OP_DRECVF:
		if (!(cqe->flags & IORING_CQE_F_MORE))
			U(w)->recvs--;
		break;
	default:
		break;
	}
	if (cqe->flags & IORING_CQE_F_BUFFER) {
		bid = (int)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
		if (--U(w)->in_ring < U(w)->ring_low)
			U(w)->ring_low = U(w)->in_ring;
		U(w)->ring_head++;
	} else if (cqe->res == -ENOBUFS) {
		U(w)->starved = U(w)->starved_trim = true;
	}
	dp_engine_complete(w, cqe->user_data, cqe->res, flags, bid);
}

static int uring_run(struct dp_worker *w, unsigned timeout_ms)
{
	struct dp_uring *u = U(w);
	struct __kernel_timespec ts = {
		.tv_sec = timeout_ms / 1000,
		.tv_nsec = (long long)(timeout_ms % 1000) * 1000000,
	};
	struct io_uring_cqe *cqe, *cqes[DP_CQE_BATCH];
	struct dp_cqe batch[DP_CQE_BATCH];
	unsigned n, total = 0;
	int r;

	ring_refill(w);
	r = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
	if (r < 0 && r != -ETIME && r != -EINTR && r != -EBUSY && r != -EAGAIN && r != -ENOMEM)
		return r;
	/* What completes now is stamped now, not when the wait began (up to a second ago). */
	w->now_ms = dp_now_ms();
	/*
	 * Copy each batch out and free its CQ entries before dispatching it: the handlers queue
	 * new requests, and a submit made while the CQ is full and completions overflow is
	 * refused.  peek_batch also flushes overflowed completions once the CQ is empty.  At most
	 * a CQ's worth per turn, so the timers still run under a flood.
	 */
	do {
		n = io_uring_peek_batch_cqe(&u->ring, cqes, DP_CQE_BATCH);
		for (unsigned i = 0; i < n; i++)
			batch[i] = (struct dp_cqe){ cqes[i]->user_data, cqes[i]->res,
						    cqes[i]->flags };
		io_uring_cq_advance(&u->ring, n);
		for (unsigned i = 0; i < n; i++)
			dispatch(w, &batch[i]);
		total += n;
	} while (n == DP_CQE_BATCH && total < DP_CQ_ENTRIES);
	return 0;
}

const struct dp_engine dp_engine_uring = {
	.name = "io_uring",
	.init = uring_init,
	.fini = uring_fini,
	.accept = uring_accept,
	.accept_cancel = uring_accept_cancel,
	.connect = uring_connect,
	.recv = uring_recv,
	.send = uring_send,
	.cancel = uring_cancel,
	.buf_put = uring_buf_put,
	.trim = uring_trim,
	.bufs_left = uring_bufs_left,
	.dgram_recv = uring_dgram_recv,
	.dgram_cancel = uring_dgram_cancel,
	.dgram_send = uring_dgram_send,
	.run = uring_run,
};

/*
 * Can this process use the io_uring engine?  Builds a ring the way a worker does, registers a
 * small buffer ring (5.19: it also implies multishot accept), checks every opcode the engine
 * issues and restricts the ring to them.  EPERM or ENOSYS here is the usual sign of a seccomp
 * profile or kernel.io_uring_disabled.
 */
int dp_uring_probe(char *err, size_t errlen)
{
	struct io_uring_buf_reg reg = { .ring_entries = 8, .bgid = DP_BGID };
	struct io_uring_probe *probe;
	struct io_uring ring;
	void *br;
	int r;

	r = dp_uring_open(&ring, err, errlen);
	if (r)
		return r;
	probe = io_uring_get_probe_ring(&ring);
	for (size_t i = 0; probe && i < sizeof(dp_uring_sqe_ops); i++) {
		if (!io_uring_opcode_supported(probe, dp_uring_sqe_ops[i])) {
			snprintf(err, errlen, "io_uring lacks opcode %d on this kernel",
				 dp_uring_sqe_ops[i]);
			r = -EOPNOTSUPP;
		}
	}
	io_uring_free_probe(probe);
	br = mmap(NULL, 8 * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
		  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!r && br != MAP_FAILED) {
		reg.ring_addr = (unsigned long)br;
		r = io_uring_register_buf_ring(&ring, &reg, 0);
		if (r)
			snprintf(err, errlen, "io_uring provided-buffer rings unavailable: %s",
				 strerror(-r));
		else
			io_uring_unregister_buf_ring(&ring, DP_BGID);
	}
	if (!r)
		r = dp_uring_seal(&ring, err, errlen);
	if (br != MAP_FAILED)
		munmap(br, 8 * sizeof(struct io_uring_buf));
	io_uring_queue_exit(&ring);
	return r;
}
