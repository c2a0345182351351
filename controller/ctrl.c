/*
 * ctrl.c - the controller: caches, the reconcile loop, the dataplane push, status and the Lease.
 *
 * One thread, one loop.  Four informers (LoadBalancers, Services, EndpointSlices or Endpoints,
 * Nodes) keep caches; any change marks the state dirty, and the loop reconciles once the
 * debounce says so (core/debounce.h): a lone change after 100 ms, a burst of events (a
 * rolling update) every 2 s while it lasts.  Reconcile is pure (core/reconcile.c): its answer
 * goes to the dataplane as one apply, only when it differs from the last one the dataplane
 * accepted.
 *
 * Never flush: nothing is applied until every cache has completed its first list, so a
 * restarting controller never sends an empty or partial set.  While the API server is away the
 * caches keep their last state and nothing changes in the dataplane; a restarted dataplane
 * (its socket closes) is reconnected within 100 ms and sent the whole state at once.
 *
 * Status: every node's controller writes its own entry of each LoadBalancer's status.nodes;
 * the replica holding the Lease writes the rest and the Events (core/lbstatus.c says how).
 */
#include "controller/ctrl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "common/log.h"
#include "controller/core/lbstatus.h"
#include "controller/core/reconcile.h"

#define CTRL_GROUP_PATH "/apis/layer4lb.io/v1alpha1"
#define CTRL_LEADER_MANAGER "layer4-lb-controller"
#define CTRL_WRITE_TIMEOUT_MS 15000
#define CTRL_LOOP_MAX_WAIT_MS 1000
#define CTRL_BIND_RETRY_MS 5000
#define CTRL_STATUS_RETRY_MS 2000     /* doubling while writes keep failing, up to: */
#define CTRL_STATUS_RETRY_MAX_MS 30000
#define CTRL_STATUS_WRITES_MAX 32   /* status writes and Events in flight */

static void now_rfc3339(char *buf, size_t len, bool micro)
{
	struct timeval tv;
	struct tm tm;
	char base[32];

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	if (micro)
		snprintf(buf, len, "%s.%06ldZ", base, (long)tv.tv_usec);
	else
		snprintf(buf, len, "%sZ", base);
}

/*
 * Reconciles are debounced (controller/core/debounce.h).  A status-only change (our own status
 * writes coming back by the watch, mostly) only asks for another look at status: it changes
 * nothing the dataplane is sent, so it neither waits for nor makes a burst.
 */
static void on_cache_change(void *arg, struct k8s_informer *inf, bool status_only)
{
	struct ctrl *c = arg;

	if (status_only)
		ctrl_debounce_followup(&c->debounce, k8s_now_ms());
	else
		ctrl_debounce_change(&c->debounce, k8s_now_ms());
}

/* Status needs another look (a round of writes ended, a failed one is due again). */
static void status_look(struct ctrl *c)
{
	ctrl_debounce_followup(&c->debounce, k8s_now_ms());
}

/* Reconcile at the next turn, without the debounce (a new dataplane, a resync). */
static void mark_urgent(struct ctrl *c)
{
	ctrl_debounce_urgent(&c->debounce);
}

static bool synced(const struct ctrl *c)
{
	for (int i = 0; i < CTRL_INF_COUNT; i++)
		if (!c->inf[i].synced)
			return false;
	return true;
}

/* --- status writes ------------------------------------------------------------------------ */

/*
 * A status write or an Event ended.  A reconcile that found writes in flight left its status
 * work for now (it would have written the same things again): do it once the last one ends.
 */
static void status_request_done(struct ctrl *c)
{
	if (--c->status_inflight == 0 && c->status_dirty) {
		c->status_dirty = false;
		status_look(c);
	}
}

/*
 * A status write or an Event reached the API server, or failed to.  Writes fail together
 * (an API server away, a permission missing): one warning per episode, not one per object.
 * Status writes and Events keep episodes of their own: RBAC may allow one and not the other.
 */
static void write_result(struct lb_episode *ep, const struct k8s_resp *resp, const char *what)
{
	uint64_t now = k8s_now_ms(), lasted, n;

	if (resp->status == 200 || resp->status == 201) {
		n = lb_episode_end(ep, now, &lasted);
		if (n)
			log_info("%s succeeds again, after %llu failures in %.1f s", what,
				 (unsigned long long)n, (double)lasted / 1000);
		return;
	}
	if (resp->status == 404)
		return; /* the object was deleted meanwhile: nothing to say */
	if (lb_episode_fail(ep, now))
		log_warn("%s failed: %s%ld %.200s (retrying with backoff; the recovery is logged)",
			 what, resp->status ? "HTTP " : "", resp->status,
			 resp->status ? resp->body : resp->error);
	else
		log_debug("%s failed again: %s%ld %.200s", what, resp->status ? "HTTP " : "",
			  resp->status, resp->status ? resp->body : resp->error);
}

static void write_done(struct ctrl *c, const struct k8s_resp *resp, uint64_t *ok)
{
	struct k8s_obj *o;
	char err[128];
	cJSON *obj;

	write_result(&c->status_episode, resp, "status write");
	if (resp->status == 200 || resp->status == 201) {
		(*ok)++;
		c->status_backoff_ms = 0;
		/* The reply is the object as now stored: take it into the cache at once, so the
		 * next reconcile does not write the same thing again before the watch says so. */
		obj = cJSON_ParseWithLength(resp->body, resp->body_len);
		if (obj && k8s_obj_from_json(K8S_KIND_LOADBALANCER, obj, &o, err, sizeof(err)) == 0) {
			k8s_store_put(&c->inf[CTRL_INF_LBS].store, o);
			/*
			 * The cache changed here, not by the watch, and this reply may be older
			 * than a watch event already taken (two writes of one round cross): look
			 * again once this round's writes end, so that the status converges
			 * without waiting for another change.  Rounds end: a round writes only
			 * what differs from the cache.
			 */
			c->status_dirty = true;
		}
		cJSON_Delete(obj);
	} else if (resp->status != 404) { /* deleted meanwhile: nothing to say */
		c->status_write_errors++;
		/* Try again after a pause (a conflict, 429, an API server restarting), longer
		 * each round that fails, as for lists and watches; a Retry-After if longer. */
		if (!c->status_retry_ms) {
			uint64_t d = c->status_backoff_ms ? c->status_backoff_ms * 2
							  : CTRL_STATUS_RETRY_MS;

			c->status_backoff_ms = d < CTRL_STATUS_RETRY_MAX_MS ? d
									 : CTRL_STATUS_RETRY_MAX_MS;
			d = c->status_backoff_ms;
			if ((uint64_t)resp->retry_after_s * 1000 > d)
				d = (uint64_t)resp->retry_after_s * 1000;
			c->status_retry_ms = k8s_now_ms() + d;
		}
	}
	status_request_done(c);
}

static void node_write_done(void *arg, const struct k8s_resp *resp)
{
	struct ctrl *c = arg;

	write_done(c, resp, &c->node_writes);
}

static void summary_write_done(void *arg, const struct k8s_resp *resp)
{
	struct ctrl *c = arg;

	write_done(c, resp, &c->summary_writes);
}

static void event_done(void *arg, const struct k8s_resp *resp)
{
	struct ctrl *c = arg;

	write_result(&c->event_episode, resp, "recording an Event");
	if (resp->status == 201 || resp->status == 200)
		c->events_sent++;
	status_request_done(c);
}

/*
 * At most CTRL_STATUS_WRITES_MAX writes at a time: a thousand LoadBalancers appearing at once
 * would otherwise start a thousand requests, each with its own buffers.  What is left is
 * written by the next round, which starts when the last write of this one ends (the replies
 * update the cache, so the next round finds only what is still to write).
 */
static bool status_full(struct ctrl *c)
{
	if (c->status_inflight < CTRL_STATUS_WRITES_MAX)
		return false;
	c->status_dirty = true;
	return true;
}

/* Server-side apply of part of a LoadBalancer's status, under a field manager. */
static void status_apply(struct ctrl *c, const struct k8s_obj *lb, const char *manager,
			 cJSON *status)
{
	char path[1024];
	cJSON *body = cJSON_CreateObject(), *md;
	char *text = NULL;
	bool leader = !strcmp(manager, CTRL_LEADER_MANAGER);
	struct k8s_req_opts o = { .method = "PATCH", .path = path,
				  .on_done = leader ? summary_write_done : node_write_done, .arg = c, .timeout_ms = CTRL_WRITE_TIMEOUT_MS,
				  .content_type = "application/apply-patch+yaml" };

	if (!body || !cJSON_AddStringToObject(body, "apiVersion", "layer4lb.io/v1alpha1") ||
	    !cJSON_AddStringToObject(body, "kind", "LoadBalancer") ||
	    !(md = cJSON_AddObjectToObject(body, "metadata")) ||
	    !cJSON_AddStringToObject(md, "name", lb->meta.name) ||
	    !cJSON_AddStringToObject(md, "namespace", lb->meta.ns))
		goto out;
	cJSON_AddItemToObject(body, "status", status);
	status = NULL;
	text = cJSON_PrintUnformatted(body);
	if (!text)
		goto out;
	snprintf(path, sizeof(path),
		 CTRL_GROUP_PATH "/namespaces/%s/loadbalancers/%s/status?fieldManager=%s&force=true",
		 lb->meta.ns, lb->meta.name, manager);
	o.body = text;
	if (k8s_req_start(c->kc, &o, NULL) == 0)
		c->status_inflight++;
out:
	cJSON_Delete(status);
	cJSON_Delete(body);
	free(text);
}

static void event_post(struct ctrl *c, const struct k8s_obj *lb, const cJSON *ev)
{
	char path[512], now[40], name[K8S_NAME_MAX + 24];
	struct timespec ts;
	cJSON *e = cJSON_CreateObject(), *md, *reg;
	const cJSON *reason = cJSON_GetObjectItemCaseSensitive(ev, "reason");
	const cJSON *msg = cJSON_GetObjectItemCaseSensitive(ev, "message");
	struct k8s_req_opts o = { .method = "POST", .path = path, .on_done = event_done, .arg = c,
				  .timeout_ms = CTRL_WRITE_TIMEOUT_MS };
	char *text = NULL;

	now_rfc3339(now, sizeof(now), true);
	/* client-go's naming: the object's name and the time in hex (a generateName prefix
	 * ending in "." is not a valid name). */
	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(name, sizeof(name), "%s.%llx", lb->meta.name,
		 (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec);
	if (!e || !cJSON_AddStringToObject(e, "apiVersion", "events.k8s.io/v1") ||
	    !cJSON_AddStringToObject(e, "kind", "Event") ||
	    !(md = cJSON_AddObjectToObject(e, "metadata")) ||
	    !cJSON_AddStringToObject(md, "name", name) ||
	    !cJSON_AddStringToObject(md, "namespace", lb->meta.ns) ||
	    !cJSON_AddStringToObject(e, "eventTime", now) ||
	    !cJSON_AddStringToObject(e, "reportingController", "layer4lb.io/controller") ||
	    !cJSON_AddStringToObject(e, "reportingInstance", c->opt.identity) ||
	    !cJSON_AddStringToObject(e, "action", "Reconcile") ||
	    !cJSON_AddStringToObject(e, "type", "Warning") ||
	    !cJSON_AddStringToObject(e, "reason", reason->valuestring) ||
	    !cJSON_AddStringToObject(e, "note", msg->valuestring) ||
	    !(reg = cJSON_AddObjectToObject(e, "regarding")) ||
	    !cJSON_AddStringToObject(reg, "apiVersion", "layer4lb.io/v1alpha1") ||
	    !cJSON_AddStringToObject(reg, "kind", "LoadBalancer") ||
	    !cJSON_AddStringToObject(reg, "name", lb->meta.name) ||
	    !cJSON_AddStringToObject(reg, "namespace", lb->meta.ns) ||
	    !cJSON_AddStringToObject(reg, "uid", lb->meta.uid) || !(text = cJSON_PrintUnformatted(e)))
		goto out;
	snprintf(path, sizeof(path), "/apis/events.k8s.io/v1/namespaces/%s/events", lb->meta.ns);
	o.body = text;
	if (k8s_req_start(c->kc, &o, NULL) == 0)
		c->status_inflight++;
	log_info("LoadBalancer %s/%s: %s: %s", lb->meta.ns, lb->meta.name, reason->valuestring,
		 msg->valuestring);
out:
	cJSON_Delete(e);
	free(text);
}

/* This node's entries: written once the dataplane has answered an apply. */
static void node_entries(struct ctrl *c, const struct ctrl_desired *d, const struct k8s_obj *node)
{
	struct ctrl_node_report rep = {
		.node = c->opt.node_name, .node_obj = node, .apply_error = c->push.apply_error,
		.failed_names = (const char *const *)c->push.failed_names,
		.failed_errors = (const char *const *)c->push.failed_errors,
		.n_failed = c->push.n_failed,
	};
	char manager[160];

	if (!c->push.applied && !c->push.apply_error)
		return;
	snprintf(manager, sizeof(manager), "layer4-lb-node-%s", c->opt.node_name);
	for (size_t i = 0; i < d->n_lbs; i++) {
		const struct ctrl_lb_result *lr = &d->lbs[i];
		const cJSON *cur = ctrl_node_entry_current(lr->lb, c->opt.node_name);
		cJSON *st, *nodes, *entry;

		if (!lr->selected && !cur)
			continue;
		if (status_full(c))
			break;
		entry = lr->selected ? ctrl_node_entry(lr, &rep) : NULL;
		if (lr->selected && (!entry || ctrl_node_entry_same(cur, entry))) {
			cJSON_Delete(entry);
			continue;
		}
		/* Not selected any more: apply an empty list, which drops our entry. */
		st = cJSON_CreateObject();
		nodes = st ? cJSON_AddArrayToObject(st, "nodes") : NULL;
		if (!nodes) {
			cJSON_Delete(st);
			cJSON_Delete(entry);
			continue;
		}
		if (entry)
			cJSON_AddItemToArray(nodes, entry);
		status_apply(c, lr->lb, manager, st);
	}
}

/* The Lease holder's part: every LoadBalancer's summary over all nodes, and the Events. */
static int leader_status(struct ctrl *c, const struct ctrl_input *in, const struct ctrl_desired *d)
{
	struct ctrl_lb_agg *agg = d->n_lbs ? calloc(d->n_lbs, sizeof(*agg)) : NULL;
	const struct k8s_store *nodes = &c->inf[CTRL_INF_NODES].store;
	struct k8s_store_entry *e;
	char now[40];
	size_t i;
	int r;

	if (d->n_lbs && !agg)
		return -ENOMEM;
	k8s_store_for_each(nodes, e, i) {
		struct ctrl_desired *dn;

		r = ctrl_reconcile(in, e->obj, false, &dn);
		if (r) {
			free(agg);
			return r;
		}
		ctrl_agg_add(agg, dn, e->obj);
		ctrl_desired_free(dn);
	}
	now_rfc3339(now, sizeof(now), false);
	for (i = 0; i < d->n_lbs && !status_full(c); i++) {
		cJSON *events, *st = ctrl_lb_summary(&d->lbs[i], &agg[i], now, &events), *ev;

		if (!st)
			continue;
		if (ctrl_lb_summary_same(d->lbs[i].lb, st)) {
			cJSON_Delete(st);
			cJSON_Delete(events);
			continue;
		}
		cJSON_ArrayForEach(ev, events)
			event_post(c, d->lbs[i].lb, ev);
		cJSON_Delete(events);
		status_apply(c, d->lbs[i].lb, CTRL_LEADER_MANAGER, st);
	}
	free(agg);
	return 0;
}

/* --- reconcile ------------------------------------------------------------------------------ */

/* Do the dataplane's bind failures differ from the ones last reported? */
static bool failures_changed(struct ctrl *c)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < c->push.n_failed; i++)
		for (const char *s = c->push.failed_names[i]; *s; s++)
			h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
	if (h == c->failures_hash)
		return false;
	c->failures_hash = h;
	return true;
}

static void report_apply(struct ctrl *c, int r, size_t n_listeners)
{
	if (r == 1) {
		log_info("applied version %" PRIu64 ": %zu listeners, %zu not bound",
			 c->push.version - 1, n_listeners, c->push.n_failed);
		/* The same failures come back at every retry: say them when they change. */
		if (failures_changed(c))
			for (size_t i = 0; i < c->push.n_failed; i++)
				log_warn("listener %s is not served: %s", c->push.failed_names[i],
					 c->push.failed_errors[i]);
	} else if (r == -EINVAL) {
		log_err("the dataplane refused apply version %" PRIu64 ": %s",
			c->push.version - 1, c->push.apply_error);
	} else if (r < 0) {
		log_warn("apply not sent: %s; retrying when the dataplane is back", strerror(-r));
	}
}

static int sync_once(struct ctrl *c)
{
	struct ctrl_input in = {
		.lbs = &c->inf[CTRL_INF_LBS].store, .services = &c->inf[CTRL_INF_SERVICES].store,
		.slices = &c->inf[CTRL_INF_SLICES].store, .listen_host = c->opt.listen_host,
		.reserved_ports = c->push.reserved, .n_reserved = c->push.n_reserved,
		.denied = c->opt.denied, .n_denied = c->opt.n_denied,
	};
	const struct k8s_obj *node = k8s_store_get(&c->inf[CTRL_INF_NODES].store, c->opt.node_name);
	uint64_t t0 = k8s_now_ms();
	struct ctrl_desired *d;
	cJSON *listeners;
	int r;

	r = ctrl_reconcile(&in, node, true, &d);
	if (r)
		return r;
	listeners = ctrl_desired_json(d, c->opt.listen_host);
	if (!listeners) {
		ctrl_desired_free(d);
		return -ENOMEM;
	}
	if (c->push.fd >= 0) {
		r = ctrl_push_apply(&c->push, listeners, t0);
		report_apply(c, r, d->n_listeners);
	}
	cJSON_Delete(listeners);
	if (c->status_inflight) {
		c->status_dirty = true;
	} else {
		node_entries(c, d, node);
		if (c->leader.leading)
			leader_status(c, &in, d);
	}
	ctrl_desired_free(d);
	c->reconciles++;
	c->reconcile_us_last = (k8s_now_ms() - t0) * 1000;
	c->reconcile_us_total += c->reconcile_us_last;
	return 0;
}

/* --- the Lease ------------------------------------------------------------------------------ */

static void lease_path(const struct ctrl *c, char *buf, size_t len, bool item)
{
	snprintf(buf, len, "/apis/coordination.k8s.io/v1/namespaces/%s/leases%s%s",
		 c->opt.lease_ns, item ? "/" : "", item ? c->opt.lease_name : "");
}

static void lease_written(void *arg, const struct k8s_resp *resp)
{
	struct ctrl *c = arg;
	bool ok = resp->status == 200 || resp->status == 201;

	c->lease_busy = false;
	if (ctrl_leader_written(&c->leader, ok, k8s_now_ms())) {
		c->leader_transitions++;
		log_info("%s the leader (Lease %s/%s)", c->leader.leading ? "became" : "is no longer",
			 c->opt.lease_ns, c->opt.lease_name);
		if (c->leader.leading)
			status_look(c);
	}
}

static void lease_read(void *arg, const struct k8s_resp *resp)
{
	struct ctrl *c = arg;
	struct ctrl_lease lease = { 0 };
	char path[512], now[40], *text;
	struct k8s_req_opts o = { .path = path, .on_done = lease_written, .arg = c,
				  .timeout_ms = CTRL_WRITE_TIMEOUT_MS };
	enum ctrl_leader_action act;
	cJSON *obj, *body;
	bool was;

	c->lease_busy = false;
	if (c->stopping)
		return; /* lease_release reads it again itself */
	if (resp->status == 200) {
		obj = cJSON_ParseWithLength(resp->body, resp->body_len);
		if (!obj || ctrl_lease_from_json(obj, &lease)) {
			cJSON_Delete(obj);
			return;
		}
		cJSON_Delete(obj);
	} else if (resp->status != 404) {
		if (ctrl_leader_check_deadline(&c->leader, k8s_now_ms())) {
			c->leader_transitions++;
			log_warn("is no longer the leader: the Lease could not be renewed");
		}
		return;
	}
	now_rfc3339(now, sizeof(now), true);
	was = c->leader.leading;
	act = ctrl_leader_decide(&c->leader, &lease, k8s_now_ms(), now, c->opt.lease_name,
				 c->opt.lease_ns, &body);
	if (act == CTRL_LEADER_WAIT) {
		/* Another holder's live lease: if we thought we led, we no longer do. */
		if (was && !c->leader.leading) {
			c->leader_transitions++;
			log_warn("is no longer the leader: the Lease is held by %s", lease.holder);
		}
		return;
	}
	text = cJSON_PrintUnformatted(body);
	cJSON_Delete(body);
	if (!text)
		return;
	lease_path(c, path, sizeof(path), act == CTRL_LEADER_UPDATE);
	o.method = act == CTRL_LEADER_CREATE ? "POST" : "PUT";
	o.body = text;
	if (k8s_req_start(c->kc, &o, NULL) == 0)
		c->lease_busy = true;
	free(text);
}

static void lease_tick(struct ctrl *c, uint64_t now_ms)
{
	char path[512];
	struct k8s_req_opts o = { .path = path, .on_done = lease_read, .arg = c,
				  .timeout_ms = CTRL_RETRY_PERIOD_MS * 2 };

	if (!c->opt.leader_elect || c->lease_busy || now_ms < c->next_lease_ms)
		return;
	c->next_lease_ms = now_ms + CTRL_RETRY_PERIOD_MS;
	lease_path(c, path, sizeof(path), true);
	if (k8s_req_start(c->kc, &o, NULL) == 0)
		c->lease_busy = true;
}

/* One request of the release, run to its end (or its deadline) from lease_release. */
struct lease_call {
	bool done;
	long status;
	cJSON *obj; /* the reply's object, for a 200 */
};

static void lease_call_done(void *arg, const struct k8s_resp *resp)
{
	struct lease_call *lc = arg;

	lc->done = true;
	lc->status = resp->status;
	if (resp->status == 200)
		lc->obj = cJSON_ParseWithLength(resp->body, resp->body_len);
}

static int lease_call(struct ctrl *c, struct k8s_req_opts *o, struct lease_call *lc,
		      uint64_t until)
{
	struct k8s_req *req = NULL;
	int r;

	o->on_done = lease_call_done;
	o->arg = lc;
	o->timeout_ms = 2000;
	r = k8s_req_start(c->kc, o, &req);
	if (r)
		return r;
	while (!lc->done && k8s_now_ms() < until)
		k8s_client_run(c->kc, NULL, 0, 100);
	if (!lc->done) {
		k8s_req_cancel(c->kc, req); /* lc is on our stack: no callback after this */
		return -ETIMEDOUT;
	}
	return 0;
}

/*
 * On a clean stop, give the Lease up so that another replica takes it at once instead of
 * waiting out its 15 s (client-go's ReleaseOnCancel).  The renewal in flight, if any, ends
 * first (c->stopping keeps it from starting another write); then the Lease is read again and
 * released only if it is still ours, conditional on that read's resourceVersion.
 */
static void lease_release(struct ctrl *c)
{
	struct ctrl_lease cur = { 0 };
	struct lease_call get = { 0 }, put = { 0 };
	struct k8s_req_opts o = { 0 };
	uint64_t until = k8s_now_ms() + 3000;
	char path[512], now[40], *text = NULL;
	cJSON *body = NULL;
	int r;

	if (!c->opt.leader_elect)
		return;
	c->stopping = true;
	while (c->lease_busy && k8s_now_ms() < until)
		k8s_client_run(c->kc, NULL, 0, 100);
	if (!c->leader.leading)
		return;
	lease_path(c, path, sizeof(path), true);
	o.path = path;
	r = lease_call(c, &o, &get, until);
	if (r == 0 && get.status == 200 && (!get.obj || ctrl_lease_from_json(get.obj, &cur)))
		r = -EBADMSG;
	cJSON_Delete(get.obj);
	if (r || get.status != 200)
		goto out_fail;
	now_rfc3339(now, sizeof(now), true);
	body = ctrl_leader_release_body(&c->leader, &cur, now, c->opt.lease_name,
					c->opt.lease_ns);
	if (!body) {
		log_info("the Lease %s/%s is no longer ours: nothing to release", c->opt.lease_ns,
			 c->opt.lease_name);
		return;
	}
	text = cJSON_PrintUnformatted(body);
	cJSON_Delete(body);
	if (!text) {
		r = -ENOMEM;
		goto out_fail;
	}
	o = (struct k8s_req_opts){ .method = "PUT", .path = path, .body = text };
	r = lease_call(c, &o, &put, until);
	free(text);
	cJSON_Delete(put.obj);
	if (r || put.status != 200)
		goto out_fail;
	c->leader.leading = false;
	log_info("released the Lease %s/%s", c->opt.lease_ns, c->opt.lease_name);
	return;
out_fail:
	if (r)
		log_warn("could not release the Lease %s/%s (%s): it expires in %d s",
			 c->opt.lease_ns, c->opt.lease_name, strerror(-r), CTRL_LEASE_DURATION_S);
	else
		log_warn("could not release the Lease %s/%s (HTTP %ld): it expires in %d s",
			 c->opt.lease_ns, c->opt.lease_name, put.done ? put.status : get.status,
			 CTRL_LEASE_DURATION_S);
}

/* --- /metrics, /healthz, /readyz -------------------------------------------------------------- */

/* A family's HELP and TYPE lines (Prometheus text format 0.0.4), before its samples. */
static void family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP layer4lb_controller_%s %s\n# TYPE layer4lb_controller_%s %s\n", name,
		help, name, type);
}

/* The families with one sample per cache; inf_value reads the k-th of an informer. */
static const struct {
	const char *name, *type, *help;
} inf_families[] = {
	{ "cache_objects", "gauge", "Objects in the cache." },
	{ "cache_synced", "gauge", "1 once the cache's first list completed." },
	{ "lists_total", "counter", "Lists started." },
	{ "relists_expired_total", "counter", "Lists caused by 410 Gone / Expired." },
	{ "watches_total", "counter", "Watches started, restarts included." },
	{ "watch_errors_total", "counter", "Watches that failed." },
	{ "watch_events_total", "counter", "Watch events received." },
	{ "api_failures", "gauge",
	  "Lists and watches failed in a row, since the last success (0: healthy)." },
};

static uint64_t inf_value(const struct k8s_informer *inf, size_t k)
{
	switch (k) {
	case 0: return inf->store.count;
	case 1: return inf->synced;
	case 2: return inf->lists;
	case 3: return inf->relists_expired;
	case 4: return inf->watches;
	case 5: return inf->watch_errors;
	case 6: return inf->events;
	default: return inf->episode.failures;
	}
}

static int route(void *arg, const char *path, char **body)
{
	struct ctrl *c = arg;
	char *buf = NULL;
	size_t len = 0;
	FILE *f;

	if (!strcmp(path, "/healthz")) {
		*body = strdup("ok\n");
		return 200;
	}
	if (!strcmp(path, "/readyz")) {
		bool ok = synced(c) && c->push.applied;

		*body = strdup(ok ? "ok\n"
				  : !synced(c) ? "caches not synced\n" : "dataplane not programmed\n");
		return ok ? 200 : 503;
	}
	if (strcmp(path, "/metrics")) {
		*body = strdup("not found\n");
		return 404;
	}
	f = open_memstream(&buf, &len);
	if (!f)
		return 500;
	family(f, "info", "gauge", "Version of this controller.");
	fprintf(f, "layer4lb_controller_info{version=\"%s\"} 1\n", LB_VERSION);
	family(f, "leader", "gauge", "1 while this replica holds the Lease.");
	fprintf(f, "layer4lb_controller_leader %d\n", c->leader.leading);
	family(f, "leader_transitions_total", "counter", "Leadership gained or lost.");
	fprintf(f, "layer4lb_controller_leader_transitions_total %" PRIu64 "\n",
		c->leader_transitions);
	for (size_t k = 0; k < sizeof(inf_families) / sizeof(inf_families[0]); k++) {
		family(f, inf_families[k].name, inf_families[k].type, inf_families[k].help);
		for (int i = 0; i < CTRL_INF_COUNT; i++)
			fprintf(f, "layer4lb_controller_%s{resource=\"%s\"} %" PRIu64 "\n",
				inf_families[k].name, c->inf[i].name, inf_value(&c->inf[i], k));
	}
	family(f, "reconciles_total", "counter", "Reconciles run.");
	fprintf(f, "layer4lb_controller_reconciles_total %" PRIu64 "\n", c->reconciles);
	family(f, "reconcile_seconds_total", "counter", "Time spent reconciling.");
	fprintf(f, "layer4lb_controller_reconcile_seconds_total %.6f\n",
		(double)c->reconcile_us_total / 1e6);
	family(f, "reconcile_last_seconds", "gauge", "Time the last reconcile took.");
	fprintf(f, "layer4lb_controller_reconcile_last_seconds %.6f\n",
		(double)c->reconcile_us_last / 1e6);
	family(f, "applies_total", "counter", "Applies accepted or refused by the dataplane.");
	fprintf(f, "layer4lb_controller_applies_total{result=\"ok\"} %" PRIu64 "\n",
		c->push.applies_ok);
	fprintf(f, "layer4lb_controller_applies_total{result=\"failed\"} %" PRIu64 "\n",
		c->push.applies_failed);
	family(f, "dataplane_connected", "gauge", "1 while the control connection is open.");
	fprintf(f, "layer4lb_controller_dataplane_connected %d\n", c->push.fd >= 0);
	family(f, "dataplane_connects_total", "counter",
	       "Control connections made (restarts of the dataplane).");
	fprintf(f, "layer4lb_controller_dataplane_connects_total %" PRIu64 "\n", c->push.connects);
	family(f, "listeners_unbound", "gauge", "Listeners the dataplane could not bind.");
	fprintf(f, "layer4lb_controller_listeners_unbound %zu\n", c->push.n_failed);
	family(f, "status_writes_total", "counter",
	       "Status writes: this node's entries, and summaries by the Lease holder.");
	fprintf(f, "layer4lb_controller_status_writes_total{kind=\"node\"} %" PRIu64 "\n",
		c->node_writes);
	fprintf(f, "layer4lb_controller_status_writes_total{kind=\"summary\"} %" PRIu64 "\n",
		c->summary_writes);
	family(f, "status_write_errors_total", "counter", "Status writes that failed.");
	fprintf(f, "layer4lb_controller_status_write_errors_total %" PRIu64 "\n",
		c->status_write_errors);
	family(f, "events_total", "counter", "Events recorded.");
	fprintf(f, "layer4lb_controller_events_total %" PRIu64 "\n", c->events_sent);
	fclose(f);
	*body = buf;
	return 200;
}

/* --- the loop ------------------------------------------------------------------------------- */

int ctrl_init(struct ctrl *c, const struct ctrl_options *opt, char *err, size_t errlen)
{
	static const struct {
		enum k8s_kind kind;
		const char *name, *path, *query;
	} infs[CTRL_INF_COUNT] = {
		[CTRL_INF_LBS] = { K8S_KIND_LOADBALANCER, "loadbalancers",
				   CTRL_GROUP_PATH "/loadbalancers", NULL },
		[CTRL_INF_SERVICES] = { K8S_KIND_SERVICE, "services", "/api/v1/services", NULL },
		[CTRL_INF_SLICES] = { K8S_KIND_ENDPOINTSLICE, "endpointslices",
				      "/apis/discovery.k8s.io/v1/endpointslices",
				      "labelSelector=kubernetes.io%2Fservice-name" },
		[CTRL_INF_NODES] = { K8S_KIND_NODE, "nodes", "/api/v1/nodes", NULL },
	};
	int r;

	*c = (struct ctrl){ .opt = *opt };
	c->httpd.lfd = -1;
	ctrl_debounce_init(&c->debounce, opt->debounce_ms, opt->debounce_max_ms);
	ctrl_push_init(&c->push, opt->socket);
	ctrl_leader_init(&c->leader, opt->identity);
	c->leader.leading = !opt->leader_elect;
	r = k8s_config_resolve(opt->kubeconfig, opt->context, &c->cfg, err, errlen);
	if (r)
		return r;
	r = k8s_client_new(&c->cfg, &c->kc, err, errlen);
	if (r)
		return r;
	for (int i = 0; i < CTRL_INF_COUNT; i++) {
		bool ep = i == CTRL_INF_SLICES && opt->use_endpoints;

		r = k8s_informer_init(&c->inf[i], c->kc, ep ? K8S_KIND_ENDPOINTS : infs[i].kind,
				      ep ? "endpoints" : infs[i].name,
				      ep ? "/api/v1/endpoints" : infs[i].path,
				      ep ? NULL : infs[i].query, on_cache_change, c);
		if (r) {
			snprintf(err, errlen, "out of memory");
			return r;
		}
	}
	if (opt->http_addr && opt->http_addr[0]) {
		r = ctrl_httpd_open(&c->httpd, opt->http_addr, route, c, err, errlen);
		if (r)
			return r;
	}
	return 0;
}

void ctrl_stop(struct ctrl *c)
{
	c->stop = 1;
	if (c->kc)
		k8s_client_wakeup(c->kc);
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static void dataplane_tick(struct ctrl *c, uint64_t now)
{
	int r = ctrl_push_connect(&c->push, now);

	if (r == 1) {
		log_info("connected to the dataplane at %s (next version %" PRIu64 ")",
			 c->push.path, c->push.version);
		/* A new or restarted dataplane gets the whole state now, without the debounce. */
		mark_urgent(c);
	}
	ctrl_push_ping(&c->push, now);
}

int ctrl_run(struct ctrl *c)
{
	struct curl_waitfd fds[CTRL_HTTPD_CLIENTS + 2];
	bool was_synced = false;

	log_info("controller for node %s: dataplane socket %s, leader election %s", c->opt.node_name,
		 c->opt.socket, c->opt.leader_elect ? "on" : "off");
	for (int i = 0; i < CTRL_INF_COUNT; i++)
		k8s_informer_start(&c->inf[i]);
	c->next_resync_ms = k8s_now_ms() + (uint64_t)c->opt.resync_s * 1000;
	while (!c->stop) {
		uint64_t now = k8s_now_ms(), next = now + CTRL_LOOP_MAX_WAIT_MS;
		unsigned n = 0;

		dataplane_tick(c, now);
		for (int i = 0; i < CTRL_INF_COUNT; i++)
			next = min_u64(next, k8s_informer_tick(&c->inf[i], now));
		lease_tick(c, now);
		/* Listeners the dataplane could not bind are retried by every apply: try again
		 * while some are left, so a port freed by another process is taken soon. */
		if (c->push.n_failed && c->push.fd >= 0 && now >= c->next_bind_retry_ms) {
			c->next_bind_retry_ms = now + CTRL_BIND_RETRY_MS;
			c->push.fresh = true;
			on_cache_change(c, NULL, false);
		}
		if (c->status_retry_ms && now >= c->status_retry_ms && !c->status_inflight) {
			c->status_retry_ms = 0;
			status_look(c);
		}
		if (c->status_retry_ms)
			next = min_u64(next, c->status_retry_ms);
		if (now >= c->next_resync_ms) {
			c->next_resync_ms = now + (uint64_t)c->opt.resync_s * 1000;
			mark_urgent(c);
			c->push.fresh = true; /* re-send even an unchanged set */
		}
		if (synced(c) && !was_synced) {
			was_synced = true;
			log_info("every cache has synced: reconciling");
		}
		/* Never flush: nothing goes out before every cache has listed once. */
		if (synced(c) && ctrl_debounce_fire(&c->debounce, now)) {
			if (sync_once(c))
				log_err("reconcile failed: out of memory");
		} else if (c->debounce.dirty && synced(c)) {
			next = min_u64(next, ctrl_debounce_due(&c->debounce));
		}
		if (c->push.fd >= 0)
			fds[n++] = (struct curl_waitfd){ .fd = c->push.fd,
							 .events = CURL_WAIT_POLLIN };
		else
			next = min_u64(next, c->push.retry_at_ms);
		n += ctrl_httpd_fds(&c->httpd, fds + n);
		next = min_u64(next, c->next_lease_ms > now ? c->next_lease_ms : now + 1);
		k8s_client_run(c->kc, fds, n, next > now ? (int)(next - now) : 0);
		now = k8s_now_ms();
		if (n && c->push.fd >= 0 && fds[0].fd == c->push.fd && fds[0].revents &&
		    ctrl_push_readable(&c->push))
			log_warn("the dataplane closed the control connection; reconnecting");
		ctrl_httpd_serve(&c->httpd, fds, n, now);
	}
	lease_release(c);
	return 0;
}

void ctrl_free(struct ctrl *c)
{
	for (int i = 0; i < CTRL_INF_COUNT; i++)
		if (c->inf[i].kc)
			k8s_informer_free(&c->inf[i]);
	ctrl_httpd_close(&c->httpd);
	ctrl_push_free(&c->push);
	k8s_client_free(c->kc);
	k8s_config_clear(&c->cfg);
}
