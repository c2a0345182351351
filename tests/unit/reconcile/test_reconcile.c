/* test_reconcile.c - caches in, desired listeners and verdicts out: backends, conflicts, apply. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "world.h"

/* Service shop/web: "http" is port 80 with targetPort 8080; "admin" is 8081 -> 80. */
#define WEB_PORTS                                                                                  \
	"[{'name':'admin','protocol':'TCP','port':8081,'targetPort':80},"                          \
	"{'name':'http','protocol':'TCP','port':80,'targetPort':8080}]"
/* Its slices' ports: the target ports, under the Service ports' names. */
#define WEB_SLICE_PORTS                                                                            \
	"[{'name':'admin','protocol':'TCP','port':80},{'name':'http','protocol':'TCP','port':8080}]"

#define COND(r, s, t) "'conditions':{'ready':" #r ",'serving':" #s ",'terminating':" #t "}"
#define EP_READY(a) "{'addresses':['" a "']," COND(true, true, false) ",'nodeName':'n1'}"
#define EP_NOT_READY(a) "{'addresses':['" a "']," COND(false, false, false) "}"
#define EP_TERMINATING(a) "{'addresses':['" a "']," COND(false, true, true) "}"
#define EP_GONE(a) "{'addresses':['" a "']," COND(false, false, true) "}"

#define T_OLD "2024-05-01T00:00:00Z"

static struct world w;

static int setup(void **state)
{
	world_init(&w);
	return 0;
}

static int teardown(void **state)
{
	world_free(&w);
	return 0;
}

static const struct ctrl_listener_result *lres(const struct ctrl_desired *d, const char *key,
					       size_t i)
{
	const struct ctrl_lb_result *lr = find_lb(d, key);

	assert_true(i < lr->lb->lb.n_listeners);
	return &lr->listeners[i];
}

/* The backends of listener name, as "a,b" ("-" when it is not in the desired set). */
static const char *backends_of(const struct ctrl_desired *d, const char *name)
{
	static char buf[1024];
	const struct ctrl_listener *l = find_listener(d, name);

	if (!l)
		return "-";
	return backends_str(l, buf, sizeof(buf));
}

/* --- endpoints to backends ------------------------------------------------------------------ */

/* The slice port is found by the Service port's name, not its number; the backend gets the
 * target port the slice gives. */
static void test_backends_by_port_name(void **state)
{
	struct ctrl_desired *d;

	put_svc(&w, "shop", "web", WEB_PORTS);
	put_slice(&w, "shop", "web-abc12", "web", "IPv4", WEB_SLICE_PORTS,
		  "[" EP_READY("10.0.0.2") "," EP_READY("10.0.0.1") "]");
	put_lb(&w, "shop", "lb", T_OLD,
	       SPEC(LISTENER("named", 8000, "web", "'http'") ","
		    LISTENER("numbered", 8001, "web", "80") ","
		    LISTENER("admin", 8002, "web", "8081") ","
		    LISTENER("target", 8003, "web", "8080")));
	d = world_reconcile(&w, NULL, true);
	assert_string_equal(backends_of(d, "shop/lb/named"), "10.0.0.1:8080,10.0.0.2:8080");
	assert_string_equal(backends_of(d, "shop/lb/numbered"), "10.0.0.1:8080,10.0.0.2:8080");
	assert_string_equal(backends_of(d, "shop/lb/admin"), "10.0.0.1:80,10.0.0.2:80");
	assert_true(lres(d, "shop/lb", 0)->resolved);
	assert_int_equal(lres(d, "shop/lb", 0)->ready, 2);
	assert_int_equal(lres(d, "shop/lb", 0)->terminating, 0);
	/* serviceRef.port is a Service port: the target port's number is not one. */
	assert_false(lres(d, "shop/lb", 3)->resolved);
	assert_string_equal(lres(d, "shop/lb", 3)->unresolved_reason, "PortNotFound");
	assert_string_equal(backends_of(d, "shop/lb/target"), "");
	ctrl_desired_free(d);
}

/* Ports of one number and two protocols: the listener's protocol (TCP) picks. */
static void test_backends_by_protocol(void **state)
{
	struct ctrl_desired *d;

	put_svc(&w, "shop", "dns",
		"[{'name':'dns','protocol':'UDP','port':53,'targetPort':5353},"
		"{'name':'dns-tcp','protocol':'TCP','port':53,'targetPort':5354}]");
	put_slice(&w, "shop", "dns-x1", "dns", "IPv4",
		  "[{'name':'dns-tcp','protocol':'UDP','port':9999},"
		  "{'name':'dns','protocol':'UDP','port':5353},"
		  "{'name':'dns-tcp','protocol':'TCP','port':5354}]",
		  "[" EP_READY("10.0.0.9") "]");
	put_lb(&w, "shop", "lb", T_OLD,
	       SPEC(LISTENER("num", 53, "dns", "53") ","
		    LISTENER("name", 54, "dns", "'dns-tcp'") ","
		    LISTENER("udp", 55, "dns", "'dns'")));
	d = world_reconcile(&w, NULL, true);
	assert_string_equal(backends_of(d, "shop/lb/num"), "10.0.0.9:5354");
	assert_string_equal(backends_of(d, "shop/lb/name"), "10.0.0.9:5354");
	/* A TCP listener cannot use the UDP port "dns". */
	assert_string_equal(lres(d, "shop/lb", 2)->unresolved_reason, "PortNotFound");
	ctrl_desired_free(d);
}

/* A Service with one unnamed port: its slices' port has no name either. */
static void test_backends_unnamed_port(void **state)
{
	struct ctrl_desired *d;

	put_svc(&w, "shop", "db", "[{'protocol':'TCP','port':5432,'targetPort':15432}]");
	put_slice(&w, "shop", "db-1", "db", "IPv4", "[{'protocol':'TCP','port':15432}]",
		  "[" EP_READY("10.0.1.1") "]");
	put_lb(&w, "shop", "lb", T_OLD, SPEC(LISTENER("pg", 5432, "db", "5432")));
	d = world_reconcile(&w, NULL, true);
	assert_string_equal(backends_of(d, "shop/lb/pg"), "10.0.1.1:15432");
	ctrl_desired_free(d);
}

static void test_ready_and_terminating(void **state)
{
	struct ctrl_desired *d;
	const struct ctrl_listener_result *r;

	put_svc(&w, "shop", "web", WEB_PORTS);
	put_slice(&w, "shop", "web-1", "web", "IPv4", WEB_SLICE_PORTS,
		  "[" EP_READY("10.0.0.1") "," EP_NOT_READY("10.0.0.2") ","
		  EP_TERMINATING("10.0.0.3") "," EP_GONE("10.0.0.4") ",{'addresses':['10.0.0.5']},"
		  "{'addresses':['10.0.0.6'],'conditions':{'ready':false,'terminating':true}}]");
	put_lb(&w, "shop", "lb", T_OLD, SPEC(LISTENER("web", 8000, "web", "'http'")));
	put_lb(&w, "shop", "strict", T_OLD,
	       "{'drain':{'useTerminatingEndpoints':false},'listeners':["
	       LISTENER("web", 8001, "web", "'http'") "]}");

	/* Ready ones only, while there are some (no conditions reads as ready). */
	d = world_reconcile(&w, NULL, true);
	assert_string_equal(backends_of(d, "shop/lb/web"), "10.0.0.1:8080,10.0.0.5:8080");
	assert_string_equal(backends_of(d, "shop/strict/web"), "10.0.0.1:8080,10.0.0.5:8080");
	r = lres(d, "shop/lb", 0);
	assert_int_equal(r->ready, 2);
	assert_int_equal(r->terminating, 1); /* serving and terminating: 10.0.0.3 */
	ctrl_desired_free(d);

	/* None ready: the serving terminating ones, unless drain says no. */
	put_slice(&w, "shop", "web-1", "web", "IPv4", WEB_SLICE_PORTS,
		  "[" EP_NOT_READY("10.0.0.2") "," EP_TERMINATING("10.0.0.3") ","
		  EP_GONE("10.0.0.4") "," EP_TERMINATING("10.0.0.7") "]");
	d = world_reconcile(&w, NULL, true);
	assert_string_equal(backends_of(d, "shop/lb/web"), "10.0.0.3:8080,10.0.0.7:8080");
	assert_string_equal(backends_of(d, "shop/strict/web"), "");
	assert_non_null(find_listener(d, "shop/strict/web")); /* still listening */
	r = lres(d, "shop/strict", 0);
	assert_int_equal(r->ready, 0);
	assert_int_equal(r->terminating, 2);
	assert_true(r->resolved);
	ctrl_desired_free(d);
}

static void test_dual_stack(void **state)
{
	struct ctrl_desired *d;

	put_svc(&w, "shop", "web", WEB_PORTS);
	put_slice(&w, "shop", "web-v4", "web", "IPv4", WEB_SLICE_PORTS,
		  "[" EP_READY("10.0.0.1") "]");
	put_slice(&w, "shop", "web-v6", "web", "IPv6", WEB_SLICE_PORTS,
		  "[" EP_READY("fd00:0:0::1") "," EP_READY("fd00::2") "]");
	put_lb(&w, "shop", "lb", T_OLD, SPEC(LISTENER("web", 8000, "web", "'http'")));
	d = world_reconcile(&w, NULL, true);
	assert_string_equal(backends_of(d, "shop/lb/web"),
			    "10.0.0.1:8080,[fd00::1]:8080,[fd00::2]:8080");
	assert_int_equal(lres(d, "shop/lb", 0)->ready, 3);
	ctrl_desired_free(d);
}

/* An endpoint moving between slices shows up in both for a while: one backend, counted once,
 * and ready if either says so. */
static void test_address_in_two_slices(void **state)
{
	struct ctrl_desired *d;
	const struct ctrl_listener_result *r;

	put_svc(&w, "shop", "web", WEB_PORTS);
	/* 10.0.0.5 is serving-terminating in the first slice and ready in the second: ready
	 * wins whichever copy is seen first. */
	put_slice(&w, "shop", "web-a", "web", "IPv4", WEB_SLICE_PORTS,
		  "[" EP_READY("10.0.0.1") "," EP_READY("10.0.0.2") "," EP_TERMINATING("10.0.0.5")
		  "]");
	put_slice(&w, "shop", "web-b", "web", "IPv4", WEB_SLICE_PORTS,
		  "[" EP_NOT_READY("10.0.0.1") "," EP_TERMINATING("10.0.0.3") ","
		  EP_READY("10.0.0.2") "," EP_READY("10.0.0.5") "]");
	put_slice(&w, "shop", "web-c", "web", "IPv6", WEB_SLICE_PORTS,
		  "[" EP_TERMINATING("fd00::9") "]");
	put_slice(&w, "shop", "web-d", "web", "IPv6", WEB_SLICE_PORTS,
		  "[" EP_TERMINATING("fd00:0::9") "]");
	put_lb(&w, "shop", "lb", T_OLD, SPEC(LISTENER("web", 8000, "web", "'http'")));
	d = world_reconcile(&w, NULL, true);
	assert_string_equal(backends_of(d, "shop/lb/web"),
			    "10.0.0.1:8080,10.0.0.2:8080,10.0.0.5:8080");
	r = lres(d, "shop/lb", 0);
	assert_int_equal(r->ready, 3);
	assert_int_equal(r->terminating, 2); /* 10.0.0.3 and fd00::9 once */
	ctrl_desired_free(d);
}

/* Only the slices of this Service in this namespace count. */
static void test_other_slices_ignored(void **state)
{
	struct ctrl_desired *d;

	put_svc(&w, "shop", "web", WEB_PORTS);
	put_svc(&w, "other", "web", WEB_PORTS);
	put_slice(&w, "shop", "web-x", "web", "IPv4", WEB_SLICE_PORTS,
		  "[" EP_READY("10.0.0.1") "]");
	put_slice(&w, "other", "web-y", "web", "IPv4", WEB_SLICE_PORTS,
		  "[" EP_READY("10.9.0.1") "]");
	put_slice(&w, "shop", "api-z", "api", "IPv4", WEB_SLICE_PORTS,
		  "[" EP_READY("10.8.0.1") "]");
	put_slice(&w, "shop", "web-canary-q", "web-canary", "IPv4", WEB_SLICE_PORTS,
		  "[" EP_READY("10.7.0.1") "]");
	put_slice(&w, "shop", "we-r", "we", "IPv4", WEB_SLICE_PORTS,
		  "[" EP_READY("10.7.0.2") "]");
	put_slice(&w, "shop", "orphan", "", "IPv4", WEB_SLICE_PORTS, "[" EP_READY("10.6.0.1") "]");
	put_slice(&w, "shop", "web-fqdn", "web", "FQDN", WEB_SLICE_PORTS,
		  "[" EP_READY("web.example.com") "]");
	put_slice(&w, "shopx", "web-s", "web", "IPv4", WEB_SLICE_PORTS,
		  "[" EP_READY("10.5.0.1") "]");
	put_lb(&w, "shop", "lb", T_OLD, SPEC(LISTENER("web", 8000, "web", "'http'")));
	d = world_reconcile(&w, NULL, true);
	assert_string_equal(backends_of(d, "shop/lb/web"), "10.0.0.1:8080");
	assert_int_equal(lres(d, "shop/lb", 0)->ready, 1);
	ctrl_desired_free(d);
}

/* core/v1 Endpoints in the slices' cache (clusters without EndpointSlices). */
static void test_endpoints_v1(void **state)
{
	struct ctrl_desired *d;
	struct k8s_obj *o = obj_json(
		K8S_KIND_ENDPOINTS,
		"{'kind':'Endpoints','apiVersion':'v1',"
		"'metadata':{'name':'web','namespace':'shop'},"
		"'subsets':[{'addresses':[{'ip':'10.0.0.5'},{'ip':'fd00::5'}],"
		"'notReadyAddresses':[{'ip':'10.0.0.6'}],"
		"'ports':[{'name':'admin','port':80,'protocol':'TCP'},"
		"{'name':'http','port':8080,'protocol':'TCP'}]}]}");

	assert_int_equal(k8s_store_put(&w.slices, o), 0);
	put_svc(&w, "shop", "web", WEB_PORTS);
	put_lb(&w, "shop", "lb", T_OLD, SPEC(LISTENER("web", 8000, "web", "'http'")));
	d = world_reconcile(&w, NULL, true);
	assert_string_equal(backends_of(d, "shop/lb/web"), "10.0.0.5:8080,[fd00::5]:8080");
	assert_int_equal(lres(d, "shop/lb", 0)->ready, 2);
	assert_int_equal(lres(d, "shop/lb", 0)->terminating, 0);
	ctrl_desired_free(d);
}

/* A missing Service or port: reported, and the listener still holds its port, empty. */
static void test_unresolved(void **state)
{
	struct ctrl_desired *d;
	const struct ctrl_listener *l;
	const struct ctrl_listener_result *r;

	put_svc(&w, "shop", "web", WEB_PORTS);
	put_svc(&w, "other", "api", "[{'name':'grpc','protocol':'TCP','port':9090}]");
	put_slice(&w, "shop", "web-1", "web", "IPv4", WEB_SLICE_PORTS,
		  "[" EP_READY("10.0.0.1") "]");
	put_lb(&w, "shop", "lb", T_OLD,
	       SPEC(LISTENER("nosvc", 8000, "api", "'grpc'") ","
		    LISTENER("noport", 8001, "web", "'grpc'") ","
		    LISTENER("ok", 8002, "web", "'http'")));
	put_lb(&w, "shop", "late", "2025-01-01T00:00:00Z", SPEC(LISTENER("x", 8000, "web", "80")));
	d = world_reconcile(&w, NULL, true);

	r = lres(d, "shop/lb", 0);
	assert_int_equal(r->state, CTRL_L_SERVED);
	assert_false(r->resolved);
	assert_string_equal(r->unresolved_reason, "ServiceNotFound");
	l = find_listener(d, "shop/lb/nosvc");
	assert_non_null(l);
	assert_int_equal(l->n_backends, 0);
	assert_int_equal(l->port, 8000);

	r = lres(d, "shop/lb", 1);
	assert_int_equal(r->state, CTRL_L_SERVED);
	assert_false(r->resolved);
	assert_string_equal(r->unresolved_reason, "PortNotFound");
	assert_non_null(find_listener(d, "shop/lb/noport"));

	assert_true(lres(d, "shop/lb", 2)->resolved);
	assert_string_equal(backends_of(d, "shop/lb/ok"), "10.0.0.1:8080");
	/* The port of the empty listener stays its LoadBalancer's. */
	assert_int_equal(lres(d, "shop/late", 0)->state, CTRL_L_CONFLICT);
	assert_null(find_listener(d, "shop/late/x"));
	ctrl_desired_free(d);
}

/* --- selection ------------------------------------------------------------------------------ */

static void test_selection(void **state)
{
	const struct k8s_obj *a = put_node(&w, "n-a", "{'zone':'a','gpu':'t4'}", "[]");
	const struct k8s_obj *b = put_node(&w, "n-b", "{'zone':'b'}", "[]");
	struct ctrl_desired *d;

	put_svc(&w, "shop", "web", WEB_PORTS);
	put_lb(&w, "shop", "zone-a", "2024-01-01T00:00:00Z",
	       "{'nodeSelector':{'matchLabels':{'zone':'a'}},'listeners':["
	       LISTENER("web", 8000, "web", "'http'") "]}");
	put_lb(&w, "shop", "no-gpu", "2024-01-02T00:00:00Z",
	       "{'nodeSelector':{'matchExpressions':[{'key':'gpu','operator':'DoesNotExist'}]},"
	       "'listeners':[" LISTENER("web", 8000, "web", "'http'") "]}");
	put_lb(&w, "shop", "all", "2024-01-03T00:00:00Z",
	       "{'nodeSelector':{},'listeners':[" LISTENER("web", 9000, "web", "'http'") "]}");

	/* Node a: zone-a serves 8000; no-gpu is not selected, so it does not conflict. */
	d = world_reconcile(&w, a, true);
	assert_true(find_lb(d, "shop/zone-a")->selected);
	assert_false(find_lb(d, "shop/no-gpu")->selected);
	assert_int_equal(lres(d, "shop/no-gpu", 0)->state, CTRL_L_NOT_SELECTED);
	assert_non_null(find_listener(d, "shop/zone-a/web"));
	assert_null(find_listener(d, "shop/no-gpu/web"));
	assert_non_null(find_listener(d, "shop/all/web"));
	/* Status still counts the Service of a listener not served here. */
	assert_true(lres(d, "shop/no-gpu", 0)->resolved);
	ctrl_desired_free(d);

	/* Node b: the other way round. */
	d = world_reconcile(&w, b, true);
	assert_false(find_lb(d, "shop/zone-a")->selected);
	assert_true(find_lb(d, "shop/no-gpu")->selected);
	assert_int_equal(lres(d, "shop/no-gpu", 0)->state, CTRL_L_SERVED);
	assert_null(find_listener(d, "shop/zone-a/web"));
	assert_non_null(find_listener(d, "shop/no-gpu/web"));
	ctrl_desired_free(d);

	/* No Node object: only the LoadBalancer without a selector. */
	d = world_reconcile(&w, NULL, true);
	assert_false(find_lb(d, "shop/zone-a")->selected);
	assert_false(find_lb(d, "shop/no-gpu")->selected);
	assert_true(find_lb(d, "shop/all")->selected);
	assert_int_equal(d->n_listeners, 1);
	ctrl_desired_free(d);
}

/* --- port conflicts ------------------------------------------------------------------------- */

static const struct {
	const char *ns, *name, *created;
} conflicting[] = {
	{ "shop", "a", "2024-05-03T00:00:00Z" },
	{ "shop", "b", "2024-05-02T00:00:00Z" },
	/* The oldest, written with an offset: 09:00Z, older than d's 10:00Z although its text
	 * sorts after it. */
	{ "shop", "c", "2024-05-01T11:00:00+02:00" },
	{ "shop", "d", "2024-05-01T10:00:00Z" },
	{ "dev", "e", "2024-05-04T00:00:00Z" },
	{ "prod", "f", "2024-05-05T00:00:00Z" },
	{ "alpha", "g", "2024-06-01T00:00:00Z" },
	{ "beta", "h", "2024-05-01T10:00:01Z" },
};
#define N_CONFLICTING (sizeof(conflicting) / sizeof(conflicting[0]))

/* Every LoadBalancer wants 8080, and has a port of its own: insert them in order perm. */
static void put_conflicting(struct world *x, const size_t *perm, const char *same_time)
{
	for (size_t k = 0; k < N_CONFLICTING; k++) {
		size_t i = perm[k];
		char spec[512];

		snprintf(spec, sizeof(spec),
			 "{'listeners':[{'name':'own','port':%zu,'backend':{'serviceRef':{'name':"
			 "'web','port':'http'}}}," LISTENER("shared", 8080, "web", "'http'") "]}",
			 9000 + i);
		put_lb(x, conflicting[i].ns, conflicting[i].name,
		       same_time ? same_time : conflicting[i].created, spec);
	}
}

static void check_conflicts(const struct ctrl_desired *d, const char *winner)
{
	char key[CTRL_KEY_MAX], name[CTRL_KEY_MAX + 16];

	assert_int_equal(d->n_lbs, N_CONFLICTING);
	assert_string_equal(d->lbs[0].key, winner);
	assert_int_equal(d->n_listeners, N_CONFLICTING + 1);
	for (size_t i = 0; i < N_CONFLICTING; i++) {
		const struct ctrl_listener_result *own, *shared;

		snprintf(key, sizeof(key), "%s/%s", conflicting[i].ns, conflicting[i].name);
		own = lres(d, key, 0);
		shared = lres(d, key, 1);
		/* The loser's other listener is still served. */
		assert_int_equal(own->state, CTRL_L_SERVED);
		snprintf(name, sizeof(name), "%s/own", key);
		assert_non_null(find_listener(d, name));
		snprintf(name, sizeof(name), "%s/shared", key);
		if (!strcmp(key, winner)) {
			assert_int_equal(shared->state, CTRL_L_SERVED);
			assert_non_null(find_listener(d, name));
		} else {
			assert_int_equal(shared->state, CTRL_L_CONFLICT);
			assert_string_equal(shared->conflict_with, winner);
			assert_null(find_listener(d, name));
		}
	}
}

static void test_conflict_oldest_wins(void **state)
{
	size_t fwd[N_CONFLICTING], rev[N_CONFLICTING], mix[N_CONFLICTING];

	for (size_t i = 0; i < N_CONFLICTING; i++) {
		fwd[i] = i;
		rev[i] = N_CONFLICTING - 1 - i;
		mix[i] = (i * 3 + 5) % N_CONFLICTING;
	}
	const size_t *perms[] = { fwd, rev, mix };
	for (size_t p = 0; p < 3; p++) {
		struct world x;
		struct ctrl_desired *d;

		world_init(&x);
		put_svc(&x, "shop", "web", WEB_PORTS);
		put_conflicting(&x, perms[p], NULL);
		d = world_reconcile(&x, NULL, true);
		check_conflicts(d, "shop/c");
		/* Oldest first, all of them. */
		for (size_t i = 1; i < d->n_lbs; i++)
			assert_true(d->lbs[i - 1].lb->meta.created <= d->lbs[i].lb->meta.created);
		ctrl_desired_free(d);
		/* Selection and conflicts alone (the Lease holder's per-node pass). */
		d = world_reconcile(&x, NULL, false);
		assert_int_equal(d->n_listeners, 0);
		assert_string_equal(d->lbs[0].key, "shop/c");
		assert_int_equal(lres(d, "shop/a", 1)->state, CTRL_L_CONFLICT);
		assert_string_equal(lres(d, "shop/a", 1)->conflict_with, "shop/c");
		assert_false(lres(d, "shop/c", 1)->resolved); /* not worked out without backends */
		ctrl_desired_free(d);
		world_free(&x);
	}
}

/* Created in the same second: the smaller namespace/name keeps the port. */
static void test_conflict_tie(void **state)
{
	size_t fwd[N_CONFLICTING], rev[N_CONFLICTING];

	for (size_t i = 0; i < N_CONFLICTING; i++) {
		fwd[i] = i;
		rev[i] = N_CONFLICTING - 1 - i;
	}
	const size_t *perms[] = { fwd, rev };
	for (size_t p = 0; p < 2; p++) {
		struct world x;
		struct ctrl_desired *d;

		world_init(&x);
		put_conflicting(&x, perms[p], "2024-05-01T00:00:00Z");
		d = world_reconcile(&x, NULL, true);
		check_conflicts(d, "alpha/g");
		for (size_t i = 1; i < d->n_lbs; i++)
			assert_true(strcmp(d->lbs[i - 1].key, d->lbs[i].key) < 0);
		ctrl_desired_free(d);
		world_free(&x);
	}
}

/* Ports the dataplane's own file listens on: reported, never claimed or applied. */
static void test_reserved_ports(void **state)
{
	struct ctrl_desired *d;

	w.reserved[0] = (struct ctrl_port_proto){ 443, K8S_PROTO_TCP };
	w.reserved[1] = (struct ctrl_port_proto){ 8080, K8S_PROTO_TCP };
	w.n_reserved = 2;
	put_svc(&w, "shop", "web", WEB_PORTS);
	put_lb(&w, "shop", "old", "2024-01-01T00:00:00Z",
	       SPEC(LISTENER("a", 8080, "web", "'http'") "," LISTENER("b", 9090, "web", "'http'")));
	put_lb(&w, "shop", "new", "2024-02-01T00:00:00Z",
	       SPEC(LISTENER("a", 8080, "web", "'http'")));
	d = world_reconcile(&w, NULL, true);
	assert_int_equal(lres(d, "shop/old", 0)->state, CTRL_L_RESERVED);
	assert_int_equal(lres(d, "shop/old", 1)->state, CTRL_L_SERVED);
	assert_int_equal(lres(d, "shop/new", 0)->state, CTRL_L_RESERVED);
	assert_null(find_listener(d, "shop/old/a"));
	assert_null(find_listener(d, "shop/new/a"));
	assert_non_null(find_listener(d, "shop/old/b"));
	assert_int_equal(d->n_listeners, 1);
	ctrl_desired_free(d);
}

/* --deny-ports: a listener there is refused on every node, and claims no port either. */
static void test_denied_ports(void **state)
{
	struct ctrl_desired *d;

	w.denied[0] = (struct ctrl_port_range){ 8000, 8100 };
	w.denied[1] = (struct ctrl_port_range){ 22, 22 };
	w.n_denied = 2;
	put_svc(&w, "shop", "web", WEB_PORTS);
	put_lb(&w, "shop", "old", "2024-01-01T00:00:00Z",
	       SPEC(LISTENER("a", 8080, "web", "'http'") "," LISTENER("b", 9090, "web", "'http'")));
	put_lb(&w, "shop", "new", "2024-02-01T00:00:00Z",
	       SPEC(LISTENER("a", 8100, "web", "'http'") "," LISTENER("ssh", 22, "web", "'http'")));
	d = world_reconcile(&w, NULL, true);
	assert_int_equal(lres(d, "shop/old", 0)->state, CTRL_L_DENIED);
	assert_int_equal(lres(d, "shop/old", 1)->state, CTRL_L_SERVED);
	assert_int_equal(lres(d, "shop/new", 0)->state, CTRL_L_DENIED);
	assert_int_equal(lres(d, "shop/new", 1)->state, CTRL_L_DENIED);
	assert_non_null(find_listener(d, "shop/old/b"));
	assert_int_equal(d->n_listeners, 1);
	ctrl_desired_free(d);
	/* 8101 is outside the range: served. */
	w.denied[0].hi = 8099;
	d = world_reconcile(&w, NULL, true);
	assert_int_equal(lres(d, "shop/new", 0)->state, CTRL_L_SERVED);
	ctrl_desired_free(d);
}

static void test_port_ranges_parse(void **state)
{
	static const char *const bad[] = { "0", "65536", "5-3", "a", "22,,3", "1-", "-5", "1-2-3",
					   " 22", "022" };
	struct ctrl_port_range *v;
	char err[256];
	size_t n;

	assert_int_equal(ctrl_port_ranges_parse("22,2379-2380,10250,", &v, &n, err, sizeof(err)),
			 0);
	assert_int_equal(n, 3);
	assert_int_equal(v[1].lo, 2379);
	assert_int_equal(v[1].hi, 2380);
	assert_int_equal(v[2].lo, 10250);
	assert_int_equal(v[2].hi, 10250);
	free(v);
	assert_int_equal(ctrl_port_ranges_parse("", &v, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 0);
	free(v);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(ctrl_port_ranges_parse(bad[i], &v, &n, err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "is not a port 1..65535 or a range LO-HI of them"));
	}
}

/* An invalid LoadBalancer serves nothing and holds no port. */
static void test_invalid_serves_nothing(void **state)
{
	struct ctrl_desired *d;
	const struct ctrl_lb_result *lr;

	put_svc(&w, "shop", "web", WEB_PORTS);
	/* Its first listener parses before the duplicate name is seen. */
	put_lb(&w, "shop", "bad", "2020-01-01T00:00:00Z",
	       SPEC(LISTENER("web", 8080, "web", "'http'") "," LISTENER("web", 8081, "web",
									"'http'")));
	put_lb(&w, "shop", "sctp", "2020-01-02T00:00:00Z",
	       "{'listeners':[{'name':'dns','protocol':'SCTP','port':8082,'backend':{'serviceRef':{"
	       "'name':'web','port':'http'}}}]}");
	put_lb(&w, "shop", "hc", "2020-01-03T00:00:00Z",
	       "{'healthCheck':{'periodSeconds':1,'timeoutSeconds':1},'listeners':["
	       LISTENER("web", 8083, "web", "'http'") "]}");
	put_lb(&w, "shop", "good", "2024-01-01T00:00:00Z",
	       SPEC(LISTENER("web", 8080, "web", "'http'")));
	d = world_reconcile(&w, NULL, true);

	lr = find_lb(d, "shop/bad");
	assert_non_null(lr->lb->lb.invalid);
	assert_non_null(strstr(lr->lb->lb.invalid, "spec.listeners[1].name"));
	assert_false(lr->selected);
	for (size_t i = 0; i < lr->lb->lb.n_listeners; i++)
		assert_int_equal(lr->listeners[i].state, CTRL_L_INVALID);
	assert_non_null(strstr(find_lb(d, "shop/sctp")->lb->lb.invalid,
			       "spec.listeners[0].protocol: must be TCP or UDP"));
	assert_non_null(strstr(find_lb(d, "shop/hc")->lb->lb.invalid,
			       "spec.healthCheck.timeoutSeconds"));
	/* Only the valid one is in the desired set, and it has the port. */
	assert_int_equal(d->n_listeners, 1);
	assert_non_null(find_listener(d, "shop/good/web"));
	assert_int_equal(lres(d, "shop/good", 0)->state, CTRL_L_SERVED);
	ctrl_desired_free(d);
}

/* --- UDP ----------------------------------------------------------------------------------- */

/*
 * Service dns/dns: 53/TCP "dns-tcp" (target 5354) listed before 53/UDP "dns" (target 5353), so
 * that a match on the number alone would find the TCP one.  Its slice lists a TCP port also
 * called "dns" first: only the protocol tells it from the UDP one.
 */
#define DNS_PORTS                                                                                  \
	"[{'name':'dns-tcp','protocol':'TCP','port':53,'targetPort':5354},"                        \
	"{'name':'dns','protocol':'UDP','port':53,'targetPort':5353}]"
#define DNS_SLICE_PORTS                                                                            \
	"[{'name':'dns','protocol':'TCP','port':9998},{'name':'dns-tcp','protocol':'TCP',"          \
	"'port':5354},{'name':'dns','protocol':'UDP','port':5353}]"
#define UDP_LISTENER(name, port, svc, svc_port, extra)                                             \
	"{'name':'" name "','protocol':'UDP','port':" #port ",'backend':{'serviceRef':{'name':'"   \
	svc "','port':" svc_port "}}" extra "}"

static void put_dns(struct world *x)
{
	put_svc(x, "dns", "dns", DNS_PORTS);
	put_slice(x, "dns", "dns-a1", "dns", "IPv4", DNS_SLICE_PORTS,
		  "[" EP_READY("10.0.0.9") "," EP_READY("10.0.0.8") "]");
}

/* A UDP listener's backends: the Service's UDP port (by number or by name), then the slice
 * port of that name and protocol UDP. */
static void test_udp_backends_by_protocol(void **state)
{
	struct ctrl_desired *d;

	put_dns(&w);
	put_lb(&w, "dns", "lb", T_OLD,
	       SPEC(UDP_LISTENER("num", 53, "dns", "53", "") ","
		    UDP_LISTENER("name", 54, "dns", "'dns'", "") ","
		    LISTENER("tcp", 53, "dns", "53") ","
		    UDP_LISTENER("tcp-name", 55, "dns", "'dns-tcp'", "")));
	d = world_reconcile(&w, NULL, true);
	assert_string_equal(backends_of(d, "dns/lb/num"), "10.0.0.8:5353,10.0.0.9:5353");
	assert_string_equal(backends_of(d, "dns/lb/name"), "10.0.0.8:5353,10.0.0.9:5353");
	assert_string_equal(backends_of(d, "dns/lb/tcp"), "10.0.0.8:5354,10.0.0.9:5354");
	assert_int_equal(find_listener(d, "dns/lb/num")->protocol, K8S_PROTO_UDP);
	assert_int_equal(lres(d, "dns/lb", 0)->ready, 2);
	/* A UDP listener cannot use the TCP port "dns-tcp". */
	assert_false(lres(d, "dns/lb", 3)->resolved);
	assert_string_equal(lres(d, "dns/lb", 3)->unresolved_reason, "PortNotFound");
	assert_string_equal(backends_of(d, "dns/lb/tcp-name"), "");
	ctrl_desired_free(d);
}

/* 53/TCP and 53/UDP are two ports: one LoadBalancer may have both, a newer one conflicts only
 * on the protocol it shares, and a file listener on 8053/TCP leaves 8053/UDP free. */
static void test_udp_and_tcp_share_a_port(void **state)
{
	struct ctrl_desired *d;

	put_dns(&w);
	w.reserved[0] = (struct ctrl_port_proto){ 8053, K8S_PROTO_TCP };
	w.n_reserved = 1;
	put_lb(&w, "dns", "old", "2024-01-01T00:00:00Z",
	       SPEC(LISTENER("dns-tcp", 53, "dns", "'dns-tcp'") ","
		    UDP_LISTENER("dns-udp", 53, "dns", "'dns'", "")));
	put_lb(&w, "dns", "new", "2024-02-01T00:00:00Z",
	       SPEC(UDP_LISTENER("dns", 53, "dns", "53", "") ","
		    UDP_LISTENER("alt", 8053, "dns", "53", "") ","
		    LISTENER("alt-tcp", 8053, "dns", "53")));
	d = world_reconcile(&w, NULL, true);
	assert_int_equal(lres(d, "dns/old", 0)->state, CTRL_L_SERVED);
	assert_int_equal(lres(d, "dns/old", 1)->state, CTRL_L_SERVED);
	assert_string_equal(backends_of(d, "dns/old/dns-tcp"), "10.0.0.8:5354,10.0.0.9:5354");
	assert_string_equal(backends_of(d, "dns/old/dns-udp"), "10.0.0.8:5353,10.0.0.9:5353");
	assert_int_equal(find_listener(d, "dns/old/dns-tcp")->protocol, K8S_PROTO_TCP);
	assert_int_equal(find_listener(d, "dns/old/dns-udp")->protocol, K8S_PROTO_UDP);
	assert_int_equal(find_listener(d, "dns/old/dns-udp")->port, 53);
	assert_int_equal(lres(d, "dns/new", 0)->state, CTRL_L_CONFLICT);
	assert_string_equal(lres(d, "dns/new", 0)->conflict_with, "dns/old");
	assert_int_equal(lres(d, "dns/new", 1)->state, CTRL_L_SERVED);
	assert_int_equal(lres(d, "dns/new", 2)->state, CTRL_L_RESERVED);
	assert_non_null(find_listener(d, "dns/new/alt"));
	assert_int_equal(d->n_listeners, 3);
	ctrl_desired_free(d);
}

/* The apply of one UDP and one TCP listener of a LoadBalancer that sets everything: the UDP
 * one has none of the keys the dataplane refuses on udp, and its own settings. */
static void test_udp_json(void **state)
{
	struct ctrl_desired *d;
	char *text;

	put_dns(&w);
	put_lb(&w, "dns", "lb", T_OLD,
	       "{'algorithm':'Maglev','healthCheck':{'periodSeconds':5,'timeoutSeconds':2,"
	       "'healthyThreshold':3,'unhealthyThreshold':4,'port':5354},"
	       "'connectTimeoutSeconds':7,'idleTimeoutSeconds':60,'maxConnections':500,"
	       "'proxyProtocol':'V2','listeners':["
	       UDP_LISTENER("udp", 53, "dns", "'dns'", ",'udp':{'responses':1,'maxFlows':5000,"
						       "'idleTimeoutSeconds':10}") ","
	       LISTENER("tcp", 53, "dns", "'dns-tcp'") "]}");
	d = world_reconcile(&w, NULL, true);
	text = desired_text(d, "0.0.0.0");
	assert_string_equal(text,
			    "[{\"name\":\"dns/lb/tcp\",\"listen\":\"0.0.0.0:53\",\"protocol\":\"tcp\","
			    "\"algorithm\":\"maglev\",\"connect_timeout_ms\":7000,"
			    "\"idle_timeout_ms\":60000,\"proxy_protocol\":\"v2\","
			    "\"max_connections\":500,\"health_check\":{\"interval_ms\":5000,"
			    "\"timeout_ms\":2000,\"rise\":3,\"fall\":4,\"port\":5354},"
			    "\"backends\":[{\"address\":\"10.0.0.8:5354\"},"
			    "{\"address\":\"10.0.0.9:5354\"}]},"
			    "{\"name\":\"dns/lb/udp\",\"listen\":\"0.0.0.0:53\",\"protocol\":\"udp\","
			    "\"algorithm\":\"maglev\",\"idle_timeout_ms\":10000,\"responses\":1,"
			    "\"max_flows\":5000,\"health_check\":{\"interval_ms\":5000,"
			    "\"timeout_ms\":2000,\"rise\":3,\"fall\":4,\"port\":5354},"
			    "\"backends\":[{\"address\":\"10.0.0.8:5353\"},"
			    "{\"address\":\"10.0.0.9:5353\"}]}]");
	free(text);
	ctrl_desired_free(d);

	/* Defaults: flows end when idle for 30 s, never by count; no max_flows, no checks. */
	put_lb(&w, "dns", "lb", T_OLD, SPEC(UDP_LISTENER("udp", 53, "dns", "53", "")));
	d = world_reconcile(&w, NULL, true);
	text = desired_text(d, "::");
	assert_string_equal(text,
			    "[{\"name\":\"dns/lb/udp\",\"listen\":\"[::]:53\",\"protocol\":\"udp\","
			    "\"algorithm\":\"round_robin\",\"idle_timeout_ms\":30000,"
			    "\"responses\":0,\"backends\":[{\"address\":\"10.0.0.8:5353\"},"
			    "{\"address\":\"10.0.0.9:5353\"}]}]");
	free(text);
	ctrl_desired_free(d);
}

static void test_udp_lb_ports(void **state)
{
	struct k8s_obj *o = obj_json(K8S_KIND_LOADBALANCER,
				     "{'metadata':{'name':'lb','namespace':'dns'},'spec':" SPEC(
					     UDP_LISTENER("u", 53, "dns", "53", "") ","
					     LISTENER("t", 53, "dns", "53")) "}");
	char buf[64];

	ctrl_lb_ports(&o->lb, buf, sizeof(buf));
	assert_string_equal(buf, "53/UDP,53/TCP");
	k8s_obj_free(o);
}

/* --- the apply ------------------------------------------------------------------------------ */

/* A world of a few dozen objects, put in the order perm gives (perm is a permutation of
 * 0..n-1 where n is what world_objects returns for a NULL world). */
static size_t world_objects(struct world *x, const size_t *perm, bool web1_ready)
{
	enum { FILLER_SLICES = 30, FILLER_LBS = 20 };
	const size_t n = 7 + FILLER_SLICES + FILLER_LBS;

	for (size_t k = 0; x && k < n; k++) {
		size_t i = perm[k];
		char name[64], spec[512], eps[128];

		switch (i) {
		case 0:
			put_svc(x, "shop", "web", WEB_PORTS);
			break;
		case 1:
			put_svc(x, "shop", "api",
				"[{'name':'grpc','protocol':'TCP','port':9090,'targetPort':9091}]");
			break;
		case 2: /* web's slices: addresses out of order across them */
			put_slice(x, "shop", "web-1", "web", "IPv4", WEB_SLICE_PORTS,
				  web1_ready ? "[" EP_READY("10.0.0.9") ","
					       EP_READY("10.0.0.3") "]"
					     : "[" EP_NOT_READY("10.0.0.9") ","
					       EP_READY("10.0.0.3") "]");
			break;
		case 3:
			put_slice(x, "shop", "web-2", "web", "IPv4", WEB_SLICE_PORTS,
				  "[" EP_READY("10.0.0.1") "," EP_TERMINATING("10.0.0.4") "]");
			break;
		case 4:
			put_slice(x, "shop", "api-1", "api", "IPv6",
				  "[{'name':'grpc','protocol':'TCP','port':9091}]",
				  "[" EP_READY("fd00::b") "," EP_READY("fd00::a") "]");
			break;
		case 5: /* older, but its name sorts after alpha's */
			put_lb(x, "shop", "zeta", "2024-01-01T00:00:00Z",
			       SPEC(LISTENER("http", 8000, "web", "'http'") ","
				    LISTENER("grpc", 8001, "api", "9090")));
			break;
		case 6:
			put_lb(x, "shop", "alpha", "2024-02-01T00:00:00Z",
			       "{'algorithm':'Maglev','listeners':["
			       LISTENER("http", 8100, "web", "80") "]}");
			break;
		default:
			if (i < 7 + FILLER_SLICES) {
				snprintf(name, sizeof(name), "filler-%zu-x", i);
				snprintf(eps, sizeof(eps), "[" EP_READY("10.1.0.%zu") "]", i);
				put_slice(x, i % 2 ? "shop" : "other", name, name + 0,
					  "IPv4", WEB_SLICE_PORTS, eps);
			} else {
				snprintf(name, sizeof(name), "lb-%zu", i);
				snprintf(spec, sizeof(spec), SPEC(LISTENER("l", %zu, "gone", "80")),
					 10000 + i);
				put_lb(x, i % 3 ? "team" : "ops", name, "2024-03-01T00:00:00Z",
				       spec);
			}
		}
	}
	return n;
}

static char *world_text(const size_t *perm, bool web1_ready)
{
	struct world x;
	struct ctrl_desired *d;
	char *s;

	world_init(&x);
	world_objects(&x, perm, web1_ready);
	d = world_reconcile(&x, NULL, true);
	s = desired_text(d, "0.0.0.0");
	ctrl_desired_free(d);
	world_free(&x);
	return s;
}

/* The same objects give the same apply, byte for byte, whatever order they came in: the
 * controller compares applies and sends nothing when they are equal. */
static void test_json_order_independent(void **state)
{
	size_t n = world_objects(NULL, NULL, true), perm[64];
	char *first, *s;

	assert_true(n <= 64);
	for (size_t i = 0; i < n; i++)
		perm[i] = i;
	first = world_text(perm, true);
	/* Sorted: listeners by name (alpha before the older zeta), backends by address. */
	assert_non_null(strstr(first,
			       "{\"name\":\"shop/alpha/http\",\"listen\":\"0.0.0.0:8100\","
			       "\"protocol\":\"tcp\",\"algorithm\":\"maglev\""));
	assert_true(strstr(first, "shop/alpha/http") < strstr(first, "shop/zeta/grpc"));
	assert_true(strstr(first, "shop/zeta/grpc") < strstr(first, "shop/zeta/http"));
	assert_non_null(strstr(first, "\"backends\":[{\"address\":\"[fd00::a]:9091\"},"
				      "{\"address\":\"[fd00::b]:9091\"}]"));
	assert_non_null(strstr(first, "\"backends\":[{\"address\":\"10.0.0.1:8080\"},"
				      "{\"address\":\"10.0.0.3:8080\"},"
				      "{\"address\":\"10.0.0.9:8080\"}]"));
	for (unsigned round = 0; round < 8; round++) {
		/* Reversed, then shuffled (Fisher-Yates, a fixed xorshift seed per round). */
		uint64_t seed = 0x2545f4914f6cdd1dull * (round + 1);

		for (size_t i = 0; i < n; i++)
			perm[i] = n - 1 - i;
		for (size_t i = n - 1; round && i > 0; i--) {
			size_t j, t;

			seed ^= seed << 13;
			seed ^= seed >> 7;
			seed ^= seed << 17;
			j = seed % (i + 1);
			t = perm[i];
			perm[i] = perm[j];
			perm[j] = t;
		}
		s = world_text(perm, true);
		assert_string_equal(s, first);
		free(s);
	}

	/* One endpoint turns not ready: a different apply, without it. */
	for (size_t i = 0; i < n; i++)
		perm[i] = i;
	s = world_text(perm, false);
	assert_string_not_equal(s, first);
	assert_null(strstr(s, "10.0.0.9"));
	assert_non_null(strstr(s, "\"backends\":[{\"address\":\"10.0.0.1:8080\"},"
				  "{\"address\":\"10.0.0.3:8080\"}]"));
	free(s);
	free(first);
}

static cJSON *only_listener(const char *spec, const char *listen_host)
{
	struct world x;
	struct ctrl_desired *d;
	cJSON *j, *l;

	world_init(&x);
	put_svc(&x, "shop", "web", WEB_PORTS);
	put_slice(&x, "shop", "web-1", "web", "IPv4", WEB_SLICE_PORTS,
		  "[" EP_READY("10.0.0.1") "]");
	put_lb(&x, "shop", "lb", T_OLD, spec);
	d = world_reconcile(&x, NULL, true);
	j = ctrl_desired_json(d, listen_host);
	assert_non_null(j);
	assert_int_equal(cJSON_GetArraySize(j), 1);
	l = cJSON_DetachItemFromArray(j, 0);
	cJSON_Delete(j);
	ctrl_desired_free(d);
	world_free(&x);
	return l;
}

static double num(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	if (!cJSON_IsNumber(v))
		fail_msg("no number %s", k);
	return v->valuedouble;
}

static const char *str(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	if (!cJSON_IsString(v))
		fail_msg("no string %s", k);
	return v->valuestring;
}

static void test_json_fields(void **state)
{
	static const struct {
		const char *crd, *dp;
	} algos[] = {
		{ "RoundRobin", "round_robin" },
		{ "LeastConnections", "least_conn" },
		{ "RandomTwo", "random_two" },
		{ "Maglev", "maglev" },
	};
	static const struct {
		const char *crd, *dp;
	} pps[] = { { "None", "off" }, { "V1", "v1" }, { "V2", "v2" } };
	char spec[1024], *text;
	cJSON *l, *hc;

	/* Everything set: the whole listener, exactly. */
	l = only_listener(
		"{'algorithm':'Maglev','healthCheck':{'periodSeconds':5,'timeoutSeconds':2,"
		"'healthyThreshold':3,'unhealthyThreshold':4},'connectTimeoutSeconds':7,"
		"'idleTimeoutSeconds':60,'maxConnections':500,'proxyProtocol':'V2','listeners':["
		LISTENER("web", 8000, "web", "'http'") "]}",
		"0.0.0.0");
	text = cJSON_PrintUnformatted(l);
	assert_string_equal(text,
			    "{\"name\":\"shop/lb/web\",\"listen\":\"0.0.0.0:8000\",\"protocol\":"
			    "\"tcp\",\"algorithm\":\"maglev\",\"connect_timeout_ms\":7000,"
			    "\"idle_timeout_ms\":60000,\"proxy_protocol\":\"v2\","
			    "\"max_connections\":500,\"health_check\":{\"interval_ms\":5000,"
			    "\"timeout_ms\":2000,\"rise\":3,\"fall\":4},\"backends\":[{\"address\":"
			    "\"10.0.0.1:8080\"}]}");
	free(text);
	cJSON_Delete(l);

	/* Defaults: no health check, no connection limit. */
	l = only_listener(SPEC(LISTENER("web", 8000, "web", "'http'")), "0.0.0.0");
	assert_string_equal(str(l, "algorithm"), "round_robin");
	assert_true(num(l, "connect_timeout_ms") == 3000);
	assert_true(num(l, "idle_timeout_ms") == 300000);
	assert_string_equal(str(l, "proxy_protocol"), "off");
	assert_null(cJSON_GetObjectItemCaseSensitive(l, "health_check"));
	assert_null(cJSON_GetObjectItemCaseSensitive(l, "max_connections"));
	cJSON_Delete(l);

	/* healthCheck: {} turns checks on with their defaults. */
	l = only_listener("{'healthCheck':{},'listeners':[" LISTENER("web", 8000, "web", "'http'")
			  "]}",
			  "0.0.0.0");
	hc = cJSON_GetObjectItemCaseSensitive(l, "health_check");
	assert_non_null(hc);
	assert_true(num(hc, "interval_ms") == 2000);
	assert_true(num(hc, "timeout_ms") == 1000);
	assert_true(num(hc, "rise") == 2);
	assert_true(num(hc, "fall") == 3);
	cJSON_Delete(l);

	for (size_t i = 0; i < sizeof(algos) / sizeof(algos[0]); i++) {
		snprintf(spec, sizeof(spec), "{'algorithm':'%s','listeners':["
			 LISTENER("web", 8000, "web", "'http'") "]}", algos[i].crd);
		l = only_listener(spec, "0.0.0.0");
		assert_string_equal(str(l, "algorithm"), algos[i].dp);
		cJSON_Delete(l);
	}
	for (size_t i = 0; i < sizeof(pps) / sizeof(pps[0]); i++) {
		snprintf(spec, sizeof(spec), "{'proxyProtocol':'%s','listeners':["
			 LISTENER("web", 8000, "web", "'http'") "]}", pps[i].crd);
		l = only_listener(spec, "0.0.0.0");
		assert_string_equal(str(l, "proxy_protocol"), pps[i].dp);
		cJSON_Delete(l);
	}

	/* An IPv6 listen host is bracketed. */
	l = only_listener(SPEC(LISTENER("web", 8443, "web", "'http'")), "::");
	assert_string_equal(str(l, "listen"), "[::]:8443");
	cJSON_Delete(l);
}

static void test_lb_ports(void **state)
{
	struct k8s_obj *o = obj_json(K8S_KIND_LOADBALANCER,
				     "{'metadata':{'name':'lb','namespace':'shop'},'spec':" SPEC(
					     LISTENER("a", 80, "web", "80") ","
					     LISTENER("b", 443, "web", "443")) "}");
	char buf[64], small[6];

	ctrl_lb_ports(&o->lb, buf, sizeof(buf));
	assert_string_equal(buf, "80/TCP,443/TCP");
	ctrl_lb_ports(&o->lb, small, sizeof(small));
	assert_string_equal(small, "80/TC");
	k8s_obj_free(o);
}

static void test_empty(void **state)
{
	struct ctrl_desired *d = world_reconcile(&w, NULL, true);
	char *s = desired_text(d, "0.0.0.0");

	assert_int_equal(d->n_lbs, 0);
	assert_int_equal(d->n_listeners, 0);
	assert_string_equal(s, "[]");
	free(s);
	ctrl_desired_free(d);
	ctrl_desired_free(NULL);
}

int run_reconcile_tests(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_backends_by_port_name, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backends_by_protocol, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backends_unnamed_port, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ready_and_terminating, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dual_stack, setup, teardown),
		cmocka_unit_test_setup_teardown(test_address_in_two_slices, setup, teardown),
		cmocka_unit_test_setup_teardown(test_other_slices_ignored, setup, teardown),
		cmocka_unit_test_setup_teardown(test_endpoints_v1, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unresolved, setup, teardown),
		cmocka_unit_test_setup_teardown(test_selection, setup, teardown),
		cmocka_unit_test(test_conflict_oldest_wins),
		cmocka_unit_test(test_conflict_tie),
		cmocka_unit_test_setup_teardown(test_reserved_ports, setup, teardown),
		cmocka_unit_test_setup_teardown(test_denied_ports, setup, teardown),
		cmocka_unit_test(test_port_ranges_parse),
		cmocka_unit_test_setup_teardown(test_invalid_serves_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_udp_backends_by_protocol, setup, teardown),
		cmocka_unit_test_setup_teardown(test_udp_and_tcp_share_a_port, setup, teardown),
		cmocka_unit_test_setup_teardown(test_udp_json, setup, teardown),
		cmocka_unit_test(test_udp_lb_ports),
		cmocka_unit_test(test_json_order_independent),
		cmocka_unit_test(test_json_fields),
		cmocka_unit_test(test_lb_ports),
		cmocka_unit_test_setup_teardown(test_empty, setup, teardown),
	};

	return cmocka_run_group_tests_name("reconcile", tests, NULL, NULL);
}
