/* main.c - layer4-lb-controller: flags and environment, signals, then the controller's loop. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "common/config.h"
#include "common/log.h"
#include "controller/core/reconcile.h"
#include "controller/ctrl.h"

static struct ctrl ctrl;

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: layer4-lb-controller [options]\n"
		"\n"
		"Keeps the node's layer4-lb dataplane serving the LoadBalancers (layer4lb.io/v1alpha1)\n"
		"that select this node, and writes their status.\n"
		"\n"
		"  --kubeconfig FILE       kubeconfig (default $KUBECONFIG, then in-cluster, then\n"
		"                          ~/.kube/config)\n"
		"  --context NAME          kubeconfig context (default: current-context)\n"
		"  --node-name NAME        this node (default $NODE_NAME)\n"
		"  --socket PATH           the dataplane's control socket (default $LAYER4_LB_SOCKET\n"
		"                          or /run/layer4-lb/control.sock)\n"
		"  --listen-address IP     address the managed listeners bind (default 0.0.0.0)\n"
		"  --http-address IP:PORT  /healthz, /readyz and /metrics (default 127.0.0.1:9102;\n"
		"                          \"\" turns it off)\n"
		"  --lease-name NAME       Lease for status writes (default layer4-lb-controller)\n"
		"  --lease-namespace NS    its namespace (default $POD_NAMESPACE or layer4-lb-system)\n"
		"  --identity ID           holder identity (default $POD_NAME, else hostname_node)\n"
		"  --no-leader-elect       write status without a Lease (one replica only)\n"
		"  --endpoints             read core/v1 Endpoints instead of EndpointSlices\n"
		"  --debounce-ms N         apply once no change has come for N ms (default 100)\n"
		"  --debounce-max-ms N     ... or N ms after the first change of a burst that does\n"
		"                          not pause; at most one apply per N ms while a burst\n"
		"                          lasts (default 2000)\n"
		"  --resync-seconds N      full re-apply and status check every N s (default 300)\n"
		"  --deny-ports LIST       ports no LoadBalancer may take, e.g. 22,2379-2380,10250\n"
		"                          (their listeners are reported PortDenied; default none;\n"
		"                          given more than once, the lists add up)\n"
		"  --version, --help\n"
		"\n"
		"Environment: LOG_LEVEL = error | warn | info | debug (RUST_LOG as an alias).\n");
}

/* --deny-ports, for the process's life (a global: never a leak, whatever the exit). */
static struct ctrl_port_range *deny_ports;

/*
 * Each --deny-ports adds to the list: one given in the chart's extraArgs must not replace the
 * chart's own (a security control is not overridden by accident).
 */
static int deny_more(const char *arg, size_t *n, char *err, size_t errlen)
{
	struct ctrl_port_range *v, *all;
	size_t k;
	int r = ctrl_port_ranges_parse(arg, &v, &k, err, errlen);

	if (r)
		return r;
	all = realloc(deny_ports, (*n + k + 1) * sizeof(*all));
	if (!all) {
		free(v);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (k)
		memcpy(all + *n, v, k * sizeof(*v));
	free(v);
	deny_ports = all;
	*n += k;
	return 0;
}

static void on_signal(int sig)
{
	ctrl_stop(&ctrl);
}

static int number(const char *flag, const char *s, unsigned max, unsigned *ret)
{
	uint64_t v;

	if (lb_parse_decimal(s, max, &v)) {
		fprintf(stderr, "layer4-lb-controller: %s: expected an integer 0..%u, got \"%s\"\n",
			flag, max, s);
		return -EINVAL;
	}
	*ret = (unsigned)v;
	return 0;
}

static const char *env_or(const char *name, const char *def)
{
	const char *v = getenv(name);

	return v && v[0] ? v : def;
}

int main(int argc, char **argv)
{
	enum { O_KUBECONFIG = 256, O_CONTEXT, O_NODE, O_SOCKET, O_LISTEN, O_HTTP, O_LEASE,
	       O_LEASE_NS, O_IDENTITY, O_NO_LEADER, O_ENDPOINTS, O_DEBOUNCE, O_DEBOUNCE_MAX,
	       O_RESYNC, O_DENY,
	       O_VERSION, O_HELP };
	static const struct option longopts[] = {
		{ "kubeconfig", required_argument, NULL, O_KUBECONFIG },
		{ "context", required_argument, NULL, O_CONTEXT },
		{ "node-name", required_argument, NULL, O_NODE },
		{ "socket", required_argument, NULL, O_SOCKET },
		{ "listen-address", required_argument, NULL, O_LISTEN },
		{ "http-address", required_argument, NULL, O_HTTP },
		{ "lease-name", required_argument, NULL, O_LEASE },
		{ "lease-namespace", required_argument, NULL, O_LEASE_NS },
		{ "identity", required_argument, NULL, O_IDENTITY },
		{ "no-leader-elect", no_argument, NULL, O_NO_LEADER },
		{ "endpoints", no_argument, NULL, O_ENDPOINTS },
		{ "debounce-ms", required_argument, NULL, O_DEBOUNCE },
		{ "debounce-max-ms", required_argument, NULL, O_DEBOUNCE_MAX },
		{ "resync-seconds", required_argument, NULL, O_RESYNC },
		{ "deny-ports", required_argument, NULL, O_DENY },
		{ "version", no_argument, NULL, O_VERSION },
		{ "help", no_argument, NULL, O_HELP },
		{ 0 },
	};
	struct ctrl_options o = {
		.node_name = getenv("NODE_NAME"),
		.socket = env_or("LAYER4_LB_SOCKET", "/run/layer4-lb/control.sock"),
		.listen_host = "0.0.0.0",
		.http_addr = "127.0.0.1:9102",
		.lease_name = "layer4-lb-controller",
		.lease_ns = env_or("POD_NAMESPACE", "layer4-lb-system"),
		.identity = getenv("POD_NAME"),
		.leader_elect = true,
		.debounce_ms = 100,
		.debounce_max_ms = 2000,
		.resync_s = 300,
	};
	char err[512], ident[512], host[256] = "";
	enum lb_log_level lvl;
	struct sigaction sa = { .sa_handler = on_signal };
	int opt, r;

	if (lb_log_level_from_env(&lvl) < 0) {
		fprintf(stderr, "layer4-lb-controller: LOG_LEVEL: expected error, warn, info or "
				"debug\n");
		return 2;
	}
	lb_log_threshold = (int)(lb_log_level_from_env(&lvl) == 1 ? lvl : LB_LOG_INFO);
	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (opt) {
		case O_KUBECONFIG: o.kubeconfig = optarg; break;
		case O_CONTEXT: o.context = optarg; break;
		case O_NODE: o.node_name = optarg; break;
		case O_SOCKET: o.socket = optarg; break;
		case O_LISTEN: o.listen_host = optarg; break;
		case O_HTTP: o.http_addr = optarg; break;
		case O_LEASE: o.lease_name = optarg; break;
		case O_LEASE_NS: o.lease_ns = optarg; break;
		case O_IDENTITY: o.identity = optarg; break;
		case O_NO_LEADER: o.leader_elect = false; break;
		case O_ENDPOINTS: o.use_endpoints = true; break;
		case O_DEBOUNCE:
			if (number("--debounce-ms", optarg, 60000, &o.debounce_ms))
				return 2;
			break;
		case O_DEBOUNCE_MAX:
			if (number("--debounce-max-ms", optarg, 600000, &o.debounce_max_ms))
				return 2;
			break;
		case O_RESYNC:
			if (number("--resync-seconds", optarg, 86400, &o.resync_s))
				return 2;
			if (o.resync_s == 0)
				o.resync_s = 86400;
			break;
		case O_DENY:
			if (deny_more(optarg, &o.n_denied, err, sizeof(err))) {
				fprintf(stderr, "layer4-lb-controller: --deny-ports: %s\n", err);
				return 2;
			}
			o.denied = deny_ports;
			break;
		case O_VERSION: printf("layer4-lb-controller %s\n", LB_VERSION); return 0;
		case O_HELP: usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc || !o.node_name || !o.node_name[0]) {
		fprintf(stderr, "layer4-lb-controller: %s\n",
			optind < argc ? "unexpected arguments"
				      : "the node name is not set: pass --node-name or set NODE_NAME "
					"(the downward API's spec.nodeName)");
		return 2;
	}
	if (o.debounce_max_ms < o.debounce_ms)
		o.debounce_max_ms = o.debounce_ms;
	if (!o.identity || !o.identity[0]) {
		gethostname(host, sizeof(host) - 1);
		snprintf(ident, sizeof(ident), "%s_%s", host, o.node_name);
		o.identity = ident;
	}
	srandom((unsigned)time(NULL) ^ (unsigned)getpid());
	if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
		fprintf(stderr, "layer4-lb-controller: libcurl failed to initialise\n");
		return 1;
	}
	r = ctrl_init(&ctrl, &o, err, sizeof(err));
	if (r) {
		log_err("%s", err);
		ctrl_free(&ctrl);
		curl_global_cleanup();
		return 1;
	}
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	r = ctrl_run(&ctrl);
	log_info("stopped");
	ctrl_free(&ctrl);
	curl_global_cleanup();
	return r ? 1 : 0;
}
