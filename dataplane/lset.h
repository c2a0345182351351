/*
 * lset.h - a worker's balancer set for one listener of one snapshot (struct dp_lset in dp.h),
 * shared by the worker while it is current and by each of its connections.
 */
#ifndef DP_LSET_H
#define DP_LSET_H

#include "dataplane/dp.h"

/* Drop a reference; the last one frees the set and its snapshot reference. */
void dp_lset_put(struct dp_lset *set);

#endif
