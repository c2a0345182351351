/* handover.c - the handover socket: a successor process takes over our listening sockets. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/ctlproto.h"
#include "common/log.h"
#include "dataplane/evloop.h"
#include "dataplane/handover.h"
#include "dataplane/plane.h"
#include "dataplane/worker.h"

/*
 * Runs in the main thread.  One successor at a time: it says hello, we send it a duplicate of
 * every listening socket (the same open sockets, so their accept queues are shared, not
 * copied), the control, metrics and handover sockets, and the last apply, all queued at once
 * and written as the socket takes them.  Nothing changes here until it says "drain": then we
 * stop accepting everywhere and drain as on SIGTERM.  Our sockets stay open in the successor,
 * so nothing waiting in a queue is lost, and no socket file is unlinked: they are its files
 * now.  A peer that says anything else, sends us descriptors, hangs up or takes longer than
 * DP_HO_TIMEOUT_MS is dropped, and we go on as before.
 */

enum ho_state {
	HO_HELLO,      /* connected: waiting for its hello */
	HO_SENDING,    /* our sockets are being written to it */
	HO_WAIT_DRAIN, /* it has them all: waiting for "drain" (or its hang-up) */
};

struct ho_msg {
	char *buf;
	size_t len;
	int *fds;      /* duplicates, owned: closed once sent or abandoned */
	unsigned n_fds;
};

struct ho_peer {
	struct dp_evsrc ev;
	enum ho_state state;
	int pid;
	uint64_t deadline_ms;
	struct ho_msg *msgs;
	unsigned n_msgs, cap_msgs, next;
	uint32_t watched;
};

struct dp_handover {
	struct dp_evsrc ev;                /* the listening socket; fd -1 once handed over */
	char path[LB_PATH_MAX];
	struct ho_peer *peer;
};

static void msgs_free(struct ho_peer *s)
{
	for (unsigned i = 0; i < s->n_msgs; i++) {
		for (unsigned j = 0; j < s->msgs[i].n_fds; j++)
			close(s->msgs[i].fds[j]);
		free(s->msgs[i].fds);
		free(s->msgs[i].buf);
	}
	free(s->msgs);
	s->msgs = NULL;
	s->n_msgs = s->cap_msgs = s->next = 0;
}

static void peer_drop(struct dp_plane *p, struct ho_peer *s)
{
	epoll_ctl(p->epfd, EPOLL_CTL_DEL, s->ev.fd, NULL);
	close(s->ev.fd);
	msgs_free(s);
	p->handover->peer = NULL;
	free(s);
}

/* Queue a message; takes buf (malloc'd) and duplicates of fds.  0 or -errno. */
static int queue_msg(struct ho_peer *s, char *buf, size_t len, const int *fds, unsigned n_fds)
{
	struct ho_msg *m;

	if (!buf)
		return -ENOMEM;
	if (s->n_msgs == s->cap_msgs) {
		unsigned cap = s->cap_msgs ? s->cap_msgs * 2 : 16;
		struct ho_msg *v = realloc(s->msgs, cap * sizeof(*v));

		if (!v) {
			free(buf);
			return -ENOMEM;
		}
		s->msgs = v;
		s->cap_msgs = cap;
	}
	m = &s->msgs[s->n_msgs];
	*m = (struct ho_msg){ .buf = buf, .len = len };
	if (n_fds && !(m->fds = calloc(n_fds, sizeof(int)))) {
		free(buf);
		return -ENOMEM;
	}
	s->n_msgs++;
	for (unsigned i = 0; i < n_fds; i++) {
		/* A duplicate: a worker closing its socket meanwhile cannot change what we send. */
		int fd = fcntl(fds[i], F_DUPFD_CLOEXEC, 0);

		if (fd == -1)
			return -errno;
		m->fds[m->n_fds++] = fd;
	}
	return 0;
}

static int queue_json(struct ho_peer *s, cJSON *obj, const int *fds, unsigned n_fds)
{
	char *text = obj ? cJSON_PrintUnformatted(obj) : NULL;

	cJSON_Delete(obj);
	return queue_msg(s, text, text ? strlen(text) : 0, fds, n_fds);
}

/* proto: a listener's "protocol" when it is not tcp (NULL: none said, tcp). */
static int queue_socket(struct ho_peer *s, const char *role, const char *key, const char *val,
			const char *proto, const int *fds, unsigned n)
{
	cJSON *o = cJSON_CreateObject();
	char id[DP_HO_FILE_ID_MAX];
	struct stat st;

	if (!o || !cJSON_AddStringToObject(o, "op", "socket") ||
	    !cJSON_AddStringToObject(o, "role", role) || !cJSON_AddStringToObject(o, key, val) ||
	    !lb_json_add_u64(o, "count", n) ||
	    (proto && !cJSON_AddStringToObject(o, "protocol", proto)))
		goto out_nomem;
	/*
	 * Which file the path names here: in another mount namespace (the next pod of a
	 * DaemonSet, with its own emptyDir) the same path may name another file, or none, and
	 * the successor must then not serve our socket there.
	 */
	if (!strcmp(key, "path") && !stat(val, &st) &&
	    !cJSON_AddStringToObject(o, "file", dp_ho_file_id(&st, id, sizeof(id))))
		goto out_nomem;
	return queue_json(s, o, fds, n);
out_nomem:
	cJSON_Delete(o);
	return -ENOMEM;
}

/* A listener's sockets, at most DP_HO_FDS_MAX a message. */
static int queue_listener(struct ho_peer *s, const struct dp_slistener *sl)
{
	const struct dp_lsocks *ls = sl->socks;
	int fds[DP_HO_FDS_MAX];
	unsigned n = 0;
	int r = 0;

	for (unsigned i = 0; i < ls->n && !r; i++) {
		if (ls->fds[i] >= 0)
			fds[n++] = ls->fds[i];
		if (n && (n == DP_HO_FDS_MAX || i + 1 == ls->n)) {
			r = queue_socket(s, "listener", "listen", sl->conf->listen_str,
					 ls->proto == LB_PROTO_UDP ? "udp" : NULL, fds, n);
			n = 0;
		}
	}
	return r;
}

static int queue_services(struct dp_plane *p, struct ho_peer *s)
{
	int fd, r = 0;

	if ((fd = dp_control_listen_fd(p)) >= 0)
		r = queue_socket(s, "control", "path", p->file->control_socket, NULL, &fd, 1);
	if (!r && (fd = dp_metrics_listen_fd(p)) >= 0)
		r = queue_socket(s, "metrics", "listen", p->file->metrics, NULL, &fd, 1);
	if (!r && p->handover->ev.fd >= 0)
		r = queue_socket(s, "handover", "path", p->handover->path, NULL,
				 &p->handover->ev.fd, 1);
	return r;
}

static int queue_apply(struct dp_plane *p, struct ho_peer *s)
{
	int r = 0;

	for (size_t off = 0; off < p->applied_doc_len && !r; off += DP_HO_APPLY_PIECE) {
		size_t len = p->applied_doc_len - off;
		char *piece;

		if (len > DP_HO_APPLY_PIECE)
			len = DP_HO_APPLY_PIECE;
		piece = malloc(len);
		if (piece)
			memcpy(piece, p->applied_doc + off, len);
		r = queue_msg(s, piece, len, NULL, 0);
	}
	return r;
}

static cJSON *op_object(const char *op)
{
	cJSON *o = cJSON_CreateObject();

	if (o && !cJSON_AddStringToObject(o, "op", op)) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

/* Everything the successor gets, queued with the begin message (counts) filled in last. */
static int queue_all(struct dp_plane *p, struct ho_peer *s)
{
	cJSON *begin = op_object("begin");
	unsigned n_sockets;
	int r;

	r = queue_msg(s, strdup("{}"), 2, NULL, 0); /* a place for "begin" */
	for (unsigned i = 0; !r && i < p->snap->n_listeners; i++)
		if (p->snap->listeners[i].socks)
			r = queue_listener(s, &p->snap->listeners[i]);
	if (!r)
		r = queue_services(p, s);
	n_sockets = s->n_msgs - 1;
	if (!r)
		r = queue_apply(p, s);
	if (!r)
		r = queue_json(s, op_object("end"), NULL, 0);
	if (r || !begin)
		goto out;
	r = -ENOMEM;
	if (!lb_json_add_u64(begin, "protocol", DP_HO_PROTOCOL) ||
	    !lb_json_add_u64(begin, "pid", (uint64_t)getpid()) ||
	    !lb_json_add_u64(begin, "sockets", n_sockets) ||
	    !lb_json_add_u64(begin, "apply_bytes", p->applied_doc_len) ||
	    (p->applied_doc && !lb_json_add_u64(begin, "applied_version", p->applied_version)))
		goto out;
	free(s->msgs[0].buf);
	s->msgs[0].buf = cJSON_PrintUnformatted(begin);
	s->msgs[0].len = s->msgs[0].buf ? strlen(s->msgs[0].buf) : 0;
	r = s->msgs[0].buf ? 0 : -ENOMEM;
out:
	cJSON_Delete(begin);
	return r;
}

static int peer_watch(struct dp_plane *p, struct ho_peer *s, uint32_t events)
{
	if (s->watched == events)
		return 0;
	s->watched = events;
	return dp_plane_rewatch(p, &s->ev, events);
}

/* Write what the socket takes; all of it sent moves on to waiting for "drain". */
static int peer_flush(struct dp_plane *p, struct ho_peer *s)
{
	while (s->next < s->n_msgs) {
		struct ho_msg *m = &s->msgs[s->next];
		int r = dp_ho_send(s->ev.fd, m->buf, m->len, m->fds, m->n_fds);

		if (r == -EAGAIN)
			return peer_watch(p, s, EPOLLIN | EPOLLOUT);
		if (r)
			return r;
		s->next++;
	}
	msgs_free(s); /* our duplicates: the successor has its own now */
	s->state = HO_WAIT_DRAIN;
	log_info("handover: pid %d has our listening sockets; it tells us when it accepts on them",
		 s->pid);
	return peer_watch(p, s, EPOLLIN);
}

/* Best effort: the peer is being turned away anyway. */
static void send_error(int fd, const char *why)
{
	cJSON *o = op_object("error");

	if (o && !cJSON_AddStringToObject(o, "error", why)) {
		cJSON_Delete(o);
		o = NULL;
	}
	if (o)
		dp_ho_send_json(fd, o);
}

static void peer_refuse(struct dp_plane *p, struct ho_peer *s, const char *why)
{
	log_warn("handover: pid %d: %s; nothing changed here", s->pid, why);
	send_error(s->ev.fd, why);
	peer_drop(p, s);
}

/* Whether the drain message m names role among the sockets the successor took. */
static bool adopted(cJSON *m, const char *role)
{
	cJSON *list = cJSON_GetObjectItemCaseSensitive(m, "adopted"), *e;

	if (!cJSON_IsArray(list))
		return true; /* a successor that does not say takes them all */
	cJSON_ArrayForEach(e, list)
		if (cJSON_IsString(e) && !strcmp(e->valuestring, role))
			return true;
	return false;
}

/*
 * Stop accepting on every socket the successor now serves, then drain as on SIGTERM.  A
 * control socket it did not take (its own is elsewhere: another pod) stays ours, for ping
 * and status; applies are refused while we drain.
 */
static void hand_over(struct dp_plane *p, struct ho_peer *s, cJSON *m)
{
	struct dp_handover *h = p->handover;
	char why[64];

	dp_ho_send_json(s->ev.fd, op_object("draining"));
	snprintf(why, sizeof(why), "handed over to pid %d", s->pid);
	peer_drop(p, s);
	p->handed_over = true; /* the socket files are the successor's: never unlink them */
	p->kept_control = !adopted(m, "control");
	if (!p->kept_control)
		dp_control_stop(p);
	dp_metrics_stop(p);
	if (h->ev.fd >= 0) {
		/* Not freed: an event for it may still be in this turn's batch. */
		epoll_ctl(p->epfd, EPOLL_CTL_DEL, h->ev.fd, NULL);
		close(h->ev.fd);
		h->ev.fd = -1;
	}
	if (!p->draining) /* a SIGTERM meanwhile started it: a second call would cut it short */
		dp_plane_drain(p, why);
}

/* The op of a JSON message, or NULL when it is none. */
static const char *msg_op(cJSON *m)
{
	cJSON *op = cJSON_GetObjectItemCaseSensitive(m, "op");

	return cJSON_IsObject(m) && cJSON_IsString(op) ? op->valuestring : NULL;
}

/* The sockets are queued: send what the socket takes now, the rest as it drains. */
static int start_sending(struct dp_plane *p, struct ho_peer *s)
{
	s->state = HO_SENDING;
	return peer_flush(p, s);
}

static void peer_message(struct dp_plane *p, struct ho_peer *s, const char *buf, int len)
{
	cJSON *m = cJSON_ParseWithLength(buf, (size_t)len), *proto;
	const char *op = msg_op(m);
	char why[160];
	int r;

	if (!op) {
		snprintf(why, sizeof(why), "not a handover message (a JSON object with \"op\")");
	} else if (s->state == HO_HELLO && !strcmp(op, "hello")) {
		proto = cJSON_GetObjectItemCaseSensitive(m, "protocol");
		if (!cJSON_IsNumber(proto) || proto->valuedouble != DP_HO_PROTOCOL)
			snprintf(why, sizeof(why), "protocol version not %d", DP_HO_PROTOCOL);
		else if (p->draining)
			snprintf(why, sizeof(why), "draining already: nothing to hand over");
		else if (p->takeover)
			snprintf(why, sizeof(why), "still taking over from our own predecessor");
		else if ((r = queue_all(p, s)) || (r = start_sending(p, s)))
			snprintf(why, sizeof(why), "cannot send our sockets: %s", strerror(-r));
		else
			goto out;
	} else if (s->state == HO_WAIT_DRAIN && !strcmp(op, "drain")) {
		hand_over(p, s, m);
		cJSON_Delete(m);
		return;
	} else {
		snprintf(why, sizeof(why), "unexpected message \"%.40s\" %s", op,
			 s->state == HO_HELLO ? "before hello" : "while sending our sockets");
	}
	peer_refuse(p, s, why);
out:
	cJSON_Delete(m);
}

static void peer_event(struct dp_plane *p, struct dp_evsrc *src, uint32_t events)
{
	struct ho_peer *s = (struct ho_peer *)src;
	char buf[1024];
	int fds[DP_HO_FDS_MAX], len, r;
	unsigned n;

	if ((events & EPOLLOUT) && s->state == HO_SENDING && (r = peer_flush(p, s))) {
		log_warn("handover: pid %d: %s; still serving", s->pid, strerror(-r));
		peer_drop(p, s);
		return;
	}
	if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		return;
	len = dp_ho_recv(s->ev.fd, buf, sizeof(buf), fds, &n);
	if (len == -EAGAIN)
		return;
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
	if (len == -EMSGSIZE) {
		peer_refuse(p, s, "message too long");
		return;
	}
	if (len == -ETOOMANYREFS) {
		peer_refuse(p, s, "sent us descriptors: a successor never does");
		return;
	}
	if (len <= 0) {
		if (s->state != HO_HELLO)
			log_warn("handover: pid %d hung up before telling us to drain; still "
				 "serving", s->pid);
		peer_drop(p, s);
		return;
	}
	if (n) {
		peer_refuse(p, s, "sent us descriptors: a successor never does");
		return;
	}
	peer_message(p, s, buf, len);
}

/* Only our own uid or root may take our sockets, whatever the socket file's mode. */
static int peer_pid(int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == -1)
		return -1;
	return cred.uid == 0 || cred.uid == geteuid() ? (int)cred.pid : -1;
}

static void listener_event(struct dp_plane *p, struct dp_evsrc *src, uint32_t events)
{
	struct dp_handover *h = (struct dp_handover *)src;
	struct ho_peer *s;
	int fd, pid;

	while (src->fd >= 0 && (fd = accept4(src->fd, NULL, NULL,
					     SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
		const char *why = "out of memory";

		pid = peer_pid(fd);
		if (pid < 0)
			why = "not our uid or root";
		else if (h->peer)
			why = "one handover at a time";
		s = pid >= 0 && !h->peer ? calloc(1, sizeof(*s)) : NULL;
		if (!s) {
			log_warn("handover: refused a connection: %s", why);
			send_error(fd, why);
			close(fd);
			continue;
		}
		s->ev.fd = fd;
		s->ev.handle = peer_event;
		s->pid = pid;
		s->deadline_ms = dp_now_ms() + DP_HO_TIMEOUT_MS;
		s->watched = EPOLLIN;
		if (dp_plane_watch(p, &s->ev, EPOLLIN)) {
			close(fd);
			free(s);
			continue;
		}
		h->peer = s;
	}
	if (src->fd >= 0 && (errno == EMFILE || errno == ENFILE || errno == ENOBUFS))
		dp_plane_pause(p, src);
}

/* --- the socket ---------------------------------------------------------------------- */

/* A socket file left by a dead process is replaced; one that answers is someone's. */
static int bind_path(const char *path, int *ret_fd, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	mode_t old_umask;
	int fd, r;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		goto out_errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		snprintf(err, errlen, "handover socket %s: another process is serving it", path);
		close(fd);
		return -EADDRINUSE;
	}
	if (unlink(path) == -1 && errno != ENOENT)
		goto out_errno;
	old_umask = umask(0177); /* 0600 from the first instant */
	r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old_umask);
	if (r == -1 || listen(fd, 4) == -1)
		goto out_errno;
	*ret_fd = fd;
	return 0;
out_errno:
	r = -errno;
	snprintf(err, errlen, "handover socket %s: %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	return r;
}

static bool handover_busy(const struct dp_plane *p);
static void handover_expire(struct dp_plane *p, uint64_t now_ms);
static void handover_close(struct dp_plane *p);

/* What the main loop asks of the handover socket (evloop.h). */
static const struct dp_service handover_service = {
	.busy = handover_busy, .expire = handover_expire, .close = handover_close,
};

int dp_handover_open(struct dp_plane *p, const char *path, int fd, char *err, size_t errlen)
{
	struct dp_handover *h = calloc(1, sizeof(*h));
	int r;

	/* First: the loop closes it at exit whatever becomes of this open. */
	dp_plane_serve(p, &handover_service);

	if (!h) {
		if (fd >= 0)
			close(fd);
		return -ENOMEM;
	}
	if (fd < 0 && (r = bind_path(path, &fd, err, errlen))) {
		free(h);
		return r;
	}
	/* Inherited or not, ours now: non-blocking (the flag is shared with the predecessor). */
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	h->ev.fd = fd;
	h->ev.handle = listener_event;
	snprintf(h->path, sizeof(h->path), "%s", path);
	p->handover = h;
	return dp_plane_watch(p, &h->ev, EPOLLIN);
}

/* A successor holds our sockets and has not yet told us to drain: no apply or reload now. */
static bool handover_busy(const struct dp_plane *p)
{
	return p->handover && p->handover->peer && p->handover->peer->state != HO_HELLO;
}

static void handover_expire(struct dp_plane *p, uint64_t now_ms)
{
	struct ho_peer *s = p->handover ? p->handover->peer : NULL;

	if (!s || now_ms < s->deadline_ms)
		return;
	log_warn("handover: pid %d did not finish within %d s; dropped it, still serving", s->pid,
		 DP_HO_TIMEOUT_MS / 1000);
	peer_drop(p, s);
}

static void handover_close(struct dp_plane *p)
{
	struct dp_handover *h = p->handover;

	if (!h)
		return;
	if (h->peer)
		peer_drop(p, h->peer);
	if (h->ev.fd >= 0) {
		close(h->ev.fd);
		if (!p->handed_over)
			unlink(h->path);
	}
	free(h);
	p->handover = NULL;
}
