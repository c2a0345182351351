/*
 * httpd.c - the controller's /healthz, /readyz and /metrics: a tiny HTTP/1.0 server in the
 * main loop.  Non-blocking: a request is read as it comes, answered in one write (the
 * answers are small) and the connection closed; a client that sends no whole request within
 * 5 s is dropped, and at most 16 are served at once, so a scraper cannot stall the watches.
 */
#include "controller/httpd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/addr.h"

int ctrl_httpd_open(struct ctrl_httpd *h, const char *addr, ctrl_httpd_route route, void *arg,
		    char *err, size_t errlen)
{
	struct lb_addr a;
	int one = 1, r;

	*h = (struct ctrl_httpd){ .lfd = -1, .route = route, .arg = arg };
	for (int i = 0; i < CTRL_HTTPD_CLIENTS; i++)
		h->cl[i].fd = -1;
	if (lb_addr_parse(addr, false, &a, err, errlen))
		return -EINVAL;
	h->lfd = socket(a.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (h->lfd == -1)
		goto out_errno;
	setsockopt(h->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/*
	 * During an upgrade with the dataplane's handover the node's old and new pod run side by
	 * side on the host network: the new controller must be able to listen too (the same uid:
	 * SO_REUSEPORT lets no other user's process in).
	 */
	setsockopt(h->lfd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (bind(h->lfd, (struct sockaddr *)&a.ss, a.len) == -1 || listen(h->lfd, 64) == -1)
		goto out_errno;
	return 0;
out_errno:
	r = -errno;
	snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(-r));
	if (h->lfd >= 0)
		close(h->lfd);
	h->lfd = -1;
	return r;
}

unsigned ctrl_httpd_fds(const struct ctrl_httpd *h, struct curl_waitfd *fds)
{
	unsigned n = 0;

	if (h->lfd < 0)
		return 0;
	fds[n++] = (struct curl_waitfd){ .fd = h->lfd, .events = CURL_WAIT_POLLIN };
	for (int i = 0; i < CTRL_HTTPD_CLIENTS; i++)
		if (h->cl[i].fd >= 0)
			fds[n++] = (struct curl_waitfd){ .fd = h->cl[i].fd,
							 .events = CURL_WAIT_POLLIN };
	return n;
}

static void drop(struct ctrl_httpd_client *c)
{
	close(c->fd);
	c->fd = -1;
}

static void respond(struct ctrl_httpd *h, struct ctrl_httpd_client *c)
{
	char path[256] = "", head[256], *body = NULL;
	int status, n;

	if (sscanf(c->buf, "GET %255s ", path) != 1) {
		status = 405;
	} else {
		char *q = strchr(path, '?');

		if (q)
			*q = 0;
		status = h->route(h->arg, path, &body);
	}
	n = snprintf(head, sizeof(head),
		     "HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
		     "Connection: close\r\n\r\n",
		     status, status == 200 ? "OK" : status == 404 ? "Not Found" : "Error",
		     !strcmp(path, "/metrics") ? "text/plain; version=0.0.4" : "text/plain",
		     body ? strlen(body) : 0);
	/* Small answers on a fresh socket: its send buffer takes them whole. */
	if (send(c->fd, head, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT | (body ? MSG_MORE : 0)) ==
		    n &&
	    body)
		(void)!send(c->fd, body, strlen(body), MSG_NOSIGNAL | MSG_DONTWAIT);
	free(body);
	drop(c);
}

static void client_read(struct ctrl_httpd *h, struct ctrl_httpd_client *c)
{
	ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, MSG_DONTWAIT);

	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		drop(c);
		return;
	}
	c->len += (size_t)n;
	c->buf[c->len] = 0;
	if (strstr(c->buf, "\r\n\r\n") || strstr(c->buf, "\n\n"))
		respond(h, c);
	else if (c->len == sizeof(c->buf) - 1)
		drop(c); /* no request line and headers that long */
}

void ctrl_httpd_serve(struct ctrl_httpd *h, const struct curl_waitfd *fds, unsigned n,
		      uint64_t now_ms)
{
	for (unsigned k = 0; k < n; k++) {
		if (!fds[k].revents)
			continue;
		if (fds[k].fd == h->lfd) {
			int fd;

			while ((fd = accept4(h->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
				int i;

				for (i = 0; i < CTRL_HTTPD_CLIENTS && h->cl[i].fd >= 0; i++)
					;
				if (i == CTRL_HTTPD_CLIENTS) {
					close(fd);
					continue;
				}
				h->cl[i] = (struct ctrl_httpd_client){
					.fd = fd, .deadline_ms = now_ms + CTRL_HTTPD_DEADLINE_MS };
			}
			continue;
		}
		for (int i = 0; i < CTRL_HTTPD_CLIENTS; i++)
			if (h->cl[i].fd == fds[k].fd) {
				client_read(h, &h->cl[i]);
				break;
			}
	}
	for (int i = 0; i < CTRL_HTTPD_CLIENTS; i++)
		if (h->cl[i].fd >= 0 && now_ms > h->cl[i].deadline_ms)
			drop(&h->cl[i]);
}

void ctrl_httpd_close(struct ctrl_httpd *h)
{
	for (int i = 0; i < CTRL_HTTPD_CLIENTS; i++)
		if (h->cl[i].fd >= 0)
			drop(&h->cl[i]);
	if (h->lfd >= 0)
		close(h->lfd);
	h->lfd = -1;
}
