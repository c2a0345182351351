/* world.c - the reconcile tests' caches, filled from JSON as an informer fills them. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "world.h"

static cJSON *parse_quoted(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
static cJSON *parse_quoted(const char *fmt, va_list ap)
{
	static char buf[1 << 16];
	cJSON *j;
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);

	assert_true(n > 0 && (size_t)n < sizeof(buf));
	for (char *p = buf; *p; p++)
		if (*p == '\'')
			*p = '"';
	j = cJSON_Parse(buf);
	if (!j)
		fail_msg("test JSON does not parse: %s", buf);
	return j;
}

int obj_parse(enum k8s_kind kind, struct k8s_obj **ret, char *err, size_t errlen,
	      const char *fmt, ...)
{
	va_list ap;
	cJSON *j;
	int r;

	va_start(ap, fmt);
	j = parse_quoted(fmt, ap);
	va_end(ap);
	*ret = NULL;
	r = k8s_obj_from_json(kind, j, ret, err, errlen);
	cJSON_Delete(j);
	return r;
}

struct k8s_obj *obj_json(enum k8s_kind kind, const char *fmt, ...)
{
	struct k8s_obj *o = NULL;
	char err[256] = "";
	va_list ap;
	cJSON *j;
	int r;

	va_start(ap, fmt);
	j = parse_quoted(fmt, ap);
	va_end(ap);
	r = k8s_obj_from_json(kind, j, &o, err, sizeof(err));
	cJSON_Delete(j);
	if (r)
		fail_msg("k8s_obj_from_json: %d %s", r, err);
	return o;
}

void world_init(struct world *w)
{
	memset(w, 0, sizeof(*w));
	assert_int_equal(k8s_store_init(&w->lbs), 0);
	assert_int_equal(k8s_store_init(&w->svcs), 0);
	assert_int_equal(k8s_store_init(&w->slices), 0);
	assert_int_equal(k8s_store_init(&w->nodes), 0);
	w->listen_host = "0.0.0.0";
}

void world_free(struct world *w)
{
	k8s_store_free(&w->lbs);
	k8s_store_free(&w->svcs);
	k8s_store_free(&w->slices);
	k8s_store_free(&w->nodes);
}

void put_svc(struct world *w, const char *ns, const char *name, const char *ports)
{
	struct k8s_obj *o = obj_json(K8S_KIND_SERVICE,
				     "{'kind':'Service','apiVersion':'v1','metadata':{'name':'%s',"
				     "'namespace':'%s','resourceVersion':'100'},'spec':{'type':"
				     "'ClusterIP','clusterIP':'10.96.0.10','ports':%s}}",
				     name, ns, ports);

	assert_int_equal(k8s_store_put(&w->svcs, o), 0);
}

void put_slice(struct world *w, const char *ns, const char *name, const char *svc,
	       const char *family, const char *ports, const char *endpoints)
{
	char labels[256];
	struct k8s_obj *o;

	if (svc[0])
		snprintf(labels, sizeof(labels),
			 "{'kubernetes.io/service-name':'%s','endpointslice.kubernetes.io/"
			 "managed-by':'endpointslice-controller.k8s.io'}",
			 svc);
	else
		snprintf(labels, sizeof(labels), "{'app':'x'}");
	o = obj_json(K8S_KIND_ENDPOINTSLICE,
		     "{'kind':'EndpointSlice','apiVersion':'discovery.k8s.io/v1','metadata':{"
		     "'name':'%s','namespace':'%s','labels':%s},'addressType':'%s',"
		     "'endpoints':%s,'ports':%s}",
		     name, ns, labels, family, endpoints, ports);
	assert_int_equal(k8s_store_put(&w->slices, o), 0);
}

void put_lb_full(struct world *w, const char *ns, const char *name, const char *created,
		 int64_t generation, const char *spec, const char *extra)
{
	struct k8s_obj *o = obj_json(K8S_KIND_LOADBALANCER,
				     "{'apiVersion':'layer4lb.io/v1alpha1','kind':'LoadBalancer',"
				     "'metadata':{'name':'%s','namespace':'%s','uid':'u-%s',"
				     "'generation':%lld,'creationTimestamp':'%s'},'spec':%s%s}",
				     name, ns, name, (long long)generation, created, spec, extra);

	assert_int_equal(k8s_store_put(&w->lbs, o), 0);
}

void put_lb(struct world *w, const char *ns, const char *name, const char *created,
	    const char *spec)
{
	put_lb_full(w, ns, name, created, 1, spec, "");
}

struct k8s_obj *put_node(struct world *w, const char *name, const char *labels,
			 const char *addresses)
{
	struct k8s_obj *o = obj_json(K8S_KIND_NODE,
				     "{'kind':'Node','apiVersion':'v1','metadata':{'name':'%s',"
				     "'labels':%s},'status':{'addresses':%s}}",
				     name, labels, addresses);
	char key[K8S_NAME_MAX];

	assert_int_equal(k8s_store_put(&w->nodes, o), 0);
	snprintf(key, sizeof(key), "%s", name);
	return k8s_store_get(&w->nodes, key);
}

struct ctrl_desired *world_reconcile(const struct world *w, const struct k8s_obj *node,
				     bool backends)
{
	struct ctrl_input in = {
		.lbs = &w->lbs, .services = &w->svcs, .slices = &w->slices,
		.listen_host = w->listen_host, .reserved_ports = w->reserved,
		.n_reserved = w->n_reserved, .denied = w->denied, .n_denied = w->n_denied,
	};
	struct ctrl_desired *d = NULL;

	assert_int_equal(ctrl_reconcile(&in, node, backends, &d), 0);
	assert_non_null(d);
	return d;
}

const struct ctrl_listener *find_listener(const struct ctrl_desired *d, const char *name)
{
	for (size_t i = 0; i < d->n_listeners; i++)
		if (!strcmp(d->listeners[i].name, name))
			return &d->listeners[i];
	return NULL;
}

const struct ctrl_lb_result *find_lb(const struct ctrl_desired *d, const char *key)
{
	for (size_t i = 0; i < d->n_lbs; i++)
		if (!strcmp(d->lbs[i].key, key))
			return &d->lbs[i];
	fail_msg("no LoadBalancer %s in the result", key);
	return NULL;
}

const char *backends_str(const struct ctrl_listener *l, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = 0;
	for (size_t i = 0; l && i < l->n_backends && off < len; i++)
		off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? "," : "",
					l->backends[i].addr);
	return buf;
}

char *desired_text(const struct ctrl_desired *d, const char *listen_host)
{
	cJSON *j = ctrl_desired_json(d, listen_host);
	char *s;

	assert_non_null(j);
	s = cJSON_PrintUnformatted(j);
	cJSON_Delete(j);
	assert_non_null(s);
	return s;
}
