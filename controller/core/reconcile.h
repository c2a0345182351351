/* reconcile.h - cached objects in, the dataplane's desired listeners and each LoadBalancer's verdict out. */
#ifndef CTRL_RECONCILE_H
#define CTRL_RECONCILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "common/addr.h"
#include "common/config.h"
#include "controller/core/objects.h"
#include "controller/core/store.h"

#define CTRL_KEY_MAX (K8S_LABEL_MAX + K8S_NAME_MAX + 1) /* "namespace/name" */
#define CTRL_MSG_MAX 1024

/* A port and its protocol ("53/UDP"): a TCP and a UDP listener may share a port number. */
struct ctrl_port_proto {
	uint16_t port;
	enum k8s_proto protocol;
};

/* Ports lo..hi (a single port: lo == hi). */
struct ctrl_port_range {
	uint16_t lo, hi;
};

/* What reconcile reads.  Nothing here is changed, and nothing is kept after it returns. */
struct ctrl_input {
	const struct k8s_store *lbs;
	const struct k8s_store *services;
	const struct k8s_store *slices;     /* EndpointSlices, or Endpoints mapped to slices */
	const char *listen_host;            /* the address managed listeners bind: "0.0.0.0" */
	/* Ports this node's dataplane serves from its own file ("80/TCP" ...): a managed
	 * listener there would be refused as a whole apply, so it is reported instead. */
	const struct ctrl_port_proto *reserved_ports;
	size_t n_reserved;
	/* Ports no LoadBalancer may take on any node (--deny-ports: ssh, the kubelet, etcd ...). */
	const struct ctrl_port_range *denied;
	size_t n_denied;
};

struct ctrl_backend {
	char addr[LB_ADDR_STRLEN];          /* "10.0.0.1:80", "[fd00::1]:80" */
};

/* One listener of one LoadBalancer as this node's dataplane should serve it. */
struct ctrl_listener {
	char name[LB_NAME_MAX];             /* "<namespace>/<lb>/<listener>" */
	char lb_key[CTRL_KEY_MAX];
	uint16_t port;
	enum k8s_proto protocol;
	const struct k8s_lb *spec;          /* the LoadBalancer's settings (points into the store) */
	const struct k8s_lb_listener *conf; /* the listener's own (UDP) settings, likewise */
	struct ctrl_backend *backends;
	size_t n_backends;
};

enum ctrl_listener_state {
	CTRL_L_SERVED = 0,                  /* in the desired set */
	CTRL_L_NOT_SELECTED,                /* the LoadBalancer does not select this node */
	CTRL_L_CONFLICT,                    /* an older LoadBalancer holds the port here */
	CTRL_L_RESERVED,                    /* the dataplane's own file listens on the port */
	CTRL_L_INVALID,                     /* the LoadBalancer's spec cannot be used */
	CTRL_L_DENIED,                      /* the port is on the deny-list (--deny-ports) */
};

struct ctrl_listener_result {
	enum ctrl_listener_state state;
	char conflict_with[CTRL_KEY_MAX];   /* CTRL_L_CONFLICT: the LoadBalancer holding the port */
	bool resolved;                      /* the Service and its port were found */
	const char *unresolved_reason;      /* "ServiceNotFound" | "PortNotFound" */
	unsigned ready;                     /* distinct ready endpoints */
	unsigned terminating;               /* serving but terminating, not also ready */
};

/* The verdict on one LoadBalancer, in the cache's age order (oldest first). */
struct ctrl_lb_result {
	const struct k8s_obj *lb;           /* points into the store */
	char key[CTRL_KEY_MAX];
	bool selected;                      /* its node selector picks this node */
	struct ctrl_listener_result *listeners; /* one per spec listener (none when invalid) */
};

struct ctrl_desired {
	struct ctrl_listener *listeners;    /* sorted by name */
	size_t n_listeners;
	struct ctrl_lb_result *lbs;
	size_t n_lbs;
};

/*
 * Reconcile for one node (its Node object; NULL when it is not known, and then only
 * LoadBalancers without a node selector select it).  With backends false only selection and
 * port conflicts are worked out (what the Lease holder needs for every other node).
 * 0 or -ENOMEM.  The result points into the stores: use it before they change.
 */
int ctrl_reconcile(const struct ctrl_input *in, const struct k8s_obj *node, bool backends,
		   struct ctrl_desired **ret);
void ctrl_desired_free(struct ctrl_desired *d);

/*
 * "22,2379-2380,10248-10260" (ports 1..65535, ranges LO-HI with LO <= HI; "" for none) into a
 * malloc'd array: 0, or -EINVAL with err naming the item, or -ENOMEM.
 */
int ctrl_port_ranges_parse(const char *s, struct ctrl_port_range **ret, size_t *n, char *err,
			   size_t errlen);

/* The "listeners" list of the apply that makes the dataplane serve d (NULL without memory). */
cJSON *ctrl_desired_json(const struct ctrl_desired *d, const char *listen_host);

/* Does the LoadBalancer select the node (NULL node: only an empty selector does)? */
bool ctrl_lb_selects(const struct k8s_lb *lb, const struct k8s_obj *node);

/* "80/TCP,443/TCP" for the printer column. */
void ctrl_lb_ports(const struct k8s_lb *lb, char *buf, size_t len);

#endif
