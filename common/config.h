/* config.h - the dataplane configuration (lb.yaml): types, loading and validation. */
#ifndef LB_CONFIG_H
#define LB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "common/addr.h"
#include "common/log.h"
#include "common/proxyproto.h"

#define LB_NAME_MAX 256 /* room for a Kubernetes "namespace/name/listener": 63+1+63+1+63 */
#define LB_PATH_MAX 108 /* sizeof(sun_path) */
#define LB_LISTENERS_MAX 1024 /* listeners in one configuration */
#define LB_BACKENDS_MAX 4096  /* backends in one listener */
#define LB_CONFIG_BACKENDS_MAX 262144 /* backends in all the listeners of one configuration */
#define LB_UDP_IDLE_TIMEOUT_MS 30000 /* a udp listener's default idle_timeout_ms */

enum lb_algo {
	LB_ALGO_ROUND_ROBIN = 0, /* smooth weighted round robin (nginx's) */
	LB_ALGO_LEAST_CONN,      /* fewest active connections, weighted */
	LB_ALGO_RANDOM_TWO,      /* power of two random choices, by active/weight */
	LB_ALGO_MAGLEV,          /* consistent hash of the client IP */
};

enum lb_protocol {
	LB_PROTO_TCP = 0,
	LB_PROTO_UDP,
};

enum lb_io_engine {
	LB_ENGINE_AUTO = 0,
	LB_ENGINE_IO_URING,
	LB_ENGINE_EPOLL,
};

const char *lb_algo_name(enum lb_algo a);
const char *lb_engine_name(enum lb_io_engine e);
const char *lb_proxy_protocol_name(enum lb_proxy_protocol v);
const char *lb_protocol_name(enum lb_protocol p);

struct lb_backend_conf {
	struct lb_addr addr;
	char addr_str[LB_ADDR_STRLEN];
	unsigned weight; /* 1..256, default 1 */
};

struct lb_health_conf {
	bool enabled;         /* true when the health_check block is present */
	unsigned interval_ms; /* default 2000 */
	unsigned timeout_ms;  /* default 1000, must be < interval */
	unsigned rise;        /* default 2 */
	unsigned fall;        /* default 3 */
	unsigned port;        /* a TCP port of the backend's to connect to, 0 = its own port; a
				 udp listener's checks need one */
};

struct lb_listener_conf {
	char name[LB_NAME_MAX];
	struct lb_addr listen;
	char listen_str[LB_ADDR_STRLEN];
	enum lb_protocol protocol;         /* default tcp */
	enum lb_algo algorithm;            /* default round_robin */
	struct lb_backend_conf *backends;  /* at least one in the file; an apply's may have none */
	size_t n_backends;
	struct lb_health_conf health;
	unsigned connect_timeout_ms;       /* default 3000 */
	unsigned idle_timeout_ms;          /* default 300000; a udp flow's, default 30000 */
	unsigned max_connections;          /* per listener, whole process; default 100000 */
	unsigned connect_retries;          /* other backends tried after a failed connect; default 2 */
	unsigned max_fails;                /* passive health: consecutive connect failures; default 3 */
	unsigned fail_timeout_ms;          /* passive health: time out of rotation; default 10000 */
	enum lb_proxy_protocol proxy_protocol; /* header to backends; default off */
	/* udp only */
	unsigned responses;                /* replies after which a flow closes; 0 (default) none */
	unsigned max_flows;                /* flows per worker; past it the least recent goes */
	int line;                          /* line of the listener in the file, for messages */
	bool managed;                      /* came from the control socket, not the file */
};

struct lb_config {
	char path[LB_PATH_MAX * 4];        /* file it came from ("" for a string) */
	unsigned acceptors;                /* 0 = auto */
	bool log_level_set;
	enum lb_log_level log_level;       /* default info */
	char control_socket[LB_PATH_MAX];  /* "" = none */
	char control_socket_group[LB_NAME_MAX]; /* "" = socket mode 0600, else 0660 and this group */
	char handover_socket[LB_PATH_MAX]; /* "" = none: a new process may take over from here */
	char binder_socket[LB_PATH_MAX];   /* "" = none: who binds ports below 1024 for us */
	bool reuseport_overlap;            /* join another process's listeners: set by the
					      dataplane's --reuseport-overlap, never by a file */
	char metrics[LB_ADDR_STRLEN];      /* "" = none */
	enum lb_io_engine io_engine;       /* default auto */
	unsigned drain_timeout_ms;         /* SIGTERM drain limit, default 30000 */
	unsigned buffer_size;              /* provided buffer size, default 524288, 4096..1048576, power of 2 */
	unsigned buffer_count;             /* per worker, default 512, power of 2, 64..32768 */
	struct lb_listener_conf *listeners;
	size_t n_listeners;
};

/*
 * Parse and validate a whole configuration.  On failure returns -EINVAL (or -errno for
 * I/O), sets nothing, and writes "<file>:<line>: <what is wrong>" to err.
 */
int lb_config_load(const char *path, struct lb_config **ret, char *err, size_t errlen);

/*
 * "0" or decimal digits without a leading zero, at most max: 0, -EINVAL (not such a number)
 * or -ERANGE.  The one integer syntax of the configuration, the control protocol and ctl.
 */
int lb_parse_decimal(const char *s, uint64_t max, uint64_t *ret);
/*
 * A configuration (or apply) file's whole text, NUL-terminated, in one malloc'd buffer: a
 * regular file of at most 16 MiB.  On failure err says "cannot read <path>: <why>".
 */
int lb_config_read_file(const char *path, char **ret, size_t *ret_len, char *err, size_t errlen);
/*
 * Only the top-level control_socket of a file ("" when it sets none), for `ctl -c`: read up to
 * that key, so a mistake elsewhere in a file being edited does not stand in the way.
 */
int lb_config_read_control_socket(const char *path, char *ret, size_t len, char *err,
				  size_t errlen);
/* The same from a file's text (name for messages). */
int lb_config_control_socket(const char *text, size_t n, const char *name, char *ret, size_t len,
			     char *err, size_t errlen);
int lb_config_parse(const char *text, size_t len, const char *name, struct lb_config **ret,
		    char *err, size_t errlen);
void lb_config_free(struct lb_config *c);

/*
 * The listeners of an apply: the same keys and checks as the file's listeners, nothing else at
 * the top level, and an empty list is valid, as is a listener with "backends: []" (bound, but
 * every connection is closed at once: a Service with no ready endpoints).  Every listener is
 * marked managed.
 */
int lb_config_parse_listeners(const char *text, size_t len, const char *name,
			      struct lb_config **ret, char *err, size_t errlen);
/* The same from the "listeners" list of a control request, without printing it as text. */
int lb_config_parse_listeners_json(const cJSON *listeners, const char *name,
				   struct lb_config **ret, char *err, size_t errlen);

/*
 * The configuration in force: the file's settings and listeners, with managed listeners added
 * and replacing file listeners of the same name.  -EINVAL when two listeners would share an
 * address (err says which).
 */
int lb_config_merge(const struct lb_config *file, const struct lb_config *managed,
		    struct lb_config **ret, char *err, size_t errlen);

/*
 * The line (1-based) and text ("YAML syntax error: ...") of a libyaml parser's error, for
 * every parser of YAML in the project; -ENOMEM when libyaml ran out of memory.
 */
struct yaml_parser_s;
int lb_yaml_problem(const struct yaml_parser_s *yp, const char *text, size_t len, char *msg,
		    size_t msglen);

/* What an apply changes, for its reply and the log. */
struct lb_config_diff {
	unsigned listeners_added, listeners_removed, listeners_changed, listeners_unchanged;
	unsigned backends_added, backends_removed;
};

void lb_config_diff(const struct lb_config *old, const struct lb_config *new,
		    struct lb_config_diff *ret);

#endif
