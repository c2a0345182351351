/*
 * fuzz_world.c - the controller's pure core on whatever the API server returns: newline-
 * separated JSON objects (LoadBalancers, Services, EndpointSlices, Endpoints, Nodes, told apart
 * by "kind") mapped as the informers map them (k8s_obj_from_json), cached, reconciled for the
 * first Node (or none), and turned into the apply and the statuses the controller writes.
 *
 * The oracle: the dataplane accepts the listeners the controller asks for.  An apply is
 * all-or-nothing, so a desired set the dataplane's parser refuses would leave the node on its
 * old state for every LoadBalancer, not only the broken one.
 */
#include <stdio.h>
#include <string.h>

#include "common/config.h"
#include "common/ctlproto.h"
#include "controller/core/lbstatus.h"
#include "controller/core/objects.h"
#include "controller/core/reconcile.h"
#include "controller/core/store.h"
#include "tests/fuzz/fuzz.h"

struct world {
	struct k8s_store lbs, svcs, slices, nodes;
	char node[K8S_NAME_MAX * 2];
};

static struct k8s_store *store_of(struct world *w, enum k8s_kind k)
{
	switch (k) {
	case K8S_KIND_LOADBALANCER:
		return &w->lbs;
	case K8S_KIND_SERVICE:
		return &w->svcs;
	case K8S_KIND_ENDPOINTSLICE:
	case K8S_KIND_ENDPOINTS: /* the informer maps them to slices */
		return &w->slices;
	default:
		return &w->nodes;
	}
}

static void put(struct world *w, const char *line, size_t len)
{
	cJSON *j = cJSON_ParseWithLength(line, len);
	const cJSON *kind = cJSON_GetObjectItemCaseSensitive(j, "kind");
	struct k8s_obj *o = NULL;
	char err[512];

	for (int k = 0; cJSON_IsString(kind) && k < K8S_KIND_COUNT; k++) {
		if (strcmp(kind->valuestring, k8s_kind_name((enum k8s_kind)k)))
			continue;
		if (k8s_obj_from_json((enum k8s_kind)k, j, &o, err, sizeof(err)))
			FUZZ_ASSERT(err[0]);
		else {
			if (k == K8S_KIND_NODE && !w->node[0])
				k8s_obj_key(&o->meta, w->node, sizeof(w->node));
			k8s_store_put(store_of(w, (enum k8s_kind)k), o);
		}
		break;
	}
	cJSON_Delete(j);
}

static void statuses(const struct ctrl_desired *d, const struct k8s_obj *node)
{
	struct ctrl_lb_agg *agg = calloc(d->n_lbs ? d->n_lbs : 1, sizeof(*agg));
	const char *failed_names[1], *failed_errors[1] = { "Address already in use" };
	struct ctrl_node_report rep = { .node = "node-a", .node_obj = node,
					.failed_names = failed_names,
					.failed_errors = failed_errors };

	if (!agg)
		return;
	ctrl_agg_add(agg, d, node);
	if (d->n_listeners) {
		failed_names[0] = d->listeners[0].name;
		rep.n_failed = 1;
	}
	for (size_t i = 0; i < d->n_lbs; i++) {
		const struct ctrl_lb_result *lr = &d->lbs[i];
		cJSON *events = NULL;
		cJSON *entry = lr->selected ? ctrl_node_entry(lr, &rep) : NULL;
		cJSON *summary = ctrl_lb_summary(lr, &agg[i], "2026-12-07T17:00:00Z", &events);

		ctrl_node_entry_same(ctrl_node_entry_current(lr->lb, "node-a"), entry);
		if (summary)
			ctrl_lb_summary_same(lr->lb, summary);
		cJSON_Delete(entry);
		cJSON_Delete(summary);
		cJSON_Delete(events);
	}
	free(agg);
}

/*
 * The apply as the controller sends it (push.c: the request printed as one line) goes through
 * the dataplane's whole path: the request parser and the merge with its file's listeners.
 */
static void accepted(cJSON *listeners, size_t n)
{
	static const char file_text[] = "control_socket: /run/x.sock\n";
	struct lb_config *file = NULL, *merged = NULL;
	struct lb_ctl_request req;
	cJSON *r = cJSON_CreateObject();
	char err[1024], *line;

	if (!r || !cJSON_AddStringToObject(r, "op", "apply") || !lb_json_add_u64(r, "version", 1)) {
		cJSON_Delete(r);
		return;
	}
	cJSON_AddItemReferenceToObject(r, "listeners", listeners);
	line = cJSON_PrintUnformatted(r);
	cJSON_Delete(r);
	if (!line)
		return;
	if (lb_ctl_request_parse(line, strlen(line), &req, err, sizeof(err))) {
		fprintf(stderr, "the dataplane refuses the apply: %s\n", err);
		__builtin_trap();
	}
	FUZZ_ASSERT(req.listeners->n_listeners == n);
	FUZZ_ASSERT(!lb_config_parse(file_text, sizeof(file_text) - 1, "lb.yaml", &file, err,
				     sizeof(err)));
	if (lb_config_merge(file, req.listeners, &merged, err, sizeof(err))) {
		fprintf(stderr, "the dataplane cannot merge the apply: %s\n", err);
		__builtin_trap();
	}
	lb_config_free(merged);
	lb_config_free(file);
	lb_ctl_request_clear(&req);
	free(line);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct ctrl_port_proto reserved[] = { { 8443, K8S_PROTO_TCP },
							  { 9000, K8S_PROTO_UDP } };
	static const struct ctrl_port_range denied[] = { { 22, 22 }, { 10248, 10260 } };
	struct world w = { 0 };
	struct ctrl_input in = { .lbs = &w.lbs, .services = &w.svcs, .slices = &w.slices,
				 .listen_host = "0.0.0.0", .reserved_ports = reserved,
				 .n_reserved = 2, .denied = denied, .n_denied = 2 };
	const char *p = (const char *)data, *end = p + size;
	struct ctrl_desired *d = NULL;
	const struct k8s_obj *node;

	if (k8s_store_init(&w.lbs) || k8s_store_init(&w.svcs) || k8s_store_init(&w.slices) ||
	    k8s_store_init(&w.nodes))
		goto out;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);

		put(&w, p, len);
		p += len + 1;
	}
	node = w.node[0] ? k8s_store_get(&w.nodes, w.node) : NULL;
	if (ctrl_reconcile(&in, node, false, &d) == 0) {
		statuses(d, node);
		ctrl_desired_free(d);
	}
	if (ctrl_reconcile(&in, node, true, &d) == 0) {
		cJSON *listeners = ctrl_desired_json(d, in.listen_host);
		char ports[256];

		if (listeners) {
			accepted(listeners, d->n_listeners);
			cJSON_Delete(listeners);
		}
		for (size_t i = 0; i < d->n_lbs; i++)
			if (!d->lbs[i].lb->lb.invalid)
				ctrl_lb_ports(&d->lbs[i].lb->lb, ports, sizeof(ports));
		statuses(d, node);
		ctrl_desired_free(d);
	}
out:
	k8s_store_free(&w.lbs);
	k8s_store_free(&w.svcs);
	k8s_store_free(&w.slices);
	k8s_store_free(&w.nodes);
	return 0;
}
