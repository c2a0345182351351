/*
 * push.c - the controller's side of the dataplane's control socket: apply the desired listeners.
 *
 * One connection is kept open: when the dataplane exits the socket reads as closed at once,
 * and the controller reconnects every 100 ms and sends its whole state again, so a restarted
 * dataplane is programmed again within a fraction of a second.  Versions start above the
 * dataplane's applied version and only grow.  Calls are blocking with a deadline: the
 * dataplane answers an apply in milliseconds, on its main thread, while its workers relay.
 */
#include "controller/push.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/addr.h"
#include "common/ctlclient.h"
#include "common/ctlproto.h"

void ctrl_push_init(struct ctrl_push *p, const char *path)
{
	*p = (struct ctrl_push){ .fd = -1, .version = 1 };
	snprintf(p->path, sizeof(p->path), "%s", path);
}

static void failures_clear(struct ctrl_push *p)
{
	for (size_t i = 0; i < p->n_failed; i++) {
		free(p->failed_names[i]);
		free(p->failed_errors[i]);
	}
	free(p->failed_names);
	free(p->failed_errors);
	p->failed_names = p->failed_errors = NULL;
	p->n_failed = 0;
	free(p->apply_error);
	p->apply_error = NULL;
}

void ctrl_push_disconnect(struct ctrl_push *p)
{
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
	p->applied = false;
}

void ctrl_push_free(struct ctrl_push *p)
{
	ctrl_push_disconnect(p);
	failures_clear(p);
	free(p->last_sent);
	p->last_sent = NULL;
}

/* Ask the dataplane what it runs: its applied version and its own file listeners' ports. */
static int read_status(struct ctrl_push *p)
{
	cJSON *req = lb_ctlc_request("status"), *st = NULL;
	const cJSON *v, *l;
	int r;

	if (!req)
		return -ENOMEM;
	r = lb_ctlc_call(p->fd, req, &st);
	cJSON_Delete(req);
	if (r)
		return r;
	r = -EPROTO;
	if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(st, "ok")))
		goto out;
	v = cJSON_GetObjectItemCaseSensitive(st, "applied_version");
	if (cJSON_IsNumber(v) && v->valuedouble >= (double)p->version &&
	    v->valuedouble < (double)LB_CTL_VERSION_MAX)
		p->version = (uint64_t)v->valuedouble + 1;
	p->n_reserved = 0;
	cJSON_ArrayForEach(l, cJSON_GetObjectItemCaseSensitive(st, "listeners")) {
		const cJSON *listen = cJSON_GetObjectItemCaseSensitive(l, "listen");
		const cJSON *proto = cJSON_GetObjectItemCaseSensitive(l, "protocol");
		struct ctrl_port_proto *rp;
		struct lb_addr a;
		char err[128];

		if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(l, "managed")) ||
		    !cJSON_IsString(listen) || p->n_reserved == CTRL_PUSH_RESERVED_MAX ||
		    lb_addr_parse(listen->valuestring, false, &a, err, sizeof(err)))
			continue;
		rp = &p->reserved[p->n_reserved];
		rp->port = ntohs(a.ss.ss_family == AF_INET6
					 ? ((struct sockaddr_in6 *)&a.ss)->sin6_port
					 : ((struct sockaddr_in *)&a.ss)->sin_port);
		/* A dataplane from before UDP names no protocol: its listeners are all TCP. */
		rp->protocol = cJSON_IsString(proto) && !strcmp(proto->valuestring, "udp")
				       ? K8S_PROTO_UDP
				       : K8S_PROTO_TCP;
		p->n_reserved++;
	}
	r = 0;
out:
	cJSON_Delete(st);
	return r;
}

int ctrl_push_connect(struct ctrl_push *p, uint64_t now_ms)
{
	int fd, r;

	if (p->fd >= 0)
		return 0;
	if (now_ms < p->retry_at_ms)
		return -EAGAIN;
	p->retry_at_ms = now_ms + CTRL_PUSH_RETRY_MS;
	fd = lb_ctlc_connect(p->path, CTRL_PUSH_TIMEOUT_MS);
	if (fd < 0)
		return fd;
	p->fd = fd;
	r = read_status(p);
	if (r) {
		ctrl_push_disconnect(p);
		return r;
	}
	p->fresh = true;
	p->applied = false;
	p->last_io_ms = now_ms;
	p->connects++;
	return 1;
}

bool ctrl_push_readable(struct ctrl_push *p)
{
	char c;

	if (p->fd < 0)
		return false;
	if (recv(p->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == -1 &&
	    (errno == EAGAIN || errno == EINTR))
		return false;
	ctrl_push_disconnect(p); /* EOF, an error, or bytes nobody asked for */
	return true;
}

int ctrl_push_ping(struct ctrl_push *p, uint64_t now_ms)
{
	cJSON *req, *rep = NULL;
	int r;

	if (p->fd < 0 || now_ms < p->last_io_ms + CTRL_PUSH_PING_MS)
		return 0;
	req = lb_ctlc_request("ping");
	if (!req)
		return -ENOMEM;
	r = lb_ctlc_call(p->fd, req, &rep);
	cJSON_Delete(req);
	cJSON_Delete(rep);
	if (r)
		ctrl_push_disconnect(p);
	p->last_io_ms = now_ms;
	return r;
}

static int read_failures(struct ctrl_push *p, const cJSON *rep)
{
	const cJSON *bf = cJSON_GetObjectItemCaseSensitive(rep, "bind_failures"), *f;
	size_t n = (size_t)cJSON_GetArraySize(bf);

	if (!n)
		return 0;
	p->failed_names = calloc(n, sizeof(char *));
	p->failed_errors = calloc(n, sizeof(char *));
	if (!p->failed_names || !p->failed_errors)
		return -ENOMEM;
	cJSON_ArrayForEach(f, bf) {
		const cJSON *name = cJSON_GetObjectItemCaseSensitive(f, "name");
		const cJSON *err = cJSON_GetObjectItemCaseSensitive(f, "error");

		if (!cJSON_IsString(name))
			continue;
		p->failed_names[p->n_failed] = strdup(name->valuestring);
		p->failed_errors[p->n_failed] =
			strdup(cJSON_IsString(err) ? err->valuestring : "cannot listen");
		if (!p->failed_names[p->n_failed] || !p->failed_errors[p->n_failed++])
			return -ENOMEM;
	}
	return 0;
}

int ctrl_push_apply(struct ctrl_push *p, const cJSON *listeners, uint64_t now_ms)
{
	cJSON *req, *rep = NULL, *copy;
	char *text = cJSON_PrintUnformatted(listeners);
	const cJSON *err;
	int r = -ENOMEM;

	if (!text)
		return -ENOMEM;
	/* Unchanged: nothing to send (the caller sets fresh to retry failed binds). */
	if (p->applied && !p->fresh && p->last_sent && !strcmp(p->last_sent, text)) {
		free(text);
		return 0;
	}
	if (!(req = lb_ctlc_request("apply")) || !lb_json_add_u64(req, "version", p->version) ||
	    !(copy = cJSON_Duplicate(listeners, 1)))
		goto out;
	cJSON_AddItemToObject(req, "listeners", copy);
	r = lb_ctlc_call(p->fd, req, &rep);
	p->last_io_ms = now_ms;
	if (r) {
		ctrl_push_disconnect(p);
		goto out;
	}
	p->version++;
	failures_clear(p);
	if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rep, "ok"))) {
		err = cJSON_GetObjectItemCaseSensitive(rep, "error");
		p->apply_error = strdup(cJSON_IsString(err) ? err->valuestring : "refused");
		p->applies_failed++;
		r = -EINVAL;
		goto out;
	}
	r = read_failures(p, rep);
	if (r)
		goto out;
	free(p->last_sent);
	p->last_sent = text;
	text = NULL;
	p->fresh = false;
	p->applied = true;
	p->applies_ok++;
	r = 1;
out:
	cJSON_Delete(req);
	cJSON_Delete(rep);
	free(text);
	return r;
}
