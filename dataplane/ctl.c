/* ctl.c - `layer4-lb ctl`: inspect and drive a running dataplane over its control socket. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>
#include <yaml.h>

#include "common/ctlproto.h"
#include "dataplane/plane.h"

#define CTL_DEFAULT_SOCKET "/run/layer4-lb/control.sock"
#define CTL_TIMEOUT_S 30

static void ctl_usage(FILE *f)
{
	fprintf(f,
		"Usage: layer4-lb ctl [-s SOCKET | -c CONFIG] COMMAND\n"
		"\n"
		"Commands:\n"
		"  ping                       check that the dataplane answers\n"
		"  status [--json]            listeners, backends, health and counters\n"
		"  apply FILE [--version N]   make FILE's listeners the managed set (YAML or JSON,\n"
		"                             a top-level \"listeners\" list as in lb.yaml); N defaults\n"
		"                             to the applied version + 1\n"
		"\n"
		"  -s, --socket PATH   control socket (default $LAYER4_LB_SOCKET or %s)\n"
		"  -c, --config FILE   take the socket path from a configuration file\n",
		CTL_DEFAULT_SOCKET);
}

/* --- transport ----------------------------------------------------------------------- */

static int ctl_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = CTL_TIMEOUT_S };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	strcpy(sa.sun_path, path);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
		int r = -errno;

		close(fd);
		return r;
	}
	return fd;
}

/* Send one request object and parse the one-line reply. */
static int ctl_call(const char *path, cJSON *req, cJSON **ret)
{
	char *line = lb_ctl_reply_finish(req); /* the same framing: JSON + '\n' */
	size_t len = 0, cap = 65536;
	char *buf = NULL, *nl = NULL;
	int fd, r = -ENOMEM;

	if (!line)
		return -ENOMEM;
	fd = ctl_connect(path);
	if (fd < 0) {
		free(line);
		return fd;
	}
	if (send(fd, line, strlen(line), MSG_NOSIGNAL) != (ssize_t)strlen(line)) {
		r = -errno;
		goto out;
	}
	while (!nl) {
		ssize_t n;

		if (len + 1 >= cap || !buf) {
			char *b = realloc(buf, cap *= 2);

			if (!b)
				goto out;
			buf = b;
		}
		n = recv(fd, buf + len, cap - len - 1, 0);
		if (n <= 0) {
			r = n == 0 ? -ECONNRESET : -errno;
			goto out;
		}
		nl = memchr(buf + len, '\n', n);
		len += n;
	}
	*ret = cJSON_ParseWithLength(buf, nl - buf);
	r = *ret ? 0 : -EBADMSG;
out:
	free(line);
	free(buf);
	close(fd);
	return r;
}

static cJSON *request(const char *op)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "op", op);
	return o;
}

/* --- YAML to JSON, for apply files --------------------------------------------------- */

static cJSON *yaml_to_json(yaml_document_t *doc, yaml_node_t *n)
{
	cJSON *o;

	switch (n->type) {
	case YAML_MAPPING_NODE:
		o = cJSON_CreateObject();
		for (yaml_node_pair_t *pr = n->data.mapping.pairs.start;
		     pr < n->data.mapping.pairs.top; pr++) {
			yaml_node_t *k = yaml_document_get_node(doc, pr->key);

			if (k->type == YAML_SCALAR_NODE)
				cJSON_AddItemToObject(o, (char *)k->data.scalar.value,
						      yaml_to_json(doc, yaml_document_get_node(
									doc, pr->value)));
		}
		return o;
	case YAML_SEQUENCE_NODE:
		o = cJSON_CreateArray();
		for (yaml_node_item_t *it = n->data.sequence.items.start;
		     it < n->data.sequence.items.top; it++)
			cJSON_AddItemToArray(o, yaml_to_json(doc, yaml_document_get_node(doc, *it)));
		return o;
	default: {
		const char *v = (const char *)n->data.scalar.value;
		char *end;
		double d = strtod(v, &end);

		/* Plain numbers stay numbers; the dataplane reads either form the same way. */
		if (n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && *v && !*end)
			return cJSON_CreateNumber(d);
		return cJSON_CreateString(v);
	}
	}
}

static int read_apply_file(const char *path, cJSON **ret_listeners)
{
	struct lb_config *check;
	char err[1024], *text = NULL;
	yaml_parser_t yp;
	yaml_document_t doc;
	yaml_node_t *root, *ls = NULL;
	size_t len = 0;
	FILE *f;
	int r = -EINVAL;

	f = fopen(path, "r");
	if (!f || getdelim(&text, &len, '\0', f) < 0) {
		fprintf(stderr, "layer4-lb ctl: cannot read %s: %s\n", path, strerror(errno));
		if (f)
			fclose(f);
		free(text);
		return -errno;
	}
	fclose(f);
	/* Validate here first: a mistake is reported with its line, before anything is sent. */
	if (lb_config_parse_listeners(text, strlen(text), path, &check, err, sizeof(err))) {
		fprintf(stderr, "layer4-lb ctl: %s\n", err);
		free(text);
		return -EINVAL;
	}
	lb_config_free(check);
	yaml_parser_initialize(&yp);
	yaml_parser_set_input_string(&yp, (unsigned char *)text, strlen(text));
	if (yaml_parser_load(&yp, &doc)) {
		root = yaml_document_get_root_node(&doc);
		for (yaml_node_pair_t *pr = root->data.mapping.pairs.start;
		     pr < root->data.mapping.pairs.top; pr++)
			if (!strcmp((char *)yaml_document_get_node(&doc, pr->key)->data.scalar.value,
				    "listeners"))
				ls = yaml_document_get_node(&doc, pr->value);
		*ret_listeners = ls ? yaml_to_json(&doc, ls) : cJSON_CreateArray();
		r = 0;
		yaml_document_delete(&doc);
	}
	yaml_parser_delete(&yp);
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

	printf("%d workers, %s engine%s; applied version: ", (int)num(st, "workers"),
	       str(st, "engine"), cJSON_IsTrue(cJSON_GetObjectItem(st, "draining")) ? ", DRAINING" : "");
	if (cJSON_IsNumber(v))
		printf("%.0f", v->valuedouble);
	else
		printf("none");
	printf(" (applies ok %.0f, failed %.0f)\n\n", num(st, "applies_ok"),
	       num(st, "applies_failed"));
	cJSON_ArrayForEach(l, cJSON_GetObjectItemCaseSensitive(st, "listeners")) {
		printf("listener %s on %s (%s, %s): %.0f active, %.0f accepted, %.0f failed\n",
		       str(l, "name"), str(l, "listen"), str(l, "algorithm"),
		       cJSON_IsTrue(cJSON_GetObjectItem(l, "managed")) ? "managed" : "config file",
		       num(l, "active"), num(l, "accepted"), num(l, "failed"));
		printf("  %-46s %6s %-7s %-6s %8s %10s %9s\n", "BACKEND", "WEIGHT", "HEALTHY",
		       "CHECK", "ACTIVE", "CONNS", "FAILURES");
		cJSON_ArrayForEach(b, cJSON_GetObjectItemCaseSensitive(l, "backends"))
			printf("  %-46s %6.0f %-7s %-6s %8.0f %10.0f %9.0f\n", str(b, "address"),
			       num(b, "weight"),
			       cJSON_IsTrue(cJSON_GetObjectItem(b, "healthy")) ? "yes" : "NO",
			       str(b, "check"), num(b, "active"), num(b, "connections"),
			       num(b, "connect_failures"));
		printf("\n");
	}
}

static int cmd_apply(const char *sock, const char *file, long long version)
{
	cJSON *listeners, *req, *reply;
	int r;

	if (read_apply_file(file, &listeners))
		return 1;
	if (version < 0) {
		r = ctl_call(sock, request("status"), &reply);
		if (r) {
			cJSON_Delete(listeners);
			ctl_fail(sock, r);
			return 1;
		}
		version = (long long)num(reply, "applied_version") + 1;
		cJSON_Delete(reply);
	}
	req = request("apply");
	cJSON_AddNumberToObject(req, "version", (double)version);
	cJSON_AddItemToObject(req, "listeners", listeners);
	r = ctl_call(sock, req, &reply);
	if (r) {
		ctl_fail(sock, r);
		return 1;
	}
	r = reply_ok(reply);
	if (r)
		printf("applied version %lld\n", version);
	cJSON_Delete(reply);
	return r ? 0 : 1;
}

static int cmd_simple(const char *sock, const char *op, bool json)
{
	cJSON *reply;
	int r = ctl_call(sock, request(op), &reply);

	if (r) {
		ctl_fail(sock, r);
		return 1;
	}
	r = reply_ok(reply);
	if (r && json) {
		char *s = cJSON_Print(reply);

		puts(s);
		free(s);
	} else if (r && !strcmp(op, "status")) {
		print_status(reply);
	} else if (r) {
		printf("pong\n");
	}
	cJSON_Delete(reply);
	return r ? 0 : 1;
}

static const char *socket_from_config(const char *path)
{
	static char sock[LB_PATH_MAX];
	struct lb_config *c;
	char err[1024];

	if (lb_config_load(path, &c, err, sizeof(err))) {
		fprintf(stderr, "layer4-lb ctl: %s\n", err);
		return NULL;
	}
	snprintf(sock, sizeof(sock), "%s", c->control_socket);
	lb_config_free(c);
	if (!sock[0]) {
		fprintf(stderr, "layer4-lb ctl: %s sets no control_socket\n", path);
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
	long long version = -1;
	bool json = false;
	int o;

	while ((o = getopt_long(argc, argv, "s:c:h", opts, NULL)) != -1) {
		switch (o) {
		case 's':
			sock = optarg;
			break;
		case 'c':
			if (!(sock = socket_from_config(optarg)))
				return 2;
			break;
		case 'j':
			json = true;
			break;
		case 'v':
			version = strtoll(optarg, NULL, 10);
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
		return cmd_simple(sock, "ping", json);
	if (optind < argc && !strcmp(argv[optind], "status") && optind + 1 == argc)
		return cmd_simple(sock, "status", json);
	if (optind + 2 == argc && !strcmp(argv[optind], "apply"))
		return cmd_apply(sock, argv[optind + 1], version);
	ctl_usage(stderr);
	return 2;
}
