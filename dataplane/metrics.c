/* metrics.c - a minimal HTTP/1.x server for GET /metrics, in the main thread. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "dataplane/evloop.h"
#include "dataplane/plane.h"

/*
 * One request per connection, answered and closed: scrapers open a connection per scrape
 * anyway.  The text is rendered from counters the workers update with relaxed atomics, so a
 * scrape never stops or slows the relay path.
 */

#define DP_HTTP_REQ_MAX 8192
#define DP_METRICS_CLIENTS_MAX 32
/* The whole request within this, and then the response must keep moving. */
#define DP_METRICS_TIMEOUT_MS 10000
/*
 * A scraper that stops reading holds its whole response until its deadline.  While the
 * responses still unsent add up to more than this, new scrapes are told to come back (503)
 * instead of each pinning another copy of the text.
 */
#define DP_METRICS_HELD_MAX (16u << 20)

struct dp_metrics {
	struct dp_evsrc ev;
	struct dp_streams clients;
};

static int respond(struct dp_plane *p, struct dp_stream *s, const char *status,
		   const char *type, const char *body, size_t len, bool head)
{
	char hdr[256];
	int n, r;

	n = snprintf(hdr, sizeof(hdr),
		     "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
		     "Connection: close\r\n\r\n",
		     status, type, len);
	s->close_after = true;
	r = dp_stream_write(s, hdr, n);
	if (!r && !head)
		r = dp_stream_write(s, body, len);
	return r;
}

static size_t held_bytes(const struct dp_metrics *m)
{
	size_t n = 0;

	for (const struct dp_stream *c = m->clients.head; c; c = c->next)
		n += dp_stream_unsent(c);
	return n;
}

static int serve(struct dp_plane *p, struct dp_stream *s)
{
	static const char not_found[] = "not found: try /metrics\n";
	static const char bad[] = "bad request\n";
	static const char busy[] = "busy: earlier responses are still being sent; retry\n";
	char method[8], path[64];
	bool head;
	size_t len;
	char *text;
	int r;

	s->in[s->in_len < s->in_cap ? s->in_len : s->in_cap - 1] = '\0';
	if (sscanf(s->in, "%7s %63s", method, path) != 2)
		return respond(p, s, "400 Bad Request", "text/plain", bad, sizeof(bad) - 1, false);
	head = !strcmp(method, "HEAD");
	if (!head && strcmp(method, "GET"))
		return respond(p, s, "405 Method Not Allowed", "text/plain", bad, sizeof(bad) - 1,
			       false);
	if (strcmp(path, "/metrics") && strncmp(path, "/metrics?", 9))
		return respond(p, s, "404 Not Found", "text/plain", not_found,
			       sizeof(not_found) - 1, head);
	if (held_bytes(p->metrics) > DP_METRICS_HELD_MAX)
		return respond(p, s, "503 Service Unavailable", "text/plain", busy,
			       sizeof(busy) - 1, head);
	text = dp_metrics_text(p, &len);
	if (!text)
		return -ENOMEM;
	r = respond(p, s, "200 OK", "text/plain; version=0.0.4; charset=utf-8", text, len, head);
	free(text);
	return r;
}

static void client_event(struct dp_plane *p, struct dp_evsrc *src, uint32_t events)
{
	struct dp_stream *s = (struct dp_stream *)src;
	int r = dp_stream_flush(s);

	if (!r && !s->in_done) {
		int rd = dp_stream_read(s, DP_HTTP_REQ_MAX - 1);

		if (rd < 0 && rd != -E2BIG) {
			r = rd;
		} else if (s->in_len && (rd == -E2BIG || rd == 1 ||
					 memmem(s->in, s->in_len, "\r\n\r\n", 4) ||
					 memmem(s->in, s->in_len, "\n\n", 2))) {
			s->in_done = true; /* one request per connection: nothing more is read */
			r = serve(p, s);
		} else if (rd == 1) {
			r = -ECONNRESET;
		}
	}
	if (!r && !(s->close_after && !dp_stream_unsent(s)))
		r = dp_stream_update(p, s);
	if (r || (s->close_after && !dp_stream_unsent(s)))
		dp_stream_drop(&p->metrics->clients, s);
}

static void listener_event(struct dp_plane *p, struct dp_evsrc *src, uint32_t events)
{
	struct dp_metrics *m = (struct dp_metrics *)src;

	for (;;) {
		int fd = accept4(src->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd == -1) {
			int e = errno;

			if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM)
				dp_plane_pause(p, src);
			return;
		}
		dp_stream_adopt(p, &m->clients, fd, client_event);
	}
}

static void metrics_expire(struct dp_plane *p, uint64_t now_ms);
static void metrics_close(struct dp_plane *p);

/* What the main loop asks of the metrics listener (evloop.h). */
static const struct dp_service metrics_service = {
	.expire = metrics_expire, .close = metrics_close,
};

int dp_metrics_open(struct dp_plane *p, const char *addr, int fd, char *err, size_t errlen)
{
	struct dp_metrics *m;
	struct lb_addr a;
	int one = 1, r;

	/* First: the loop closes it at exit whatever becomes of this open. */
	dp_plane_serve(p, &metrics_service);

	if (fd >= 0) {
		/* Our predecessor's listener, still ours to serve; the flag is shared with it. */
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
		goto out_serve;
	}
	if (lb_addr_parse(addr, false, &a, err, errlen))
		return -EINVAL;
	fd = socket(a.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		goto out_errno;
	/*
	 * Two processes overlapping in an upgrade both serve metrics while they do: ours must let
	 * the next one join as much as we join our predecessor's.
	 */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
	    (p->overlap_until_ms &&
	     setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1) ||
	    bind(fd, (struct sockaddr *)&a.ss, a.len) == -1 || listen(fd, 64) == -1)
		goto out_errno;
out_serve:
	m = calloc(1, sizeof(*m));
	if (!m) {
		close(fd);
		return -ENOMEM;
	}
	m->ev.fd = fd;
	m->ev.handle = listener_event;
	m->clients.max = DP_METRICS_CLIENTS_MAX;
	m->clients.timeout_ms = DP_METRICS_TIMEOUT_MS;
	m->clients.goodbye = "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n"
			     "Connection: close\r\n\r\n";
	p->metrics = m;
	return dp_plane_watch(p, &m->ev, EPOLLIN);
out_errno:
	r = -errno; /* before snprintf and close can change it */
	snprintf(err, errlen, "metrics %s: %s", addr, strerror(-r));
	if (fd >= 0)
		close(fd);
	return r;
}

static void metrics_expire(struct dp_plane *p, uint64_t now_ms)
{
	unsigned n;

	if (!p->metrics)
		return;
	n = dp_streams_expire(&p->metrics->clients, now_ms);
	if (n)
		log_debug("metrics: closed %u connection%s stalled for %u s", n, n == 1 ? "" : "s",
			  DP_METRICS_TIMEOUT_MS / 1000);
}

int dp_metrics_listen_fd(const struct dp_plane *p)
{
	return p->metrics ? p->metrics->ev.fd : -1;
}

void dp_metrics_stop(struct dp_plane *p)
{
	if (p->metrics)
		dp_plane_unwatch_close(p, &p->metrics->ev);
}

static void metrics_close(struct dp_plane *p)
{
	struct dp_metrics *m = p->metrics;

	if (!m)
		return;
	while (m->clients.head)
		dp_stream_drop(&m->clients, m->clients.head);
	if (m->ev.fd >= 0)
		close(m->ev.fd);
	free(m);
	p->metrics = NULL;
}
