/* stream.c - buffered non-blocking sockets of the main thread (control and metrics clients). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dataplane/evloop.h"
#include "dataplane/plane.h"
#include "dataplane/worker.h"

/*
 * Read what is there.  Returns 1 when the peer closed, 0 otherwise, -E2BIG when more than
 * `max` bytes are buffered, or -errno.  Input already consumed (before in_off) is dropped
 * first, so a partial line moves to the front once, not once per reply.
 */
int dp_stream_read(struct dp_stream *s, size_t max)
{
	if (s->in_off) {
		memmove(s->in, s->in + s->in_off, s->in_len - s->in_off);
		s->in_len -= s->in_off;
		s->in_off = 0;
	}
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

/* The peer made progress: its deadline moves on. */
void dp_stream_touch(struct dp_stream *s)
{
	s->deadline_ms = dp_now_ms() + s->timeout_ms;
}

/* Send what the socket takes; the rest waits for EPOLLOUT (see dp_stream_update). */
int dp_stream_flush(struct dp_stream *s)
{
	bool moved = false;

	while (s->out_off < s->out_len) {
		ssize_t n = send(s->ev.fd, s->out + s->out_off, s->out_len - s->out_off,
				 MSG_NOSIGNAL);

		if (n > 0) {
			s->out_off += n;
			moved = true;
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN)
			break;
		return -errno;
	}
	if (moved)
		dp_stream_touch(s);
	if (s->out_off == s->out_len)
		s->out_off = s->out_len = 0;
	return 0;
}

/*
 * Watch only for what can make progress.  Level-triggered EPOLLIN stays ready for ever at
 * EOF or while unread bytes wait, so it is dropped once nothing more is to be read (or while
 * the replies are backlogged); EPOLLOUT is wanted only while output waits.
 */
int dp_stream_update(struct dp_plane *p, struct dp_stream *s)
{
	uint32_t want = 0;
	int r;

	if (!s->in_done && !s->close_after && !dp_stream_backlogged(s))
		want |= EPOLLIN;
	if (dp_stream_unsent(s))
		want |= EPOLLOUT;
	if (want == s->watched)
		return 0;
	r = dp_plane_rewatch(p, &s->ev, want);
	if (r)
		return r; /* never woken for what it waits for: the caller drops it */
	s->watched = want;
	return 0;
}

int dp_stream_write(struct dp_stream *s, const char *data, size_t len)
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
	return dp_stream_flush(s);
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
	s->timeout_ms = set->timeout_ms;
	dp_stream_touch(s);
	r = dp_plane_watch(p, &s->ev, EPOLLIN);
	if (r) {
		dp_stream_free(s);
		return r;
	}
	s->watched = EPOLLIN;
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

/*
 * Without deadlines, clients that connect and send nothing (or half a request, or stop
 * reading) would hold every slot of the set for ever and lock everyone else out.  Returns
 * how many were dropped.
 */
unsigned dp_streams_expire(struct dp_streams *set, uint64_t now_ms)
{
	struct dp_stream **pp = &set->head;
	unsigned n = 0;

	while (*pp) {
		struct dp_stream *s = *pp;

		if (s->deadline_ms > now_ms) {
			pp = &s->next;
			continue;
		}
		/* Say why when nothing else is on its way; a peer that stopped reading won't see it. */
		if (set->goodbye && !dp_stream_unsent(s) && !s->close_after &&
		    send(s->ev.fd, set->goodbye, strlen(set->goodbye), MSG_NOSIGNAL | MSG_DONTWAIT) <
			    0) {
			/* Best effort: it is being dropped anyway. */
		}
		*pp = s->next;
		set->n--;
		dp_stream_free(s);
		n++;
	}
	return n;
}
