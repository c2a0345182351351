/* ctlproto.c - control protocol: newline-delimited JSON requests and replies. */
#include "common/ctlproto.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const op_names[] = { "ping", "status", "apply" };

const char *lb_ctl_op_name(enum lb_ctl_op op)
{
	return (unsigned)op < sizeof(op_names) / sizeof(op_names[0]) ? op_names[op] : "?";
}

static int __attribute__((format(printf, 3, 4))) fail(char *err, size_t errlen, const char *fmt,
							 ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int parse_op(const cJSON *root, struct lb_ctl_request *r, char *err, size_t errlen)
{
	const cJSON *op = cJSON_GetObjectItemCaseSensitive(root, "op");

	if (!op)
		return fail(err, errlen, "missing field \"op\"");
	if (!cJSON_IsString(op))
		return fail(err, errlen, "\"op\" must be a string");
	for (size_t i = 0; i < sizeof(op_names) / sizeof(op_names[0]); i++) {
		if (!strcmp(op->valuestring, op_names[i])) {
			r->op = i;
			return 0;
		}
	}
	return fail(err, errlen, "unknown op \"%.64s\" (expected ping, status or apply)",
		    op->valuestring);
}

static int parse_id(const cJSON *root, struct lb_ctl_request *r, char *err, size_t errlen)
{
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "id");

	if (!id)
		return 0;
	if (!cJSON_IsString(id) || strlen(id->valuestring) >= LB_CTL_ID_MAX)
		return fail(err, errlen, "\"id\" must be a string of at most 63 bytes");
	snprintf(r->id, sizeof(r->id), "%s", id->valuestring);
	return 0;
}

/* A JSON number, written as an integer: not "1.0", "1e2" or a string. */
static int parse_version(const cJSON *root, struct lb_ctl_request *r, char *err, size_t errlen)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "version");
	char *text;

	if (!v)
		return fail(err, errlen, "apply: missing field \"version\"");
	if (!cJSON_IsRaw(v) || lb_parse_decimal(v->valuestring, LB_CTL_VERSION_MAX, &r->version)) {
		text = cJSON_PrintUnformatted(v);
		fail(err, errlen,
		     "apply: \"version\" must be a JSON integer between 0 and 2^53-1, got %.64s",
		     text ? text : "?");
		free(text);
		return -EINVAL;
	}
	r->has_version = true;
	return 0;
}

/* A key given twice: cJSON would silently use the first one. */
static const char *duplicate_key(const cJSON *obj)
{
	const cJSON *a, *b;

	cJSON_ArrayForEach(a, obj)
		for (b = a->next; b; b = b->next)
			if (!strcmp(a->string, b->string))
				return a->string;
	return NULL;
}

/* Every top-level field must be known and given once: a typo must not be silently ignored. */
static int check_fields(const cJSON *root, enum lb_ctl_op op, char *err, size_t errlen)
{
	const char *dup = duplicate_key(root);
	const cJSON *f;

	if (dup)
		return fail(err, errlen, "field \"%.64s\" given twice", dup);
	cJSON_ArrayForEach(f, root) {
		if (!strcmp(f->string, "op") || !strcmp(f->string, "id"))
			continue;
		if (op == LB_CTL_APPLY &&
		    (!strcmp(f->string, "version") || !strcmp(f->string, "listeners")))
			continue;
		return fail(err, errlen, "unknown field \"%.64s\"", f->string);
	}
	return 0;
}

/*
 * JSON types the YAML parser cannot see: it reads every scalar as text, so without this
 * "name": true would make a listener called "true".  Strings where the file has words,
 * numbers (or numeric strings) where it has integers, objects and lists where it nests, no
 * nulls, and no key twice.
 */
static int check_types(const cJSON *v, const char *path, char *err, size_t errlen)
{
	/* Numbers are raw text by now (raw_numbers). */
	static const char *const words[] = { "name",	  "listen",	    "protocol",
					     "algorithm", "proxy_protocol", "address" };
	const char *dup;
	const cJSON *f;
	char sub[192];
	int i = 0;

	if (cJSON_IsArray(v)) {
		cJSON_ArrayForEach(f, v) {
			snprintf(sub, sizeof(sub), "%s[%d]", path, i++);
			if (!cJSON_IsObject(f))
				return fail(err, errlen, "%s: must be an object", sub);
			if (check_types(f, sub, err, errlen))
				return -EINVAL;
		}
		return 0;
	}
	if ((dup = duplicate_key(v)))
		return fail(err, errlen, "%s.%.64s: given twice", path, dup);
	cJSON_ArrayForEach(f, v) {
		const char *want = cJSON_IsString(f) || cJSON_IsRaw(f) ? NULL : "a number";

		snprintf(sub, sizeof(sub), "%s.%.64s", path, f->string);
		for (size_t k = 0; k < sizeof(words) / sizeof(words[0]); k++)
			if (!strcmp(f->string, words[k]))
				want = cJSON_IsString(f) ? NULL : "a string";
		if (!strcmp(f->string, "health_check"))
			want = cJSON_IsObject(f) ? NULL : "an object";
		if (!strcmp(f->string, "backends"))
			want = cJSON_IsArray(f) ? NULL : "a list";
		if (want)
			return fail(err, errlen, "%s: must be %s", sub, want);
		if ((cJSON_IsArray(f) || cJSON_IsObject(f)) && check_types(f, sub, err, errlen))
			return -EINVAL;
	}
	return 0;
}

/*
 * The listeners go through the configuration parser itself (JSON is YAML flow syntax to
 * libyaml), so an apply is held to exactly the checks and defaults of the file.
 */
static int parse_listeners(const cJSON *root, struct lb_ctl_request *r, char *err, size_t errlen)
{
	const cJSON *ls = cJSON_GetObjectItemCaseSensitive(root, "listeners");
	char *p;
	int ret;

	if (!ls)
		return fail(err, errlen, "apply: missing field \"listeners\"");
	if (!cJSON_IsArray(ls))
		return fail(err, errlen, "apply: \"listeners\" must be a list");
	if (check_types(ls, "listeners", err, errlen))
		return -EINVAL;
	ret = lb_config_parse_listeners_json(ls, "apply", &r->listeners, err, errlen);
	/* "apply:1: listeners[0]...": the line of a one-line message says nothing. */
	if (ret < 0 && !strncmp(err, "apply:", 6) && (p = strstr(err + 6, ": ")))
		memmove(err, p + 2, strlen(p + 2) + 1);
	return ret;
}

/*
 * cJSON reads strings as C strings: a NUL byte, or a "\u0000" it decodes into one, would cut a
 * value short without a word ("ping\u0000x" read as "ping", a listener "m2\u0000evil" as "m2").
 * A backslash escapes the next character, so "\\u0000" is text, not a NUL.
 */
static bool has_nul(const char *s, size_t len)
{
	bool in_str = false;

	for (size_t i = 0; i < len; i++) {
		if (s[i] == '\0')
			return true;
		if (!in_str) {
			in_str = s[i] == '"';
		} else if (s[i] == '"') {
			in_str = false;
		} else if (s[i] == '\\' && i + 1 < len) {
			if (s[i + 1] == 'u' && i + 5 < len && !memcmp(s + i + 2, "0000", 4))
				return true;
			i++;
		}
	}
	return false;
}

/* The number tokens of a JSON text, in order, outside strings. */
struct num_scan {
	const char *p, *end;
};

static bool num_char(char c)
{
	return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

static bool next_number(struct num_scan *sc, const char **ret, size_t *ret_len)
{
	bool in_str = false;

	for (; sc->p < sc->end; sc->p++) {
		if (in_str) {
			if (*sc->p == '\\')
				sc->p++;
			else if (*sc->p == '"')
				in_str = false;
		} else if (*sc->p == '"') {
			in_str = true;
		} else if (*sc->p == '-' || (*sc->p >= '0' && *sc->p <= '9')) {
			*ret = sc->p;
			while (sc->p < sc->end && num_char(*sc->p))
				sc->p++;
			*ret_len = (size_t)(sc->p - *ret);
			return true;
		}
	}
	return false;
}

/*
 * cJSON turns every number into a double, so 1.0 and 1e2 would reach the listeners' parser as
 * "1" and "100" and 1e400 as "null".  Each number becomes a raw item holding the text the
 * client wrote (cJSON keeps values in document order, the order of the tokens in the line), so
 * it is judged, and quoted in errors, as written.
 */
static int raw_numbers(cJSON *v, struct num_scan *sc)
{
	cJSON *c;
	const char *t;
	size_t n;
	int r;

	if (cJSON_IsNumber(v)) {
		if (!next_number(sc, &t, &n))
			return -EINVAL;
		v->valuestring = strndup(t, n); /* freed by cJSON_Delete, as for any raw item */
		if (!v->valuestring)
			return -ENOMEM;
		v->type = cJSON_Raw;
		return 0;
	}
	cJSON_ArrayForEach(c, v) {
		r = raw_numbers(c, sc);
		if (r)
			return r;
	}
	return 0;
}

/* One JSON object and nothing else but blanks, numbers kept as written. */
static int parse_object(const char *line, size_t len, cJSON **ret, char *err, size_t errlen)
{
	struct num_scan sc = { line, line + len };
	const char *end = NULL;
	cJSON *root;
	int r;

	if (has_nul(line, len))
		return fail(err, errlen, "a request must not contain NUL characters (a zero byte or "
					 "\"\\u0000\")");
	root = cJSON_ParseWithLengthOpts(line, len, &end, 0);
	if (!root)
		return fail(err, errlen, "malformed JSON");
	while (end < line + len && strchr(" \t\r", *end))
		end++;
	if (end < line + len) {
		cJSON_Delete(root);
		return fail(err, errlen, "malformed JSON: text after the object");
	}
	r = raw_numbers(root, &sc);
	if (r) {
		cJSON_Delete(root);
		fail(err, errlen, r == -ENOMEM ? "out of memory" : "malformed JSON");
		return r;
	}
	*ret = root;
	return 0;
}

int lb_ctl_request_parse(const char *line, size_t len, struct lb_ctl_request *ret, char *err,
			 size_t errlen)
{
	cJSON *root = NULL; /* the analyzer does not enter fail() (variadic) to see it fails */
	int r;

	memset(ret, 0, sizeof(*ret));
	ret->op = (enum lb_ctl_op)-1;
	r = parse_object(line, len, &root, err, errlen);
	if (r)
		return r;
	r = -EINVAL;
	if (!cJSON_IsObject(root)) {
		fail(err, errlen, "a request must be a JSON object");
		goto out;
	}
	if ((r = parse_id(root, ret, err, errlen)) || (r = parse_op(root, ret, err, errlen)) ||
	    (r = check_fields(root, ret->op, err, errlen)))
		goto out;
	if (ret->op == LB_CTL_APPLY && !(r = parse_version(root, ret, err, errlen)))
		r = parse_listeners(root, ret, err, errlen);
out:
	cJSON_Delete(root);
	return r;
}

void lb_ctl_request_clear(struct lb_ctl_request *r)
{
	lb_config_free(r->listeners);
	r->listeners = NULL;
}

cJSON *lb_ctl_reply_new(const struct lb_ctl_request *req, int ok)
{
	cJSON *o = cJSON_CreateObject();

	if (!o)
		return NULL;
	cJSON_AddBoolToObject(o, "ok", ok);
	if (req && (unsigned)req->op <= LB_CTL_APPLY)
		cJSON_AddStringToObject(o, "op", lb_ctl_op_name(req->op));
	if (req && req->id[0])
		cJSON_AddStringToObject(o, "id", req->id);
	if (req && req->op == LB_CTL_APPLY && req->has_version)
		lb_json_add_u64(o, "version", req->version);
	return o;
}

cJSON *lb_json_add_u64(cJSON *obj, const char *name, uint64_t v)
{
	char text[24];

	snprintf(text, sizeof(text), "%" PRIu64, v);
	return cJSON_AddRawToObject(obj, name, text);
}

cJSON *lb_json_add_i64(cJSON *obj, const char *name, int64_t v)
{
	char text[24];

	snprintf(text, sizeof(text), "%" PRId64, v);
	return cJSON_AddRawToObject(obj, name, text);
}

char *lb_ctl_reply_error(const struct lb_ctl_request *req, const char *msg)
{
	cJSON *o = lb_ctl_reply_new(req, 0);

	if (!o)
		return NULL;
	cJSON_AddStringToObject(o, "error", msg);
	return lb_ctl_reply_finish(o);
}

char *lb_ctl_reply_finish(cJSON *reply)
{
	char *text, *line;
	size_t n;

	if (!reply)
		return NULL;
	text = cJSON_PrintUnformatted(reply);
	cJSON_Delete(reply);
	if (!text)
		return NULL;
	n = strlen(text);
	line = realloc(text, n + 2);
	if (!line) {
		free(text);
		return NULL;
	}
	line[n] = '\n';
	line[n + 1] = '\0';
	return line;
}
