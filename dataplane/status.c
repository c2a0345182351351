/* status.c - the dataplane's state as a status reply (JSON) and as Prometheus text. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/ctlproto.h"
#include "common/log.h"
#include "dataplane/plane.h"
#include "dataplane/worker.h"

static const char *const cerr_names[DP_CERR_N] = { "refused", "timeout", "unreachable", "other" };
static const char *const udrop_names[DP_UDROP_N] = { "oversized", "no_backend", "flow_error",
						     "send_error" };

/* A udp listener's counters, added up over the workers (each writes its own). */
struct usum {
	uint64_t dgrams_in, dgrams_out, bytes_in, bytes_out;
	uint64_t created, closed, evicted, timed_out;
	uint64_t drops[DP_UDROP_N];
};

static bool udp_sum(const struct dp_slistener *sl, struct usum *u)
{
	memset(u, 0, sizeof(*u));
	if (sl->conf->protocol != LB_PROTO_UDP || !sl->st->udp)
		return false;
	for (unsigned i = 0; i < sl->st->n_udp; i++) {
		struct dp_ustats *w = &sl->st->udp[i];

		u->dgrams_in += DP_STAT_GET(w->dgrams_in);
		u->dgrams_out += DP_STAT_GET(w->dgrams_out);
		u->bytes_in += DP_STAT_GET(w->bytes_in);
		u->bytes_out += DP_STAT_GET(w->bytes_out);
		/* Closes first: a close read is of a flow whose creation the next read sees. */
		u->closed += DP_STAT_GET(w->flows_closed);
		u->created += DP_STAT_GET(w->flows_created);
		u->evicted += DP_STAT_GET(w->flows_evicted);
		u->timed_out += DP_STAT_GET(w->flows_timed_out);
		for (int k = 0; k < DP_UDROP_N; k++)
			u->drops[k] += DP_STAT_GET(w->drops[k]);
	}
	return true;
}

/* Open flows: created less closed (read after them, see udp_sum), never below 0. */
static uint64_t udp_active(const struct usum *u)
{
	return u->created > u->closed ? u->created - u->closed : 0;
}

static cJSON *udp_json(const struct usum *u)
{
	cJSON *o = cJSON_CreateObject(), *d;

	lb_json_add_u64(o, "datagrams_in", u->dgrams_in);
	lb_json_add_u64(o, "datagrams_out", u->dgrams_out);
	lb_json_add_u64(o, "bytes_in", u->bytes_in);
	lb_json_add_u64(o, "bytes_out", u->bytes_out);
	lb_json_add_u64(o, "flows_active", udp_active(u));
	lb_json_add_u64(o, "flows_created", u->created);
	lb_json_add_u64(o, "flows_evicted", u->evicted);
	lb_json_add_u64(o, "flows_timed_out", u->timed_out);
	d = cJSON_AddObjectToObject(o, "drops");
	for (int k = 0; k < DP_UDROP_N; k++)
		lb_json_add_u64(d, udrop_names[k], u->drops[k]);
	return o;
}

static const char *check_state(const struct dp_slistener *sl, const struct dp_bstate *st)
{
	if (!sl->conf->health.enabled)
		return "off";
	return atomic_load(&st->check_up) ? "up" : "down";
}

static bool passive_out(struct dp_bstate *st, uint64_t now)
{
	return now < atomic_load(&st->down_until_ms);
}

static cJSON *backend_json(const struct dp_slistener *sl, const struct dp_backend *b, uint64_t now)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "address", b->name);
	lb_json_add_u64(o, "weight", b->weight);
	cJSON_AddBoolToObject(o, "healthy", dp_bstate_usable(b->st, now));
	cJSON_AddStringToObject(o, "check", check_state(sl, b->st));
	cJSON_AddStringToObject(o, "passive", passive_out(b->st, now) ? "out" : "ok");
	lb_json_add_i64(o, "active", atomic_load(&b->st->active));
	lb_json_add_u64(o, "connections", atomic_load(&b->st->conns_total));
	lb_json_add_u64(o, "connect_failures", atomic_load(&b->st->connect_failures));
	lb_json_add_u64(o, "bytes_in", atomic_load(&b->st->bytes_in));
	lb_json_add_u64(o, "bytes_out", atomic_load(&b->st->bytes_out));
	return o;
}

/* Why a listener has no sockets, as the apply reply and status both say it. */
static void bind_error(const struct dp_slistener *sl, char *buf, size_t len)
{
	snprintf(buf, len, "cannot listen on %s: %s", sl->conf->listen_str,
		 strerror(-sl->bind_err));
}

static cJSON *listener_json(const struct dp_slistener *sl, uint64_t now)
{
	cJSON *o = cJSON_CreateObject(), *bs;
	char why[LB_ADDR_STRLEN + 128];
	struct usum u;

	cJSON_AddStringToObject(o, "name", sl->conf->name);
	cJSON_AddStringToObject(o, "listen", sl->conf->listen_str);
	cJSON_AddStringToObject(o, "protocol", lb_protocol_name(sl->conf->protocol));
	cJSON_AddBoolToObject(o, "managed", sl->conf->managed);
	cJSON_AddBoolToObject(o, "bound", sl->socks != NULL);
	if (!sl->socks) {
		bind_error(sl, why, sizeof(why));
		cJSON_AddStringToObject(o, "bind_error", why);
	}
	cJSON_AddStringToObject(o, "algorithm", lb_algo_name(sl->conf->algorithm));
	cJSON_AddStringToObject(o, "proxy_protocol",
				lb_proxy_protocol_name(sl->conf->proxy_protocol));
	lb_json_add_i64(o, "active", atomic_load(&sl->st->active));
	lb_json_add_u64(o, "accepted", atomic_load(&sl->st->accepted));
	lb_json_add_u64(o, "failed", atomic_load(&sl->st->refused));
	if (udp_sum(sl, &u)) {
		lb_json_add_u64(o, "bytes_in", u.bytes_in);
		lb_json_add_u64(o, "bytes_out", u.bytes_out);
		cJSON_AddItemToObject(o, "udp", udp_json(&u));
	} else {
		lb_json_add_u64(o, "bytes_in", atomic_load(&sl->st->bytes_in));
		lb_json_add_u64(o, "bytes_out", atomic_load(&sl->st->bytes_out));
	}
	bs = cJSON_AddArrayToObject(o, "backends");
	for (unsigned j = 0; j < sl->n_backends; j++)
		cJSON_AddItemToArray(bs, backend_json(sl, &sl->backends[j], now));
	return o;
}

cJSON *dp_status_bind_failures(const struct dp_plane *p)
{
	cJSON *a = cJSON_CreateArray(), *f;
	char why[LB_ADDR_STRLEN + 128];

	for (unsigned i = 0; a && i < p->snap->n_listeners; i++) {
		const struct dp_slistener *sl = &p->snap->listeners[i];

		if (sl->socks)
			continue;
		bind_error(sl, why, sizeof(why));
		if (!(f = cJSON_CreateObject()) || !cJSON_AddItemToArray(a, f) ||
		    !cJSON_AddStringToObject(f, "name", sl->conf->name) ||
		    !cJSON_AddStringToObject(f, "listen", sl->conf->listen_str) ||
		    !cJSON_AddStringToObject(f, "error", why)) {
			cJSON_Delete(a);
			return NULL;
		}
	}
	return a;
}

cJSON *dp_status_json(const struct dp_plane *p)
{
	cJSON *o = cJSON_CreateObject(), *ls;
	uint64_t now = dp_now_ms();

	if (!o)
		return NULL;
	/* Integers as their exact text: doubles would print 2^53-1 as 9.00719925474099e+15. */
	if (p->applied)
		lb_json_add_u64(o, "applied_version", p->applied_version);
	else
		cJSON_AddNullToObject(o, "applied_version");
	lb_json_add_u64(o, "applies_ok", p->applies_ok);
	lb_json_add_u64(o, "applies_failed", p->applies_failed);
	lb_json_add_u64(o, "workers", p->n_workers);
	cJSON_AddStringToObject(o, "engine", p->engine->name);
	cJSON_AddBoolToObject(o, "draining", p->draining);
	ls = cJSON_AddArrayToObject(o, "listeners");
	for (unsigned i = 0; i < p->snap->n_listeners; i++)
		cJSON_AddItemToArray(ls, listener_json(&p->snap->listeners[i], now));
	return o;
}

/* --- Prometheus text exposition format 0.0.4 ------------------------------------------- */

struct text {
	char *buf;
	size_t len, cap;
	bool oom;
};

static void __attribute__((format(printf, 2, 3))) put(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (t->oom)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
		va_end(ap);
		if (n >= 0 && (size_t)n < t->cap - t->len) {
			t->len += n;
			return;
		}
		char *b = realloc(t->buf, t->cap * 2);

		if (!b) {
			t->oom = true;
			return;
		}
		t->buf = b;
		t->cap *= 2;
	}
}

static void family(struct text *t, const char *name, const char *type, const char *help)
{
	put(t, "# HELP layer4lb_%s %s\n# TYPE layer4lb_%s %s\n", name, help, name, type);
}

/* Label values here are listener names ([A-Za-z0-9_.-]) and addresses: nothing to escape. */
#define FOR_LISTENERS(p, sl)                                                                       \
	for (const struct dp_slistener *sl = (p)->snap->listeners;                                 \
	     sl < (p)->snap->listeners + (p)->snap->n_listeners; sl++)
#define FOR_BACKENDS(sl, b) for (const struct dp_backend *b = (sl)->backends; b < (sl)->backends + (sl)->n_backends; b++)

static void process_metrics(struct text *t, const struct dp_plane *p)
{
	family(t, "info", "gauge", "Build and engine of this dataplane.");
	put(t, "layer4lb_info{version=\"%s\",engine=\"%s\"} 1\n", LB_VERSION, p->engine->name);
	family(t, "workers", "gauge", "Worker threads (acceptors).");
	put(t, "layer4lb_workers %u\n", p->n_workers);
	family(t, "applies_total", "counter", "Control-socket applies by result.");
	put(t, "layer4lb_applies_total{result=\"ok\"} %llu\n", (unsigned long long)p->applies_ok);
	put(t, "layer4lb_applies_total{result=\"failed\"} %llu\n",
	    (unsigned long long)p->applies_failed);
	family(t, "applied_version", "gauge", "Version of the last successful apply (-1: none).");
	put(t, "layer4lb_applied_version %lld\n",
	    p->applied ? (long long)p->applied_version : -1LL);
	family(t, "reloads_total", "counter", "Configuration file reloads (SIGHUP) by result.");
	put(t, "layer4lb_reloads_total{result=\"ok\"} %llu\n", (unsigned long long)p->reloads_ok);
	put(t, "layer4lb_reloads_total{result=\"failed\"} %llu\n",
	    (unsigned long long)p->reloads_failed);
}

static void listener_metrics(struct text *t, const struct dp_plane *p)
{
	family(t, "listener_bound", "gauge",
	       "1 when the listener's address is bound; 0 for a managed listener that could not "
	       "bind it (tried again at every apply).");
	FOR_LISTENERS(p, sl)
	put(t, "layer4lb_listener_bound{listener=\"%s\"} %d\n", sl->conf->name, sl->socks != NULL);
	family(t, "listener_connections_accepted_total", "counter", "Client connections accepted.");
	FOR_LISTENERS(p, sl)
	put(t, "layer4lb_listener_connections_accepted_total{listener=\"%s\"} %llu\n",
	    sl->conf->name, (unsigned long long)atomic_load(&sl->st->accepted));
	family(t, "listener_connections_active", "gauge", "Client connections open.");
	FOR_LISTENERS(p, sl)
	put(t, "layer4lb_listener_connections_active{listener=\"%s\"} %d\n", sl->conf->name,
	    atomic_load(&sl->st->active));
	family(t, "listener_connections_failed_total", "counter",
	       "Client connections closed without reaching a backend: none usable, every connect "
	       "failed, or over max_connections.");
	FOR_LISTENERS(p, sl)
	put(t, "layer4lb_listener_connections_failed_total{listener=\"%s\"} %llu\n",
	    sl->conf->name, (unsigned long long)atomic_load(&sl->st->refused));
	family(t, "listener_bytes_total", "counter",
	       "Bytes relayed, counted when each connection ends (udp: as each datagram goes); "
	       "in = client to backend.");
	FOR_LISTENERS(p, sl) {
		struct usum u;
		bool udp = udp_sum(sl, &u);

		put(t, "layer4lb_listener_bytes_total{listener=\"%s\",direction=\"in\"} %llu\n",
		    sl->conf->name,
		    (unsigned long long)(udp ? u.bytes_in : atomic_load(&sl->st->bytes_in)));
		put(t, "layer4lb_listener_bytes_total{listener=\"%s\",direction=\"out\"} %llu\n",
		    sl->conf->name,
		    (unsigned long long)(udp ? u.bytes_out : atomic_load(&sl->st->bytes_out)));
	}
}

/* udp listeners only: datagrams, flows and drops. */
static void udp_metrics(struct text *t, const struct dp_plane *p)
{
	static const char *const events[] = { "created", "evicted", "timed_out" };
	struct usum *u = calloc(p->snap->n_listeners ? p->snap->n_listeners : 1, sizeof(*u));
	bool any = false;

	if (!u) {
		t->oom = true;
		return;
	}
	FOR_LISTENERS(p, sl)
	any |= udp_sum(sl, &u[sl - p->snap->listeners]);
	if (!any)
		goto out;
	family(t, "listener_datagrams_total", "counter",
	       "Datagrams relayed by a udp listener; in = client to backend.");
	FOR_LISTENERS(p, sl) if (sl->conf->protocol == LB_PROTO_UDP) {
		const struct usum *x = &u[sl - p->snap->listeners];

		put(t, "layer4lb_listener_datagrams_total{listener=\"%s\",direction=\"in\"} %llu\n",
		    sl->conf->name, (unsigned long long)x->dgrams_in);
		put(t, "layer4lb_listener_datagrams_total{listener=\"%s\",direction=\"out\"} %llu\n",
		    sl->conf->name, (unsigned long long)x->dgrams_out);
	}
	family(t, "listener_datagrams_dropped_total", "counter",
	       "Datagrams a udp listener dropped, by reason: oversized (larger than a buffer), "
	       "no_backend, flow_error (no socket for a new flow), send_error.");
	FOR_LISTENERS(p, sl) if (sl->conf->protocol == LB_PROTO_UDP) for (int k = 0; k < DP_UDROP_N; k++)
	put(t, "layer4lb_listener_datagrams_dropped_total{listener=\"%s\",reason=\"%s\"} %llu\n",
	    sl->conf->name, udrop_names[k],
	    (unsigned long long)u[sl - p->snap->listeners].drops[k]);
	family(t, "listener_flows_active", "gauge", "Open flows of a udp listener.");
	FOR_LISTENERS(p, sl) if (sl->conf->protocol == LB_PROTO_UDP)
	put(t, "layer4lb_listener_flows_active{listener=\"%s\"} %llu\n", sl->conf->name,
	    (unsigned long long)udp_active(&u[sl - p->snap->listeners]));
	family(t, "listener_flows_total", "counter",
	       "Flows of a udp listener by event: created, evicted (max_flows), timed_out (idle).");
	FOR_LISTENERS(p, sl) if (sl->conf->protocol == LB_PROTO_UDP) {
		const struct usum *x = &u[sl - p->snap->listeners];
		const uint64_t v[] = { x->created, x->evicted, x->timed_out };

		for (int k = 0; k < 3; k++)
			put(t, "layer4lb_listener_flows_total{listener=\"%s\",event=\"%s\"} %llu\n",
			    sl->conf->name, events[k], (unsigned long long)v[k]);
	}
out:
	free(u);
}

static void backend_metrics(struct text *t, const struct dp_plane *p)
{
	uint64_t now = dp_now_ms();

	family(t, "backend_connections_total", "counter",
	       "Connections established to the backend (failed connects are in connect_errors).");
	FOR_LISTENERS(p, sl) FOR_BACKENDS(sl, b)
	put(t, "layer4lb_backend_connections_total{listener=\"%s\",backend=\"%s\"} %llu\n",
	    sl->conf->name, b->name, (unsigned long long)atomic_load(&b->st->conns_total));
	family(t, "backend_connections_active", "gauge", "Open connections to the backend.");
	FOR_LISTENERS(p, sl) FOR_BACKENDS(sl, b)
	put(t, "layer4lb_backend_connections_active{listener=\"%s\",backend=\"%s\"} %d\n",
	    sl->conf->name, b->name, atomic_load(&b->st->active));
	family(t, "backend_connect_errors_total", "counter", "Failed connects by kind.");
	FOR_LISTENERS(p, sl) FOR_BACKENDS(sl, b) for (int k = 0; k < DP_CERR_N; k++)
	put(t, "layer4lb_backend_connect_errors_total{listener=\"%s\",backend=\"%s\",kind=\"%s\"} %llu\n",
	    sl->conf->name, b->name, cerr_names[k],
	    (unsigned long long)atomic_load(&b->st->connect_errors[k]));
	family(t, "backend_up", "gauge",
	       "1 when the backend takes new connections (active checks and passive health).");
	FOR_LISTENERS(p, sl) FOR_BACKENDS(sl, b)
	put(t, "layer4lb_backend_up{listener=\"%s\",backend=\"%s\"} %d\n", sl->conf->name, b->name,
	    dp_bstate_usable(b->st, now));
	family(t, "backend_bytes_total", "counter",
	       "Bytes relayed, counted when each connection ends; in = client to backend.");
	FOR_LISTENERS(p, sl) FOR_BACKENDS(sl, b) {
		put(t, "layer4lb_backend_bytes_total{listener=\"%s\",backend=\"%s\",direction=\"in\"} %llu\n",
		    sl->conf->name, b->name, (unsigned long long)atomic_load(&b->st->bytes_in));
		put(t, "layer4lb_backend_bytes_total{listener=\"%s\",backend=\"%s\",direction=\"out\"} %llu\n",
		    sl->conf->name, b->name, (unsigned long long)atomic_load(&b->st->bytes_out));
	}
}

static void worker_metrics(struct text *t, const struct dp_plane *p)
{
	static const struct {
		const char *name, *type, *help;
		size_t off;
	} rows[] = {
		{ "worker_connections_active", "gauge", "Open proxied connections per worker.",
		  offsetof(struct dp_wstats, active) },
		{ "worker_connections_accepted_total", "counter",
		  "Connections accepted per worker (how evenly SO_REUSEPORT spreads them).",
		  offsetof(struct dp_wstats, accepted) },
		{ "worker_buffer_waits_total", "counter",
		  "Receives that found the buffer pool empty (ENOBUFS).",
		  offsetof(struct dp_wstats, nobufs) },
		{ "worker_stalled_closes_total", "counter",
		  "Connections closed to free buffers while the pool was exhausted: their peers had "
		  "stopped reading.",
		  offsetof(struct dp_wstats, evicted) },
		{ "worker_accept_pauses_total", "counter",
		  "Accept pauses: out of file descriptors or at max_connections.",
		  offsetof(struct dp_wstats, accept_pauses) },
		{ "worker_stale_completions_total", "counter",
		  "Completions for a freed slot, dropped (should stay 0).",
		  offsetof(struct dp_wstats, stale_cqes) },
	};

	for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
		family(t, rows[r].name, rows[r].type, rows[r].help);
		for (unsigned i = 0; i < p->n_workers; i++) {
			atomic_uint_fast64_t *v =
				(atomic_uint_fast64_t *)((char *)&p->workers[i].stats + rows[r].off);

			put(t, "layer4lb_%s{worker=\"%u\"} %lld\n", rows[r].name, i,
			    (long long)DP_STAT_GET(*v));
		}
	}
}

char *dp_metrics_text(const struct dp_plane *p, size_t *ret_len)
{
	struct text t = { .cap = 16384 };

	t.buf = malloc(t.cap);
	if (!t.buf)
		return NULL;
	process_metrics(&t, p);
	listener_metrics(&t, p);
	udp_metrics(&t, p);
	backend_metrics(&t, p);
	worker_metrics(&t, p);
	if (t.oom) {
		free(t.buf);
		return NULL;
	}
	*ret_len = t.len;
	return t.buf;
}
