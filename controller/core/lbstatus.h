/* lbstatus.h - a LoadBalancer's status: this node's entry, and the Lease holder's summary of all. */
#ifndef CTRL_LBSTATUS_H
#define CTRL_LBSTATUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "controller/core/reconcile.h"

/* What this node's dataplane made of the listeners of one LoadBalancer. */
struct ctrl_node_report {
	const char *node;             /* this node's name */
	const struct k8s_obj *node_obj; /* for its addresses; may be NULL */
	const char *apply_error;      /* the dataplane refused the whole apply, or NULL */
	/* Listener names ("ns/lb/listener") the dataplane could not bind, with the reasons. */
	const char *const *failed_names;
	const char *const *failed_errors;
	size_t n_failed;
};

/*
 * This node's entry of status.nodes for a LoadBalancer it serves (lr->selected), built from
 * the reconcile result and the dataplane's answer; NULL without memory.
 */
cJSON *ctrl_node_entry(const struct ctrl_lb_result *lr, const struct ctrl_node_report *rep);
/* The entry this node last wrote for lb (status.nodes[name == node]), or NULL. */
const cJSON *ctrl_node_entry_current(const struct k8s_obj *lb, const char *node);
/* Does the current entry already say what entry says? */
bool ctrl_node_entry_same(const cJSON *current, const cJSON *entry);

/* The Lease holder's view of one LoadBalancer over every node. */
struct ctrl_lb_agg {
	unsigned nodes_selected;
	bool conflict;
	char conflict_msg[CTRL_MSG_MAX];
};

/* Fold one node's reconcile (selection and conflicts) into agg, one agg per d->lbs[i]. */
void ctrl_agg_add(struct ctrl_lb_agg *agg, const struct ctrl_desired *d,
		  const struct k8s_obj *node);

/*
 * The summary part of the status (observedGeneration, conditions, listeners, addresses,
 * ports) for lr with agg, as the Lease holder writes it; times of conditions whose status did
 * not change are kept from the current status.  *ret_events gets a JSON array of
 * {"type","reason","message"} for conditions that turned False, or changed reason or message
 * while False, for reasons a user must act on (not the passing Pending, NoNodes,
 * NotProgrammed, NoReadyEndpoints).
 */
cJSON *ctrl_lb_summary(const struct ctrl_lb_result *lr, const struct ctrl_lb_agg *agg,
		       const char *now_rfc3339, cJSON **ret_events);
/* Does the current status already hold summary's fields with the same values? */
bool ctrl_lb_summary_same(const struct k8s_obj *lb, const cJSON *summary);

#endif
