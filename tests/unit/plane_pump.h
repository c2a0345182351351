/* plane_pump.h - unit-test helper: run one pass of the main thread's epoll loop by hand. */
#ifndef LB_TEST_PLANE_PUMP_H
#define LB_TEST_PLANE_PUMP_H

#include <sys/epoll.h>

#include "dataplane/plane.h"

/* One pass without waiting: every ready source handled once.  Returns how many were ready. */
static inline int plane_pump(struct dp_plane *p)
{
	struct epoll_event evs[128];
	int n = epoll_wait(p->epfd, evs, 128, 0);

	assert_true(n >= 0);
	for (int i = 0; i < n; i++) {
		struct dp_evsrc *src = evs[i].data.ptr;

		src->handle(p, src, evs[i].events);
	}
	return n;
}

#endif
