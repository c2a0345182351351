/* test_lbstatus.c - a node's status entry; the Lease holder's conditions, addresses and events. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller/core/lbstatus.h"

#define NOW "2026-03-02T10:00:00Z"
#define LATER "2026-03-02T10:05:00Z"
#define LONG_AGO "2026-01-01T00:00:00Z"

/* Service shop/web ("http" 80 -> 8080, "admin" 8081 -> 80) with ready endpoints. */
#define WEB_PORTS                                                                                  \
	"[{'name':'admin','protocol':'TCP','port':8081,'targetPort':80},"                          \
	"{'name':'http','protocol':'TCP','port':80,'targetPort':8080}]"
#define WEB_SLICE_PORTS                                                                            \
	"[{'name':'admin','protocol':'TCP','port':80},{'name':'http','protocol':'TCP','port':8080}]"
#define READY(a)                                                                                   \
	"{'addresses':['" a "'],'conditions':{'ready':true,'serving':true,'terminating':false}}"
#define TERMINATING(a)                                                                             \
	"{'addresses':['" a "'],'conditions':{'ready':false,'serving':true,'terminating':true}}"
#define WEB_SERVICE "{'metadata':{'name':'web','namespace':'shop'},'spec':{'ports':" WEB_PORTS "}}"
#define LISTENER(name, port, svc, svc_port)                                                        \
	"{'name':'" name "','port':" #port ",'backend':{'serviceRef':{'name':'" svc "','port':"    \
	svc_port "}}}"
/* The LoadBalancer most tests use: two listeners on Service web. */
#define WEB_SPEC                                                                                   \
	"{'listeners':[" LISTENER("http", 8080, "web", "'http'") ","                               \
	LISTENER("admin", 8443, "web", "'admin'") "]}"

struct world {
	struct k8s_store lbs, svcs, slices;
	struct ctrl_port_proto reserved[4];
	size_t n_reserved;
	struct ctrl_port_range denied[2];
	size_t n_denied;
	struct k8s_obj *node;      /* this node, owned */
	struct ctrl_desired *d;    /* the last reconcile */
};

static struct world w;

static struct k8s_obj *obj_json(enum k8s_kind kind, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static struct k8s_obj *obj_json(enum k8s_kind kind, const char *fmt, ...)
{
	static char buf[1 << 16];
	struct k8s_obj *o = NULL;
	char err[256] = "";
	va_list ap;
	cJSON *j;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	assert_true(n > 0 && (size_t)n < sizeof(buf));
	for (char *p = buf; *p; p++)
		if (*p == '\'')
			*p = '"';
	j = cJSON_Parse(buf);
	if (!j)
		fail_msg("test JSON does not parse: %s", buf);
	if (k8s_obj_from_json(kind, j, &o, err, sizeof(err)))
		fail_msg("k8s_obj_from_json: %s", err);
	cJSON_Delete(j);
	return o;
}

static int setup(void **state)
{
	memset(&w, 0, sizeof(w));
	assert_int_equal(k8s_store_init(&w.lbs), 0);
	assert_int_equal(k8s_store_init(&w.svcs), 0);
	assert_int_equal(k8s_store_init(&w.slices), 0);
	w.node = obj_json(K8S_KIND_NODE,
			  "{'metadata':{'name':'n1','labels':{'zone':'a'}},'status':{'addresses':["
			  "{'type':'InternalIP','address':'10.1.0.1'},"
			  "{'type':'Hostname','address':'n1'},"
			  "{'type':'ExternalIP','address':'203.0.113.1'},"
			  "{'type':'InternalIP','address':'fd00:1::1'}]}}");
	return 0;
}

static int teardown(void **state)
{
	ctrl_desired_free(w.d);
	k8s_obj_free(w.node);
	k8s_store_free(&w.lbs);
	k8s_store_free(&w.svcs);
	k8s_store_free(&w.slices);
	return 0;
}

static void put_web_service(const char *endpoints)
{
	assert_int_equal(k8s_store_put(&w.svcs, obj_json(K8S_KIND_SERVICE, "%s", WEB_SERVICE)), 0);
	assert_int_equal(k8s_store_put(&w.slices,
				       obj_json(K8S_KIND_ENDPOINTSLICE,
						"{'metadata':{'name':'web-1','namespace':'shop',"
						"'labels':{'kubernetes.io/service-name':'web'}},"
						"'addressType':'IPv4','ports':" WEB_SLICE_PORTS
						",'endpoints':%s}",
						endpoints)),
			 0);
}

/* LoadBalancer shop/<name> at generation gen; status is "" or ",'status':{...}". */
static void put_lb(const char *name, const char *created, int gen, const char *spec,
		   const char *status)
{
	assert_int_equal(k8s_store_put(&w.lbs, obj_json(K8S_KIND_LOADBALANCER,
							"{'metadata':{'name':'%s','namespace':"
							"'shop','generation':%d,"
							"'creationTimestamp':'%s'},'spec':%s%s}",
							name, gen, created, spec, status)),
			 0);
}

/* The same with a status given as JSON (not quoted: it may hold apostrophes); takes status. */
static void put_lb_status(const char *name, const char *created, int gen, const char *spec,
			  cJSON *status)
{
	struct k8s_obj *o = NULL;
	char buf[4096], err[256] = "";
	cJSON *j;

	snprintf(buf, sizeof(buf),
		 "{'metadata':{'name':'%s','namespace':'shop','generation':%d,"
		 "'creationTimestamp':'%s'},'spec':%s}",
		 name, gen, created, spec);
	for (char *p = buf; *p; p++)
		if (*p == '\'')
			*p = '"';
	j = cJSON_Parse(buf);
	assert_non_null(j);
	cJSON_AddItemToObject(j, "status", status);
	if (k8s_obj_from_json(K8S_KIND_LOADBALANCER, j, &o, err, sizeof(err)))
		fail_msg("k8s_obj_from_json: %s", err);
	cJSON_Delete(j);
	assert_int_equal(k8s_store_put(&w.lbs, o), 0);
}

/* Reconcile for w.node; the result of LoadBalancer shop/<name>. */
static const struct ctrl_lb_result *reconcile(const char *name)
{
	struct ctrl_input in = {
		.lbs = &w.lbs, .services = &w.svcs, .slices = &w.slices, .listen_host = "0.0.0.0",
		.reserved_ports = w.reserved, .n_reserved = w.n_reserved, .denied = w.denied,
		.n_denied = w.n_denied,
	};
	char key[CTRL_KEY_MAX];

	ctrl_desired_free(w.d);
	w.d = NULL;
	assert_int_equal(ctrl_reconcile(&in, w.node, true, &w.d), 0);
	snprintf(key, sizeof(key), "shop/%s", name);
	for (size_t i = 0; i < w.d->n_lbs; i++)
		if (!strcmp(w.d->lbs[i].key, key))
			return &w.d->lbs[i];
	fail_msg("no result for %s", key);
	return NULL;
}

static char *print(const cJSON *j)
{
	char *s = cJSON_PrintUnformatted(j);

	assert_non_null(s);
	return s;
}

/* expected_quoted: JSON with ' for " (and \\' for a real apostrophe). */
static void assert_json(const cJSON *j, const char *expected_quoted)
{
	char *s = print(j), *e = strdup(expected_quoted), *o = e;

	assert_non_null(e);
	for (const char *p = expected_quoted; *p; p++) {
		if (p[0] == '\\' && p[1] == '\'')
			*o++ = *++p;
		else
			*o++ = *p == '\'' ? '"' : *p;
	}
	*o = 0;
	assert_string_equal(s, e);
	free(s);
	free(e);
}

static const char *str(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	return cJSON_IsString(v) ? v->valuestring : "(none)";
}

/* --- this node's entry ---------------------------------------------------------------------- */

static cJSON *entry_for(const char *name, const struct ctrl_node_report *rep)
{
	cJSON *e = ctrl_node_entry(reconcile(name), rep);

	assert_non_null(e);
	return e;
}

static void test_entry_programmed(void **state)
{
	struct ctrl_node_report rep = { .node = "n1", .node_obj = w.node };
	cJSON *e;

	put_web_service("[" READY("10.0.0.1") "]");
	put_lb("web", LONG_AGO, 4, WEB_SPEC, "");
	e = entry_for("web", &rep);
	/* External addresses first, then internal; never the Hostname. */
	assert_json(e, "{'name':'n1','addresses':['203.0.113.1','10.1.0.1','fd00:1::1'],"
		       "'programmed':true,'reason':'Programmed','message':'2 listeners served',"
		       "'observedGeneration':4}");
	cJSON_Delete(e);

	/* Without a Node object: no addresses, still programmed. */
	rep.node_obj = NULL;
	e = entry_for("web", &rep);
	assert_json(e, "{'name':'n1','addresses':[],'programmed':true,'reason':'Programmed',"
		       "'message':'2 listeners served','observedGeneration':4}");
	cJSON_Delete(e);
}

static void test_entry_bind_failed(void **state)
{
	const char *names[] = { "shop/other/http", "shop/web/admin" };
	const char *errors[] = { "bind 0.0.0.0:8080: Address in use",
				 "bind 0.0.0.0:8443: Address in use" };
	struct ctrl_node_report rep = { .node = "n1", .node_obj = w.node, .failed_names = names,
					.failed_errors = errors, .n_failed = 2 };
	cJSON *e;

	put_web_service("[" READY("10.0.0.1") "]");
	put_lb("web", LONG_AGO, 4, WEB_SPEC, "");
	e = entry_for("web", &rep);
	assert_false(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "programmed")));
	assert_string_equal(str(e, "reason"), "BindFailed");
	assert_string_equal(str(e, "message"),
			    "listener admin: bind 0.0.0.0:8443: Address in use");
	cJSON_Delete(e);

	/* Another LoadBalancer's failure is not this one's. */
	rep.n_failed = 1;
	e = entry_for("web", &rep);
	assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "programmed")));
	assert_string_equal(str(e, "reason"), "Programmed");
	cJSON_Delete(e);
}

static void test_entry_apply_failed(void **state)
{
	struct ctrl_node_report rep = {
		.node = "n1", .node_obj = w.node,
		.apply_error = "listeners[0].listen: address 0.0.0.0:8080 is used twice",
	};
	cJSON *e;

	put_web_service("[" READY("10.0.0.1") "]");
	put_lb("web", LONG_AGO, 4, WEB_SPEC, "");
	e = entry_for("web", &rep);
	assert_false(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "programmed")));
	assert_string_equal(str(e, "reason"), "ApplyFailed");
	assert_string_equal(str(e, "message"), "the dataplane refused the apply: listeners[0]."
					       "listen: address 0.0.0.0:8080 is used twice");
	cJSON_Delete(e);
}

static void test_entry_conflict_and_reserved(void **state)
{
	struct ctrl_node_report rep = { .node = "n1", .node_obj = w.node };
	cJSON *e;

	put_web_service("[" READY("10.0.0.1") "]");
	put_lb("old", "2020-01-01T00:00:00Z", 1,
	       "{'listeners':[" LISTENER("x", 8080, "web", "80") "]}", "");
	put_lb("web", "2021-01-01T00:00:00Z", 4, WEB_SPEC, "");
	e = entry_for("web", &rep);
	assert_false(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "programmed")));
	assert_string_equal(str(e, "reason"), "PortConflict");
	assert_string_equal(str(e, "message"),
			    "listener http: port 8080/TCP is held by LoadBalancer shop/old");
	cJSON_Delete(e);

	/* The dataplane's own file listens on 8443. */
	w.reserved[0] = (struct ctrl_port_proto){ 8443, K8S_PROTO_TCP };
	w.n_reserved = 1;
	e = entry_for("old", &rep);
	assert_string_equal(str(e, "reason"), "Programmed");
	cJSON_Delete(e);
	e = entry_for("web", &rep);
	assert_string_equal(str(e, "reason"), "PortConflict");
	assert_non_null(strstr(str(e, "message"), "listener admin: port 8443/TCP is a listener of "
						  "the dataplane's own configuration"));
	cJSON_Delete(e);
	k8s_store_del(&w.lbs, "shop/old");
	e = entry_for("web", &rep);
	assert_string_equal(str(e, "reason"), "PortInUse");
	cJSON_Delete(e);

	/* On the controller's deny-list (--deny-ports): refused whatever else holds it. */
	w.denied[0] = (struct ctrl_port_range){ 8443, 8443 };
	w.n_denied = 1;
	e = entry_for("web", &rep);
	assert_string_equal(str(e, "reason"), "PortDenied");
	assert_non_null(strstr(str(e, "message"), "listener admin: port 8443/TCP is one no "
						  "LoadBalancer may take on this cluster's nodes"));
	cJSON_Delete(e);
}

/* What the node wrote last is found in the status and compared. */
static void test_entry_same(void **state)
{
	struct ctrl_node_report rep = { .node = "n1", .node_obj = w.node };
	char status[2048], *text;
	const cJSON *cur;
	cJSON *e;

	put_web_service("[" READY("10.0.0.1") "]");
	put_lb("web", LONG_AGO, 4, WEB_SPEC, "");
	e = entry_for("web", &rep);
	assert_null(ctrl_node_entry_current(reconcile("web")->lb, "n1"));
	assert_false(ctrl_node_entry_same(NULL, e));

	/* The status now holds another node's entry and ours. */
	text = print(e);
	snprintf(status, sizeof(status),
		 ",'status':{'nodes':[{'name':'n2','programmed':false,'reason':'Pending',"
		 "'message':'','observedGeneration':3},%s]}",
		 text);
	free(text);
	put_lb("web", LONG_AGO, 4, WEB_SPEC, status);
	cur = ctrl_node_entry_current(reconcile("web")->lb, "n1");
	assert_non_null(cur);
	assert_string_equal(str(cur, "name"), "n1");
	assert_null(ctrl_node_entry_current(reconcile("web")->lb, "n3"));
	cJSON_Delete(e);
	e = entry_for("web", &rep);
	cur = ctrl_node_entry_current(w.d->lbs[0].lb, "n1");
	assert_true(ctrl_node_entry_same(cur, e));

	/* Anything different: a new generation, a failed bind. */
	cJSON_Delete(e);
	put_lb("web", LONG_AGO, 5, WEB_SPEC, status);
	e = entry_for("web", &rep);
	cur = ctrl_node_entry_current(w.d->lbs[0].lb, "n1");
	assert_false(ctrl_node_entry_same(cur, e));
	cJSON_Delete(e);
}

/* --- the summary ---------------------------------------------------------------------------- */

static const cJSON *cond(const cJSON *st, const char *type)
{
	const cJSON *c;

	cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(st, "conditions"))
		if (!strcmp(str(c, "type"), type))
			return c;
	fail_msg("no condition %s", type);
	return NULL;
}

static void assert_cond(const cJSON *st, const char *type, const char *status, const char *reason)
{
	const cJSON *c = cond(st, type);

	if (strcmp(str(c, "status"), status) || strcmp(str(c, "reason"), reason))
		fail_msg("%s is %s/%s (%s), wanted %s/%s", type, str(c, "status"), str(c, "reason"),
			 str(c, "message"), status, reason);
}

/* The events' "type/reason" joined by ",". */
static const char *event_list(const cJSON *events)
{
	static char buf[512];
	const cJSON *e;
	size_t off = 0;

	buf[0] = 0;
	cJSON_ArrayForEach(e, events)
		off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s%s/%s", off ? "," : "",
					str(e, "type"), str(e, "reason"));
	return buf;
}

/* The summary of shop/<name> with agg (NULL: selected by one node, no conflict). */
static cJSON *summary(const char *name, const struct ctrl_lb_agg *agg, const char *now,
		      cJSON **events)
{
	static const struct ctrl_lb_agg one = { .nodes_selected = 1 };
	cJSON *st = ctrl_lb_summary(reconcile(name), agg ? agg : &one, now, events);

	assert_non_null(st);
	assert_non_null(*events);
	return st;
}

/* status.nodes entries: n1 and n2 programmed generation 2, n3 failed at the stale generation 1. */
#define NODES_GEN2                                                                                 \
	"'nodes':[{'name':'n1','addresses':['203.0.113.1','10.1.0.1'],'programmed':true,"         \
	"'reason':'Programmed','message':'','observedGeneration':2},"                              \
	"{'name':'n2','addresses':['10.1.0.1','10.1.0.2'],'programmed':true,"                      \
	"'reason':'Programmed','message':'','observedGeneration':2},"                              \
	"{'name':'n3','addresses':['10.1.0.3'],'programmed':false,'reason':'BindFailed',"          \
	"'message':'listener http: bind: Address in use','observedGeneration':1}]"

static void test_summary_all_good(void **state)
{
	cJSON *st, *ev;

	put_web_service("[" READY("10.0.0.1") "," READY("10.0.0.2") "," TERMINATING("10.0.0.3")
			"]");
	put_lb("web", LONG_AGO, 2, WEB_SPEC, ",'status':{" NODES_GEN2 "}");
	st = summary("web", NULL, NOW, &ev);
	assert_json(st,
		    "{'observedGeneration':2,'conditions':["
		    "{'type':'Accepted','status':'True','observedGeneration':2,"
		    "'lastTransitionTime':'" NOW "','reason':'Accepted',"
		    "'message':'the spec is valid and its ports are free'},"
		    "{'type':'ResolvedRefs','status':'True','observedGeneration':2,"
		    "'lastTransitionTime':'" NOW "','reason':'ResolvedRefs',"
		    "'message':'every listener\\'s Service port was found'},"
		    "{'type':'Programmed','status':'True','observedGeneration':2,"
		    "'lastTransitionTime':'" NOW "','reason':'Programmed',"
		    "'message':'served by 2 nodes'},"
		    "{'type':'Ready','status':'True','observedGeneration':2,"
		    "'lastTransitionTime':'" NOW "','reason':'Ready',"
		    "'message':'every listener has ready endpoints'}],"
		    /* from the programmed nodes only (not n3), each once */
		    "'addresses':[{'type':'IPAddress','value':'203.0.113.1'},"
		    "{'type':'IPAddress','value':'10.1.0.1'},"
		    "{'type':'IPAddress','value':'10.1.0.2'}],"
		    "'ports':'8080/TCP,8443/TCP',"
		    "'listeners':[{'name':'http','port':8080,'protocol':'TCP','readyEndpoints':2,"
		    "'servingTerminatingEndpoints':1},{'name':'admin','port':8443,'protocol':'TCP',"
		    "'readyEndpoints':2,'servingTerminatingEndpoints':1}]}");
	assert_int_equal(cJSON_GetArraySize(ev), 0);
	cJSON_Delete(st);
	cJSON_Delete(ev);
}

static void test_summary_accepted(void **state)
{
	struct ctrl_lb_agg agg = { .nodes_selected = 1, .conflict = true };
	cJSON *st, *ev;

	put_web_service("[" READY("10.0.0.1") "]");
	put_lb("web", LONG_AGO, 2, WEB_SPEC, ",'status':{" NODES_GEN2 "}");
	snprintf(agg.conflict_msg, sizeof(agg.conflict_msg),
		 "listener http: port 8080/TCP on node n1 is held by LoadBalancer shop/old "
		 "(older)");
	st = summary("web", &agg, NOW, &ev);
	assert_cond(st, "Accepted", "False", "PortConflict");
	assert_string_equal(str(cond(st, "Accepted"), "message"), agg.conflict_msg);
	assert_string_equal(event_list(ev), "Accepted/PortConflict");
	cJSON_Delete(st);
	cJSON_Delete(ev);

	/* An invalid spec. */
	put_lb("web", LONG_AGO, 3,
	       "{'listeners':[" LISTENER("http", 8080, "web", "'http'") ","
	       LISTENER("http", 8081, "web", "'http'") "]}",
	       "");
	st = summary("web", &(struct ctrl_lb_agg){ 0 }, NOW, &ev);
	assert_cond(st, "Accepted", "False", "Invalid");
	assert_string_equal(str(cond(st, "Accepted"), "message"),
			    "spec.listeners[1].name: \"http\" is used twice");
	assert_cond(st, "ResolvedRefs", "False", "Invalid");
	assert_cond(st, "Programmed", "False", "NoNodes");
	assert_cond(st, "Ready", "False", "NotProgrammed");
	assert_null(cJSON_GetObjectItemCaseSensitive(st, "listeners"));
	cJSON_Delete(st);
	cJSON_Delete(ev);
}

static void test_summary_resolved_refs(void **state)
{
	cJSON *st, *ev;

	put_web_service("[" READY("10.0.0.1") "]");
	put_lb("web", LONG_AGO, 2,
	       "{'listeners':[" LISTENER("http", 8080, "web", "'http'") ","
	       LISTENER("api", 8081, "api", "9090") "," LISTENER("grpc", 8082, "web", "'grpc'") ","
	       LISTENER("num", 8083, "web", "9999") "]}",
	       ",'status':{" NODES_GEN2 "}");
	st = summary("web", NULL, NOW, &ev);
	assert_cond(st, "ResolvedRefs", "False", "ServiceNotFound");
	assert_string_equal(str(cond(st, "ResolvedRefs"), "message"),
			    "listener api: Service shop/api not found; "
			    "listener grpc: Service web has no TCP port \"grpc\"; "
			    "listener num: Service web has no TCP port 9999");
	assert_cond(st, "Accepted", "True", "Accepted");
	cJSON_Delete(st);
	cJSON_Delete(ev);

	/* Only a missing port. */
	put_lb("web", LONG_AGO, 2,
	       "{'listeners':[" LISTENER("http", 8080, "web", "'http'") ","
	       LISTENER("grpc", 8082, "web", "'grpc'") "]}",
	       ",'status':{" NODES_GEN2 "}");
	st = summary("web", NULL, NOW, &ev);
	assert_cond(st, "ResolvedRefs", "False", "PortNotFound");
	cJSON_Delete(st);
	cJSON_Delete(ev);
}

static const char *addresses(const cJSON *st)
{
	static char buf[256];
	const cJSON *a;
	size_t off = 0;

	buf[0] = 0;
	cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(st, "addresses"))
		off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s%s", off ? "," : "",
					str(a, "value"));
	return buf;
}

static void test_summary_programmed(void **state)
{
	cJSON *st, *ev;

	put_web_service("[" READY("10.0.0.1") "]");

	/* Only an entry of the previous generation, though it says programmed: pending. */
	put_lb("web", LONG_AGO, 3, WEB_SPEC,
	       ",'status':{'nodes':[{'name':'n1','addresses':['10.1.0.1'],'programmed':true,"
	       "'reason':'Programmed','message':'','observedGeneration':2}]}");
	st = summary("web", NULL, NOW, &ev);
	assert_cond(st, "Programmed", "False", "Pending");
	assert_string_equal(str(cond(st, "Programmed"), "message"),
			    "no node has programmed generation 3 yet");
	assert_string_equal(addresses(st), "");
	assert_cond(st, "Ready", "False", "NotProgrammed");
	cJSON_Delete(st);
	cJSON_Delete(ev);

	/* A current entry that failed: its reason and message, with the node named. */
	put_lb("web", LONG_AGO, 2, WEB_SPEC,
	       ",'status':{'nodes':[{'name':'n1','addresses':['10.1.0.1'],'programmed':true,"
	       "'reason':'Programmed','message':'','observedGeneration':2},"
	       "{'name':'n2','addresses':['10.1.0.2'],'programmed':false,'reason':'BindFailed',"
	       "'message':'listener http: bind 0.0.0.0:8080: Address in use',"
	       "'observedGeneration':2}]}");
	st = summary("web", NULL, NOW, &ev);
	assert_cond(st, "Programmed", "False", "BindFailed");
	assert_string_equal(str(cond(st, "Programmed"), "message"),
			    "node n2: listener http: bind 0.0.0.0:8080: Address in use");
	assert_string_equal(addresses(st), "10.1.0.1");
	cJSON_Delete(st);
	cJSON_Delete(ev);

	/* No node selects it. */
	st = summary("web", &(struct ctrl_lb_agg){ .nodes_selected = 0 }, NOW, &ev);
	assert_cond(st, "Programmed", "False", "NoNodes");
	cJSON_Delete(st);
	cJSON_Delete(ev);

	/* Entries that are not what the schema allows do not break the summary. */
	put_lb("web", LONG_AGO, 2, WEB_SPEC,
	       ",'status':{'nodes':[{'name':'n1','addresses':['10.1.0.1'],'programmed':true,"
	       "'observedGeneration':2},{'name':'n2','addresses':[7,'10.1.0.2',null],"
	       "'programmed':true,'observedGeneration':2},{'addresses':['10.9.9.9'],"
	       "'programmed':true,'observedGeneration':2},{'name':'n4','programmed':true,"
	       "'observedGeneration':'2'}]}");
	st = summary("web", NULL, NOW, &ev);
	assert_cond(st, "Programmed", "True", "Programmed");
	assert_string_equal(addresses(st), "10.1.0.1,10.1.0.2");
	cJSON_Delete(st);
	cJSON_Delete(ev);
}

static void test_summary_ready(void **state)
{
	cJSON *st, *ev;

	/* admin's port has no endpoints: a Service whose slice lacks that port. */
	assert_int_equal(k8s_store_put(&w.svcs, obj_json(K8S_KIND_SERVICE, "%s", WEB_SERVICE)), 0);
	assert_int_equal(k8s_store_put(&w.slices,
				       obj_json(K8S_KIND_ENDPOINTSLICE,
						"{'metadata':{'name':'web-1','namespace':'shop',"
						"'labels':{'kubernetes.io/service-name':'web'}},"
						"'addressType':'IPv4','ports':[{'name':'http',"
						"'protocol':'TCP','port':8080}],'endpoints':["
						READY("10.0.0.1") "]}")),
			 0);
	put_lb("web", LONG_AGO, 2, WEB_SPEC, ",'status':{" NODES_GEN2 "}");
	st = summary("web", NULL, NOW, &ev);
	assert_cond(st, "Programmed", "True", "Programmed");
	assert_cond(st, "Ready", "False", "NoReadyEndpoints");
	assert_string_equal(str(cond(st, "Ready"), "message"),
			    "listener admin has no ready endpoints");
	cJSON_Delete(st);
	cJSON_Delete(ev);
}

/* No ready endpoint but serving terminating ones: they take the connections (drain's
 * default), so the LoadBalancer is ready; with drain off it is not. */
static void test_summary_ready_terminating(void **state)
{
	cJSON *st, *ev;

	put_web_service("[" TERMINATING("10.0.0.3") "]");
	put_lb("web", LONG_AGO, 2, WEB_SPEC, ",'status':{" NODES_GEN2 "}");
	st = summary("web", NULL, NOW, &ev);
	assert_cond(st, "Ready", "True", "Ready");
	cJSON_Delete(st);
	cJSON_Delete(ev);

	put_lb("web", LONG_AGO, 2,
	       "{'drain':{'useTerminatingEndpoints':false},'listeners':["
	       LISTENER("http", 8080, "web", "'http'") "]}",
	       ",'status':{" NODES_GEN2 "}");
	st = summary("web", NULL, NOW, &ev);
	assert_cond(st, "Ready", "False", "NoReadyEndpoints");
	cJSON_Delete(st);
	cJSON_Delete(ev);
}

/* conditions: a list of (type, status, reason, message) written as the status had them. */
#define COND(type, status, reason, msg)                                                            \
	"{'type':'" type "','status':'" status "','observedGeneration':2,"                         \
	"'lastTransitionTime':'" LONG_AGO "','reason':'" reason "','message':'" msg "'}"

static void test_summary_transitions(void **state)
{
	cJSON *st, *ev;

	/* Before: all True.  Now: Service api missing, so ResolvedRefs turns False. */
	put_web_service("[" READY("10.0.0.1") "]");
	put_lb("web", LONG_AGO, 2,
	       "{'listeners':[" LISTENER("http", 8080, "web", "'http'") ","
	       LISTENER("api", 8081, "api", "80") "]}",
	       ",'status':{" NODES_GEN2 ",'conditions':["
	       COND("Accepted", "True", "Accepted", "x") ","
	       COND("ResolvedRefs", "True", "ResolvedRefs", "x") ","
	       COND("Programmed", "False", "Pending", "x") ","
	       COND("Ready", "False", "NotProgrammed", "x") "]}");
	st = summary("web", NULL, NOW, &ev);
	/* Same status: the old time, even where reason or message changed. */
	assert_string_equal(str(cond(st, "Accepted"), "lastTransitionTime"), LONG_AGO);
	assert_string_equal(str(cond(st, "Accepted"), "message"),
			    "the spec is valid and its ports are free");
	/* Changed status: now. */
	assert_cond(st, "ResolvedRefs", "False", "ServiceNotFound");
	assert_string_equal(str(cond(st, "ResolvedRefs"), "lastTransitionTime"), NOW);
	assert_cond(st, "Programmed", "True", "Programmed");
	assert_string_equal(str(cond(st, "Programmed"), "lastTransitionTime"), NOW);
	/* Ready: False before (NotProgrammed), False now (no endpoints for api): same status. */
	assert_cond(st, "Ready", "False", "NoReadyEndpoints");
	assert_string_equal(str(cond(st, "Ready"), "lastTransitionTime"), LONG_AGO);
	/* Events: ResolvedRefs turned False.  Ready changed reason while False, but
	 * NoReadyEndpoints is a passing state shown only in the status. */
	assert_string_equal(event_list(ev), "ResolvedRefs/ServiceNotFound");
	cJSON_Delete(st);
	cJSON_Delete(ev);
}

/* A LoadBalancer whose listener api names a missing Service, with these conditions. */
static void put_lb_conds(const char *conditions)
{
	char status[4096];

	snprintf(status, sizeof(status), ",'status':{'conditions':[%s]}", conditions);
	put_lb("web", LONG_AGO, 2,
	       "{'listeners':[" LISTENER("http", 8080, "web", "'http'") ","
	       LISTENER("api", 8081, "api", "80") "]}",
	       status);
}

#define ACCEPTED_TRUE                                                                              \
	COND("Accepted", "True", "Accepted", "the spec is valid and its ports are free")
#define PENDING COND("Programmed", "False", "Pending", "no node has programmed generation 2 yet")
#define NOT_PROGRAMMED COND("Ready", "False", "NotProgrammed", "the LoadBalancer is not programmed")

static void test_summary_events(void **state)
{
	cJSON *st, *ev;

	put_web_service("[" READY("10.0.0.1") "]");

	/* First visit, no status: ResolvedRefs turns False.  Programmed (Pending) and Ready
	 * (NotProgrammed) are False too, but those are passing states: no Event. */
	put_lb("web", LONG_AGO, 2,
	       "{'listeners':[" LISTENER("http", 8080, "web", "'http'") ","
	       LISTENER("api", 8081, "api", "80") "]}",
	       "");
	st = summary("web", NULL, NOW, &ev);
	assert_cond(st, "Programmed", "False", "Pending");
	assert_cond(st, "Ready", "False", "NotProgrammed");
	assert_string_equal(event_list(ev), "ResolvedRefs/ServiceNotFound");
	cJSON_Delete(st);
	cJSON_Delete(ev);

	/* Still False for the same reason and message: nothing new to tell. */
	put_lb_conds(ACCEPTED_TRUE "," COND("ResolvedRefs", "False", "ServiceNotFound",
					    "listener api: Service shop/api not found")
		     "," PENDING "," NOT_PROGRAMMED);
	st = summary("web", NULL, NOW, &ev);
	assert_string_equal(event_list(ev), "");
	assert_string_equal(str(cond(st, "ResolvedRefs"), "lastTransitionTime"), LONG_AGO);
	cJSON_Delete(st);
	cJSON_Delete(ev);

	/* The same reason about something else (another Service went missing): news
	 * (docs/controller.md: "changes its reason or message while False"). */
	put_lb_conds(ACCEPTED_TRUE "," COND("ResolvedRefs", "False", "ServiceNotFound",
					    "listener other: Service shop/other not found")
		     "," PENDING "," NOT_PROGRAMMED);
	st = summary("web", NULL, NOW, &ev);
	assert_string_equal(event_list(ev), "ResolvedRefs/ServiceNotFound");
	cJSON_Delete(st);
	cJSON_Delete(ev);

	/* A False condition that changes reason is news. */
	put_lb_conds(ACCEPTED_TRUE "," COND("ResolvedRefs", "False", "PortNotFound",
					    "listener api: Service shop/api not found")
		     "," PENDING "," NOT_PROGRAMMED);
	st = summary("web", NULL, NOW, &ev);
	assert_string_equal(event_list(ev), "ResolvedRefs/ServiceNotFound");
	assert_string_equal(str(cond(st, "ResolvedRefs"), "lastTransitionTime"), LONG_AGO);
	cJSON_Delete(st);
	cJSON_Delete(ev);

	/* Accepted turns False (a conflict), ResolvedRefs stays as it was. */
	{
		struct ctrl_lb_agg agg = {
			.nodes_selected = 1, .conflict = true,
			.conflict_msg = "listener http: port 8080/TCP on node n1 is held by "
					"LoadBalancer shop/old (older)",
		};

		put_lb_conds(ACCEPTED_TRUE "," COND("ResolvedRefs", "False", "ServiceNotFound",
						    "listener api: Service shop/api not found")
			     "," PENDING "," NOT_PROGRAMMED);
		st = summary("web", &agg, NOW, &ev);
		assert_string_equal(event_list(ev), "Accepted/PortConflict");
		assert_string_equal(str(cond(st, "Accepted"), "lastTransitionTime"), NOW);
		assert_string_equal(str(cJSON_GetArrayItem(ev, 0), "message"), agg.conflict_msg);
		cJSON_Delete(st);
		cJSON_Delete(ev);
	}
}

/* Once the status says what the summary says, the summary is the same: no write, no loop. */
static void test_summary_same(void **state)
{
	cJSON *st, *ev, *st2, *ev2, *nodes;

	put_web_service("[" READY("10.0.0.1") "]");
	put_lb("web", LONG_AGO, 2, WEB_SPEC, ",'status':{" NODES_GEN2 "}");
	st = summary("web", NULL, NOW, &ev);
	assert_false(ctrl_lb_summary_same(w.d->lbs[0].lb, st));

	/* The status as the API server would hold it: the summary plus the nodes' entries. */
	nodes = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(reconcile("web")->lb->lb.status,
								 "nodes"),
				1);
	assert_non_null(nodes);
	cJSON_AddItemToObject(st, "nodes", nodes);
	put_lb_status("web", LONG_AGO, 2, WEB_SPEC, cJSON_Duplicate(st, 1));
	st2 = summary("web", NULL, LATER, &ev2);
	assert_true(ctrl_lb_summary_same(w.d->lbs[0].lb, st2));
	assert_int_equal(cJSON_GetArraySize(ev2), 0);
	cJSON_Delete(st2);
	cJSON_Delete(ev2);

	/* An endpoint goes: the counts differ. */
	put_web_service("[" READY("10.0.0.1") "," READY("10.0.0.2") "]");
	st2 = summary("web", NULL, LATER, &ev2);
	assert_false(ctrl_lb_summary_same(w.d->lbs[0].lb, st2));
	cJSON_Delete(st2);
	cJSON_Delete(ev2);
	cJSON_Delete(st);
	cJSON_Delete(ev);
}

/* The Lease holder folds every node's selection and conflicts. */
static void test_agg(void **state)
{
	struct ctrl_input in = {
		.lbs = &w.lbs, .services = &w.svcs, .slices = &w.slices, .listen_host = "0.0.0.0",
	};
	static const char *const nodes[][2] = {
		{ "n1", "{'zone':'a'}" }, { "n2", "{'zone':'b'}" }, { "n3", "{'zone':'a'}" },
	};
	struct ctrl_lb_agg agg[2] = { 0 };
	struct ctrl_desired *d;

	put_web_service("[" READY("10.0.0.1") "]");
	put_lb("old", "2020-01-01T00:00:00Z", 1,
	       "{'nodeSelector':{'matchLabels':{'zone':'a'}},'listeners':["
	       LISTENER("x", 8080, "web", "80") "]}",
	       "");
	put_lb("new", "2021-01-01T00:00:00Z", 1,
	       "{'listeners':[" LISTENER("y", 9090, "web", "80") ","
	       LISTENER("z", 8080, "web", "80") "]}",
	       "");
	for (size_t i = 0; i < 3; i++) {
		struct k8s_obj *n = obj_json(K8S_KIND_NODE,
					     "{'metadata':{'name':'%s','labels':%s}}",
					     nodes[i][0], nodes[i][1]);

		assert_int_equal(ctrl_reconcile(&in, n, false, &d), 0);
		assert_int_equal(d->n_lbs, 2);
		assert_string_equal(d->lbs[0].key, "shop/old");
		ctrl_agg_add(agg, d, n);
		ctrl_desired_free(d);
		k8s_obj_free(n);
	}
	assert_int_equal(agg[0].nodes_selected, 2);
	assert_false(agg[0].conflict);
	assert_int_equal(agg[1].nodes_selected, 3);
	assert_true(agg[1].conflict);
	assert_string_equal(agg[1].conflict_msg,
			    "listener z: port 8080/TCP on node n1 is held by LoadBalancer shop/old "
			    "(older)");

	/* Only on the node the old one does not select: no conflict. */
	memset(agg, 0, sizeof(agg));
	{
		struct k8s_obj *n = obj_json(K8S_KIND_NODE,
					     "{'metadata':{'name':'n2','labels':{'zone':'b'}}}");

		assert_int_equal(ctrl_reconcile(&in, n, false, &d), 0);
		ctrl_agg_add(agg, d, n);
		ctrl_desired_free(d);
		k8s_obj_free(n);
	}
	assert_int_equal(agg[0].nodes_selected, 0);
	assert_int_equal(agg[1].nodes_selected, 1);
	assert_false(agg[1].conflict);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_entry_programmed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_entry_bind_failed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_entry_apply_failed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_entry_conflict_and_reserved, setup, teardown),
		cmocka_unit_test_setup_teardown(test_entry_same, setup, teardown),
		cmocka_unit_test_setup_teardown(test_summary_all_good, setup, teardown),
		cmocka_unit_test_setup_teardown(test_summary_accepted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_summary_resolved_refs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_summary_programmed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_summary_ready, setup, teardown),
		cmocka_unit_test_setup_teardown(test_summary_ready_terminating, setup, teardown),
		cmocka_unit_test_setup_teardown(test_summary_transitions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_summary_events, setup, teardown),
		cmocka_unit_test_setup_teardown(test_summary_same, setup, teardown),
		cmocka_unit_test_setup_teardown(test_agg, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
