/* lset.c - the reference count of a worker's balancer set for one listener (lset.h). */
#include <stdlib.h>

#include "dataplane/lset.h"
#include "dataplane/snapshot.h"

/*
 * Here and not in worker.c: a connection drops its reference when it ends, and the connection
 * state machine (conn.c) must not call back into the worker that drives it.
 */
void dp_lset_put(struct dp_lset *set)
{
	if (!set || --set->refs)
		return;
	dp_list_del(&set->link);
	dp_lb_fini(&set->lb);
	dp_snapshot_put(set->snap);
	free(set);
}
