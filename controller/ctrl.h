/* ctrl.h - the controller: caches, the reconcile loop, the dataplane push, status and the Lease. */
#ifndef CTRL_CTRL_H
#define CTRL_CTRL_H

#include <stdbool.h>
#include <stdint.h>

#include "controller/core/debounce.h"
#include "controller/core/kubeconfig.h"
#include "controller/core/leader.h"
#include "controller/core/reconcile.h"
#include "controller/httpd.h"
#include "controller/informer.h"
#include "controller/push.h"

struct ctrl_options {
	const char *kubeconfig;       /* NULL = KUBECONFIG, in-cluster, ~/.kube/config */
	const char *context;
	const char *node_name;        /* NODE_NAME */
	const char *socket;           /* the dataplane's control socket */
	const char *listen_host;      /* what managed listeners bind, default 0.0.0.0 */
	const char *http_addr;        /* /healthz, /readyz, /metrics; NULL = off */
	const char *lease_name;
	const char *lease_ns;
	const char *identity;         /* the Lease holder identity (pod name) */
	bool leader_elect;
	bool use_endpoints;           /* core/v1 Endpoints instead of EndpointSlices */
	unsigned debounce_ms;         /* quiet spell before an apply */
	unsigned debounce_max_ms;     /* the longest a change waits while others keep coming */
	unsigned resync_s;
	const struct ctrl_port_range *denied; /* --deny-ports */
	size_t n_denied;
};

enum ctrl_inf {
	CTRL_INF_LBS = 0,
	CTRL_INF_SERVICES,
	CTRL_INF_SLICES,
	CTRL_INF_NODES,
	CTRL_INF_COUNT,
};

struct ctrl {
	struct ctrl_options opt;
	struct k8s_config cfg;
	struct k8s_client *kc;
	struct k8s_informer inf[CTRL_INF_COUNT];
	struct ctrl_push push;
	struct ctrl_httpd httpd;
	struct ctrl_debounce debounce; /* when cache changes are reconciled */
	uint64_t next_resync_ms;
	bool status_dirty;            /* status needs another look once writes in flight end */
	unsigned status_inflight;
	uint64_t status_retry_ms;     /* a status write failed: look again then (0 = none) */
	uint64_t status_backoff_ms;   /* the pause before that look: doubles while rounds fail */
	struct lb_episode status_episode; /* status writes failing, logged once */
	struct lb_episode event_episode;  /* Events failing, logged once */
	/* leader election */
	struct ctrl_leader leader;
	bool lease_busy;
	bool stopping;                /* lease_release runs: renewals start no more writes */
	uint64_t next_lease_ms;
	/* figures for /metrics */
	uint64_t reconciles, reconcile_us_total, reconcile_us_last;
	uint64_t next_bind_retry_ms;
	uint64_t failures_hash;       /* the bind failures last logged */
	uint64_t node_writes, summary_writes, status_write_errors, events_sent, leader_transitions;
	volatile int stop;
};

int ctrl_init(struct ctrl *c, const struct ctrl_options *opt, char *err, size_t errlen);
/* Run until ctrl_stop: 0, or -errno on a fatal error. */
int ctrl_run(struct ctrl *c);
void ctrl_stop(struct ctrl *c);
void ctrl_free(struct ctrl *c);

#endif
