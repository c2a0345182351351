/* engine.c - completion dispatch shared by the io_uring and epoll engines. */
#include <unistd.h>

#include "dataplane/conn.h"
#include "dataplane/engine.h"
#include "dataplane/hcheck.h"
#include "dataplane/udp.h"
#include "dataplane/worker.h"

static void complete_accept(struct dp_worker *w, uint64_t tag, int res, unsigned flags)
{
	uint32_t slot = dp_tag_slot(tag);
	struct dp_wlistener *wl = slot < w->n_wls ? w->wls[slot] : NULL;

	if (!wl || wl->gen != dp_tag_gen(tag)) {
		/* A listener freed before this completion would be our bug; the fd must not leak. */
		if (res >= 0)
			close(res);
		DP_STAT_INC(w->stats.stale_cqes);
		return;
	}
	/* Ended: nothing to cancel if accepting this one reaches max_connections. */
	if (!(flags & DP_CF_MORE))
		wl->flags &= ~DP_WL_ARMED;
	if (res >= 0)
		dp_worker_accept(w, wl, res);
	if (!(flags & DP_CF_MORE))
		dp_worker_accept_ended(w, wl, res < 0 ? res : 0);
}

/* A udp listener socket's datagram, or the end of its receive. */
static void complete_dgram(struct dp_worker *w, uint64_t tag, int res, unsigned flags, int bid)
{
	uint32_t slot = dp_tag_slot(tag);
	struct dp_wlistener *wl = slot < w->n_wls ? w->wls[slot] : NULL;

	if (!wl || wl->gen != dp_tag_gen(tag)) {
		if (bid >= 0)
			w->eng->buf_put(w, (unsigned)bid);
		DP_STAT_INC(w->stats.stale_cqes);
		return;
	}
	if (!(flags & DP_CF_MORE))
		wl->flags &= ~DP_WL_ARMED;
	if (bid >= 0) {
		/* Evicting a flow for this one must not free wl under us: see wl.h. */
		wl->users++;
		dp_udp_client_dgram(w, wl, res, bid);
		wl->users--; /* the end of the receive, below, frees a stopped wl */
	}
	if (!(flags & DP_CF_MORE))
		dp_worker_dgram_ended(w, wl, res < 0 ? res : 0);
}

void dp_engine_complete(struct dp_worker *w, uint64_t tag, int res, unsigned flags, int bid)
{
	enum dp_op op = dp_tag_op(tag);
	struct dp_conn *c;

	switch (op) {
	case DP_OP_ACCEPT:
		complete_accept(w, tag, res, flags);
		return;
	case DP_OP_DRECVL:
		complete_dgram(w, tag, res, flags, bid);
		return;
	case DP_OP_DRECVF:
		dp_udp_flow_dgram(w, dp_tag_slot(tag), dp_tag_gen(tag), res, bid, flags);
		return;
	case DP_OP_DSEND:
		dp_udp_sent(w, dp_tag_slot(tag), res);
		return;
	default:
		break;
	}
	if (op == DP_OP_CANCEL && dp_tag_slot(tag) == UINT32_MAX)
		return; /* a listener's cancel: its accept's own end says everything */
	c = dp_conn_get(w, dp_tag_slot(tag), dp_tag_gen(tag));
	if (!c) {
		/* Cannot happen while inflight is counted right; if it does, lose no buffer. */
		if (bid >= 0)
			w->eng->buf_put(w, bid);
		DP_STAT_INC(w->stats.stale_cqes);
		return;
	}
	c->inflight--;
	switch (op) {
	case DP_OP_CONNECT:
		/* Probes end in hcheck.c: the connection code does not call back into it. */
		if (c->kind == DP_CONN_CHECK)
			dp_hcheck_done(w, c, res);
		else
			dp_conn_connected(w, c, res);
		break;
	case DP_OP_RECV0:
	case DP_OP_RECV1:
		dp_conn_received(w, c, op - DP_OP_RECV0, res, bid, flags & DP_CF_NONEMPTY);
		break;
	case DP_OP_SEND0:
	case DP_OP_SEND1:
		dp_conn_sent(w, c, op - DP_OP_SEND0, res);
		break;
	default: /* link timeout, cancel: only the count matters */
		break;
	}
	dp_conn_put(w, c);
}
