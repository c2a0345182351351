/* wl.c - the end of a worker's receive on one listening socket (wl.h). */
#include <stdlib.h>
#include <unistd.h>

#include "dataplane/lset.h"
#include "dataplane/snapshot.h"
#include "dataplane/wl.h"

void dp_wl_release(struct dp_worker *w, struct dp_wlistener *wl)
{
	if (wl->users)
		return; /* the last user's dp_wl_unuse comes back here */
	/* Our receive has ended, so the socket can go; the other workers' are theirs. */
	close(wl->fd);
	wl->socks->fds[wl->sock] = -1;
	dp_lsocks_put(wl->socks);
	dp_lset_put(wl->set);
	dp_lset_put(wl->late);
	w->wls[wl->idx] = NULL;
	free(wl);
}

void dp_wl_unuse(struct dp_worker *w, struct dp_wlistener *wl)
{
	if (--wl->users == 0 && !wl->set && !(wl->flags & DP_WL_ARMED))
		dp_wl_release(w, wl);
}
