/*
 * evloop.h - the main thread's event sources and servers (evloop.c): what control.c,
 * metrics.c, handover.c and stream.c need of the loop, and what the loop needs of them.
 */
#ifndef DP_EVLOOP_H
#define DP_EVLOOP_H

#include <stdbool.h>
#include <stdint.h>

#include "dataplane/plane.h"

int dp_plane_watch(struct dp_plane *p, struct dp_evsrc *src, uint32_t events);
int dp_plane_rewatch(struct dp_plane *p, struct dp_evsrc *src, uint32_t events);
void dp_plane_unwatch_close(struct dp_plane *p, struct dp_evsrc *src);
/* Out of file descriptors: take a listening socket out of the loop for a moment. */
void dp_plane_pause(struct dp_plane *p, struct dp_evsrc *src);
/* Watch the paused ones again once their moment is over (each tick). */
void dp_plane_resume_paused(struct dp_plane *p);

/* Register a server (once; at most four). */
void dp_plane_serve(struct dp_plane *p, const struct dp_service *svc);
void dp_plane_expire_clients(struct dp_plane *p, uint64_t now_ms);
/* True while some server says a change must wait (a successor taking our sockets over). */
bool dp_plane_busy(const struct dp_plane *p);
/* Close every server, in the order they were registered. */
void dp_plane_close_services(struct dp_plane *p);

#endif
