/* ctlproto.c - control protocol: newline-delimited JSON requests and replies. */
#include "common/ctlproto.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
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

static int parse_version(const cJSON *root, struct lb_ctl_request *r, char *err, size_t errlen)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "version");

	if (!v)
		return fail(err, errlen, "apply: missing field \"version\"");
	if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > LB_CTL_VERSION_MAX ||
	    floor(v->valuedouble) != v->valuedouble)
		return fail(err, errlen,
			    "apply: \"version\" must be an integer between 0 and 2^53-1");
	r->version = (uint64_t)v->valuedouble;
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
	static const char *const words[] = { "name", "listen", "protocol", "algorithm", "address" };
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
		const char *want = cJSON_IsString(f) || cJSON_IsNumber(f) ? NULL : "a number";

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
	cJSON *wrap;
	char *text, *p;
	int ret;

	if (!ls)
		return fail(err, errlen, "apply: missing field \"listeners\"");
	if (!cJSON_IsArray(ls))
		return fail(err, errlen, "apply: \"listeners\" must be a list");
	if (check_types(ls, "listeners", err, errlen))
		return -EINVAL;
	wrap = cJSON_CreateObject();
	if (!wrap || !cJSON_AddItemReferenceToObject(wrap, "listeners", (cJSON *)ls)) {
		cJSON_Delete(wrap);
		return fail(err, errlen, "out of memory");
	}
	text = cJSON_PrintUnformatted(wrap);
	cJSON_Delete(wrap);
	if (!text)
		return fail(err, errlen, "out of memory");
	ret = lb_config_parse_listeners(text, strlen(text), "apply", &r->listeners, err, errlen);
	free(text);
	/* "apply:1: listeners[0]...": the line of a one-line message says nothing. */
	if (ret < 0 && !strncmp(err, "apply:", 6) && (p = strstr(err + 6, ": ")))
		memmove(err, p + 2, strlen(p + 2) + 1);
	return ret;
}

int lb_ctl_request_parse(const char *line, size_t len, struct lb_ctl_request *ret, char *err,
			 size_t errlen)
{
	const char *end = NULL;
	cJSON *root;
	int r;

	memset(ret, 0, sizeof(*ret));
	ret->op = (enum lb_ctl_op)-1;
	root = cJSON_ParseWithLengthOpts(line, len, &end, 0);
	if (!root)
		return fail(err, errlen, "malformed JSON");
	while (end < line + len && strchr(" \t\r", *end))
		end++;
	if (end < line + len) {
		cJSON_Delete(root);
		return fail(err, errlen, "malformed JSON: text after the object");
	}
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
	if (req && req->op == LB_CTL_APPLY && req->has_version) {
		/* As an integer: a double printed with 15 digits would change large versions. */
		char v[24];

		snprintf(v, sizeof(v), "%" PRIu64, req->version);
		cJSON_AddRawToObject(o, "version", v);
	}
	return o;
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
