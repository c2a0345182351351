/* control.c - the Unix control socket: newline-delimited JSON requests from local peers. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/ctlproto.h"
#include "common/log.h"
#include "dataplane/evloop.h"
#include "dataplane/handover.h"
#include "dataplane/plane.h"

/*
 * Runs in the main thread, never in a worker: a large apply is parsed, validated and turned
 * into a snapshot here while the workers keep relaying, and reaches them only as a finished
 * snapshot.  Requests are answered in order, one reply line per request line.
 */

#define DP_CONTROL_CLIENTS_MAX 64
/* A client may stay connected between requests, but a slot is not held for ever. */
#define DP_CONTROL_IDLE_MS 60000

struct dp_control {
	struct dp_evsrc ev;
	char path[LB_PATH_MAX];
	struct dp_streams clients;
};

/*
 * A listener that could not be bound is applied all the same (desired, not serving): the
 * reply names each, and the log says why, once per apply that tried again.
 */
static cJSON *bind_failures(struct dp_plane *p, uint64_t version)
{
	cJSON *bf = dp_status_bind_failures(p), *f;

	cJSON_ArrayForEach(f, bf)
		log_warn("apply version %llu: listener %s is not serving: %s",
			 (unsigned long long)version,
			 cJSON_GetObjectItemCaseSensitive(f, "name")->valuestring,
			 cJSON_GetObjectItemCaseSensitive(f, "error")->valuestring);
	return bf;
}

static char *do_apply(struct dp_plane *p, struct lb_ctl_request *req, const char *line,
		      size_t len)
{
	struct lb_config *managed = req->listeners;
	struct lb_config_diff d;
	char err[1024];
	cJSON *reply, *ch, *bf;

	if (p->draining) {
		p->applies_failed++;
		return lb_ctl_reply_error(req, p->handed_over ? "handed over to a new process: "
								"applies go to its control socket"
							      : "draining for shutdown: applies are "
								"refused");
	}
	if (dp_plane_busy(p)) {
		/* What it was sent must stay what we serve until it tells us to drain. */
		p->applies_failed++;
		return lb_ctl_reply_error(req, "a successor process is taking over our sockets: "
					       "applies are refused; send it to the new process");
	}
	lb_config_diff(p->managed, managed, &d);
	if (dp_plane_commit(p, NULL, managed, err, sizeof(err))) {
		p->applies_failed++;
		log_warn("apply version %llu refused: %s", (unsigned long long)req->version, err);
		return lb_ctl_reply_error(req, err);
	}
	req->listeners = NULL; /* the plane owns it now */
	p->applies_ok++;
	p->applied = true;
	p->applied_version = req->version;
	dp_plane_keep_apply(p, line, len);
	log_info("apply version %llu: listeners +%u -%u ~%u =%u, backends +%u -%u",
		 (unsigned long long)req->version, d.listeners_added, d.listeners_removed,
		 d.listeners_changed, d.listeners_unchanged, d.backends_added, d.backends_removed);
	reply = lb_ctl_reply_new(req, 1);
	ch = cJSON_AddObjectToObject(reply, "changes");
	lb_json_add_u64(ch, "listeners_added", d.listeners_added);
	lb_json_add_u64(ch, "listeners_removed", d.listeners_removed);
	lb_json_add_u64(ch, "listeners_changed", d.listeners_changed);
	lb_json_add_u64(ch, "listeners_unchanged", d.listeners_unchanged);
	lb_json_add_u64(ch, "backends_added", d.backends_added);
	lb_json_add_u64(ch, "backends_removed", d.backends_removed);
	bf = bind_failures(p, req->version);
	if (!cJSON_AddItemToObject(reply, "bind_failures", bf)) {
		/* Applied, but a reply without the list would read as "all bound". */
		cJSON_Delete(bf);
		cJSON_Delete(reply);
		return NULL;
	}
	return lb_ctl_reply_finish(reply);
}

static char *do_status(struct dp_plane *p, const struct lb_ctl_request *req)
{
	cJSON *reply = lb_ctl_reply_new(req, 1), *st = dp_status_json(p), *item;

	if (!reply || !st) {
		cJSON_Delete(reply);
		cJSON_Delete(st);
		return lb_ctl_reply_error(req, "out of memory");
	}
	/* Move the status fields up next to "ok" and "op". */
	while ((item = st->child)) {
		cJSON_DetachItemViaPointer(st, item);
		cJSON_AddItemToObject(reply, item->string, item);
	}
	cJSON_Delete(st);
	return lb_ctl_reply_finish(reply);
}

static char *handle_line(struct dp_plane *p, const char *line, size_t len)
{
	struct lb_ctl_request req;
	char err[1024], *reply;

	if (lb_ctl_request_parse(line, len, &req, err, sizeof(err))) {
		if (req.op == LB_CTL_APPLY)
			p->applies_failed++;
		log_debug("control: bad request: %s", err);
		return lb_ctl_reply_error(&req, err);
	}
	switch (req.op) {
	case LB_CTL_APPLY:
		reply = do_apply(p, &req, line, len);
		break;
	case LB_CTL_STATUS:
		reply = do_status(p, &req);
		break;
	default:
		reply = lb_ctl_reply_finish(lb_ctl_reply_new(&req, 1));
	}
	lb_ctl_request_clear(&req);
	return reply;
}

static int send_reply(struct dp_stream *s, char *line)
{
	int r;

	if (!line)
		return -ENOMEM;
	r = dp_stream_write(s, line, strlen(line));
	free(line);
	return r;
}

/*
 * Answer the complete lines in the buffer, in order, until the replies back up; keep the rest
 * (a partial line, or lines the client must first make room for by reading).
 */
static int serve_lines(struct dp_plane *p, struct dp_stream *s)
{
	char *nl;
	int r = 0;

	while (!r && s->in_off < s->in_len && !dp_stream_backlogged(s) &&
	       (nl = memchr(s->in + s->in_off, '\n', s->in_len - s->in_off))) {
		size_t start = s->in_off, len = nl - (s->in + start);

		if (len && s->in[start + len - 1] == '\r')
			len--;
		s->in_off = nl + 1 - s->in;
		if (len) {
			r = send_reply(s, handle_line(p, s->in + start, len));
			dp_stream_touch(s); /* a request is progress: the idle time starts again */
		}
	}
	if (s->in_off == s->in_len)
		s->in_off = s->in_len = 0;
	return r;
}

/* Read and answer; stop reading while the replies back up, resume once they are sent. */
static int serve(struct dp_plane *p, struct dp_stream *s)
{
	int r = dp_stream_flush(s);

	if (!r)
		r = serve_lines(p, s); /* lines held back while the replies were backlogged */
	while (!r && !s->in_done && !dp_stream_backlogged(s)) {
		int rd;

		if (s->in_len - s->in_off >= LB_CTL_LINE_MAX) {
			/* No resync inside an unbounded line: say why, then hang up. */
			s->in_done = true;
			s->in_off = s->in_len = 0;
			return send_reply(s, lb_ctl_reply_error(NULL, "message longer than the 8 MiB "
							      "limit; closing the connection"));
		}
		rd = dp_stream_read(s, LB_CTL_LINE_MAX);
		if (rd != 0 && rd != -E2BIG)
			s->in_done = true; /* EOF or error: answer what is complete, then close */
		r = serve_lines(p, s);
		if (rd == 0)
			break; /* drained the socket: wait for the next event */
	}
	return r;
}

static void client_event(struct dp_plane *p, struct dp_evsrc *src, uint32_t events)
{
	struct dp_stream *s = (struct dp_stream *)src;
	int r = serve(p, s);

	if (!r && s->in_done && !dp_stream_backlogged(s))
		s->close_after = true; /* every complete line answered */
	if (!r && !(s->close_after && !dp_stream_unsent(s)))
		r = dp_stream_update(p, s);
	if (r || (s->close_after && !dp_stream_unsent(s)))
		dp_stream_drop(&p->control->clients, s);
}

/* Only our own uid or root may drive the dataplane, whatever the socket file's mode. */
static bool peer_allowed(int fd, struct ucred *cred)
{
	socklen_t len = sizeof(*cred);

	memset(cred, 0, sizeof(*cred));
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &len) == -1)
		return false;
	return cred->uid == 0 || cred->uid == geteuid();
}

static void refuse(int fd, const char *msg)
{
	char *line = lb_ctl_reply_error(NULL, msg);

	if (line && send(fd, line, strlen(line), MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
		/* Best effort: the peer is being turned away anyway. */
	}
	free(line);
	close(fd);
}

static void listener_event(struct dp_plane *p, struct dp_evsrc *src, uint32_t events)
{
	struct dp_control *ctl = (struct dp_control *)src;

	for (;;) {
		struct ucred cred;
		int fd = accept4(src->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd == -1) {
			int e = errno;

			if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM)
				dp_plane_pause(p, src);
			return;
		}
		if (!peer_allowed(fd, &cred)) {
			log_warn("control socket: refused pid %d uid %u (only uid %u or root)",
				 (int)cred.pid, (unsigned)cred.uid, (unsigned)geteuid());
			refuse(fd, "permission denied: only the dataplane's uid or root may connect");
			continue;
		}
		if (ctl->clients.n >= ctl->clients.max) {
			refuse(fd, "too many control connections");
			continue;
		}
		dp_stream_adopt(p, &ctl->clients, fd, client_event);
	}
}

/* A socket file left by a dead process is replaced; one that answers is someone's. */
static int clear_stale(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, r;

	if (lstat(path, &st) == -1)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "control socket %s: exists and is not a socket", path);
		return -EEXIST;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	close(fd);
	if (r == 0) {
		snprintf(err, errlen, "control socket %s: another process is serving it", path);
		return -EADDRINUSE;
	}
	return unlink(path) == -1 ? -errno : 0;
}

static int resolve_group(const char *group, gid_t *ret)
{
	struct group *gr = getgrnam(group);
	char *end;
	unsigned long v;

	if (gr) {
		*ret = gr->gr_gid;
		return 0;
	}
	v = strtoul(group, &end, 10);
	if (!*group || *end)
		return -ENOENT;
	*ret = v;
	return 0;
}

static int bind_socket(const char *path, const char *group, int *ret_fd, char *err,
		       size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	mode_t old_umask;
	gid_t gid = -1;
	int fd, r;

	if (group[0] && resolve_group(group, &gid)) {
		snprintf(err, errlen, "control_socket_group: no group \"%s\"", group);
		return -ENOENT;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		goto out_errno;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	/* Created with no access for others from the first instant, not chmod'ed afterwards. */
	old_umask = umask(0177);
	r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old_umask);
	if (r == -1)
		goto out_errno;
	if ((group[0] && (chown(path, -1, gid) == -1 || chmod(path, 0660) == -1)) ||
	    listen(fd, 16) == -1) {
		r = -errno;
		unlink(path); /* bound: do not leave the file behind */
		errno = -r;
		goto out_errno;
	}
	*ret_fd = fd;
	return 0;
out_errno:
	r = -errno;
	snprintf(err, errlen, "control socket %s: %s", path, strerror(-r));
	if (fd >= 0)
		close(fd);
	return r;
}

static void control_expire(struct dp_plane *p, uint64_t now_ms);
static void control_close(struct dp_plane *p);

/* What the main loop asks of the control socket (evloop.h). */
static const struct dp_service control_service = {
	.expire = control_expire, .close = control_close,
};

int dp_control_open(struct dp_plane *p, const char *path, const char *group, int fd, char *err,
		    size_t errlen)
{
	struct dp_control *ctl;
	char dir[LB_PATH_MAX];
	int r;

	/* First: the loop closes it at exit whatever becomes of this open. */
	dp_plane_serve(p, &control_service);

	ctl = calloc(1, sizeof(*ctl));
	if (!ctl) {
		if (fd >= 0)
			close(fd);
		return -ENOMEM;
	}
	ctl->ev.fd = fd;
	if (fd >= 0) {
		/* Our predecessor's socket, file and mode as they are; the flag is shared. */
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
		goto out_serve;
	}
	snprintf(dir, sizeof(dir), "%s", path);
	if (mkdir(dirname(dir), 0750) == -1 && errno != EEXIST) {
		r = -errno;
		snprintf(err, errlen, "control socket %s: cannot create its directory: %s", path,
			 strerror(-r));
		goto out_free;
	}
	r = clear_stale(path, err, errlen);
	if (r) {
		if (r != -EEXIST && r != -EADDRINUSE)
			snprintf(err, errlen, "control socket %s: %s", path, strerror(-r));
		goto out_free;
	}
	r = bind_socket(path, group, &ctl->ev.fd, err, errlen);
	if (r)
		goto out_free;
out_serve:
	snprintf(ctl->path, sizeof(ctl->path), "%s", path);
	ctl->ev.handle = listener_event;
	ctl->clients.max = DP_CONTROL_CLIENTS_MAX;
	ctl->clients.timeout_ms = DP_CONTROL_IDLE_MS;
	ctl->clients.goodbye = "{\"ok\":false,\"error\":\"no complete request for 60 s; closing "
			       "the connection\"}\n";
	p->control = ctl;
	return dp_plane_watch(p, &ctl->ev, EPOLLIN);
out_free:
	free(ctl);
	return r;
}

int dp_control_listen_fd(const struct dp_plane *p)
{
	return p->control ? p->control->ev.fd : -1;
}

void dp_control_stop(struct dp_plane *p)
{
	if (p->control)
		dp_plane_unwatch_close(p, &p->control->ev);
}

static void control_expire(struct dp_plane *p, uint64_t now_ms)
{
	unsigned n;

	if (!p->control)
		return;
	n = dp_streams_expire(&p->control->clients, now_ms);
	if (n)
		log_debug("control socket: closed %u connection%s idle for %u s", n,
			  n == 1 ? "" : "s", DP_CONTROL_IDLE_MS / 1000);
}

static void control_close(struct dp_plane *p)
{
	struct dp_control *ctl = p->control;

	if (!ctl)
		return;
	while (ctl->clients.head)
		dp_stream_drop(&ctl->clients, ctl->clients.head);
	if (ctl->ev.fd >= 0) {
		close(ctl->ev.fd);
		if (!p->handed_over || p->kept_control) /* else the file is our successor's */
			unlink(ctl->path);
	}
	free(ctl);
	p->control = NULL;
}
