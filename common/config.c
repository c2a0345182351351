/* config.c - lb.yaml into struct lb_config: one table of keys per scope, all validated. */
#include "common/config.h"
#include "common/jsonyaml.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

/*
 * libyaml's document API gives a node tree with a mark (line) on every node.  Each mapping
 * (top level, listener, backend, health_check) is read by parse_scope() against a table of
 * rows {key, type, offset, min, max, default}, as nginx reads its directives: defaults come
 * from the table, unknown and duplicate keys are refused, and each type has one setter.
 * The first error stops the parse; its message names the file, the line and the key path
 * ("listeners[0].backends[1].weight") so a reader can go straight to it.
 */

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define CONF_FILE_MAX (16u << 20) /* more than any sane config: a wrong file, not a config */
#define CONF_KEYS_MAX 20          /* rows in the largest table */
#define KEYPATH_MAX 256
#define QUOTE_MAX 72

enum conf_type {
	CT_UINT,      /* decimal integer in [min, max] */
	CT_POW2,      /* CT_UINT that is also a power of two */
	CT_AUTO_UINT, /* "auto" (stored as 0) or CT_UINT */
	CT_ENUM,      /* one of names[], stored as its index in an int-sized enum */
	CT_NAME,      /* [A-Za-z0-9_.-]{1,LB_NAME_MAX-1} into char[LB_NAME_MAX] */
	CT_PATH,      /* absolute path shorter than max bytes, into char[max] */
	CT_ADDR,      /* ip:port: struct lb_addr at off (unless KF_NO_ADDR), text at str_off */
	CT_MAPPING,   /* nested scope: table sub read into obj + off */
	CT_LISTENERS, /* the top-level listeners sequence */
	CT_BACKENDS,  /* a listener's backends sequence */
	CT_NTYPES
};

enum {
	KF_REQUIRED = 1 << 0, /* a missing key is an error */
	KF_MARK = 1 << 1,     /* presence sets the bool at mark_off */
	KF_NO_ADDR = 1 << 2,  /* CT_ADDR: only the canonical text is stored */
	KF_BACKEND = 1 << 3,  /* CT_ADDR: connected to, not bound (see lb_addr_check_use) */
};

struct parser;
struct scope;

struct conf_table {
	const struct conf_key *keys;
	size_t n;
	/* Checks across keys of one mapping, once it is read. */
	int (*check)(struct parser *p, void *obj, const struct scope *s, const char *path);
};

struct conf_key {
	const char *key;
	enum conf_type type;
	unsigned flags;
	size_t off;
	unsigned long min, max, def;
	size_t str_off;               /* CT_ADDR: canonical "ip:port" text */
	size_t mark_off;              /* KF_MARK */
	const char *const *names;     /* CT_ENUM, NULL-terminated, in enum order */
	const struct conf_table *sub; /* CT_MAPPING */
};

/* One mapping being read: where it starts and the line of each key seen (0 = absent). */
struct scope {
	int line;
	int key_line[CONF_KEYS_MAX];
};

struct parser {
	yaml_document_t *doc;
	const char *name; /* file name for messages */
	char *err;
	size_t errlen;
	/*
	 * The listeners of an apply: "listeners: []" is valid (it removes every managed one), and
	 * so is "backends: []" (the port stays bound, and owned, while there is nothing to send to).
	 */
	bool apply;
	size_t backends;  /* read so far, in all listeners, against LB_CONFIG_BACKENDS_MAX */
	int empty_listeners_line; /* the line of "listeners: []" in a file, else 0 */
};

static int check_health(struct parser *p, void *obj, const struct scope *s, const char *path);
static int check_listener(struct parser *p, void *obj, const struct scope *s, const char *path);

_Static_assert(sizeof(enum lb_algo) == sizeof(int), "CT_ENUM stores an int");
_Static_assert(sizeof(enum lb_io_engine) == sizeof(int), "CT_ENUM stores an int");
_Static_assert(sizeof(enum lb_log_level) == sizeof(int), "CT_ENUM stores an int");
_Static_assert(sizeof(enum lb_proxy_protocol) == sizeof(int), "CT_ENUM stores an int");
_Static_assert(sizeof(enum lb_protocol) == sizeof(int), "CT_ENUM stores an int");

/* Enum names, in the order of their enum's values. */
static const char *const log_level_names[] = { "error", "warn", "info", "debug", NULL };
static const char *const algo_names[] = { "round_robin", "least_conn", "random_two", "maglev",
					  NULL };
static const char *const engine_names[] = { "auto", "io_uring", "epoll", NULL };
static const char *const proxy_protocol_names[] = { "off", "v1", "v2", NULL };
static const char *const protocol_names[] = { "tcp", "udp", NULL };

#define UINT_KEY(k, o, lo, hi, d)                                                                  \
	{ .key = k, .type = CT_UINT, .off = o, .min = lo, .max = hi, .def = d }
#define POW2_KEY(k, o, lo, hi, d)                                                                  \
	{ .key = k, .type = CT_POW2, .off = o, .min = lo, .max = hi, .def = d }
#define TOP(f) offsetof(struct lb_config, f)
#define LSN(f) offsetof(struct lb_listener_conf, f)
#define BKD(f) offsetof(struct lb_backend_conf, f)
#define HLT(f) offsetof(struct lb_health_conf, f)

static const struct conf_key health_keys[] = {
	UINT_KEY("interval_ms", HLT(interval_ms), 100, 3600000, 2000),
	UINT_KEY("timeout_ms", HLT(timeout_ms), 10, 3600000, 1000),
	UINT_KEY("rise", HLT(rise), 1, 100, 2),
	UINT_KEY("fall", HLT(fall), 1, 100, 3),
	UINT_KEY("port", HLT(port), 1, 65535, 0),
};
static const struct conf_table health_table = { health_keys, ARRAY_SIZE(health_keys),
						check_health };

static const struct conf_key backend_keys[] = {
	{ .key = "address", .type = CT_ADDR, .flags = KF_REQUIRED | KF_BACKEND, .off = BKD(addr),
	  .str_off = BKD(addr_str) },
	UINT_KEY("weight", BKD(weight), 1, 256, 1),
};
static const struct conf_table backend_table = { backend_keys, ARRAY_SIZE(backend_keys), NULL };

static const struct conf_key listener_keys[] = {
	{ .key = "name", .type = CT_NAME, .flags = KF_REQUIRED, .off = LSN(name) },
	{ .key = "listen", .type = CT_ADDR, .flags = KF_REQUIRED, .off = LSN(listen),
	  .str_off = LSN(listen_str) },
	{ .key = "protocol", .type = CT_ENUM, .off = LSN(protocol), .def = LB_PROTO_TCP,
	  .names = protocol_names },
	{ .key = "algorithm", .type = CT_ENUM, .off = LSN(algorithm), .def = LB_ALGO_ROUND_ROBIN,
	  .names = algo_names },
	{ .key = "backends", .type = CT_BACKENDS, .flags = KF_REQUIRED },
	{ .key = "health_check", .type = CT_MAPPING, .flags = KF_MARK, .off = LSN(health),
	  .mark_off = LSN(health.enabled), .sub = &health_table },
	UINT_KEY("connect_timeout_ms", LSN(connect_timeout_ms), 1, 600000, 3000),
	UINT_KEY("idle_timeout_ms", LSN(idle_timeout_ms), 1, 86400000, 300000),
	UINT_KEY("max_connections", LSN(max_connections), 1, 10000000, 100000),
	UINT_KEY("connect_retries", LSN(connect_retries), 0, 16, 2),
	UINT_KEY("max_fails", LSN(max_fails), 0, 1000, 3), /* 0: passive health off */
	UINT_KEY("fail_timeout_ms", LSN(fail_timeout_ms), 100, 3600000, 10000),
	{ .key = "proxy_protocol", .type = CT_ENUM, .off = LSN(proxy_protocol),
	  .def = LB_PROXY_OFF, .names = proxy_protocol_names },
	UINT_KEY("responses", LSN(responses), 0, 1000000, 0),
	UINT_KEY("max_flows", LSN(max_flows), 1, 1000000, 16384),
};
static const struct conf_table listener_table = { listener_keys, ARRAY_SIZE(listener_keys),
						  check_listener };

static const struct conf_key top_keys[] = {
	/* 0 means auto: the CPUs this process may use (see cpus.h). */
	{ .key = "acceptors", .type = CT_AUTO_UINT, .off = TOP(acceptors), .min = 1, .max = 1024,
	  .def = 0 },
	{ .key = "log_level", .type = CT_ENUM, .flags = KF_MARK, .off = TOP(log_level),
	  .def = LB_LOG_INFO, .mark_off = TOP(log_level_set), .names = log_level_names },
	{ .key = "control_socket", .type = CT_PATH, .off = TOP(control_socket),
	  .max = LB_PATH_MAX },
	{ .key = "control_socket_group", .type = CT_NAME, .off = TOP(control_socket_group) },
	{ .key = "handover_socket", .type = CT_PATH, .off = TOP(handover_socket),
	  .max = LB_PATH_MAX },
	{ .key = "binder_socket", .type = CT_PATH, .off = TOP(binder_socket),
	  .max = LB_PATH_MAX },
	{ .key = "metrics", .type = CT_ADDR, .flags = KF_NO_ADDR, .str_off = TOP(metrics) },
	{ .key = "io_engine", .type = CT_ENUM, .off = TOP(io_engine), .def = LB_ENGINE_AUTO,
	  .names = engine_names },
	UINT_KEY("drain_timeout_ms", TOP(drain_timeout_ms), 0, 3600000, 30000),
	POW2_KEY("buffer_size", TOP(buffer_size), 4096, 1048576, 524288),
	POW2_KEY("buffer_count", TOP(buffer_count), 64, 32768, 512),
	/* Required unless control_socket is set: see config_parse. */
	{ .key = "listeners", .type = CT_LISTENERS },
};
static const struct conf_table top_table = { top_keys, ARRAY_SIZE(top_keys), NULL };

/* An apply over the control socket carries listeners only: it cannot resize the process. */
static const struct conf_key apply_keys[] = {
	{ .key = "listeners", .type = CT_LISTENERS, .flags = KF_REQUIRED },
};
static const struct conf_table apply_table = { apply_keys, ARRAY_SIZE(apply_keys), NULL };

_Static_assert(ARRAY_SIZE(listener_keys) <= CONF_KEYS_MAX, "grow CONF_KEYS_MAX");
_Static_assert(ARRAY_SIZE(top_keys) <= CONF_KEYS_MAX, "grow CONF_KEYS_MAX");

const char *lb_algo_name(enum lb_algo a)
{
	return (unsigned)a < ARRAY_SIZE(algo_names) - 1 ? algo_names[a] : "?";
}

const char *lb_engine_name(enum lb_io_engine e)
{
	return (unsigned)e < ARRAY_SIZE(engine_names) - 1 ? engine_names[e] : "?";
}

const char *lb_protocol_name(enum lb_protocol v)
{
	return (unsigned)v < ARRAY_SIZE(protocol_names) - 1 ? protocol_names[v] : "?";
}

const char *lb_proxy_protocol_name(enum lb_proxy_protocol v)
{
	return (unsigned)v < ARRAY_SIZE(proxy_protocol_names) - 1 ? proxy_protocol_names[v] : "?";
}

/* ---- messages ---- */

__attribute__((format(printf, 3, 4))) static int fail(struct parser *p, int line, const char *fmt,
						      ...)
{
	va_list ap;
	int n;

	if (!p->errlen)
		return -EINVAL;
	n = snprintf(p->err, p->errlen, "%s:%d: ", p->name, line);
	if (n >= 0 && (size_t)n < p->errlen) {
		va_start(ap, fmt);
		vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

#ifdef __clang_analyzer__
/* The analyzer does not enter variadic functions: show it that fail() always fails. */
#define fail(...) ((void)fail(__VA_ARGS__), -EINVAL)
#endif

static int fail_nomem(struct parser *p)
{
	if (p->errlen)
		snprintf(p->err, p->errlen, "%s: out of memory", p->name);
	return -ENOMEM;
}

/* A value as the user wrote it, quoted, cut short, with control bytes made harmless for logs. */
static const char *quote(const char *s, char *buf, size_t len)
{
	size_t i = 0, max = len - 5; /* room for the quotes, "..." and NUL */

	buf[i++] = '"';
	for (; *s && i < max; s++)
		buf[i++] = (*s < 0x20 || *s == 0x7f || *s == '"') ? '?' : *s;
	if (*s) {
		memcpy(buf + i, "...", 3);
		i += 3;
	}
	buf[i++] = '"';
	buf[i] = '\0';
	return buf;
}

/* "listeners[0]" + "name" -> "listeners[0].name"; the top level has no prefix. */
static const char *key_path(const char *path, const char *key, char *buf, size_t len)
{
	snprintf(buf, len, "%s%s%s", path, *path ? "." : "", key);
	return buf;
}

/* ---- nodes ---- */

static yaml_node_t *node(struct parser *p, int index)
{
	return yaml_document_get_node(p->doc, index);
}

static int node_line(const yaml_node_t *n)
{
	return (int)n->start_mark.line + 1;
}

static const char *node_text(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

/* "key:" with nothing after it: accepted where an empty mapping is meant. */
static bool node_is_null(const yaml_node_t *n)
{
	static const char *const nulls[] = { "", "~", "null", "Null", "NULL" };

	if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	for (size_t i = 0; i < ARRAY_SIZE(nulls); i++) {
		if (!strcmp(node_text(n), nulls[i]))
			return true;
	}
	return false;
}

static const char *node_kind(const yaml_node_t *n)
{
	if (n->type == YAML_MAPPING_NODE)
		return "a mapping";
	if (n->type == YAML_SEQUENCE_NODE)
		return "a list";
	return node_is_null(n) ? "nothing" : "a single value";
}

static size_t seq_len(const yaml_node_t *n)
{
	return (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
}

/* The text of scalar v, or an error saying what path must be. */
static int scalar(struct parser *p, const yaml_node_t *v, const char *path, const char *what,
		  const char **ret)
{
	if (v->type != YAML_SCALAR_NODE)
		return fail(p, node_line(v), "%s: must be %s, got %s", path, what, node_kind(v));
	if (strlen(node_text(v)) != v->data.scalar.length)
		return fail(p, node_line(v), "%s: must be %s, got a value with a NUL byte", path,
			    what);
	*ret = node_text(v);
	return 0;
}

static int bad_value(struct parser *p, const yaml_node_t *v, const char *path, const char *what)
{
	char q[QUOTE_MAX];

	return fail(p, node_line(v), "%s: must be %s, got %s", path, what,
		    quote(node_text(v), q, sizeof(q)));
}

/* ---- setters, one per type ---- */

/*
 * Decimal digits only: strtoul would take " 5", "+5", "-5" (as a huge number) and "0x5",
 * and YAML 1.1 readers take "010" as octal, so a leading zero is refused as ambiguous.
 */
int lb_parse_decimal(const char *s, uint64_t max, uint64_t *ret)
{
	uint64_t v = 0;

	if (!*s || (s[0] == '0' && s[1]))
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		v = v * 10 + (uint64_t)(*s - '0');
		if (v > max)
			return -ERANGE;
	}
	*ret = v;
	return 0;
}

static int set_uint(struct parser *p, const struct conf_key *k, yaml_node_t *v, void *obj,
		    const char *path)
{
	bool pow2 = k->type == CT_POW2, autok = k->type == CT_AUTO_UINT;
	const char *s;
	char what[96];
	uint64_t n;
	int r;

	snprintf(what, sizeof(what), "%s%s between %lu and %lu", autok ? "\"auto\" or " : "",
		 pow2 ? "a power of two" : "an integer", k->min, k->max);
	r = scalar(p, v, path, what, &s);
	if (r < 0)
		return r;
	if (autok && !strcmp(s, "auto")) {
		n = 0;
	} else if (lb_parse_decimal(s, UINT32_MAX, &n) < 0 || n < k->min || n > k->max ||
		   (pow2 && (n & (n - 1)))) {
		return bad_value(p, v, path, what);
	}
	*(unsigned *)((char *)obj + k->off) = (unsigned)n;
	return 0;
}

static int set_enum(struct parser *p, const struct conf_key *k, yaml_node_t *v, void *obj,
		    const char *path)
{
	char what[128] = "one of ";
	const char *s;
	size_t i;
	int r;

	for (i = 0; k->names[i]; i++) {
		strncat(what, k->names[i], sizeof(what) - strlen(what) - 1);
		if (k->names[i + 1])
			strncat(what, ", ", sizeof(what) - strlen(what) - 1);
	}
	r = scalar(p, v, path, what, &s);
	if (r < 0)
		return r;
	for (i = 0; k->names[i]; i++) {
		if (!strcmp(s, k->names[i])) {
			*(int *)((char *)obj + k->off) = (int)i;
			return 0;
		}
	}
	return bad_value(p, v, path, what);
}

static int set_name(struct parser *p, const struct conf_key *k, yaml_node_t *v, void *obj,
		    const char *path)
{
	static const char what[] = "a name of 1 to 255 characters from A-Z a-z 0-9 _ . - /";
	const char *s;
	size_t len;
	int r;

	_Static_assert(LB_NAME_MAX == 256, "update the message");
	r = scalar(p, v, path, what, &s);
	if (r < 0)
		return r;
	len = strlen(s);
	if (len == 0 || len >= LB_NAME_MAX ||
	    strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-/") != len)
		return bad_value(p, v, path, what);
	memcpy((char *)obj + k->off, s, len + 1);
	return 0;
}

static int set_path(struct parser *p, const struct conf_key *k, yaml_node_t *v, void *obj,
		    const char *path)
{
	const char *s;
	char what[96];
	int r;

	/* max is sizeof(sun_path): a longer path cannot be bound, and must not be cut. */
	snprintf(what, sizeof(what), "an absolute path shorter than %lu bytes", k->max);
	r = scalar(p, v, path, what, &s);
	if (r < 0)
		return r;
	if (s[0] != '/' || strlen(s) >= k->max)
		return bad_value(p, v, path, what);
	memcpy((char *)obj + k->off, s, strlen(s) + 1);
	return 0;
}

static int set_addr(struct parser *p, const struct conf_key *k, yaml_node_t *v, void *obj,
		    const char *path)
{
	char why[128], q[QUOTE_MAX];
	struct lb_addr a;
	const char *s;
	int r;

	r = scalar(p, v, path, "an address ip:port or [ipv6]:port", &s);
	if (r < 0)
		return r;
	if (lb_addr_parse(s, false, &a, why, sizeof(why)) < 0 ||
	    lb_addr_check_use(&a, k->flags & KF_BACKEND ? LB_ADDR_BACKEND : LB_ADDR_LISTEN, why,
			      sizeof(why)) < 0)
		return fail(p, node_line(v), "%s: invalid address %s: %s", path,
			    quote(s, q, sizeof(q)), why);
	if (!(k->flags & KF_NO_ADDR))
		*(struct lb_addr *)((char *)obj + k->off) = a;
	lb_addr_format(&a, (char *)obj + k->str_off, LB_ADDR_STRLEN);
	return 0;
}

static int parse_scope(struct parser *p, const struct conf_table *t, yaml_node_t *map,
		       void *obj, const char *path, struct scope *s);

static int set_mapping(struct parser *p, const struct conf_key *k, yaml_node_t *v, void *obj,
		       const char *path)
{
	struct scope s;

	return parse_scope(p, k->sub, v, (char *)obj + k->off, path, &s);
}

static int scope_line(const struct conf_table *t, const struct scope *s, const char *key)
{
	for (size_t i = 0; i < t->n; i++) {
		if (!strcmp(t->keys[i].key, key))
			return s->key_line[i];
	}
	return 0;
}

static void apply_defaults(const struct conf_table *t, void *obj)
{
	for (size_t i = 0; i < t->n; i++) {
		const struct conf_key *k = &t->keys[i];
		char *field = (char *)obj + k->off;

		switch (k->type) {
		case CT_UINT:
		case CT_POW2:
		case CT_AUTO_UINT:
			*(unsigned *)field = (unsigned)k->def;
			break;
		case CT_ENUM:
			*(int *)field = (int)k->def;
			break;
		case CT_MAPPING:
			apply_defaults(k->sub, field);
			break;
		default:
			break;
		}
	}
}

/* A duplicate would get the same connections twice as often as its weight says. */
static int check_backend_unique(struct parser *p, const struct lb_listener_conf *l,
				struct lb_index *seen, size_t i, const struct scope *s,
				const char *path, const char *seq_path)
{
	long j = lb_index_add(seen, i);

	if (j >= 0)
		return fail(p, scope_line(&backend_table, s, "address"),
			    "%s.address: duplicate backend %s (same as %s[%ld])", path,
			    l->backends[i].addr_str, seq_path, j);
	return 0;
}

static int set_backends(struct parser *p, const struct conf_key *k, yaml_node_t *v, void *obj,
			const char *path)
{
	struct lb_listener_conf *l = obj;
	struct lb_index seen;
	char ipath[KEYPATH_MAX];
	struct scope s;
	size_t i, n;
	int r;

	if (v->type != YAML_SEQUENCE_NODE || (seq_len(v) == 0 && !p->apply))
		return fail(p, node_line(v), "%s: must be a list of %d to %d backends, got %s%s",
			    path, !p->apply, LB_BACKENDS_MAX,
			    v->type == YAML_SEQUENCE_NODE ? "an empty list" : node_kind(v),
			    v->type == YAML_SEQUENCE_NODE
				    ? " (only listeners applied over the control socket may have none)"
				    : "");
	n = seq_len(v);
	if (n > LB_BACKENDS_MAX)
		return fail(p, node_line(v), "%s: must be a list of %d to %d backends, got %zu",
			    path, !p->apply, LB_BACKENDS_MAX, n);
	if (n == 0)
		return 0; /* an apply's listener with nothing to send to: see struct parser */
	/*
	 * YAML aliases let 160 KB of text name 4 million backends (one list, *used by 1,023
	 * listeners); each costs memory in every worker and lines in every status and scrape.
	 * The line is the listener's: an alias's node has the line of its anchor.
	 */
	if (p->backends + n > LB_CONFIG_BACKENDS_MAX)
		return fail(p, l->line,
			    "%s: more than %d backends in all listeners together (a YAML alias "
			    "counts each time it is used)",
			    path, LB_CONFIG_BACKENDS_MAX);
	p->backends += n;
	l->backends = calloc(n, sizeof(*l->backends));
	if (!l->backends ||
	    lb_addr_index_init(&seen, &l->backends[0].addr, sizeof(*l->backends), n))
		return fail_nomem(p);
	l->n_backends = n;
	for (i = 0, r = 0; i < n && r >= 0; i++) {
		yaml_node_t *item = node(p, v->data.sequence.items.start[i]);

		snprintf(ipath, sizeof(ipath), "%s[%zu]", path, i);
		apply_defaults(&backend_table, &l->backends[i]);
		r = parse_scope(p, &backend_table, item, &l->backends[i], ipath, &s);
		if (r >= 0)
			r = check_backend_unique(p, l, &seen, i, &s, ipath, path);
	}
	lb_index_free(&seen);
	return r < 0 ? r : 0;
}

/* Listeners found so far by name and by address, to check each new one in constant time. */
/* Addresses in use, one index per protocol: a tcp and a udp listener may share one (DNS). */
struct proto_overlaps {
	struct lb_addr_overlaps_index v[2];
};

static int proto_overlaps_init(struct proto_overlaps *o, const struct lb_config *c, size_t n)
{
	memset(o, 0, sizeof(*o));
	for (int k = 0; k < 2; k++)
		if (lb_addr_overlaps_init(&o->v[k], &c->listeners[0].listen, sizeof(*c->listeners),
					  n))
			return -ENOMEM;
	return 0;
}

/* As lb_addr_overlaps_add, among the listeners of listener i's protocol. */
static long proto_overlaps_add(struct proto_overlaps *o, const struct lb_config *c, size_t i)
{
	return lb_addr_overlaps_add(&o->v[c->listeners[i].protocol == LB_PROTO_UDP], (uint32_t)i);
}

static void proto_overlaps_free(struct proto_overlaps *o)
{
	for (int k = 0; k < 2; k++)
		lb_addr_overlaps_free(&o->v[k]);
}

struct listener_seen {
	struct lb_index names;
	struct proto_overlaps addrs;
};

static int listener_seen_init(struct listener_seen *seen, const struct lb_config *c, size_t n)
{
	memset(seen, 0, sizeof(*seen));
	if (lb_index_init(&seen->names, c->listeners[0].name, sizeof(*c->listeners), n,
			  lb_index_str_hash, lb_index_str_equal) ||
	    proto_overlaps_init(&seen->addrs, c, n)) {
		lb_index_free(&seen->names);
		proto_overlaps_free(&seen->addrs);
		return -ENOMEM;
	}
	return 0;
}

static void listener_seen_free(struct listener_seen *seen)
{
	lb_index_free(&seen->names);
	proto_overlaps_free(&seen->addrs);
}

/* Two listeners on one address would split its connections between two configurations. */
static int check_listener_unique(struct parser *p, const struct lb_config *c,
				 struct listener_seen *seen, size_t i, const struct scope *s,
				 const char *path)
{
	const struct lb_listener_conf *l = &c->listeners[i], *o;
	long j = lb_index_add(&seen->names, i);

	if (j >= 0) {
		o = &c->listeners[j];
		return fail(p, scope_line(&listener_table, s, "name"),
			    "%s.name: duplicate listener name \"%s\" (also listeners[%ld] at line %d)",
			    path, l->name, j, o->line);
	}
	j = proto_overlaps_add(&seen->addrs, c, i);
	if (j < 0)
		return 0;
	o = &c->listeners[j];
	if (lb_addr_equal(&o->listen, &l->listen))
		return fail(p, scope_line(&listener_table, s, "listen"),
			    "%s.listen: %s is already the address of listener \"%s\" "
			    "(listeners[%ld] at line %d)",
			    path, l->listen_str, o->name, j, o->line);
	return fail(p, scope_line(&listener_table, s, "listen"),
		    "%s.listen: %s overlaps %s of listener \"%s\" (listeners[%ld] at line %d): "
		    "one would take the other's connections",
		    path, l->listen_str, o->listen_str, o->name, j, o->line);
}

static int set_listeners(struct parser *p, const struct conf_key *k, yaml_node_t *v, void *obj,
			 const char *path)
{
	struct lb_config *c = obj;
	struct listener_seen seen;
	char ipath[KEYPATH_MAX];
	struct scope s;
	size_t i, n;
	int r;

	/* An empty list is checked once the whole file is read (config_parse): it is valid
	 * with a control_socket, wherever that key stands. */
	if (v->type != YAML_SEQUENCE_NODE)
		return fail(p, node_line(v), "%s: must be a list of 0 to %d listeners, got %s",
			    path, LB_LISTENERS_MAX, node_kind(v));
	n = seq_len(v);
	if (n == 0) {
		p->empty_listeners_line = node_line(v);
		return 0;
	}
	if (n > LB_LISTENERS_MAX)
		return fail(p, node_line(v), "%s: must be a list of 0 to %d listeners, got %zu",
			    path, LB_LISTENERS_MAX, n);
	c->listeners = calloc(n, sizeof(*c->listeners));
	if (!c->listeners || listener_seen_init(&seen, c, n))
		return fail_nomem(p);
	c->n_listeners = n;
	for (i = 0, r = 0; i < n && r >= 0; i++) {
		yaml_node_t *item = node(p, v->data.sequence.items.start[i]);
		struct lb_listener_conf *l = &c->listeners[i];

		snprintf(ipath, sizeof(ipath), "%s[%zu]", path, i);
		apply_defaults(&listener_table, l);
		l->line = node_line(item);
		r = parse_scope(p, &listener_table, item, l, ipath, &s);
		if (r >= 0)
			r = check_listener_unique(p, c, &seen, i, &s, ipath);
	}
	listener_seen_free(&seen);
	return r < 0 ? r : 0;
}

typedef int (*conf_setter)(struct parser *p, const struct conf_key *k, yaml_node_t *v, void *obj,
			   const char *path);

static const conf_setter setters[CT_NTYPES] = {
	[CT_UINT] = set_uint,         [CT_POW2] = set_uint,           [CT_AUTO_UINT] = set_uint,
	[CT_ENUM] = set_enum,         [CT_NAME] = set_name,           [CT_PATH] = set_path,
	[CT_ADDR] = set_addr,         [CT_MAPPING] = set_mapping,
	[CT_LISTENERS] = set_listeners, [CT_BACKENDS] = set_backends,
};

/* ---- scopes ---- */

/* A timeout as long as the interval would overlap the next probe to the same backend. */
static int check_health(struct parser *p, void *obj, const struct scope *s, const char *path)
{
	const struct lb_health_conf *h = obj;
	int line;

	if (h->timeout_ms < h->interval_ms)
		return 0;
	line = scope_line(&health_table, s, "timeout_ms");
	if (!line)
		line = scope_line(&health_table, s, "interval_ms");
	return fail(p, line ? line : s->line,
		    "%s.timeout_ms: must be less than interval_ms (%u), got %u", path,
		    h->interval_ms, h->timeout_ms);
}

/* Keys that mean something for one protocol only are refused on the other, by name. */
static const struct {
	const char *key;
	enum lb_protocol only;
	const char *instead;
} proto_keys[] = {
	{ "connect_timeout_ms", LB_PROTO_TCP, "a udp flow's socket is connected at once" },
	{ "connect_retries", LB_PROTO_TCP, "a udp flow whose backend fails is opened again on "
					   "the client's next datagram" },
	{ "max_connections", LB_PROTO_TCP, "a udp listener bounds its flows with max_flows" },
	{ "proxy_protocol", LB_PROTO_TCP, "there is no stream to put a header in front of" },
	{ "responses", LB_PROTO_UDP, NULL },
	{ "max_flows", LB_PROTO_UDP, "a tcp listener bounds its connections with "
				     "max_connections" },
};

static int check_listener(struct parser *p, void *obj, const struct scope *s, const char *path)
{
	struct lb_listener_conf *l = obj;

	for (size_t i = 0; i < ARRAY_SIZE(proto_keys); i++) {
		int line = scope_line(&listener_table, s, proto_keys[i].key);

		if (!line || l->protocol == proto_keys[i].only)
			continue;
		return fail(p, line, "%s.%s: only for a %s listener, and this one is %s%s%s", path,
			    proto_keys[i].key, lb_protocol_name(proto_keys[i].only),
			    lb_protocol_name(l->protocol), proto_keys[i].instead ? ": " : "",
			    proto_keys[i].instead ? proto_keys[i].instead : "");
	}
	if (l->protocol != LB_PROTO_UDP)
		return 0;
	/* A datagram flow has no end of its own: a shorter idle time than a TCP connection's. */
	if (!scope_line(&listener_table, s, "idle_timeout_ms"))
		l->idle_timeout_ms = LB_UDP_IDLE_TIMEOUT_MS;
	if (l->health.enabled && !l->health.port)
		return fail(p, scope_line(&listener_table, s, "health_check"),
			    "%s.health_check.port: required for a udp listener: its active check "
			    "is a TCP connect to that port of each backend (a UDP port cannot tell "
			    "an idle server from a dead one)",
			    path);
	return 0;
}

static int unknown_key(struct parser *p, const struct conf_table *t, const yaml_node_t *k,
		       const char *path)
{
	char known[512] = "", q[QUOTE_MAX];

	for (size_t i = 0; i < t->n; i++) {
		strncat(known, t->keys[i].key, sizeof(known) - strlen(known) - 1);
		if (i + 1 < t->n)
			strncat(known, ", ", sizeof(known) - strlen(known) - 1);
	}
	return fail(p, node_line(k), "%s%sunknown key %s (known keys: %s)", path,
		    *path ? ": " : "", quote(node_text(k), q, sizeof(q)), known);
}

static int find_key(const struct conf_table *t, const yaml_node_t *k)
{
	for (size_t i = 0; i < t->n; i++) {
		const char *key = t->keys[i].key;

		if (strlen(key) == k->data.scalar.length && !strcmp(key, node_text(k)))
			return (int)i;
	}
	return -1;
}

static int parse_pair(struct parser *p, const struct conf_table *t, const yaml_node_pair_t *pair,
		      void *obj, const char *path, struct scope *s)
{
	yaml_node_t *k = node(p, pair->key), *v = node(p, pair->value);
	char kpath[KEYPATH_MAX];
	const struct conf_key *row;
	int i, r;

	if (k->type != YAML_SCALAR_NODE)
		return fail(p, node_line(k), "%s%skeys must be plain words, got %s", path,
			    *path ? ": " : "", node_kind(k));
	i = find_key(t, k);
	if (i < 0)
		return unknown_key(p, t, k, path);
	row = &t->keys[i];
	key_path(path, row->key, kpath, sizeof(kpath));
	if (s->key_line[i])
		return fail(p, node_line(k), "%s: duplicate key (first at line %d)", kpath,
			    s->key_line[i]);
	s->key_line[i] = node_line(k);
	r = setters[row->type](p, row, v, obj, kpath);
	if (r < 0)
		return r;
	if (row->flags & KF_MARK)
		*(bool *)((char *)obj + row->mark_off) = true;
	return 0;
}

/* Read one mapping into obj (its defaults already applied) against table t. */
static int parse_scope(struct parser *p, const struct conf_table *t, yaml_node_t *map,
		       void *obj, const char *path, struct scope *s)
{
	yaml_node_pair_t *pair;
	int r;

	memset(s, 0, sizeof(*s));
	s->line = node_line(map);
	if (map->type == YAML_MAPPING_NODE) {
		for (pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top;
		     pair++) {
			r = parse_pair(p, t, pair, obj, path, s);
			if (r < 0)
				return r;
		}
	} else if (!node_is_null(map)) {
		return fail(p, s->line, "%s%s must be a mapping of keys, got %s",
			    *path ? path : "the top level", *path ? ":" : "", node_kind(map));
	}
	for (size_t i = 0; i < t->n; i++) {
		if ((t->keys[i].flags & KF_REQUIRED) && !s->key_line[i])
			return fail(p, s->line, "%s%smissing required key \"%s\"", path,
				    *path ? ": " : "", t->keys[i].key);
	}
	return t->check ? t->check(p, obj, s, path) : 0;
}

/* ---- documents and files ---- */

/* Reader errors (bad UTF-8) carry a byte offset, not a mark. */
static int line_of_offset(const char *text, size_t len, size_t off)
{
	int line = 1;

	for (size_t i = 0; i < off && i < len; i++)
		line += text[i] == '\n';
	return line;
}

int lb_yaml_problem(const struct yaml_parser_s *yp, const char *text, size_t len, char *msg,
		    size_t msglen)
{
	const char *problem = yp->problem ? yp->problem : "unknown error";
	int line;

	if (yp->error == YAML_MEMORY_ERROR)
		return -ENOMEM;
	if (yp->error == YAML_READER_ERROR)
		line = line_of_offset(text, len, yp->problem_offset);
	else
		line = (int)yp->problem_mark.line + 1;
	if (yp->context)
		snprintf(msg, msglen, "YAML syntax error: %s (%s at line %d)", problem,
			 yp->context, (int)yp->context_mark.line + 1);
	else
		snprintf(msg, msglen, "YAML syntax error: %s", problem);
	return line;
}

static int yaml_fail(struct parser *p, const yaml_parser_t *yp, const char *text, size_t len)
{
	char msg[512];
	int line = lb_yaml_problem(yp, text, len, msg, sizeof(msg));

	return line < 0 ? fail_nomem(p) : fail(p, line, "%s", msg);
}

/* Load the first document; a second one is refused, as it would be silently ignored. */
static int load_document(struct parser *p, const char *text, size_t len, yaml_document_t *doc)
{
	yaml_parser_t yp;
	yaml_document_t extra;
	int r = 0;

	if (!yaml_parser_initialize(&yp))
		return fail_nomem(p);
	yaml_parser_set_input_string(&yp, (const unsigned char *)text, len);
	if (!yaml_parser_load(&yp, doc)) {
		r = yaml_fail(p, &yp, text, len);
		goto out_parser;
	}
	if (!yaml_parser_load(&yp, &extra)) {
		r = yaml_fail(p, &yp, text, len);
		goto out_doc;
	}
	if (yaml_document_get_root_node(&extra))
		r = fail(p, (int)extra.start_mark.line + 1,
			 "only one YAML document is allowed in a configuration file");
	yaml_document_delete(&extra);
	if (r < 0)
		goto out_doc;
	goto out_parser;

out_doc:
	yaml_document_delete(doc);
out_parser:
	yaml_parser_delete(&yp);
	return r;
}

/* Reads doc, and deletes it. */
static int parse_doc(struct parser *p, const struct conf_table *top, yaml_document_t *doc,
		     struct lb_config *c)
{
	yaml_node_t *root;
	struct scope s;
	int r;

	p->doc = doc;
	apply_defaults(&top_table, c);
	root = yaml_document_get_root_node(doc);
	if (!root)
		r = fail(p, 1, "the file is empty: missing required key \"listeners\"");
	else
		r = parse_scope(p, top, root, c, "", &s);
	yaml_document_delete(doc);
	p->doc = NULL;
	return r;
}

/*
 * Parse text, or doc when it is not NULL (built by the caller, which gives it up).  Returns 0
 * or a negative errno with err set.
 */
static int config_parse(const struct conf_table *top, const char *text, size_t len,
			yaml_document_t *doc, const char *name, const char *path,
			struct lb_config **ret, char *err, size_t errlen)
{
	struct parser p = { .name = name, .err = err, .errlen = err ? errlen : 0,
			    .apply = top == &apply_table };
	yaml_document_t loaded;
	struct lb_config *c;
	int r;

	const char *nul = !doc && len ? memchr(text, '\0', len) : NULL;

	if (p.errlen)
		err[0] = '\0';
	/* Whatever follows a NUL would be read by some tools and not others: not a text file. */
	if (nul)
		return fail(&p, line_of_offset(text, len, (size_t)(nul - text)),
			    "a NUL byte: the file must be YAML (or JSON) text");
	c = calloc(1, sizeof(*c));
	if (!c) {
		if (doc)
			yaml_document_delete(doc);
		return fail_nomem(&p);
	}
	snprintf(c->path, sizeof(c->path), "%s", path);
	r = doc ? 0 : load_document(&p, text, len, &loaded);
	if (r >= 0)
		r = parse_doc(&p, top, doc ? doc : &loaded, c);
	/*
	 * A dataplane driven by a controller (the Kubernetes pod) has a control socket and no
	 * listeners of its own; without a control socket a file with none would serve nothing.
	 */
	if (r >= 0 && top == &top_table && !c->n_listeners && !c->control_socket[0])
		r = p.empty_listeners_line
			    ? fail(&p, p.empty_listeners_line,
				   "listeners: must be a list of 1 to %d listeners, got an empty list "
				   "(it may be empty only when control_socket is set: the listeners "
				   "then come from applies)", LB_LISTENERS_MAX)
			    : fail(&p, 1, "missing required key \"listeners\" (it may be left out "
					  "only when control_socket is set: the listeners then come "
					  "from applies)");
	if (r < 0)
		goto out_free;
	*ret = c;
	return 0;

out_free:
	lb_config_free(c);
	return r;
}

int lb_config_parse(const char *text, size_t len, const char *name, struct lb_config **ret,
		    char *err, size_t errlen)
{
	return config_parse(&top_table, text, len, NULL, name ? name : "<config>", "", ret, err,
			    errlen);
}

static int parse_listeners(const char *text, size_t len, yaml_document_t *doc,
			   const char *name, struct lb_config **ret, char *err, size_t errlen)
{
	struct lb_config *c;
	int r;

	r = config_parse(&apply_table, text, len, doc, name ? name : "<apply>", "", &c, err,
			 errlen);
	if (r < 0)
		return r;
	for (size_t i = 0; i < c->n_listeners; i++)
		c->listeners[i].managed = true;
	*ret = c;
	return 0;
}

int lb_config_parse_listeners(const char *text, size_t len, const char *name,
			      struct lb_config **ret, char *err, size_t errlen)
{
	return parse_listeners(text, len, NULL, name, ret, err, errlen);
}

int lb_config_parse_listeners_json(const cJSON *listeners, const char *name,
				   struct lb_config **ret, char *err, size_t errlen)
{
	yaml_document_t doc;
	int root, key, v, r;

	name = name ? name : "<apply>";
	if (!yaml_document_initialize(&doc, NULL, NULL, NULL, 1, 1))
		goto out_nomem;
	/* { "listeners": [...] }, the only key an apply's listeners may have. */
	root = yaml_document_add_mapping(&doc, NULL, YAML_FLOW_MAPPING_STYLE);
	key = root ? yaml_document_add_scalar(&doc, NULL, (yaml_char_t *)"listeners", -1,
					      YAML_DOUBLE_QUOTED_SCALAR_STYLE) : 0;
	r = key ? lb_json_to_yaml(listeners, &doc, &v) : -ENOMEM;
	if (!r && !yaml_document_append_mapping_pair(&doc, root, key, v))
		r = -ENOMEM;
	if (r) {
		yaml_document_delete(&doc);
		if (r != -EILSEQ)
			goto out_nomem;
		snprintf(err, errlen, "%s: a key or string that is not valid UTF-8", name);
		return r;
	}
	return parse_listeners(NULL, 0, &doc, name, ret, err, errlen);
out_nomem:
	snprintf(err, errlen, "%s: out of memory", name);
	return -ENOMEM;
}

static int read_fail(const char *path, int r, const char *why, char *err, size_t errlen)
{
	if (err && errlen)
		snprintf(err, errlen, "cannot read %s: %s", path, why ? why : strerror(-r));
	return r;
}

/*
 * The whole file, NUL-terminated (for messages only: parsers are given its length).  Opened
 * without blocking and required to be a regular file: a FIFO put at the config path would
 * otherwise block the main thread in open() on the next SIGHUP, for ever.
 */
int lb_config_read_file(const char *path, char **ret, size_t *ret_len, char *err, size_t errlen)
{
	size_t len = 0, cap = 4096;
	char *buf, *nbuf;
	struct stat st;
	ssize_t n;
	int fd, r;

	if (strlen(path) >= sizeof(((struct lb_config *)NULL)->path))
		return read_fail(path, -ENAMETOOLONG, NULL, err, errlen);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd == -1)
		return read_fail(path, -errno, NULL, err, errlen);
	if (fstat(fd, &st) == -1) {
		r = read_fail(path, -errno, NULL, err, errlen);
		goto out_close;
	}
	if (S_ISDIR(st.st_mode)) {
		r = read_fail(path, -EISDIR, NULL, err, errlen);
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		r = read_fail(path, -EINVAL, "not a regular file", err, errlen);
		goto out_close;
	}
	r = read_fail(path, -ENOMEM, NULL, err, errlen);
	buf = malloc(cap);
	if (!buf)
		goto out_close;
	for (;;) {
		if (len + 1 == cap) {
			r = read_fail(path, -EFBIG, "larger than 16 MiB, not a configuration",
				      err, errlen);
			if (cap >= CONF_FILE_MAX)
				goto out_free;
			r = read_fail(path, -ENOMEM, NULL, err, errlen);
			nbuf = realloc(buf, cap * 2);
			if (!nbuf)
				goto out_free;
			buf = nbuf;
			cap *= 2;
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n == 0)
			break;
		if (n == -1) {
			if (errno == EINTR)
				continue;
			r = read_fail(path, -errno, NULL, err, errlen);
			goto out_free;
		}
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	if (err && errlen)
		err[0] = '\0';
	*ret = buf;
	*ret_len = len;
	return 0;

out_free:
	free(buf);
out_close:
	close(fd);
	return r;
}

int lb_config_load(const char *path, struct lb_config **ret, char *err, size_t errlen)
{
	char *text;
	size_t len;
	int r;

	r = lb_config_read_file(path, &text, &len, err, errlen);
	if (r < 0)
		return r;
	r = config_parse(&top_table, text, len, NULL, path, path, ret, err, errlen);
	free(text);
	return r;
}

/* ---- control_socket alone, for `ctl -c` ---- */

/* The control_socket scalar at the top level, as set_path would take it. */
static int take_socket(struct parser *p, const yaml_event_t *ev, char *ret, size_t len)
{
	static const char what[] = "control_socket: must be an absolute path shorter than 108 "
				   "bytes, got";
	int line = (int)ev->start_mark.line + 1;
	char q[QUOTE_MAX];
	const char *s;

	_Static_assert(LB_PATH_MAX == 108, "update the message");
	if (ev->type == YAML_ALIAS_EVENT)
		return fail(p, line, "%s an alias", what);
	if (ev->type != YAML_SCALAR_EVENT)
		return fail(p, line, "%s a list or mapping", what);
	s = (const char *)ev->data.scalar.value;
	if (s[0] != '/' || strlen(s) >= LB_PATH_MAX || strlen(s) >= len ||
	    strlen(s) != ev->data.scalar.length)
		return fail(p, line, "%s %s", what, quote(s, q, sizeof(q)));
	memcpy(ret, s, strlen(s) + 1);
	return 1;
}

/*
 * One event of the stream: at the top level, keys and values alternate; a nested value is
 * skipped by depth.  Returns 1 once control_socket is read or known to be absent, 0 to go on,
 * or -EINVAL.
 */
static int socket_event(struct parser *p, const yaml_event_t *ev, int *depth, bool *is_key,
			bool *take, char *ret, size_t len)
{
	bool start = ev->type == YAML_MAPPING_START_EVENT || ev->type == YAML_SEQUENCE_START_EVENT;
	bool end = ev->type == YAML_MAPPING_END_EVENT || ev->type == YAML_SEQUENCE_END_EVENT;
	bool item = ev->type == YAML_SCALAR_EVENT || ev->type == YAML_ALIAS_EVENT || start;

	if (*depth == 0) {
		if (ev->type == YAML_MAPPING_START_EVENT)
			*depth = 1;
		return item && !*depth; /* not a mapping at the top: no control_socket */
	}
	if (*depth == 1 && item) {
		if (*take)
			return take_socket(p, ev, ret, len);
		if (*is_key && ev->type == YAML_SCALAR_EVENT)
			*take = !strcmp((const char *)ev->data.scalar.value, "control_socket");
		if (!start)
			*is_key = !*is_key;
	}
	if (start)
		(*depth)++;
	if (end && --(*depth) == 1)
		*is_key = !*is_key; /* a nested value (or key) is over */
	return *depth == 0; /* the end of the top-level mapping */
}

int lb_config_control_socket(const char *text, size_t n, const char *name, char *ret, size_t len,
			     char *err, size_t errlen)
{
	struct parser p = { .name = name, .err = err, .errlen = err ? errlen : 0 };
	bool is_key = true, take = false, done = false;
	yaml_parser_t yp;
	yaml_event_t ev;
	int depth = 0, r = 0;

	ret[0] = '\0';
	if (!yaml_parser_initialize(&yp))
		return fail_nomem(&p);
	yaml_parser_set_input_string(&yp, (const unsigned char *)text, n);
	/* Events up to the key: a mistake further down (a file being edited) does not matter. */
	while (!done && r == 0) {
		if (!yaml_parser_parse(&yp, &ev)) {
			r = yaml_fail(&p, &yp, text, n);
			break;
		}
		done = ev.type == YAML_STREAM_END_EVENT || ev.type == YAML_DOCUMENT_END_EVENT;
		r = socket_event(&p, &ev, &depth, &is_key, &take, ret, len);
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&yp);
	return r < 0 ? r : 0;
}

int lb_config_read_control_socket(const char *path, char *ret, size_t len, char *err,
				  size_t errlen)
{
	size_t n = 0;
	char *text = NULL; /* set on success; the analyzer cannot know -errno is negative */
	int r = lb_config_read_file(path, &text, &n, err, errlen);

	if (r < 0)
		return r;
	r = lb_config_control_socket(text, n, path, ret, len, err, errlen);
	free(text);
	return r;
}

void lb_config_free(struct lb_config *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n_listeners; i++)
		free(c->listeners[i].backends);
	free(c->listeners);
	free(c);
}

static int listener_copy(struct lb_listener_conf *dst, const struct lb_listener_conf *src)
{
	*dst = *src;
	if (!src->n_backends)
		return 0; /* backends stays NULL: nothing to copy from, or to */
	dst->backends = calloc(src->n_backends, sizeof(*dst->backends));
	if (!dst->backends)
		return -ENOMEM;
	memcpy(dst->backends, src->backends, src->n_backends * sizeof(*dst->backends));
	return 0;
}

static const struct lb_listener_conf *listener_named(const struct lb_config *c, const char *name)
{
	for (size_t i = 0; c && i < c->n_listeners; i++)
		if (!strcmp(c->listeners[i].name, name))
			return &c->listeners[i];
	return NULL;
}

/* The listeners in force: file ones not overridden by name, then every managed one. */
static int merge_listeners(struct lb_config *c, const struct lb_config *file,
			   const struct lb_config *managed)
{
	size_t n = managed ? managed->n_listeners : 0;

	c->listeners = calloc(file->n_listeners + n + 1, sizeof(*c->listeners));
	if (!c->listeners)
		return -ENOMEM;
	for (size_t i = 0; i < file->n_listeners; i++) {
		if (listener_named(managed, file->listeners[i].name))
			continue;
		if (listener_copy(&c->listeners[c->n_listeners], &file->listeners[i]))
			return -ENOMEM;
		c->n_listeners++;
	}
	for (size_t i = 0; i < n; i++) {
		if (listener_copy(&c->listeners[c->n_listeners], &managed->listeners[i]))
			return -ENOMEM;
		c->n_listeners++;
	}
	return 0;
}

int lb_config_merge(const struct lb_config *file, const struct lb_config *managed,
		    struct lb_config **ret, char *err, size_t errlen)
{
	struct proto_overlaps seen = { 0 };
	size_t n_backends = 0;
	struct lb_config *c;
	int r;

	c = malloc(sizeof(*c));
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	*c = *file;
	c->listeners = NULL;
	c->n_listeners = 0;
	r = merge_listeners(c, file, managed);
	if (r < 0) {
		snprintf(err, errlen, "out of memory");
		goto out_free;
	}
	for (size_t i = 0; i < c->n_listeners; i++)
		n_backends += c->listeners[i].n_backends;
	if (n_backends > LB_CONFIG_BACKENDS_MAX) {
		snprintf(err, errlen,
			 "the file's and the managed listeners together would have %zu backends, "
			 "more than %d",
			 n_backends, LB_CONFIG_BACKENDS_MAX);
		r = -EINVAL;
		goto out_free;
	}
	if (c->n_listeners && proto_overlaps_init(&seen, c, c->n_listeners)) {
		snprintf(err, errlen, "out of memory");
		r = -ENOMEM;
		goto out_free;
	}
	for (size_t i = 0; i < c->n_listeners; i++) {
		long j = proto_overlaps_add(&seen, c, i);
		const struct lb_listener_conf *a, *b = &c->listeners[i];

		if (j < 0)
			continue;
		a = &c->listeners[j];
		snprintf(err, errlen,
			 "listener \"%s\" would listen on %s, %s %s of %s listener \"%s\"",
			 b->name, b->listen_str,
			 lb_addr_equal(&a->listen, &b->listen) ? "already the address"
							       : "which overlaps",
			 a->listen_str, a->managed ? "managed" : "config file", a->name);
		r = -EINVAL;
		break;
	}
	proto_overlaps_free(&seen);
	if (r)
		goto out_free;
	*ret = c;
	return 0;
out_free:
	lb_config_free(c);
	return r;
}

static bool backends_equal(const struct lb_listener_conf *a, const struct lb_listener_conf *b)
{
	if (a->n_backends != b->n_backends)
		return false;
	for (size_t i = 0; i < a->n_backends; i++)
		if (!lb_addr_equal(&a->backends[i].addr, &b->backends[i].addr) ||
		    a->backends[i].weight != b->backends[i].weight)
			return false;
	return true;
}

/* Same name and every setting alike, backends in the same order with the same weights. */
static bool listener_equal(const struct lb_listener_conf *a, const struct lb_listener_conf *b)
{
	return lb_addr_equal(&a->listen, &b->listen) && a->protocol == b->protocol &&
	       a->algorithm == b->algorithm && a->responses == b->responses &&
	       a->max_flows == b->max_flows &&
	       !memcmp(&a->health, &b->health, sizeof(a->health)) &&
	       a->connect_timeout_ms == b->connect_timeout_ms &&
	       a->idle_timeout_ms == b->idle_timeout_ms &&
	       a->max_connections == b->max_connections &&
	       a->connect_retries == b->connect_retries && a->max_fails == b->max_fails &&
	       a->fail_timeout_ms == b->fail_timeout_ms &&
	       a->proxy_protocol == b->proxy_protocol && backends_equal(a, b);
}

/* Backends of `from` whose address `in` lacks (in may be NULL: all of them). */
static unsigned backends_missing(const struct lb_listener_conf *from,
				 const struct lb_listener_conf *in)
{
	struct lb_index x = { 0 };
	unsigned n = 0;

	if (in && in->n_backends &&
	    lb_addr_index_init(&x, &in->backends[0].addr, sizeof(*in->backends), in->n_backends))
		return 0; /* out of memory: the diff is for messages only */
	for (size_t i = 0; in && i < in->n_backends; i++)
		lb_index_add(&x, i);
	for (size_t j = 0; j < from->n_backends; j++)
		n += lb_index_find(&x, &from->backends[j].addr) < 0;
	lb_index_free(&x);
	return n;
}

/* Backends are matched by address within a listener of the same name. */
/* Listener of c named name, through x when it could be built (else one by one). */
static const struct lb_listener_conf *listener_indexed(const struct lb_config *c,
						       const struct lb_index *x, const char *name)
{
	long i;

	if (!c || !x->slots) /* index_names builds no index for no config */
		return listener_named(c, name);
	i = lb_index_find(x, name);
	return i >= 0 ? &c->listeners[i] : NULL;
}

static void index_names(struct lb_index *x, const struct lb_config *c)
{
	if (!c || !c->n_listeners ||
	    lb_index_init(x, c->listeners[0].name, sizeof(*c->listeners), c->n_listeners,
			  lb_index_str_hash, lb_index_str_equal))
		return; /* out of memory: listener_indexed compares one by one */
	for (size_t i = 0; i < c->n_listeners; i++)
		lb_index_add(x, i);
}

void lb_config_diff(const struct lb_config *old, const struct lb_config *new,
		    struct lb_config_diff *ret)
{
	struct lb_index old_names = { 0 }, new_names = { 0 };

	memset(ret, 0, sizeof(*ret));
	index_names(&old_names, old);
	index_names(&new_names, new);
	for (size_t i = 0; new && i < new->n_listeners; i++) {
		const struct lb_listener_conf *n = &new->listeners[i];
		const struct lb_listener_conf *o = listener_indexed(old, &old_names, n->name);

		if (!o)
			ret->listeners_added++;
		else if (listener_equal(o, n))
			ret->listeners_unchanged++;
		else
			ret->listeners_changed++;
		ret->backends_added += backends_missing(n, o);
	}
	for (size_t i = 0; old && i < old->n_listeners; i++) {
		const struct lb_listener_conf *o = &old->listeners[i];
		const struct lb_listener_conf *n = listener_indexed(new, &new_names, o->name);

		ret->listeners_removed += !n;
		ret->backends_removed += backends_missing(o, n);
	}
	lb_index_free(&old_names);
	lb_index_free(&new_names);
}
