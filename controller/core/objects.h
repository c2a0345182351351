/* objects.h - the Kubernetes objects the controller reads, copied out of their JSON into small structs. */
#ifndef K8S_OBJECTS_H
#define K8S_OBJECTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "common/config.h"

#define K8S_NAME_MAX 254  /* a DNS subdomain (253) and its NUL */
#define K8S_LABEL_MAX 64  /* a DNS label or port name (63) and its NUL */
#define K8S_IP_MAX 46     /* INET6_ADDRSTRLEN */

enum k8s_kind {
	K8S_KIND_LOADBALANCER = 0,
	K8S_KIND_SERVICE,
	K8S_KIND_ENDPOINTSLICE,
	K8S_KIND_ENDPOINTS, /* core/v1, for clusters without EndpointSlices: mapped to a slice */
	K8S_KIND_NODE,
	K8S_KIND_COUNT,
};

enum k8s_proto {
	K8S_PROTO_TCP = 0,
	K8S_PROTO_UDP,
	K8S_PROTO_SCTP,
};

struct k8s_meta {
	char ns[K8S_LABEL_MAX];  /* "" for cluster-scoped objects */
	char name[K8S_NAME_MAX];
	char uid[40];
	char rv[32];             /* resourceVersion: opaque, only echoed and compared for equality */
	int64_t generation;
	int64_t created;         /* creationTimestamp, seconds since the epoch */
};

struct k8s_label {
	char *key;
	char *value;
};

enum k8s_sel_op {
	K8S_SEL_IN = 0,
	K8S_SEL_NOT_IN,
	K8S_SEL_EXISTS,
	K8S_SEL_DOES_NOT_EXIST,
};

struct k8s_sel_req {
	char *key;
	enum k8s_sel_op op;
	char **values;
	size_t n_values;
};

/* A metav1.LabelSelector; an empty one matches everything. */
struct k8s_selector {
	struct k8s_label *labels;
	size_t n_labels;
	struct k8s_sel_req *exprs;
	size_t n_exprs;
};

struct k8s_lb_listener {
	char name[K8S_LABEL_MAX];
	enum k8s_proto protocol;
	uint16_t port;
	char svc[K8S_LABEL_MAX];
	uint16_t svc_port;             /* the Service port by number, or 0 ... */
	char svc_port_name[K8S_LABEL_MAX]; /* ... by name */
	/* UDP only (listeners[].udp): what a flow is, since a datagram has no end of its own. */
	unsigned responses;            /* replies after which a flow ends; 0 = only when idle */
	unsigned max_flows;            /* flows per dataplane worker; 0 = the dataplane's default */
	unsigned udp_idle_timeout_s;   /* a flow with no datagram either way this long ends */
};

#define K8S_UDP_IDLE_TIMEOUT_S 30     /* the CRD's default, the dataplane's too (30000 ms) */

struct k8s_lb {
	/* NULL, or why the spec cannot be used: the schema should have refused it, but an
	 * object written before a stricter CRD, or by a server without the schema, still gets a
	 * clear status instead of being half-applied. */
	char *invalid;
	struct k8s_selector node_selector;
	enum lb_algo algorithm;
	bool health;
	unsigned period_s, timeout_s, healthy, unhealthy;
	unsigned health_port;          /* healthCheck.port: 0 = each listener's own endpoint port */
	unsigned connect_timeout_s, idle_timeout_s;
	unsigned max_connections;      /* 0 = the dataplane's default */
	enum lb_proxy_protocol proxy;
	bool use_terminating;
	struct k8s_lb_listener *listeners;
	size_t n_listeners;
	cJSON *status;                 /* the status as last read (detached copy), or NULL */
};

/* A port of a Service, or of an EndpointSlice (which carries the Service port's name). */
struct k8s_port {
	char name[K8S_LABEL_MAX];      /* "" for a single unnamed port */
	enum k8s_proto protocol;
	uint16_t port;                 /* in a slice, 0 = no port (every port of the Service) */
};

struct k8s_service {
	struct k8s_port *ports;
	size_t n_ports;
};

struct k8s_endpoint {
	char addr[K8S_IP_MAX];
	bool ready;                    /* nil reads as true (the API's rule) */
	bool serving;                  /* nil reads as ready */
	bool terminating;              /* nil reads as false */
};

struct k8s_slice {
	char service[K8S_LABEL_MAX];   /* label kubernetes.io/service-name ("" = none: ignored) */
	int family;                    /* AF_INET or AF_INET6; 0 for FQDN slices (ignored) */
	struct k8s_port *ports;
	size_t n_ports;
	struct k8s_endpoint *eps;
	size_t n_eps;
};

struct k8s_node_addr {
	char type[16];                 /* InternalIP, ExternalIP, Hostname ... */
	char addr[K8S_NAME_MAX];
};

struct k8s_node {
	struct k8s_label *labels;
	size_t n_labels;
	struct k8s_node_addr *addrs;
	size_t n_addrs;
};

struct k8s_obj {
	enum k8s_kind kind;
	struct k8s_meta meta;
	union {
		struct k8s_lb lb;
		struct k8s_service svc;
		struct k8s_slice slice;
		struct k8s_node node;
	};
};

const char *k8s_kind_name(enum k8s_kind k);
const char *k8s_proto_name(enum k8s_proto p);

/*
 * Copy an object of the given kind out of its JSON (a list item or a watch event's object).
 * Only metadata problems (no name, a name too long to be a key) are errors: -EINVAL with err
 * naming the field.  A LoadBalancer whose spec cannot be used is returned with lb.invalid set.
 */
int k8s_obj_from_json(enum k8s_kind kind, const cJSON *json, struct k8s_obj **ret, char *err,
		      size_t errlen);
void k8s_obj_free(struct k8s_obj *o);

/* metadata.resourceVersion of any object (bookmarks carry only that), or NULL. */
const char *k8s_json_rv(const cJSON *obj);

/* "ns/name" (or "name" when cluster-scoped) into buf; the cache's key. */
void k8s_obj_key(const struct k8s_meta *m, char *buf, size_t len);

/* Does the selector select an object with these labels? */
bool k8s_selector_matches(const struct k8s_selector *s, const struct k8s_label *labels,
			  size_t n_labels);

/* RFC 3339 time ("2026-12-07T05:11:10Z", fractions and offsets allowed) to epoch seconds. */
int k8s_time_parse(const char *s, int64_t *ret);
/* Epoch seconds as "2026-12-07T05:11:10Z" into buf (at least 21 bytes). */
void k8s_time_format(int64_t t, char *buf, size_t len);

#endif
