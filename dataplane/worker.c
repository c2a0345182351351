/* worker.c - one worker thread: its listeners, balancers, timers and drain, around its engine. */
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "dataplane/conn.h"
#include "dataplane/dp.h"
#include "dataplane/hcheck.h"
#include "dataplane/lset.h"
#include "dataplane/snapshot.h"
#include "dataplane/udp.h"
#include "dataplane/wl.h"
#include "dataplane/worker.h"

/*
 * The loop: take the time once, run the timers (idle connections, paused listeners, health
 * checks, the drain deadline), then let the engine submit everything queued and sleep until
 * the next completion or the nearest timer.  Nothing here blocks, and the main thread talks to
 * the worker only through w->next / w->drain and the eventfd read kept armed in the ring.
 */

#define DP_ACCEPT_RETRY_MS 100
#define DP_MAX_WAIT_MS 1000

/*
 * Buffer exhaustion (see docs/architecture.md, "Buffers"): DP_NOBUF_GRACE_MS after the pool
 * ran dry, and for as long as it has not recovered, the connections whose peer has read
 * nothing for DP_STALL_MS are closed to give their buffers back, scanning at most every
 * DP_EVICT_EVERY_MS.  Peers that read are never touched.
 */
#define DP_NOBUF_GRACE_MS 200
#define DP_STALL_MS 2000
#define DP_EVICT_EVERY_MS 250
#define DP_EVICT_LOG_EVERY_MS 10000

/*
 * Every DP_TRIM_EVERY_MS the engine gives back the memory of the receive buffers nobody used
 * since the last time (bufstack.h): after a burst, resident memory falls back within two
 * periods of the load ending.
 */
#define DP_TRIM_EVERY_MS 5000

/* --- balancer sets ------------------------------------------------------------------ */

/* A backend's identity for maglev: its address and port, so reordering the list moves nothing. */
static uint64_t backend_id(const struct lb_addr *a)
{
	const struct sockaddr *sa = (const struct sockaddr *)&a->ss;
	in_port_t port = sa->sa_family == AF_INET6 ? ((const struct sockaddr_in6 *)sa)->sin6_port
						   : ((const struct sockaddr_in *)sa)->sin_port;

	return dp_hash64(lb_addr_hash_ip(sa) ^ port);
}

static struct dp_lset *lset_new(struct dp_worker *w, struct dp_snapshot *s,
				const struct dp_slistener *sl)
{
	struct dp_lb_spec *specs;
	struct dp_lset *set;
	int r;

	set = calloc(1, sizeof(*set));
	specs = sl->n_backends ? calloc(sl->n_backends, sizeof(*specs)) : NULL;
	if (!set || (sl->n_backends && !specs))
		goto out_free; /* no backends is no specs: a balancer whose every pick fails */
	for (unsigned i = 0; i < sl->n_backends; i++) {
		specs[i].weight = sl->backends[i].weight;
		specs[i].id = backend_id(&sl->backends[i].addr);
		specs[i].load = &sl->backends[i].st->active;
	}
	w->rng = dp_hash64(w->rng + 0x9e3779b97f4a7c15ull);
	r = dp_lb_init(&set->lb, sl->conf->algorithm, specs, sl->n_backends, w->rng);
	if (r)
		goto out_free;
	free(specs);
	set->refs = 1;
	set->snap = s;
	dp_snapshot_get(s);
	set->sl = sl;
	dp_list_init(&set->idle);
	dp_list_add_tail(&w->lsets, &set->link);
	return set;
out_free:
	free(specs);
	free(set);
	return NULL;
}

/*
 * A set replaced by a reload or apply takes no new connections.  Its connections to backends
 * that are still configured live on; those to removed backends (or of a removed listener) get
 * drain_timeout_ms to finish and are then closed.
 */
static void lset_retire(struct dp_worker *w, struct dp_lset *set, unsigned drain_ms)
{
	if (!set || set->retired)
		return;
	set->retired = true;
	set->sweep_ms = w->now_ms + drain_ms;
}

static void lset_sweep(struct dp_worker *w, struct dp_lset *set, uint64_t *next_ms)
{
	uint64_t current = atomic_load(&dp_generation_published);
	struct dp_list *pos, *tmp;

	if (w->now_ms < set->sweep_ms) {
		if (set->sweep_ms < *next_ms)
			*next_ms = set->sweep_ms;
		return;
	}
	dp_list_for_each(pos, tmp, &set->idle) {
		struct dp_conn *c = dp_container_of(pos, struct dp_conn, idle);

		if (c->bidx >= 0 &&
		    atomic_load(&set->sl->backends[c->bidx].st->generation) >= current)
			continue;
		log_debug("conn %u: backend removed and drain time over, closing", c->slot);
		dp_conn_abort(w, c);
		dp_conn_put(w, c);
	}
	/* A backend removed by a snapshot not yet published here is caught on a later pass. */
	set->sweep_ms = w->now_ms + DP_MAX_WAIT_MS;
}

/* --- listeners ---------------------------------------------------------------------- */

/*
 * A multishot accept takes a socket's whole backlog at once, so once the headroom under
 * max_connections is smaller than every worker's backlog together, accept one connection at
 * a time: the clients past the limit then wait in the backlog instead of being accepted and
 * closed.  (With so many workers that their backlogs add up to max_connections, every
 * accept is single-shot: one more SQE per connection, for a limit that holds.)
 */
static bool near_limit(const struct dp_wlistener *wl, unsigned active)
{
	uint64_t room = (uint64_t)wl->socks->n * DP_LISTEN_BACKLOG; /* one socket per worker */

	return active + room >= wl->set->sl->conf->max_connections;
}

static void wl_arm(struct dp_worker *w, struct dp_wlistener *wl)
{
	unsigned active = (unsigned)atomic_load(&wl->set->sl->st->active);

	wl->flags &= ~(DP_WL_PAUSED | DP_WL_RESHOT);
	if (wl->udp) {
		dp_udp_listen(w, wl);
		return;
	}
	wl->flags |= DP_WL_ARMED;
	w->eng->accept(w, wl, !near_limit(wl, active));
}

/* Stop the accept, or the datagram receive; its last completion comes as usual. */
static void wl_cancel(struct dp_worker *w, struct dp_wlistener *wl)
{
	if (wl->udp)
		dp_udp_listen_cancel(w, wl);
	else
		w->eng->accept_cancel(w, wl);
}

static void wl_stop(struct dp_worker *w, struct dp_wlistener *wl)
{
	lset_retire(w, wl->set, w->snap->conf->drain_timeout_ms);
	wl->late = wl->set; /* our reference, until the accept's last completion */
	wl->set = NULL;
	if (!(wl->flags & DP_WL_ARMED)) {
		dp_wl_release(w, wl);
		return;
	}
	if (!(wl->flags & DP_WL_STOPPING)) {
		wl->flags |= DP_WL_STOPPING;
		wl_cancel(w, wl);
	}
}

static struct dp_wlistener *wl_add(struct dp_worker *w, const struct dp_slistener *sl,
				   unsigned sock, struct dp_lset *set)
{
	struct dp_wlistener *wl;
	unsigned idx;

	for (idx = 0; idx < w->n_wls && w->wls[idx]; idx++)
		;
	if (idx == w->n_wls) {
		struct dp_wlistener **wls = realloc(w->wls, (w->n_wls + 8) * sizeof(*wls));

		if (!wls)
			return NULL;
		memset(wls + w->n_wls, 0, 8 * sizeof(*wls));
		w->wls = wls;
		w->n_wls += 8;
	}
	wl = calloc(1, sizeof(*wl));
	if (!wl)
		return NULL;
	wl->gen = ++w->wl_gen & 0xffffff; /* tells a reused idx from its predecessor */
	wl->idx = idx;
	wl->fd = sl->socks->fds[sock];
	wl->sock = sock;
	wl->socks = sl->socks;
	atomic_fetch_add(&sl->socks->refs, 1);
	wl->set = set;
	set->refs++;
	wl->udp = sl->conf->protocol == LB_PROTO_UDP;
	dp_list_init(&wl->flows);
	w->wls[idx] = wl;
	return wl;
}

static void pause_accept(struct dp_worker *w, struct dp_wlistener *wl)
{
	if (wl->flags & (DP_WL_PAUSED | DP_WL_STOPPING))
		return;
	wl->flags |= DP_WL_PAUSED;
	wl->resume_ms = w->now_ms + DP_ACCEPT_RETRY_MS;
	DP_STAT_INC(w->stats.accept_pauses);
	if (wl->flags & DP_WL_ARMED)
		wl_cancel(w, wl);
}

/*
 * A connection was accepted and counted (active open now).  Full: pause, the next clients
 * wait in the backlog.  Near the limit with a multishot still armed (ARMED is cleared before
 * a request's last completion is handled): cancel it once, and the re-arm goes single-shot.
 */
static void accepted(struct dp_worker *w, struct dp_wlistener *wl, unsigned active)
{
	if (active >= wl->set->sl->conf->max_connections) {
		pause_accept(w, wl);
		return;
	}
	if ((wl->flags & (DP_WL_ARMED | DP_WL_RESHOT | DP_WL_STOPPING)) == DP_WL_ARMED &&
	    near_limit(wl, active)) {
		wl->flags |= DP_WL_RESHOT;
		w->eng->accept_cancel(w, wl);
	}
}

/*
 * A client accepted on wl.  Admission is decided here, where the accept completes, so that
 * the connection (conn.c) gets only clients already counted and never calls back here.
 */
void dp_worker_accept(struct dp_worker *w, struct dp_wlistener *wl, int fd)
{
	/* A stopping listener's accept may still hand us clients it took: see dp_wlistener.late. */
	struct dp_lset *set = wl->set ? wl->set : wl->late;
	const struct dp_slistener *sl;
	unsigned active;

	if (!set) {
		close(fd);
		return;
	}
	sl = set->sl;
	active = (unsigned)atomic_fetch_add(&sl->st->active, 1);
	if (active >= sl->conf->max_connections) {
		/* Only when workers race for the last places: see wl_arm(). */
		atomic_fetch_sub(&sl->st->active, 1);
		atomic_fetch_add(&sl->st->refused, 1);
		DP_STAT_INC(w->stats.over_limit);
		close(fd);
		pause_accept(w, wl);
		return;
	}
	if (w->fd_episode.failures) {
		uint64_t lasted, n = lb_episode_end(&w->fd_episode, w->now_ms, &lasted);

		log_info("worker %u: accepting again after %llu failed accepts in %.1f s", w->id,
			 (unsigned long long)n, (double)lasted / 1000);
	}
	if (wl->set)
		accepted(w, wl, active + 1);
	dp_conn_accepted(w, set, fd);
}

/*
 * A listener's accept or datagram receive ended.  False when that settles it: the listener is
 * stopping (and freed once nothing uses its socket), or paused (resume_paused re-arms it).
 */
static bool wl_ended(struct dp_worker *w, struct dp_wlistener *wl)
{
	wl->flags &= ~DP_WL_ARMED;
	if ((wl->flags & DP_WL_STOPPING) || !wl->set) {
		dp_wl_release(w, wl);
		return false;
	}
	return !(wl->flags & DP_WL_PAUSED);
}

/* An error nothing explains: said, and tried again in a second. */
static void wl_failed(struct dp_worker *w, struct dp_wlistener *wl, const char *what, int err)
{
	log_err("worker %u: listener %s: %s failed: %s; retrying in 1 s", w->id,
		wl->set->sl->conf->name, what, strerror(-err));
	wl->flags |= DP_WL_PAUSED;
	wl->resume_ms = w->now_ms + 1000;
}

/* The multishot accept stopped: decide whether to re-arm, pause or give up. */
void dp_worker_accept_ended(struct dp_worker *w, struct dp_wlistener *wl, int err)
{
	if (!wl_ended(w, wl))
		return;
	switch (err) {
	case -EMFILE:
	case -ENFILE:
	case -ENOMEM:
	case -ENOBUFS:
		/* Once per episode, not per retry: it lasts until an accept succeeds again. */
		if (lb_episode_fail(&w->fd_episode, w->now_ms))
			log_warn("worker %u: accept failed: %s; pausing accepts for %d ms (raise "
				 "the file descriptor limit)",
				 w->id, strerror(-err), DP_ACCEPT_RETRY_MS);
		pause_accept(w, wl);
		return;
	case 0:
	case -EAGAIN: /* an accept sent to io-wq on the non-blocking socket: nothing was there */
	case -ECONNABORTED:
	case -EINTR:
	case -EPROTO:
	case -EPERM:
	case -ECANCELED: /* the CQ was full, not our cancel: that sets STOPPING or PAUSED */
		wl_arm(w, wl);
		return;
	default:
		pause_accept(w, wl);
		wl_failed(w, wl, "accept", err);
	}
}

/*
 * A udp listener's receive stopped: again at once, or on the next turn when the buffer ring
 * ran dry (it is refilled before the engine waits), or in a second after another error.
 */
void dp_worker_dgram_ended(struct dp_worker *w, struct dp_wlistener *wl, int err)
{
	if (!wl_ended(w, wl))
		return;
	switch (err) {
	case 0: /* a data completion ended the multishot: the CQ was full */
	case -EAGAIN:
	case -EINTR:
	case -ECANCELED: /* a cancel not ours (ours sets STOPPING or PAUSED) */
		wl_arm(w, wl);
		return;
	case -ENOBUFS: /* the ring ran dry: see DP_UDP_NOBUF_RETRY_MS */
	case -ENOMEM:
		wl->flags |= DP_WL_PAUSED;
		wl->resume_ms = w->now_ms + (w->eng->bufs_left(w) ? 0 : DP_UDP_NOBUF_RETRY_MS);
		return;
	default:
		wl_failed(w, wl, "receive", err);
	}
}

static void resume_paused(struct dp_worker *w, uint64_t *next_ms)
{
	for (unsigned i = 0; i < w->n_wls; i++) {
		struct dp_wlistener *wl = w->wls[i];
		const struct dp_slistener *sl;

		if (!wl || !(wl->flags & DP_WL_PAUSED) || (wl->flags & DP_WL_ARMED) || !wl->set)
			continue;
		sl = wl->set->sl;
		if (w->now_ms >= wl->resume_ms) {
			if (wl->udp ||
			    (unsigned)atomic_load(&sl->st->active) < sl->conf->max_connections)
				wl_arm(w, wl);
			else
				wl->resume_ms = w->now_ms + DP_ACCEPT_RETRY_MS;
		}
		if ((wl->flags & DP_WL_PAUSED) && wl->resume_ms < *next_ms)
			*next_ms = wl->resume_ms;
	}
}

/* --- snapshots and drain ----------------------------------------------------------- */

static struct dp_wlistener *wl_find(struct dp_worker *w, const struct dp_lsocks *socks,
				    unsigned sock)
{
	for (unsigned i = 0; i < w->n_wls; i++)
		if (w->wls[i] && w->wls[i]->set && w->wls[i]->socks == socks &&
		    w->wls[i]->sock == sock)
			return w->wls[i];
	return NULL;
}

/*
 * Our sockets of one listener: fds[id], fds[id + n_workers], ... (usually just one; more
 * after taking over from a process with more workers).  They share one balancer set.
 */
static void apply_listener(struct dp_worker *w, struct dp_snapshot *s,
			   const struct dp_slistener *sl)
{
	struct dp_lset *set = NULL;

	for (unsigned k = w->id; k < sl->socks->n; k += s->n_workers) {
		struct dp_wlistener *wl = wl_find(w, sl->socks, k);

		if (!wl && w->draining)
			continue; /* a draining worker opens nothing: its listeners are closing */
		if (!set && !(set = lset_new(w, s, sl))) {
			log_err("worker %u: listener %s: out of memory building its balancer", w->id,
				sl->conf->name);
			if (wl)
				wl->flags |= DP_WL_KEEP; /* on its old set rather than not at all */
			continue;
		}
		if (wl) {
			/* Each k comes once: wl holds an older set, whose put cannot free ours. */
			assert(wl->set != set);
			lset_retire(w, wl->set, s->conf->drain_timeout_ms);
			dp_lset_put(wl->set);
			wl->set = set;
			set->refs++;
		} else if ((wl = wl_add(w, sl, k, set))) {
			wl_arm(w, wl);
		} else {
			continue;
		}
		wl->flags |= DP_WL_KEEP;
	}
	dp_lset_put(set); /* lset_new's: the listeners hold theirs */
}

/*
 * Switch to a new snapshot.  Listeners whose sockets carry over keep accepting (only their
 * balancer changes); connections keep the balancer set they were opened with until they end.
 */
static void apply_snapshot(struct dp_worker *w, struct dp_snapshot *s)
{
	for (unsigned i = 0; i < w->n_wls; i++)
		if (w->wls[i])
			w->wls[i]->flags &= ~DP_WL_KEEP;
	for (unsigned i = 0; i < s->n_listeners; i++)
		if (s->listeners[i].socks) /* not bound: nothing to accept on */
			apply_listener(w, s, &s->listeners[i]);
	dp_snapshot_put(w->snap);
	w->snap = s;
	for (unsigned i = 0; i < w->n_wls; i++)
		if (w->wls[i] && w->wls[i]->set && !(w->wls[i]->flags & DP_WL_KEEP))
			wl_stop(w, w->wls[i]);
	if (w->id == 0)
		dp_hcheck_sync(w);
}

static void start_drain(struct dp_worker *w)
{
	w->draining = true;
	w->drain_deadline_ms = w->now_ms + w->snap->conf->drain_timeout_ms;
	for (unsigned i = 0; i < w->n_wls; i++)
		if (w->wls[i] && w->wls[i]->set)
			wl_stop(w, w->wls[i]);
	/* No verdict matters any more: a probe of a silent backend must not hold the exit. */
	while (!dp_list_empty(&w->checks)) {
		struct dp_conn *c = dp_list_first(&w->checks, struct dp_conn, idle);

		dp_conn_close(w, c);
		dp_conn_put(w, c);
	}
	if (w->n_conns)
		log_info("worker %u: draining %u connections (at most %u ms)", w->id, w->n_conns,
			 w->snap->conf->drain_timeout_ms);
}

void dp_worker_woken(struct dp_worker *w)
{
	struct dp_snapshot *s = atomic_exchange(&w->next, NULL);
	int drain = atomic_load(&w->drain);

	w->now_ms = dp_now_ms();
	if (s)
		apply_snapshot(w, s);
	if (drain && !w->draining)
		start_drain(w);
	if (drain == 2)
		w->drain_deadline_ms = w->now_ms;
}

void dp_worker_wake(struct dp_worker *w)
{
	uint64_t one = 1;

	if (write(w->efd, &one, sizeof(one)) < 0) {
		/* Only EAGAIN at a counter near 2^64: the worker is already due to wake. */
	}
}

static void close_all(struct dp_worker *w)
{
	struct dp_list *pos, *tmp;

	dp_list_for_each(pos, tmp, &w->lsets) {
		struct dp_lset *set = dp_container_of(pos, struct dp_lset, link);

		set->refs++;
		while (!dp_list_empty(&set->idle)) {
			struct dp_conn *c = dp_list_first(&set->idle, struct dp_conn, idle);

			dp_conn_abort(w, c); /* cut short: the peers must not read it as a clean end */
			dp_conn_put(w, c);
		}
		tmp = set->link.next;
		dp_lset_put(set);
	}
	for (unsigned i = 0; i < w->n_wls; i++)
		if (w->wls[i] && w->wls[i]->udp)
			dp_udp_close_flows(w, w->wls[i]);
}

/* The pool has been dry for a while: free the buffers held by peers that stopped reading. */
static void relieve_buffers(struct dp_worker *w, uint64_t *next_ms)
{
	uint64_t due = w->starved_since_ms + DP_NOBUF_GRACE_MS;
	unsigned n;

	if (due < w->evict_next_ms)
		due = w->evict_next_ms;
	if (w->now_ms < due) {
		if (due < *next_ms)
			*next_ms = due;
		return;
	}
	w->evict_next_ms = w->now_ms + DP_EVICT_EVERY_MS;
	if (w->evict_next_ms < *next_ms)
		*next_ms = w->evict_next_ms;
	n = dp_conn_evict_stalled(w, DP_STALL_MS);
	w->evict_unlogged += n;
	if (!w->evict_unlogged || w->now_ms < w->evict_logged_ms + DP_EVICT_LOG_EVERY_MS)
		return;
	log_warn("worker %u: receive buffers exhausted (%u of %u in use, %u receives waiting); "
		 "closed %u connections whose peers had not read for %d ms",
		 w->id, w->bufs_held, w->buffer_count, w->n_nobuf, w->evict_unlogged, DP_STALL_MS);
	w->evict_logged_ms = w->now_ms;
	w->evict_unlogged = 0;
}

/* Run every timer that is due; returns the time of the next one. */
static uint64_t run_timers(struct dp_worker *w)
{
	uint64_t next = w->now_ms + DP_MAX_WAIT_MS;
	struct dp_list *pos, *tmp;

	dp_list_for_each(pos, tmp, &w->lsets) {
		struct dp_lset *set = dp_container_of(pos, struct dp_lset, link);

		set->refs++; /* expiring its last connection must not free it under us */
		dp_conn_expire_idle(w, set, &next);
		if (set->retired && !dp_list_empty(&set->idle))
			lset_sweep(w, set, &next);
		tmp = set->link.next;
		dp_lset_put(set);
	}
	for (unsigned i = 0; i < w->n_wls; i++)
		if (w->wls[i] && w->wls[i]->udp)
			dp_udp_expire(w, w->wls[i], &next);
	dp_udp_rearm(w, &next);
	resume_paused(w, &next);
	if (w->now_ms >= w->trim_next_ms) {
		w->eng->trim(w);
		w->trim_next_ms = w->now_ms + DP_TRIM_EVERY_MS;
	}
	if (w->trim_next_ms < next)
		next = w->trim_next_ms;
	if (w->starved_since_ms)
		dp_conn_relieved(w);
	if (w->starved_since_ms)
		relieve_buffers(w, &next);
	if (w->id == 0 && !w->draining)
		dp_hcheck_run(w, &next);
	if (w->draining) {
		if (w->now_ms >= w->drain_deadline_ms && (w->n_conns || w->n_flows) &&
		    !w->drain_closed) {
			/* Once: what it closes may take a turn to go (cancels to complete). */
			w->drain_closed = true;
			log_warn("worker %u: drain timeout, closing %u connections and %u udp flows",
				 w->id, w->n_conns, w->n_flows);
			close_all(w);
		}
		/* Past the deadline only completions are awaited: they wake us, no need to poll. */
		if (w->drain_deadline_ms > w->now_ms && w->drain_deadline_ms < next)
			next = w->drain_deadline_ms;
	}
	return next;
}

static bool drained(const struct dp_worker *w)
{
	if (w->n_conns || w->n_checks || w->n_flows)
		return false;
	for (unsigned i = 0; i < w->n_wls; i++)
		if (w->wls[i])
			return false;
	return true;
}

static void *worker_main(void *arg)
{
	struct dp_worker *w = arg;
	char err[512] = "";
	int r;

	r = w->eng->init(w, err, sizeof(err));
	if (r) {
		log_err("worker %u: %s", w->id, err[0] ? err : strerror(-r));
		atomic_store(&w->init_result, r);
		goto out;
	}
	atomic_store(&w->init_result, 1);
	dp_worker_woken(w);
	for (;;) {
		uint64_t next;

		w->now_ms = dp_now_ms();
		next = run_timers(w);
		if (w->draining && drained(w))
			break;
		/* A held send must not wait for the next event: see dp_conn_release_held(). */
		if (!dp_list_empty(&w->held) || !dp_list_empty(&w->held_new))
			next = w->now_ms;
		r = w->eng->run(w, next > w->now_ms ? next - w->now_ms : 0);
		if (r < 0) {
			log_err("worker %u: %s engine failed: %s", w->id, w->eng->name,
				strerror(-r));
			break;
		}
		if (!dp_list_empty(&w->nobuf))
			dp_conn_retry_nobuf(w);
		dp_conn_release_held(w);
	}
	dp_hcheck_free(w);
	w->eng->fini(w);
	dp_conn_slab_free(w);
	dp_udp_free(w);
	free(w->wls);
	w->wls = NULL;
	dp_snapshot_put(w->snap);
	w->snap = NULL;
out:
	atomic_store(&w->stopped, true);
	return NULL;
}

int dp_worker_start(struct dp_worker *w)
{
	int r;

	dp_list_init(&w->lsets);
	dp_list_init(&w->nobuf);
	dp_list_init(&w->held);
	dp_list_init(&w->held_new);
	dp_list_init(&w->checks);
	w->rng = dp_hash64(w->id + 1);
	w->efd = eventfd(0, EFD_CLOEXEC);
	if (w->efd == -1)
		return -errno;
	r = pthread_create(&w->thread, NULL, worker_main, w);
	if (r) {
		close(w->efd);
		w->efd = -1;
		return -r;
	}
	return 0;
}
