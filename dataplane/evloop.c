/*
 * evloop.c - the main thread's event sources and servers (evloop.h): watched, paused and
 * resumed here, and asked through their struct dp_service, so that the loop (plane.c) never
 * calls into the servers (control.c, metrics.c, handover.c) that call it.
 */
#include <assert.h>
#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "common/log.h"
#include "dataplane/evloop.h"
#include "dataplane/worker.h"

int dp_plane_watch(struct dp_plane *p, struct dp_evsrc *src, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = src };

	return epoll_ctl(p->epfd, EPOLL_CTL_ADD, src->fd, &ev) == -1 ? -errno : 0;
}

int dp_plane_rewatch(struct dp_plane *p, struct dp_evsrc *src, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = src };

	return epoll_ctl(p->epfd, EPOLL_CTL_MOD, src->fd, &ev) == -1 ? -errno : 0;
}

/*
 * Stop listening on a main-thread server socket (control, metrics) at a handover: out of the
 * epoll set and closed, but not freed: an event for it may still be in this turn's batch, and
 * its clients are served to the end.
 */
void dp_plane_unwatch_close(struct dp_plane *p, struct dp_evsrc *src)
{
	if (src->fd < 0)
		return;
	epoll_ctl(p->epfd, EPOLL_CTL_DEL, src->fd, NULL);
	close(src->fd);
	src->fd = -1;
}

/*
 * A level-triggered listener whose accept fails with EMFILE would wake the loop at once, for
 * ever: leave it out of the epoll set for one tick instead (the pending connection waits).
 */
void dp_plane_pause(struct dp_plane *p, struct dp_evsrc *src)
{
	if (p->n_paused == sizeof(p->paused) / sizeof(p->paused[0]))
		return;
	epoll_ctl(p->epfd, EPOLL_CTL_DEL, src->fd, NULL);
	p->paused[p->n_paused++] = src;
	p->resume_ms = dp_now_ms() + DP_PLANE_TICK_MS;
}

void dp_plane_resume_paused(struct dp_plane *p)
{
	struct dp_evsrc *again[sizeof(p->paused) / sizeof(p->paused[0])];
	unsigned n = 0;
	int r;

	if (!p->n_paused || dp_now_ms() < p->resume_ms)
		return;
	while (p->n_paused) {
		struct dp_evsrc *src = p->paused[--p->n_paused];

		/* Not added back (ENOMEM): it would never be heard from again; next tick. */
		if ((r = dp_plane_watch(p, src, EPOLLIN))) {
			log_warn("cannot watch a paused listener again: %s; retrying", strerror(-r));
			again[n++] = src;
		}
	}
	while (n)
		p->paused[p->n_paused++] = again[--n];
	if (p->n_paused)
		p->resume_ms = dp_now_ms() + DP_PLANE_TICK_MS;
}

void dp_plane_serve(struct dp_plane *p, const struct dp_service *svc)
{
	for (unsigned i = 0; i < p->n_services; i++)
		if (p->services[i] == svc)
			return;
	/* One of each kind: the array holds them all. */
	assert(p->n_services < sizeof(p->services) / sizeof(p->services[0]));
	p->services[p->n_services++] = svc;
}

void dp_plane_expire_clients(struct dp_plane *p, uint64_t now_ms)
{
	for (unsigned i = 0; i < p->n_services; i++)
		if (p->services[i]->expire)
			p->services[i]->expire(p, now_ms);
}

bool dp_plane_busy(const struct dp_plane *p)
{
	for (unsigned i = 0; i < p->n_services; i++)
		if (p->services[i]->busy && p->services[i]->busy(p))
			return true;
	return false;
}

void dp_plane_close_services(struct dp_plane *p)
{
	for (unsigned i = 0; i < p->n_services; i++)
		p->services[i]->close(p);
	p->n_services = 0;
}
