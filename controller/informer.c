/*
 * informer.c - list, then watch, one kind of object into a cache, as client-go's reflector does.
 *
 * LIST (paginated, resourceVersion=0 from the watch cache at start, "" from etcd after an
 * expiry) builds a new cache beside the old one and swaps it in when the last page arrives,
 * so reconcile never sees half a list.  WATCH from the list's resourceVersion with bookmarks
 * keeps it current; every event, bookmarks included, advances the resourceVersion, so a
 * dropped watch resumes where it was without a relist.  Only "410 Gone" / "Expired" (the
 * version was compacted away) costs a relist.  Failures back off 0.8 s doubling to 30 s with
 * jitter; a 429's Retry-After is honoured; a server-side watch timeout (5-10 min, randomised
 * so that many controllers do not reconnect together) is a normal end.
 */
#include "controller/informer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"

#define WATCH_MIN_TIMEOUT_S 300

uint64_t k8s_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void start_list(struct k8s_informer *inf);
static void start_watch(struct k8s_informer *inf);

/*
 * A list or watch failed.  An API server that is down or broken fails every retry the same
 * way: the first failure of the episode is a warning, the rest debug lines, and the recovery
 * says how many there were (report_success).
 */
static void report_failure(struct k8s_informer *inf, const char *what, const char *why)
{
	if (lb_episode_fail(&inf->episode, k8s_now_ms()))
		log_warn("%s: %s: %s (retrying with backoff; the recovery is logged)", inf->name, what,
			 why);
	else
		log_debug("%s: %s again: %s", inf->name, what, why);
}

/* A list completed, a watch stayed open K8S_WATCH_HEALTHY_MS, or one ended as servers end them. */
static void report_success(struct k8s_informer *inf)
{
	uint64_t lasted, n = lb_episode_end(&inf->episode, k8s_now_ms(), &lasted);

	if (n)
		log_info("%s: the API server answers again, after %llu failed attempts in %.1f s",
			 inf->name, (unsigned long long)n, (double)lasted / 1000);
}

static void backoff(struct k8s_informer *inf, bool relist, long retry_after_s)
{
	uint64_t d = inf->backoff_ms ? inf->backoff_ms * 2 : K8S_BACKOFF_INITIAL_MS;

	if (d > K8S_BACKOFF_MAX_MS)
		d = K8S_BACKOFF_MAX_MS;
	inf->backoff_ms = d;
	/* Jitter up to the whole step (client-go's factor 1.0), capped again. */
	d += (uint64_t)random() % (d + 1);
	if (d > K8S_BACKOFF_MAX_MS)
		d = K8S_BACKOFF_MAX_MS;
	if (retry_after_s > 0 && (uint64_t)retry_after_s * 1000 > d)
		d = (uint64_t)retry_after_s * 1000;
	inf->state = K8S_INF_BACKOFF;
	inf->retry_relist = relist;
	inf->retry_at_ms = k8s_now_ms() + d;
	inf->req = NULL;
	log_debug("%s: retrying the %s in %llu ms", inf->name, relist ? "list" : "watch",
		  (unsigned long long)d);
}

/* 410 Gone, or a Status saying Expired / "too old resource version". */
static bool is_expired(long code, const char *reason, const char *message)
{
	return code == 410 || (reason && (!strcmp(reason, "Expired") || !strcmp(reason, "Gone"))) ||
	       (message && strstr(message, "too old resource version"));
}

static void status_text(const char *body, size_t len, char *buf, size_t blen)
{
	cJSON *st = cJSON_ParseWithLength(body, len);
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(st, "message");

	snprintf(buf, blen, "%.200s", cJSON_IsString(m) ? m->valuestring : len ? body : "");
	cJSON_Delete(st);
}

/* --- list -------------------------------------------------------------------------------- */

static int list_page(struct k8s_informer *inf, const char *body, size_t len, bool *more)
{
	cJSON *root = cJSON_ParseWithLength(body, len), *it;
	const cJSON *md, *rv, *cont;
	char err[256];
	int r = -EBADMSG;

	if (!root)
		return -EBADMSG;
	md = cJSON_GetObjectItemCaseSensitive(root, "metadata");
	rv = cJSON_GetObjectItemCaseSensitive(md, "resourceVersion");
	cont = cJSON_GetObjectItemCaseSensitive(md, "continue");
	if (!cJSON_IsString(rv) || strlen(rv->valuestring) >= sizeof(inf->rv))
		goto out;
	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(root, "items")) {
		struct k8s_obj *o;

		r = k8s_obj_from_json(inf->kind, it, &o, err, sizeof(err));
		if (r == -ENOMEM)
			goto out;
		if (r) {
			log_warn("%s: skipping an object of the list: %s", inf->name, err);
			continue;
		}
		if ((r = k8s_store_put(&inf->next, o)))
			goto out;
	}
	free(inf->cont);
	inf->cont = NULL;
	*more = cJSON_IsString(cont) && cont->valuestring[0];
	if (*more && !(inf->cont = strdup(cont->valuestring))) {
		r = -ENOMEM;
		goto out;
	}
	strcpy(inf->rv, rv->valuestring);
	r = 0;
out:
	cJSON_Delete(root);
	return r;
}

static void list_done(void *arg, const struct k8s_resp *resp)
{
	struct k8s_informer *inf = arg;
	char msg[256];
	bool more = false;
	int r;

	inf->req = NULL;
	if (resp->status == 200) {
		r = list_page(inf, resp->body, resp->body_len, &more);
		if (r) {
			report_failure(inf, "unusable list response", strerror(-r));
			k8s_store_clear(&inf->next);
			backoff(inf, true, 0);
			return;
		}
		if (more) {
			start_list(inf);
			return;
		}
		k8s_store_swap(&inf->store, &inf->next);
		k8s_store_clear(&inf->next);
		inf->fresh = false;
		inf->backoff_ms = 0;
		report_success(inf);
		if (!inf->synced)
			log_info("%s: synced, %zu objects at resourceVersion %s", inf->name,
				 inf->store.count, inf->rv);
		inf->synced = true;
		inf->on_change(inf->arg, inf, false);
		start_watch(inf);
		return;
	}
	k8s_store_clear(&inf->next);
	free(inf->cont);
	inf->cont = NULL;
	status_text(resp->body, resp->body_len, msg, sizeof(msg));
	if (resp->status == 410) {
		/* An expired continue token: start the list again, from etcd. */
		inf->fresh = true;
		inf->relists_expired++;
		start_list(inf);
		return;
	}
	if (resp->status) {
		char why[300];

		snprintf(why, sizeof(why), "HTTP %ld %s", resp->status, msg);
		report_failure(inf, "list failed", why);
	} else {
		report_failure(inf, "list failed", resp->error);
	}
	backoff(inf, true, resp->retry_after_s);
}

static void start_list(struct k8s_informer *inf)
{
	char path[4096], cont[2048];
	struct k8s_req_opts o = { .path = path, .on_done = list_done, .arg = inf,
				  .timeout_ms = 60000 };
	int r;

	if (!inf->cont)
		k8s_store_clear(&inf->next);
	inf->lists += !inf->cont;
	/* A continued list must not name a resourceVersion: the token carries it. */
	if (inf->cont && k8s_escape(inf->cont, cont, sizeof(cont)) == 0)
		snprintf(path, sizeof(path), "%s?limit=%d&continue=%s%s%s", inf->path,
			 K8S_LIST_LIMIT, cont, inf->query[0] ? "&" : "", inf->query);
	else
		snprintf(path, sizeof(path), "%s?limit=%d&resourceVersion=%s%s%s", inf->path,
			 K8S_LIST_LIMIT, inf->fresh ? "" : "0", inf->query[0] ? "&" : "",
			 inf->query);
	inf->state = K8S_INF_LISTING;
	r = k8s_req_start(inf->kc, &o, &inf->req);
	if (r) {
		report_failure(inf, "cannot start a list", strerror(-r));
		backoff(inf, true, 0);
	}
}

/* --- watch ------------------------------------------------------------------------------- */

static int watch_event(void *arg, enum k8s_watch_type type, cJSON *object)
{
	struct k8s_informer *inf = arg;
	const char *rv = k8s_json_rv(object);
	struct k8s_obj *o;
	char err[256], key[K8S_LABEL_MAX + K8S_NAME_MAX + 1];
	bool status_only = false;
	int r;

	inf->events++;
	if (type == K8S_WATCH_ERROR) {
		const cJSON *code = cJSON_GetObjectItemCaseSensitive(object, "code");
		const cJSON *reason = cJSON_GetObjectItemCaseSensitive(object, "reason");
		const cJSON *msg = cJSON_GetObjectItemCaseSensitive(object, "message");

		snprintf(inf->dec_msg, sizeof(inf->dec_msg), "%.200s",
			 cJSON_IsString(msg) ? msg->valuestring : "an ERROR event");
		inf->dec_err = is_expired(cJSON_IsNumber(code) ? (long)code->valuedouble : 0,
					  cJSON_IsString(reason) ? reason->valuestring : NULL,
					  cJSON_IsString(msg) ? msg->valuestring : NULL)
				       ? -ESTALE
				       : -EPROTO;
		return inf->dec_err;
	}
	if (rv && strlen(rv) < sizeof(inf->rv))
		strcpy(inf->rv, rv);
	if (type == K8S_WATCH_BOOKMARK)
		return 0;
	r = k8s_obj_from_json(inf->kind, object, &o, err, sizeof(err));
	if (r == -ENOMEM)
		return inf->dec_err = r;
	if (r) {
		log_warn("%s: skipping a %s event: %s", inf->name, k8s_watch_type_name(type), err);
		return 0;
	}
	k8s_obj_key(&o->meta, key, sizeof(key));
	if (type == K8S_WATCH_DELETED) {
		k8s_obj_free(o);
		k8s_store_del(&inf->store, key);
	} else {
		const struct k8s_obj *old = k8s_store_get(&inf->store, key);

		status_only = type == K8S_WATCH_MODIFIED && inf->kind == K8S_KIND_LOADBALANCER &&
			      old && old->meta.generation == o->meta.generation &&
			      !strcmp(old->meta.uid, o->meta.uid);
		r = k8s_store_put(&inf->store, o);
		if (r)
			return inf->dec_err = r;
	}
	inf->on_change(inf->arg, inf, status_only);
	return 0;
}

static int watch_data(void *arg, const char *data, size_t len)
{
	struct k8s_informer *inf = arg;
	int r = k8s_watchdec_feed(&inf->dec, data, len, inf->dec_msg, sizeof(inf->dec_msg));

	if (r && !inf->dec_err)
		inf->dec_err = r;
	return r;
}

/*
 * The API server took the watch.  That alone does not end an episode: a server that answers
 * 200 and then breaks the stream would log a recovery and a failure for every try.  A watch
 * open for K8S_WATCH_HEALTHY_MS does (k8s_informer_tick).
 */
static void watch_open(void *arg)
{
	struct k8s_informer *inf = arg;

	inf->open_ms = k8s_now_ms();
}

static void watch_done(void *arg, const struct k8s_resp *resp)
{
	struct k8s_informer *inf = arg;
	uint64_t lasted = k8s_now_ms() - inf->watch_start_ms;
	char msg[256];

	inf->req = NULL;
	inf->open_ms = 0;
	if (inf->dec_err == -ESTALE || resp->status == 410) {
		log_info("%s: watch expired at resourceVersion %s (%s); listing again", inf->name,
			 inf->rv, resp->status == 410 ? "410 Gone" : inf->dec_msg);
		inf->relists_expired++;
		inf->fresh = true;
		start_list(inf);
		return;
	}
	if (inf->dec_err) {
		if (lasted >= 60000)
			inf->backoff_ms = 0;
		inf->decode_errors += inf->dec_err != -EPROTO;
		inf->watch_errors++;
		report_failure(inf, "watch stopped", inf->dec_msg);
		backoff(inf, false, 0);
		return;
	}
	if (resp->status == 200 && (inf->dec.events > 0 || lasted >= 1000)) {
		/* The server ended it (timeoutSeconds): carry on from where it was. */
		inf->backoff_ms = 0;
		report_success(inf);
		start_watch(inf);
		return;
	}
	inf->watch_errors++;
	/* A watch that served for a minute was a success that ended: start the backoff over
	 * (client-go resets it after a quiet spell too). */
	if (lasted >= 60000)
		inf->backoff_ms = 0;
	if (resp->status == 200) {
		snprintf(msg, sizeof(msg), "a very short watch with no events");
	} else if (resp->status) {
		char text[200];

		status_text(resp->body, resp->body_len, text, sizeof(text));
		snprintf(msg, sizeof(msg), "HTTP %ld %s", resp->status, text);
	} else {
		snprintf(msg, sizeof(msg), "%s", resp->error ? resp->error : "no response");
	}
	report_failure(inf, "watch failed", msg);
	backoff(inf, false, resp->retry_after_s);
}

static void start_watch(struct k8s_informer *inf)
{
	char path[4096];
	unsigned timeout_s = WATCH_MIN_TIMEOUT_S + (unsigned)(random() % WATCH_MIN_TIMEOUT_S);
	struct k8s_req_opts o = {
		.path = path, .on_data = watch_data, .on_open = watch_open, .on_done = watch_done,
		.arg = inf,
		/* A little past the server's own end: a dead connection cannot hang it. */
		.timeout_ms = (long)(timeout_s + 30) * 1000,
	};
	int r;

	snprintf(path, sizeof(path),
		 "%s?watch=1&allowWatchBookmarks=true&resourceVersion=%s&timeoutSeconds=%u%s%s",
		 inf->path, inf->rv, timeout_s, inf->query[0] ? "&" : "", inf->query);
	k8s_watchdec_reset(&inf->dec);
	inf->open_ms = 0;
	inf->dec_err = 0;
	inf->dec_msg[0] = 0;
	inf->watches++;
	inf->watch_start_ms = k8s_now_ms();
	inf->state = K8S_INF_WATCHING;
	r = k8s_req_start(inf->kc, &o, &inf->req);
	if (r) {
		report_failure(inf, "cannot start a watch", strerror(-r));
		backoff(inf, false, 0);
	}
}

int k8s_informer_init(struct k8s_informer *inf, struct k8s_client *kc, enum k8s_kind kind,
		      const char *name, const char *path, const char *query, k8s_informer_cb cb,
		      void *arg)
{
	int r;

	*inf = (struct k8s_informer){ .name = name, .kind = kind, .kc = kc, .on_change = cb,
				      .arg = arg };
	snprintf(inf->path, sizeof(inf->path), "%s", path);
	snprintf(inf->query, sizeof(inf->query), "%s", query ? query : "");
	k8s_watchdec_init(&inf->dec, watch_event, inf);
	r = k8s_store_init(&inf->store);
	if (r == 0 && (r = k8s_store_init(&inf->next)))
		k8s_store_free(&inf->store);
	return r;
}

void k8s_informer_start(struct k8s_informer *inf)
{
	start_list(inf);
}

uint64_t k8s_informer_tick(struct k8s_informer *inf, uint64_t now_ms)
{
	if (inf->state == K8S_INF_WATCHING && inf->open_ms && inf->episode.failures) {
		if (now_ms < inf->open_ms + K8S_WATCH_HEALTHY_MS)
			return inf->open_ms + K8S_WATCH_HEALTHY_MS;
		/* Not in the middle of an event: a huge one may yet prove the server broken. */
		if (inf->dec.len)
			return now_ms + 1000;
		report_success(inf);
	}
	if (inf->state != K8S_INF_BACKOFF)
		return UINT64_MAX;
	if (now_ms < inf->retry_at_ms)
		return inf->retry_at_ms;
	if (inf->retry_relist)
		start_list(inf);
	else
		start_watch(inf);
	return UINT64_MAX;
}

void k8s_informer_free(struct k8s_informer *inf)
{
	if (inf->req)
		k8s_req_cancel(inf->kc, inf->req);
	k8s_store_free(&inf->store);
	k8s_store_free(&inf->next);
	k8s_watchdec_free(&inf->dec);
	free(inf->cont);
}
