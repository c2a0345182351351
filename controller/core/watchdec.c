/* watchdec.c - split a watch response (newline-delimited JSON events) into events, whatever the chunks. */
#include "controller/core/watchdec.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const type_names[] = {
	[K8S_WATCH_ADDED] = "ADDED",       [K8S_WATCH_MODIFIED] = "MODIFIED",
	[K8S_WATCH_DELETED] = "DELETED",   [K8S_WATCH_BOOKMARK] = "BOOKMARK",
	[K8S_WATCH_ERROR] = "ERROR",
};

const char *k8s_watch_type_name(enum k8s_watch_type t)
{
	return (unsigned)t < sizeof(type_names) / sizeof(type_names[0]) ? type_names[t] : "?";
}

void k8s_watchdec_init(struct k8s_watchdec *d, k8s_watch_cb cb, void *arg)
{
	*d = (struct k8s_watchdec){ .cb = cb, .arg = arg };
}

void k8s_watchdec_reset(struct k8s_watchdec *d)
{
	d->len = 0;
	d->events = 0;
}

void k8s_watchdec_free(struct k8s_watchdec *d)
{
	free(d->buf);
	d->buf = NULL;
	d->len = d->cap = 0;
}

/* One event line (no newline): {"type":"...","object":{...}}. */
static int decode_line(struct k8s_watchdec *d, const char *line, size_t len, char *err,
		       size_t errlen)
{
	cJSON *ev, *type, *obj;
	unsigned t;
	int r;

	while (len && (line[len - 1] == '\r' || line[len - 1] == ' '))
		len--;
	if (len == 0)
		return 0; /* a keep-alive blank line */
	ev = cJSON_ParseWithLength(line, len);
	if (!ev) {
		snprintf(err, errlen, "watch event %zu is not JSON", d->events + 1);
		return -EBADMSG;
	}
	r = -EBADMSG;
	type = cJSON_GetObjectItemCaseSensitive(ev, "type");
	obj = cJSON_GetObjectItemCaseSensitive(ev, "object");
	if (!cJSON_IsString(type) || !cJSON_IsObject(obj)) {
		snprintf(err, errlen, "watch event %zu has no \"type\" string and \"object\"",
			 d->events + 1);
		goto out_delete;
	}
	for (t = 0; t < sizeof(type_names) / sizeof(type_names[0]); t++)
		if (!strcmp(type->valuestring, type_names[t]))
			break;
	if (t == sizeof(type_names) / sizeof(type_names[0])) {
		snprintf(err, errlen, "watch event %zu has unknown type \"%.32s\"", d->events + 1,
			 type->valuestring);
		goto out_delete;
	}
	d->events++;
	r = d->cb(d->arg, (enum k8s_watch_type)t, obj);
out_delete:
	cJSON_Delete(ev);
	return r;
}

static int hold(struct k8s_watchdec *d, const char *data, size_t len)
{
	if (d->len + len > K8S_WATCH_LINE_MAX)
		return -EMSGSIZE;
	if (d->len + len > d->cap) {
		size_t ncap = d->cap ? d->cap : 4096;
		char *b;

		while (ncap < d->len + len)
			ncap *= 2;
		b = realloc(d->buf, ncap);
		if (!b)
			return -ENOMEM;
		d->buf = b;
		d->cap = ncap;
	}
	memcpy(d->buf + d->len, data, len);
	d->len += len;
	return 0;
}

int k8s_watchdec_feed(struct k8s_watchdec *d, const char *data, size_t len, char *err,
		      size_t errlen)
{
	const char *nl;
	int r;

	/* Only the bytes of an unfinished event are copied; whole lines are decoded in place. */
	while (len && (nl = memchr(data, '\n', len))) {
		size_t n = (size_t)(nl - data);

		if (d->len) {
			r = hold(d, data, n);
			if (r == 0)
				r = decode_line(d, d->buf, d->len, err, errlen);
			d->len = 0;
		} else {
			/* The same limit as hold()'s: the line's bytes, without its newline. */
			r = n > K8S_WATCH_LINE_MAX ? -EMSGSIZE
						   : decode_line(d, data, n, err, errlen);
		}
		if (r == -EMSGSIZE)
			snprintf(err, errlen, "watch event %zu is longer than %u bytes",
				 d->events + 1, K8S_WATCH_LINE_MAX);
		if (r)
			return r;
		data += n + 1;
		len -= n + 1;
	}
	r = len ? hold(d, data, len) : 0;
	if (r == -EMSGSIZE)
		snprintf(err, errlen, "watch event %zu is longer than %u bytes", d->events + 1,
			 K8S_WATCH_LINE_MAX);
	return r;
}
