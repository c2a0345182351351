/* informer.h - list, then watch, one kind of object into a cache, as client-go's reflector does. */
#ifndef K8S_INFORMER_H
#define K8S_INFORMER_H

#include <stdbool.h>
#include <stdint.h>

#include "common/episode.h"
#include "controller/core/objects.h"
#include "controller/core/store.h"
#include "controller/core/watchdec.h"
#include "controller/kclient.h"

#define K8S_LIST_LIMIT 500
#define K8S_BACKOFF_INITIAL_MS 800u   /* client-go's reflector: 800 ms doubling to 30 s */
#define K8S_BACKOFF_MAX_MS 30000u
#define K8S_WATCH_HEALTHY_MS 5000u    /* a watch open this long ends a run of failures */

enum k8s_informer_state {
	K8S_INF_IDLE = 0,
	K8S_INF_LISTING,
	K8S_INF_WATCHING,
	K8S_INF_BACKOFF,
};

struct k8s_informer;
/*
 * The cache changed (an event, or a relist that replaced it).  status_only: a LoadBalancer's
 * MODIFIED event that left metadata.generation as it was, so only its status changed (the API
 * server counts spec changes in the generation of a resource with a status subresource).
 */
typedef void (*k8s_informer_cb)(void *arg, struct k8s_informer *inf, bool status_only);

struct k8s_informer {
	const char *name;             /* "loadbalancers", for logs and metrics */
	enum k8s_kind kind;
	struct k8s_client *kc;
	char path[256];               /* the collection: "/api/v1/services" */
	char query[512];              /* extra escaped query ("labelSelector=..."), or "" */
	struct k8s_store store;       /* the cache: what reconcile reads */
	struct k8s_store next;        /* a relist being built */
	char rv[32];                  /* the last resourceVersion seen */
	bool synced;                  /* a list has completed since start */
	bool fresh;                   /* the next list reads from etcd (rv ""), after an expiry */
	enum k8s_informer_state state;
	struct k8s_req *req;
	char *cont;                   /* the list's continue token */
	struct k8s_watchdec dec;
	int dec_err;                  /* why the decoder stopped a watch */
	char dec_msg[256];
	uint64_t backoff_ms;
	uint64_t retry_at_ms;
	uint64_t watch_start_ms;
	uint64_t open_ms;             /* when the API server took the current watch (0: not yet) */
	bool retry_relist;            /* what the backoff ends in: a list, or a watch */
	struct lb_episode episode;    /* failures since the last success, logged once */
	k8s_informer_cb on_change;
	void *arg;
	/* counters, for metrics */
	uint64_t lists, relists_expired, watches, watch_errors, events, decode_errors;
};

int k8s_informer_init(struct k8s_informer *inf, struct k8s_client *kc, enum k8s_kind kind,
		      const char *name, const char *path, const char *query, k8s_informer_cb cb,
		      void *arg);
/* Start the first list (resourceVersion 0: served from the API server's watch cache). */
void k8s_informer_start(struct k8s_informer *inf);
/* Run timers (backoff); returns the next time it needs a call, or UINT64_MAX. */
uint64_t k8s_informer_tick(struct k8s_informer *inf, uint64_t now_ms);
void k8s_informer_free(struct k8s_informer *inf);

/* Monotonic milliseconds, the clock of every controller timer. */
uint64_t k8s_now_ms(void);

#endif
