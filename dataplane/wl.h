/*
 * wl.h - a worker's receive on one listening socket (struct dp_wlistener in dp.h): its end.
 *
 * A tcp listener's wlistener is done when its accept has ended.  A udp listener's socket also
 * carries the replies of its flows, so it lives on, receiving nothing, until the last flow
 * and the last reply in flight are gone (wl->users).
 */
#ifndef DP_WL_H
#define DP_WL_H

#include "dataplane/dp.h"

/* Free wl, whose receive has ended, unless something still uses its socket. */
void dp_wl_release(struct dp_worker *w, struct dp_wlistener *wl);
/* One user fewer: a stopped wl goes with its last one. */
void dp_wl_unuse(struct dp_worker *w, struct dp_wlistener *wl);

#endif
