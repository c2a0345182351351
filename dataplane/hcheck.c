/* hcheck.c - active TCP health checks, driven from worker 0's ring like any other connect. */
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "dataplane/conn.h"
#include "dataplane/dp.h"
#include "dataplane/hcheck.h"
#include "dataplane/snapshot.h"

/*
 * A probe is a connection slot of kind DP_CONN_CHECK: a non-blocking connect with a linked
 * timeout, closed as soon as it completes.  One worker runs all probes so each backend is
 * checked once per interval whatever the worker count; the verdict is published in the
 * shared dp_bstate that every worker's balancer reads.
 */

struct dp_hc_target {
	struct dp_bstate *st; /* reference */
	struct lb_addr addr;
	struct lb_health_conf conf;
	char listener[LB_NAME_MAX];
	char backend[LB_ADDR_STRLEN];
	uint64_t due_ms;
	bool busy;
};

struct dp_hcheck {
	struct dp_hc_target *t;
	unsigned n;
	uint64_t next_ms; /* no target is due before this: the loop skips the scan */
};

/* The port of a (network byte order in the sockaddr). */
static void set_port(struct lb_addr *a, unsigned port)
{
	if (a->ss.ss_family == AF_INET6)
		((struct sockaddr_in6 *)&a->ss)->sin6_port = htons((uint16_t)port);
	else
		((struct sockaddr_in *)&a->ss)->sin_port = htons((uint16_t)port);
}

/*
 * A backend's target, in O(1): each backend state is listed at most once (its identity is the
 * listener and the address), and st->hc_idx is its index in the newest target list.  Targets
 * are rebuilt on every reload or apply, so a linear search would cost backends^2 per apply.
 */
static struct dp_hc_target *find(struct dp_hcheck *hc, const struct dp_bstate *st)
{
	if (hc && st->hc_idx < hc->n && hc->t[st->hc_idx].st == st)
		return &hc->t[st->hc_idx];
	return NULL;
}

static unsigned count_targets(const struct dp_snapshot *s)
{
	unsigned n = 0;

	for (unsigned i = 0; i < s->n_listeners; i++)
		if (s->listeners[i].conf->health.enabled)
			n += s->listeners[i].n_backends;
	return n;
}

/* A backend no longer checked must not stay down on a stale verdict. */
static void release_target(struct dp_hc_target *t)
{
	atomic_store(&t->st->check_up, true);
	dp_health_init(&t->st->check, true);
	dp_bstate_put(t->st);
}

/*
 * A new backend's first check comes at a random point of its interval (HAProxy's spread):
 * a start-up or an apply that adds a thousand backends must not fire a thousand probes at
 * once, every interval.  Backends start up, so nothing waits for that first verdict.
 */
static uint64_t first_due(struct dp_worker *w, const struct lb_health_conf *conf)
{
	w->rng = dp_hash64(w->rng + 0x9e3779b97f4a7c15ull);
	return w->now_ms + w->rng % conf->interval_ms;
}

/* Rebuild the target list from the worker's snapshot, keeping schedules of known backends. */
int dp_hcheck_sync(struct dp_worker *w)
{
	struct dp_hcheck *old = w->hc, *hc;
	const struct dp_snapshot *s = w->snap;
	unsigned n = count_targets(s);

	hc = calloc(1, sizeof(*hc));
	if (!hc || (n && !(hc->t = calloc(n, sizeof(*hc->t))))) {
		free(hc);
		log_err("health checks: out of memory; keeping the previous targets");
		return -ENOMEM;
	}
	for (unsigned i = 0; i < s->n_listeners; i++) {
		const struct dp_slistener *sl = &s->listeners[i];

		if (!sl->conf->health.enabled)
			continue;
		for (unsigned j = 0; j < sl->n_backends; j++) {
			struct dp_hc_target *t = &hc->t[hc->n++], *prev = find(old, sl->backends[j].st);

			assert(hc->n <= n); /* count_targets counted these backends: t has room */
			t->st = sl->backends[j].st;
			atomic_fetch_add(&t->st->refs, 1);
			t->addr = sl->backends[j].addr;
			t->conf = sl->conf->health;
			/* health_check.port: the backend's check port, not its traffic port. */
			if (t->conf.port)
				set_port(&t->addr, t->conf.port);
			snprintf(t->listener, sizeof(t->listener), "%s", sl->conf->name);
			snprintf(t->backend, sizeof(t->backend), "%s", sl->backends[j].name);
			t->due_ms = prev ? prev->due_ms : first_due(w, &t->conf);
			t->busy = prev ? prev->busy : false;
			t->st->hc_idx = hc->n - 1;
		}
	}
	for (unsigned i = 0; old && i < old->n; i++) {
		if (find(hc, old->t[i].st))
			dp_bstate_put(old->t[i].st);
		else
			release_target(&old->t[i]);
	}
	if (old)
		free(old->t);
	free(old);
	w->hc = hc;
	return 0;
}

static void report(struct dp_hc_target *t, bool ok, int res)
{
	/* A check that connects is as good as a proxied connect: it ends a passive time-out. */
	if (ok) {
		dp_bstate_report(t->st, true, 0, 0, 0);
		atomic_store(&t->st->down_until_ms, 0);
	}
	if (!dp_health_report(&t->st->check, &t->conf, ok))
		return;
	atomic_store(&t->st->check_up, t->st->check.up);
	if (ok)
		log_info("listener %s: backend %s is up (good health checks in a row: %u)",
			 t->listener, t->backend, t->conf.rise);
	else
		log_warn("listener %s: backend %s is down (failed health checks in a row: %u, last: %s)",
			 t->listener, t->backend, t->conf.fall, strerror(-res));
}

static void launch(struct dp_worker *w, struct dp_hc_target *t)
{
	struct dp_conn *c;
	int fd;

	t->due_ms = w->now_ms + t->conf.interval_ms;
	fd = socket(t->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		report(t, false, -errno);
		return;
	}
	c = dp_conn_alloc(w);
	if (!c) {
		close(fd);
		return;
	}
	c->kind = DP_CONN_CHECK;
	c->state = DP_CS_CONNECTING;
	c->fd[1] = fd;
	c->check = t->st;
	atomic_fetch_add(&t->st->refs, 1);
	dp_list_add_tail(&w->checks, &c->idle); /* probes use the idle link: drain closes them */
	w->n_checks++;
	t->busy = true;
	w->eng->connect(w, c, &t->addr, t->conf.timeout_ms);
}

void dp_hcheck_run(struct dp_worker *w, uint64_t *next_ms)
{
	struct dp_hcheck *hc = w->hc;
	uint64_t next = UINT64_MAX;

	if (!hc || !hc->n)
		return;
	if (w->now_ms < hc->next_ms) {
		if (hc->next_ms < *next_ms)
			*next_ms = hc->next_ms;
		return;
	}
	for (unsigned i = 0; i < hc->n; i++) {
		struct dp_hc_target *t = &hc->t[i];

		if (!t->busy && t->due_ms <= w->now_ms)
			launch(w, t);
		if (!t->busy && t->due_ms < next)
			next = t->due_ms;
	}
	/* A busy target is rescheduled when its probe ends (dp_hcheck_done). */
	hc->next_ms = next;
	if (next < *next_ms)
		*next_ms = next;
}

void dp_hcheck_done(struct dp_worker *w, struct dp_conn *c, int res)
{
	struct dp_hc_target *t = find(w->hc, c->check);

	if (c->state != DP_CS_CONNECTING)
		return;
	if (t) {
		t->busy = false;
		if (t->due_ms < w->hc->next_ms)
			w->hc->next_ms = t->due_ms;
		/* A link-timeout cancel reads as a timeout, which is what it was. */
		report(t, res == 0, res == -ECANCELED ? -ETIMEDOUT : res);
	}
	dp_conn_close(w, c);
}

void dp_hcheck_free(struct dp_worker *w)
{
	struct dp_hcheck *hc = w->hc;

	for (unsigned i = 0; hc && i < hc->n; i++)
		dp_bstate_put(hc->t[i].st);
	if (hc)
		free(hc->t);
	free(hc);
	w->hc = NULL;
}
