/* binder.c - listening sockets below port 1024 for an unprivileged dataplane (binder.h). */
#include "dataplane/binder.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/ctlproto.h"
#include "common/log.h"
#include "dataplane/handover.h"
#include "dataplane/plane.h"
#include "dataplane/listen.h"
#include "dataplane/worker.h"

#define BINDER_TIMEOUT_S 5 /* one request, either side: a hang guard */

static void set_timeouts(int fd)
{
	struct timeval tv = { .tv_sec = BINDER_TIMEOUT_S };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/*
 * An error (with its errno, for the dataplane to act on: EADDRINUSE is a port conflict), or a
 * piece of the sockets with how many are left to come after it.
 */
static int reply(int fd, const char *error, int err, const int *fds, unsigned n, unsigned left)
{
	cJSON *o = cJSON_CreateObject();
	char *text;
	int r = -ENOMEM;

	if (!o || !cJSON_AddBoolToObject(o, "ok", !error) ||
	    (error && !cJSON_AddStringToObject(o, "error", error)) ||
	    (error && !lb_json_add_u64(o, "errno", (uint64_t)(err < 0 ? -err : err))) ||
	    (!error && !lb_json_add_u64(o, "left", left)))
		goto out;
	text = cJSON_PrintUnformatted(o);
	if (text)
		r = dp_ho_send(fd, text, strlen(text), fds, n);
	free(text);
out:
	cJSON_Delete(o);
	return r;
}

/*
 * Checks a request and binds its sockets into *ret (malloc'd): 0, or -errno with why set.
 * A request to join (binder.h) is honoured only by a binder started with --reuseport-overlap,
 * and only in its first DP_OVERLAP_WINDOW_MS, as the dataplane asks.
 */
static int bind_request(const char *buf, int len, uint64_t join_until_ms, int **ret,
			unsigned *n, char *why, size_t wlen)
{
	bool may_join = dp_now_ms() < join_until_ms;
	int *fds = NULL;
	cJSON *m = cJSON_ParseWithLength(buf, (size_t)len);
	const cJSON *op = cJSON_GetObjectItemCaseSensitive(m, "op");
	const cJSON *listen = cJSON_GetObjectItemCaseSensitive(m, "listen");
	const cJSON *count = cJSON_GetObjectItemCaseSensitive(m, "count");
	const cJSON *join = cJSON_GetObjectItemCaseSensitive(m, "join");
	const cJSON *proto = cJSON_GetObjectItemCaseSensitive(m, "protocol");
	enum lb_protocol pr = LB_PROTO_TCP;
	struct lb_addr a;
	char perr[128];
	int r = -EINVAL;

	*n = 0;
	if (!cJSON_IsString(op) || strcmp(op->valuestring, "bind") || !cJSON_IsString(listen) ||
	    !cJSON_IsNumber(count)) {
		snprintf(why, wlen, "not a bind request ({\"op\":\"bind\",\"listen\":...,\"count\":N})");
		goto out;
	}
	if (count->valuedouble < 1 || count->valuedouble > DP_BINDER_SOCKETS_MAX ||
	    count->valuedouble != (double)(unsigned)count->valuedouble) {
		snprintf(why, wlen, "count must be 1 to %u", DP_BINDER_SOCKETS_MAX);
		goto out;
	}
	if (lb_addr_parse(listen->valuestring, false, &a, perr, sizeof(perr))) {
		snprintf(why, wlen, "listen: %s", perr);
		goto out;
	}
	if (lb_addr_port(&a) >= 1024) {
		snprintf(why, wlen, "%s: only ports below 1024 are bound here", listen->valuestring);
		goto out;
	}
	if (join && !cJSON_IsBool(join)) {
		snprintf(why, wlen, "join must be true or false");
		goto out;
	}
	if (proto && (!cJSON_IsString(proto) || (strcmp(proto->valuestring, "tcp") &&
						 strcmp(proto->valuestring, "udp")))) {
		snprintf(why, wlen, "protocol must be \"tcp\" or \"udp\"");
		goto out;
	}
	if (proto && !strcmp(proto->valuestring, "udp"))
		pr = LB_PROTO_UDP;
	fds = calloc((unsigned)count->valuedouble, sizeof(*fds));
	r = fds ? dp_address_free(&a, pr) : -ENOMEM;
	/* Joining: the binds below succeed only into a SO_REUSEPORT group of root's. */
	if (r == -EADDRINUSE && cJSON_IsTrue(join) && may_join)
		r = 0;
	for (unsigned i = 0; !r && i < (unsigned)count->valuedouble; i++) {
		r = dp_listen_socket(&a, pr, &fds[i]);
		if (!r)
			(*n)++;
	}
	if (r) {
		snprintf(why, wlen, "cannot listen on %s: %s%s", listen->valuestring, strerror(-r),
			 r == -EADDRINUSE && cJSON_IsTrue(join) && !may_join
				 ? ", and this binder joins no other process's listeners now (only "
				   "with --reuseport-overlap, in its first 300 s)" : "");
		for (unsigned i = 0; i < *n; i++)
			close(fds[i]);
		*n = 0;
		free(fds);
		fds = NULL;
	}
out:
	cJSON_Delete(m);
	*ret = fds;
	return r;
}

static void serve_one(int fd, uid_t allowed, uint64_t join_until_ms)
{
	char buf[1024], why[256];
	int in[DP_HO_FDS_MAX], *fds, len, r = 0;
	struct ucred cred = { .pid = 0, .uid = (uid_t)-1 };
	socklen_t clen = sizeof(cred);
	unsigned n;

	set_timeouts(fd);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == -1 ||
	    (cred.uid != 0 && cred.uid != allowed)) {
		log_warn("binder: refused a request from uid %d: only uid %d is served",
			 (int)cred.uid, (int)allowed);
		reply(fd, "this binder serves another user", EACCES, NULL, 0, 0);
		return;
	}
	len = dp_ho_recv(fd, buf, sizeof(buf), in, &n);
	for (unsigned i = 0; i < n; i++)
		close(in[i]);
	if (len <= 0 || n) {
		reply(fd, len == -EMSGSIZE ? "request too long" : "a request with descriptors, or none",
		      EINVAL, NULL, 0, 0);
		return;
	}
	r = bind_request(buf, len, join_until_ms, &fds, &n, why, sizeof(why));
	if (r) {
		log_warn("binder: pid %d: %s", (int)cred.pid, why);
		reply(fd, why, r, NULL, 0, 0);
		return;
	}
	/* A message carries at most DP_HO_FDS_MAX descriptors: more workers, more pieces. */
	for (unsigned off = 0; off < n && !r; off += DP_HO_FDS_MAX) {
		unsigned k = n - off < DP_HO_FDS_MAX ? n - off : DP_HO_FDS_MAX;

		r = reply(fd, NULL, 0, fds + off, k, n - off - k);
	}
	if (r)
		log_warn("binder: pid %d: cannot send the sockets: %s", (int)cred.pid, strerror(-r));
	else
		log_info("binder: %u socket%s for pid %d", n, n == 1 ? "" : "s", (int)cred.pid);
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
	free(fds);
}

static int open_socket(const char *path, uid_t uid, gid_t gid)
{
	struct sockaddr_un sa;
	mode_t old_umask;
	int fd = dp_unix_sockaddr(path, &sa), r;

	if (fd)
		return fd;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	unlink(path); /* ours: a binder restarted in its pod finds its old file */
	/* Mode 0600 from the first instant, then the dataplane's: nobody else may connect. */
	old_umask = umask(0177);
	r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old_umask);
	if (r == -1 || chown(path, uid, gid) == -1 || listen(fd, 16) == -1) {
		r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

int dp_binder_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "uid", required_argument, NULL, 'u' },
		{ "gid", required_argument, NULL, 'g' },
		{ "reuseport-overlap", no_argument, NULL, 'O' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = NULL;
	uint64_t join_until_ms = 0;
	long uid = -1, gid = -1;
	int o, fd;

	while ((o = getopt_long(argc, argv, "s:u:g:", opts, NULL)) != -1) {
		char *end;

		if (o == 's') {
			path = optarg;
			continue;
		}
		if (o == 'O') {
			join_until_ms = dp_now_ms() + DP_OVERLAP_WINDOW_MS;
			continue;
		}
		long *dst = o == 'u' ? &uid : o == 'g' ? &gid : NULL;

		if (!dst)
			goto usage;
		errno = 0;
		*dst = strtol(optarg, &end, 10);
		if (errno || *end || !*optarg || *dst < 0)
			goto usage;
	}
	if (!path || path[0] != '/' || uid < 0 || optind < argc)
		goto usage;
	fd = open_socket(path, (uid_t)uid, (gid_t)(gid < 0 ? uid : gid));
	if (fd < 0) {
		log_err("binder: cannot serve %s: %s", path, strerror(-fd));
		return 1;
	}
	log_info("binder: binding ports below 1024 for uid %ld at %s%s", uid, path,
		 join_until_ms ? ", joining root's listeners when asked for the first 300 s "
				 "(--reuseport-overlap)" : "");
	for (;;) {
		int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);

		if (c == -1) {
			if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE)
				continue;
			log_err("binder: accept: %s", strerror(errno));
			return 1;
		}
		serve_one(c, (uid_t)uid, join_until_ms);
		close(c);
	}
usage:
	fprintf(stderr, "usage: layer4-lb binder --socket PATH --uid UID [--gid GID]\n"
			"                        [--reuseport-overlap]\n"
			"Binds listening TCP and UDP sockets on ports below 1024 for the dataplane running\n"
			"as UID, which asks over PATH (binder_socket in its configuration).\n"
			"--reuseport-overlap: for its first 300 s, also into a port root's SO_REUSEPORT\n"
			"sockets listen on, when the dataplane asks (it runs with --reuseport-overlap).\n");
	return 2;
}

/* One piece of the answer into fds + *got: 0 while more are to come, 1 at the last, -errno. */
static int recv_piece(int fd, unsigned n, int *fds, unsigned *got, char *err, size_t errlen)
{
	int in[DP_HO_FDS_MAX], len, r;
	char buf[1024];
	const cJSON *ok, *why, *left;
	cJSON *m;
	unsigned k;

	do
		len = dp_ho_recv(fd, buf, sizeof(buf), in, &k);
	while (len == -EINTR);
	if (len <= 0) {
		snprintf(err, errlen, "the binder did not answer: %s",
			 len ? strerror(-len) : "it hung up");
		return len ? len : -EPROTO;
	}
	m = cJSON_ParseWithLength(buf, (size_t)len);
	ok = cJSON_GetObjectItemCaseSensitive(m, "ok");
	why = cJSON_GetObjectItemCaseSensitive(m, "error");
	left = cJSON_GetObjectItemCaseSensitive(m, "left");
	if (cJSON_IsTrue(ok) && cJSON_IsNumber(left) && k && *got + k <= n &&
	    left->valuedouble == (double)(n - *got - k)) {
		memcpy(fds + *got, in, k * sizeof(int));
		*got += k;
		r = *got == n;
	} else {
		const cJSON *no = cJSON_GetObjectItemCaseSensitive(m, "errno");

		/* EADDRINUSE is a port conflict, as in our own bind; anything else a refusal. */
		r = cJSON_IsNumber(no) && no->valuedouble == EADDRINUSE ? -EADDRINUSE : -EACCES;
		snprintf(err, errlen, "the binder: %s",
			 cJSON_IsString(why) ? why->valuestring : "a wrong answer");
		for (unsigned i = 0; i < k; i++)
			close(in[i]);
	}
	cJSON_Delete(m);
	return r;
}

int dp_binder_request(const char *path, const struct lb_addr *a, enum lb_protocol proto,
		      unsigned n, bool join, int *fds, char *err, size_t errlen)
{
	char addr[LB_ADDR_STRLEN];
	cJSON *req = cJSON_CreateObject();
	unsigned got = 0;
	int fd = -1, r;

	if (!n || n > DP_BINDER_SOCKETS_MAX) {
		cJSON_Delete(req);
		snprintf(err, errlen, "%u sockets asked of the binder (1 to %u)", n,
			 DP_BINDER_SOCKETS_MAX);
		return -EINVAL;
	}
	if (!req || !cJSON_AddStringToObject(req, "op", "bind") ||
	    !cJSON_AddStringToObject(req, "listen", lb_addr_format(a, addr, sizeof(addr))) ||
	    !lb_json_add_u64(req, "count", n) || (join && !cJSON_AddTrueToObject(req, "join")) ||
	    (proto == LB_PROTO_UDP && !cJSON_AddStringToObject(req, "protocol", "udp"))) {
		cJSON_Delete(req);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	r = dp_ho_connect(path, BINDER_TIMEOUT_S, &fd);
	if (r) {
		cJSON_Delete(req);
		snprintf(err, errlen, "cannot reach the binder at %s: %s", path, strerror(-r));
		return r;
	}
	r = dp_ho_send_json(fd, req);
	if (r)
		snprintf(err, errlen, "cannot ask the binder at %s: %s", path, strerror(-r));
	while (!r)
		r = recv_piece(fd, n, fds, &got, err, errlen);
	close(fd);
	if (r < 0) {
		while (got)
			close(fds[--got]);
		return r;
	}
	return 0;
}
