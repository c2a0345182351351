/* kubeconfig.c - kubeconfig files (libyaml), in-cluster service accounts, and which one to use. */
#include "controller/core/kubeconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "common/config.h"

/*
 * A kubeconfig is read as client-go reads it, but only as far as one context needs: the
 * context (named, or current-context), then its cluster and its user, each looked up by name
 * in its list.  Entries of other contexts are not checked.  Unknown keys are ignored, since
 * kubeconfigs carry preferences and extensions; an empty or null value counts as unset, as
 * it does in Go.  Credentials this client cannot use (exec and auth-provider plugins, basic
 * auth) are refused by name rather than skipped: skipping them would connect anonymously
 * and fail later with a 401 or 403 that says nothing about why.
 *
 * Every message starts "kubeconfig <file>:<line>: " (or without the line when there is no
 * node to point at) and names the key path ("users[1].user.client-key-data").
 */

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define KC_FILE_MAX (16u << 20) /* the kubeconfig itself */
#define KC_REF_MAX (1u << 20)   /* a certificate, key or token file it names */
#define KC_KEYPATH_MAX 96
#define KC_QUOTE_MAX 72
#define INCLUSTER_DIR "/var/run/secrets/kubernetes.io/serviceaccount"

struct kc_parser {
	yaml_document_t *doc;
	const char *name;     /* the file, for messages */
	const char *base_dir; /* relative paths are taken from here; NULL = working directory */
	char *err;
	size_t errlen;
};

/* One entry of clusters, users or contexts, found by name. */
struct kc_named {
	size_t index;
	int line;          /* of the entry */
	yaml_node_t *body; /* its cluster/user/context mapping; NULL when empty */
	char path[KC_KEYPATH_MAX]; /* "users[1].user" */
};

/* ---- messages ---- */

__attribute__((format(printf, 4, 5))) static int fail(struct kc_parser *p, int r, int line,
						      const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!p->errlen)
		return r;
	if (line > 0)
		n = snprintf(p->err, p->errlen, "kubeconfig %s:%d: ", p->name, line);
	else
		n = snprintf(p->err, p->errlen, "kubeconfig %s: ", p->name);
	if (n >= 0 && (size_t)n < p->errlen) {
		va_start(ap, fmt);
		vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return r;
}

static int fail_nomem(struct kc_parser *p)
{
	return fail(p, -ENOMEM, 0, "out of memory");
}

__attribute__((format(printf, 4, 5))) static int seterr(char *err, size_t errlen, int r,
							const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return r;
}

/* A value as written, quoted and cut short, with control bytes made harmless for logs. */
static const char *quote(const char *s, char *buf, size_t len)
{
	size_t i = 0, max = len - 5; /* room for the quotes, "..." and NUL */

	buf[i++] = '"';
	for (; *s && i < max; s++)
		buf[i++] = ((unsigned char)*s < 0x20 || *s == 0x7f || *s == '"') ? '?' : *s;
	if (*s) {
		memcpy(buf + i, "...", 3);
		i += 3;
	}
	buf[i++] = '"';
	buf[i] = '\0';
	return buf;
}

/* ---- files ---- */

/*
 * A regular file of at most max bytes, NUL-terminated (the length excludes the NUL).
 * Opened without blocking, so a FIFO at a certificate path cannot hang the caller.
 * 0, or -errno: -EFBIG when larger than max, -EINVAL when not a regular file.
 */
static int read_bounded(const char *path, size_t max, char **ret, size_t *ret_len)
{
	size_t len = 0, cap;
	char *buf, *nbuf;
	struct stat st;
	ssize_t n;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd == -1)
		return -errno;
	if (fstat(fd, &st) == -1) {
		r = -errno;
		goto out_close;
	}
	r = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
	if (!S_ISREG(st.st_mode))
		goto out_close;
	r = -EFBIG;
	if ((uint64_t)st.st_size > max)
		goto out_close;
	/* Room for the NUL and one byte more: a file that grew past max is still caught. */
	cap = (size_t)st.st_size + 2;
	r = -ENOMEM;
	buf = malloc(cap);
	if (!buf)
		goto out_close;
	for (;;) {
		if (len + 1 == cap) {
			r = -EFBIG;
			if (len > max)
				goto out_free;
			r = -ENOMEM;
			nbuf = realloc(buf, cap * 2 < max + 2 ? cap * 2 : max + 2);
			if (!nbuf)
				goto out_free;
			buf = nbuf;
			cap = cap * 2 < max + 2 ? cap * 2 : max + 2;
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n == 0)
			break;
		if (n == -1) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto out_free;
		}
		len += (size_t)n;
	}
	r = -EFBIG;
	if (len > max)
		goto out_free;
	close(fd);
	buf[len] = '\0';
	*ret = buf;
	*ret_len = len;
	return 0;

out_free:
	free(buf);
out_close:
	close(fd);
	return r;
}

static const char *read_error(int r)
{
	if (r == -EFBIG)
		return "larger than 1 MiB";
	if (r == -EINVAL)
		return "not a regular file";
	return strerror(-r);
}

/* file as given when absolute (or with no base_dir), else base_dir/file. */
static char *resolve_path(const char *base_dir, const char *file)
{
	char *s;

	if (file[0] == '/' || !base_dir || !*base_dir)
		return strdup(file);
	if (asprintf(&s, "%s/%s", base_dir, file) < 0)
		return NULL;
	return s;
}

/* The directory of path, or NULL (the working directory) when it has none. */
static int dir_of(const char *path, char **ret)
{
	const char *slash = strrchr(path, '/');

	*ret = NULL;
	if (!slash)
		return 0;
	*ret = strndup(path, slash == path ? 1 : (size_t)(slash - path));
	return *ret ? 0 : -ENOMEM;
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/*
 * s without leading and trailing white space, in place (a token file ends with a newline);
 * the bytes left behind are zeroed, so no piece of a token outlives k8s_config_clear.
 */
static size_t trim(char *s, size_t len)
{
	size_t start = 0, end = len;

	while (end > 0 && is_space(s[end - 1]))
		end--;
	while (start < end && is_space(s[start]))
		start++;
	memmove(s, s + start, end - start);
	memset(s + end - start, 0, len - (end - start) + 1);
	return end - start;
}

/* A token goes into an HTTP header: a space or control byte would break or forge headers. */
static bool token_ok(const char *s, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f)
			return false;
	}
	return true;
}

static bool has_pem(const char *s, size_t len)
{
	return memmem(s, len, "-----BEGIN ", 11) != NULL;
}

/* ---- base64 ---- */

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/*
 * Standard base64 (RFC 4648 section 4) with its padding; white space and newlines may come
 * anywhere (certificates are often pasted wrapped).  Anything else is refused: the URL-safe
 * alphabet, missing or extra padding, data after padding.  The result is NUL-terminated.
 * 0 or -EINVAL / -ENOMEM.
 */
static int base64_decode(const char *s, size_t len, char **ret, size_t *ret_len)
{
	unsigned n = 0, pad = 0; /* positions of the current quartet seen, '=' among them */
	uint32_t acc = 0;
	size_t o = 0;
	char *out;
	int v;

	out = malloc(len / 4 * 3 + 4);
	if (!out)
		return -ENOMEM;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (is_space((char)c))
			continue;
		if (pad) {
			/* Only '=' may follow '=', and only up to the end of the quartet. */
			if (c != '=' || n == 4)
				goto out_invalid;
			pad++;
			n++;
			continue;
		}
		if (c == '=') {
			if (n < 2) /* "x===" or "====" cannot end a quartet */
				goto out_invalid;
			pad = 1;
			n++;
			continue;
		}
		v = b64_value(c);
		if (v < 0)
			goto out_invalid;
		acc = acc << 6 | (uint32_t)v;
		if (++n == 4) {
			out[o++] = (char)(acc >> 16);
			out[o++] = (char)(acc >> 8);
			out[o++] = (char)acc;
			n = 0;
			acc = 0;
		}
	}
	if (pad && n != 4)
		goto out_invalid;
	if (!pad && n != 0)
		goto out_invalid;
	if (pad == 2) {
		out[o++] = (char)(acc >> 4); /* 12 bits: one byte */
	} else if (pad == 1) {
		out[o++] = (char)(acc >> 10); /* 18 bits: two bytes */
		out[o++] = (char)(acc >> 2);
	}
	out[o] = '\0';
	*ret = out;
	*ret_len = o;
	return 0;

out_invalid:
	free(out);
	return -EINVAL;
}

/* ---- nodes ---- */

static yaml_node_t *node(struct kc_parser *p, int index)
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

/* Unset as Go sees it: nothing, ~, null, or an empty string. */
static bool node_is_unset(const yaml_node_t *n)
{
	static const char *const nulls[] = { "~", "null", "Null", "NULL" };

	if (n->type != YAML_SCALAR_NODE)
		return false;
	if (n->data.scalar.length == 0)
		return true;
	if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
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
	return "a single value";
}

/*
 * The value of key in mapping map, NULL when absent or unset.  A key given twice is refused:
 * which one a reader takes differs between YAML libraries.
 */
static int map_find(struct kc_parser *p, const yaml_node_t *map, const char *key,
		    const char *path, yaml_node_t **ret, int *ret_key_line)
{
	yaml_node_t *found = NULL, *k;
	int first = 0;

	for (yaml_node_pair_t *pair = map->data.mapping.pairs.start;
	     pair < map->data.mapping.pairs.top; pair++) {
		k = node(p, pair->key);
		if (k->type != YAML_SCALAR_NODE || strlen(key) != k->data.scalar.length ||
		    strcmp(node_text(k), key))
			continue;
		if (first)
			return fail(p, -EINVAL, node_line(k),
				    "%s%s%s: duplicate key (first at line %d)", path,
				    *path ? "." : "", key, first);
		first = node_line(k);
		found = node(p, pair->value);
	}
	*ret = found && !node_is_unset(found) ? found : NULL;
	if (ret_key_line)
		*ret_key_line = first;
	return 0;
}

/* A mapping, or NULL for an unset one; anything else is an error naming path. */
static int as_mapping(struct kc_parser *p, yaml_node_t *v, const char *path, yaml_node_t **ret)
{
	if (v && v->type != YAML_MAPPING_NODE)
		return fail(p, -EINVAL, node_line(v), "%s: must be a mapping, got %s", path,
			    node_kind(v));
	*ret = v;
	return 0;
}

/*
 * The string at map.key: *ret NULL when absent or unset (map itself may be NULL, an empty
 * mapping).  *ret_line is the value's line, for later messages about it.
 */
static int get_string(struct kc_parser *p, const yaml_node_t *map, const char *key,
		      const char *path, const char **ret, int *ret_line)
{
	yaml_node_t *v = NULL;
	int r;

	if (map) {
		r = map_find(p, map, key, path, &v, NULL);
		if (r < 0)
			return r;
	}
	if (v && v->type != YAML_SCALAR_NODE)
		return fail(p, -EINVAL, node_line(v), "%s.%s: must be a string, got %s", path, key,
			    node_kind(v));
	if (v && strlen(node_text(v)) != v->data.scalar.length)
		return fail(p, -EINVAL, node_line(v), "%s.%s: a NUL byte in the value", path, key);
	*ret = v ? node_text(v) : NULL;
	if (ret_line)
		*ret_line = v ? node_line(v) : 0;
	return 0;
}

/* true/false, as YAML writes booleans; absent is false. */
static int get_bool(struct kc_parser *p, const yaml_node_t *map, const char *key,
		    const char *path, bool *ret, int *ret_line)
{
	static const char *const yes[] = { "true", "True", "TRUE" };
	static const char *const no[] = { "false", "False", "FALSE" };
	char q[KC_QUOTE_MAX];
	yaml_node_t *v = NULL;
	int r;

	if (map) {
		r = map_find(p, map, key, path, &v, NULL);
		if (r < 0)
			return r;
	}
	*ret_line = v ? node_line(v) : 0;
	*ret = false;
	if (!v)
		return 0;
	/* A quoted "true" is a string to Go, and a string is not a bool. */
	if (v->type == YAML_SCALAR_NODE && v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
		for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
			if (!strcmp(node_text(v), yes[i])) {
				*ret = true;
				return 0;
			}
			if (!strcmp(node_text(v), no[i]))
				return 0;
		}
	}
	if (v->type != YAML_SCALAR_NODE)
		return fail(p, -EINVAL, node_line(v), "%s.%s: must be true or false, got %s", path,
			    key, node_kind(v));
	return fail(p, -EINVAL, node_line(v), "%s.%s: must be true or false, got %s", path, key,
		    quote(node_text(v), q, sizeof(q)));
}

/* ---- the context, its cluster and its user ---- */

/*
 * The entry of top-level list `list` whose name is want, and its `inner` mapping
 * (clusters[i].cluster).  1 when found, 0 when not, or -errno.  A second entry of the same
 * name is an error, as in client-go: which one is meant cannot be told.
 */
static int find_named(struct kc_parser *p, const yaml_node_t *root, const char *list,
		      const char *inner, const char *want, struct kc_named *ret)
{
	char ipath[48]; /* "contexts[<size_t>]" */
	yaml_node_t *seq, *item, *body;
	const char *name;
	bool found = false;
	size_t n;
	int r;

	r = map_find(p, root, list, "", &seq, NULL);
	if (r < 0 || !seq)
		return r;
	if (seq->type != YAML_SEQUENCE_NODE)
		return fail(p, -EINVAL, node_line(seq), "%s: must be a list, got %s", list,
			    node_kind(seq));
	n = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
	for (size_t i = 0; i < n; i++) {
		item = node(p, seq->data.sequence.items.start[i]);
		snprintf(ipath, sizeof(ipath), "%s[%zu]", list, i);
		if (item->type != YAML_MAPPING_NODE)
			return fail(p, -EINVAL, node_line(item), "%s: must be a mapping, got %s",
				    ipath, node_kind(item));
		r = get_string(p, item, "name", ipath, &name, NULL);
		if (r < 0)
			return r;
		if (!name || strcmp(name, want))
			continue;
		if (found)
			return fail(p, -EINVAL, node_line(item),
				    "%s.name: duplicate name \"%s\" (also %s[%zu])", ipath, want,
				    list, ret->index);
		found = true;
		ret->index = i;
		ret->line = node_line(item);
		snprintf(ret->path, sizeof(ret->path), "%s.%s", ipath, inner);
		r = map_find(p, item, inner, ipath, &body, NULL);
		if (r >= 0)
			r = as_mapping(p, body, ret->path, &ret->body);
		if (r < 0)
			return r;
	}
	return found;
}

static int set_string(struct kc_parser *p, char **field, const char *s)
{
	*field = strdup(s);
	return *field ? 0 : fail_nomem(p);
}

/* "https://host[:port][/path]" or http://, kept without trailing slashes. */
static int set_server(struct kc_parser *p, struct k8s_config *c, const char *s, int line,
		      const char *path)
{
	char q[KC_QUOTE_MAX];
	size_t len = strlen(s), host;

	if (!strncasecmp(s, "https://", 8))
		host = 8;
	else if (!strncasecmp(s, "http://", 7))
		host = 7;
	else
		return fail(p, -EINVAL, line, "%s.server: must be an https:// or http:// URL, got %s",
			    path, quote(s, q, sizeof(q)));
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f)
			return fail(p, -EINVAL, line,
				    "%s.server: a space or control character in the URL %s", path,
				    quote(s, q, sizeof(q)));
	}
	if (s[host] == '\0' || s[host] == '/')
		return fail(p, -EINVAL, line, "%s.server: no host in the URL %s", path,
			    quote(s, q, sizeof(q)));
	while (len > host && s[len - 1] == '/')
		len--;
	c->server = strndup(s, len);
	return c->server ? 0 : fail_nomem(p);
}

/* The PEM text of a file field, read whole into memory. */
static int read_pem(struct kc_parser *p, const char *file, int line, const char *field,
		    char **ret, size_t *ret_len)
{
	char *path, *buf;
	size_t len;
	int r;

	path = resolve_path(p->base_dir, file);
	if (!path)
		return fail_nomem(p);
	r = read_bounded(path, KC_REF_MAX, &buf, &len);
	if (r < 0) {
		r = fail(p, r, line, "%s: cannot read %s: %s", field, path, read_error(r));
		goto out_path;
	}
	if (!has_pem(buf, len)) {
		free(buf);
		r = fail(p, -EINVAL, line, "%s: %s holds no PEM block (\"-----BEGIN ...\")", field,
			 path);
		goto out_path;
	}
	*ret = buf;
	*ret_len = len;
out_path:
	free(path);
	return r;
}

static int decode_pem(struct kc_parser *p, const char *data, int line, const char *field,
		      char **ret, size_t *ret_len)
{
	char *buf;
	size_t len;
	int r;

	r = base64_decode(data, strlen(data), &buf, &len);
	if (r == -ENOMEM)
		return fail_nomem(p);
	if (r < 0)
		return fail(p, r, line, "%s: not valid base64", field);
	if (!has_pem(buf, len)) {
		free(buf);
		return fail(p, -EINVAL, line,
			    "%s: decodes to no PEM block (\"-----BEGIN ...\"): base64 of a PEM file "
			    "is expected",
			    field);
	}
	*ret = buf;
	*ret_len = len;
	return 0;
}

/*
 * A PEM blob from key (a file) or key-data (base64 of one), NULL when neither is set.
 * *ret_name is the one that was used, for messages.
 */
static int load_pem(struct kc_parser *p, const yaml_node_t *map, const char *path,
		    const char *key, char **ret, size_t *ret_len, const char **ret_name)
{
	char dkey[48], field[KC_KEYPATH_MAX + 48];
	const char *file = NULL, *data = NULL; /* the analyzer does not enter fail() (variadic) */
	int fline, dline, r;

	snprintf(dkey, sizeof(dkey), "%s-data", key);
	r = get_string(p, map, key, path, &file, &fline);
	if (r >= 0)
		r = get_string(p, map, dkey, path, &data, &dline);
	if (r < 0)
		return r;
	*ret_name = data ? "-data" : "";
	if (file && data)
		return fail(p, -EINVAL, dline, "%s: both %s and %s are set; keep one", path, key,
			    dkey);
	snprintf(field, sizeof(field), "%s.%s", path, data ? dkey : key);
	if (data)
		return decode_pem(p, data, dline, field, ret, ret_len);
	if (file)
		return read_pem(p, file, fline, field, ret, ret_len);
	return 0;
}

static int parse_cluster(struct kc_parser *p, const char *name, const struct kc_named *n,
			 struct k8s_config *c)
{
	const char *server, *tsn, *ca_kind;
	int line, iline, r;

	r = get_string(p, n->body, "server", n->path, &server, &line);
	if (r < 0)
		return r;
	if (!server)
		return fail(p, -EINVAL, n->line, "cluster \"%s\" (clusters[%zu]) has no server",
			    name, n->index);
	r = set_server(p, c, server, line, n->path);
	if (r < 0)
		return r;
	r = load_pem(p, n->body, n->path, "certificate-authority", &c->ca_pem, &c->ca_len,
		     &ca_kind);
	if (r < 0)
		return r;
	r = get_bool(p, n->body, "insecure-skip-tls-verify", n->path, &c->insecure, &iline);
	if (r < 0)
		return r;
	/* As kubectl: skipping verification while naming a CA is a contradiction. */
	if (c->insecure && c->ca_pem)
		return fail(p, -EINVAL, iline,
			    "cluster \"%s\" (clusters[%zu]): insecure-skip-tls-verify with "
			    "certificate-authority%s: specifying a root certificates file with the "
			    "insecure flag is not allowed",
			    name, n->index, ca_kind);
	r = get_string(p, n->body, "tls-server-name", n->path, &tsn, NULL);
	if (r < 0 || !tsn)
		return r;
	return set_string(p, &c->tls_server_name, tsn);
}

/* Credentials this client cannot use: an error, not a silent anonymous connection. */
static int refuse_unsupported(struct kc_parser *p, const struct kc_named *n)
{
	static const struct {
		const char *key, *what;
	} refused[] = {
		{ "exec", "exec credential plugins are not supported" },
		{ "auth-provider", "auth-provider plugins are not supported" },
		{ "username", "basic authentication (username/password) is not supported" },
		{ "password", "basic authentication (username/password) is not supported" },
	};
	yaml_node_t *v;
	int line, r;

	for (size_t i = 0; n->body && i < ARRAY_SIZE(refused); i++) {
		r = map_find(p, n->body, refused[i].key, n->path, &v, &line);
		if (r < 0)
			return r;
		if (v)
			return fail(p, -EINVAL, line,
				    "%s.%s: %s; use a token or client certificate", n->path,
				    refused[i].key, refused[i].what);
	}
	return 0;
}

/* token, or tokenFile read now and remembered for re-reading (it wins, as in client-go). */
static int parse_token(struct kc_parser *p, const struct kc_named *n, struct k8s_config *c)
{
	const char *token = NULL, *file = NULL; /* the analyzer does not enter fail() (variadic) */
	int tline, fline, r;
	size_t len;

	r = get_string(p, n->body, "token", n->path, &token, &tline);
	if (r >= 0)
		r = get_string(p, n->body, "tokenFile", n->path, &file, &fline);
	if (r < 0)
		return r;
	if (file) {
		c->token_file = resolve_path(p->base_dir, file);
		if (!c->token_file)
			return fail_nomem(p);
		r = read_bounded(c->token_file, KC_REF_MAX, &c->token, &len);
		if (r < 0)
			return fail(p, r, fline, "%s.tokenFile: cannot read %s: %s", n->path,
				    c->token_file, read_error(r));
		len = trim(c->token, len);
		if (!token_ok(c->token, len))
			return fail(p, -EINVAL, fline,
				    "%s.tokenFile: %s holds no token (empty, or spaces or control "
				    "characters inside)",
				    n->path, c->token_file);
		return 0;
	}
	if (!token)
		return 0;
	if (!token_ok(token, strlen(token)))
		return fail(p, -EINVAL, tline,
			    "%s.token: spaces or control characters inside the token", n->path);
	return set_string(p, &c->token, token);
}

static int parse_user(struct kc_parser *p, const char *name, const struct kc_named *n,
		      struct k8s_config *c)
{
	const char *cert_kind, *key_kind;
	int r;

	r = refuse_unsupported(p, n);
	if (r >= 0)
		r = load_pem(p, n->body, n->path, "client-certificate", &c->cert_pem, &c->cert_len,
			     &cert_kind);
	if (r >= 0)
		r = load_pem(p, n->body, n->path, "client-key", &c->key_pem, &c->key_len,
			     &key_kind);
	if (r < 0)
		return r;
	if (c->cert_pem && !c->key_pem)
		return fail(p, -EINVAL, n->line,
			    "user \"%s\" (users[%zu]) has client-certificate%s without a client "
			    "key (client-key or client-key-data)",
			    name, n->index, cert_kind);
	if (c->key_pem && !c->cert_pem)
		return fail(p, -EINVAL, n->line,
			    "user \"%s\" (users[%zu]) has client-key%s without a client "
			    "certificate (client-certificate or client-certificate-data)",
			    name, n->index, key_kind);
	return parse_token(p, n, c);
}

/* The context's name: the one asked for, else current-context. */
static int context_name_of(struct kc_parser *p, const yaml_node_t *root, const char *asked,
			   const char **ret, int *ret_line)
{
	int r;

	*ret_line = 0;
	if (asked) {
		*ret = asked;
		return 0;
	}
	r = get_string(p, root, "current-context", "", ret, ret_line);
	if (r < 0)
		return r;
	if (!*ret)
		return fail(p, -EINVAL, 0,
			    "current-context is not set, and no context was asked for");
	return 0;
}

static int parse_root(struct kc_parser *p, const yaml_node_t *root, const char *asked,
		      struct k8s_config *c)
{
	const char *ctx, *cluster, *user, *ns;
	int cline, kline, uline, r;
	struct kc_named nc, nk, nu;

	r = context_name_of(p, root, asked, &ctx, &cline);
	if (r < 0)
		return r;
	r = find_named(p, root, "contexts", "context", ctx, &nc);
	if (r < 0)
		return r;
	if (r == 0)
		return fail(p, -EINVAL, cline, "%scontext \"%s\" not found",
			    asked ? "" : "current-context: ", ctx);
	r = get_string(p, nc.body, "cluster", nc.path, &cluster, &kline);
	if (r >= 0)
		r = get_string(p, nc.body, "user", nc.path, &user, &uline);
	if (r >= 0)
		r = get_string(p, nc.body, "namespace", nc.path, &ns, NULL);
	if (r < 0)
		return r;
	if (!cluster)
		return fail(p, -EINVAL, nc.line, "context \"%s\" (contexts[%zu]) has no cluster",
			    ctx, nc.index);
	r = find_named(p, root, "clusters", "cluster", cluster, &nk);
	if (r == 0)
		return fail(p, -EINVAL, kline, "%s.cluster: cluster \"%s\" not found", nc.path,
			    cluster);
	if (r < 0)
		return r;
	r = parse_cluster(p, cluster, &nk, c);
	if (r >= 0 && ns)
		r = set_string(p, &c->namespace, ns);
	if (r < 0)
		return r;
	/* A context without a user connects anonymously, as kubectl does. */
	if (!user)
		return 0;
	r = find_named(p, root, "users", "user", user, &nu);
	if (r == 0)
		return fail(p, -EINVAL, uline, "%s.user: user \"%s\" not found", nc.path, user);
	if (r < 0)
		return r;
	return parse_user(p, user, &nu, c);
}

static int yaml_fail(struct kc_parser *p, const yaml_parser_t *yp, const char *text, size_t len)
{
	char msg[512];
	int line = lb_yaml_problem(yp, text, len, msg, sizeof(msg));

	return line < 0 ? fail_nomem(p) : fail(p, -EINVAL, line, "%s", msg);
}

static int parse_document(struct kc_parser *p, const char *text, size_t len,
			  const char *context_name, struct k8s_config *c)
{
	yaml_parser_t yp;
	yaml_document_t doc;
	yaml_node_t *root;
	int r;

	if (!yaml_parser_initialize(&yp))
		return fail_nomem(p);
	yaml_parser_set_input_string(&yp, (const unsigned char *)text, len);
	if (!yaml_parser_load(&yp, &doc)) {
		r = yaml_fail(p, &yp, text, len);
		goto out_parser;
	}
	p->doc = &doc;
	root = yaml_document_get_root_node(&doc);
	if (!root || node_is_unset(root))
		r = fail(p, -EINVAL, 0, "the file is empty");
	else if (root->type != YAML_MAPPING_NODE)
		r = fail(p, -EINVAL, node_line(root), "the top level must be a mapping, got %s",
			 node_kind(root));
	else
		r = parse_root(p, root, context_name, c);
	p->doc = NULL;
	yaml_document_delete(&doc);
out_parser:
	yaml_parser_delete(&yp);
	return r;
}

int k8s_kubeconfig_parse(const char *text, size_t len, const char *name, const char *base_dir,
			 const char *context_name, struct k8s_config *ret, char *err, size_t errlen)
{
	struct kc_parser p = { .name = name ? name : "<text>", .base_dir = base_dir,
			       .err = err, .errlen = err ? errlen : 0 };
	struct k8s_config c = { 0 };
	int r;

	if (p.errlen)
		err[0] = '\0';
	if (len && memchr(text, '\0', len))
		return fail(&p, -EINVAL, 0, "a NUL byte: not a YAML file");
	r = parse_document(&p, text, len, context_name, &c);
	if (r >= 0)
		r = set_string(&p, &c.source, name ? name : "kubeconfig");
	if (r < 0) {
		k8s_config_clear(&c);
		return r;
	}
	*ret = c;
	return 0;
}

int k8s_kubeconfig_load(const char *path, const char *context_name, struct k8s_config *ret,
			char *err, size_t errlen)
{
	char *text = NULL, *dir; /* read_bounded's -errno is negative: the analyzer cannot know */
	size_t len = 0;
	int r;

	r = read_bounded(path, KC_FILE_MAX, &text, &len);
	if (r < 0)
		return seterr(err, errlen, r, "kubeconfig %s: cannot read it: %s", path,
			      r == -EFBIG ? "larger than 16 MiB" : read_error(r));
	r = dir_of(path, &dir);
	if (r < 0) {
		r = seterr(err, errlen, r, "kubeconfig %s: out of memory", path);
		goto out_text;
	}
	r = k8s_kubeconfig_parse(text, len, path, dir, context_name, ret, err, errlen);
	free(dir);
out_text:
	free(text);
	return r;
}

/* ---- in-cluster ---- */

/* A host name or IP address from the environment, bracketed when it is IPv6. */
static int incluster_server(const char *host, const char *port, char **ret, char *err,
			    size_t errlen)
{
	static const char host_chars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
					 "0123456789.-:";
	bool v6 = strchr(host, ':') != NULL;
	uint64_t n;

	if (strspn(host, host_chars) != strlen(host))
		return seterr(err, errlen, -EINVAL,
			      "in-cluster: KUBERNETES_SERVICE_HOST=%.64s is not a host name or IP "
			      "address",
			      host);
	if (lb_parse_decimal(port, 65535, &n) < 0 || n == 0)
		return seterr(err, errlen, -EINVAL,
			      "in-cluster: KUBERNETES_SERVICE_PORT=%.16s is not a port number", port);
	if (asprintf(ret, v6 ? "https://[%s]:%s" : "https://%s:%s", host, port) < 0)
		return seterr(err, errlen, -ENOMEM, "in-cluster: out of memory");
	return 0;
}

/* dir/token, trimmed; its path is kept so the rotated token can be read again. */
static int incluster_token(const char *dir, struct k8s_config *c, char *err, size_t errlen)
{
	size_t len = 0; /* read_bounded's -errno is negative: the analyzer cannot know */
	int r;

	if (asprintf(&c->token_file, "%s/token", dir) < 0) {
		c->token_file = NULL;
		return seterr(err, errlen, -ENOMEM, "in-cluster: out of memory");
	}
	r = read_bounded(c->token_file, KC_REF_MAX, &c->token, &len);
	if (r < 0)
		return seterr(err, errlen, r, "in-cluster: cannot read the service account token %s: %s",
			      c->token_file, read_error(r));
	len = trim(c->token, len);
	if (!token_ok(c->token, len))
		return seterr(err, errlen, -EINVAL,
			      "in-cluster: the service account token %s is empty or has spaces or "
			      "control characters inside",
			      c->token_file);
	return 0;
}

static int incluster_ca(const char *dir, struct k8s_config *c, char *err, size_t errlen)
{
	char *path;
	int r;

	if (asprintf(&path, "%s/ca.crt", dir) < 0)
		return seterr(err, errlen, -ENOMEM, "in-cluster: out of memory");
	r = read_bounded(path, KC_REF_MAX, &c->ca_pem, &c->ca_len);
	if (r < 0)
		r = seterr(err, errlen, r, "in-cluster: cannot read the cluster CA %s: %s", path,
			   read_error(r));
	else if (!has_pem(c->ca_pem, c->ca_len))
		r = seterr(err, errlen, -EINVAL, "in-cluster: the cluster CA %s holds no PEM block",
			   path);
	free(path);
	return r;
}

/* The pod's namespace, when the file is there: it is optional. */
static int incluster_namespace(const char *dir, struct k8s_config *c, char *err, size_t errlen)
{
	char *path, *ns = NULL; /* read_bounded's -errno is negative: the analyzer cannot know */
	size_t len = 0;
	int r;

	if (asprintf(&path, "%s/namespace", dir) < 0)
		return seterr(err, errlen, -ENOMEM, "in-cluster: out of memory");
	r = read_bounded(path, KC_REF_MAX, &ns, &len);
	free(path);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return seterr(err, errlen, r, "in-cluster: cannot read %s/namespace: %s", dir,
			      read_error(r));
	if (!len || trim(ns, len) == 0) { /* empty or blank; !len spares the analyzer trim(NULL) */
		free(ns);
		return 0;
	}
	c->namespace = ns;
	return 0;
}

int k8s_incluster_load(const char *dir, struct k8s_config *ret, char *err, size_t errlen)
{
	const char *host = getenv("KUBERNETES_SERVICE_HOST");
	const char *port = getenv("KUBERNETES_SERVICE_PORT");
	struct k8s_config c = { 0 };
	int r;

	if (err && errlen)
		err[0] = '\0';
	if (!host || !*host || !port || !*port)
		return seterr(err, errlen, -ENOENT,
			      "in-cluster: not running in a pod (KUBERNETES_SERVICE_HOST and "
			      "KUBERNETES_SERVICE_PORT must both be set)");
	if (!dir)
		dir = INCLUSTER_DIR;
	r = incluster_server(host, port, &c.server, err, errlen);
	if (r >= 0)
		r = incluster_token(dir, &c, err, errlen);
	if (r >= 0)
		r = incluster_ca(dir, &c, err, errlen);
	if (r >= 0)
		r = incluster_namespace(dir, &c, err, errlen);
	if (r >= 0 && !(c.source = strdup("in-cluster")))
		r = seterr(err, errlen, -ENOMEM, "in-cluster: out of memory");
	if (r < 0) {
		k8s_config_clear(&c);
		return r;
	}
	*ret = c;
	return 0;
}

/* ---- which configuration ---- */

/* A path that exists, or that cannot be told not to (its load then says why). */
static bool path_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 || (errno != ENOENT && errno != ENOTDIR);
}

/* The first existing file of a colon-separated list, as client-go's precedence reads it. */
static int kubeconfig_env(const char *list, const char *context_name, struct k8s_config *ret,
			  char *err, size_t errlen)
{
	char *copy, *save = NULL, *tok;
	int r;

	copy = strdup(list);
	if (!copy)
		return seterr(err, errlen, -ENOMEM, "out of memory");
	r = seterr(err, errlen, -ENOENT, "KUBECONFIG=%s: none of its files exists", list);
	for (tok = strtok_r(copy, ":", &save); tok; tok = strtok_r(NULL, ":", &save)) {
		if (path_exists(tok)) {
			r = k8s_kubeconfig_load(tok, context_name, ret, err, errlen);
			break;
		}
	}
	free(copy);
	return r;
}

int k8s_config_resolve(const char *kubeconfig, const char *context_name, struct k8s_config *ret,
		       char *err, size_t errlen)
{
	const char *env = getenv("KUBECONFIG"), *home = getenv("HOME"), *host;
	bool found;
	char *path;
	int r;

	if (kubeconfig && *kubeconfig)
		return k8s_kubeconfig_load(kubeconfig, context_name, ret, err, errlen);
	if (env && *env)
		return kubeconfig_env(env, context_name, ret, err, errlen);
	/* A context is a kubeconfig's: asking for one passes over the pod's service account. */
	host = getenv("KUBERNETES_SERVICE_HOST");
	if (!context_name && host && *host)
		return k8s_incluster_load(NULL, ret, err, errlen);
	if (home && *home) {
		if (asprintf(&path, "%s/.kube/config", home) < 0)
			return seterr(err, errlen, -ENOMEM, "out of memory");
		found = path_exists(path);
		r = found ? k8s_kubeconfig_load(path, context_name, ret, err, errlen) : 0;
		free(path);
		if (found)
			return r;
	}
	return seterr(err, errlen, -ENOENT,
		      "no Kubernetes configuration: pass --kubeconfig, set KUBECONFIG, or run in "
		      "a pod");
}

void k8s_config_clear(struct k8s_config *c)
{
	if (!c)
		return;
	free(c->server);
	free(c->ca_pem);
	free(c->cert_pem);
	/* Secrets: the copies held here do not stay behind in freed memory. */
	if (c->key_pem)
		explicit_bzero(c->key_pem, c->key_len);
	free(c->key_pem);
	if (c->token)
		explicit_bzero(c->token, strlen(c->token));
	free(c->token);
	free(c->token_file);
	free(c->tls_server_name);
	free(c->namespace);
	free(c->source);
	memset(c, 0, sizeof(*c));
}
