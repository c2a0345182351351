/*
 * lbstatus.c - a LoadBalancer's status: this node's entry, and the Lease holder's summary of all.
 *
 * Two writers share one status without stepping on each other, through server-side apply:
 * each node's controller owns its own entry of status.nodes (a list keyed by name, field
 * manager "layer4-lb-node-<node>"): whether its dataplane serves the LoadBalancer and why not.
 * The Lease holder owns the rest (conditions, listeners, addresses, ports), which it derives
 * from the caches and from those entries.  Both are pure functions here; nothing is written
 * unless it differs from what the object already says, so status writes do not feed back
 * into endless reconciles.
 */
#include "controller/core/lbstatus.h"

#include <stdio.h>
#include <string.h>

static const cJSON *get(const cJSON *o, const char *k)
{
	return cJSON_GetObjectItemCaseSensitive(o, k);
}

/* --- this node's entry --------------------------------------------------------------------- */

static bool add_addresses(cJSON *entry, const struct k8s_obj *node)
{
	static const char *const order[] = { "ExternalIP", "InternalIP" };
	cJSON *a = cJSON_AddArrayToObject(entry, "addresses");

	for (size_t k = 0; a && node && k < 2; k++)
		for (size_t i = 0; i < node->node.n_addrs; i++) {
			cJSON *s;

			if (strcmp(node->node.addrs[i].type, order[k]))
				continue;
			if (!(s = cJSON_CreateString(node->node.addrs[i].addr)))
				return false;
			cJSON_AddItemToArray(a, s);
		}
	return a != NULL;
}

cJSON *ctrl_node_entry(const struct ctrl_lb_result *lr, const struct ctrl_node_report *rep)
{
	const struct k8s_lb *lb = &lr->lb->lb;
	char msg[CTRL_MSG_MAX * 2] = "", name[K8S_LABEL_MAX * 2 + K8S_NAME_MAX];
	const char *reason = "Programmed";
	size_t served = 0, off = 0;
	cJSON *e;

	for (size_t i = 0; i < lb->n_listeners; i++) {
		const struct ctrl_listener_result *res = &lr->listeners[i];

		if (res->state == CTRL_L_CONFLICT || res->state == CTRL_L_RESERVED ||
		    res->state == CTRL_L_DENIED) {
			if (!strcmp(reason, "Programmed"))
				reason = res->state == CTRL_L_CONFLICT ? "PortConflict"
					 : res->state == CTRL_L_DENIED ? "PortDenied"
								       : "PortInUse";
			off += (size_t)snprintf(msg + off, off < sizeof(msg) ? sizeof(msg) - off : 0,
						"%slistener %s: port %u/%s %s%s", off ? "; " : "",
						lb->listeners[i].name, lb->listeners[i].port,
						k8s_proto_name(lb->listeners[i].protocol),
						res->state == CTRL_L_CONFLICT
							? "is held by LoadBalancer "
						: res->state == CTRL_L_DENIED
							? "is one no LoadBalancer may take on "
							  "this cluster's nodes (the controller's "
							  "--deny-ports)"
							: "is a listener of the dataplane's own "
							  "configuration",
						res->state == CTRL_L_CONFLICT ? res->conflict_with : "");
			continue;
		}
		if (res->state != CTRL_L_SERVED)
			continue;
		served++;
		snprintf(name, sizeof(name), "%s/%s/%s", lr->lb->meta.ns, lr->lb->meta.name,
			 lb->listeners[i].name);
		for (size_t j = 0; j < rep->n_failed; j++) {
			if (strcmp(rep->failed_names[j], name))
				continue;
			reason = "BindFailed";
			off += (size_t)snprintf(msg + off, off < sizeof(msg) ? sizeof(msg) - off : 0,
						"%slistener %s: %s", off ? "; " : "",
						lb->listeners[i].name, rep->failed_errors[j]);
			served--;
		}
	}
	if (rep->apply_error) {
		reason = "ApplyFailed";
		snprintf(msg, sizeof(msg), "the dataplane refused the apply: %s", rep->apply_error);
		served = 0;
	} else if (!strcmp(reason, "Programmed")) {
		snprintf(msg, sizeof(msg), "%zu listener%s served", served, served == 1 ? "" : "s");
	}
	e = cJSON_CreateObject();
	if (!e || !cJSON_AddStringToObject(e, "name", rep->node) || !add_addresses(e, rep->node_obj) ||
	    !cJSON_AddBoolToObject(e, "programmed", served > 0 && !strcmp(reason, "Programmed")) ||
	    !cJSON_AddStringToObject(e, "reason", reason) ||
	    !cJSON_AddStringToObject(e, "message", msg) ||
	    !cJSON_AddNumberToObject(e, "observedGeneration", (double)lr->lb->meta.generation)) {
		cJSON_Delete(e);
		return NULL;
	}
	return e;
}

const cJSON *ctrl_node_entry_current(const struct k8s_obj *lb, const char *node)
{
	const cJSON *n;

	cJSON_ArrayForEach(n, get(lb->lb.status, "nodes")) {
		const cJSON *name = get(n, "name");

		if (cJSON_IsString(name) && !strcmp(name->valuestring, node))
			return n;
	}
	return NULL;
}

bool ctrl_node_entry_same(const cJSON *current, const cJSON *entry)
{
	return current && cJSON_Compare(current, entry, true);
}

/* --- the summary ----------------------------------------------------------------------------- */

void ctrl_agg_add(struct ctrl_lb_agg *agg, const struct ctrl_desired *d,
		  const struct k8s_obj *node)
{
	for (size_t i = 0; i < d->n_lbs; i++) {
		const struct ctrl_lb_result *lr = &d->lbs[i];

		if (!lr->selected)
			continue;
		agg[i].nodes_selected++;
		for (size_t j = 0; j < lr->lb->lb.n_listeners && !agg[i].conflict; j++) {
			if (lr->listeners[j].state != CTRL_L_CONFLICT)
				continue;
			agg[i].conflict = true;
			snprintf(agg[i].conflict_msg, sizeof(agg[i].conflict_msg),
				 "listener %s: port %u/%s on node %s is held by LoadBalancer %s "
				 "(older)",
				 lr->lb->lb.listeners[j].name, lr->lb->lb.listeners[j].port,
				 k8s_proto_name(lr->lb->lb.listeners[j].protocol),
				 node ? node->meta.name : "?", lr->listeners[j].conflict_with);
		}
	}
}

static const cJSON *current_condition(const struct k8s_obj *lb, const char *type)
{
	const cJSON *c;

	cJSON_ArrayForEach(c, get(lb->lb.status, "conditions")) {
		const cJSON *t = get(c, "type");

		if (cJSON_IsString(t) && !strcmp(t->valuestring, type))
			return c;
	}
	return NULL;
}

static bool str_eq(const cJSON *o, const char *k, const char *v)
{
	const cJSON *s = get(o, k);

	return cJSON_IsString(s) && !strcmp(s->valuestring, v);
}

/* Reasons worth an Event: a user must act.  Pending, NoNodes, NotProgrammed and
 * NoReadyEndpoints are passing states of every new LoadBalancer and only show in status. */
static bool event_worthy(const char *reason)
{
	static const char *const reasons[] = { "Invalid",     "PortConflict", "PortInUse",
					       "PortDenied",  "ServiceNotFound", "PortNotFound",
					       "BindFailed",  "ApplyFailed" };

	for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
		if (!strcmp(reason, reasons[i]))
			return true;
	return false;
}

static bool add_condition(cJSON *conds, cJSON *events, const struct k8s_obj *lb,
			  const char *type, bool status, const char *reason, const char *msg,
			  const char *now)
{
	const cJSON *cur = current_condition(lb, type), *ltt = get(cur, "lastTransitionTime");
	const char *st = status ? "True" : "False";
	bool same = cur && str_eq(cur, "status", st);
	cJSON *c = cJSON_CreateObject();

	if (!c)
		return false;
	cJSON_AddItemToArray(conds, c);
	if (!status && event_worthy(reason) &&
	    !(same && str_eq(cur, "reason", reason) && str_eq(cur, "message", msg))) {
		cJSON *ev = cJSON_CreateObject();

		if (!ev)
			return false;
		cJSON_AddItemToArray(events, ev);
		if (!cJSON_AddStringToObject(ev, "type", type) ||
		    !cJSON_AddStringToObject(ev, "reason", reason) ||
		    !cJSON_AddStringToObject(ev, "message", msg))
			return false;
	}
	return cJSON_AddStringToObject(c, "type", type) && cJSON_AddStringToObject(c, "status", st) &&
	       cJSON_AddNumberToObject(c, "observedGeneration", (double)lb->meta.generation) &&
	       cJSON_AddStringToObject(c, "lastTransitionTime",
				       same && cJSON_IsString(ltt) ? ltt->valuestring : now) &&
	       cJSON_AddStringToObject(c, "reason", reason) &&
	       cJSON_AddStringToObject(c, "message", msg);
}

/* Programmed and the addresses, from the nodes' own entries of the current generation. */
static void programmed(const struct k8s_obj *lb, cJSON *addrs, bool *ok, char *reason,
		       size_t rlen, char *msg, size_t mlen)
{
	unsigned good = 0, bad = 0;
	const cJSON *n, *a;

	cJSON_ArrayForEach(n, get(lb->lb.status, "nodes")) {
		const cJSON *gen = get(n, "observedGeneration"), *name = get(n, "name");

		/* Compared as doubles: a huge number cast to int64_t would be undefined. */
		if (!cJSON_IsNumber(gen) || gen->valuedouble != (double)lb->meta.generation ||
		    !cJSON_IsString(name))
			continue;
		if (cJSON_IsTrue(get(n, "programmed"))) {
			good++;
			cJSON_ArrayForEach(a, get(n, "addresses")) {
				bool dup = false;
				const cJSON *x;

				if (!cJSON_IsString(a)) /* before its valuestring is read */
					continue;
				cJSON_ArrayForEach(x, addrs)
					dup |= !strcmp(get(x, "value")->valuestring, a->valuestring);
				if (dup)
					continue;
				cJSON *ad = cJSON_CreateObject();
				if (!ad)
					continue;
				cJSON_AddStringToObject(ad, "type", "IPAddress");
				cJSON_AddStringToObject(ad, "value", a->valuestring);
				cJSON_AddItemToArray(addrs, ad);
			}
		} else if (!bad++) {
			const cJSON *r = get(n, "reason"), *m = get(n, "message");

			snprintf(reason, rlen, "%s", cJSON_IsString(r) ? r->valuestring : "Pending");
			snprintf(msg, mlen, "node %s: %s", name->valuestring,
				 cJSON_IsString(m) ? m->valuestring : "");
		}
	}
	*ok = good > 0 && bad == 0;
	if (*ok) {
		snprintf(reason, rlen, "Programmed");
		snprintf(msg, mlen, "served by %u node%s", good, good == 1 ? "" : "s");
	} else if (!bad) {
		snprintf(reason, rlen, "Pending");
		snprintf(msg, mlen, "no node has programmed generation %lld yet",
			 (long long)lb->meta.generation);
	}
}

static bool add_listeners(cJSON *st, const struct ctrl_lb_result *lr, bool *all_ready,
			  char *msg, size_t mlen)
{
	cJSON *ls = cJSON_AddArrayToObject(st, "listeners");
	size_t off = 0;

	*all_ready = true;
	for (size_t i = 0; ls && i < lr->lb->lb.n_listeners; i++) {
		const struct k8s_lb_listener *l = &lr->lb->lb.listeners[i];
		const struct ctrl_listener_result *res = &lr->listeners[i];
		cJSON *o = cJSON_CreateObject();

		if (!o)
			return false;
		cJSON_AddItemToArray(ls, o);
		if (!cJSON_AddStringToObject(o, "name", l->name) ||
		    !cJSON_AddNumberToObject(o, "port", l->port) ||
		    !cJSON_AddStringToObject(o, "protocol", k8s_proto_name(l->protocol)) ||
		    !cJSON_AddNumberToObject(o, "readyEndpoints", res->ready) ||
		    !cJSON_AddNumberToObject(o, "servingTerminatingEndpoints", res->terminating))
			return false;
		/* Serving terminating endpoints take the connections when none is ready and
		 * drain allows (crd.md's NoReadyEndpoints): the listener still has somewhere
		 * to send them. */
		if (res->ready == 0 && !(lr->lb->lb.use_terminating && res->terminating > 0)) {
			*all_ready = false;
			off += (size_t)snprintf(msg + off, off < mlen ? mlen - off : 0,
						"%slistener %s has no ready endpoints",
						off ? "; " : "", l->name);
		}
	}
	return ls != NULL;
}

cJSON *ctrl_lb_summary(const struct ctrl_lb_result *lr, const struct ctrl_lb_agg *agg,
		       const char *now, cJSON **ret_events)
{
	const struct k8s_obj *lb = lr->lb;
	char ports[512], reason[64], msg[CTRL_MSG_MAX * 2], rmsg[CTRL_MSG_MAX * 2] = "";
	cJSON *st = cJSON_CreateObject(), *ev = cJSON_CreateArray(), *conds, *addrs;
	bool ok, prog = false, ready = false, resolved = true;
	const char *rreason = "ResolvedRefs";
	size_t off = 0;

	*ret_events = NULL;
	ok = st && ev && cJSON_AddNumberToObject(st, "observedGeneration", (double)lb->meta.generation) &&
	     (conds = cJSON_AddArrayToObject(st, "conditions")) &&
	     (addrs = cJSON_AddArrayToObject(st, "addresses"));
	if (!ok)
		goto out_fail;
	ctrl_lb_ports(&lb->lb, ports, sizeof(ports));
	if (!cJSON_AddStringToObject(st, "ports", ports))
		goto out_fail;
	/* Accepted */
	if (lb->lb.invalid)
		ok = add_condition(conds, ev, lb, "Accepted", false, "Invalid", lb->lb.invalid, now);
	else if (agg->conflict)
		ok = add_condition(conds, ev, lb, "Accepted", false, "PortConflict",
				   agg->conflict_msg, now);
	else
		ok = add_condition(conds, ev, lb, "Accepted", true, "Accepted",
				   "the spec is valid and its ports are free", now);
	/* ResolvedRefs */
	for (size_t i = 0; ok && !lb->lb.invalid && i < lb->lb.n_listeners; i++) {
		const struct ctrl_listener_result *res = &lr->listeners[i];
		const struct k8s_lb_listener *l = &lb->lb.listeners[i];

		if (res->resolved)
			continue;
		if (resolved)
			rreason = res->unresolved_reason ? res->unresolved_reason : "ServiceNotFound";
		resolved = false;
		if (res->unresolved_reason && !strcmp(res->unresolved_reason, "PortNotFound")) {
			char port[K8S_LABEL_MAX + 2];

			if (l->svc_port)
				snprintf(port, sizeof(port), "%u", l->svc_port);
			else
				snprintf(port, sizeof(port), "\"%s\"", l->svc_port_name);
			off += (size_t)snprintf(rmsg + off, off < sizeof(rmsg) ? sizeof(rmsg) - off : 0,
						"%slistener %s: Service %s has no %s port %s",
						off ? "; " : "", l->name, l->svc,
						k8s_proto_name(l->protocol), port);
		} else {
			off += (size_t)snprintf(rmsg + off, off < sizeof(rmsg) ? sizeof(rmsg) - off : 0,
						"%slistener %s: Service %s/%s not found",
						off ? "; " : "", l->name, lb->meta.ns, l->svc);
		}
	}
	if (ok && lb->lb.invalid)
		ok = add_condition(conds, ev, lb, "ResolvedRefs", false, "Invalid", lb->lb.invalid,
				   now);
	else if (ok)
		ok = add_condition(conds, ev, lb, "ResolvedRefs", resolved, rreason,
				   resolved ? "every listener's Service port was found" : rmsg, now);
	/* Programmed, from the nodes' entries */
	if (ok) {
		if (agg->nodes_selected == 0) {
			snprintf(reason, sizeof(reason), "NoNodes");
			snprintf(msg, sizeof(msg), "no node matches the nodeSelector");
		} else {
			programmed(lb, addrs, &prog, reason, sizeof(reason), msg, sizeof(msg));
		}
		ok = add_condition(conds, ev, lb, "Programmed", prog, reason, msg, now);
	}
	/* Ready, and the listeners' endpoint counts */
	msg[0] = 0;
	ok = ok && (lb->lb.invalid || add_listeners(st, lr, &ready, msg, sizeof(msg)));
	if (ok && !prog)
		ok = add_condition(conds, ev, lb, "Ready", false, "NotProgrammed",
				   "the LoadBalancer is not programmed", now);
	else if (ok)
		ok = add_condition(conds, ev, lb, "Ready", ready, ready ? "Ready" : "NoReadyEndpoints",
				   ready ? "every listener has ready endpoints" : msg, now);
	if (!ok)
		goto out_fail;
	*ret_events = ev;
	return st;
out_fail:
	cJSON_Delete(st);
	cJSON_Delete(ev);
	return NULL;
}

bool ctrl_lb_summary_same(const struct k8s_obj *lb, const cJSON *summary)
{
	const cJSON *f;

	if (!lb->lb.status)
		return false;
	cJSON_ArrayForEach(f, summary) {
		const cJSON *cur = get(lb->lb.status, f->string);

		if (!cur || !cJSON_Compare(cur, f, true))
			return false;
	}
	return true;
}
