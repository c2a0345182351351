/* objects.c - the Kubernetes objects the controller reads, copied out of their JSON into small structs. */
#include "controller/core/objects.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const kind_names[] = {
	[K8S_KIND_LOADBALANCER] = "LoadBalancer", [K8S_KIND_SERVICE] = "Service",
	[K8S_KIND_ENDPOINTSLICE] = "EndpointSlice", [K8S_KIND_ENDPOINTS] = "Endpoints",
	[K8S_KIND_NODE] = "Node",
};

const char *k8s_kind_name(enum k8s_kind k)
{
	return (unsigned)k < K8S_KIND_COUNT ? kind_names[k] : "?";
}

const char *k8s_proto_name(enum k8s_proto p)
{
	return p == K8S_PROTO_UDP ? "UDP" : p == K8S_PROTO_SCTP ? "SCTP" : "TCP";
}

/* --- JSON helpers: absent and mistyped read alike, as the default ------------------------ */

static const cJSON *get(const cJSON *o, const char *k)
{
	return cJSON_GetObjectItemCaseSensitive(o, k);
}

static const char *get_str(const cJSON *o, const char *k)
{
	const cJSON *v = get(o, k);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* An integer field in [min, max], else def (the schema bounds it; this keeps C honest). */
static int64_t get_int(const cJSON *o, const char *k, int64_t min, int64_t max, int64_t def)
{
	const cJSON *v = get(o, k);

	/* In range before the cast: converting a double beyond int64_t is undefined (fuzz_world). */
	static const double two63 = 9223372036854775808.0;

	if (!cJSON_IsNumber(v) || !(v->valuedouble >= -two63 && v->valuedouble < two63) ||
	    v->valuedouble != (double)(int64_t)v->valuedouble || v->valuedouble < (double)min ||
	    v->valuedouble > (double)max)
		return def;
	return (int64_t)v->valuedouble;
}

static bool get_bool(const cJSON *o, const char *k, bool def)
{
	const cJSON *v = get(o, k);

	return cJSON_IsBool(v) ? cJSON_IsTrue(v) : def;
}

/* Copy a string that must fit; false when it is absent or too long. */
static bool copy_str(char *dst, size_t len, const char *s)
{
	size_t n;

	if (!s || (n = strlen(s)) >= len)
		return false;
	memcpy(dst, s, n + 1);
	return true;
}

/*
 * A DNS-1123 name as the API server validates metadata (lowercase letters, digits, '-', and
 * for subdomains '.'; alphanumeric at both ends).  Names end up in the dataplane's listener
 * names, which refuse other characters: an object the API server could not have stored (a
 * relay's corruption) must not make an apply that fails as a whole.
 */
static bool dns_name(const char *s, bool dots)
{
	size_t n = strlen(s);

	if (!n || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-' ||
		      (dots && s[i] == '.')))
			return false;
	return true;
}

static enum k8s_proto proto_parse(const char *s, bool *ok)
{
	*ok = true;
	if (!s || !strcmp(s, "TCP"))
		return K8S_PROTO_TCP;
	if (!strcmp(s, "UDP"))
		return K8S_PROTO_UDP;
	if (!strcmp(s, "SCTP"))
		return K8S_PROTO_SCTP;
	*ok = false;
	return K8S_PROTO_TCP;
}

/* --- time ------------------------------------------------------------------------------ */

int k8s_time_parse(const char *s, int64_t *ret)
{
	struct tm tm = { 0 };
	const char *p;
	int64_t t;

	if (!s)
		return -EINVAL;
	p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!p)
		return -EINVAL;
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9'; p++)
			;
	t = (int64_t)timegm(&tm);
	if (*p == 'Z' && p[1] == 0) {
		*ret = t;
		return 0;
	}
	if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
		int h = (p[1] - '0') * 10 + (p[2] - '0'), m = (p[4] - '0') * 10 + (p[5] - '0');

		*ret = *p == '+' ? t - (h * 3600 + m * 60) : t + (h * 3600 + m * 60);
		return 0;
	}
	return -EINVAL;
}

void k8s_time_format(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* --- metadata and labels --------------------------------------------------------------- */

const char *k8s_json_rv(const cJSON *obj)
{
	return get_str(get(obj, "metadata"), "resourceVersion");
}

void k8s_obj_key(const struct k8s_meta *m, char *buf, size_t len)
{
	if (m->ns[0])
		snprintf(buf, len, "%s/%s", m->ns, m->name);
	else
		snprintf(buf, len, "%s", m->name);
}

static int meta_parse(const cJSON *json, struct k8s_meta *m, char *err, size_t errlen)
{
	const cJSON *md = get(json, "metadata");
	const char *ns = get_str(md, "namespace"), *name = get_str(md, "name");

	if (!cJSON_IsObject(md) || !name || !name[0]) {
		snprintf(err, errlen, "metadata.name: missing");
		return -EINVAL;
	}
	if (!copy_str(m->name, sizeof(m->name), name) ||
	    (ns && !copy_str(m->ns, sizeof(m->ns), ns))) {
		snprintf(err, errlen, "metadata: namespace or name too long");
		return -EINVAL;
	}
	if (!dns_name(m->name, true) || (m->ns[0] && !dns_name(m->ns, false))) {
		snprintf(err, errlen, "metadata: namespace or name is not a DNS name");
		return -EINVAL;
	}
	copy_str(m->uid, sizeof(m->uid), get_str(md, "uid"));
	copy_str(m->rv, sizeof(m->rv), get_str(md, "resourceVersion"));
	m->generation = get_int(md, "generation", 0, INT64_MAX / 2, 0);
	if (k8s_time_parse(get_str(md, "creationTimestamp"), &m->created))
		m->created = 0;
	return 0;
}

static void labels_free(struct k8s_label *l, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(l[i].key);
		free(l[i].value);
	}
	free(l);
}

/* A string map (labels, matchLabels): -ENOMEM only; non-string values are skipped. */
static int labels_parse(const cJSON *map, struct k8s_label **ret, size_t *ret_n)
{
	size_t n = 0, cap = (size_t)cJSON_GetArraySize(map);
	struct k8s_label *l;
	const cJSON *it;

	*ret = NULL;
	*ret_n = 0;
	if (!cJSON_IsObject(map) || cap == 0)
		return 0;
	l = calloc(cap, sizeof(*l));
	if (!l)
		return -ENOMEM;
	cJSON_ArrayForEach(it, map) {
		if (!cJSON_IsString(it) || !it->string)
			continue;
		l[n].key = strdup(it->string);
		l[n].value = strdup(it->valuestring);
		if (!l[n].key || !l[n].value) {
			labels_free(l, n + 1);
			return -ENOMEM;
		}
		n++;
	}
	*ret = l;
	*ret_n = n;
	return 0;
}

static const char *label_get(const struct k8s_label *l, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(l[i].key, key))
			return l[i].value;
	return NULL;
}

/* --- label selectors ------------------------------------------------------------------- */

static void selector_clear(struct k8s_selector *s)
{
	labels_free(s->labels, s->n_labels);
	for (size_t i = 0; i < s->n_exprs; i++) {
		for (size_t j = 0; j < s->exprs[i].n_values; j++)
			free(s->exprs[i].values[j]);
		free(s->exprs[i].values);
		free(s->exprs[i].key);
	}
	free(s->exprs);
	*s = (struct k8s_selector){ 0 };
}

/* 0, -ENOMEM, or -EINVAL with err naming what is wrong. */
static int selector_parse(const cJSON *js, struct k8s_selector *s, char *err, size_t errlen)
{
	static const char *const ops[] = { "In", "NotIn", "Exists", "DoesNotExist" };
	const cJSON *exprs = get(js, "matchExpressions"), *e;
	size_t i = 0;
	int r;

	r = labels_parse(get(js, "matchLabels"), &s->labels, &s->n_labels);
	if (r || !cJSON_IsArray(exprs) || cJSON_GetArraySize(exprs) == 0)
		return r;
	s->exprs = calloc((size_t)cJSON_GetArraySize(exprs), sizeof(*s->exprs));
	if (!s->exprs)
		return -ENOMEM;
	cJSON_ArrayForEach(e, exprs) {
		struct k8s_sel_req *q = &s->exprs[i];
		const char *key = get_str(e, "key"), *op = get_str(e, "operator");
		const cJSON *vals = get(e, "values"), *v;
		unsigned o;

		for (o = 0; op && o < 4; o++)
			if (!strcmp(op, ops[o]))
				break;
		if (!key || !op || o == 4) {
			snprintf(err, errlen,
				 "spec.nodeSelector.matchExpressions[%zu]: needs a key and an operator "
				 "of In, NotIn, Exists, DoesNotExist", i);
			return -EINVAL;
		}
		q->op = (enum k8s_sel_op)o;
		q->key = strdup(key);
		if (!q->key)
			return -ENOMEM;
		s->n_exprs = ++i;
		if (cJSON_IsArray(vals) && cJSON_GetArraySize(vals) > 0) {
			q->values = calloc((size_t)cJSON_GetArraySize(vals), sizeof(char *));
			if (!q->values)
				return -ENOMEM;
			cJSON_ArrayForEach(v, vals) {
				if (!cJSON_IsString(v))
					continue;
				if (!(q->values[q->n_values] = strdup(v->valuestring)))
					return -ENOMEM;
				q->n_values++;
			}
		}
		if ((q->op <= K8S_SEL_NOT_IN) != (q->n_values > 0)) {
			snprintf(err, errlen,
				 "spec.nodeSelector.matchExpressions[%zu]: %s %s values", i - 1, op,
				 q->op <= K8S_SEL_NOT_IN ? "needs" : "takes no");
			return -EINVAL;
		}
	}
	return 0;
}

bool k8s_selector_matches(const struct k8s_selector *s, const struct k8s_label *labels,
			  size_t n_labels)
{
	for (size_t i = 0; i < s->n_labels; i++) {
		const char *v = label_get(labels, n_labels, s->labels[i].key);

		if (!v || strcmp(v, s->labels[i].value))
			return false;
	}
	for (size_t i = 0; i < s->n_exprs; i++) {
		const struct k8s_sel_req *q = &s->exprs[i];
		const char *v = label_get(labels, n_labels, q->key);
		bool in = false;

		for (size_t j = 0; v && j < q->n_values; j++)
			in |= !strcmp(v, q->values[j]);
		switch (q->op) {
		case K8S_SEL_IN:
			if (!in)
				return false;
			break;
		case K8S_SEL_NOT_IN: /* as Kubernetes: a missing label is "not in" */
			if (in)
				return false;
			break;
		case K8S_SEL_EXISTS:
			if (!v)
				return false;
			break;
		case K8S_SEL_DOES_NOT_EXIST:
			if (v)
				return false;
			break;
		}
	}
	return true;
}

/* --- LoadBalancer ---------------------------------------------------------------------- */

static int lb_invalid(struct k8s_lb *lb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int lb_invalid(struct k8s_lb *lb, const char *fmt, ...)
{
	va_list ap;
	char msg[512];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	free(lb->invalid);
	lb->invalid = strdup(msg);
	return lb->invalid ? 0 : -ENOMEM;
}

static int lb_algo_from_crd(const char *s, enum lb_algo *ret)
{
	static const struct {
		const char *name;
		enum lb_algo algo;
	} map[] = {
		{ "RoundRobin", LB_ALGO_ROUND_ROBIN },
		{ "LeastConnections", LB_ALGO_LEAST_CONN },
		{ "RandomTwo", LB_ALGO_RANDOM_TWO },
		{ "Maglev", LB_ALGO_MAGLEV },
	};

	if (!s) {
		*ret = LB_ALGO_ROUND_ROBIN;
		return 0;
	}
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (!strcmp(s, map[i].name)) {
			*ret = map[i].algo;
			return 0;
		}
	return -EINVAL;
}

/*
 * listeners[i].udp: a UDP listener's flow settings, with their defaults when it is absent.  On
 * a TCP listener it is refused rather than ignored: someone wrote settings that would do
 * nothing, most likely on the wrong listener.
 */
static int lb_listener_udp_parse(struct k8s_lb *lb, struct k8s_lb_listener *l, const cJSON *udp,
				 size_t i)
{
	if (udp && !cJSON_IsNull(udp) && l->protocol != K8S_PROTO_UDP)
		return lb_invalid(lb, "spec.listeners[%zu].udp: only for a UDP listener, and this "
				      "one is %s", i, k8s_proto_name(l->protocol));
	l->responses = (unsigned)get_int(udp, "responses", 0, 1000000, 0);
	l->max_flows = (unsigned)get_int(udp, "maxFlows", 1, 1000000, 0);
	l->udp_idle_timeout_s = (unsigned)get_int(udp, "idleTimeoutSeconds", 1, 86400,
						  K8S_UDP_IDLE_TIMEOUT_S);
	return 0;
}

static int lb_listener_parse(struct k8s_lb *lb, const cJSON *js, size_t i)
{
	struct k8s_lb_listener *l = &lb->listeners[i];
	const cJSON *ref = get(get(js, "backend"), "serviceRef"), *port;
	bool ok;
	int r;

	if (!copy_str(l->name, sizeof(l->name), get_str(js, "name")) || !dns_name(l->name, false))
		return lb_invalid(lb, "spec.listeners[%zu].name: missing, longer than 63, or not "
				      "a DNS label", i);
	l->protocol = proto_parse(get_str(js, "protocol"), &ok);
	if (!ok || l->protocol == K8S_PROTO_SCTP)
		return lb_invalid(lb, "spec.listeners[%zu].protocol: must be TCP or UDP", i);
	r = lb_listener_udp_parse(lb, l, get(js, "udp"), i);
	if (r || lb->invalid)
		return r;
	l->port = (uint16_t)get_int(js, "port", 1, 65535, 0);
	if (!l->port)
		return lb_invalid(lb, "spec.listeners[%zu].port: must be 1 to 65535", i);
	if (!copy_str(l->svc, sizeof(l->svc), get_str(ref, "name")) || !l->svc[0])
		return lb_invalid(lb, "spec.listeners[%zu].backend.serviceRef.name: missing", i);
	port = get(ref, "port");
	l->svc_port = (uint16_t)get_int(ref, "port", 1, 65535, 0);
	if (!l->svc_port && !(cJSON_IsString(port) && port->valuestring[0] &&
			      copy_str(l->svc_port_name, sizeof(l->svc_port_name),
				       port->valuestring)))
		return lb_invalid(lb,
				  "spec.listeners[%zu].backend.serviceRef.port: must be a port "
				  "number 1 to 65535 or a port name", i);
	for (size_t j = 0; j < i; j++) {
		if (!strcmp(lb->listeners[j].name, l->name))
			return lb_invalid(lb, "spec.listeners[%zu].name: \"%s\" is used twice", i,
					  l->name);
		if (lb->listeners[j].port == l->port && lb->listeners[j].protocol == l->protocol)
			return lb_invalid(lb, "spec.listeners[%zu]: port %u/%s is used twice", i,
					  l->port, k8s_proto_name(l->protocol));
	}
	return 0;
}

/*
 * An active check is a TCP connect: a UDP port cannot tell an idle server from a dead one, so
 * a UDP listener is checked only on a TCP port named for it (the dataplane refuses a udp
 * listener's health_check without one).  Refused rather than left unchecked: whoever turned
 * checks on expects every listener to have them.
 */
static int lb_health_udp_check(struct k8s_lb *lb)
{
	if (!lb->health || lb->health_port)
		return 0;
	for (size_t i = 0; i < lb->n_listeners; i++)
		if (lb->listeners[i].protocol == K8S_PROTO_UDP)
			return lb_invalid(lb, "spec.healthCheck.port: required when a listener is "
					      "UDP (listener %s): a health check is a TCP connect, "
					      "so UDP endpoints are checked on that TCP port",
					  lb->listeners[i].name);
	return 0;
}

static int lb_parse(const cJSON *json, struct k8s_lb *lb)
{
	const cJSON *spec = get(json, "spec"), *hc, *ls, *it;
	const char *pp;
	char err[256];
	size_t i = 0;
	int r;

	lb->status = cJSON_Duplicate(get(json, "status"), 1); /* NULL when absent */
	if (!cJSON_IsObject(spec))
		return lb_invalid(lb, "spec: missing");
	if (lb_algo_from_crd(get_str(spec, "algorithm"), &lb->algorithm))
		return lb_invalid(lb, "spec.algorithm: must be RoundRobin, LeastConnections, "
				      "RandomTwo or Maglev");
	hc = get(spec, "healthCheck");
	lb->health = cJSON_IsObject(hc);
	lb->period_s = (unsigned)get_int(hc, "periodSeconds", 1, 3600, 2);
	lb->timeout_s = (unsigned)get_int(hc, "timeoutSeconds", 1, 3600, 1);
	lb->healthy = (unsigned)get_int(hc, "healthyThreshold", 1, 100, 2);
	lb->unhealthy = (unsigned)get_int(hc, "unhealthyThreshold", 1, 100, 3);
	lb->health_port = (unsigned)get_int(hc, "port", 1, 65535, 0);
	if (lb->health && lb->timeout_s >= lb->period_s)
		return lb_invalid(lb, "spec.healthCheck.timeoutSeconds: must be less than "
				      "periodSeconds");
	lb->connect_timeout_s = (unsigned)get_int(spec, "connectTimeoutSeconds", 1, 3600, 3);
	lb->idle_timeout_s = (unsigned)get_int(spec, "idleTimeoutSeconds", 1, 86400, 300);
	lb->max_connections = (unsigned)get_int(spec, "maxConnections", 1, 10000000, 0);
	pp = get_str(spec, "proxyProtocol");
	if (!pp || !strcmp(pp, "None"))
		lb->proxy = LB_PROXY_OFF;
	else if (!strcmp(pp, "V1"))
		lb->proxy = LB_PROXY_V1;
	else if (!strcmp(pp, "V2"))
		lb->proxy = LB_PROXY_V2;
	else
		return lb_invalid(lb, "spec.proxyProtocol: must be None, V1 or V2");
	lb->use_terminating = get_bool(get(spec, "drain"), "useTerminatingEndpoints", true);
	if (cJSON_IsObject(get(spec, "nodeSelector"))) {
		r = selector_parse(get(spec, "nodeSelector"), &lb->node_selector, err,
				   sizeof(err));
		if (r)
			return r == -EINVAL ? lb_invalid(lb, "%s", err) : r;
	}
	ls = get(spec, "listeners");
	if (!cJSON_IsArray(ls) || cJSON_GetArraySize(ls) == 0 || cJSON_GetArraySize(ls) > 64)
		return lb_invalid(lb, "spec.listeners: must be a list of 1 to 64 listeners");
	lb->listeners = calloc((size_t)cJSON_GetArraySize(ls), sizeof(*lb->listeners));
	if (!lb->listeners)
		return -ENOMEM;
	cJSON_ArrayForEach(it, ls) {
		r = lb_listener_parse(lb, it, i);
		if (r || lb->invalid)
			return r;
		lb->n_listeners = ++i;
	}
	return lb_health_udp_check(lb);
}

/* --- Service, EndpointSlice and Endpoints ----------------------------------------------- */

/* Ports of a Service (need_port: a port without a number is skipped) or of a slice. */
static int ports_parse(const cJSON *ports, bool need_port, struct k8s_port **ret, size_t *ret_n)
{
	const cJSON *p;
	bool ok;

	if (!cJSON_IsArray(ports) || cJSON_GetArraySize(ports) == 0)
		return 0;
	*ret = calloc((size_t)cJSON_GetArraySize(ports), sizeof(**ret));
	if (!*ret)
		return -ENOMEM;
	cJSON_ArrayForEach(p, ports) {
		struct k8s_port *sp = &(*ret)[*ret_n];

		sp->port = (uint16_t)get_int(p, "port", 1, 65535, 0);
		sp->protocol = proto_parse(get_str(p, "protocol"), &ok);
		if (!ok || (need_port && !sp->port))
			continue;
		copy_str(sp->name, sizeof(sp->name), get_str(p, "name"));
		(*ret_n)++;
	}
	return 0;
}

static int svc_parse(const cJSON *json, struct k8s_service *s)
{
	return ports_parse(get(get(json, "spec"), "ports"), true, &s->ports, &s->n_ports);
}

static int slice_ports_parse(const cJSON *ports, struct k8s_slice *s)
{
	return ports_parse(ports, false, &s->ports, &s->n_ports);
}

/* An address of the slice's family, in its canonical text (so duplicates compare equal). */
static bool ep_addr(int family, const char *s, char *buf, size_t len)
{
	unsigned char bin[16];

	if (!s || inet_pton(family, s, bin) != 1)
		return false;
	return inet_ntop(family, bin, buf, (socklen_t)len) != NULL;
}

static int slice_parse(const cJSON *json, struct k8s_slice *s)
{
	const char *at = get_str(json, "addressType");
	const cJSON *eps = get(json, "endpoints"), *e, *a;
	size_t cap = 0;
	int r;

	copy_str(s->service, sizeof(s->service),
		 get_str(get(get(json, "metadata"), "labels"), "kubernetes.io/service-name"));
	s->family = at && !strcmp(at, "IPv4") ? AF_INET : at && !strcmp(at, "IPv6") ? AF_INET6 : 0;
	r = slice_ports_parse(get(json, "ports"), s);
	if (r || !s->family || !cJSON_IsArray(eps))
		return r;
	cJSON_ArrayForEach(e, eps)
		cap += (size_t)cJSON_GetArraySize(get(e, "addresses"));
	if (!cap)
		return 0;
	s->eps = calloc(cap, sizeof(*s->eps));
	if (!s->eps)
		return -ENOMEM;
	cJSON_ArrayForEach(e, eps) {
		const cJSON *c = get(e, "conditions");
		bool ready = get_bool(c, "ready", true);
		bool serving = get_bool(c, "serving", ready);
		bool terminating = get_bool(c, "terminating", false);

		cJSON_ArrayForEach(a, get(e, "addresses")) {
			struct k8s_endpoint *ep = &s->eps[s->n_eps];

			if (!cJSON_IsString(a) ||
			    !ep_addr(s->family, a->valuestring, ep->addr, sizeof(ep->addr)))
				continue;
			ep->ready = ready;
			ep->serving = serving;
			ep->terminating = terminating;
			s->n_eps++;
		}
	}
	return 0;
}

/*
 * core/v1 Endpoints as a slice: the object is named after its Service, addresses are ready and
 * notReadyAddresses are not (Endpoints has no "terminating"); the first subset's ports stand
 * for all (the API puts endpoints with different ports in different subsets, and an old
 * cluster's Service rarely has them: good enough for the option it is).
 */
static int endpoints_parse(const cJSON *json, const struct k8s_meta *m, struct k8s_slice *s)
{
	const cJSON *subsets = get(json, "subsets"), *ss, *a;
	size_t cap = 0;
	int r;

	copy_str(s->service, sizeof(s->service), m->name);
	s->family = AF_INET; /* replaced per address below */
	cJSON_ArrayForEach(ss, subsets)
		cap += (size_t)cJSON_GetArraySize(get(ss, "addresses")) +
		       (size_t)cJSON_GetArraySize(get(ss, "notReadyAddresses"));
	if (cap && !(s->eps = calloc(cap, sizeof(*s->eps))))
		return -ENOMEM;
	cJSON_ArrayForEach(ss, subsets) {
		if (!s->n_ports && (r = slice_ports_parse(get(ss, "ports"), s)))
			return r;
		for (int ready = 1; ready >= 0; ready--)
			cJSON_ArrayForEach(a, get(ss, ready ? "addresses" : "notReadyAddresses")) {
				struct k8s_endpoint *ep = &s->eps[s->n_eps];
				const char *ip = get_str(a, "ip");

				if (!ep_addr(AF_INET, ip, ep->addr, sizeof(ep->addr)) &&
				    !ep_addr(AF_INET6, ip, ep->addr, sizeof(ep->addr)))
					continue;
				ep->ready = ep->serving = ready;
				s->n_eps++;
			}
	}
	return 0;
}

/* --- Node ------------------------------------------------------------------------------ */

static int node_parse(const cJSON *json, struct k8s_node *n)
{
	const cJSON *addrs = get(get(json, "status"), "addresses"), *a;
	int r;

	r = labels_parse(get(get(json, "metadata"), "labels"), &n->labels, &n->n_labels);
	if (r || !cJSON_IsArray(addrs) || cJSON_GetArraySize(addrs) == 0)
		return r;
	n->addrs = calloc((size_t)cJSON_GetArraySize(addrs), sizeof(*n->addrs));
	if (!n->addrs)
		return -ENOMEM;
	cJSON_ArrayForEach(a, addrs) {
		struct k8s_node_addr *na = &n->addrs[n->n_addrs];

		if (copy_str(na->type, sizeof(na->type), get_str(a, "type")) &&
		    copy_str(na->addr, sizeof(na->addr), get_str(a, "address")))
			n->n_addrs++;
	}
	return 0;
}

/* --- the object ------------------------------------------------------------------------ */

int k8s_obj_from_json(enum k8s_kind kind, const cJSON *json, struct k8s_obj **ret, char *err,
		      size_t errlen)
{
	struct k8s_obj *o = calloc(1, sizeof(*o));
	int r;

	if (!o)
		return -ENOMEM;
	o->kind = kind;
	r = meta_parse(json, &o->meta, err, errlen);
	if (r)
		goto out_free;
	switch (kind) {
	case K8S_KIND_LOADBALANCER:
		r = lb_parse(json, &o->lb);
		break;
	case K8S_KIND_SERVICE:
		r = svc_parse(json, &o->svc);
		break;
	case K8S_KIND_ENDPOINTSLICE:
		r = slice_parse(json, &o->slice);
		break;
	case K8S_KIND_ENDPOINTS:
		r = endpoints_parse(json, &o->meta, &o->slice);
		break;
	case K8S_KIND_NODE:
		r = node_parse(json, &o->node);
		break;
	default:
		r = -EINVAL;
	}
	if (r == -ENOMEM)
		snprintf(err, errlen, "out of memory");
	if (r)
		goto out_free;
	*ret = o;
	return 0;
out_free:
	k8s_obj_free(o);
	return r;
}

void k8s_obj_free(struct k8s_obj *o)
{
	if (!o)
		return;
	switch (o->kind) {
	case K8S_KIND_LOADBALANCER:
		free(o->lb.invalid);
		selector_clear(&o->lb.node_selector);
		free(o->lb.listeners);
		cJSON_Delete(o->lb.status);
		break;
	case K8S_KIND_SERVICE:
		free(o->svc.ports);
		break;
	case K8S_KIND_ENDPOINTSLICE:
	case K8S_KIND_ENDPOINTS:
		free(o->slice.ports);
		free(o->slice.eps);
		break;
	case K8S_KIND_NODE:
		labels_free(o->node.labels, o->node.n_labels);
		free(o->node.addrs);
		break;
	default:
		break;
	}
	free(o);
}
