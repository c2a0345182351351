/* ctl.c - `layer4-lb ctl`: inspect and drive a running dataplane over its control socket. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "common/ctlclient.h"
#include "common/ctlproto.h"
#include "dataplane/plane.h"

#define CTL_DEFAULT_SOCKET "/run/layer4-lb/control.sock"
#define CTL_TIMEOUT_MS 30000

static void ctl_usage(FILE *f)
{
	fprintf(f,
		"Usage: layer4-lb ctl [-s SOCKET | -c CONFIG] COMMAND\n"
		"\n"
		"Commands:\n"
		"  ping                       check that the dataplane answers\n"
		"  status [--json]            listeners, backends, health and counters\n"
		"  applied                    succeed once something was applied since the start\n"
		"                             (or carried over by a takeover): a readiness probe\n"
		"  apply FILE [--version N]   make FILE's listeners the managed set (YAML or JSON,\n"
		"                             a top-level \"listeners\" list as in lb.yaml); N is an\n"
		"                             integer 0..2^53-1, by default the applied version + 1\n"
		"\n"
		"  -s, --socket PATH   control socket (default $LAYER4_LB_SOCKET or %s)\n"
		"  -c, --config FILE   take the socket path from a configuration file\n"
		"\n"
		"Exit status: 0 done, 1 refused, unreachable or a file that cannot be used, 2 usage.\n",
		CTL_DEFAULT_SOCKET);
}

/* Every command is one request on a fresh connection; 30 s is a hang guard, not a deadline. */
static int ctl_call(const char *sock, const cJSON *req, cJSON **ret)
{
	return lb_ctlc_call_once(sock, CTL_TIMEOUT_MS, req, ret);
}

/* --- YAML to JSON, for apply files --------------------------------------------------- */

/* As the configuration parser reads "key:" with nothing after it. */
static bool plain_null(const yaml_node_t *n)
{
	static const char *const nulls[] = { "", "~", "null", "Null", "NULL" };

	if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	for (size_t i = 0; i < sizeof(nulls) / sizeof(nulls[0]); i++)
		if (!strcmp((const char *)n->data.scalar.value, nulls[i]))
			return true;
	return false;
}

/*
 * The file as the dataplane must read it.  The configuration parser reads every scalar as its
 * text, and the control protocol takes every listener value as a string, so each scalar is
 * sent as the string it is: guessing numbers sent "name: 8080" as a number (refused there,
 * accepted here) and "1e3" as 1000.  The one exception is "health_check:" with nothing after
 * it, which the parser reads as an empty mapping.  NULL without memory.
 */
static cJSON *yaml_to_json(yaml_document_t *doc, yaml_node_t *n, const char *key)
{
	cJSON *o = NULL, *v;

	switch (n->type) {
	case YAML_MAPPING_NODE:
		o = cJSON_CreateObject();
		for (yaml_node_pair_t *pr = n->data.mapping.pairs.start;
		     o && pr < n->data.mapping.pairs.top; pr++) {
			/* Keys are scalars: the file was validated before. */
			const char *k = (const char *)yaml_document_get_node(doc, pr->key)
						->data.scalar.value;

			v = yaml_to_json(doc, yaml_document_get_node(doc, pr->value), k);
			if (!v || !cJSON_AddItemToObject(o, k, v)) {
				cJSON_Delete(v);
				cJSON_Delete(o);
				return NULL;
			}
		}
		return o;
	case YAML_SEQUENCE_NODE:
		o = cJSON_CreateArray();
		for (yaml_node_item_t *it = n->data.sequence.items.start;
		     o && it < n->data.sequence.items.top; it++) {
			v = yaml_to_json(doc, yaml_document_get_node(doc, *it), NULL);
			if (!v || !cJSON_AddItemToArray(o, v)) {
				cJSON_Delete(v);
				cJSON_Delete(o);
				return NULL;
			}
		}
		return o;
	default:
		if (key && !strcmp(key, "health_check") && plain_null(n))
			return cJSON_CreateObject();
		return cJSON_CreateString((const char *)n->data.scalar.value);
	}
}

/* The "listeners" of a validated apply file, as JSON. */
static int listeners_json(const char *text, size_t len, cJSON **ret)
{
	yaml_parser_t yp;
	yaml_document_t doc;
	yaml_node_t *root, *ls = NULL;
	int r = -ENOMEM;

	if (!yaml_parser_initialize(&yp))
		return -ENOMEM;
	yaml_parser_set_input_string(&yp, (const unsigned char *)text, len);
	if (!yaml_parser_load(&yp, &doc))
		goto out_parser;
	root = yaml_document_get_root_node(&doc);
	for (yaml_node_pair_t *pr = root->data.mapping.pairs.start;
	     pr < root->data.mapping.pairs.top; pr++)
		if (!strcmp((char *)yaml_document_get_node(&doc, pr->key)->data.scalar.value,
			    "listeners"))
			ls = yaml_document_get_node(&doc, pr->value);
	*ret = ls ? yaml_to_json(&doc, ls, "listeners") : NULL;
	r = *ret ? 0 : -ENOMEM;
	yaml_document_delete(&doc);
out_parser:
	yaml_parser_delete(&yp);
	return r;
}

/* Reads and checks an apply file; prints what is wrong itself. */
static int read_apply_file(const char *path, cJSON **ret_listeners)
{
	struct lb_config *check;
	char err[1024], *text;
	size_t len;
	int r;

	/* Its real length: text after a NUL must not be silently dropped (the parser refuses it). */
	r = lb_config_read_file(path, &text, &len, err, sizeof(err));
	if (r) {
		fprintf(stderr, "layer4-lb ctl: %s\n", err);
		return r;
	}
	/* Validate here first: a mistake is reported with its line, before anything is sent. */
	r = lb_config_parse_listeners(text, len, path, &check, err, sizeof(err));
	if (r) {
		fprintf(stderr, "layer4-lb ctl: %s\n", err);
		goto out_text;
	}
	lb_config_free(check);
	r = listeners_json(text, len, ret_listeners);
	if (r)
		fprintf(stderr, "layer4-lb ctl: %s: %s\n", path, strerror(-r));
out_text:
	free(text);
	return r;
}

/* --- commands ------------------------------------------------------------------------ */

static void ctl_fail(const char *sock, int r)
{
	fprintf(stderr, "layer4-lb ctl: %s: %s%s\n", sock, strerror(-r),
		r == -ENOENT || r == -ECONNREFUSED
			? " (is layer4-lb running with a control_socket? point at it with -s PATH "
			  "or -c CONFIG)"
			: "");
}

static int reply_ok(const cJSON *reply)
{
	const cJSON *err = cJSON_GetObjectItemCaseSensitive(reply, "error");

	if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(reply, "ok")))
		return 1;
	fprintf(stderr, "layer4-lb ctl: refused: %s\n",
		cJSON_IsString(err) ? err->valuestring : "(no reason given)");
	return 0;
}

static double num(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static const char *str(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	return cJSON_IsString(v) ? v->valuestring : "-";
}

static void print_status(const cJSON *st)
{
	const cJSON *l, *b, *v = cJSON_GetObjectItemCaseSensitive(st, "applied_version");

	/* %.0f prints every integer up to 2^53 exactly, and versions stop at 2^53-1. */
	printf("%d workers, %s engine%s; applied version: ", (int)num(st, "workers"),
	       str(st, "engine"), cJSON_IsTrue(cJSON_GetObjectItem(st, "draining")) ? ", DRAINING" : "");
	if (cJSON_IsNumber(v))
		printf("%.0f", v->valuedouble);
	else
		printf("none");
	printf(" (applies ok %.0f, failed %.0f)\n\n", num(st, "applies_ok"),
	       num(st, "applies_failed"));
	cJSON_ArrayForEach(l, cJSON_GetObjectItemCaseSensitive(st, "listeners")) {
		const char *pp = str(l, "proxy_protocol");
		bool pp_on = strcmp(pp, "off") && strcmp(pp, "-"); /* "-": an older dataplane */
		const cJSON *bs = cJSON_GetObjectItemCaseSensitive(l, "backends");

		const cJSON *u = cJSON_GetObjectItemCaseSensitive(l, "udp");
		const char *origin =
			cJSON_IsTrue(cJSON_GetObjectItem(l, "managed")) ? "managed" : "config file";

		if (cJSON_IsObject(u)) {
			const cJSON *d = cJSON_GetObjectItemCaseSensitive(u, "drops"), *x;
			double dropped = 0;

			cJSON_ArrayForEach(x, d)
				dropped += cJSON_IsNumber(x) ? x->valuedouble : 0;
			printf("listener %s on %s (udp, %s, %s): %.0f flows, %.0f created, "
			       "datagrams %.0f in %.0f out, %.0f dropped\n",
			       str(l, "name"), str(l, "listen"), str(l, "algorithm"), origin,
			       num(u, "flows_active"), num(u, "flows_created"),
			       num(u, "datagrams_in"), num(u, "datagrams_out"), dropped);
		} else {
			printf("listener %s on %s (%s%s%s, %s): %.0f active, %.0f accepted, "
			       "%.0f failed\n",
			       str(l, "name"), str(l, "listen"), str(l, "algorithm"),
			       pp_on ? ", PROXY protocol " : "", pp_on ? pp : "", origin,
			       num(l, "active"), num(l, "accepted"), num(l, "failed"));
		}
		/* No "bound" at all: a dataplane from before it could be false. */
		if (cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(l, "bound")))
			printf("  NOT BOUND, not serving: %s (tried again at every apply)\n",
			       str(l, "bind_error"));
		if (!cJSON_GetArraySize(bs)) {
			printf("  no backends: every connection is closed at once\n\n");
			continue;
		}
		printf("  %-46s %6s %-7s %-6s %8s %10s %9s\n", "BACKEND", "WEIGHT", "HEALTHY",
		       "CHECK", "ACTIVE", "CONNS", "FAILURES");
		cJSON_ArrayForEach(b, bs)
			printf("  %-46s %6.0f %-7s %-6s %8.0f %10.0f %9.0f\n", str(b, "address"),
			       num(b, "weight"),
			       cJSON_IsTrue(cJSON_GetObjectItem(b, "healthy")) ? "yes" : "NO",
			       str(b, "check"), num(b, "active"), num(b, "connections"),
			       num(b, "connect_failures"));
		printf("\n");
	}
}

/*
 * What the apply changed, from its reply's "changes" (see docs/control-protocol.md), and on
 * stderr a warning for each listener that could not be bound: applied, but not serving.
 */
static void print_applied(uint64_t version, const cJSON *reply)
{
	const cJSON *ch = cJSON_GetObjectItemCaseSensitive(reply, "changes"), *f;

	printf("applied version %" PRIu64, version);
	if (cJSON_IsObject(ch))
		printf(": listeners %.0f added, %.0f removed, %.0f changed, %.0f unchanged; "
		       "backends %.0f added, %.0f removed",
		       num(ch, "listeners_added"), num(ch, "listeners_removed"),
		       num(ch, "listeners_changed"), num(ch, "listeners_unchanged"),
		       num(ch, "backends_added"), num(ch, "backends_removed"));
	printf("\n");
	fflush(stdout); /* the summary first, then what went wrong with it */
	cJSON_ArrayForEach(f, cJSON_GetObjectItemCaseSensitive(reply, "bind_failures"))
		fprintf(stderr, "layer4-lb ctl: warning: listener %s is not serving: %s (applied; "
				"tried again at every apply)\n",
			str(f, "name"), str(f, "error"));
}

/* The version after the applied one, from a status reply. */
static int next_version(const char *sock, uint64_t *ret)
{
	cJSON *req = lb_ctlc_request("status"), *reply;
	const cJSON *v;
	int r = ctl_call(sock, req, &reply);

	cJSON_Delete(req);
	if (r) {
		ctl_fail(sock, r);
		return r;
	}
	v = cJSON_GetObjectItemCaseSensitive(reply, "applied_version");
	r = 0;
	if (!reply_ok(reply)) {
		r = -EPROTO;
	} else if (!cJSON_IsNumber(v) || v->valuedouble < 0) {
		*ret = 1; /* nothing applied yet (never negative: our own reply) */
	} else if (v->valuedouble >= LB_CTL_VERSION_MAX) {
		fprintf(stderr, "layer4-lb ctl: the applied version is 2^53-1, the largest; give "
				"--version N\n");
		r = -ERANGE;
	} else {
		*ret = (uint64_t)v->valuedouble + 1; /* exact: below 2^53 */
	}
	cJSON_Delete(reply);
	return r;
}

/* Exit status: 0 applied, 1 refused, unreachable, or the file could not be used. */
static int cmd_apply(const char *sock, const char *file, bool have_version, uint64_t version)
{
	cJSON *listeners, *req, *reply;
	char *text;
	size_t len;
	int r;

	if (read_apply_file(file, &listeners))
		return 1;
	/* Over the line limit the dataplane would only hang up: say so before anything is sent. */
	text = cJSON_PrintUnformatted(listeners);
	len = text ? strlen(text) : 0;
	free(text);
	if (!text || len + 64 > LB_CTL_LINE_MAX) { /* 64: the rest of the request line */
		if (text)
			fprintf(stderr, "layer4-lb ctl: %s: %zu bytes as JSON, over the control "
					"socket's limit of 8 MiB per request\n", file, len);
		else
			fprintf(stderr, "layer4-lb ctl: %s: out of memory\n", file);
		cJSON_Delete(listeners);
		return 1;
	}
	if (!have_version && next_version(sock, &version)) {
		cJSON_Delete(listeners);
		return 1;
	}
	req = lb_ctlc_request("apply");
	/* As its exact text: a double would round versions above 2^53. */
	if (!req || !lb_json_add_u64(req, "version", version) ||
	    !cJSON_AddItemToObject(req, "listeners", listeners)) {
		cJSON_Delete(req);
		cJSON_Delete(listeners);
		fprintf(stderr, "layer4-lb ctl: out of memory\n");
		return 1;
	}
	r = ctl_call(sock, req, &reply);
	cJSON_Delete(req);
	if (r) {
		ctl_fail(sock, r);
		return 1;
	}
	r = reply_ok(reply);
	if (r)
		print_applied(version, reply);
	cJSON_Delete(reply);
	return r ? 0 : 1;
}

/* ping, status, and applied (a status read for its applied_version alone). */
static int cmd_simple(const char *sock, const char *op, bool json, bool applied)
{
	cJSON *req = lb_ctlc_request(op), *reply;
	int r = ctl_call(sock, req, &reply);

	cJSON_Delete(req);
	if (r) {
		ctl_fail(sock, r);
		return 1;
	}
	r = reply_ok(reply);
	if (r && json) {
		char *s = cJSON_Print(reply);

		puts(s ? s : "");
		free(s);
	} else if (r && !strcmp(op, "status") && applied) {
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(reply, "applied_version");

		r = cJSON_IsNumber(v);
		if (r)
			printf("applied version %.0f\n", v->valuedouble);
		else
			fprintf(stderr, "layer4-lb ctl: nothing applied since the dataplane started "
					"(no controller has programmed it yet)\n");
	} else if (r && !strcmp(op, "status")) {
		print_status(reply);
	} else if (r) {
		printf("pong\n");
	}
	cJSON_Delete(reply);
	return r ? 0 : 1;
}

/* Only the control_socket key: the rest of a file being edited may well be wrong. */
static const char *socket_from_config(const char *path)
{
	static char sock[LB_PATH_MAX];
	char err[1024];

	if (lb_config_read_control_socket(path, sock, sizeof(sock), err, sizeof(err))) {
		fprintf(stderr, "layer4-lb ctl: %s (or give the socket with -s PATH)\n", err);
		return NULL;
	}
	if (!sock[0]) {
		fprintf(stderr, "layer4-lb ctl: %s sets no control_socket (give the socket with -s "
				"PATH)\n",
			path);
		return NULL;
	}
	return sock;
}

int dp_ctl_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' }, { "config", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },         { "version", required_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },         { NULL, 0, NULL, 0 },
	};
	const char *sock = getenv("LAYER4_LB_SOCKET");
	bool json = false, have_version = false;
	uint64_t version = 0;
	int o;

	while ((o = getopt_long(argc, argv, "s:c:h", opts, NULL)) != -1) {
		switch (o) {
		case 's':
			sock = optarg;
			break;
		case 'c':
			if (!(sock = socket_from_config(optarg)))
				return 1;
			break;
		case 'j':
			json = true;
			break;
		case 'v':
			if (lb_parse_decimal(optarg, LB_CTL_VERSION_MAX, &version)) {
				fprintf(stderr, "layer4-lb ctl: --version must be an integer from 0 to "
						"9007199254740991 (2^53-1), got \"%s\"\n",
					optarg);
				ctl_usage(stderr);
				return 2;
			}
			have_version = true;
			break;
		case 'h':
			ctl_usage(stdout);
			return 0;
		default:
			ctl_usage(stderr);
			return 2;
		}
	}
	if (!sock || !*sock)
		sock = CTL_DEFAULT_SOCKET;
	if (optind < argc && !strcmp(argv[optind], "ping") && optind + 1 == argc)
		return cmd_simple(sock, "ping", json, false);
	if (optind < argc && !strcmp(argv[optind], "status") && optind + 1 == argc)
		return cmd_simple(sock, "status", json, false);
	if (optind < argc && !strcmp(argv[optind], "applied") && optind + 1 == argc)
		return cmd_simple(sock, "status", false, true);
	if (optind + 2 == argc && !strcmp(argv[optind], "apply"))
		return cmd_apply(sock, argv[optind + 1], have_version, version);
	ctl_usage(stderr);
	return 2;
}
