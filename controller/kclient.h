/* kclient.h - a small Kubernetes API client: libcurl's multi interface, driven by one thread. */
#ifndef K8S_KCLIENT_H
#define K8S_KCLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "controller/core/kubeconfig.h"

struct k8s_client;
struct k8s_req;

/* How a request ended: an HTTP status, or a transport error (status 0, curl says why). */
struct k8s_resp {
	long status;             /* 0 when no response came (connect failure, timeout, reset) */
	const char *error;       /* transport error text when status is 0, else NULL */
	const char *body;        /* the whole body, NUL-terminated (not for streamed requests) */
	size_t body_len;
	long retry_after_s;      /* Retry-After of a 429 or 503, else 0 */
};

/*
 * Called once when a request ends (never from inside k8s_req_start).  The request is freed
 * after the callback returns.
 */
typedef void (*k8s_done_cb)(void *arg, const struct k8s_resp *resp);
/*
 * For streamed requests (watches): each piece of body as it arrives, only for a 2xx status
 * (an error status's body is collected for the done callback).  A non-zero return aborts the
 * request (the done callback then sees status 0 and error "aborted").
 */
typedef int (*k8s_data_cb)(void *arg, const char *data, size_t len);
/* For streamed requests: the response's headers ended with a 2xx status (once at most). */
typedef void (*k8s_open_cb)(void *arg);

struct k8s_req_opts {
	const char *method;      /* "GET" (default), "POST", "PUT", "PATCH", "DELETE" */
	const char *path;        /* "/api/v1/services?limit=500": query already escaped */
	const char *body;        /* copied; NULL = none */
	const char *content_type; /* default application/json */
	long timeout_ms;         /* whole request, 0 = none (a watch sets its own) */
	k8s_data_cb on_data;     /* non-NULL: stream the body to it */
	k8s_open_cb on_open;     /* optional, with on_data */
	k8s_done_cb on_done;
	void *arg;
};

int k8s_client_new(const struct k8s_config *cfg, struct k8s_client **ret, char *err,
		   size_t errlen);
void k8s_client_free(struct k8s_client *c);

/* Start a request: 0 with *ret set (may be NULL), or -errno.  Runs in later k8s_client_run. */
int k8s_req_start(struct k8s_client *c, const struct k8s_req_opts *o, struct k8s_req **ret);
/* Abort a request still running: its done callback is not called. */
void k8s_req_cancel(struct k8s_client *c, struct k8s_req *r);

/*
 * Wait for network activity or one of the extra descriptors (curl_waitfd: fd, events in;
 * revents out) for at most timeout_ms, then run transfers and call the callbacks of those
 * that ended.  Returns 0 or -errno.
 */
int k8s_client_run(struct k8s_client *c, struct curl_waitfd *extra, unsigned n_extra,
		   int timeout_ms);
/* Make a k8s_client_run in progress return early (signal-safe). */
void k8s_client_wakeup(struct k8s_client *c);

/* Requests in flight. */
unsigned k8s_client_inflight(const struct k8s_client *c);

/* Escape a query value (label selectors, continue tokens) into buf: 0 or -ENAMETOOLONG. */
int k8s_escape(const char *s, char *buf, size_t len);

#endif
