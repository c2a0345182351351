/*
 * kclient.c - a small Kubernetes API client: libcurl's multi interface, driven by one thread.
 *
 * Every request (lists, watches, status patches, Lease updates, Events) is an easy handle on
 * one multi handle, so the controller's one thread waits on all of them at once and libcurl
 * reuses connections (HTTP/1.1: each watch holds one, the short requests share a pool).
 * Certificates go to libcurl as
 * blobs from memory; the bearer token is re-read from its file when the file changes, because
 * bound service account tokens rotate under a running pod.
 */
#include "controller/kclient.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/config.h"

#define KC_BODY_MAX (64u << 20)     /* a list page of 500 large objects fits many times */
#define KC_TOKEN_MAX 16384
#define KC_TOKEN_CHECK_S 10         /* how often the token file's mtime is looked at */

struct k8s_req {
	struct k8s_req *next, *prev;
	CURL *easy;
	struct curl_slist *headers;
	char *body;
	char *resp;
	size_t resp_len, resp_cap;
	bool overflow;
	k8s_data_cb on_data;
	k8s_open_cb on_open;
	k8s_done_cb on_done;
	void *arg;
	char errbuf[CURL_ERROR_SIZE];
};

struct k8s_client {
	CURLM *multi;
	const struct k8s_config *cfg;
	char token[KC_TOKEN_MAX];
	struct timespec token_mtime;
	time_t token_checked;
	struct k8s_req *reqs;
	unsigned inflight;
};

static void token_refresh(struct k8s_client *c)
{
	char buf[KC_TOKEN_MAX];
	struct stat st;
	time_t now = time(NULL);
	FILE *f;
	size_t n;

	if (!c->cfg->token_file || now - c->token_checked < KC_TOKEN_CHECK_S)
		return;
	c->token_checked = now;
	if (stat(c->cfg->token_file, &st) == -1 ||
	    (st.st_mtim.tv_sec == c->token_mtime.tv_sec &&
	     st.st_mtim.tv_nsec == c->token_mtime.tv_nsec))
		return; /* unchanged, or gone for now: keep the token we have */
	f = fopen(c->cfg->token_file, "re");
	if (!f)
		return;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
		n--;
	buf[n] = 0;
	/* A token goes into a header line: one being rewritten, or garbage, is not taken (and
	 * the file is read again at the next check). */
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)buf[i] <= ' ' || buf[i] == 0x7f)
			return;
	if (!n)
		return;
	memcpy(c->token, buf, n + 1);
	c->token_mtime = st.st_mtim;
}

int k8s_client_new(const struct k8s_config *cfg, struct k8s_client **ret, char *err,
		   size_t errlen)
{
	struct k8s_client *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->cfg = cfg;
	if (cfg->token && strlen(cfg->token) >= sizeof(c->token)) {
		snprintf(err, errlen, "%s: the bearer token is longer than %d bytes", cfg->source,
			 KC_TOKEN_MAX - 1);
		free(c);
		return -EINVAL;
	}
	if (cfg->token)
		strcpy(c->token, cfg->token);
	c->token_checked = time(NULL);
	c->multi = curl_multi_init();
	if (!c->multi) {
		free(c);
		return -ENOMEM;
	}
	/*
	 * HTTP/1.1, not HTTP/2 multiplexing: with the libcurl of Debian 12 (7.88), a watch
	 * multiplexed with other streams sometimes had its last event received but not delivered
	 * until more data came on the connection: a deleted LoadBalancer still served a minute
	 * later in the end-to-end tests.  Four watches hold four connections; the lists, the Lease
	 * and the status writes (at most 32 in flight) share the rest and queue beyond them.
	 */
	curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 16L);
	*ret = c;
	return 0;
}

static void req_free(struct k8s_client *c, struct k8s_req *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		c->reqs = r->next;
	if (r->next)
		r->next->prev = r->prev;
	if (r->easy) {
		curl_multi_remove_handle(c->multi, r->easy);
		curl_easy_cleanup(r->easy);
		c->inflight--;
	}
	curl_slist_free_all(r->headers);
	free(r->body);
	free(r->resp);
	free(r);
}

void k8s_client_free(struct k8s_client *c)
{
	if (!c)
		return;
	while (c->reqs) {
		assert(!c->reqs->prev); /* the head: req_free moves c->reqs on to the next */
		req_free(c, c->reqs);
	}
	curl_multi_cleanup(c->multi);
	free(c);
}

static bool append(struct k8s_req *r, const char *data, size_t n)
{
	if (r->resp_len + n + 1 > r->resp_cap) {
		size_t cap = r->resp_cap ? r->resp_cap : 16384;
		char *b;

		while (cap < r->resp_len + n + 1)
			cap *= 2;
		if (cap > KC_BODY_MAX + 1)
			return false;
		b = realloc(r->resp, cap);
		if (!b)
			return false;
		r->resp = b;
		r->resp_cap = cap;
	}
	memcpy(r->resp + r->resp_len, data, n);
	r->resp_len += n;
	r->resp[r->resp_len] = 0;
	return true;
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *userp)
{
	struct k8s_req *r = userp;
	size_t n = size * nmemb;
	long status = 0;

	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
	if (r->on_data && status >= 200 && status < 300)
		return r->on_data(r->arg, data, n) ? 0 : n; /* 0: curl aborts the transfer */
	if (!append(r, data, n)) {
		r->overflow = true;
		return 0;
	}
	return n;
}

/* Headers of a request with on_open: the blank line ending a 2xx response's headers opens it. */
/* cppcheck-suppress constParameter ; libcurl's CURLOPT_HEADERFUNCTION prototype */
static size_t on_header(char *data, size_t size, size_t nmemb, void *userp)
{
	struct k8s_req *r = userp;
	size_t n = size * nmemb;
	long status = 0;

	if ((n == 2 && data[0] == '\r' && data[1] == '\n') || (n == 1 && data[0] == '\n')) {
		curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
		if (status >= 200 && status < 300 && r->on_open) {
			r->on_open(r->arg);
			r->on_open = NULL; /* once, whatever follows */
		}
	}
	return n;
}

static int add_header(struct k8s_req *r, const char *h)
{
	struct curl_slist *l = curl_slist_append(r->headers, h);

	if (!l)
		return -ENOMEM;
	r->headers = l;
	return 0;
}

static void set_tls(const struct k8s_config *cfg, CURL *e)
{
	struct curl_blob b = { .flags = CURL_BLOB_COPY };

	if (cfg->insecure) {
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
	} else if (cfg->ca_pem) {
		b.data = cfg->ca_pem;
		b.len = cfg->ca_len;
		curl_easy_setopt(e, CURLOPT_CAINFO_BLOB, &b);
	}
	if (cfg->cert_pem && cfg->key_pem) {
		b.data = cfg->cert_pem;
		b.len = cfg->cert_len;
		curl_easy_setopt(e, CURLOPT_SSLCERT_BLOB, &b);
		curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
		b.data = cfg->key_pem;
		b.len = cfg->key_len;
		curl_easy_setopt(e, CURLOPT_SSLKEY_BLOB, &b);
		curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
	}
}

static int req_setup(struct k8s_client *c, struct k8s_req *r, const struct k8s_req_opts *o)
{
	char url[8192], auth[KC_TOKEN_MAX + 32], ctype[128];
	CURL *e = r->easy;

	if ((size_t)snprintf(url, sizeof(url), "%s%s", c->cfg->server, o->path) >= sizeof(url))
		return -ENAMETOOLONG;
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https,http");
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "layer4-lb-controller/" LB_VERSION);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, o->timeout_ms);
	/* A dead peer (a node or API server gone without a FIN) shows up on idle watches. */
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 30L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 10L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
	curl_easy_setopt(e, CURLOPT_PRIVATE, r);
	if (o->on_open) {
		curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
		curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
	}
	set_tls(c->cfg, e);
	if (add_header(r, "Accept: application/json"))
		return -ENOMEM;
	token_refresh(c);
	if (c->token[0]) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", c->token);
		if (add_header(r, auth))
			return -ENOMEM;
	}
	if (o->method && strcmp(o->method, "GET"))
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, o->method);
	if (o->body) {
		r->body = strdup(o->body);
		if (!r->body)
			return -ENOMEM;
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(r->body));
		snprintf(ctype, sizeof(ctype), "Content-Type: %s",
			 o->content_type ? o->content_type : "application/json");
		if (add_header(r, ctype))
			return -ENOMEM;
	}
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
	return 0;
}

int k8s_req_start(struct k8s_client *c, const struct k8s_req_opts *o, struct k8s_req **ret)
{
	struct k8s_req *r = calloc(1, sizeof(*r));
	int err;

	if (!r)
		return -ENOMEM;
	r->on_data = o->on_data;
	r->on_open = o->on_open;
	r->on_done = o->on_done;
	r->arg = o->arg;
	r->next = c->reqs;
	if (c->reqs)
		c->reqs->prev = r;
	c->reqs = r;
	r->easy = curl_easy_init();
	if (!r->easy) {
		err = -ENOMEM;
		goto out_free;
	}
	c->inflight++;
	err = req_setup(c, r, o);
	if (err)
		goto out_free;
	if (curl_multi_add_handle(c->multi, r->easy) != CURLM_OK) {
		err = -ENOMEM;
		goto out_free;
	}
	if (ret)
		*ret = r;
	return 0;
out_free:
	req_free(c, r);
	return err;
}

void k8s_req_cancel(struct k8s_client *c, struct k8s_req *r)
{
	if (r)
		req_free(c, r);
}

static void finish(struct k8s_client *c, struct k8s_req *r, CURLcode res)
{
	struct k8s_resp resp = { 0 };
	curl_off_t retry = 0;

	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &resp.status);
	if (res != CURLE_OK) {
		/* A cut stream after a good status is still a failure of the transfer. */
		resp.status = 0;
		resp.error = r->overflow ? "response body too large"
			     : r->errbuf[0] ? r->errbuf : curl_easy_strerror(res);
	}
	if (curl_easy_getinfo(r->easy, CURLINFO_RETRY_AFTER, &retry) == CURLE_OK && retry > 0)
		resp.retry_after_s = retry > 3600 ? 3600 : (long)retry;
	resp.body = r->resp ? r->resp : "";
	resp.body_len = r->resp_len;
	if (r->on_done)
		r->on_done(r->arg, &resp);
	req_free(c, r);
}

int k8s_client_run(struct k8s_client *c, struct curl_waitfd *extra, unsigned n_extra,
		   int timeout_ms)
{
	CURLMsg *m;
	int running, left;

	if (curl_multi_poll(c->multi, extra, n_extra, timeout_ms, NULL) != CURLM_OK)
		return -EIO;
	if (curl_multi_perform(c->multi, &running) != CURLM_OK)
		return -EIO;
	while ((m = curl_multi_info_read(c->multi, &left))) {
		struct k8s_req *r;

		if (m->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
		finish(c, r, m->data.result);
	}
	return 0;
}

void k8s_client_wakeup(struct k8s_client *c)
{
	curl_multi_wakeup(c->multi);
}

unsigned k8s_client_inflight(const struct k8s_client *c)
{
	return c->inflight;
}

int k8s_escape(const char *s, char *buf, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		bool plain = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
			     (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.' ||
			     ch == '~';

		if (o + (plain ? 1 : 3) >= len)
			return -ENAMETOOLONG;
		if (plain) {
			buf[o++] = (char)ch;
		} else {
			buf[o++] = '%';
			buf[o++] = hex[ch >> 4];
			buf[o++] = hex[ch & 15];
		}
	}
	buf[o] = 0;
	return 0;
}
