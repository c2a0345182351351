/* watchdec.h - split a watch response (newline-delimited JSON events) into events, whatever the chunks. */
#ifndef K8S_WATCHDEC_H
#define K8S_WATCHDEC_H

#include <stddef.h>

#include <cjson/cJSON.h>

/* The longest event line accepted: an object near etcd's 1.5 MiB limit, as JSON, with room. */
#define K8S_WATCH_LINE_MAX (16u << 20)

enum k8s_watch_type {
	K8S_WATCH_ADDED = 0,
	K8S_WATCH_MODIFIED,
	K8S_WATCH_DELETED,
	K8S_WATCH_BOOKMARK,
	K8S_WATCH_ERROR,
};

/*
 * Called once per complete event with its type and its "object" (owned by the decoder: detach
 * what you keep).  A non-zero return stops the decoder and is returned by k8s_watchdec_feed.
 */
typedef int (*k8s_watch_cb)(void *arg, enum k8s_watch_type type, cJSON *object);

struct k8s_watchdec {
	char *buf;   /* bytes of an event not yet ended by '\n' */
	size_t len;
	size_t cap;
	size_t events; /* complete events decoded so far */
	k8s_watch_cb cb;
	void *arg;
};

void k8s_watchdec_init(struct k8s_watchdec *d, k8s_watch_cb cb, void *arg);
/*
 * Feed a chunk of the response body.  Every event completed by it is decoded and passed to the
 * callback, in order.  Returns 0, the callback's non-zero return, -EBADMSG for a line that is
 * not a watch event (err says why), -EMSGSIZE for a line over K8S_WATCH_LINE_MAX, or -ENOMEM.
 * After an error the decoder must be reset before it is fed again.
 */
int k8s_watchdec_feed(struct k8s_watchdec *d, const char *data, size_t len, char *err,
		      size_t errlen);
/* Bytes of an unfinished event held (a stream that ends with some is truncated). */
static inline size_t k8s_watchdec_pending(const struct k8s_watchdec *d)
{
	return d->len;
}
void k8s_watchdec_reset(struct k8s_watchdec *d);
void k8s_watchdec_free(struct k8s_watchdec *d);

const char *k8s_watch_type_name(enum k8s_watch_type t);

#endif
