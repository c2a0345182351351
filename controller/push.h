/* push.h - the controller's side of the dataplane's control socket: apply the desired listeners. */
#ifndef CTRL_PUSH_H
#define CTRL_PUSH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "controller/core/reconcile.h"

#define CTRL_PUSH_TIMEOUT_MS 10000   /* an apply of 1,000 listeners is parsed in milliseconds */
#define CTRL_PUSH_PING_MS 20000      /* the dataplane drops a client silent for 60 s */
#define CTRL_PUSH_RETRY_MS 100       /* reconnect attempts while the dataplane is away */
#define CTRL_PUSH_RESERVED_MAX 1024

struct ctrl_push {
	char path[108];
	int fd;                       /* -1 while not connected */
	uint64_t version;             /* of the next apply */
	char *last_sent;              /* the listeners of the last accepted apply, as JSON text */
	bool fresh;                   /* send the next apply even if unchanged: a new
				       * connection, a resync, or failed binds to retry */
	uint64_t last_io_ms;
	uint64_t retry_at_ms;
	/* The dataplane's answer to the last apply. */
	bool applied;                 /* an apply was accepted since the connection was made */
	char *apply_error;            /* the whole apply was refused, or NULL */
	char **failed_names;          /* listeners it could not bind ... */
	char **failed_errors;         /* ... and why */
	size_t n_failed;
	/* Ports of the dataplane's own file listeners (a managed listener there is refused). */
	struct ctrl_port_proto reserved[CTRL_PUSH_RESERVED_MAX];
	size_t n_reserved;
	uint64_t applies_ok, applies_failed, connects;
};

void ctrl_push_init(struct ctrl_push *p, const char *path);
void ctrl_push_free(struct ctrl_push *p);

/*
 * Connect (and read the dataplane's status: its applied version, its own listeners) unless
 * connected.  1 when a new connection was made (the state must be sent again), 0 when
 * already connected, -errno when the dataplane cannot be reached.
 */
int ctrl_push_connect(struct ctrl_push *p, uint64_t now_ms);
/* Forget the connection (the dataplane closed it, or a call failed). */
void ctrl_push_disconnect(struct ctrl_push *p);
/* The connection has something to read: a connected dataplane says nothing unasked, so
 * that is its end.  Returns true when it was closed. */
bool ctrl_push_readable(struct ctrl_push *p);
/* Keep an idle connection open. */
int ctrl_push_ping(struct ctrl_push *p, uint64_t now_ms);

/*
 * Send listeners (not consumed) as the whole managed set, unless it is what the dataplane
 * already has.  1 applied (p->failed_* say which listeners could not be bound), 0 unchanged,
 * -EINVAL refused (p->apply_error says why), other -errno: the connection failed.
 */
int ctrl_push_apply(struct ctrl_push *p, const cJSON *listeners, uint64_t now_ms);

#endif
