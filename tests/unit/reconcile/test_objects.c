/* test_objects.c - Kubernetes JSON copied into structs: metadata, times, specs, selectors. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "world.h"

/* 2026-12-07T05:11:10Z, computed outside (python3 calendar.timegm). */
#define T0 1796620270

static void test_time_parse(void **state)
{
	static const char *const same[] = {
		"2026-12-07T05:11:10Z",
		"2026-12-07T05:11:10.123456Z",
		"2026-12-07T07:11:10+02:00",
		"2026-12-07T04:11:10-01:00",
		"2026-12-07T10:41:10.5+05:30",
	};
	static const char *const bad[] = {
		"yesterday", "2026-12-07T05:11:10", "2026-12-07T05:11:10Zjunk",
		"2026-12-07T05:11:10+0200", "",
	};
	char buf[32];
	int64_t t;

	for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
		t = 0;
		assert_int_equal(k8s_time_parse(same[i], &t), 0);
		assert_int_equal(t, T0);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(k8s_time_parse(bad[i], &t), -EINVAL);
	assert_int_equal(k8s_time_parse(NULL, &t), -EINVAL);
	k8s_time_format(T0, buf, sizeof(buf));
	assert_string_equal(buf, "2026-12-07T05:11:10Z");
}

static void test_meta(void **state)
{
	struct k8s_obj *o = obj_json(K8S_KIND_SERVICE,
				     "{'metadata':{'name':'web','namespace':'shop','uid':'1f2e',"
				     "'resourceVersion':'4711','generation':3,"
				     "'creationTimestamp':'2026-12-07T05:11:10Z'},'spec':{}}");
	char key[CTRL_KEY_MAX];

	assert_string_equal(o->meta.ns, "shop");
	assert_string_equal(o->meta.name, "web");
	assert_string_equal(o->meta.uid, "1f2e");
	assert_string_equal(o->meta.rv, "4711");
	assert_int_equal(o->meta.generation, 3);
	assert_int_equal(o->meta.created, T0);
	k8s_obj_key(&o->meta, key, sizeof(key));
	assert_string_equal(key, "shop/web");
	assert_int_equal(o->svc.n_ports, 0);
	k8s_obj_free(o);

	/* Cluster-scoped: the key is the name alone. */
	o = obj_json(K8S_KIND_NODE, "{'metadata':{'name':'n1'}}");
	k8s_obj_key(&o->meta, key, sizeof(key));
	assert_string_equal(key, "n1");
	k8s_obj_free(o);
	k8s_obj_free(NULL);
}

static void test_meta_errors(void **state)
{
	char longns[K8S_LABEL_MAX + 8], err[128];
	struct k8s_obj *o;

	memset(longns, 'a', sizeof(longns) - 1);
	longns[sizeof(longns) - 1] = 0;
	err[0] = 0;
	assert_int_equal(obj_parse(K8S_KIND_SERVICE, &o, err, sizeof(err),
				   "{'metadata':{'namespace':'shop'}}"),
			 -EINVAL);
	assert_null(o);
	assert_non_null(strstr(err, "metadata.name"));
	assert_int_equal(obj_parse(K8S_KIND_LOADBALANCER, &o, err, sizeof(err), "{'spec':{}}"),
			 -EINVAL);
	assert_int_equal(obj_parse(K8S_KIND_SERVICE, &o, err, sizeof(err),
				   "{'metadata':{'name':'','namespace':'shop'}}"),
			 -EINVAL);
	err[0] = 0;
	assert_int_equal(obj_parse(K8S_KIND_SERVICE, &o, err, sizeof(err),
				   "{'metadata':{'name':'web','namespace':'%s'}}", longns),
			 -EINVAL);
	assert_non_null(strstr(err, "too long"));
	assert_null(k8s_json_rv(NULL));
	/*
	 * Names the API server would never store (a relay's corruption): refused, since they
	 * would become listener names the dataplane refuses, failing the whole apply.
	 */
	static const char *const bad[][2] = {
		{ "web", "   r" }, { "Web", "shop" }, { "web", "a.b" }, { "-web", "shop" },
		{ "web_1", "shop" }, { "web.", "shop" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(obj_parse(K8S_KIND_SERVICE, &o, err, sizeof(err),
					   "{'metadata':{'name':'%s','namespace':'%s'}}", bad[i][0],
					   bad[i][1]),
				 -EINVAL);
		assert_non_null(strstr(err, "not a DNS name"));
	}
	o = obj_json(K8S_KIND_NODE, "{'metadata':{'name':'node-a.example.com'}}");
	k8s_obj_free(o);
}

static void test_lb_defaults(void **state)
{
	struct k8s_obj *o = obj_json(K8S_KIND_LOADBALANCER,
				     "{'metadata':{'name':'lb','namespace':'shop'},'spec':" SPEC(
					     LISTENER("http", 8080, "web", "'http'") ","
					     LISTENER("raw", 9000, "web", "9000")) "}");
	const struct k8s_lb *lb = &o->lb;

	assert_null(lb->invalid);
	assert_int_equal(lb->algorithm, LB_ALGO_ROUND_ROBIN);
	assert_false(lb->health);
	assert_int_equal(lb->connect_timeout_s, 3);
	assert_int_equal(lb->idle_timeout_s, 300);
	assert_int_equal(lb->max_connections, 0);
	assert_int_equal(lb->proxy, LB_PROXY_OFF);
	assert_true(lb->use_terminating);
	assert_int_equal(lb->n_listeners, 2);
	assert_string_equal(lb->listeners[0].svc_port_name, "http");
	assert_int_equal(lb->listeners[0].svc_port, 0);
	assert_int_equal(lb->listeners[1].svc_port, 9000);
	assert_int_equal(lb->node_selector.n_labels + lb->node_selector.n_exprs, 0);
	assert_null(lb->status);
	k8s_obj_free(o);
}

/* Every way a spec can be unusable: returned, with the field named, and no listeners served. */
static void test_lb_invalid(void **state)
{
	static const struct {
		const char *spec;
		const char *msg;
	} cases[] = {
		{ SPEC(LISTENER("web", 8080, "web", "80") "," LISTENER("web", 8081, "web", "80")),
		  "spec.listeners[1].name: \"web\" is used twice" },
		{ SPEC(LISTENER("a", 8080, "web", "80") "," LISTENER("b", 8080, "web", "80")),
		  "spec.listeners[1]: port 8080/TCP is used twice" },
		{ "{'listeners':[{'name':'dns','protocol':'SCTP','port':53,'backend':{'serviceRef':"
		  "{'name':'dns','port':53}}}]}",
		  "spec.listeners[0].protocol: must be TCP or UDP" },
		/* UDP settings on a TCP listener would do nothing: refused, not ignored. */
		{ "{'listeners':[{'name':'dns','port':53,'udp':{'responses':1},'backend':{"
		  "'serviceRef':{'name':'dns','port':53}}}]}",
		  "spec.listeners[0].udp: only for a UDP listener, and this one is TCP" },
		/* Checks are TCP connects: a UDP listener's need a TCP port to connect to. */
		{ "{'healthCheck':{},'listeners':[" LISTENER("web", 8080, "web", "80") ","
		  "{'name':'dns','protocol':'UDP','port':53,'backend':{'serviceRef':{'name':'dns',"
		  "'port':53}}}]}",
		  "spec.healthCheck.port: required when a listener is UDP (listener dns)" },
		{ "{'listeners':[{'name':'a','protocol':'UDP','port':53,'backend':{'serviceRef':"
		  "{'name':'dns','port':53}}},{'name':'b','protocol':'UDP','port':53,'backend':{"
		  "'serviceRef':{'name':'dns','port':53}}}]}",
		  "spec.listeners[1]: port 53/UDP is used twice" },
		{ "{'listeners':[{'name':'x','protocol':'QUIC','port':53,'backend':{'serviceRef':"
		  "{'name':'dns','port':53}}}]}",
		  "spec.listeners[0].protocol" },
		{ "{'healthCheck':{'periodSeconds':3,'timeoutSeconds':5},'listeners':["
		  LISTENER("web", 8080, "web", "80") "]}",
		  "spec.healthCheck.timeoutSeconds" },
		{ "{'healthCheck':{'periodSeconds':2,'timeoutSeconds':2},'listeners':["
		  LISTENER("web", 8080, "web", "80") "]}",
		  "spec.healthCheck.timeoutSeconds" },
		{ "{'algorithm':'Random','listeners':[" LISTENER("web", 8080, "web", "80") "]}",
		  "spec.algorithm" },
		{ "{'proxyProtocol':'V3','listeners':[" LISTENER("web", 8080, "web", "80") "]}",
		  "spec.proxyProtocol" },
		{ "{'listeners':[]}", "spec.listeners" },
		{ "{}", "spec.listeners" },
		{ SPEC(LISTENER("web", 70000, "web", "80")), "spec.listeners[0].port" },
		{ SPEC(LISTENER("a b", 8080, "web", "80")), "spec.listeners[0].name: missing, longer "
		  "than 63, or not a DNS label" },
		{ SPEC(LISTENER("Web", 8080, "web", "80")), "spec.listeners[0].name" },
		{ SPEC(LISTENER("web", 8080, "web", "0")),
		  "spec.listeners[0].backend.serviceRef.port" },
		{ SPEC(LISTENER("web", 8080, "web", "''")),
		  "spec.listeners[0].backend.serviceRef.port" },
		{ "{'listeners':[{'name':'web','port':8080,'backend':{'serviceRef':{'port':80}}}]}",
		  "spec.listeners[0].backend.serviceRef.name" },
		{ "{'listeners':[{'port':8080,'backend':{'serviceRef':{'name':'w','port':80}}}]}",
		  "spec.listeners[0].name" },
		{ "{'nodeSelector':{'matchExpressions':[{'key':'zone','operator':'In'}]},"
		  "'listeners':[" LISTENER("web", 8080, "web", "80") "]}",
		  "spec.nodeSelector.matchExpressions[0]: In needs values" },
		{ "{'nodeSelector':{'matchExpressions':[{'key':'a','operator':'Exists'},"
		  "{'key':'gpu','operator':'DoesNotExist','values':['x']}]},'listeners':["
		  LISTENER("web", 8080, "web", "80") "]}",
		  "spec.nodeSelector.matchExpressions[1]: DoesNotExist takes no values" },
		{ "{'nodeSelector':{'matchExpressions':[{'key':'zone','operator':'Has'}]},"
		  "'listeners':[" LISTENER("web", 8080, "web", "80") "]}",
		  "spec.nodeSelector.matchExpressions[0]" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct k8s_obj *o;

		o = obj_json(K8S_KIND_LOADBALANCER,
			     "{'metadata':{'name':'lb','namespace':'shop'},'spec':%s}",
			     cases[i].spec);
		if (!o->lb.invalid || !strstr(o->lb.invalid, cases[i].msg))
			fail_msg("case %zu: invalid is \"%s\", wanted \"%s\"", i,
				 o->lb.invalid ? o->lb.invalid : "(null)", cases[i].msg);
		k8s_obj_free(o);
	}

	/* No spec at all. */
	{
		struct k8s_obj *o = obj_json(K8S_KIND_LOADBALANCER,
					     "{'metadata':{'name':'lb','namespace':'shop'}}");

		assert_non_null(o->lb.invalid);
		assert_non_null(strstr(o->lb.invalid, "spec: missing"));
		k8s_obj_free(o);
	}
}

static void test_lb_settings(void **state)
{
	struct k8s_obj *o = obj_json(
		K8S_KIND_LOADBALANCER,
		"{'metadata':{'name':'lb','namespace':'shop'},'spec':{"
		"'algorithm':'LeastConnections','healthCheck':{'periodSeconds':5,"
		"'timeoutSeconds':2,'healthyThreshold':3,'unhealthyThreshold':4},"
		"'connectTimeoutSeconds':7,'idleTimeoutSeconds':60,"
		"'maxConnections':500,'proxyProtocol':'V1',"
		"'drain':{'useTerminatingEndpoints':false},"
		"'nodeSelector':{'matchLabels':{'zone':'a'},'matchExpressions':[{'key':'gpu',"
		"'operator':'NotIn','values':['none','old']}]},"
		"'listeners':[" LISTENER("web", 8080, "web", "80") "]},"
		"'status':{'ports':'8080/TCP'}}");
	const struct k8s_lb *lb = &o->lb;

	assert_null(lb->invalid);
	assert_int_equal(lb->algorithm, LB_ALGO_LEAST_CONN);
	assert_true(lb->health);
	assert_int_equal(lb->period_s, 5);
	assert_int_equal(lb->timeout_s, 2);
	assert_int_equal(lb->healthy, 3);
	assert_int_equal(lb->unhealthy, 4);
	assert_int_equal(lb->connect_timeout_s, 7);
	assert_int_equal(lb->idle_timeout_s, 60);
	assert_int_equal(lb->max_connections, 500);
	assert_int_equal(lb->proxy, LB_PROXY_V1);
	assert_false(lb->use_terminating);
	assert_int_equal(lb->node_selector.n_labels, 1);
	assert_int_equal(lb->node_selector.n_exprs, 1);
	assert_int_equal(lb->node_selector.exprs[0].op, K8S_SEL_NOT_IN);
	assert_int_equal(lb->node_selector.exprs[0].n_values, 2);
	assert_non_null(lb->status);
	k8s_obj_free(o);
}

/*
 * The CRD's DNS example (deploy/examples/dns.yaml) as the API server stores it, defaults filled
 * in: 53/UDP and 53/TCP side by side, the UDP one's flow settings, checks on a TCP port.
 */
static void test_lb_udp_example(void **state)
{
	struct k8s_obj *o = obj_json(
		K8S_KIND_LOADBALANCER,
		"{'apiVersion':'layer4lb.io/v1alpha1','kind':'LoadBalancer','metadata':{"
		"'name':'dns','namespace':'kube-system','generation':1},'spec':{"
		"'algorithm':'RoundRobin','connectTimeoutSeconds':3,'drain':{"
		"'useTerminatingEndpoints':true},'healthCheck':{'healthyThreshold':2,"
		"'periodSeconds':2,'port':53,'timeoutSeconds':1,'unhealthyThreshold':3},"
		"'idleTimeoutSeconds':300,'proxyProtocol':'None','listeners':["
		"{'name':'dns-udp','protocol':'UDP','port':53,'backend':{'serviceRef':{"
		"'name':'dns','port':'dns'}},'udp':{'responses':1,'idleTimeoutSeconds':5}},"
		"{'name':'dns-tcp','protocol':'TCP','port':53,'backend':{'serviceRef':{"
		"'name':'dns','port':'dns-tcp'}}}]}}");
	const struct k8s_lb *lb = &o->lb;

	assert_null(lb->invalid);
	assert_true(lb->health);
	assert_int_equal(lb->health_port, 53);
	assert_int_equal(lb->n_listeners, 2);
	assert_int_equal(lb->listeners[0].protocol, K8S_PROTO_UDP);
	assert_int_equal(lb->listeners[0].port, 53);
	assert_int_equal(lb->listeners[0].responses, 1);
	assert_int_equal(lb->listeners[0].udp_idle_timeout_s, 5);
	assert_int_equal(lb->listeners[0].max_flows, 0);
	assert_string_equal(lb->listeners[0].svc_port_name, "dns");
	assert_int_equal(lb->listeners[1].protocol, K8S_PROTO_TCP);
	assert_int_equal(lb->listeners[1].port, 53);
	assert_string_equal(lb->listeners[1].svc_port_name, "dns-tcp");
	k8s_obj_free(o);

	/* Without udp: {} the flow settings are the CRD's defaults. */
	o = obj_json(K8S_KIND_LOADBALANCER,
		     "{'metadata':{'name':'dns','namespace':'x'},'spec':{'listeners':[{'name':'u',"
		     "'protocol':'UDP','port':53,'backend':{'serviceRef':{'name':'dns','port':53}},"
		     "'udp':{'maxFlows':100}}]}}");
	assert_null(o->lb.invalid);
	assert_int_equal(o->lb.listeners[0].responses, 0);
	assert_int_equal(o->lb.listeners[0].udp_idle_timeout_s, 30);
	assert_int_equal(o->lb.listeners[0].max_flows, 100);
	k8s_obj_free(o);
}

static bool selects(const char *selector, const char *labels)
{
	struct k8s_obj *lb = obj_json(K8S_KIND_LOADBALANCER,
				      "{'metadata':{'name':'lb','namespace':'shop'},'spec':{"
				      "'nodeSelector':%s,'listeners':[" LISTENER("web", 8080, "web",
										 "80") "]}}",
				      selector);
	struct k8s_obj *node = labels ? obj_json(K8S_KIND_NODE,
						 "{'metadata':{'name':'n1','labels':%s}}", labels)
				      : NULL;
	bool r;

	assert_null(lb->lb.invalid);
	r = ctrl_lb_selects(&lb->lb, node);
	k8s_obj_free(node);
	k8s_obj_free(lb);
	return r;
}

static void test_node_selector(void **state)
{
	const char *zone_in =
		"{'matchExpressions':[{'key':'zone','operator':'In','values':['a','b']}]}";
	const char *zone_notin =
		"{'matchExpressions':[{'key':'zone','operator':'NotIn','values':['a']}]}";
	const char *gpu_exists = "{'matchExpressions':[{'key':'gpu','operator':'Exists'}]}";
	const char *gpu_absent = "{'matchExpressions':[{'key':'gpu','operator':'DoesNotExist'}]}";

	/* matchLabels: every label, with its value. */
	assert_true(selects("{'matchLabels':{'zone':'a'}}", "{'zone':'a','disk':'ssd'}"));
	assert_false(selects("{'matchLabels':{'zone':'a'}}", "{'zone':'b'}"));
	assert_false(selects("{'matchLabels':{'zone':'a'}}", "{}"));
	assert_false(selects("{'matchLabels':{'zone':'a','disk':'ssd'}}", "{'zone':'a'}"));
	/* In */
	assert_true(selects(zone_in, "{'zone':'b'}"));
	assert_false(selects(zone_in, "{'zone':'c'}"));
	assert_false(selects(zone_in, "{'region':'a'}"));
	/* NotIn: a node without the label is "not in" (Kubernetes' rule) */
	assert_true(selects(zone_notin, "{'zone':'b'}"));
	assert_false(selects(zone_notin, "{'zone':'a'}"));
	assert_true(selects(zone_notin, "{}"));
	/* Exists: any value, even empty */
	assert_true(selects(gpu_exists, "{'gpu':''}"));
	assert_false(selects(gpu_exists, "{'zone':'a'}"));
	/* DoesNotExist */
	assert_true(selects(gpu_absent, "{'zone':'a'}"));
	assert_false(selects(gpu_absent, "{'gpu':'t4'}"));
	/* matchLabels and matchExpressions must all hold */
	assert_true(selects("{'matchLabels':{'zone':'a'},'matchExpressions':[{'key':'gpu',"
			    "'operator':'Exists'}]}",
			    "{'zone':'a','gpu':'t4'}"));
	assert_false(selects("{'matchLabels':{'zone':'a'},'matchExpressions':[{'key':'gpu',"
			     "'operator':'Exists'}]}",
			     "{'zone':'b','gpu':'t4'}"));
	assert_false(selects("{'matchLabels':{'zone':'a'},'matchExpressions':[{'key':'gpu',"
			     "'operator':'Exists'}]}",
			     "{'zone':'a'}"));
	/* A selector and no Node object: not selected.  No selector: selected anyway. */
	assert_false(selects("{'matchLabels':{'zone':'a'}}", NULL));
	assert_false(selects(gpu_absent, NULL));
	assert_true(selects("{}", NULL));
	assert_true(selects("{}", "{'zone':'a'}"));
}

static void test_slice_parse(void **state)
{
	struct k8s_obj *o = obj_json(
		K8S_KIND_ENDPOINTSLICE,
		"{'metadata':{'name':'web-1','namespace':'shop','labels':{"
		"'kubernetes.io/service-name':'web'}},'addressType':'IPv6','endpoints':["
		"{'addresses':['fd00:0:0::1']},"
		"{'addresses':['fd00::2'],'conditions':{'ready':false,'terminating':true}},"
		"{'addresses':['fd00::3'],"
		"'conditions':{'ready':false,'serving':true,'terminating':true}},"
		"{'addresses':['10.0.0.1']}],"
		"'ports':[{'name':'http','port':8080},{'name':'x','protocol':'QUIC','port':1}]}");
	const struct k8s_slice *s = &o->slice;

	assert_string_equal(s->service, "web");
	assert_int_equal(s->family, AF_INET6);
	assert_int_equal(s->n_ports, 1); /* an unknown protocol is skipped */
	assert_int_equal(s->ports[0].protocol, K8S_PROTO_TCP);
	assert_int_equal(s->n_eps, 3);   /* the IPv4 address is not of an IPv6 slice */
	assert_string_equal(s->eps[0].addr, "fd00::1"); /* canonical */
	assert_true(s->eps[0].ready && s->eps[0].serving && !s->eps[0].terminating);
	/* serving absent reads as ready */
	assert_true(!s->eps[1].ready && !s->eps[1].serving && s->eps[1].terminating);
	assert_true(!s->eps[2].ready && s->eps[2].serving && s->eps[2].terminating);
	k8s_obj_free(o);

	o = obj_json(K8S_KIND_ENDPOINTSLICE,
		     "{'metadata':{'name':'web-2','namespace':'shop','labels':{"
		     "'kubernetes.io/service-name':'web'}},'addressType':'FQDN','endpoints':["
		     "{'addresses':['web.example.com']}],'ports':[]}");
	assert_int_equal(o->slice.family, 0);
	assert_int_equal(o->slice.n_eps, 0);
	k8s_obj_free(o);
}

static void test_endpoints_parse(void **state)
{
	struct k8s_obj *o = obj_json(
		K8S_KIND_ENDPOINTS,
		"{'kind':'Endpoints','apiVersion':'v1',"
		"'metadata':{'name':'web','namespace':'shop'},"
		"'subsets':[{'addresses':[{'ip':'10.0.0.5','targetRef':{'kind':'Pod','name':'p'}},"
		"{'ip':'fd00::5'}],'notReadyAddresses':[{'ip':'10.0.0.6'}],"
		"'ports':[{'name':'http','port':8080,'protocol':'TCP'}]}]}");
	const struct k8s_slice *s = &o->slice;

	assert_int_equal(o->kind, K8S_KIND_ENDPOINTS);
	assert_string_equal(s->service, "web");
	assert_int_equal(s->n_ports, 1);
	assert_int_equal(s->n_eps, 3);
	assert_string_equal(s->eps[0].addr, "10.0.0.5");
	assert_true(s->eps[0].ready && s->eps[0].serving);
	assert_string_equal(s->eps[1].addr, "fd00::5");
	assert_string_equal(s->eps[2].addr, "10.0.0.6");
	assert_false(s->eps[2].ready || s->eps[2].serving || s->eps[2].terminating);
	k8s_obj_free(o);
}

static void test_node_parse(void **state)
{
	struct k8s_obj *o = obj_json(
		K8S_KIND_NODE,
		"{'metadata':{'name':'n1','labels':{'kubernetes.io/hostname':'n1','zone':'a'}},"
		"'status':{'addresses':[{'type':'InternalIP','address':'10.1.0.1'},"
		"{'type':'Hostname','address':'n1'}]}}");

	assert_int_equal(o->node.n_labels, 2);
	assert_int_equal(o->node.n_addrs, 2);
	assert_string_equal(o->node.addrs[0].type, "InternalIP");
	assert_string_equal(o->node.addrs[0].addr, "10.1.0.1");
	k8s_obj_free(o);
}

int run_objects_tests(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_time_parse),     cmocka_unit_test(test_meta),
		cmocka_unit_test(test_meta_errors),    cmocka_unit_test(test_lb_defaults),
		cmocka_unit_test(test_lb_invalid),     cmocka_unit_test(test_lb_settings),
		cmocka_unit_test(test_lb_udp_example),
		cmocka_unit_test(test_node_selector),  cmocka_unit_test(test_slice_parse),
		cmocka_unit_test(test_endpoints_parse), cmocka_unit_test(test_node_parse),
	};

	return cmocka_run_group_tests_name("objects", tests, NULL, NULL);
}
