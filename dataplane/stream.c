/* stream.c - buffered non-blocking sockets of the main thread (control and metrics clients). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dataplane/plane.h"

/*
 * Read what is there.  Returns 1 when the peer closed, 0 otherwise, -E2BIG when more than
 * `max` bytes are buffered, or -errno.
 */
int dp_stream_read(struct dp_stream *s, size_t max)
{
	for (;;) {
		ssize_t n;

		if (s->in_len == s->in_cap) {
			size_t cap = s->in_cap ? s->in_cap * 2 : 4096;
			char *in;

			if (s->in_len >= max)
				return -E2BIG;
			if (cap > max + 1)
				cap = max + 1;
			in = realloc(s->in, cap);
			if (!in)
				return -ENOMEM;
			s->in = in;
			s->in_cap = cap;
		}
		n = read(s->ev.fd, s->in + s->in_len, s->in_cap - s->in_len);
		if (n > 0) {
			s->in_len += n;
			continue;
		}
		if (n == 0)
			return 1;
		if (errno == EINTR)
			continue;
		return errno == EAGAIN ? 0 : -errno;
	}
}

int dp_stream_flush(struct dp_plane *p, struct dp_stream *s)
{
	while (s->out_off < s->out_len) {
		ssize_t n = send(s->ev.fd, s->out + s->out_off, s->out_len - s->out_off,
				 MSG_NOSIGNAL);

		if (n > 0) {
			s->out_off += n;
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN) {
			int r = s->want_out ? 0 : dp_plane_rewatch(p, &s->ev, EPOLLIN | EPOLLOUT);

			if (r)
				return r; /* never woken for the rest: drop the client */
			s->want_out = true;
			return 0;
		}
		return -errno;
	}
	s->out_off = s->out_len = 0;
	if (s->want_out && !dp_plane_rewatch(p, &s->ev, EPOLLIN))
		s->want_out = false;
	return 0;
}

int dp_stream_write(struct dp_plane *p, struct dp_stream *s, const char *data, size_t len)
{
	if (s->out_len + len > s->out_cap) {
		size_t cap = s->out_cap ? s->out_cap : 4096;
		char *out;

		while (cap < s->out_len + len)
			cap *= 2;
		out = realloc(s->out, cap);
		if (!out)
			return -ENOMEM;
		s->out = out;
		s->out_cap = cap;
	}
	memcpy(s->out + s->out_len, data, len);
	s->out_len += len;
	return dp_stream_flush(p, s);
}

void dp_stream_free(struct dp_stream *s)
{
	if (!s)
		return;
	if (s->ev.fd >= 0)
		close(s->ev.fd); /* also takes it out of the epoll set */
	free(s->in);
	free(s->out);
	free(s);
}

/* Take an accepted socket as a client of `set`; closes it when the set is full. */
int dp_stream_adopt(struct dp_plane *p, struct dp_streams *set, int fd,
		    void (*handle)(struct dp_plane *, struct dp_evsrc *, uint32_t))
{
	struct dp_stream *s;
	int r;

	if (set->n >= set->max || !(s = calloc(1, sizeof(*s)))) {
		close(fd);
		return -EMFILE;
	}
	s->ev.fd = fd;
	s->ev.handle = handle;
	r = dp_plane_watch(p, &s->ev, EPOLLIN);
	if (r) {
		dp_stream_free(s);
		return r;
	}
	s->next = set->head;
	set->head = s;
	set->n++;
	return 0;
}

/* Unlink a client from its set and free it (its socket leaves the epoll set on close). */
void dp_stream_drop(struct dp_streams *set, struct dp_stream *s)
{
	for (struct dp_stream **pp = &set->head; *pp; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			set->n--;
			break;
		}
	}
	dp_stream_free(s);
}
