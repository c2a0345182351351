/*
 * fuzz_watch.c - a watch response body as the API server (or anything in between) sends it:
 * the decoder (k8s_watchdec_feed) fed in chunks whose sizes come from the input's first bytes,
 * and each event's object mapped as the informer maps it (k8s_obj_from_json, by its "kind").
 * The same bytes fed whole must give the same events.
 */
#include <string.h>

#include "controller/core/objects.h"
#include "controller/core/watchdec.h"
#include "tests/fuzz/fuzz.h"

struct tally {
	size_t events;
	size_t objects;
};

static int kind_of(const cJSON *o, enum k8s_kind *ret)
{
	const cJSON *k = cJSON_GetObjectItemCaseSensitive(o, "kind");

	for (int i = 0; cJSON_IsString(k) && i < K8S_KIND_COUNT; i++)
		if (!strcmp(k->valuestring, k8s_kind_name((enum k8s_kind)i))) {
			*ret = (enum k8s_kind)i;
			return 0;
		}
	return -1;
}

static int on_event(void *arg, enum k8s_watch_type type, cJSON *object)
{
	struct tally *t = arg;
	struct k8s_obj *o = NULL;
	enum k8s_kind kind;
	char err[512];

	t->events++;
	(void)k8s_watch_type_name(type);
	(void)k8s_json_rv(object);
	if (type != K8S_WATCH_BOOKMARK && type != K8S_WATCH_ERROR && !kind_of(object, &kind) &&
	    !k8s_obj_from_json(kind, object, &o, err, sizeof(err))) {
		t->objects++;
		k8s_obj_free(o);
	}
	return 0;
}

static int decode(const uint8_t *data, size_t size, const uint8_t *cuts, size_t n_cuts,
		  struct tally *t)
{
	struct k8s_watchdec d;
	char err[512];
	size_t off = 0, i = 0;
	int r = 0;

	k8s_watchdec_init(&d, on_event, t);
	while (!r && off < size) {
		size_t n = n_cuts ? (size_t)cuts[i++ % n_cuts] + 1 : size - off;

		if (n > size - off)
			n = size - off;
		r = k8s_watchdec_feed(&d, (const char *)data + off, n, err, sizeof(err));
		off += n;
	}
	k8s_watchdec_free(&d);
	return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tally chunked = { 0 }, whole = { 0 };
	size_t n_cuts = size ? data[0] % 8 : 0;
	int r1, r2;

	if (size < 1 + n_cuts)
		return 0;
	r1 = decode(data + 1 + n_cuts, size - 1 - n_cuts, data + 1, n_cuts, &chunked);
	r2 = decode(data + 1 + n_cuts, size - 1 - n_cuts, NULL, 0, &whole);
	/* Chunks change nothing: an error is the same error, after the same events. */
	FUZZ_ASSERT(r1 == r2);
	FUZZ_ASSERT(chunked.events == whole.events && chunked.objects == whole.objects);
	return 0;
}
