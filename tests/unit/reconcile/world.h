/* world.h - the reconcile tests' caches, filled from JSON as an informer fills them. */
#ifndef TEST_WORLD_H
#define TEST_WORLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "controller/core/objects.h"
#include "controller/core/reconcile.h"
#include "controller/core/store.h"

struct world {
	struct k8s_store lbs, svcs, slices, nodes;
	struct ctrl_port_proto reserved[8];
	size_t n_reserved;
	struct ctrl_port_range denied[4];
	size_t n_denied;
	const char *listen_host;
};

/*
 * JSON written with single quotes (no value here holds one), printf-style: parsed as the API
 * server's JSON and copied out with k8s_obj_from_json, which must succeed.
 */
struct k8s_obj *obj_json(enum k8s_kind kind, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* The same, returning k8s_obj_from_json's result; *ret is NULL on failure. */
int obj_parse(enum k8s_kind kind, struct k8s_obj **ret, char *err, size_t errlen,
	      const char *fmt, ...) __attribute__((format(printf, 5, 6)));

void world_init(struct world *w);
void world_free(struct world *w);

/* A Service in ns with spec.ports = ports (a JSON list, single-quoted). */
void put_svc(struct world *w, const char *ns, const char *name, const char *ports);
/* An EndpointSlice of Service svc ("" = no service label); family "IPv4", "IPv6", "FQDN". */
void put_slice(struct world *w, const char *ns, const char *name, const char *svc,
	       const char *family, const char *ports, const char *endpoints);
/* A LoadBalancer; spec is the JSON object of spec; created is its creationTimestamp. */
void put_lb(struct world *w, const char *ns, const char *name, const char *created,
	    const char *spec);
/* A LoadBalancer with extra top-level members (e.g. ",'status':{...}") and a generation. */
void put_lb_full(struct world *w, const char *ns, const char *name, const char *created,
		 int64_t generation, const char *spec, const char *extra);
/* A Node with these labels (a JSON object) and addresses (a JSON list). */
struct k8s_obj *put_node(struct world *w, const char *name, const char *labels,
			 const char *addresses);

/* Reconcile for node (may be NULL); must succeed. */
struct ctrl_desired *world_reconcile(const struct world *w, const struct k8s_obj *node,
				     bool backends);

const struct ctrl_listener *find_listener(const struct ctrl_desired *d, const char *name);
const struct ctrl_lb_result *find_lb(const struct ctrl_desired *d, const char *key);
/* The listener's backends as "a,b,c" into buf. */
const char *backends_str(const struct ctrl_listener *l, char *buf, size_t len);
/* ctrl_desired_json printed unformatted (free it). */
char *desired_text(const struct ctrl_desired *d, const char *listen_host);

/* A listener entry for spec.listeners: name, port, Service, Service port (quoted or not). */
#define LISTENER(name, port, svc, svc_port)                                                        \
	"{'name':'" name "','port':" #port ",'backend':{'serviceRef':{'name':'" svc "','port':"    \
	svc_port "}}}"
/* A spec with these listeners only. */
#define SPEC(listeners) "{'listeners':[" listeners "]}"

int run_objects_tests(void);
int run_store_tests(void);
int run_reconcile_tests(void);

#endif
