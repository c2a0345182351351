/* snapshot.c - turn a validated config into the immutable snapshot the workers run from. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dataplane/binder.h"
#include "dataplane/dp.h"
#include "dataplane/handover.h"
#include "dataplane/snapshot.h"

/*
 * Every socket of a listener is created here, in the main thread, before the snapshot is
 * handed to any worker, so the workers only ever switch between snapshots that are known to
 * work.  An address that cannot be bound fails the whole build for a listener of the
 * configuration file (start-up and reload are all-or-nothing, as an operator expects), but
 * not for a managed one: that listener stays in the snapshot without sockets (desired, not
 * serving), the rest goes ahead, and the next build tries its address again.  One Service
 * whose port another process holds must not hold back every other Service of the node.
 */
void dp_lsocks_put(struct dp_lsocks *ls)
{
	if (!ls || atomic_fetch_sub(&ls->refs, 1) != 1)
		return;
	for (unsigned i = 0; i < ls->n; i++)
		if (ls->fds[i] >= 0)
			close(ls->fds[i]);
	free(ls);
}

/*
 * A port below 1024 that we may not bind (no CAP_NET_BIND_SERVICE: the chart's non-root
 * dataplane) is bound by the binder, if one is configured (binder.h).
 */
static int lsocks_from_binder(const struct lb_addr *a, enum lb_protocol proto, unsigned n,
			      const char *binder, bool overlap, struct dp_lsocks **ret)
{
	int *fds = calloc(n, sizeof(*fds));
	char err[256];
	int r = fds ? dp_binder_request(binder, a, proto, n, overlap, fds, err, sizeof(err))
		    : -ENOMEM;

	if (r == -ENOMEM && !fds)
		snprintf(err, sizeof(err), "out of memory");
	if (r)
		log_warn("%s", err); /* the detail the caller's errno cannot carry */
	else
		r = dp_lsocks_adopt(a, proto, fds, n, ret);
	free(fds);
	return r;
}

/*
 * With reuseport_overlap (--reuseport-overlap, in its window: an upgrade whose two processes
 * cannot pass sockets) an address in use is joined rather than refused: the bind below succeeds
 * only into a SO_REUSEPORT group whose sockets have our uid (meant: the predecessor's; any
 * process of our uid qualifies, hence the window) and fails with EADDRINUSE otherwise.
 */
static int lsocks_new(const struct lb_addr *a, enum lb_protocol proto, unsigned n,
		      const struct lb_config *conf, struct dp_lsocks **ret)
{
	struct dp_lsocks *ls;
	int r = dp_address_free(a, proto);

	if (r == -EACCES && conf->binder_socket[0] && lb_addr_port(a) < 1024)
		return lsocks_from_binder(a, proto, n, conf->binder_socket,
					  conf->reuseport_overlap, ret);
	if (r == -EADDRINUSE && conf->reuseport_overlap)
		r = 0;
	if (r)
		return r;

	ls = calloc(1, sizeof(*ls) + n * sizeof(int));
	if (!ls)
		return -ENOMEM;
	atomic_init(&ls->refs, 1);
	ls->addr = *a;
	ls->proto = proto;
	ls->n = n;
	for (unsigned i = 0; i < n; i++)
		ls->fds[i] = -1;
	for (unsigned i = 0; i < n && !r; i++)
		r = dp_listen_socket(a, proto, &ls->fds[i]);
	if (r) {
		dp_lsocks_put(ls);
		return r;
	}
	*ret = ls;
	return 0;
}

int dp_lsocks_adopt(const struct lb_addr *a, enum lb_protocol proto, const int *fds, unsigned n,
		    struct dp_lsocks **ret)
{
	struct dp_lsocks *ls = calloc(1, sizeof(*ls) + n * sizeof(int));

	if (!ls) {
		for (unsigned i = 0; i < n; i++)
			close(fds[i]);
		return -ENOMEM;
	}
	atomic_init(&ls->refs, 1);
	ls->addr = *a;
	ls->proto = proto;
	ls->n = n;
	memcpy(ls->fds, fds, n * sizeof(int));
	*ret = ls;
	return 0;
}

void dp_lsocks_pool_clear(struct dp_lsocks_pool *pool)
{
	for (unsigned i = 0; i < pool->n; i++)
		dp_lsocks_put(pool->v[i]);
	free(pool->v);
	pool->v = NULL;
	pool->n = 0;
}

/*
 * The sockets taken over for this address (or NULL), with fresh members of their SO_REUSEPORT
 * group added until every worker has one: the old process may have had fewer workers.  One
 * that cannot be added leaves a worker without a socket there, which is no failure: the
 * others accept.  None is ever dropped for being one too many, since each may hold queued
 * connections; the workers share them out (worker.c).  No dp_address_free() check: the group is
 * ours now.
 */
static int pool_take(struct dp_lsocks_pool *pool, const struct lb_addr *a, enum lb_protocol proto,
		     unsigned n_workers, struct dp_lsocks **ret)
{
	for (unsigned i = 0; pool && i < pool->n; i++) {
		struct dp_lsocks *ls = pool->v[i];

		if (ls->proto != proto || !lb_addr_equal(&ls->addr, a))
			continue;
		if (ls->n < n_workers && atomic_load(&ls->refs) == 1) {
			struct dp_lsocks *grown = realloc(ls, sizeof(*ls) + n_workers * sizeof(int));

			if (!grown)
				return -ENOMEM; /* the pool still holds (and frees) the old one */
			pool->v[i] = ls = grown;
			while (ls->n < n_workers && !dp_listen_socket(a, proto, &ls->fds[ls->n]))
				ls->n++;
		}
		atomic_fetch_add(&ls->refs, 1);
		*ret = ls;
		return 0;
	}
	*ret = NULL;
	return 0;
}

void dp_bstate_put(struct dp_bstate *b)
{
	if (b && atomic_fetch_sub(&b->refs, 1) == 1)
		free(b);
}

static void lstate_put(struct dp_lstate *s)
{
	if (s && atomic_fetch_sub(&s->refs, 1) == 1) {
		free(s->udp);
		free(s);
	}
}

/* A udp listener's per-worker counters, made once (they stay if it turns tcp and back). */
static int lstate_udp(struct dp_lstate *s, unsigned n_workers)
{
	if (s->udp)
		return 0;
	s->udp = aligned_alloc(_Alignof(struct dp_ustats), n_workers * sizeof(*s->udp));
	if (!s->udp)
		return -ENOMEM;
	memset(s->udp, 0, n_workers * sizeof(*s->udp));
	s->n_udp = n_workers;
	return 0;
}

/* The listeners of the old snapshot by name (counters) and by protocol and address (sockets). */
struct old_index {
	const struct dp_snapshot *s;
	struct lb_index names;
	struct lb_index addrs[2]; /* tcp, udp */
};

static int old_index_init(struct old_index *x, const struct dp_snapshot *old)
{
	const struct lb_listener_conf *ls = old && old->n_listeners ? old->conf->listeners : NULL;

	memset(x, 0, sizeof(*x));
	x->s = old;
	if (!ls)
		return 0;
	/* Listener i of a snapshot is listener i of its configuration. */
	if (lb_index_init(&x->names, ls[0].name, sizeof(*ls), old->n_listeners,
			  lb_index_str_hash, lb_index_str_equal) ||
	    lb_addr_index_init(&x->addrs[0], &ls[0].listen, sizeof(*ls), old->n_listeners) ||
	    lb_addr_index_init(&x->addrs[1], &ls[0].listen, sizeof(*ls), old->n_listeners))
		return -ENOMEM;
	for (unsigned i = 0; i < old->n_listeners; i++) {
		lb_index_add(&x->names, i);
		lb_index_add(&x->addrs[ls[i].protocol == LB_PROTO_UDP], i);
	}
	return 0;
}

static void old_index_free(struct old_index *x)
{
	lb_index_free(&x->names);
	lb_index_free(&x->addrs[0]);
	lb_index_free(&x->addrs[1]);
}

static const struct dp_slistener *find_by_name(const struct old_index *x, const char *name)
{
	long i = lb_index_find(&x->names, name);

	return i >= 0 ? &x->s->listeners[i] : NULL;
}

static struct dp_lsocks *find_socks(const struct old_index *x, const struct lb_listener_conf *lc)
{
	long i = lb_index_find(&x->addrs[lc->protocol == LB_PROTO_UDP], &lc->listen);

	return i >= 0 ? x->s->listeners[i].socks : NULL;
}

static struct dp_bstate *find_bstate(const struct dp_slistener *old,
				     const struct lb_index *x, const struct lb_addr *a)
{
	long i = old ? lb_index_find(x, a) : -1; /* no old listener: x is empty */

	return i >= 0 ? old->backends[i].st : NULL;
}

static int build_backends(struct dp_slistener *sl, const struct dp_slistener *old)
{
	const struct lb_listener_conf *lc = sl->conf;
	struct lb_index x = { 0 };
	int r = -ENOMEM;

	if (!lc->n_backends)
		return 0; /* a managed listener with nothing to send to */
	sl->backends = calloc(lc->n_backends, sizeof(*sl->backends));
	if (!sl->backends)
		return -ENOMEM;
	if (old && old->n_backends &&
	    lb_addr_index_init(&x, &old->backends[0].addr, sizeof(*old->backends),
			       old->n_backends))
		return -ENOMEM;
	for (unsigned i = 0; old && i < old->n_backends; i++)
		lb_index_add(&x, i);
	for (size_t j = 0; j < lc->n_backends; j++) {
		struct dp_backend *b = &sl->backends[j];
		struct dp_bstate *st = find_bstate(old, &x, &lc->backends[j].addr);

		if (st) {
			atomic_fetch_add(&st->refs, 1);
		} else {
			st = calloc(1, sizeof(*st));
			if (!st)
				goto out;
			dp_bstate_init(st);
			dp_health_init(&st->check, true);
		}
		b->st = st;
		b->addr = lc->backends[j].addr;
		b->weight = lc->backends[j].weight;
		snprintf(b->name, sizeof(b->name), "%s", lc->backends[j].addr_str);
		sl->n_backends++;
	}
	r = 0;
out:
	lb_index_free(&x);
	return r;
}

static int build_listener(struct dp_slistener *sl, const struct lb_listener_conf *lc,
			  const struct old_index *old, struct dp_lsocks_pool *pool,
			  unsigned n_workers, const struct lb_config *conf, char *err,
			  size_t errlen)
{
	const struct dp_slistener *prev = find_by_name(old, lc->name);
	struct dp_lsocks *socks = find_socks(old, lc);
	int r;

	sl->conf = lc;
	if (socks) {
		atomic_fetch_add(&socks->refs, 1);
	} else if (pool_take(pool, &lc->listen, lc->protocol, n_workers, &socks)) {
		goto out_nomem;
	} else if (!socks) {
		r = lsocks_new(&lc->listen, lc->protocol, n_workers, conf, &socks);
		if (r == -ENOMEM)
			goto out_nomem;
		if (r && !lc->managed) {
			snprintf(err, errlen, "listener %s: cannot listen on %s: %s", lc->name,
				 lc->listen_str, strerror(-r));
			return r;
		}
		sl->bind_err = r; /* 0, or why a managed listener is left without sockets */
	}
	sl->socks = socks;
	if (prev) {
		sl->st = prev->st;
		atomic_fetch_add(&sl->st->refs, 1);
	} else {
		sl->st = calloc(1, sizeof(*sl->st));
		if (!sl->st)
			goto out_nomem;
		atomic_init(&sl->st->refs, 1);
	}
	if (lc->protocol == LB_PROTO_UDP && lstate_udp(sl->st, n_workers))
		goto out_nomem;
	if (build_backends(sl, prev))
		goto out_nomem;
	return 0;
out_nomem:
	snprintf(err, errlen, "out of memory");
	return -ENOMEM;
}

static void snapshot_free(struct dp_snapshot *s)
{
	for (unsigned i = 0; i < s->n_listeners; i++) {
		struct dp_slistener *sl = &s->listeners[i];

		for (unsigned j = 0; j < sl->n_backends; j++)
			dp_bstate_put(sl->backends[j].st);
		free(sl->backends);
		lstate_put(sl->st);
		dp_lsocks_put(sl->socks);
	}
	free(s->listeners);
	lb_config_free(s->conf);
	free(s);
}

/*
 * Takes ownership of conf (also on failure).  Sockets, listener and backend state are shared
 * with `old` where the address (sockets), listener name (counters) or listener name and
 * backend address (health) are unchanged, so a reload neither rebinds nor forgets health.
 * An address `old` does not have takes the sockets of `pool` for it, if any (a takeover),
 * before binding new ones.
 */
int dp_snapshot_build(struct lb_config *conf, const struct dp_snapshot *old,
		      struct dp_lsocks_pool *pool, unsigned n_workers, uint64_t generation,
		      struct dp_snapshot **ret, char *err, size_t errlen)
{
	struct old_index x = { 0 };
	struct dp_snapshot *s;
	int r = -ENOMEM;

	s = calloc(1, sizeof(*s));
	if (!s || old_index_init(&x, old)) {
		free(s);
		old_index_free(&x);
		lb_config_free(conf);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	atomic_init(&s->refs, 1);
	s->conf = conf;
	s->generation = generation;
	s->n_workers = n_workers;
	s->listeners = calloc(conf->n_listeners, sizeof(*s->listeners));
	if (!s->listeners) {
		snprintf(err, errlen, "out of memory");
		goto out_free;
	}
	for (size_t i = 0; i < conf->n_listeners; i++) {
		r = build_listener(&s->listeners[i], &conf->listeners[i], &x,
				   pool, n_workers, conf, err, errlen);
		s->n_listeners++;
		if (r)
			goto out_free;
	}
	old_index_free(&x);
	*ret = s;
	return 0;
out_free:
	old_index_free(&x);
	snapshot_free(s);
	return r;
}

atomic_uint_fast64_t dp_generation_published;

/*
 * Called by the main thread just before handing s to the workers: the backends of s are
 * stamped with its generation first, so a worker that sees the new published generation
 * also sees every backend of s as current; anything stamped older has been removed.
 */
void dp_snapshot_publish(struct dp_snapshot *s)
{
	for (unsigned i = 0; i < s->n_listeners; i++)
		for (unsigned j = 0; j < s->listeners[i].n_backends; j++)
			atomic_store(&s->listeners[i].backends[j].st->generation, s->generation);
	atomic_store(&dp_generation_published, s->generation);
}

void dp_snapshot_get(struct dp_snapshot *s)
{
	atomic_fetch_add(&s->refs, 1);
}

void dp_snapshot_put(struct dp_snapshot *s)
{
	if (s && atomic_fetch_sub(&s->refs, 1) == 1)
		snapshot_free(s);
}
