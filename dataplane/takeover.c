/* takeover.c - a new dataplane process receives a running one's sockets (handover.h). */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/ctlproto.h"
#include "dataplane/handover.h"
#include "dataplane/snapshot.h"

/*
 * Blocking, from main, before anything is bound: connect, say hello, take every message the
 * old process sends and check each descriptor is what the message says it is (a listening
 * socket of that address or path), since a listener we would serve on the strength of a
 * peer's word must really be one.  Any mistake drops everything received and fails with the
 * reason; the old process, which changes nothing before "drain", serves on.
 */

/* Sockets of one address while they arrive: dp_lsocks are made once all have come. */
struct addr_fds {
	struct lb_addr addr;
	enum lb_protocol proto;
	int *fds;
	unsigned n;
};

struct rx {
	struct dp_takeover *t;
	struct addr_fds *addrs;
	unsigned n_addrs;
	char *err;
	size_t errlen;
};

static void addrs_free(struct rx *x)
{
	for (unsigned i = 0; i < x->n_addrs; i++) {
		for (unsigned j = 0; j < x->addrs[i].n; j++)
			close(x->addrs[i].fds[j]);
		free(x->addrs[i].fds);
	}
	free(x->addrs);
	x->addrs = NULL;
	x->n_addrs = 0;
}

__attribute__((format(printf, 3, 4))) static int fail(struct rx *x, int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(x->err, x->errlen, fmt, ap);
	va_end(ap);
	return r;
}

static int sockopt(int fd, int opt)
{
	int v = -1;
	socklen_t len = sizeof(v);

	return getsockopt(fd, SOL_SOCKET, opt, &v, &len) == -1 ? -1 : v;
}

/*
 * A listening TCP socket (or a bound UDP one) on a, in a SO_REUSEPORT group (so that we can
 * add to it).
 */
static bool is_listener(int fd, const struct lb_addr *a, enum lb_protocol proto, bool reuseport)
{
	struct lb_addr got = { .len = sizeof(got.ss) };
	bool udp = proto == LB_PROTO_UDP;

	if (sockopt(fd, SO_ACCEPTCONN) != !udp ||
	    sockopt(fd, SO_TYPE) != (udp ? SOCK_DGRAM : SOCK_STREAM) ||
	    sockopt(fd, SO_PROTOCOL) != (udp ? IPPROTO_UDP : IPPROTO_TCP) ||
	    (reuseport && sockopt(fd, SO_REUSEPORT) != 1))
		return false;
	if (getsockname(fd, (struct sockaddr *)&got.ss, &got.len) == -1)
		return false;
	return lb_addr_equal(&got, a);
}

static bool is_unix_listener(int fd, int type, const char *path)
{
	/* Zeroed: the analyzer misses getsockname() filling it through glibc's transparent union */
	struct sockaddr_un sa = { 0 };
	socklen_t len = sizeof(sa);

	if (sockopt(fd, SO_ACCEPTCONN) != 1 || sockopt(fd, SO_TYPE) != type ||
	    sockopt(fd, SO_DOMAIN) != AF_UNIX)
		return false;
	if (getsockname(fd, (struct sockaddr *)&sa, &len) == -1 || sa.sun_family != AF_UNIX)
		return false;
	return len > offsetof(struct sockaddr_un, sun_path) &&
	       !strncmp(sa.sun_path, path, len - offsetof(struct sockaddr_un, sun_path));
}

static const char *str_item(cJSON *m, const char *key)
{
	cJSON *v = cJSON_GetObjectItemCaseSensitive(m, key);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A JSON integer 0..max, or -1. */
static int64_t num_item(cJSON *m, const char *key, uint64_t max)
{
	cJSON *v = cJSON_GetObjectItemCaseSensitive(m, key);

	if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > (double)max ||
	    v->valuedouble != (double)(int64_t)v->valuedouble)
		return -1;
	return (int64_t)v->valuedouble;
}

static int add_listener_fds(struct rx *x, cJSON *m, int *fds, unsigned n)
{
	const char *listen = str_item(m, "listen"), *proto = str_item(m, "protocol");
	enum lb_protocol pr = proto && !strcmp(proto, "udp") ? LB_PROTO_UDP : LB_PROTO_TCP;
	struct lb_addr a;
	struct addr_fds *af = NULL;
	char why[128];
	int *v;

	if (!listen || lb_addr_parse(listen, false, &a, why, sizeof(why)))
		return fail(x, -EPROTO, "a listener socket message without a valid \"listen\"");
	if (proto && strcmp(proto, "udp") && strcmp(proto, "tcp"))
		return fail(x, -EPROTO, "listener %s: unknown protocol \"%s\"", listen, proto);
	for (unsigned i = 0; i < n; i++)
		if (!is_listener(fds[i], &a, pr, true))
			return fail(x, -EPROTO, "a descriptor sent as listener %s is not a "
						"SO_REUSEPORT %s there", listen,
				    pr == LB_PROTO_UDP ? "UDP socket bound" : "TCP socket listening");
	for (unsigned i = 0; i < x->n_addrs && !af; i++)
		if (x->addrs[i].proto == pr && lb_addr_equal(&x->addrs[i].addr, &a))
			af = &x->addrs[i];
	if (!af) {
		af = realloc(x->addrs, (x->n_addrs + 1) * sizeof(*af));
		if (!af)
			return -ENOMEM;
		x->addrs = af;
		af = &x->addrs[x->n_addrs++];
		*af = (struct addr_fds){ .addr = a, .proto = pr };
	}
	if (af->n + n > DP_HO_ADDR_FDS_MAX)
		return fail(x, -EPROTO, "more than 4096 sockets for listener %s", listen);
	v = realloc(af->fds, (af->n + n) * sizeof(int));
	if (!v)
		return -ENOMEM;
	af->fds = v;
	memcpy(af->fds + af->n, fds, n * sizeof(int));
	af->n += n;
	return 0;
}

/* A control, metrics or handover socket: one descriptor of the kind its role says. */
static int add_service_fd(struct rx *x, const char *role, cJSON *m, int fd)
{
	struct dp_takeover *t = x->t;
	const char *path = str_item(m, "path"), *listen = str_item(m, "listen");
	bool handover = !strcmp(role, "handover");
	int *slot = handover ? &t->handover_fd : &t->control_fd;
	char *dst = handover ? t->handover_path : t->control_path;
	char why[128];

	if (!strcmp(role, "metrics")) {
		if (t->metrics_fd >= 0 || !listen ||
		    lb_addr_parse(listen, false, &t->metrics_addr, why, sizeof(why)) ||
		    !is_listener(fd, &t->metrics_addr, LB_PROTO_TCP, false))
			return fail(x, -EPROTO, "the metrics socket message is wrong or its "
						"descriptor is not a TCP socket listening at its "
						"\"listen\"");
		t->metrics_fd = fd;
		return 0;
	}
	if (*slot >= 0 || !path || path[0] != '/' || strlen(path) >= LB_PATH_MAX ||
	    !is_unix_listener(fd, handover ? SOCK_SEQPACKET : SOCK_STREAM, path))
		return fail(x, -EPROTO, "the %s socket message is wrong or its descriptor is not a "
					"Unix socket listening at its \"path\"", role);
	snprintf(dst, LB_PATH_MAX, "%s", path);
	snprintf(handover ? t->handover_file : t->control_file, DP_HO_FILE_ID_MAX, "%s",
		 str_item(m, "file") ? str_item(m, "file") : "");
	*slot = fd;
	return 0;
}

/* One "socket" message, its descriptors taken (into x, or closed on failure). */
static int take_socket_msg(struct rx *x, cJSON *m, int *fds, unsigned n)
{
	const char *op = str_item(m, "op"), *role = str_item(m, "role");
	int64_t count = num_item(m, "count", DP_HO_FDS_MAX);
	int r;

	if (!op || strcmp(op, "socket") || !role)
		r = fail(x, -EPROTO, "expected a socket message, got \"%.40s\"", op ? op : "no op");
	else if (!n || count != (int64_t)n)
		r = fail(x, -EPROTO, "a socket message (role %.40s) does not carry the descriptors "
				     "it announces", role);
	else if (!strcmp(role, "listener"))
		r = add_listener_fds(x, m, fds, n);
	else if (strcmp(role, "control") && strcmp(role, "metrics") && strcmp(role, "handover"))
		r = fail(x, -EPROTO, "a socket message of unknown role \"%.40s\"", role);
	else if (n != 1)
		r = fail(x, -EPROTO, "a %s socket message with more than one descriptor", role);
	else
		r = add_service_fd(x, role, m, fds[0]);
	if (!r) {
		x->t->n_fds += n;
		return 0;
	}
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
	return r;
}

/* One message: its JSON object into *ret (NULL for a raw one), its descriptors into fds. */
static int recv_msg(struct rx *x, char *buf, bool raw, int *fds, unsigned *n, cJSON **ret,
		    size_t *ret_len)
{
	int len = dp_ho_recv(x->t->sock, buf, DP_HO_MSG_MAX, fds, n);

	*ret = NULL;
	*ret_len = 0; /* the analyzer does not enter fail() (variadic) to see that it fails */
	if (len == 0)
		return fail(x, -ECONNRESET, "the running process hung up in the middle");
	if (len == -EAGAIN)
		return fail(x, -ETIMEDOUT, "no word from the running process for %d s",
			    DP_HO_TIMEOUT_MS / 1000);
	if (len == -EMSGSIZE)
		return fail(x, len, "a message longer than %u bytes from the running process",
			    DP_HO_MSG_MAX);
	if (len == -ETOOMANYREFS)
		return fail(x, len, "a message with more than %u descriptors", DP_HO_FDS_MAX);
	if (len < 0)
		return fail(x, len, "cannot read the handover socket: %s", strerror(-len));
	*ret_len = (size_t)len;
	if (raw)
		return 0;
	*ret = cJSON_ParseWithLength(buf, (size_t)len);
	if (cJSON_IsObject(*ret))
		return 0;
	cJSON_Delete(*ret);
	*ret = NULL;
	for (unsigned i = 0; i < *n; i++)
		close(fds[i]);
	*n = 0;
	return fail(x, -EPROTO, "a message that is not a JSON object");
}

/* A JSON message without descriptors whose op is `want`. */
static int recv_plain(struct rx *x, char *buf, const char *want, cJSON **ret)
{
	int fds[DP_HO_FDS_MAX], r;
	const char *op;
	unsigned n;
	size_t len;

	r = recv_msg(x, buf, false, fds, &n, ret, &len);
	if (r)
		return r;
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
	op = str_item(*ret, "op");
	if (op && !strcmp(op, "error") && str_item(*ret, "error"))
		r = fail(x, -EPERM, "the running process refused: %s", str_item(*ret, "error"));
	else if (!op || strcmp(op, want))
		r = fail(x, -EPROTO, "expected a \"%s\" message", want);
	else if (n)
		r = fail(x, -EPROTO, "a \"%s\" message with descriptors", want);
	if (r) {
		cJSON_Delete(*ret);
		*ret = NULL;
	}
	return r;
}

static int recv_sockets(struct rx *x, char *buf, int64_t n_msgs)
{
	int fds[DP_HO_FDS_MAX], r = 0;
	unsigned n;
	size_t len;
	cJSON *m;

	for (int64_t i = 0; i < n_msgs && !r; i++) {
		r = recv_msg(x, buf, false, fds, &n, &m, &len);
		if (!r)
			r = take_socket_msg(x, m, fds, n);
		cJSON_Delete(m);
	}
	return r;
}

static int recv_apply(struct rx *x, char *buf, size_t total)
{
	struct dp_takeover *t = x->t;
	int fds[DP_HO_FDS_MAX], r;
	unsigned n;
	size_t len;
	cJSON *m;

	if (!total)
		return 0;
	t->apply = malloc(total);
	if (!t->apply)
		return fail(x, -ENOMEM, "out of memory");
	while (t->apply_len < total) {
		r = recv_msg(x, buf, true, fds, &n, &m, &len);
		if (r)
			return r;
		for (unsigned i = 0; i < n; i++)
			close(fds[i]);
		if (n || len > total - t->apply_len)
			return fail(x, -EPROTO, "the apply document's pieces are not %s",
				    n ? "plain bytes" : "the announced length");
		memcpy(t->apply + t->apply_len, buf, len);
		t->apply_len += len;
	}
	return 0;
}

/* The addresses' descriptors, now all here, as the pool the first snapshot takes from. */
static int make_pool(struct rx *x)
{
	struct dp_lsocks_pool *pool = &x->t->pool;

	pool->v = calloc(x->n_addrs ? x->n_addrs : 1, sizeof(*pool->v));
	if (!pool->v)
		return fail(x, -ENOMEM, "out of memory");
	for (unsigned i = 0; i < x->n_addrs; i++) {
		struct addr_fds *af = &x->addrs[i];
		int r = dp_lsocks_adopt(&af->addr, af->proto, af->fds, af->n, &pool->v[pool->n]);

		af->n = 0; /* the lsocks's now, or closed */
		if (r)
			return fail(x, r, "out of memory");
		pool->n++;
	}
	return 0;
}

static cJSON *hello(void)
{
	cJSON *o = cJSON_CreateObject();

	if (o && (!cJSON_AddStringToObject(o, "op", "hello") ||
		  !lb_json_add_u64(o, "protocol", DP_HO_PROTOCOL))) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

static int receive_all(struct rx *x, char *buf)
{
	int64_t n_sockets, apply_bytes, pid;
	cJSON *begin;
	int r;

	r = dp_ho_send_json(x->t->sock, hello());
	if (r)
		return fail(x, r, "cannot send to the running process: %s", strerror(-r));
	r = recv_plain(x, buf, "begin", &begin);
	if (r)
		return r;
	n_sockets = num_item(begin, "sockets", DP_HO_SOCKETS_MAX);
	apply_bytes = num_item(begin, "apply_bytes", LB_CTL_LINE_MAX);
	pid = num_item(begin, "pid", INT32_MAX);
	if (num_item(begin, "protocol", 1000) != DP_HO_PROTOCOL)
		r = fail(x, -EPROTO, "the running process speaks another handover protocol "
				     "(we speak %d)", DP_HO_PROTOCOL);
	else if (n_sockets < 0 || apply_bytes < 0 || pid < 0)
		r = fail(x, -EPROTO, "a begin message without valid sockets, apply_bytes and pid "
				     "(at most 65536 sockets and 8 MiB)");
	cJSON_Delete(begin);
	if (r)
		return r;
	x->t->pid = (pid_t)pid;
	r = recv_sockets(x, buf, n_sockets);
	if (!r)
		r = recv_apply(x, buf, (size_t)apply_bytes);
	if (!r && !(r = recv_plain(x, buf, "end", &begin)))
		cJSON_Delete(begin);
	if (!r)
		r = make_pool(x);
	return r;
}

static int receive(const char *path, bool if_running, struct dp_takeover **ret, char *err,
		   size_t errlen)
{
	struct dp_takeover *t = calloc(1, sizeof(*t));
	struct rx x = { .t = t, .err = err, .errlen = errlen };
	char *buf = malloc(DP_HO_MSG_MAX);
	int r;

	if (!t || !buf) {
		free(t);
		free(buf);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	t->control_fd = t->metrics_fd = t->handover_fd = -1;
	r = dp_ho_connect(path, DP_HO_TIMEOUT_MS / 1000, &t->sock);
	if (r) {
		t->sock = -1;
		snprintf(err, errlen, "cannot reach the handover socket %s: %s", path,
			 strerror(-r));
		if (if_running && (r == -ENOENT || r == -ECONNREFUSED)) {
			*ret = NULL;
			r = 1;
		}
		goto out;
	}
	r = receive_all(&x, buf);
out:
	addrs_free(&x);
	free(buf);
	if (r) {
		dp_takeover_free(t);
		return r;
	}
	*ret = t;
	return 0;
}

int dp_takeover_receive(const char *path, struct dp_takeover **ret, char *err, size_t errlen)
{
	return receive(path, false, ret, err, errlen);
}

int dp_takeover_receive_if_running(const char *path, struct dp_takeover **ret, char *err,
				   size_t errlen)
{
	return receive(path, true, ret, err, errlen);
}

static int take(int *slot)
{
	int fd = *slot;

	*slot = -1;
	return fd;
}

int dp_takeover_take_unix(struct dp_takeover *t, const char *role, const char *path)
{
	bool handover = !strcmp(role, "handover");
	const char *file = t ? (handover ? t->handover_file : t->control_file) : "";
	char id[DP_HO_FILE_ID_MAX];
	struct stat st;

	if (!t || strcmp(handover ? t->handover_path : t->control_path, path))
		return -1;
	/* Where the old process said which file it was, it must be the same one here. */
	if (file[0] && (stat(path, &st) || strcmp(dp_ho_file_id(&st, id, sizeof(id)), file)))
		return -1;
	if (handover)
		t->handover_taken = t->handover_fd >= 0;
	else
		t->control_taken = t->control_fd >= 0;
	return take(handover ? &t->handover_fd : &t->control_fd);
}

int dp_takeover_take_metrics(struct dp_takeover *t, const char *addr)
{
	struct lb_addr a;
	char why[128];

	if (!t || t->metrics_fd < 0 || lb_addr_parse(addr, false, &a, why, sizeof(why)) ||
	    !lb_addr_equal(&a, &t->metrics_addr))
		return -1;
	t->metrics_taken = true;
	return take(&t->metrics_fd);
}

int dp_takeover_finish(struct dp_takeover *t, char *err, size_t errlen)
{
	struct rx x = { .t = t, .err = err, .errlen = errlen };
	const char *roles[] = { t->control_taken ? "control" : NULL,
				t->metrics_taken ? "metrics" : NULL,
				t->handover_taken ? "handover" : NULL };
	cJSON *drain = cJSON_CreateObject(), *adopted, *m;
	char buf[1024];
	int fds[DP_HO_FDS_MAX], r, len;
	unsigned n;

	/* Which of its service sockets we serve now: it keeps serving the others (a pod). */
	adopted = drain ? cJSON_AddArrayToObject(drain, "adopted") : NULL;
	for (size_t i = 0; adopted && i < sizeof(roles) / sizeof(roles[0]); i++) {
		cJSON *s = roles[i] ? cJSON_CreateString(roles[i]) : NULL;

		if (roles[i] && !cJSON_AddItemToArray(adopted, s)) {
			cJSON_Delete(s);
			adopted = NULL;
		}
	}
	if (drain && (!adopted || !cJSON_AddStringToObject(drain, "op", "drain"))) {
		cJSON_Delete(drain);
		drain = NULL;
	}
	r = dp_ho_send_json(t->sock, drain);
	if (r)
		return fail(&x, r, "cannot tell it to drain: %s", strerror(-r));
	len = dp_ho_recv(t->sock, buf, sizeof(buf), fds, &n);
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
	if (len <= 0)
		return fail(&x, -EPROTO, "it did not confirm the drain: %s",
			    len ? strerror(-len) : "it hung up");
	m = cJSON_ParseWithLength(buf, (size_t)len);
	r = str_item(m, "op") && !strcmp(str_item(m, "op"), "draining") ? 0 : -EPROTO;
	cJSON_Delete(m);
	if (r)
		return fail(&x, r, "it answered the drain with something other than %s",
			    "\"draining\"");
	return 0;
}

void dp_takeover_free(struct dp_takeover *t)
{
	if (!t)
		return;
	if (t->sock >= 0)
		close(t->sock);
	dp_lsocks_pool_clear(&t->pool);
	if (t->control_fd >= 0)
		close(t->control_fd);
	if (t->metrics_fd >= 0)
		close(t->metrics_fd);
	if (t->handover_fd >= 0)
		close(t->handover_fd);
	free(t->apply);
	free(t);
}
