/*
 * reconcile.c - cached objects in, the dataplane's desired listeners and each LoadBalancer's
 * verdict out.
 *
 * Pure: no I/O, no clock, no logging; the same caches give the same answer in the same order,
 * whatever order the caches hold their objects in, so the controller can compare one answer
 * with the last it applied and send nothing when they are equal.
 *
 * The rules, in order:
 *  1. LoadBalancers are taken oldest first (creationTimestamp, then namespace/name): that order
 *     decides port conflicts, the same on every node and in every replica.
 *  2. A LoadBalancer serves on a node when its nodeSelector selects the node.
 *  3. Each listener claims its port/protocol on the node; a port already claimed by an older
 *     LoadBalancer is a conflict and only that listener is left out (the LoadBalancer's other
 *     listeners still serve: one clash must not take down ports that work).  53/TCP and
 *     53/UDP are two claims, as they are two sockets (DNS serves both).
 *  4. A listener's backends are the ready endpoints of its Service port; when there are none
 *     and drain.useTerminatingEndpoints allows, the serving-but-terminating ones (kube-proxy's
 *     rule).  Terminating endpoints are otherwise left out, so they only finish what they
 *     have: the dataplane drains a backend it no longer gets.
 *  5. A listener whose Service or port cannot be found is still served, with no backends: the
 *     port stays this LoadBalancer's, and connections are refused until the Service exists.
 */
#include "controller/core/reconcile.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct claim {
	uint16_t port;
	enum k8s_proto protocol;
	const struct ctrl_lb_result *owner;
};

/* Oldest first, ties by namespace/name. */
static int lb_age_cmp(const void *a, const void *b)
{
	const struct ctrl_lb_result *x = a, *y = b;

	if (x->lb->meta.created != y->lb->meta.created)
		return x->lb->meta.created < y->lb->meta.created ? -1 : 1;
	return strcmp(x->key, y->key);
}

bool ctrl_lb_selects(const struct k8s_lb *lb, const struct k8s_obj *node)
{
	const struct k8s_selector *s = &lb->node_selector;

	if (!s->n_labels && !s->n_exprs)
		return true;
	return node && k8s_selector_matches(s, node->node.labels, node->node.n_labels);
}

void ctrl_lb_ports(const struct k8s_lb *lb, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = 0;
	for (size_t i = 0; i < lb->n_listeners && off < len; i++) {
		int n = snprintf(buf + off, len - off, "%s%u/%s", i ? "," : "",
				 lb->listeners[i].port, k8s_proto_name(lb->listeners[i].protocol));

		if (n < 0)
			break;
		off += (size_t)n;
	}
}

/* --- endpoints to backends ------------------------------------------------------------- */

struct cand {
	char addr[LB_ADDR_STRLEN];
	bool ready;
	bool terminating; /* serving and terminating */
};

static int cand_cmp(const void *a, const void *b)
{
	return strcmp(((const struct cand *)a)->addr, ((const struct cand *)b)->addr);
}

/* Slices sorted by "namespace/service", so a Service's slices are one range. */
struct slice_index {
	const struct k8s_obj **v;
	size_t n;
};

static int slice_key_cmp2(const struct k8s_obj *a, const char *ns, const char *svc)
{
	int c = strcmp(a->meta.ns, ns);

	return c ? c : strcmp(a->slice.service, svc);
}

static int slice_cmp(const void *a, const void *b)
{
	const struct k8s_obj *x = *(const struct k8s_obj *const *)a;
	const struct k8s_obj *y = *(const struct k8s_obj *const *)b;
	int c = slice_key_cmp2(x, y->meta.ns, y->slice.service);

	return c ? c : strcmp(x->meta.name, y->meta.name);
}

static int slice_index_build(const struct k8s_store *s, struct slice_index *ix)
{
	struct k8s_store_entry *e;
	size_t i;

	ix->n = 0;
	ix->v = s->count ? malloc(s->count * sizeof(*ix->v)) : NULL;
	if (s->count && !ix->v)
		return -ENOMEM;
	k8s_store_for_each(s, e, i) {
		assert(ix->n < s->count); /* the store holds count objects: v has room */
		if (e->obj->slice.service[0] && e->obj->slice.family)
			ix->v[ix->n++] = e->obj;
	}
	if (ix->n) /* qsort wants a valid pointer even for 0 items, and v may be NULL */
		qsort(ix->v, ix->n, sizeof(*ix->v), slice_cmp);
	return 0;
}

/* The first slice of ns/svc, or ix->n. */
static size_t slice_first(const struct slice_index *ix, const char *ns, const char *svc)
{
	size_t lo = 0, hi = ix->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (slice_key_cmp2(ix->v[mid], ns, svc) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static const struct k8s_port *svc_port_find(const struct k8s_service *svc,
						const struct k8s_lb_listener *l)
{
	for (size_t i = 0; i < svc->n_ports; i++) {
		const struct k8s_port *p = &svc->ports[i];

		if (p->protocol != l->protocol)
			continue;
		if (l->svc_port ? p->port == l->svc_port : !strcmp(p->name, l->svc_port_name))
			return p;
	}
	return NULL;
}

static void format_backend(int family, const char *ip, uint16_t port, char *buf, size_t len)
{
	snprintf(buf, len, family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, port);
}

/* Every endpoint of the Service port, one per address (ready wins over a stale duplicate). */
static int collect(const struct slice_index *ix, const char *ns, const char *svc,
		   const struct k8s_port *sp, struct cand **ret, size_t *ret_n)
{
	size_t cap = 0, n = 0, i, j;
	struct cand *c;

	for (i = slice_first(ix, ns, svc); i < ix->n && !slice_key_cmp2(ix->v[i], ns, svc); i++)
		cap += ix->v[i]->slice.n_eps;
	*ret = NULL;
	*ret_n = 0;
	if (!cap)
		return 0;
	c = calloc(cap, sizeof(*c));
	if (!c)
		return -ENOMEM;
	for (i = slice_first(ix, ns, svc); i < ix->n && !slice_key_cmp2(ix->v[i], ns, svc); i++) {
		const struct k8s_slice *s = &ix->v[i]->slice;
		const struct k8s_port *p = NULL;
		int family = s->family;

		/* EndpointSlice ports carry the Service port's name, and its protocol. */
		for (j = 0; j < s->n_ports && !p; j++)
			if (s->ports[j].port && s->ports[j].protocol == sp->protocol &&
			    !strcmp(s->ports[j].name, sp->name))
				p = &s->ports[j];
		for (j = 0; p && j < s->n_eps; j++) {
			const struct k8s_endpoint *ep = &s->eps[j];

			if (!ep->ready && !(ep->serving && ep->terminating))
				continue;
			if (ix->v[i]->kind == K8S_KIND_ENDPOINTS)
				family = strchr(ep->addr, ':') ? AF_INET6 : AF_INET;
			format_backend(family, ep->addr, p->port, c[n].addr, sizeof(c[n].addr));
			c[n].ready = ep->ready;
			c[n].terminating = !ep->ready;
			n++;
		}
	}
	qsort(c, n, sizeof(*c), cand_cmp);
	/* Merge duplicates: an address in two slices (a move between them) counts once. */
	for (i = 0, j = 0; i < n; i++) {
		if (j && !strcmp(c[j - 1].addr, c[i].addr)) {
			c[j - 1].ready |= c[i].ready;
			c[j - 1].terminating = !c[j - 1].ready;
			continue;
		}
		c[j++] = c[i];
	}
	*ret = c;
	*ret_n = j;
	return 0;
}

static int listener_backends(const struct ctrl_input *in, const struct slice_index *ix,
			     const struct k8s_obj *lbo, const struct k8s_lb_listener *l,
			     struct ctrl_listener_result *res, struct ctrl_listener *out)
{
	char key[CTRL_KEY_MAX];
	const struct k8s_obj *svc;
	const struct k8s_port *sp;
	struct cand *c;
	size_t n, i, k = 0;
	bool use_ready;
	int r;

	snprintf(key, sizeof(key), "%s/%s", lbo->meta.ns, l->svc);
	svc = k8s_store_get(in->services, key);
	if (!svc) {
		res->unresolved_reason = "ServiceNotFound";
		return 0;
	}
	sp = svc_port_find(&svc->svc, l);
	if (!sp) {
		res->unresolved_reason = "PortNotFound";
		return 0;
	}
	res->resolved = true;
	r = collect(ix, lbo->meta.ns, l->svc, sp, &c, &n);
	if (r)
		return r;
	for (i = 0; i < n; i++) {
		res->ready += c[i].ready;
		res->terminating += c[i].terminating;
	}
	use_ready = res->ready > 0 || !lbo->lb.use_terminating;
	if (out && n) {
		out->backends = calloc(n, sizeof(*out->backends));
		if (!out->backends) {
			free(c);
			return -ENOMEM;
		}
		for (i = 0; i < n; i++)
			if (use_ready ? c[i].ready : c[i].terminating)
				memcpy(out->backends[k++].addr, c[i].addr, sizeof(c[i].addr));
		out->n_backends = k;
	}
	free(c);
	return 0;
}

/* --- selection and conflicts ----------------------------------------------------------- */

static const struct ctrl_lb_result *claim(struct claim *claims, size_t *n,
					  const struct ctrl_lb_result *lr,
					  const struct k8s_lb_listener *l)
{
	for (size_t i = 0; i < *n; i++)
		if (claims[i].port == l->port && claims[i].protocol == l->protocol)
			return claims[i].owner;
	claims[*n] = (struct claim){ .port = l->port, .protocol = l->protocol, .owner = lr };
	(*n)++;
	return NULL;
}

/* The dataplane refuses two listeners on one address only when they share a protocol. */
static bool reserved(const struct ctrl_input *in, const struct k8s_lb_listener *l)
{
	for (size_t i = 0; i < in->n_reserved; i++)
		if (in->reserved_ports[i].port == l->port &&
		    in->reserved_ports[i].protocol == l->protocol)
			return true;
	return false;
}

static bool denied(const struct ctrl_input *in, uint16_t port)
{
	for (size_t i = 0; i < in->n_denied; i++)
		if (port >= in->denied[i].lo && port <= in->denied[i].hi)
			return true;
	return false;
}

static int port_parse(const char *s, size_t len, uint16_t *ret)
{
	char buf[8];
	uint64_t v;

	if (!len || len >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, s, len);
	buf[len] = '\0';
	if (lb_parse_decimal(buf, 65535, &v) || !v)
		return -EINVAL;
	*ret = (uint16_t)v;
	return 0;
}

/* "P" or "LO-HI", the len bytes at s. */
static int range_parse(const char *s, size_t len, struct ctrl_port_range *ret)
{
	size_t dash = strcspn(s, "-");

	if (dash >= len) {
		if (port_parse(s, len, &ret->lo))
			return -EINVAL;
		ret->hi = ret->lo;
		return 0;
	}
	if (port_parse(s, dash, &ret->lo) || port_parse(s + dash + 1, len - dash - 1, &ret->hi))
		return -EINVAL;
	return ret->lo <= ret->hi ? 0 : -EINVAL;
}

int ctrl_port_ranges_parse(const char *s, struct ctrl_port_range **ret, size_t *n, char *err,
			   size_t errlen)
{
	struct ctrl_port_range *v = NULL;
	size_t count = 0, cap = 0;

	for (const char *p = s; *p;) {
		size_t len = strcspn(p, ",");
		struct ctrl_port_range r;

		if (range_parse(p, len, &r)) {
			snprintf(err, errlen, "\"%.*s\" is not a port 1..65535 or a range LO-HI of them",
				 (int)(len < 32 ? len : 32), p);
			free(v);
			return -EINVAL;
		}
		if (count == cap) {
			struct ctrl_port_range *nv = realloc(v, (cap = cap ? cap * 2 : 8) * sizeof(*v));

			if (!nv) {
				free(v);
				return -ENOMEM;
			}
			v = nv;
		}
		v[count++] = r;
		p += len + (p[len] == ',');
	}
	*ret = v;
	*n = count;
	return 0;
}

static int listener_name_cmp(const void *a, const void *b)
{
	return strcmp(((const struct ctrl_listener *)a)->name,
		      ((const struct ctrl_listener *)b)->name);
}

static int results_init(const struct k8s_store *lbs, struct ctrl_desired *d, size_t *n_claims)
{
	struct k8s_store_entry *e;
	size_t i, n = 0;

	*n_claims = 0;
	d->lbs = lbs->count ? calloc(lbs->count, sizeof(*d->lbs)) : NULL;
	if (lbs->count && !d->lbs)
		return -ENOMEM;
	k8s_store_for_each(lbs, e, i) {
		struct ctrl_lb_result *lr = &d->lbs[n++];

		assert(n <= lbs->count); /* the store holds count objects: d->lbs has room */
		d->n_lbs = n; /* so ctrl_desired_free finds what was allocated, on failure too */
		lr->lb = e->obj;
		k8s_obj_key(&e->obj->meta, lr->key, sizeof(lr->key));
		*n_claims += e->obj->lb.n_listeners;
		if (!e->obj->lb.n_listeners)
			continue;
		lr->listeners = calloc(e->obj->lb.n_listeners, sizeof(*lr->listeners));
		if (!lr->listeners)
			return -ENOMEM;
	}
	if (n)
		qsort(d->lbs, n, sizeof(*d->lbs), lb_age_cmp);
	return 0;
}

static int lb_reconcile(const struct ctrl_input *in, const struct slice_index *ix,
			const struct k8s_obj *node, bool backends, struct ctrl_lb_result *lr,
			struct claim *claims, size_t *n_claims, struct ctrl_desired *d)
{
	const struct k8s_lb *lb = &lr->lb->lb;
	int r;

	lr->selected = !lb->invalid && ctrl_lb_selects(lb, node);
	for (size_t j = 0; j < lb->n_listeners; j++) {
		const struct k8s_lb_listener *l = &lb->listeners[j];
		struct ctrl_listener_result *res = &lr->listeners[j];
		struct ctrl_listener *out = NULL;
		const struct ctrl_lb_result *owner;

		if (lb->invalid) {
			res->state = CTRL_L_INVALID;
			continue;
		}
		if (!lr->selected) {
			res->state = CTRL_L_NOT_SELECTED;
		} else if (denied(in, l->port)) {
			res->state = CTRL_L_DENIED;
		} else if (reserved(in, l)) {
			res->state = CTRL_L_RESERVED;
		} else if ((owner = claim(claims, n_claims, lr, l))) {
			res->state = CTRL_L_CONFLICT;
			memcpy(res->conflict_with, owner->key, sizeof(owner->key));
		} else if (backends) {
			out = &d->listeners[d->n_listeners];
			*out = (struct ctrl_listener){ .port = l->port, .protocol = l->protocol,
						       .spec = lb, .conf = l };
			if (snprintf(out->name, sizeof(out->name), "%s/%s/%s", lr->lb->meta.ns,
				     lr->lb->meta.name, l->name) >= (int)sizeof(out->name)) {
				res->state = CTRL_L_INVALID; /* the CRD bounds names: cannot happen */
				continue;
			}
			memcpy(out->lb_key, lr->key, sizeof(lr->key));
			d->n_listeners++;
		}
		/* Every listener's Service is resolved, served here or not: status counts it. */
		if (backends && (r = listener_backends(in, ix, lr->lb, l, res, out)))
			return r;
	}
	return 0;
}

int ctrl_reconcile(const struct ctrl_input *in, const struct k8s_obj *node, bool backends,
		   struct ctrl_desired **ret)
{
	struct ctrl_desired *d = calloc(1, sizeof(*d));
	struct slice_index ix = { 0 };
	struct claim *claims = NULL;
	size_t n_claims, used = 0;
	int r;

	if (!d)
		return -ENOMEM;
	r = results_init(in->lbs, d, &n_claims);
	if (r)
		goto out_free;
	r = -ENOMEM;
	if (n_claims && !(claims = calloc(n_claims, sizeof(*claims))))
		goto out_free;
	if (backends && n_claims && !(d->listeners = calloc(n_claims, sizeof(*d->listeners))))
		goto out_free;
	if (backends && (r = slice_index_build(in->slices, &ix)))
		goto out_free;
	for (size_t i = 0; i < d->n_lbs; i++) {
		r = lb_reconcile(in, &ix, node, backends, &d->lbs[i], claims, &used, d);
		if (r)
			goto out_free;
	}
	if (d->n_listeners)
		qsort(d->listeners, d->n_listeners, sizeof(*d->listeners), listener_name_cmp);
	free(ix.v);
	free(claims);
	*ret = d;
	return 0;
out_free:
	free(ix.v);
	free(claims);
	ctrl_desired_free(d);
	return r;
}

void ctrl_desired_free(struct ctrl_desired *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->n_listeners; i++)
		free(d->listeners[i].backends);
	for (size_t i = 0; i < d->n_lbs; i++)
		free(d->lbs[i].listeners);
	free(d->listeners);
	free(d->lbs);
	free(d);
}

/* --- the apply ------------------------------------------------------------------------- */

/*
 * The keys that only mean something for one protocol: the dataplane refuses each on a listener
 * of the other (connect_timeout_ms, max_connections and proxy_protocol on udp; responses and
 * max_flows on tcp), so a UDP listener leaves the LoadBalancer's TCP settings out.
 */
static bool listener_tcp_keys(cJSON *o, const struct k8s_lb *lb)
{
	bool ok = cJSON_AddNumberToObject(o, "connect_timeout_ms", lb->connect_timeout_s * 1000.0) &&
		  cJSON_AddNumberToObject(o, "idle_timeout_ms", lb->idle_timeout_s * 1000.0) &&
		  cJSON_AddStringToObject(o, "proxy_protocol", lb_proxy_protocol_name(lb->proxy));

	if (ok && lb->max_connections)
		ok = cJSON_AddNumberToObject(o, "max_connections", lb->max_connections) != NULL;
	return ok;
}

static bool listener_udp_keys(cJSON *o, const struct k8s_lb_listener *l)
{
	bool ok = cJSON_AddNumberToObject(o, "idle_timeout_ms", l->udp_idle_timeout_s * 1000.0) &&
		  cJSON_AddNumberToObject(o, "responses", l->responses);

	if (ok && l->max_flows)
		ok = cJSON_AddNumberToObject(o, "max_flows", l->max_flows) != NULL;
	return ok;
}

static bool listener_health(cJSON *o, const struct k8s_lb *lb)
{
	cJSON *hc = cJSON_AddObjectToObject(o, "health_check");
	bool ok = hc && cJSON_AddNumberToObject(hc, "interval_ms", lb->period_s * 1000.0) &&
		  cJSON_AddNumberToObject(hc, "timeout_ms", lb->timeout_s * 1000.0) &&
		  cJSON_AddNumberToObject(hc, "rise", lb->healthy) &&
		  cJSON_AddNumberToObject(hc, "fall", lb->unhealthy);

	/* Parsing made sure a UDP listener's checks have a port (objects.c). */
	if (ok && lb->health_port)
		ok = cJSON_AddNumberToObject(hc, "port", lb->health_port) != NULL;
	return ok;
}

static cJSON *listener_json(const struct ctrl_listener *l, const char *listen_host)
{
	const struct k8s_lb *lb = l->spec;
	bool udp = l->protocol == K8S_PROTO_UDP;
	cJSON *o = cJSON_CreateObject(), *bs;
	char listen[LB_ADDR_STRLEN + 8];
	bool ok = o != NULL;

	snprintf(listen, sizeof(listen), strchr(listen_host, ':') ? "[%s]:%u" : "%s:%u",
		 listen_host, l->port);
	ok = ok && cJSON_AddStringToObject(o, "name", l->name) &&
	     cJSON_AddStringToObject(o, "listen", listen) &&
	     cJSON_AddStringToObject(o, "protocol", udp ? "udp" : "tcp") &&
	     cJSON_AddStringToObject(o, "algorithm", lb_algo_name(lb->algorithm));
	ok = ok && (udp ? listener_udp_keys(o, l->conf) : listener_tcp_keys(o, lb));
	if (ok && lb->health)
		ok = listener_health(o, lb);
	ok = ok && (bs = cJSON_AddArrayToObject(o, "backends"));
	for (size_t i = 0; ok && i < l->n_backends; i++) {
		cJSON *b = cJSON_CreateObject();

		ok = b && cJSON_AddStringToObject(b, "address", l->backends[i].addr);
		if (b)
			cJSON_AddItemToArray(bs, b);
	}
	if (!ok) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

cJSON *ctrl_desired_json(const struct ctrl_desired *d, const char *listen_host)
{
	cJSON *ls = cJSON_CreateArray(), *l;

	for (size_t i = 0; ls && i < d->n_listeners; i++) {
		l = listener_json(&d->listeners[i], listen_host);
		if (!l) {
			cJSON_Delete(ls);
			return NULL;
		}
		cJSON_AddItemToArray(ls, l);
	}
	return ls;
}
