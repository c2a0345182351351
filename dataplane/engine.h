/* engine.h - what every I/O engine shares: the completion tag codec and the dispatcher. */
#ifndef DP_ENGINE_H
#define DP_ENGINE_H

#include <stdint.h>

#include "dataplane/dp.h"

/*
 * A completion's tag: op:8 | gen:24 | slot:32.  For connection ops, slot and gen name the
 * connection slot and its generation, so a completion that arrives after the slot was freed
 * and reused is recognised and dropped; for accepts they name the worker's listener.
 */
enum dp_op {
	DP_OP_ACCEPT = 1,
	DP_OP_CONNECT,
	DP_OP_LTIMEOUT,
	DP_OP_RECV0, /* + half */
	DP_OP_RECV1,
	DP_OP_SEND0, /* + half */
	DP_OP_SEND1,
	DP_OP_CANCEL,
	DP_OP_WAKE,
	DP_OP_FD0, /* epoll: readiness of a connection's fd[0] / fd[1] */
	DP_OP_FD1,
	DP_OP_DRECVL, /* datagrams on a udp listener's socket: slot and gen of its wlistener */
	DP_OP_DRECVF, /* datagrams on a flow's socket: slot and gen of the flow */
	DP_OP_DSEND,  /* one datagram sent: slot is the buffer id */
};

_Static_assert(DP_OP_DSEND < 256, "op must fit in 8 bits");

static inline uint64_t dp_tag(enum dp_op op, uint32_t gen, uint32_t slot)
{
	return (uint64_t)op << 56 | (uint64_t)(gen & 0xffffff) << 32 | slot;
}

static inline enum dp_op dp_tag_op(uint64_t tag)
{
	return (enum dp_op)(tag >> 56);
}

static inline uint32_t dp_tag_gen(uint64_t tag)
{
	return (tag >> 32) & 0xffffff;
}

static inline uint32_t dp_tag_slot(uint64_t tag)
{
	return (uint32_t)tag;
}

enum {
	DP_CF_MORE = 1 << 0,     /* a multishot request stays armed */
	DP_CF_NONEMPTY = 1 << 1, /* a receive left more data in the socket */
};

/*
 * Deliver one completion to the listener or connection its tag names.  bid is the receive
 * buffer taken (or -1).  The wake-up tag is the engine's own business and never comes here.
 */
void dp_engine_complete(struct dp_worker *w, uint64_t tag, int res, unsigned flags, int bid);

/* The io_uring engine, when this kernel and seccomp profile allow it; else err says why. */
int dp_uring_probe(char *err, size_t errlen);

/*
 * A worker's ring is made in two steps: dp_uring_open creates it disabled, the engine registers
 * its buffer ring, and dp_uring_seal restricts it to the engine's opcodes and SQE flags
 * (IORING_REGISTER_RESTRICTIONS) and enables it.  Any other opcode completes with -EACCES.
 */
struct io_uring;
int dp_uring_open(struct io_uring *ring, char *err, size_t errlen);
int dp_uring_seal(struct io_uring *ring, char *err, size_t errlen);

#endif
